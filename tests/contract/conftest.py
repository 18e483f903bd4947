"""Fixtures of the repository contract suite: every test runs once per backend.

SQLite gets a fresh file per test. PostgreSQL shares the session's throwaway database
(a database per test would be slow), so each test works in spaces of its own app id;
tests of cross-app calls filter by that app id.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tmcp_storage_server.core.kv import KeyValueService
from tmcp_storage_server.core.ports import Repository
from tmcp_storage_server.core.writes import Writer
from tmcp_storage_server.model import Principal, QuotaLimits, Scope, Space
from tmcp_storage_server.store.postgres import PostgresRepository
from tmcp_storage_server.store.sqlite import SqliteRepository

T0 = datetime(2030, 1, 1, tzinfo=UTC)
DEFAULTS = QuotaLimits(limit_bytes=10 * 1024 * 1024, limit_keys=1000, max_value_bytes=1024 * 1024)

_SQLITE_STORED = (
    "SELECT codec, length(value) FROM entries WHERE user_id = ? AND app_id = ? AND key = ?"
)
_SQLITE_CHANGES = """SELECT revision, key, op, version, client_id, mutation_id FROM changes
  WHERE user_id = ? AND app_id = ? ORDER BY revision, key"""
_PG_STORED = """SELECT codec, octet_length(value) FROM entries
  WHERE user_id = %s AND app_id = %s AND key = %s"""
_PG_CHANGES = """SELECT revision, key, op, version, client_id, mutation_id FROM changes
  WHERE user_id = %s AND app_id = %s ORDER BY revision, key"""
_MIGRATIONS = "SELECT version FROM schema_migrations ORDER BY version"


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, moment: datetime = T0) -> None:
        self.moment = moment

    def now(self) -> datetime:
        """The current (manual) time."""
        return self.moment

    def advance(self, delta: timedelta) -> None:
        """Move time forward."""
        self.moment += delta


@dataclass
class Backend:
    """One storage backend: how to open repositories on it and peek at its tables."""

    name: str
    make: Callable[..., Repository]
    """A new, unopened repository on this backend's storage (keyword args: pool sizes)."""
    target: str
    """The SQLite file or the PostgreSQL URL."""

    async def _query(self, sqlite_sql: str, pg_sql: str, params: tuple[Any, ...]) -> list[Any]:
        if self.name == "sqlite":
            with closing(sqlite3.connect(self.target)) as conn:
                return conn.execute(sqlite_sql, params).fetchall()
        async with await psycopg.AsyncConnection.connect(self.target) as conn:
            return await (await conn.execute(pg_sql, params)).fetchall()

    async def stored(self, space: Space, key: str) -> tuple[int, int]:
        """The codec and the stored length of a value, as at rest."""
        rows = await self._query(_SQLITE_STORED, _PG_STORED, (space.user_id, space.app_id, key))
        return rows[0][0], rows[0][1]

    async def changes(self, space: Space) -> list[tuple[int, str, int, int, str, int]]:
        """The change log of a space: (revision, key, op, version, client_id, mutation_id)."""
        params = (space.user_id, space.app_id)
        return [tuple(r) for r in await self._query(_SQLITE_CHANGES, _PG_CHANGES, params)]

    async def migrations(self) -> list[int]:
        """The versions recorded in schema_migrations."""
        return [r[0] for r in await self._query(_MIGRATIONS, _MIGRATIONS, ())]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each backend in turn."""
    if request.param == "sqlite":
        path = str(tmp_path / "store.db")
        return Backend("sqlite", lambda **_: SqliteRepository(path=path), path)
    url = request.getfixturevalue("postgres_url")
    return Backend("postgres", lambda **kw: PostgresRepository(url=url, **kw), url)


@pytest.fixture
async def repository(backend: Backend) -> AsyncIterator[Repository]:
    """An open repository on the backend, closed after the test."""
    repo = backend.make(max_size=20)
    await repo.open()
    yield repo
    await repo.close()


@pytest.fixture
def space() -> Space:
    """A user's space in an app of this test's own."""
    return Space(app_id=f"app-{uuid.uuid4().hex[:12]}", user_id="alice")


@pytest.fixture
def user(space: Space) -> Principal:
    """The owner of ``space``, with read and write scopes."""
    return Principal(space.user_id, space.app_id, frozenset({Scope.READ, Scope.WRITE}))


@pytest.fixture
def admin(space: Space) -> Principal:
    """A backend service of the app: reaches every space of it."""
    return Principal("service", space.app_id, frozenset({Scope.READ, Scope.WRITE, Scope.ADMIN}))


@pytest.fixture
def clock() -> ManualClock:
    """The core's clock, starting at ``T0``."""
    return ManualClock()


@pytest.fixture
def kv(repository: Repository, clock: ManualClock) -> KeyValueService:
    """The real core KeyValue service on the repository."""
    writer = Writer(repository=repository, defaults=DEFAULTS)
    return KeyValueService(repository=repository, writer=writer, clock=clock)
