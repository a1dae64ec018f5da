-- Dead letters archived from the broker's dead-letter queue: listing and replaying read this
-- table, never the queue, so inspection cannot drop or reorder a message. A message is acked
-- in the queue only after the transaction that inserted it here (and marked its item `dead`)
-- has committed.

CREATE TABLE dead_letters (
    -- Archive order: listings are ordered by it, so two listings show the same order.
    id             BIGSERIAL PRIMARY KEY,
    -- Archiving is at-least-once (ack after commit); the key makes a second copy a no-op:
    -- `worker:<x-buyonce-dead-letter-id>`, or for the broker's own dead-lettering
    -- `broker:<message-id>:<queue>:<x-death reason>:<count>`.
    dedupe_key     TEXT NOT NULL UNIQUE,
    -- A DeadLetterReason name (`malformed`, `max-attempts`, `delivery-limit`, ...).
    reason         TEXT NOT NULL,
    -- Who dead-lettered it: a worker (reason headers) or the broker (x-death only).
    origin         TEXT NOT NULL CHECK (origin IN ('worker', 'broker')),
    error          TEXT,
    -- From the decoded body when it decodes; from the worker's headers otherwise.
    execution_id   TEXT,
    rec_index      INT,
    service        TEXT,
    -- The message's token when the body decodes (64 hex); shown masked only.
    token          TEXT,
    -- The message exactly as it was: replay never uses it (it rebuilds from the item row),
    -- `dlq show` displays it.
    body           BYTEA NOT NULL,
    headers        JSONB NOT NULL,
    properties     JSONB NOT NULL DEFAULT '{}',
    delivery_count BIGINT,
    -- One line per x-death entry, e.g. `delivery_limit x1 in buyonce.purchases`.
    death_summary  TEXT,
    first_death_at TIMESTAMPTZ,
    last_death_at  TIMESTAMPTZ,
    archived_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    replay_count   INT NOT NULL DEFAULT 0,
    replayed_at    TIMESTAMPTZ
);

CREATE INDEX dead_letters_execution ON dead_letters (execution_id);
CREATE INDEX dead_letters_reason ON dead_letters (reason);
-- Bulk replays select what was never replayed, in archive order.
CREATE INDEX dead_letters_unreplayed ON dead_letters (id) WHERE replay_count = 0;
