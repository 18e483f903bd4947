"""Named SQL of the SQLite repository (sqlite3 named placeholders, never built from input)."""

from __future__ import annotations

from tmcp_storage_server.store.codec import (
    CONFLICT_COLUMNS,
    ENTRY_COLUMNS,
    ENTRY_COLUMNS_NO_VALUE,
    OUTCOME_COLUMNS,
    qualified,
)

_LIVE = "deleted = 0 AND (expires_at IS NULL OR expires_at > :now)"
SPACE = "user_id = :user_id AND app_id = :app_id"

STATE = """SELECT s.revision, s.used_bytes, s.used_keys, s.limit_bytes, s.limit_keys,
    s.max_value_bytes, a.limit_bytes, a.limit_keys, a.max_value_bytes
  FROM spaces s LEFT JOIN app_quotas a ON a.app_id = s.app_id
  WHERE s.user_id = :user_id AND s.app_id = :app_id"""
APP_OVERRIDES = "SELECT limit_bytes, limit_keys, max_value_bytes FROM app_quotas WHERE app_id = ?"
CREATE_SPACE = """INSERT OR IGNORE INTO spaces (user_id, app_id, created_at, updated_at)
  VALUES (:user_id, :app_id, :now, :now)"""
GET_MANY = f"""SELECT {ENTRY_COLUMNS} FROM entries
  WHERE {SPACE} AND key IN (SELECT value FROM json_each(:keys)) AND {_LIVE}"""
GET = f"SELECT {ENTRY_COLUMNS} FROM entries WHERE {SPACE} AND key = :key AND {_LIVE}"
_LIST_WHERE = f"""{SPACE} AND {_LIVE} AND key >= :low AND (:high IS NULL OR key < :high)
  AND (:after IS NULL OR key > :after) AND (:max_rev IS NULL OR create_revision <= :max_rev)
  ORDER BY key LIMIT :limit"""
LIST_VALUES = f"SELECT {ENTRY_COLUMNS} FROM entries WHERE {_LIST_WHERE}"
LIST_KEYS = f"SELECT {ENTRY_COLUMNS_NO_VALUE} FROM entries WHERE {_LIST_WHERE}"
LOAD = f"""SELECT {ENTRY_COLUMNS} FROM entries
  WHERE {SPACE} AND key IN (SELECT value FROM json_each(:keys))"""
LOAD_PREFIX = f"""SELECT {ENTRY_COLUMNS_NO_VALUE} FROM entries
  WHERE {SPACE} AND {_LIVE} AND key >= :low AND (:high IS NULL OR key < :high) ORDER BY key"""
DUE = f"""SELECT {ENTRY_COLUMNS_NO_VALUE} FROM entries
  WHERE {SPACE} AND deleted = 0 AND expires_at IS NOT NULL AND expires_at <= :now"""
UPSERT = """INSERT INTO entries (user_id, app_id, key, value, codec, content_type, version,
    create_revision, mod_revision, created_at, updated_at, expires_at, size, checksum,
    metadata, deleted)
  VALUES (:user_id, :app_id, :key, :value, :codec, :content_type, :version, :create_revision,
    :mod_revision, :created_at, :updated_at, :expires_at, :size, :checksum, :metadata,
    :deleted)
  ON CONFLICT (user_id, app_id, key) DO UPDATE SET value = excluded.value,
    codec = excluded.codec, content_type = excluded.content_type, version = excluded.version,
    create_revision = excluded.create_revision, mod_revision = excluded.mod_revision,
    created_at = excluded.created_at, updated_at = excluded.updated_at,
    expires_at = excluded.expires_at, size = excluded.size, checksum = excluded.checksum,
    metadata = excluded.metadata, deleted = excluded.deleted"""
APPEND_CHANGE = """INSERT INTO changes (user_id, app_id, revision, key, op, version, client_id,
    mutation_id, created_at)
  VALUES (:user_id, :app_id, :revision, :key, :op, :version, :client_id, :mutation_id, :now)"""
UPDATE_SPACE = f"""UPDATE spaces SET revision = :revision, used_bytes = :used_bytes,
    used_keys = :used_keys, updated_at = :now WHERE {SPACE}"""
USAGE_BY_TYPE = f"""SELECT content_type, SUM(size), COUNT(*) FROM entries
  WHERE {SPACE} AND {_LIVE} GROUP BY content_type ORDER BY content_type"""
EXPIRING = f"""SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries
  WHERE {SPACE} AND {_LIVE} AND expires_at IS NOT NULL"""
LARGEST_KEYS = f"""SELECT key, size FROM entries WHERE {SPACE} AND {_LIVE}
  ORDER BY size DESC, key LIMIT :top"""
APP_TOTALS = """SELECT COUNT(*), COALESCE(SUM(used_bytes), 0), COALESCE(SUM(used_keys), 0)
  FROM spaces WHERE app_id = ?"""
LARGEST_SPACES = """SELECT user_id, used_bytes, used_keys, limit_bytes, limit_keys,
    max_value_bytes FROM spaces WHERE app_id = ? ORDER BY used_bytes DESC, user_id LIMIT ?"""
UPSERT_APP_OVERRIDES = """INSERT INTO app_quotas (app_id, limit_bytes, limit_keys,
    max_value_bytes) VALUES (?, ?, ?, ?)
  ON CONFLICT (app_id) DO UPDATE SET limit_bytes = excluded.limit_bytes,
    limit_keys = excluded.limit_keys, max_value_bytes = excluded.max_value_bytes"""
