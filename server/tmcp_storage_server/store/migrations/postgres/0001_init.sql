-- Spaces, entries (live and tombstones), the change log and app quota overrides.
-- user_id leads every primary key, ready for distribution by user (Citus).
-- Keys use the "C" collation so that they order bytewise.
CREATE TABLE spaces (
    user_id text NOT NULL,
    app_id text NOT NULL,
    revision bigint NOT NULL DEFAULT 0,
    used_bytes bigint NOT NULL DEFAULT 0,
    used_keys bigint NOT NULL DEFAULT 0,
    limit_bytes bigint,
    limit_keys bigint,
    max_value_bytes bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, app_id)
);
-- (app_id) alone: an index on used_bytes would be rewritten by every write.
CREATE INDEX spaces_by_app ON spaces (app_id);
CREATE TABLE app_quotas (
    app_id text PRIMARY KEY,
    limit_bytes bigint,
    limit_keys bigint,
    max_value_bytes bigint
);
CREATE TABLE entries (
    user_id text NOT NULL,
    app_id text NOT NULL,
    key text COLLATE "C" NOT NULL,
    value bytea,
    codec smallint NOT NULL DEFAULT 0,
    content_type text NOT NULL,
    version bigint NOT NULL,
    create_revision bigint NOT NULL,
    mod_revision bigint NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    expires_at timestamptz,
    size bigint NOT NULL,
    checksum text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    deleted boolean NOT NULL DEFAULT false,
    PRIMARY KEY (user_id, app_id, key)
);
CREATE INDEX entries_space_expiry ON entries (user_id, app_id, expires_at)
    WHERE expires_at IS NOT NULL AND NOT deleted;
CREATE INDEX entries_expiry ON entries (expires_at) WHERE expires_at IS NOT NULL AND NOT deleted;
CREATE TABLE changes (
    user_id text NOT NULL,
    app_id text NOT NULL,
    revision bigint NOT NULL,
    key text COLLATE "C" NOT NULL,
    op smallint NOT NULL,
    version bigint NOT NULL,
    client_id text NOT NULL DEFAULT '',
    mutation_id bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, app_id, revision, key)
);
