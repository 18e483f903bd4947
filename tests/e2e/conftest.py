"""End-to-end fixtures: the real server process on each backend.

Every e2e test runs twice, against PostgreSQL and against the embedded SQLite store.
Tests isolate themselves with a fresh app id, so one server per backend serves them all.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tmcp_storage import Client, Space

from tests.conftest import REDIS_URL
from tests.e2e.harness import ServerProcess, token


@pytest.fixture(scope="session", params=["postgres", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """Which repository the server under test uses."""
    return str(request.param)


@pytest.fixture(scope="session")
def database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The database URL of the backend under test."""
    if backend == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return "sqlite:///" + str(tmp_path_factory.mktemp("sqlite") / "storage.db")


@contextmanager
def own_server(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    env: dict[str, str],
    *,
    redis: bool = True,
) -> Iterator[ServerProcess]:
    """A server of a test module's own, with ``env``, on the backend under test: the
    session's PostgreSQL database (and, with ``redis``, the shared Redis under a fresh
    prefix), or an SQLite file of its own."""
    if backend == "postgres":
        url = str(request.getfixturevalue("postgres_url"))
        if redis:
            env = env | {
                "STORAGE_REDIS_URL": REDIS_URL,
                "STORAGE_REDIS_PREFIX": f"own-{uuid.uuid4().hex}:",
            }
    else:
        url = "sqlite:///" + str(tmp_path_factory.mktemp("own") / "storage.db")
    process = ServerProcess(url, env=env).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def server(backend: str, database_url: str) -> Iterator[ServerProcess]:
    """A running server on the backend under test; on PostgreSQL with the shared Redis as
    its cache (under a key prefix of its own, whose items expire by themselves)."""
    env = {}
    if backend == "postgres":
        env = {
            "STORAGE_REDIS_URL": REDIS_URL,
            "STORAGE_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:8]}:",
        }
    process = ServerProcess(database_url, env=env).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def app_id() -> str:
    """A fresh app id, so that tests never see each other's spaces."""
    return "app-" + uuid.uuid4().hex[:12]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A scratch directory."""
    return tmp_path


ClientFactory = Callable[..., Client]


@pytest.fixture
def connect(server: ServerProcess) -> Iterator[ClientFactory]:
    """``connect(app_id, user_id, *scopes, space=...)``: a client with a token for that
    user, whose default space is the user's own (closed after the test)."""
    opened: list[Client] = []

    def factory(
        app: str, user: str, *scopes: str, space: Space | None = None, **kwargs: object
    ) -> Client:
        client = Client(
            server.target,
            token=token(app, user, *scopes),
            space=space if space is not None else Space(app, user),
            retries=0,
            **kwargs,  # type: ignore[arg-type]
        )
        opened.append(client)
        return client

    yield factory
    for client in opened:
        client.close()


@pytest.fixture
def alice(connect: ClientFactory, app_id: str) -> Client:
    """A user with read and write scopes in her own space of a fresh app."""
    return connect(app_id, "alice")
