-- Fewer indexes to update per archived message: time filters and expiry
-- read through (owner, id) and the table itself, which is cheap next to
-- maintaining two more B-trees at every message.
DROP INDEX archive_owner_ts;
DROP INDEX archive_ts;