SPACE_OVERRIDES = f"""SELECT limit_bytes, limit_keys, max_value_bytes FROM spaces
  WHERE {SPACE}"""
SET_SPACE_OVERRIDES = f"""UPDATE spaces SET limit_bytes = :limit_bytes,
    limit_keys = :limit_keys, max_value_bytes = :max_value_bytes WHERE {SPACE}"""
SPACES_WITH_EXPIRED = """SELECT DISTINCT user_id, app_id FROM entries
  WHERE deleted = 0 AND expires_at IS NOT NULL AND expires_at <= ? LIMIT ?"""
MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"""
APPLIED = "SELECT version FROM schema_migrations"
RECORD_MIGRATION = "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"

# Offline sync (migration 0002).
_E_COLUMNS = qualified(ENTRY_COLUMNS, "e")
RETAIN = """INSERT OR REPLACE INTO versions (user_id, app_id, key, version, value, content_type)
  VALUES (:user_id, :app_id, :key, :version, :value, :content_type)"""
PRUNE_VERSIONS = f"""DELETE FROM versions WHERE {SPACE} AND key = :key
  AND version <= :version - :keep"""
RETAINED = f"SELECT value FROM versions WHERE {SPACE} AND key = :key AND version = :version"
SYNC_CLIENT = f"""SELECT client_id, owner, last_mutation_id, last_push_at, last_pull_at
  FROM sync_clients WHERE {SPACE} AND client_id = :client_id"""
SAVE_SYNC_CLIENT = """INSERT INTO sync_clients (user_id, app_id, client_id, owner,
    last_mutation_id, last_push_at, last_pull_at)
  VALUES (:user_id, :app_id, :client_id, :owner, :last_mutation_id, :last_push_at,
    :last_pull_at)
  ON CONFLICT (user_id, app_id, client_id) DO UPDATE SET
    last_mutation_id = excluded.last_mutation_id, last_push_at = excluded.last_push_at"""
MARK_PULLED = f"""UPDATE sync_clients SET last_pull_at = :now
  WHERE {SPACE} AND client_id = :client_id RETURNING last_mutation_id"""
OUTCOMES = f"""SELECT {OUTCOME_COLUMNS} FROM push_outcomes
  WHERE {SPACE} AND client_id = :client_id AND mutation_id BETWEEN :first AND :last
  ORDER BY mutation_id"""
SAVE_OUTCOME = f"""INSERT OR REPLACE INTO push_outcomes (user_id, app_id, client_id,
    {OUTCOME_COLUMNS}, created_at)
  VALUES (:user_id, :app_id, :client_id, :mutation_id, :result, :key, :version,
    :conflict_id, :error_kind, :error_reason, :error_message, :error_metadata, :now)"""
CONFLICT = f"SELECT {CONFLICT_COLUMNS} FROM conflicts WHERE {SPACE} AND conflict_id = :conflict_id"
SAVE_CONFLICT = f"""INSERT OR REPLACE INTO conflicts (user_id, app_id, {CONFLICT_COLUMNS})
  VALUES (:user_id, :app_id, :conflict_id, :key, :strategy, :state, :server_value,
    :server_content_type, :server_version, :client_value, :client_content_type,
    :client_version, :client_id, :mutation_id, :base_version, :created_at, :resolved_at)"""
LIST_CONFLICTS = f"""SELECT {CONFLICT_COLUMNS} FROM conflicts
  WHERE {SPACE} AND conflict_id > :after AND (:all OR state = 1)
    AND key >= :low AND (:high IS NULL OR key < :high)
  ORDER BY conflict_id LIMIT :limit"""
OPEN_CONFLICTS = f"SELECT COUNT(*) FROM conflicts WHERE {SPACE} AND state = 1"
HISTORY = f"SELECT revision, history_revision, history_time FROM spaces WHERE {SPACE}"
CHANGED_SINCE = f"""SELECT {_E_COLUMNS}, c.op, c.client_id, c.mutation_id
  FROM entries e LEFT JOIN changes c ON c.user_id = e.user_id AND c.app_id = e.app_id
    AND c.revision = e.mod_revision AND c.key = e.key
  WHERE e.user_id = :user_id AND e.app_id = :app_id
    AND (e.mod_revision, e.key) > (:revision, :key)
    AND e.key >= :low AND (:high IS NULL OR e.key < :high)
  ORDER BY e.mod_revision, e.key LIMIT :limit"""
COMPACT_CHANGES = "DELETE FROM changes WHERE created_at < :before"
COMPACT_OUTCOMES = "DELETE FROM push_outcomes WHERE created_at < :before"
OLD_TOMBSTONES = """SELECT user_id, app_id, MAX(mod_revision) FROM entries
  WHERE deleted = 1 AND updated_at < :before GROUP BY user_id, app_id"""
COMPACT_TOMBSTONES = "DELETE FROM entries WHERE deleted = 1 AND updated_at < :before"
RAISE_HORIZON = f"""UPDATE spaces SET history_revision = MAX(history_revision, :horizon),
    history_time = :now WHERE {SPACE}"""
COMPACT_VERSIONS = """DELETE FROM versions WHERE EXISTS (SELECT 1 FROM entries e
  WHERE e.user_id = versions.user_id AND e.app_id = versions.app_id
    AND e.key = versions.key AND e.deleted = 1 AND e.updated_at < :before)"""
