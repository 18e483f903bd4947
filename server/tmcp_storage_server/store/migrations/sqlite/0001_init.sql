-- Spaces, entries (live and tombstones), the change log and app quota overrides.
-- Times are integer microseconds since the epoch, UTC. Keys compare bytewise (BINARY).
CREATE TABLE spaces (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    revision INTEGER NOT NULL DEFAULT 0,
    used_bytes INTEGER NOT NULL DEFAULT 0,
    used_keys INTEGER NOT NULL DEFAULT 0,
    limit_bytes INTEGER,
    limit_keys INTEGER,
    max_value_bytes INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, app_id)
) WITHOUT ROWID;
-- (app_id) alone: an index on used_bytes would be rewritten by every write.
CREATE INDEX spaces_by_app ON spaces (app_id);
CREATE TABLE app_quotas (
    app_id TEXT PRIMARY KEY,
    limit_bytes INTEGER,
    limit_keys INTEGER,
    max_value_bytes INTEGER
) WITHOUT ROWID;
CREATE TABLE entries (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB,
    codec INTEGER NOT NULL DEFAULT 0,
    content_type TEXT NOT NULL,
    version INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER,
    size INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, app_id, key)
) WITHOUT ROWID;
CREATE INDEX entries_space_expiry ON entries (user_id, app_id, expires_at)
    WHERE expires_at IS NOT NULL AND deleted = 0;
CREATE INDEX entries_expiry ON entries (expires_at) WHERE expires_at IS NOT NULL AND deleted = 0;
CREATE TABLE changes (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    key TEXT NOT NULL,
    op INTEGER NOT NULL,
    version INTEGER NOT NULL,
    client_id TEXT NOT NULL DEFAULT '',
    mutation_id INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, app_id, revision, key)
) WITHOUT ROWID;
