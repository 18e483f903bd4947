"""Server lifecycle: restart, kill -9, database outage, command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tmcp_storage import Client, Space, Unavailable

from tests.e2e.harness import TEST_SECRET, ServerProcess, token
from tests.e2e.proxy import CuttableProxy


def _client(
    server: ServerProcess, app_id: str, *, retries: int = 3, timeout: float = 10.0
) -> Client:
    return Client(
        server.target,
        token=token(app_id, "alice"),
        space=Space(app_id, "alice"),
        retries=retries,
        timeout=timeout,
    )


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_acknowledged_writes_survive_restart(database_url: str, app_id: str, how: int) -> None:
    first = ServerProcess(database_url).start()
    try:
        with _client(first, app_id) as client:
            for i in range(50):
                client.put(f"k{i}", {"i": i})
            revision = client.quota().revision
    finally:
        code = first.stop(how)
    if how == signal.SIGTERM:
        assert code == 0
    second = ServerProcess(database_url).start()
    try:
        with _client(second, app_id) as client:
            assert [e.value for e in client.list(include_values=True)] == [
                {"i": i} for i in sorted(range(50), key=lambda i: f"k{i}")
            ]
            assert client.quota().revision == revision
            assert client.put("after", b"x").revision == revision + 1
    finally:
        second.stop()


def _health(server: ServerProcess) -> int:
    with grpc.insecure_channel(server.target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=2
        )
        return int(reply.status)


def _eventually(
    check: Callable[[], bool], timeout: float = 15.0, why: Callable[[], str] = str
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time\n" + why()
        time.sleep(0.1)


@pytest.fixture
def proxied_server(postgres_url: str) -> Iterator[tuple[ServerProcess, CuttableProxy]]:
    parts = urlsplit(postgres_url)
    proxy = CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 5432)).start()
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}"
    url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    server = ServerProcess(url).start()
    try:
        yield server, proxy
    finally:
        server.stop()
        proxy.stop()


def test_database_outage_is_unavailable_and_not_serving(
    proxied_server: tuple[ServerProcess, CuttableProxy], app_id: str
) -> None:
    server, proxy = proxied_server
    SERVING, NOT_SERVING = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    with _client(server, app_id, retries=0, timeout=10) as client:
        client.put("k", b"before")
        proxy.cut()
        with pytest.raises(Unavailable) as caught:
            client.put("k", b"during")  # on the connection that just broke
        assert caught.value.reason == "BACKEND_UNAVAILABLE"
        assert caught.value.retry_delay is not None
        _eventually(lambda: _health(server) == NOT_SERVING, why=server.log)
        # Once the outage is known, calls fail fast rather than wait for a connection
        # the pool cannot make (the client's 10 s deadline would end them otherwise).
        started = time.monotonic()
        with pytest.raises(Unavailable):
            client.put("k", b"during")
        assert time.monotonic() - started < 5
        proxy.start()
        _eventually(lambda: _health(server) == SERVING)
        _eventually(lambda: _put_ok(client))
        assert client.get("k", strong=True).value == b"after"


def _put_ok(client: Client) -> bool:
    try:
        client.put("k", b"after")
        return True
    except Unavailable:
        return False


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tmcp_storage_server", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_token_is_signed_with_the_configured_secret() -> None:
    done = _cli(
        "token",
        "--app",
        "demo",
        "--user",
        "ann",
        "--scope",
        "storage:read",
        "--ttl",
        "120",
        env={"STORAGE_JWT_SECRET": TEST_SECRET},
    )
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), TEST_SECRET, algorithms=["HS256"])
    assert (claims["app"], claims["sub"], claims["scope"]) == ("demo", "ann", "storage:read")
    assert 100 < claims["exp"] - time.time() <= 120


def test_embedded_secret_is_generated_once(tmp_path: Path) -> None:
    env = {"STORAGE_DATA_DIR": str(tmp_path), "STORAGE_JWT_SECRET": ""}
    first = _cli("token", "--app", "a", "--user", "u", env=env)
    second = _cli("token", "--app", "a", "--user", "u", env=env)
    secret = (tmp_path / "jwt-secret").read_text().strip()
    assert oct((tmp_path / "jwt-secret").stat().st_mode & 0o777) == "0o600"
    for done in (first, second):
        jwt.decode(done.stdout.strip(), secret, algorithms=["HS256"])


def test_cli_migrate_is_idempotent(database_url: str) -> None:
    for _ in range(2):
        done = _cli(
            "migrate", env={"STORAGE_DATABASE_URL": database_url, "STORAGE_JWT_SECRET": TEST_SECRET}
        )
        assert done.returncode == 0, done.stderr


def test_bad_configuration_exits_with_a_clear_message() -> None:
    done = _cli("serve", env={"STORAGE_DATABASE_URL": "mysql://x"})
    assert done.returncode == 2
    assert "STORAGE_DATABASE_URL" in done.stderr
    done = _cli(
        "serve", env={"STORAGE_DATABASE_URL": "postgresql://127.0.0.1/x", "STORAGE_JWT_SECRET": ""}
    )
    assert done.returncode == 2
    assert "STORAGE_JWT_SECRET" in done.stderr


def test_repeated_sigterm_during_shutdown_still_exits_cleanly(database_url: str) -> None:
    """A supervisor may repeat its SIGTERM while the server drains and exits: every one
    is absorbed and the exit code stays 0 (not death by signal, -15)."""
    server = ServerProcess(database_url).start()
    assert server.process is not None
    process = server.process
    deadline = time.monotonic() + 20
    while process.poll() is None and time.monotonic() < deadline:
        process.send_signal(signal.SIGTERM)
        time.sleep(0.002)
    assert process.wait(10) == 0, server.log()[-2000:]
    server.process = None
