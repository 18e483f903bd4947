"""Named SQL of the PostgreSQL repository (psycopg placeholders, never built from input)."""

from __future__ import annotations

from tmcp_storage_server.store.change_feed import CHANNEL as FEED_CHANNEL
from tmcp_storage_server.store.change_feed import SEPARATOR as FEED_SEPARATOR
from tmcp_storage_server.store.codec import (
    CONFLICT_COLUMNS,
    ENTRY_COLUMNS,
    ENTRY_COLUMNS_NO_VALUE,
    OUTCOME_COLUMNS,
    qualified,
)

SPACE = "user_id = %(user_id)s AND app_id = %(app_id)s"
# Array parameters use binary placeholders (%(x)b): psycopg dumps lists to binary arrays
# at about a third of the CPU of text arrays (measured: 1.4 ms vs 4.0 ms for a 100-entry
# save).
_LIVE = "NOT deleted AND (expires_at IS NULL OR expires_at > %(now)s)"

BEGIN = "BEGIN"
BEGIN_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"
SET_UTC = "SET TIME ZONE 'UTC'"
PING = "SELECT 1"
AUTOVACUUM = "SELECT current_setting('autovacuum')"
_WITH_REVISION = """SELECT r.revision, e.* FROM
  (SELECT COALESCE(MAX(revision), 0) AS revision FROM spaces WHERE {space}) AS r
  LEFT JOIN ({entries}) AS e ON true"""
GET = _WITH_REVISION.format(
    space=SPACE,
    entries=f"SELECT {ENTRY_COLUMNS} FROM entries WHERE {SPACE} AND key = %(key)s AND {_LIVE}",
)
# Keys of a batch are looked up one primary-key probe each (LATERAL .. LIMIT 1 keeps the
# planner from turning "key = ANY(keys)" into a scan of the whole space filtered by the
# array: seconds for 1,000 keys in a 200k-key space under a generic plan, 5 ms this way).
# "ORDER BY key" costs the primary key nothing and any other index a sort: without it, a
# table not yet analyzed (a bulk load before autovacuum's first ANALYZE) ties the two, and
# the planner may probe entries_by_revision, scanning the whole space for each key.
_EACH_KEY = """SELECT m.* FROM unnest(%(keys)b::text[]) AS k(wanted)
  CROSS JOIN LATERAL (SELECT {columns} FROM entries
    WHERE {space} AND key = k.wanted{live} ORDER BY key LIMIT 1) AS m"""
GET_MANY = _WITH_REVISION.format(
    space=SPACE,
    entries=_EACH_KEY.format(columns=ENTRY_COLUMNS, space=SPACE, live=f" AND {_LIVE}"),
)
# Lower bounds "key >= low AND key > after" are both index conditions: the btree scan
# starts at the tighter of the two. Without a prefix there is no upper bound, and a
# separate statement keeps "key < high" an index condition in generic plans too.
_LISTING = """SELECT {columns} FROM entries WHERE {space} AND {live} AND key >= %(low)s
    AND key > %(after)s{below} AND create_revision <= %(max_rev)s ORDER BY key LIMIT %(limit)s"""
_BELOW = " AND key < %(high)s"
LIST_VALUES, LIST_KEYS, LIST_VALUES_TO_END, LIST_KEYS_TO_END = (
    _WITH_REVISION.format(
        space=SPACE,
        entries=_LISTING.format(columns=columns, space=SPACE, live=_LIVE, below=below),
    )
    + " ORDER BY e.key"
    for columns, below in (
        (ENTRY_COLUMNS, _BELOW),
        (ENTRY_COLUMNS_NO_VALUE, _BELOW),
        (ENTRY_COLUMNS, ""),
        (ENTRY_COLUMNS_NO_VALUE, ""),
    )
)
LISTS = {
    (True, True): LIST_VALUES,
    (False, True): LIST_KEYS,
    (True, False): LIST_VALUES_TO_END,
    (False, False): LIST_KEYS_TO_END,
}
"""The listing statement by (include_values, has an upper bound)."""
STATE = """SELECT COALESCE(s.revision, 0), COALESCE(s.used_bytes, 0), COALESCE(s.used_keys, 0),
    s.limit_bytes, s.limit_keys, s.max_value_bytes, a.limit_bytes, a.limit_keys,
    a.max_value_bytes
  FROM (SELECT %(user_id)s::text AS user_id, %(app_id)s::text AS app_id) AS k
  LEFT JOIN spaces s ON s.user_id = k.user_id AND s.app_id = k.app_id
  LEFT JOIN app_quotas a ON a.app_id = k.app_id"""
