-- Plans that do not depend on statistics (issue 18). A freshly submitted execution has none
-- (autovacuum has not analyzed it yet, or is off), and the planner then guessed: the claim
-- walked every live item of its execution through `purchase_items_live (execution_id)`,
-- filtering on `rec_index` (10,000 rows removed for one claimed), and "is anything of this
-- execution still live?" turned into a sequential scan once statistics existed.
--
-- Keyed on the primary key's columns, the live index answers both by one index probe: the
-- claim's `execution_id = $1 AND rec_index = $2` is a unique lookup whichever of the two
-- indexes the planner takes, and the live check reads the first entry of one execution.
-- `shared/tests/plans.rs` EXPLAINs every hot statement with and without statistics.
DROP INDEX purchase_items_live;
CREATE INDEX purchase_items_live ON purchase_items (execution_id, rec_index)
    WHERE status IN ('queued', 'running');

-- `updated_at` was the key of the tag-retry index, so every statement that touches
-- `updated_at` changed an indexed column and could never be a HOT update. The reaper's
-- tag retries are few (a failed EC2 tag write each); it sorts them itself.
DROP INDEX purchase_items_tag_pending;
CREATE INDEX purchase_items_tag_pending ON purchase_items (token) WHERE tag_pending;

-- Room on each page for an updated row version next to the old one (a HOT update needs it):
-- `set_provider_state` changes no indexed column now. New pages only; existing ones fill up
-- as before.
ALTER TABLE purchase_items SET (fillfactor = 85);
