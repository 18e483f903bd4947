"""The production repository: PostgreSQL through psycopg 3 and an async connection pool.

Round trips are the cost that matters, so statements that need no answer in between
travel together (libpq pipeline mode) and each read is one statement:

- ``get``, ``list_entries``, ``space_state``: one statement (the space revision is read
  in the same statement, hence the same snapshot, as the entries).
- ``usage_detail``, ``app_usage``: their statements pipelined in one read-only
  repeatable-read transaction: one round trip, one snapshot.
- a write transaction, over one space or several (``transactions``): BEGIN, lock the
  space rows, and one statement reading their next expiries with the entries of the keys
  the caller names: one round trip (a space's first write also inserts its row: one
  more). Any further ``load`` is one; every ``save`` is held back and all are sent as
  one statement with the next read or with COMMIT. A group of single-key writes of any
  spaces (core/grouping.py) is two round trips and five statements in all.
- a pooled connection idle for more than two seconds is checked first: one more.

Connections run in autocommit; write transactions issue their own sql.BEGIN so that it can
share the first round trip. Driver errors that mean "database unreachable" become
``errors.Unavailable``; anything else is a bug and propagates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import monotonic
from typing import Any

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.types.json import set_json_loads

from tmcp_storage_server.core.ports import RETAINED_VERSIONS
from tmcp_storage_server.model import (
    AppUsage,
    Change,
    ContentTypeUsage,
    Entry,
    LimitOverrides,
    Space,
    SpaceState,
    SpaceTotals,
    UsageDetail,
)
from tmcp_storage_server.store import codec
from tmcp_storage_server.store import postgres_sql as sql
from tmcp_storage_server.store.errors import translate
from tmcp_storage_server.store.migrations import scripts, statements
from tmcp_storage_server.store.one_space import OneSpaceMixin
from tmcp_storage_server.store.postgres_sync import SyncReadsMixin, SyncTransactionMixin

log = logging.getLogger(__name__)

_Conn = psycopg.AsyncConnection[tuple[Any, ...]]
_Row = tuple[Any, ...]

_TRANSIENT = (psycopg.OperationalError, psycopg_pool.PoolTimeout)
_OPEN_TIMEOUT = 5.0
"""Seconds ``open()`` waits for the first connection before reporting Unavailable."""
_CONNECT_TIMEOUT = 5
"""Seconds to establish one connection, unless the URL says otherwise."""
_ACQUIRE_TIMEOUT = 10.0
"""Seconds a call waits for a free pooled connection (queueing behind busy ones)."""
_ACQUIRE_TIMEOUT_DOWN = 0.5
"""The same once the database has failed, until a query succeeds again: while it is
unreachable the pool cannot make a connection, and calls must fail fast (UNAVAILABLE)
rather than wait for one."""
_PING_TIMEOUT = 2.0
_CHECK_AFTER_IDLE = 2.0
"""A pooled connection idle longer than this is checked (one empty query) before use."""
_NO_REVISION_LIMIT = 2**63 - 1
_IN_TRANSACTION = (TransactionStatus.INTRANS, TransactionStatus.INERROR)
_APPLICATION_NAME = "tmcp-storage"


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC)


def _entry(row: Sequence[Any]) -> Entry:
    return codec.entry_from_row(row, lambda moment: moment.astimezone(UTC))


def _overrides(values: Sequence[int | None]) -> LimitOverrides:
    return LimitOverrides(values[0], values[1], values[2])


def _state(row: Sequence[Any]) -> SpaceState:
    return SpaceState(row[0], row[1], row[2], _overrides(row[3:6]), _overrides(row[6:9]))


def _space_params(space: Space, **more: Any) -> dict[str, Any]:
    return {"user_id": space.user_id, "app_id": space.app_id, **more}


@dataclass(slots=True)
class _PendingSave:
    """What one space's ``save`` calls held back, merged: the last entry of each key,
    every change, and the space row as the last call left it."""

    revision: int = 0
    used_bytes: int = 0
    used_keys: int = 0
    entries: dict[str, Entry] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    retained: list[Entry] = field(default_factory=list)


def _owners(rows: Sequence[tuple[Space, Any]], users: str, apps: str) -> dict[str, list[str]]:
    """The user and app columns of rows owned by spaces."""
    return {users: [s.user_id for s, _ in rows], apps: [s.app_id for s, _ in rows]}


def _save_params(saves: Mapping[Space, _PendingSave]) -> dict[str, Any]:
    entries: list[tuple[Any, ...]] = []
    changes: list[tuple[Any, ...]] = []
    values: list[bytes] = []
    offset = 1  # substr counts from 1
    stamps: dict[datetime, str] = {}  # a batch shares a few moments

    def stamp(moment: datetime | None) -> str | None:
        if moment is None:
            return None
        text = stamps.get(moment)
        if text is None:
            text = stamps[moment] = moment.isoformat()
        return text

    for space, save in saves.items():
        user, app = space.user_id, space.app_id
        for e in save.entries.values():
            value, packing = (None, codec.RAW) if e.value is None else codec.pack_value(e.value)
            if value is None:
                at = length = None
            else:
                at, length = offset, len(value)
                values.append(value)
                offset += length
            entries.append(
                (
                    user,
                    app,
                    e.key,
                    packing,
                    e.content_type,
                    e.version,
                    e.create_revision,
                    e.mod_revision,
                    stamp(e.created_at),
                    stamp(e.updated_at),
                    stamp(e.expires_at),
                    e.size,
                    e.checksum,
                    dict(e.metadata),
                    e.deleted,
                    at,
                    length,
                )
            )
        changes += (
            (user, app, c.revision, c.key, int(c.op), c.version, c.client_id, c.mutation_id)
            for c in save.changes
        )
    return {
        "now": datetime.now(UTC),
        "entries": json.dumps(entries, separators=(",", ":")),
        "values": b"".join(values),
        "changes": json.dumps(changes, separators=(",", ":")),
        **_owners([(s, None) for s in saves], "user_ids", "app_ids"),
        "revisions": [save.revision for save in saves.values()],
        "used_bytes": [save.used_bytes for save in saves.values()],
        "used_keys": [save.used_keys for save in saves.values()],
    }


def _retain_params(saves: Mapping[Space, _PendingSave]) -> dict[str, Any] | None:
    kept = [(space, e) for space, save in saves.items() for e in save.retained]
    if not kept:
        return None
    return {
        **_owners(kept, "users", "apps"),
        "keep": RETAINED_VERSIONS,
        "keys": [e.key for _, e in kept],
        "versions": [e.version for _, e in kept],
        "values": [e.value for _, e in kept],
        "content_types": [e.content_type for _, e in kept],
    }


class _Work:
    """What the spaces of one write transaction share: the connection (inside sql.BEGIN,
    their rows locked) and the statements held back until the next read or COMMIT."""

    def __init__(self, conn: _Conn) -> None:
        self.conn = conn
        self.saves: dict[Space, _PendingSave] = {}
        """Every space's entries, changes and row, sent as one sql.SAVE."""
        self.unsent: list[tuple[str, dict[str, Any]]] = []
        """Other writes (sync records), in order."""

    async def rows(self, query: str, params: Mapping[str, Any]) -> list[_Row]:
        if not self.saves and not self.unsent:
            return await (await self.conn.execute(query, params, binary=True)).fetchall()
        async with self.conn.pipeline():
            await self._send()
            cursor = await self.conn.execute(query, params, binary=True)
        return await cursor.fetchall()

    async def _send(self) -> None:
        if self.saves:
            await self.conn.execute(sql.SAVE, _save_params(self.saves))
            retain = _retain_params(self.saves)
            if retain is not None:
                await self.conn.execute(sql.RETAIN, retain)
            self.saves.clear()
        for query, params in self.unsent:
            await self.conn.execute(query, params)
        self.unsent.clear()

    async def commit(self) -> None:
        """Send held-back writes and sql.COMMIT in one round trip."""
        async with self.conn.pipeline():
            await self._send()
            await self.conn.execute(sql.COMMIT)