# A write transaction's first round trip: its spaces' rows (inserted on first use),
# locked in one order (user, app) so that two transactions sharing spaces cannot
# deadlock; then, in a statement of its own so that it reads after the locks are granted,
# each space's next expiry with the entries of the keys named for it.
_SPACES = "unnest(%(user_ids)b::text[], %(app_ids)b::text[])"
CREATE_SPACES = f"""INSERT INTO spaces (user_id, app_id)
  SELECT u, a FROM {_SPACES} AS n(u, a) ORDER BY u, a
  ON CONFLICT (user_id, app_id) DO NOTHING"""
LOCK_SPACES = f"""SELECT s.user_id, s.app_id, s.revision, s.used_bytes, s.used_keys,
    s.limit_bytes, s.limit_keys, s.max_value_bytes, a.limit_bytes, a.limit_keys,
    a.max_value_bytes
  FROM spaces s LEFT JOIN app_quotas a ON a.app_id = s.app_id
  WHERE (s.user_id, s.app_id) IN (SELECT u, a FROM {_SPACES} AS n(u, a))
  ORDER BY s.user_id, s.app_id FOR UPDATE OF s"""
NEXT_EXPIRY = f"""SELECT MIN(expires_at) FROM entries
  WHERE {SPACE} AND NOT deleted AND expires_at IS NOT NULL"""
LOAD = _EACH_KEY.format(columns=ENTRY_COLUMNS, space=SPACE, live="")
# One row per found key, or one with NULL entry columns for a space none was found in.
EXPIRIES_AND_LOAD = f"""SELECT n.u, n.a, x.next_expiry, m.* FROM {_SPACES} AS n(u, a)
  CROSS JOIN LATERAL (SELECT MIN(expires_at) FROM entries WHERE user_id = n.u
    AND app_id = n.a AND NOT deleted AND expires_at IS NOT NULL) AS x(next_expiry)
  LEFT JOIN LATERAL (SELECT e.* FROM unnest(%(key_users)b::text[], %(key_apps)b::text[],
      %(keys)b::text[]) AS w(u, a, wanted)
    CROSS JOIN LATERAL (SELECT {ENTRY_COLUMNS} FROM entries WHERE user_id = w.u
      AND app_id = w.a AND key = w.wanted ORDER BY key LIMIT 1) AS e
    WHERE w.u = n.u AND w.a = n.a) AS m ON true"""
LOAD_PREFIX = f"""SELECT {ENTRY_COLUMNS_NO_VALUE} FROM entries
  WHERE {SPACE} AND {_LIVE} AND key >= %(low)s AND key < %(high)s ORDER BY key"""
LOAD_FROM = f"""SELECT {ENTRY_COLUMNS_NO_VALUE} FROM entries
  WHERE {SPACE} AND {_LIVE} AND key >= %(low)s ORDER BY key"""
DUE = f"""SELECT {ENTRY_COLUMNS_NO_VALUE} FROM entries
  WHERE {SPACE} AND NOT deleted AND expires_at IS NOT NULL AND expires_at <= %(now)s"""
