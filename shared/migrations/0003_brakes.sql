-- Operator brakes (DESIGN §9): fleet-wide pause and the daily spend budget.

CREATE TABLE fleet_control (
    id         BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    paused     BOOLEAN NOT NULL DEFAULT false,
    reason     TEXT,
    changed_by TEXT,
    changed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO fleet_control (id) VALUES (true);

-- One row per UTC day; reservations update it under its row lock, so racing workers serialise.
CREATE TABLE daily_spend (
    day          DATE PRIMARY KEY,
    reserved_usd NUMERIC(20, 6) NOT NULL DEFAULT 0
);

-- One reservation per token: a retried or recovered purchase is counted once.
CREATE TABLE budget_reservations (
    token      TEXT PRIMARY KEY,
    day        DATE NOT NULL,
    amount_usd NUMERIC(20, 6) NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('reserved', 'released')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
