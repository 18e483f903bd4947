-- Compaction looks for spaces holding old tombstones every minute; without an index that
-- is a scan of every entry. Only tombstones are indexed, so live writes pay nothing.
CREATE INDEX entries_tombstones ON entries (updated_at) WHERE deleted;
