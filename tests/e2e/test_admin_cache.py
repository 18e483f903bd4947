"""A write by the command line reaches a running server's caches and watchers at once:
the command line builds the server's own cache (publishing on its channel) and feed.

Three setups: PostgreSQL with Redis, PostgreSQL alone (invalidations by NOTIFY), and the
embedded SQLite database with Redis.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tmcp_storage import Client, Space, WatchEvent

from tests.conftest import REDIS_URL
from tests.e2e import cli
from tests.e2e.harness import ServerProcess, token

SETUPS = ["postgres+redis", "postgres+notify", "sqlite+redis"]


@pytest.fixture(scope="module", params=SETUPS)
def cached_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server whose watchers poll rarely (so a prompt wake-up proves the feed)."""
    setup = str(request.param)
    env = {"STORAGE_WATCH_POLL": "30", "STORAGE_CACHE_TTL": "60"}
    if setup.endswith("+redis"):
        env |= {"STORAGE_REDIS_URL": REDIS_URL, "STORAGE_REDIS_PREFIX": f"ops-{uuid.uuid4().hex}:"}
    if setup.startswith("postgres"):
        url = str(request.getfixturevalue("postgres_url"))
    else:
        url = "sqlite:///" + str(tmp_path_factory.mktemp("cached") / "storage.db")
        # The embedded server hears other processes' commits only by polling.
        env["STORAGE_WATCH_POLL"] = "1"
    process = ServerProcess(url, env=env).start()
    try:
        yield process
    finally:
        process.stop()


def _export(path: Path, space: Space, values: dict[str, object]) -> Path:
    head = {"app_id": space.app_id, "user_id": space.user_id}
    lines = [{"format": "tmcp-storage-export/1", "space": head, "revision": 0}]
    lines += [{"key": k, "content_type": "application/json", "json": v} for k, v in values.items()]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _watch(client: Client, events: queue.Queue[WatchEvent | Exception]) -> None:
    try:
        for event in client.watch():
            events.put(event)
    except Exception as exc:  # the client closed at the end of the test
        events.put(exc)


def test_a_cli_import_is_read_and_watched_at_once_through_a_running_server(
    cached_server: ServerProcess, tmp_path: Path
) -> None:
    app_id = "app-" + uuid.uuid4().hex[:12]
    space = Space(app_id, "alice")
    events: queue.Queue[WatchEvent | Exception] = queue.Queue()
    with (
        Client(cached_server.target, token=token(app_id, "alice"), space=space) as alice,
        Client(cached_server.target, token=token(app_id, "alice"), space=space) as watcher,
    ):
        alice.put("k", {"v": 1})
        assert alice.get("k").value == {"v": 1}
        assert alice.get("k").value == {"v": 1}  # now cached (L1, and Redis if any)
        assert alice.batch_get(["k", "new"]).results[1].found is False  # "absent", cached
        thread = threading.Thread(target=_watch, args=(watcher, events), daemon=True)
        thread.start()
        first = events.get(timeout=30)
        assert isinstance(first, WatchEvent) and first.heartbeat

        cli.ok(
            cached_server,
            "import",
            str(
                _export(
                    tmp_path / "in.jsonl",
                    space,
                    {
                        "k": {"v": 2},
                        "new": "hello",
                    },
                )
            ),
        )

        assert alice.get("k").value == {"v": 2}
        found = alice.batch_get(["k", "new"]).results
        assert [r.entry.value if r.entry else None for r in found] == [{"v": 2}, "hello"]
        changed: set[str] = set()
        while changed != {"k", "new"}:
            event = events.get(timeout=5)
            assert isinstance(event, WatchEvent), event
            changed |= {c.key for c in event.changes}
    thread.join(timeout=10)


def test_a_write_is_refused_while_the_cache_channel_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "STORAGE_DATABASE_URL": "sqlite:///" + str(tmp_path / "storage.db"),
        "STORAGE_JWT_SECRET": "x" * 32,
        "STORAGE_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "STORAGE_LOG_LEVEL": "ERROR",
    }
    space = Space("app-" + uuid.uuid4().hex[:12], "alice")

    refused = cli.run_with(env, "import", str(_export(tmp_path / "in.jsonl", space, {"k": 1})))

    assert refused.returncode == 1
    assert "Redis is unreachable" in refused.stderr and "nothing was written" in refused.stderr
    unknown = cli.run_with(env, "inspect", "--app", space.app_id, "--user", "alice")
    assert unknown.returncode == 3, unknown.stderr  # reads need no channel; nothing is there