class _Transaction(SyncTransactionMixin):
    """``SpaceTransaction``: one space of a write transaction (``_Work``)."""

    def __init__(
        self,
        work: _Work,
        space: Space,
        state: SpaceState,
        next_expiry: datetime | None,
        prefetched: dict[str, Entry | None],
    ) -> None:
        self._work = work
        self._space = space
        self.state = state
        # Entries read while taking the lock; only the lock holder changes them, and
        # save() keeps them current, so they stay valid until commit.
        self._prefetched = prefetched
        # Only the holder of the space lock changes its entries, so the earliest expiry
        # read after locking stays a lower bound: no due entries before it, no query.
        self._next_expiry = next_expiry
        self._unsent = work.unsent  # the sync records' statements (SyncTransactionMixin)

    async def _rows(self, query: str, params: Mapping[str, Any]) -> list[_Row]:
        return await self._work.rows(query, params)

    async def _one_row(self, query: str, params: Mapping[str, Any]) -> _Row | None:
        rows = await self._rows(query, params)
        return rows[0] if rows else None

    async def load(self, keys: Sequence[str]) -> dict[str, Entry]:
        missing = [k for k in keys if k not in self._prefetched]
        found = {k: e for k in keys if (e := self._prefetched.get(k)) is not None}
        if missing:
            rows = await self._rows(sql.LOAD, _space_params(self._space, keys=missing))
            found.update((entry.key, entry) for entry in map(_entry, rows))
        return found

    async def load_prefix(self, prefix: str, now: datetime) -> list[Entry]:
        high = codec.prefix_upper_bound(prefix) if prefix else None
        query = sql.LOAD_PREFIX if high is not None else sql.LOAD_FROM
        params = _space_params(self._space, now=now, low=prefix, high=high)
        return [_entry(r) for r in await self._rows(query, params)]

    async def due_expired(self, now: datetime) -> list[Entry]:
        if self._next_expiry is None or self._next_expiry > now:
            return []
        rows = await self._rows(sql.DUE, _space_params(self._space, now=now))
        return [_entry(r) for r in rows]

    async def save(
        self,
        *,
        revision: int,
        entries: Sequence[Entry],
        changes: Sequence[Change],
        used_bytes: int,
        used_keys: int,
        retained: Sequence[Entry] = (),
    ) -> None:
        pending = self._work.saves.setdefault(self._space, _PendingSave())
        pending.revision, pending.used_bytes, pending.used_keys = revision, used_bytes, used_keys
        pending.entries.update((e.key, e) for e in entries)
        pending.changes.extend(changes)
        pending.retained.extend(retained)
        for entry in entries:
            if entry.key in self._prefetched:
                self._prefetched[entry.key] = entry
        expiries = [e.expires_at for e in entries if not e.deleted and e.expires_at is not None]
        if self._next_expiry is not None:
            expiries.append(self._next_expiry)
        self._next_expiry = min(expiries, default=None)


