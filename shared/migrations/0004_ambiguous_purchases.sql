-- When an earlier attempt's purchase call may have gone through without the worker learning of
-- it (a timeout, a 5xx, a dropped connection, a worker that died mid-purchase). Until the
-- provider's settle window has passed since this time, a retry that finds nothing through the
-- guard waits instead of buying again: providers' describe/list calls may not show a new
-- commitment at once (docs/provider-semantics.md). NULL: no purchase call can be unaccounted for.
ALTER TABLE purchase_items ADD COLUMN ambiguous_at TIMESTAMPTZ;
