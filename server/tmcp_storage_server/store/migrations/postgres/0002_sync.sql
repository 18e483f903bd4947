-- Offline sync: clients and their stored push outcomes, conflicts, retained versions,
-- and the history horizon of each space. user_id leads every key.
ALTER TABLE spaces ADD COLUMN history_revision bigint NOT NULL DEFAULT 0;
ALTER TABLE spaces ADD COLUMN history_time timestamptz;
CREATE TABLE sync_clients (
    user_id text NOT NULL,
    app_id text NOT NULL,
    client_id text NOT NULL,
    owner text NOT NULL,
    last_mutation_id bigint NOT NULL DEFAULT 0,
    last_push_at timestamptz,
    last_pull_at timestamptz,
    PRIMARY KEY (user_id, app_id, client_id)
);
CREATE TABLE push_outcomes (
    user_id text NOT NULL,
    app_id text NOT NULL,
    client_id text NOT NULL,
    mutation_id bigint NOT NULL,
    result smallint NOT NULL,
    key text NOT NULL,
    version bigint NOT NULL,
    conflict_id text NOT NULL DEFAULT '',
    error_kind text NOT NULL DEFAULT '',
    error_reason text NOT NULL DEFAULT '',
    error_message text NOT NULL DEFAULT '',
    error_metadata jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, app_id, client_id, mutation_id)
);
CREATE TABLE conflicts (
    user_id text NOT NULL,
    app_id text NOT NULL,
    conflict_id text NOT NULL,
    key text COLLATE "C" NOT NULL,
    strategy smallint NOT NULL,
    state smallint NOT NULL,
    server_value bytea,
    server_content_type text NOT NULL,
    server_version bigint NOT NULL,
    client_value bytea,
    client_content_type text NOT NULL,
    client_version bigint NOT NULL,
    client_id text NOT NULL,
    mutation_id bigint NOT NULL,
    base_version bigint NOT NULL,
    created_at timestamptz NOT NULL,
    resolved_at timestamptz,
    PRIMARY KEY (user_id, app_id, conflict_id)
);
CREATE INDEX conflicts_open ON conflicts (user_id, app_id, state);
CREATE TABLE versions (
    user_id text NOT NULL,
    app_id text NOT NULL,
    key text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    value bytea NOT NULL,
    content_type text NOT NULL,
    PRIMARY KEY (user_id, app_id, key, version)
);
CREATE INDEX entries_by_revision ON entries (user_id, app_id, mod_revision, key);
CREATE INDEX changes_by_time ON changes (created_at);
