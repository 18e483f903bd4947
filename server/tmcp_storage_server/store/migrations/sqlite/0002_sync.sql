-- Offline sync: clients and their stored push outcomes, conflicts, retained versions,
-- and the history horizon of each space. user_id leads every key.
ALTER TABLE spaces ADD COLUMN history_revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE spaces ADD COLUMN history_time INTEGER;
CREATE TABLE sync_clients (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    last_mutation_id INTEGER NOT NULL DEFAULT 0,
    last_push_at INTEGER,
    last_pull_at INTEGER,
    PRIMARY KEY (user_id, app_id, client_id)
) WITHOUT ROWID;
CREATE TABLE push_outcomes (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    mutation_id INTEGER NOT NULL,
    result INTEGER NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    conflict_id TEXT NOT NULL DEFAULT '',
    error_kind TEXT NOT NULL DEFAULT '',
    error_reason TEXT NOT NULL DEFAULT '',
    error_message TEXT NOT NULL DEFAULT '',
    error_metadata TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, app_id, client_id, mutation_id)
) WITHOUT ROWID;
CREATE TABLE conflicts (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    conflict_id TEXT NOT NULL,
    key TEXT NOT NULL,
    strategy INTEGER NOT NULL,
    state INTEGER NOT NULL,
    server_value BLOB,
    server_content_type TEXT NOT NULL,
    server_version INTEGER NOT NULL,
    client_value BLOB,
    client_content_type TEXT NOT NULL,
    client_version INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    mutation_id INTEGER NOT NULL,
    base_version INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    resolved_at INTEGER,
    PRIMARY KEY (user_id, app_id, conflict_id)
) WITHOUT ROWID;
CREATE INDEX conflicts_open ON conflicts (user_id, app_id, state);
CREATE TABLE versions (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    value BLOB NOT NULL,
    content_type TEXT NOT NULL,
    PRIMARY KEY (user_id, app_id, key, version)
) WITHOUT ROWID;
CREATE INDEX entries_by_revision ON entries (user_id, app_id, mod_revision, key);
CREATE INDEX changes_by_time ON changes (created_at);
