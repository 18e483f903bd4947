"""The sync part of the SQLite repository: sync clients, push outcomes, conflicts,
retained versions (in a transaction), and the reads of Pull, Watch and compaction.

Mixins of ``sqlite._Transaction`` and ``SqliteRepository``; what they use of their host
is spelled out by the ``_TxHost`` and ``_RepoHost`` protocols.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from tmcp_storage_server.core.ports import ChangesPage
from tmcp_storage_server.model import Conflict, Outcome, Space, SyncClient
from tmcp_storage_server.store import codec
from tmcp_storage_server.store import sqlite_sql as sql
from tmcp_storage_server.store.errors import translate

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_TRANSIENT = (sqlite3.OperationalError,)


def to_us(moment: datetime | None) -> int | None:
    """Microseconds since the epoch."""
    return None if moment is None else (moment - _EPOCH) // _US


def from_us(micros: int | None) -> datetime | None:
    """A UTC datetime from microseconds since the epoch."""
    return None if micros is None else _EPOCH + micros * _US


def _to_us(moment: datetime) -> int:
    return (moment - _EPOCH) // _US


def _from_us(micros: int) -> datetime:
    return _EPOCH + micros * _US


def _space_params(space: Space, **more: Any) -> dict[str, Any]:
    return {"user_id": space.user_id, "app_id": space.app_id, **more}


def _prefix_range(prefix: str) -> dict[str, str | None]:
    return {"low": prefix, "high": codec.prefix_upper_bound(prefix) if prefix else None}


def _sync_client(conn: sqlite3.Connection, space: Space, client_id: str) -> SyncClient | None:
    row = conn.execute(sql.SYNC_CLIENT, _space_params(space, client_id=client_id)).fetchone()
    if row is None:
        return None
    return SyncClient(row[0], row[1], row[2], from_us(row[3]), from_us(row[4]))


class _TxHost(Protocol):
    _conn: sqlite3.Connection
    _space: Space


class _RepoHost(Protocol):
    _lock: asyncio.Lock

    @property
    def _w(self) -> sqlite3.Connection: ...

    def _read(self) -> AbstractAsyncContextManager[sqlite3.Connection]: ...

    def _compact(self, conn: sqlite3.Connection, params: dict[str, Any]) -> int: ...


class SyncTransactionMixin:
    """Sync records written and read inside a space's write transaction."""

    async def sync_client(self: _TxHost, client_id: str) -> SyncClient | None:
        return _sync_client(self._conn, self._space, client_id)

    async def save_sync_client(self: _TxHost, client: SyncClient) -> None:
        params = _space_params(
            self._space,
            client_id=client.client_id,
            owner=client.owner,
            last_mutation_id=client.last_mutation_id,
            last_push_at=to_us(client.last_push_at),
            last_pull_at=to_us(client.last_pull_at),
        )
        self._conn.execute(sql.SAVE_SYNC_CLIENT, params)

    async def outcomes(self: _TxHost, client_id: str, first: int, last: int) -> list[Outcome]:
        params = _space_params(self._space, client_id=client_id, first=first, last=last)
        return [codec.outcome_from_row(r) for r in self._conn.execute(sql.OUTCOMES, params)]

    async def save_outcomes(self: _TxHost, client_id: str, outcomes: Sequence[Outcome]) -> None:
        now = to_us(datetime.now(UTC))
        rows = [
            _space_params(self._space, client_id=client_id, now=now, **codec.outcome_params(o))
            for o in outcomes
        ]
        self._conn.executemany(sql.SAVE_OUTCOME, rows)

    async def retained_value(self: _TxHost, key: str, version: int) -> bytes | None:
        params = _space_params(self._space, key=key, version=version)
        row = self._conn.execute(sql.RETAINED, params).fetchone()
        return None if row is None else bytes(row[0])

    async def conflict(self: _TxHost, conflict_id: str) -> Conflict | None:
        params = _space_params(self._space, conflict_id=conflict_id)
        row = self._conn.execute(sql.CONFLICT, params).fetchone()
        return None if row is None else codec.conflict_from_row(row, _from_us)

    async def save_conflict(self: _TxHost, conflict: Conflict) -> None:
        params = _space_params(self._space, **codec.conflict_params(conflict, _to_us))
        self._conn.execute(sql.SAVE_CONFLICT, params)


class SyncReadsMixin:
    """Sync reads and maintenance of the repository."""

    async def sync_client(self: _RepoHost, space: Space, client_id: str) -> SyncClient | None:
        """A client's row in a space."""
        async with self._read() as conn:
            return _sync_client(conn, space, client_id)

    async def list_conflicts(
        self: _RepoHost,
        space: Space,
        *,
        prefix: str,
        include_resolved: bool,
        after: str,
        limit: int,
    ) -> list[Conflict]:
        """Conflicts of a space in id order."""
        params = _space_params(
            space, after=after, all=int(include_resolved), limit=limit, **_prefix_range(prefix)
        )
        async with self._read() as conn:
            rows = conn.execute(sql.LIST_CONFLICTS, params).fetchall()
        return [codec.conflict_from_row(r, _from_us) for r in rows]

    async def changed_since(
        self: _RepoHost,
        space: Space,
        *,
        revision: int,
        key: str,
        prefix: str,
        limit: int,
        now: datetime,
    ) -> ChangesPage:
        """Keys changed after ``(revision, key)``, and the space's history state."""
        params = _space_params(
            space, revision=revision, key=key, limit=limit, **_prefix_range(prefix)
        )
        async with self._read() as conn:
            rows = conn.execute(sql.CHANGED_SINCE, params).fetchall() if limit > 0 else []
            history = conn.execute(sql.HISTORY, params).fetchone() or (0, 0, None)
            (open_conflicts,) = conn.execute(sql.OPEN_CONFLICTS, params).fetchone()
        changes = [codec.changed_from_row(r, now, _from_us) for r in rows]
        return ChangesPage(changes, history[0], history[1], from_us(history[2]), open_conflicts)

    async def mark_pulled(self: _RepoHost, space: Space, client_id: str, now: datetime) -> int:
        """Record a client's pull; its last mutation id."""
        params = _space_params(space, client_id=client_id, now=to_us(now))
        async with self._lock:
            with translate(*_TRANSIENT):
                row = self._w.execute(sql.MARK_PULLED, params).fetchone()
        return 0 if row is None else int(row[0])

    async def compact(self: _RepoHost, before: datetime, now: datetime) -> int:
        """Forget change rows, tombstones and push outcomes older than ``before``."""
        params = {"before": to_us(before), "now": to_us(now)}
        async with self._lock:
            conn = self._w
            with translate(*_TRANSIENT):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    removed = self._compact(conn, params)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        return removed

    def _compact(self: _RepoHost, conn: sqlite3.Connection, params: dict[str, Any]) -> int:
        horizons = conn.execute(sql.OLD_TOMBSTONES, params).fetchall()
        removed = conn.execute(sql.COMPACT_CHANGES, params).rowcount
        removed += conn.execute(sql.COMPACT_OUTCOMES, params).rowcount
        removed += conn.execute(sql.COMPACT_VERSIONS, params).rowcount
        removed += conn.execute(sql.COMPACT_TOMBSTONES, params).rowcount
        for user_id, app_id, horizon in horizons:
            conn.execute(
                sql.RAISE_HORIZON,
                {"user_id": user_id, "app_id": app_id, "horizon": horizon, **params},
            )
        return removed