class PostgresRepository(SyncReadsMixin, OneSpaceMixin[_Transaction]):
    """``core.ports.Repository`` on PostgreSQL."""

    def __init__(self, *, url: str, min_size: int = 1, max_size: int = 10) -> None:
        self._url = url
        self._min_size = min_size
        self._max_size = max_size
        self._idle_since: weakref.WeakKeyDictionary[_Conn, float] = weakref.WeakKeyDictionary()
        self._down = False
        self._pool = self._new_pool()

    def _new_pool(self) -> psycopg_pool.AsyncConnectionPool:
        given = conninfo_to_dict(self._url)
        kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in given:
            kwargs["connect_timeout"] = _CONNECT_TIMEOUT
        if "application_name" not in given:
            kwargs["application_name"] = _APPLICATION_NAME  # shown in pg_stat_activity
        return psycopg_pool.AsyncConnectionPool(
            self._url,
            kwargs=kwargs,
            min_size=self._min_size,
            max_size=self._max_size,
            open=False,
            check=self._check,
            configure=_configure,
            timeout=_ACQUIRE_TIMEOUT,
            name="tmcp-storage",
        )

    async def _check(self, conn: _Conn) -> None:
        # A connection used moments ago is known good: checking it on every checkout
        # would double the round trips of a Get. One idle for a while may have been
        # cut (server restart, idle timeouts on the way) and is checked first.
        idle_since = self._idle_since.get(conn)
        if idle_since is None or monotonic() - idle_since > _CHECK_AFTER_IDLE:
            await psycopg_pool.AsyncConnectionPool.check_connection(conn)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[_Conn]:
        timeout = _ACQUIRE_TIMEOUT_DOWN if self._down else _ACQUIRE_TIMEOUT
        try:
            async with self._pool.connection(timeout=timeout) as conn:
                try:
                    yield conn
                finally:
                    if conn.info.transaction_status == TransactionStatus.IDLE:
                        self._idle_since[conn] = monotonic()  # else: checked before reuse
        except _TRANSIENT:
            self._down = True
            raise
        self._down = False

    async def open(self) -> None:
        """Connect (failing within a few seconds if the database is unreachable) and
        apply migrations."""
        with translate(*_TRANSIENT):
            try:
                await self._pool.open(wait=True, timeout=_OPEN_TIMEOUT)
                await self._migrate()
                await self._check_autovacuum()
            except BaseException:
                await self._pool.close()
                self._pool = self._new_pool()  # a closed pool cannot be reopened
                raise

    async def _migrate(self) -> None:
        async with self._connection() as conn, conn.transaction():
            # Processes starting together wait here, then find the work done.
            await conn.execute(sql.MIGRATION_LOCK)
            await conn.execute(sql.MIGRATIONS_TABLE)
            applied = {row[0] for row in await (await conn.execute(sql.APPLIED)).fetchall()}
            for version, name, script in scripts("postgres"):
                if version not in applied:
                    for statement in statements(script):
                        await conn.execute(statement)
                    await conn.execute(sql.RECORD_MIGRATION, {"version": version, "name": name})

    async def _check_autovacuum(self) -> None:
        # Prepared statements keep the plans made when a table was small until an ANALYZE
        # invalidates them: without autovacuum, key lookups of a grown space can stay on
        # a scan of the whole space (seen here: 15 s per 1,000-key batch at 150k keys).
        async with self._connection() as conn:
            row = await (await conn.execute(sql.AUTOVACUUM)).fetchone()
        if row is not None and row[0] != "on":
            log.warning(
                "PostgreSQL runs with autovacuum off: nothing ANALYZEs the tables as they "
                "grow, and query plans made on small tables stay in use; turn it on, or "
                "run ANALYZE regularly"
            )

    async def close(self) -> None:
        """Close the pool's connections (``open()`` may be called again)."""
        await self._pool.close()
        self._pool = self._new_pool()

    def pool_stats(self) -> dict[str, int]:
        """The pool's gauges and counters (psycopg_pool ``get_stats``), for metrics."""
        return self._pool.get_stats()

    async def ping(self) -> None:
        """Raise ``Unavailable`` unless the database answers ``SELECT 1`` promptly."""
        with translate(*_TRANSIENT, TimeoutError):
            async with asyncio.timeout(_PING_TIMEOUT), self._connection() as conn:
                await conn.execute(sql.PING)

    async def _one(self, query: str, params: Mapping[str, Any]) -> _Row:
        with translate(*_TRANSIENT):
            async with self._connection() as conn:
                row = await (await conn.execute(query, params, binary=True)).fetchone()
        assert row is not None, "statement returns one row"
        return row

    async def _all(self, query: str, params: Mapping[str, Any]) -> list[_Row]:
        with translate(*_TRANSIENT):
            async with self._connection() as conn:
                return await (await conn.execute(query, params, binary=True)).fetchall()

    async def _snapshot(self, *queries: tuple[str, Mapping[str, Any]]) -> list[list[_Row]]:
        """Several reads in one round trip and one snapshot (a pipelined read-only
        repeatable-read transaction)."""
        with translate(*_TRANSIENT):
            async with self._connection() as conn:
                async with conn.pipeline():
                    await conn.execute(sql.BEGIN_SNAPSHOT)
                    cursors = [await conn.execute(q, p, binary=True) for q, p in queries]
                    await conn.execute(sql.COMMIT)
                return [await cursor.fetchall() for cursor in cursors]

    async def get(self, space: Space, key: str, now: datetime) -> tuple[Entry | None, int]:
        """The live entry of ``key`` and the space revision, in one statement."""
        row = await self._one(sql.GET, _space_params(space, key=key, now=now))
        return (_entry(row[1:]) if row[1] is not None else None), row[0]

    async def get_many(
        self, space: Space, keys: Sequence[str], now: datetime
    ) -> tuple[dict[str, Entry], int]:
        """Live entries of ``keys`` and the space revision, in one statement."""
        rows = await self._all(sql.GET_MANY, _space_params(space, keys=list(keys), now=now))
        return {row[1]: _entry(row[1:]) for row in rows if row[1] is not None}, rows[0][0]

    async def list_entries(
        self,
        space: Space,
        *,
        prefix: str,
        start_after: str | None,
        limit: int,
        include_values: bool,
        max_create_revision: int | None,
        now: datetime,
    ) -> tuple[list[Entry], int]:
        """Live entries under a prefix, in key order, and the revision, in one statement."""
        high = codec.prefix_upper_bound(prefix) if prefix else None
        params = _space_params(
            space,
            now=now,
            low=prefix,
            high=high,
            after=start_after or "",  # every key is longer than "": no bound
            limit=limit,
            max_rev=_NO_REVISION_LIMIT if max_create_revision is None else max_create_revision,
        )
        rows = await self._all(sql.LISTS[include_values, high is not None], params)
        return [_entry(r[1:]) for r in rows if r[1] is not None], rows[0][0]

    @asynccontextmanager
    async def transactions(
        self, requests: Mapping[Space, Sequence[str]]
    ) -> AsyncIterator[dict[Space, _Transaction]]:
        """One write transaction holding the rows' locks of several spaces; the keys
        named for each are read in the same round trip as the locks, and everything the
        spaces save is sent as one statement with COMMIT."""
        with translate(*_TRANSIENT):
            async with self._connection() as conn:
                work = _Work(conn)
                spaces = await self._begin(work, requests)
                try:
                    yield spaces
                    await work.commit()
                except BaseException:
                    await _rollback(conn)
                    raise

    async def _begin(
        self, work: _Work, requests: Mapping[Space, Sequence[str]]
    ) -> dict[Space, _Transaction]:
        # One round trip: BEGIN, lock the space rows (SELECT .. FOR UPDATE marks them
        # without writing new row versions, as ON CONFLICT DO UPDATE would on every
        # write), then their next expiries and the entries of the keys. Pipelined
        # statements run in order, so the last one takes its snapshot after the locks are
        # granted. A space's first write finds no row: it is inserted and the rest done
        # again under the lock.
        ordered = sorted(requests, key=lambda s: (s.user_id, s.app_id))
        wanted = [(space, key) for space in ordered for key in dict.fromkeys(requests[space])]
        params = {
            "user_ids": [s.user_id for s in ordered],
            "app_ids": [s.app_id for s in ordered],
            "key_users": [s.user_id for s, _ in wanted],
            "key_apps": [s.app_id for s, _ in wanted],
            "keys": [k for _, k in wanted],
        }
        states, rows = await self._lock(work.conn, params, create=False)
        if len(states) < len(ordered):
            states, rows = await self._lock(work.conn, params, create=True)
        assert len(states) == len(ordered), "every space row exists: inserted above"
        expiries: dict[Space, datetime | None] = {}
        prefetched: dict[Space, dict[str, Entry | None]] = {s: {} for s in ordered}
        for space, key in wanted:
            prefetched[space][key] = None
        for row in rows:
            space = Space(row[1], row[0])
            expiries[space] = _utc(row[2])
            if row[3] is not None:
                entry = _entry(row[3:])
                prefetched[space][entry.key] = entry
        return {
            space: _Transaction(
                work, space, _state(states[space]), expiries.get(space), prefetched[space]
            )
            for space in ordered
        }

    async def _lock(
        self, conn: _Conn, params: Mapping[str, Any], *, create: bool
    ) -> tuple[dict[Space, _Row], list[_Row]]:
        async with conn.pipeline():
            if create:
                await conn.execute(sql.CREATE_SPACES, params)
            else:
                await conn.execute(sql.BEGIN)
            locked = await conn.execute(sql.LOCK_SPACES, params)
            loaded = await conn.execute(sql.EXPIRIES_AND_LOAD, params, binary=True)
        states = {Space(row[1], row[0]): row[2:] for row in await locked.fetchall()}
        return states, await loaded.fetchall()

    async def space_state(self, space: Space) -> SpaceState:
        """The space's row; a zero state (with the app's overrides) when it is new."""
        return _state(await self._one(sql.STATE, _space_params(space)))

    async def usage_detail(self, space: Space, now: datetime, top_keys: int) -> UsageDetail:
        """Usage by content type, expiring entries and the largest keys."""
        params = _space_params(space, now=now, top=top_keys)
        by_type, expiring, largest, conflicts = await self._snapshot(
            (sql.USAGE_BY_TYPE, params),
            (sql.EXPIRING, params),
            (sql.LARGEST_KEYS, params),
            (sql.OPEN_CONFLICTS, params),
        )
        return UsageDetail(
            tuple(ContentTypeUsage(ct, size, count) for ct, size, count in by_type),
            expiring[0][0],
            expiring[0][1],
            conflicts[0][0],
            tuple((key, size) for key, size in largest),
        )

    async def app_usage(self, app_id: str, top_spaces: int) -> AppUsage:
        """Totals over the spaces of an app, its overrides and its largest spaces."""
        params = {"app_id": app_id, "top": top_spaces}
        totals, largest = await self._snapshot(
            (sql.APP_TOTALS, params), (sql.LARGEST_SPACES, params)
        )
        spaces, used_bytes, used_keys, *overrides = totals[0]
        return AppUsage(
            app_id,
            spaces,
            used_bytes,
            used_keys,
            _overrides(overrides),
            tuple(
                SpaceTotals(Space(app_id, row[0]), row[1], row[2], _overrides(row[3:6]))
                for row in largest
            ),
        )

    async def set_overrides(
        self, app_id: str, user_id: str | None, overrides: LimitOverrides, reset: bool
    ) -> LimitOverrides:
        """Merge overrides into an app's or a space's, atomically in one statement."""
        params = {
            "app_id": app_id,
            "user_id": user_id,
            "reset": reset,
            "limit_bytes": overrides.limit_bytes,
            "limit_keys": overrides.limit_keys,
            "max_value_bytes": overrides.max_value_bytes,
        }
        query = sql.MERGE_APP_OVERRIDES if user_id is None else sql.MERGE_SPACE_OVERRIDES
        return _overrides(await self._one(query, params))

    async def spaces_with_expired(self, now: datetime, limit: int) -> list[Space]:
        """Spaces holding live entries past their expiry."""
        rows = await self._all(sql.SPACES_WITH_EXPIRED, {"now": now, "limit": limit})
        return [Space(app_id, user_id) for user_id, app_id in rows]


def _json_loads(data: str | bytes) -> Any:
    return {} if data == b"{}" or data == "{}" else json.loads(data)


async def _configure(conn: _Conn) -> None:
    # Almost every entry's metadata is empty: read "{}" without json.loads (1.5 us, for
    # each row of every load and read).
    set_json_loads(_json_loads, conn)
    # Timestamps come back in the session's time zone; in UTC psycopg gives them
    # datetime.UTC itself, so that _utc is free. (In another zone, such as the usual
    # Etc/UTC, both psycopg and _utc convert each one: ~1 us per row read.)
    await conn.execute(sql.SET_UTC)


async def _rollback(conn: _Conn) -> None:
    # The connection may be broken (that may be why we roll back); the pool then
    # discards it, and the original error is the one to report.
    with suppress(psycopg.Error):
        if conn.info.transaction_status in _IN_TRANSACTION:
            await conn.execute(sql.ROLLBACK)