# Entries, changes and space rows of any number of spaces in one statement. Entry and
# change rows travel as one JSON array each, and the values as one bytea that each entry
# row slices by offset and length (psycopg dumps an array parameter element by element
# in Python: 30 arrays of columns cost more client CPU than the statement itself).
# Each space row updated also wakes the space's watchers in every process
# (store.change_feed): NOTIFY is sent at COMMIT, and only if it commits.
SAVE = f"""WITH upserted AS (
    INSERT INTO entries (user_id, app_id, key, value, codec, content_type, version,
      create_revision, mod_revision, created_at, updated_at, expires_at, size, checksum,
      metadata, deleted)
    SELECT r->>0, r->>1, r->>2, substr(%(values)b::bytea, (r->>15)::int, (r->>16)::int),
      (r->>3)::smallint, r->>4, (r->>5)::bigint, (r->>6)::bigint, (r->>7)::bigint,
      (r->>8)::timestamptz, (r->>9)::timestamptz, (r->>10)::timestamptz, (r->>11)::bigint,
      r->>12, r->13, (r->>14)::boolean
    FROM jsonb_array_elements(%(entries)s::jsonb) AS r
    ON CONFLICT (user_id, app_id, key) DO UPDATE SET value = EXCLUDED.value,
      codec = EXCLUDED.codec, content_type = EXCLUDED.content_type,
      version = EXCLUDED.version, create_revision = EXCLUDED.create_revision,
      mod_revision = EXCLUDED.mod_revision, created_at = EXCLUDED.created_at,
      updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at,
      size = EXCLUDED.size, checksum = EXCLUDED.checksum, metadata = EXCLUDED.metadata,
      deleted = EXCLUDED.deleted
  ), appended AS (
    INSERT INTO changes (user_id, app_id, revision, key, op, version, client_id,
      mutation_id, created_at)
    SELECT c->>0, c->>1, (c->>2)::bigint, c->>3, (c->>4)::smallint, (c->>5)::bigint,
      c->>6, (c->>7)::bigint, %(now)s
    FROM jsonb_array_elements(%(changes)s::jsonb) AS c
  )
  UPDATE spaces s SET revision = n.revision, used_bytes = n.used_bytes,
    used_keys = n.used_keys, updated_at = %(now)s
  FROM unnest(%(user_ids)b::text[], %(app_ids)b::text[], %(revisions)b::bigint[],
    %(used_bytes)b::bigint[], %(used_keys)b::bigint[]) AS n(u, a, revision, used_bytes,
    used_keys)
  WHERE s.user_id = n.u AND s.app_id = n.a
  RETURNING pg_notify('{FEED_CHANNEL}', s.app_id || chr({ord(FEED_SEPARATOR)}) || s.user_id)"""
USAGE_BY_TYPE = f"""SELECT content_type, SUM(size)::bigint, COUNT(*) FROM entries
  WHERE {SPACE} AND {_LIVE} GROUP BY content_type
  ORDER BY content_type COLLATE "C" """
EXPIRING = f"""SELECT COUNT(*), COALESCE(SUM(size), 0)::bigint FROM entries
  WHERE {SPACE} AND {_LIVE} AND expires_at IS NOT NULL"""
LARGEST_KEYS = f"""SELECT key, size FROM entries WHERE {SPACE} AND {_LIVE}
  ORDER BY size DESC, key LIMIT %(top)s"""
APP_TOTALS = """SELECT t.spaces, t.used_bytes, t.used_keys, a.limit_bytes, a.limit_keys,
    a.max_value_bytes
  FROM (SELECT COUNT(*) AS spaces, COALESCE(SUM(used_bytes), 0)::bigint AS used_bytes,
      COALESCE(SUM(used_keys), 0)::bigint AS used_keys
    FROM spaces WHERE app_id = %(app_id)s) AS t
  LEFT JOIN app_quotas a ON a.app_id = %(app_id)s"""
LARGEST_SPACES = """SELECT user_id, used_bytes, used_keys, limit_bytes, limit_keys,
    max_value_bytes FROM spaces WHERE app_id = %(app_id)s
  ORDER BY used_bytes DESC, user_id COLLATE "C" LIMIT %(top)s"""
# LimitOverrides.merged in SQL (a set field replaces, an unset one inherits; reset starts
# from nothing), so that concurrent calls cannot lose each other's fields.
MERGE_APP_OVERRIDES = """INSERT INTO app_quotas AS q (app_id, limit_bytes, limit_keys,
    max_value_bytes)
  VALUES (%(app_id)s, %(limit_bytes)s, %(limit_keys)s, %(max_value_bytes)s)
  ON CONFLICT (app_id) DO UPDATE SET
    limit_bytes = COALESCE(EXCLUDED.limit_bytes, CASE WHEN NOT %(reset)s THEN q.limit_bytes END),
    limit_keys = COALESCE(EXCLUDED.limit_keys, CASE WHEN NOT %(reset)s THEN q.limit_keys END),
    max_value_bytes = COALESCE(EXCLUDED.max_value_bytes,
      CASE WHEN NOT %(reset)s THEN q.max_value_bytes END)
  RETURNING limit_bytes, limit_keys, max_value_bytes"""
