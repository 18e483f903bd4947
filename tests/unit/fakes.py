"""An in-memory repository for unit tests of the core (no database)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from tmcp_storage_server.core.ports import ChangesPage
from tmcp_storage_server.model import (
    AppUsage,
    Change,
    ChangedKey,
    ChangeOp,
    Entry,
    LimitOverrides,
    Principal,
    Scope,
    Space,
    SpaceState,
    UsageDetail,
)
from tmcp_storage_server.store.one_space import OneSpaceMixin

SPACE = Space("app", "alice")
ALICE = Principal("alice", "app", frozenset({Scope.READ, Scope.WRITE}))
"""The space and the user most core tests write as."""


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.moment = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


@dataclass
class _Space:
    state: SpaceState = field(default_factory=SpaceState)
    entries: dict[str, Entry] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)


class _Transaction:
    def __init__(self, data: _Space) -> None:
        self._data = data
        self.state = data.state
        self.saves = 0

    async def load(self, keys: Sequence[str]) -> dict[str, Entry]:
        return {k: self._data.entries[k] for k in keys if k in self._data.entries}

    async def load_prefix(self, prefix: str, now: datetime) -> list[Entry]:
        return sorted(
            (
                replace(e, value=None)
                for k, e in self._data.entries.items()
                if k.startswith(prefix) and e.live_at(now)
            ),
            key=lambda e: e.key.encode(),
        )

    async def due_expired(self, now: datetime) -> list[Entry]:
        return [
            e
            for e in self._data.entries.values()
            if not e.deleted and e.expires_at is not None and e.expires_at <= now
        ]

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
        self.saves += 1
        for entry in entries:
            self._data.entries[entry.key] = entry
        self._data.changes.extend(changes)
        self._data.state = replace(
            self._data.state, revision=revision, used_bytes=used_bytes, used_keys=used_keys
        )


class FakeRepository(OneSpaceMixin[_Transaction]):
    """Just enough of ``Repository`` for the write path; rollback by copy."""

    def __init__(self) -> None:
        self.spaces: dict[Space, _Space] = {}
        self.opened = 0
        """Transactions opened so far."""
        self.hold: asyncio.Event | None = None
        """If set, a transaction waits for it before committing (writers queue meanwhile)."""
        self.fail_commit: Exception | None = None
        """If set, the next commit raises it instead (and rolls back)."""

    @asynccontextmanager
    async def transactions(
        self, requests: Mapping[Space, Sequence[str]]
    ) -> AsyncIterator[dict[Space, _Transaction]]:
        self.opened += 1
        scratch = {}
        for space in requests:
            current = self.spaces.setdefault(space, _Space())
            scratch[space] = _Space(current.state, dict(current.entries), list(current.changes))
        yield {space: _Transaction(data) for space, data in scratch.items()}
        if self.hold is not None:
            await self.hold.wait()
        if self.fail_commit is not None:
            failure, self.fail_commit = self.fail_commit, None
            raise failure
        self.spaces.update(scratch)  # commit only on normal exit

    async def get(self, space: Space, key: str, now: datetime) -> tuple[Entry | None, int]:
        data = self.spaces.get(space, _Space())
        entry = data.entries.get(key)
        return (entry if entry is not None and entry.live_at(now) else None), data.state.revision

    async def space_state(self, space: Space) -> SpaceState:
        return self.spaces.get(space, _Space()).state

    async def usage_detail(self, space: Space, now: datetime, top_keys: int) -> UsageDetail:
        raise NotImplementedError

    async def app_usage(self, app_id: str, top_spaces: int) -> AppUsage:
        raise NotImplementedError

    async def set_overrides(
        self, app_id: str, user_id: str | None, overrides: LimitOverrides, reset: bool
    ) -> LimitOverrides:
        raise NotImplementedError

    async def changed_since(
        self, space: Space, *, revision: int, key: str, prefix: str, limit: int, now: datetime
    ) -> ChangesPage:
        data = self.spaces.get(space, _Space())
        found = sorted(
            (
                e
                for e in data.entries.values()
                if (e.mod_revision, e.key.encode()) > (revision, key.encode())
                and e.key.startswith(prefix)
            ),
            key=lambda e: (e.mod_revision, e.key.encode()),
        )[:limit]
        changes = [
            ChangedKey(
                e.key,
                ChangeOp.PUT if e.live_at(now) else ChangeOp.DELETE,
                e.mod_revision,
                e if e.live_at(now) else None,
                version=e.version,
            )
            for e in found
        ]
        return ChangesPage(changes, data.state.revision, 0, None, 0)
