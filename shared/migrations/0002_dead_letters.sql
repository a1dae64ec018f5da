-- Dead letters archived from the broker's dead-letter queue: listing and replaying read this
-- table, never the queue, so inspection cannot drop or reorder a message.

CREATE TABLE dead_letters (
    id             BIGSERIAL PRIMARY KEY,
    -- Archiving is at-least-once (ack after commit); the key makes a second copy a no-op.
    dedupe_key     TEXT NOT NULL UNIQUE,
    reason         TEXT NOT NULL,
    error          TEXT,
    execution_id   TEXT,
    rec_index      INT,
    service        TEXT,
    token          TEXT,
    body           BYTEA NOT NULL,
    headers        JSONB NOT NULL,
    delivery_count BIGINT,
    first_death_at TIMESTAMPTZ,
    last_death_at  TIMESTAMPTZ,
    archived_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    replay_count   INT NOT NULL DEFAULT 0,
    replayed_at    TIMESTAMPTZ
);

CREATE INDEX dead_letters_execution ON dead_letters (execution_id);
CREATE INDEX dead_letters_reason ON dead_letters (reason);
