"""The embedded repository: one SQLite file, so the server runs with no services.

One writer connection (transactions are serialized by an asyncio lock and by SQLite's own
write lock across processes, ``BEGIN IMMEDIATE``) and one reader connection (WAL lets it
read the last committed state while a write is open). Calls are synchronous on the event
loop: they take microseconds, and the embedded setup runs one worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from tmcp_storage_server.core.ports import RETAINED_VERSIONS
from tmcp_storage_server.errors import Unavailable
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
from tmcp_storage_server.store import sqlite_sql as sql
from tmcp_storage_server.store.errors import translate
from tmcp_storage_server.store.migrations import scripts, statements
from tmcp_storage_server.store.one_space import OneSpaceMixin
from tmcp_storage_server.store.sqlite_sync import (
    SyncReadsMixin,
    SyncTransactionMixin,
    to_us,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_TRANSIENT = (sqlite3.OperationalError,)


def _entry(row: Sequence[Any]) -> Entry:
    return codec.entry_from_row(row, lambda micros: _EPOCH + micros * _US)


def _overrides(values: Sequence[int | None]) -> LimitOverrides:
    return LimitOverrides(values[0], values[1], values[2])


def _space_params(space: Space, **more: Any) -> dict[str, Any]:
    return {"user_id": space.user_id, "app_id": space.app_id, **more}


def _prefix_range(prefix: str) -> dict[str, str | None]:
    return {"low": prefix, "high": codec.prefix_upper_bound(prefix) if prefix else None}


class _Transaction(SyncTransactionMixin):
    def __init__(self, conn: sqlite3.Connection, space: Space, state: SpaceState) -> None:
        self._conn = conn
        self._space = space
        self.state = state

    async def load(self, keys: Sequence[str]) -> dict[str, Entry]:
        rows = self._conn.execute(sql.LOAD, _space_params(self._space, keys=json.dumps(list(keys))))
        return {entry.key: entry for entry in map(_entry, rows)}

    async def load_prefix(self, prefix: str, now: datetime) -> list[Entry]:
        params = _space_params(self._space, now=to_us(now), **_prefix_range(prefix))
        return [_entry(r) for r in self._conn.execute(sql.LOAD_PREFIX, params)]

    async def due_expired(self, now: datetime) -> list[Entry]:
        params = _space_params(self._space, now=to_us(now))
        return [_entry(r) for r in self._conn.execute(sql.DUE, params)]

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
        now = to_us(datetime.now(UTC))
        self._conn.executemany(sql.UPSERT, [self._entry_params(e) for e in entries])
        self._conn.executemany(
            sql.APPEND_CHANGE,
            [
                _space_params(
                    self._space,
                    revision=c.revision,
                    key=c.key,
                    op=int(c.op),
                    version=c.version,
                    client_id=c.client_id,
                    mutation_id=c.mutation_id,
                    now=now,
                )
                for c in changes
            ],
        )
        self._conn.execute(
            sql.UPDATE_SPACE,
            _space_params(
                self._space, revision=revision, used_bytes=used_bytes, used_keys=used_keys, now=now
            ),
        )
        for entry in retained:
            params = _space_params(
                self._space,
                key=entry.key,
                version=entry.version,
                value=entry.value,
                content_type=entry.content_type,
                keep=RETAINED_VERSIONS,
            )
            self._conn.execute(sql.RETAIN, params)
            self._conn.execute(sql.PRUNE_VERSIONS, params)

    def _entry_params(self, entry: Entry) -> dict[str, Any]:
        value, value_codec = (
            (None, codec.RAW) if entry.value is None else codec.pack_value(entry.value)
        )
        return _space_params(
            self._space,
            key=entry.key,
            value=value,
            codec=value_codec,
            content_type=entry.content_type,
            version=entry.version,
            create_revision=entry.create_revision,
            mod_revision=entry.mod_revision,
            created_at=to_us(entry.created_at),
            updated_at=to_us(entry.updated_at),
            expires_at=to_us(entry.expires_at),
            size=entry.size,
            checksum=entry.checksum,
            metadata=codec.pack_metadata(entry.metadata),
            deleted=int(entry.deleted),
        )


class SqliteRepository(SyncReadsMixin, OneSpaceMixin[_Transaction]):
    """``core.ports.Repository`` on one SQLite file."""

    def __init__(self, *, path: str) -> None:
        self._path = path
        self._lock = asyncio.Lock()
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: an acknowledged write survives a power loss, not only a process crash.
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    @property
    def _w(self) -> sqlite3.Connection:
        if self._writer is None:
            raise Unavailable("repository is closed")
        return self._writer

    @property
    def _r(self) -> sqlite3.Connection:
        if self._reader is None:
            raise Unavailable("repository is closed")
        return self._reader

    async def open(self) -> None:
        """Open the file (creating its folder) and apply migrations."""
        folder = os.path.dirname(os.path.abspath(self._path))
        os.makedirs(folder, exist_ok=True)
        with translate(*_TRANSIENT):
            self._writer = self._connect()
            self._reader = self._connect()
            self._migrate()

    def _migrate(self) -> None:
        conn = self._w
        conn.execute("BEGIN IMMEDIATE")  # other processes wait here, then see the result
        try:
            conn.execute(sql.MIGRATIONS_TABLE)
            applied = {row[0] for row in conn.execute(sql.APPLIED)}
            for version, name, script in scripts("sqlite"):
                if version not in applied:
                    for statement in statements(script):
                        conn.execute(statement)
                    conn.execute(sql.RECORD_MIGRATION, (version, name, to_us(datetime.now(UTC))))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        """Close both connections."""
        for conn in (self._writer, self._reader):
            if conn is not None:
                conn.close()
        self._writer = self._reader = None

    async def ping(self) -> None:
        """Raise ``Unavailable`` unless the file can be read."""
        with translate(*_TRANSIENT):
            self._r.execute("SELECT 1").fetchone()

    def _state(self, conn: sqlite3.Connection, space: Space) -> SpaceState:
        row = conn.execute(sql.STATE, _space_params(space)).fetchone()
        if row is None:
            app = conn.execute(sql.APP_OVERRIDES, (space.app_id,)).fetchone()
            return SpaceState(app_overrides=_overrides(app) if app else LimitOverrides())
        return SpaceState(row[0], row[1], row[2], _overrides(row[3:6]), _overrides(row[6:9]))

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[sqlite3.Connection]:
        # One snapshot for the statements of a read; no await inside, so reads on the
        # shared reader connection never interleave.
        with translate(*_TRANSIENT):
            conn = self._r
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    async def get(self, space: Space, key: str, now: datetime) -> tuple[Entry | None, int]:
        """The live entry of ``key`` and the space revision."""
        async with self._read() as conn:
            row = conn.execute(sql.GET, _space_params(space, key=key, now=to_us(now))).fetchone()
            return (_entry(row) if row else None), self._state(conn, space).revision

    async def get_many(
        self, space: Space, keys: Sequence[str], now: datetime
    ) -> tuple[dict[str, Entry], int]:
        """Live entries of ``keys`` and the space revision, in one snapshot."""
        params = _space_params(space, keys=json.dumps(list(keys)), now=to_us(now))
        async with self._read() as conn:
            rows = conn.execute(sql.GET_MANY, params)
            found = {entry.key: entry for entry in map(_entry, rows)}
            return found, self._state(conn, space).revision

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
        """Live entries under a prefix, in key order."""
        params = _space_params(
            space,
            now=to_us(now),
            after=start_after,
            limit=limit,
            max_rev=max_create_revision,
            **_prefix_range(prefix),
        )
        async with self._read() as conn:
            rows = conn.execute(sql.LIST_VALUES if include_values else sql.LIST_KEYS, params)
            entries = [_entry(r) for r in rows]
            return entries, self._state(conn, space).revision

    @asynccontextmanager
    async def transactions(
        self, requests: Mapping[Space, Sequence[str]]
    ) -> AsyncIterator[dict[Space, _Transaction]]:
        """One write transaction over several spaces (SQLite's write lock covers all)."""
        async with self._lock:
            conn = self._w
            with translate(*_TRANSIENT):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    now = to_us(datetime.now(UTC))
                    spaces = {}
                    for space in requests:
                        conn.execute(sql.CREATE_SPACE, _space_params(space, now=now))
                        spaces[space] = _Transaction(conn, space, self._state(conn, space))
                    yield spaces
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")

    async def space_state(self, space: Space) -> SpaceState:
        """The space's row; a zero state when it does not exist yet."""
        async with self._read() as conn:
            return self._state(conn, space)

    async def usage_detail(self, space: Space, now: datetime, top_keys: int) -> UsageDetail:
        """Usage by content type, expiring entries and the largest keys."""
        params = _space_params(space, now=to_us(now), top=top_keys)
        async with self._read() as conn:
            by_type = tuple(
                ContentTypeUsage(ct, size, count)
                for ct, size, count in conn.execute(sql.USAGE_BY_TYPE, params)
            )
            expiring_keys, expiring_bytes = conn.execute(sql.EXPIRING, params).fetchone()
            largest = tuple((k, s) for k, s in conn.execute(sql.LARGEST_KEYS, params))
            (open_conflicts,) = conn.execute(sql.OPEN_CONFLICTS, params).fetchone()
        return UsageDetail(by_type, expiring_keys, expiring_bytes, open_conflicts, largest)

    async def app_usage(self, app_id: str, top_spaces: int) -> AppUsage:
        """Totals over the spaces of an app."""
        async with self._read() as conn:
            spaces, used_bytes, used_keys = conn.execute(sql.APP_TOTALS, (app_id,)).fetchone()
            app = conn.execute(sql.APP_OVERRIDES, (app_id,)).fetchone()
            largest = tuple(
                SpaceTotals(Space(app_id, row[0]), row[1], row[2], _overrides(row[3:6]))
                for row in conn.execute(sql.LARGEST_SPACES, (app_id, top_spaces))
            )
        overrides = _overrides(app) if app else LimitOverrides()
        return AppUsage(app_id, spaces, used_bytes, used_keys, overrides, largest)

    async def set_overrides(
        self, app_id: str, user_id: str | None, overrides: LimitOverrides, reset: bool
    ) -> LimitOverrides:
        """Merge overrides into an app's or a space's."""
        async with self._lock:
            conn = self._w
            with translate(*_TRANSIENT):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    merged = self._merge_overrides(conn, app_id, user_id, overrides, reset)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        return merged

    def _merge_overrides(
        self,
        conn: sqlite3.Connection,
        app_id: str,
        user_id: str | None,
        overrides: LimitOverrides,
        reset: bool,
    ) -> LimitOverrides:
        if user_id is None:
            row = conn.execute(sql.APP_OVERRIDES, (app_id,)).fetchone()
        else:
            params = _space_params(Space(app_id, user_id), now=to_us(datetime.now(UTC)))
            conn.execute(sql.CREATE_SPACE, params)
            row = conn.execute(sql.SPACE_OVERRIDES, params).fetchone()
        current = LimitOverrides() if reset or row is None else _overrides(row)
        merged = current.merged(overrides)
        if user_id is None:
            conn.execute(
                sql.UPSERT_APP_OVERRIDES,
                (app_id, merged.limit_bytes, merged.limit_keys, merged.max_value_bytes),
            )
        else:
            conn.execute(
                sql.SET_SPACE_OVERRIDES,
                _space_params(
                    Space(app_id, user_id),
                    limit_bytes=merged.limit_bytes,
                    limit_keys=merged.limit_keys,
                    max_value_bytes=merged.max_value_bytes,
                ),
            )
        return merged

    async def spaces_with_expired(self, now: datetime, limit: int) -> list[Space]:
        """Spaces holding live entries past their expiry."""
        async with self._read() as conn:
            rows = conn.execute(sql.SPACES_WITH_EXPIRED, (to_us(now), limit))
            return [Space(app_id, user_id) for user_id, app_id in rows]
