-- Executions, their purchase items (the outbox) and the commitments ledger (DESIGN §4).

CREATE TABLE executions (
    execution_id    TEXT PRIMARY KEY,
    -- The lineage key: written once, never updated; every token derives from it.
    idempotency_key TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'approved'
                    CHECK (status IN ('approved', 'running', 'completed', 'partially_completed',
                                      'failed', 'cancelled')),
    source          TEXT NOT NULL,
    approved_by     TEXT NOT NULL,
    -- Canonical document, compared when the same execution is submitted again.
    document        JSONB NOT NULL,
    item_count      INT NOT NULL,
    error           TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The reaper looks for executions still open after their items ended.
CREATE INDEX executions_open ON executions (updated_at) WHERE status IN ('approved', 'running');

CREATE TABLE purchase_items (
    execution_id   TEXT NOT NULL REFERENCES executions (execution_id),
    rec_index      INT NOT NULL CHECK (rec_index >= 0),
    token          TEXT NOT NULL UNIQUE CHECK (token ~ '^[0-9a-f]{64}$'),
    provider       TEXT NOT NULL,
    service        TEXT NOT NULL,
    account        TEXT NOT NULL,
    region         TEXT,
    recommendation JSONB NOT NULL,
    status         TEXT NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled')),
    attempts       INT NOT NULL DEFAULT 0,
    -- Which claim (worker attempt) owns a running item; heartbeats are fenced by it.
    claim_id       UUID,
    commitment_id  TEXT,
    cost_usd       NUMERIC(20, 6),
    error          TEXT,
    -- Bought, but the token tag could not be written yet (EC2); the reaper retries it.
    tag_pending    BOOLEAN NOT NULL DEFAULT false,
    -- Executor intent written before buying: Azure order ID, Redshift snapshot.
    provider_state JSONB,
    published_at   TIMESTAMPTZ,
    heartbeat_at   TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (execution_id, rec_index)
);

-- Reaper: stale running items, by heartbeat age.
CREATE INDEX purchase_items_running ON purchase_items (heartbeat_at, token) WHERE status = 'running';
-- Outbox relay: committed but never published.
CREATE INDEX purchase_items_unpublished ON purchase_items (created_at)
    WHERE status = 'queued' AND published_at IS NULL;
-- Reaper: tag writes to retry.
CREATE INDEX purchase_items_tag_pending ON purchase_items (updated_at) WHERE tag_pending;
-- "Is anything of this execution still live?" when an item ends.
CREATE INDEX purchase_items_live ON purchase_items (execution_id) WHERE status IN ('queued', 'running');

CREATE TABLE commitments (
    token         TEXT PRIMARY KEY,
    execution_id  TEXT NOT NULL,
    rec_index     INT NOT NULL,
    provider      TEXT NOT NULL,
    service       TEXT NOT NULL,
    account       TEXT NOT NULL,
    region        TEXT,
    commitment_id TEXT NOT NULL,
    cost_usd      NUMERIC(20, 6),
    how           TEXT NOT NULL CHECK (how IN ('purchased', 'recovered', 'guard')),
    recorded_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- EC2/Redshift attribution: is this commitment already someone else's?
CREATE INDEX commitments_commitment_id ON commitments (commitment_id);