MERGE_SPACE_OVERRIDES = """INSERT INTO spaces AS s (user_id, app_id, limit_bytes, limit_keys,
    max_value_bytes)
  VALUES (%(user_id)s, %(app_id)s, %(limit_bytes)s, %(limit_keys)s, %(max_value_bytes)s)
  ON CONFLICT (user_id, app_id) DO UPDATE SET
    limit_bytes = COALESCE(EXCLUDED.limit_bytes, CASE WHEN NOT %(reset)s THEN s.limit_bytes END),
    limit_keys = COALESCE(EXCLUDED.limit_keys, CASE WHEN NOT %(reset)s THEN s.limit_keys END),
    max_value_bytes = COALESCE(EXCLUDED.max_value_bytes,
      CASE WHEN NOT %(reset)s THEN s.max_value_bytes END)
  RETURNING limit_bytes, limit_keys, max_value_bytes"""
SPACES_WITH_EXPIRED = """SELECT DISTINCT user_id, app_id FROM entries
  WHERE NOT deleted AND expires_at IS NOT NULL AND expires_at <= %(now)s LIMIT %(limit)s"""
MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(8389471015384213362)"  # b"tmcpmigr"
MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY, name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())"""
APPLIED = "SELECT version FROM schema_migrations"
RECORD_MIGRATION = "INSERT INTO schema_migrations (version, name) VALUES (%(version)s, %(name)s)"

# OperationalError covers lost and refused connections, server shutdown, timeouts and
# the pool's own errors (PoolTimeout, PoolClosed).

# Offline sync (migration 0002).
_E_COLUMNS = qualified(ENTRY_COLUMNS, "e")
RETAIN = """WITH kept AS (
    INSERT INTO versions (user_id, app_id, key, version, value, content_type)
    SELECT v.* FROM unnest(%(users)b::text[], %(apps)b::text[], %(keys)b::text[],
      %(versions)b::bigint[], %(values)b::bytea[], %(content_types)b::text[]) AS v
    ON CONFLICT (user_id, app_id, key, version) DO UPDATE SET value = EXCLUDED.value,
      content_type = EXCLUDED.content_type
  )
  DELETE FROM versions o USING unnest(%(users)b::text[], %(apps)b::text[], %(keys)b::text[],
    %(versions)b::bigint[]) AS n(u, a, key, version)
  WHERE o.user_id = n.u AND o.app_id = n.a AND o.key = n.key
    AND o.version <= n.version - %(keep)s"""
RETAINED = f"""SELECT value FROM versions WHERE {SPACE} AND key = %(key)s
  AND version = %(version)s"""
SYNC_CLIENT = f"""SELECT client_id, owner, last_mutation_id, last_push_at, last_pull_at
  FROM sync_clients WHERE {SPACE} AND client_id = %(client_id)s"""
SAVE_SYNC_CLIENT = """INSERT INTO sync_clients (user_id, app_id, client_id, owner,
    last_mutation_id, last_push_at, last_pull_at)
  VALUES (%(user_id)s, %(app_id)s, %(client_id)s, %(owner)s, %(last_mutation_id)s,
    %(last_push_at)s, %(last_pull_at)s)
  ON CONFLICT (user_id, app_id, client_id) DO UPDATE SET
    last_mutation_id = EXCLUDED.last_mutation_id, last_push_at = EXCLUDED.last_push_at"""
MARK_PULLED = f"""UPDATE sync_clients SET last_pull_at = %(now)s
  WHERE {SPACE} AND client_id = %(client_id)s RETURNING last_mutation_id"""
OUTCOMES = f"""SELECT {OUTCOME_COLUMNS} FROM push_outcomes
  WHERE {SPACE} AND client_id = %(client_id)s AND mutation_id BETWEEN %(first)s AND %(last)s
  ORDER BY mutation_id"""
SAVE_OUTCOMES = f"""INSERT INTO push_outcomes (user_id, app_id, client_id, {OUTCOME_COLUMNS})
  SELECT %(user_id)s::text, %(app_id)s::text, %(client_id)s::text, o.* FROM unnest(
    %(mutation_ids)b::bigint[], %(results)b::smallint[], %(keys)b::text[],
    %(versions)b::bigint[], %(conflict_ids)b::text[], %(kinds)b::text[],
    %(reasons)b::text[], %(messages)b::text[], %(metadata)b::jsonb[]) AS o
  ON CONFLICT (user_id, app_id, client_id, mutation_id) DO NOTHING"""
CONFLICT = f"""SELECT {CONFLICT_COLUMNS} FROM conflicts
  WHERE {SPACE} AND conflict_id = %(conflict_id)s"""
SAVE_CONFLICT = f"""INSERT INTO conflicts (user_id, app_id, {CONFLICT_COLUMNS})
  VALUES (%(user_id)s, %(app_id)s, %(conflict_id)s, %(key)s, %(strategy)s, %(state)s,
    %(server_value)s, %(server_content_type)s, %(server_version)s, %(client_value)s,
    %(client_content_type)s, %(client_version)s, %(client_id)s, %(mutation_id)s,
    %(base_version)s, %(created_at)s, %(resolved_at)s)
  ON CONFLICT (user_id, app_id, conflict_id) DO UPDATE SET state = EXCLUDED.state,
    resolved_at = EXCLUDED.resolved_at"""
LIST_CONFLICTS = f"""SELECT {CONFLICT_COLUMNS} FROM conflicts
  WHERE {SPACE} AND conflict_id > %(after)s AND (%(all)s OR state = 1)
    AND key >= %(low)s AND (%(high)s::text IS NULL OR key < %(high)s)
  ORDER BY conflict_id LIMIT %(limit)s"""
OPEN_CONFLICTS = f"SELECT COUNT(*) FROM conflicts WHERE {SPACE} AND state = 1"
HISTORY = f"""SELECT COALESCE(MAX(revision), 0), COALESCE(MAX(history_revision), 0),
    MAX(history_time) FROM spaces WHERE {SPACE}"""
# The change row is looked up per entry by its primary key (LIMIT 1 keeps the planner from
# flattening the subquery): as a plain join, a space loaded faster than autovacuum
# gathers statistics got a nested loop that scanned the space's changes for every row,
# ~11 s instead of ~0.5 s to pull 10,000 keys (bench/sync.py).
CHANGED_SINCE = f"""SELECT {_E_COLUMNS}, c.op, c.client_id, c.mutation_id
  FROM entries e LEFT JOIN LATERAL (SELECT op, client_id, mutation_id FROM changes
    WHERE user_id = e.user_id AND app_id = e.app_id AND revision = e.mod_revision
      AND key = e.key LIMIT 1) c ON true
  WHERE e.user_id = %(user_id)s AND e.app_id = %(app_id)s
    AND (e.mod_revision, e.key) > (%(revision)s, %(key)s::text COLLATE "C")
    AND e.key >= %(low)s AND (%(high)s::text IS NULL OR e.key < %(high)s)
  ORDER BY e.mod_revision, e.key LIMIT %(limit)s"""
COMPACT_LOGS = """WITH changes_gone AS (
    DELETE FROM changes WHERE created_at < %(before)s RETURNING 1
  ), outcomes_gone AS (
    DELETE FROM push_outcomes WHERE created_at < %(before)s RETURNING 1
  )
  SELECT (SELECT COUNT(*) FROM changes_gone) + (SELECT COUNT(*) FROM outcomes_gone)"""
OLD_TOMBSTONE_SPACES = """SELECT DISTINCT user_id, app_id FROM entries
  WHERE deleted AND updated_at < %(before)s LIMIT %(limit)s"""
LOCK_SPACE_ONLY = f"SELECT 1 FROM spaces WHERE {SPACE} FOR UPDATE"
# Run with the space row locked (the writers' lock order: space row first).
COMPACT_SPACE = f"""WITH tombstones AS (
    DELETE FROM entries WHERE {SPACE} AND deleted AND updated_at < %(before)s
    RETURNING key, mod_revision
  ), versions_gone AS (
    DELETE FROM versions v USING tombstones t
    WHERE v.user_id = %(user_id)s AND v.app_id = %(app_id)s AND v.key = t.key RETURNING 1
  ), horizon AS (
    UPDATE spaces SET history_revision = GREATEST(history_revision,
        (SELECT MAX(mod_revision) FROM tombstones)), history_time = %(now)s
    WHERE {SPACE} AND EXISTS (SELECT 1 FROM tombstones) RETURNING 1
  )
  SELECT (SELECT COUNT(*) FROM tombstones) + (SELECT COUNT(*) FROM versions_gone)"""
