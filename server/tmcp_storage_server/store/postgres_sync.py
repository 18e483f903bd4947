"""The sync part of the PostgreSQL repository: sync clients, push outcomes, conflicts,
retained versions (in a transaction), and the reads of Pull, Watch and compaction.

Mixins of ``postgres._Transaction`` and ``PostgresRepository``; what they use of their
host is spelled out by the ``_TxHost`` and ``_RepoHost`` protocols.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
import psycopg_pool

from tmcp_storage_server.core.ports import ChangesPage
from tmcp_storage_server.model import Conflict, Outcome, Space, SyncClient
from tmcp_storage_server.store import codec
from tmcp_storage_server.store import postgres_sql as sql
from tmcp_storage_server.store.errors import translate

_Row = tuple[Any, ...]
_TRANSIENT = (psycopg.OperationalError, psycopg_pool.PoolTimeout)


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC)


def _as_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _space_params(space: Space, **more: Any) -> dict[str, Any]:
    return {"user_id": space.user_id, "app_id": space.app_id, **more}


def _sync_client(row: Sequence[Any]) -> SyncClient:
    return SyncClient(row[0], row[1], row[2], _utc(row[3]), _utc(row[4]))


class _TxHost(Protocol):
    _space: Space
    _unsent: list[tuple[str, dict[str, Any]]]

    async def _rows(self, query: str, params: Mapping[str, Any]) -> list[_Row]: ...

    async def _one_row(self, query: str, params: Mapping[str, Any]) -> _Row | None: ...


class _RepoHost(Protocol):
    def _connection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[_Row]]: ...

    async def _one(self, query: str, params: Mapping[str, Any]) -> _Row: ...

    async def _all(self, query: str, params: Mapping[str, Any]) -> list[_Row]: ...

    async def _snapshot(self, *queries: tuple[str, Mapping[str, Any]]) -> list[list[_Row]]: ...


class SyncTransactionMixin:
    """Sync records written and read inside a space's write transaction."""

    async def sync_client(self: _TxHost, client_id: str) -> SyncClient | None:
        row = await self._one_row(sql.SYNC_CLIENT, _space_params(self._space, client_id=client_id))
        return None if row is None else _sync_client(row)

    async def save_sync_client(self: _TxHost, client: SyncClient) -> None:
        params = _space_params(
            self._space,
            client_id=client.client_id,
            owner=client.owner,
            last_mutation_id=client.last_mutation_id,
            last_push_at=client.last_push_at,
            last_pull_at=client.last_pull_at,
        )
        self._unsent.append((sql.SAVE_SYNC_CLIENT, params))

    async def outcomes(self: _TxHost, client_id: str, first: int, last: int) -> list[Outcome]:
        params = _space_params(self._space, client_id=client_id, first=first, last=last)
        return [codec.outcome_from_row(r) for r in await self._rows(sql.OUTCOMES, params)]

    async def save_outcomes(self: _TxHost, client_id: str, outcomes: Sequence[Outcome]) -> None:
        if not outcomes:
            return
        rows = [codec.outcome_params(o) for o in outcomes]
        columns = {
            "mutation_ids": "mutation_id",
            "results": "result",
            "keys": "key",
            "versions": "version",
            "conflict_ids": "conflict_id",
            "kinds": "error_kind",
            "reasons": "error_reason",
            "messages": "error_message",
            "metadata": "error_metadata",
        }
        params = {name: [r[column] for r in rows] for name, column in columns.items()}
        self._unsent.append(
            (sql.SAVE_OUTCOMES, _space_params(self._space, client_id=client_id, **params))
        )

    async def retained_value(self: _TxHost, key: str, version: int) -> bytes | None:
        params = _space_params(self._space, key=key, version=version)
        row = await self._one_row(sql.RETAINED, params)
        return None if row is None else bytes(row[0])

    async def conflict(self: _TxHost, conflict_id: str) -> Conflict | None:
        params = _space_params(self._space, conflict_id=conflict_id)
        row = await self._one_row(sql.CONFLICT, params)
        return None if row is None else codec.conflict_from_row(row, _as_utc)

    async def save_conflict(self: _TxHost, conflict: Conflict) -> None:
        params = _space_params(self._space, **codec.conflict_params(conflict, _as_utc))
        self._unsent.append((sql.SAVE_CONFLICT, params))


class SyncReadsMixin:
    """Sync reads and maintenance of the repository."""

    async def sync_client(self: _RepoHost, space: Space, client_id: str) -> SyncClient | None:
        """A client's row in a space."""
        rows = await self._all(sql.SYNC_CLIENT, _space_params(space, client_id=client_id))
        return _sync_client(rows[0]) if rows else None

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
        high = codec.prefix_upper_bound(prefix) if prefix else None
        params = _space_params(
            space, after=after, all=include_resolved, limit=limit, low=prefix, high=high
        )
        rows = await self._all(sql.LIST_CONFLICTS, params)
        return [codec.conflict_from_row(r, _as_utc) for r in rows]

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
        """Keys changed after ``(revision, key)`` and the space's history, one snapshot."""
        high = codec.prefix_upper_bound(prefix) if prefix else None
        params = _space_params(
            space, revision=revision, key=key, limit=limit, low=prefix, high=high
        )
        rows, history, conflicts = await self._snapshot(
            (sql.CHANGED_SINCE, params), (sql.HISTORY, params), (sql.OPEN_CONFLICTS, params)
        )
        changes = [codec.changed_from_row(r, now, _as_utc) for r in rows]
        revision_now, horizon, horizon_time = history[0]
        return ChangesPage(changes, revision_now, horizon, _utc(horizon_time), conflicts[0][0])

    async def mark_pulled(self: _RepoHost, space: Space, client_id: str, now: datetime) -> int:
        """Record a client's pull; its last mutation id."""
        rows = await self._all(sql.MARK_PULLED, _space_params(space, client_id=client_id, now=now))
        return int(rows[0][0]) if rows else 0

    async def compact(self: _RepoHost, before: datetime, now: datetime) -> int:
        """Forget change rows, push outcomes and tombstones older than ``before``; each
        space's tombstones under its row lock (the writers' lock order)."""
        params = {"before": before, "now": now, "limit": 1000}
        removed = int((await self._one(sql.COMPACT_LOGS, params))[0])
        for user_id, app_id in await self._all(sql.OLD_TOMBSTONE_SPACES, params):
            space_params = {**params, "user_id": user_id, "app_id": app_id}
            with translate(*_TRANSIENT):
                async with self._connection() as conn, conn.transaction():
                    await conn.execute(sql.LOCK_SPACE_ONLY, space_params)
                    row = await (await conn.execute(sql.COMPACT_SPACE, space_params)).fetchone()
            removed += int(row[0]) if row else 0
        return removed
