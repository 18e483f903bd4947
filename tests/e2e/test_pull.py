"""Sync Pull and GetStatus through the real server and the client, on both backends."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from tmcp_storage import Client, InvalidArgument, Mutation, OutOfRange, Space

from tests.e2e.conftest import ClientFactory
from tests.e2e.harness import ServerProcess, token


def test_pull_from_the_start_returns_current_state_in_revision_order(alice: Client) -> None:
    alice.put("b", b"1")
    alice.put("a", {"x": 1})
    alice.put("b", b"2")
    page = alice.pull()
    assert [(c.key, c.op) for c in page.changes] == [("a", "put"), ("b", "put")]
    assert page.changes[1].entry is not None and page.changes[1].entry.value == b"2"
    assert not page.has_more and not page.reset
    assert page.revision == 3


def test_pull_since_a_cursor_sees_only_later_changes_with_deletes(alice: Client) -> None:
    alice.put("a", b"1")
    alice.put("b", b"1")
    cursor = alice.pull().cursor
    assert alice.pull(cursor).changes == []
    alice.delete("a")
    alice.put("c", b"1")
    page = alice.pull(cursor)
    assert [(c.key, c.op, c.entry is None) for c in page.changes] == [
        ("a", "delete", True),
        ("c", "put", False),
    ]


def test_pull_pages_stop_inside_a_revision(alice: Client) -> None:
    for key in ("k1", "k2", "k3", "k4", "k5"):
        alice.put(key, b"v")
    cursor = alice.pull().cursor
    alice.delete_prefix("k")  # five changes under one revision
    seen: list[str] = []
    pages = 0
    while True:
        page = alice.pull(cursor, limit=2)
        seen += [c.key for c in page.changes]
        cursor, pages = page.cursor, pages + 1
        if not page.has_more:
            break
    assert seen == ["k1", "k2", "k3", "k4", "k5"] and pages == 3


def test_pull_marks_pushed_changes_and_reports_the_client(alice: Client) -> None:
    alice.push("phone", [Mutation(mutation_id=1, key="k", value=b"v")])
    page = alice.pull(client_id="phone")
    assert page.last_mutation_id == 1
    (change,) = page.changes
    assert (change.client_id, change.mutation_id) == ("phone", 1)
    status = alice.status("phone")
    assert status.last_push_time is not None and status.last_pull_time is not None
    assert status.revision == 1 and status.cursor


def test_expired_keys_arrive_as_expire(alice: Client) -> None:
    cursor = alice.pull().cursor
    alice.put("short", b"v", ttl=0.2)
    time.sleep(0.6)  # past expiry, and swept by the server (every 0.2 s)
    page = alice.pull(cursor)
    assert [(c.key, c.op) for c in page.changes] == [("short", "expire")]


def test_garbage_cursor_is_invalid_argument(alice: Client) -> None:
    with pytest.raises(InvalidArgument):
        alice.pull("not-a-cursor!")


def test_status_cursor_pulls_nothing_new(alice: Client) -> None:
    alice.put("a", b"1")
    status = alice.status()
    assert alice.pull(status.cursor).changes == []
    assert status.history_horizon_revision == 0


@pytest.fixture(scope="module")
def short_history(database_url: str) -> Iterator[ServerProcess]:
    """A server that keeps one second of history, compacting often."""
    process = ServerProcess(database_url, env={"STORAGE_HISTORY_RETENTION": "1"}).start()
    try:
        yield process
    finally:
        process.stop()


def test_cursor_older_than_history_gets_reset_and_snapshot(
    short_history: ServerProcess, app_id: str
) -> None:
    space = Space(app_id, "alice")
    with Client(short_history.target, token=token(app_id, "alice"), space=space) as alice:
        old = alice.pull().cursor
        for key in ("a", "b", "c"):
            alice.put(key, b"v")
        alice.delete("a")
        deadline = time.monotonic() + 10
        while alice.status().history_horizon_revision == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alice.status().history_horizon_revision == 4
        first = alice.pull(old, limit=1)
        assert first.reset and first.has_more
        rest = alice.pull(first.cursor)
        assert not rest.reset and not rest.has_more
        snapshot = [c.key for c in first.changes + rest.changes]
        assert snapshot == ["b", "c"]
        alice.put("d", b"v")
        assert [c.key for c in alice.pull(rest.cursor).changes] == ["d"]
        with pytest.raises(OutOfRange) as caught:
            next(iter(alice.watch(old)))
        assert caught.value.reason == "CURSOR_COMPACTED"


def test_admin_reads_a_users_changes(connect: ClientFactory, app_id: str, alice: Client) -> None:
    alice.put("a", b"1")
    admin = connect(app_id, "backend", "storage:admin", space=Space(app_id, "alice"))
    assert [c.key for c in admin.pull().changes] == ["a"]
