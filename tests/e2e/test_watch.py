"""Sync Watch through real server processes and the client, on both backends."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import grpc
import pytest
from tmcp.storage.v1 import sync_pb2, sync_pb2_grpc, types_pb2
from tmcp_storage import Client, Mutation, Space, Unavailable, WatchEvent

from tests.e2e.harness import ServerProcess, token
from tests.e2e.wire import bearer, failure

WATCH_ENV = {
    "STORAGE_WATCH_HEARTBEAT": "0.3",
    "STORAGE_WATCH_MAX_LAG": "30",
    "STORAGE_WATCH_POLL": "0.5",
}


@pytest.fixture(scope="module")
def watch_server(database_url: str) -> Iterator[ServerProcess]:
    """A server with short heartbeats, a small lag limit and a fast poll."""
    process = ServerProcess(database_url, env=WATCH_ENV).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def peer(database_url: str, backend: str, watch_server: ServerProcess) -> Iterator[ServerProcess]:
    """A second server process on the same database. With PostgreSQL its poll is too slow
    to matter, so what reaches it in time came through LISTEN/NOTIFY; SQLite has no
    cross-process wake-up and relies on the poll."""
    slow = "60" if backend == "postgres" else "0.5"
    env = {**WATCH_ENV, "STORAGE_WATCH_POLL": slow, "STORAGE_WATCH_HEARTBEAT": slow}
    process = ServerProcess(database_url, env=env).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def alice(watch_server: ServerProcess, app_id: str) -> Iterator[Client]:
    """Alice's client of the watch server."""
    with Client(
        watch_server.target, token=token(app_id, "alice"), space=Space(app_id, "alice")
    ) as client:
        yield client


def changes(events: Iterator[WatchEvent], count: int, timeout: float = 10.0) -> list[WatchEvent]:
    """The next events that carry changes, until ``count`` changes arrived."""
    deadline = time.monotonic() + timeout
    got: list[WatchEvent] = []
    while sum(len(e.changes) for e in got) < count:
        assert time.monotonic() < deadline, f"only {got} arrived"
        event = next(events)
        if event.changes:
            got.append(event)
    return got


def _drain(events: Iterator[WatchEvent]) -> None:
    for _ in events:
        pass


def keys(events: list[WatchEvent]) -> list[str]:
    return [c.key for e in events for c in e.changes]


def test_catch_up_then_live(alice: Client) -> None:
    start = alice.status().cursor
    alice.put("a", b"1")
    alice.put("b", b"1")
    events = alice.watch(start)
    assert keys(changes(events, 2)) == ["a", "b"]
    alice.put("c", {"x": 1})
    (event,) = changes(events, 1)
    (change,) = event.changes
    assert (change.key, change.op) == ("c", "put")
    assert change.entry is not None and change.entry.value == {"x": 1}
    events.close()  # type: ignore[attr-defined]


def test_from_now_on_sends_the_cursor_then_heartbeats(alice: Client) -> None:
    alice.put("old", b"1")
    events = alice.watch()
    first = next(events)
    assert first.heartbeat and first.cursor and not first.changes
    began = time.monotonic()
    second = next(events)
    assert second.heartbeat and time.monotonic() - began < 2.0
    alice.put("new", b"1")
    assert keys(changes(events, 1)) == ["new"]
    events.close()  # type: ignore[attr-defined]


def test_resume_across_reconnects_without_gaps_or_duplicates(alice: Client) -> None:
    alice.push(
        "tool", [Mutation(mutation_id=i + 1, key=f"k{i:03}", value=b"v") for i in range(250)]
    )
    cursor = alice.status().cursor
    alice.delete_prefix("k")  # 250 changes under one revision: events stop inside it
    events = alice.watch(cursor)
    first = changes(events, 1)[0]
    events.close()  # type: ignore[attr-defined]
    assert len(first.changes) == 100
    alice.put("after", b"1")  # while disconnected
    resumed = alice.watch(first.cursor)
    rest = changes(resumed, 151)
    resumed.close()  # type: ignore[attr-defined]
    seen = keys([first, *rest])
    assert seen == [f"k{i:03}" for i in range(250)] + ["after"]
    assert all(c.op == "delete" for c in first.changes)


def test_key_prefix_filters(alice: Client) -> None:
    events = alice.watch(alice.status().cursor, prefix="x/")
    alice.put("y/1", b"1")
    alice.put("x/1", b"1")
    alice.put("y/2", b"1")
    alice.put("x/2", b"1")
    assert keys(changes(events, 2)) == ["x/1", "x/2"]
    events.close()  # type: ignore[attr-defined]


def test_expiry_is_delivered(alice: Client) -> None:
    events = alice.watch(alice.status().cursor)
    alice.put("short", b"v", ttl=0.3)
    got = changes(events, 2)
    assert [(c.key, c.op) for e in got for c in e.changes] == [
        ("short", "put"),
        ("short", "expire"),
    ]
    events.close()  # type: ignore[attr-defined]


def test_changes_through_another_process_reach_the_watcher(
    alice: Client, peer: ServerProcess, app_id: str
) -> None:
    space = Space(app_id, "alice")
    with Client(peer.target, token=token(app_id, "alice"), space=space) as remote:
        events = remote.watch()
        assert next(events).heartbeat  # connected: "from now on" starts with the cursor
        began = time.monotonic()
        alice.put("cross", b"1")
        assert keys(changes(events, 1)) == ["cross"]
        assert time.monotonic() - began < 3.0
        events.close()  # type: ignore[attr-defined]


def test_slow_consumer_is_ended_with_its_resume_cursor(
    alice: Client, watch_server: ServerProcess, app_id: str
) -> None:
    space = types_pb2.Space(app_id=app_id, user_id="alice")
    options = [("grpc.http2.bdp_probe", 0)]  # keep the flow-control window small
    with grpc.insecure_channel(watch_server.target, options=options) as channel:
        stub = sync_pb2_grpc.SyncStub(channel)
        cursor = alice.status().cursor
        stream = stub.Watch(
            sync_pb2.WatchRequest(space=space, cursor=cursor), metadata=bearer(app_id, "alice")
        )
        blob = os.urandom(60_000)  # incompressible: fills the window quickly
        for i in range(120):  # never reading meanwhile
            alice.put(f"big{i % 5}", blob + bytes([i]))
        time.sleep(1.5)  # the watchdog checks every 0.5 s

        def drain() -> None:
            for _ in stream:
                pass

        f = failure(drain)
    assert (f.code, f.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SLOW_CONSUMER")
    assert f.metadata["cursor"]
    resumed = alice.watch(f.metadata["cursor"])
    assert {c.key for c in changes(resumed, 1)[0].changes} <= {f"big{i}" for i in range(5)}
    resumed.close()  # type: ignore[attr-defined]


def test_shutdown_ends_streams_with_a_resume_cursor(database_url: str, app_id: str) -> None:
    process = ServerProcess(database_url, env=WATCH_ENV).start()
    try:
        space = Space(app_id, "alice")
        with Client(process.target, token=token(app_id, "alice"), space=space, retries=0) as c:
            events = c.watch(c.status().cursor)
            c.put("a", b"1")
            assert keys(changes(events, 1)) == ["a"]
            process.stop()
            with pytest.raises(Unavailable) as caught:
                _drain(events)
            assert caught.value.metadata.get("cursor")
    finally:
        process.stop()
