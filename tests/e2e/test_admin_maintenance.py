"""``purge`` and ``compact`` against a server whose own background sweeps never run during
the test (a database of its own, a sweep interval of an hour), on both backends."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from tmcp_storage import Client, Space

from tests.conftest import POSTGRES_ADMIN_URL
from tests.e2e import cli
from tests.e2e.harness import ServerProcess, token


@pytest.fixture
def quiet_server(backend: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server on a fresh database that sweeps expired entries only once an hour."""
    name = ""
    if backend == "postgres":
        name = f"tmcp_ops_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        url = POSTGRES_ADMIN_URL.rpartition("/")[0] + "/" + name
    else:
        url = "sqlite:///" + str(tmp_path / "quiet.db")
    process = ServerProcess(url, env={"STORAGE_SWEEP_INTERVAL": "3600"})
    try:
        yield process.start()
    finally:
        process.stop()
        if name:
            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _client(server: ServerProcess, app_id: str, user: str) -> Client:
    return Client(server.target, token=token(app_id, user), space=Space(app_id, user))


def test_purge_sweeps_due_entries_now_as_expire_changes(quiet_server: ServerProcess) -> None:
    app_id = "app-" + uuid.uuid4().hex[:12]
    with (
        _client(quiet_server, app_id, "alice") as alice,
        _client(quiet_server, app_id, "bob") as bob,
    ):
        alice.put("short", b"12345", ttl=1)
        alice.put("keep", b"1")
        bob.put("short", b"1", ttl=1)
        cursor = alice.pull().cursor
        time.sleep(1.3)
        assert alice.quota().used_keys == 2  # counted until swept

        one = cli.ok_json(quiet_server, "purge", "--app", app_id, "--user", "alice")

        assert one == {"spaces": 1, "entries": 1}
        usage = alice.quota()
        assert (usage.used_keys, usage.used_bytes) == (1, 1)
        assert [(c.key, c.op) for c in alice.pull(cursor).changes] == [("short", "expire")]
        assert bob.quota().used_keys == 1
        assert cli.ok_json(quiet_server, "purge") == {"spaces": 1, "entries": 1}
        assert bob.quota().used_keys == 0
        assert "purged 0 expired entries" in cli.ok(quiet_server, "purge")


def test_compact_forgets_history_now(quiet_server: ServerProcess) -> None:
    app_id = "app-" + uuid.uuid4().hex[:12]
    with _client(quiet_server, app_id, "alice") as alice:
        old = alice.pull().cursor
        alice.put("a", b"1")
        alice.delete("a")
        alice.put("b", b"2")

        kept = cli.ok_json(quiet_server, "compact")  # the configured retention: a week

        assert kept["removed"] == 0
        assert alice.status().history_horizon_revision == 0
        done = cli.ok_json(quiet_server, "compact", "--older-than", "0")
        assert done["removed"] > 0
        assert alice.status().history_horizon_revision == 2  # the forgotten deletion
        page = alice.pull(old)
        assert page.reset and [c.key for c in page.changes] == ["b"]
