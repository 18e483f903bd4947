"""KeyValue through the real server and the Python client, on both backends."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tmcp_storage import AlreadyExists, Client, NotFound, VersionConflict

from tests.e2e.conftest import ClientFactory


def test_put_get_raw_round_trip(alice: Client) -> None:
    put = alice.put("photo", b"\x00\x01binary", content_type="image/png", metadata={"a": "1"})
    entry = alice.get("photo")
    assert entry.value == b"\x00\x01binary"
    assert entry.content_type == "image/png"
    assert entry.metadata == {"a": "1"}
    assert entry.version == 1
    assert entry.size == 8
    assert entry.checksum.startswith("sha256:") and len(entry.checksum) == 7 + 64
    assert entry.create_revision == entry.mod_revision == put.revision
    assert put.entry.has_value is False
    assert put.usage.used_bytes == 8
    assert put.usage.used_keys == 1


def test_json_written_as_json_reads_back_as_json(alice: Client) -> None:
    doc: dict[str, Any] = {
        "name": "Ann",
        "tags": ["a", "b"],
        "n": 3,
        "pi": 3.5,
        "ok": True,
        "none": None,
    }
    alice.put("profile", doc)
    entry = alice.get("profile")
    assert entry.content_type == "application/json"
    assert entry.value == doc


def test_raw_bytes_declared_json_read_back_through_json(alice: Client) -> None:
    alice.put("cfg", b'{"x": [1, 2]}', content_type="application/json")
    assert alice.get("cfg").value == {"x": [1, 2]}


def test_default_content_type_is_octet_stream(alice: Client) -> None:
    alice.put("blob", b"abc")
    assert alice.get("blob").content_type == "application/octet-stream"


def test_large_value_round_trips_through_compression(alice: Client) -> None:
    value = (b"compressible " * 90_000)[: 1024 * 1024]
    alice.put("big", value)
    entry = alice.get("big")
    assert entry.value == value
    assert entry.size == 1024 * 1024
    assert alice.quota().used_bytes == 1024 * 1024


def test_versions_count_writes_and_continue_after_delete(alice: Client) -> None:
    assert alice.put("k", b"1").entry.version == 1
    assert alice.put("k", b"2").entry.version == 2
    assert alice.delete("k").deleted is True  # the deletion is version 3
    assert alice.put("k", b"3").entry.version == 4
    with pytest.raises(VersionConflict) as caught:
        alice.put("k", b"stale", expected_version=2)
    assert caught.value.current_version == 4


def test_expected_version_compare_and_set(alice: Client) -> None:
    alice.put("c", b"0", expected_version=0)
    with pytest.raises(AlreadyExists):
        alice.put("c", b"again", expected_version=0)
    alice.put("c", b"1", expected_version=1)
    with pytest.raises(VersionConflict):
        alice.put("c", b"x", expected_version=1)
    assert alice.get("c").value == b"1"


def test_delete_absent_is_not_an_error(alice: Client) -> None:
    before = alice.quota().revision
    result = alice.delete("never-written")
    assert result.deleted is False
    assert result.revision == before


def test_delete_with_expected_version(alice: Client) -> None:
    alice.put("d", b"x")
    with pytest.raises(VersionConflict):
        alice.delete("d", expected_version=7)
    assert alice.get("d").value == b"x"
    assert alice.delete("d", expected_version=1).deleted is True
    # absent now: its tombstone is version 2; 0 and 2 both pass, others fail
    assert alice.delete("d", expected_version=2).deleted is False
    assert alice.delete("d", expected_version=0).deleted is False
    with pytest.raises(VersionConflict):
        alice.delete("d", expected_version=1)


def test_revisions_rise_by_one_per_change(alice: Client) -> None:
    revisions = [alice.put(f"r{i}", b"v").revision for i in range(5)]
    revisions.append(alice.delete("r0").revision)
    revisions.append(alice.touch("r1", ttl=60).mod_revision)
    revisions.append(alice.delete_prefix("r").revision)
    assert revisions == list(range(revisions[0], revisions[0] + 8))


def test_put_replaces_ttl_unless_keep_ttl(alice: Client) -> None:
    alice.put("t", b"1", ttl=60)
    assert alice.get("t").expires_at is not None
    alice.put("t", b"2", keep_ttl=True)
    kept = alice.get("t").expires_at
    assert kept is not None
    alice.put("t", b"3")
    assert alice.get("t").expires_at is None


def test_expired_entry_is_hidden_at_once_and_swept_as_a_change(alice: Client) -> None:
    alice.put("soon", b"x", ttl=0.3)
    alice.put("stays", b"y")
    revision = alice.quota().revision
    time.sleep(0.4)
    with pytest.raises(NotFound):
        alice.get("soon")
    assert [e.key for e in alice.list()] == ["stays"]
    deadline = time.monotonic() + 5
    while alice.quota().revision == revision and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alice.quota().revision == revision + 1  # the sweep's EXPIRE change
    assert alice.quota().used_keys == 1


def test_expires_at_absolute(alice: Client) -> None:
    at = datetime.now(UTC) + timedelta(hours=1)
    alice.put("abs", b"x", expires_at=at)
    got = alice.get("abs").expires_at
    assert got is not None and abs((got - at).total_seconds()) < 0.001


def test_touch_changes_expiry_not_version(alice: Client) -> None:
    alice.put("s", b"x")
    touched = alice.touch("s", ttl=120)
    assert touched.version == 1
    assert touched.expires_at is not None
    cleared = alice.touch("s", clear_ttl=True)
    assert cleared.expires_at is None
    assert alice.get("s").version == 1
    with pytest.raises(NotFound):
        alice.touch("missing", ttl=10)


def test_list_orders_keys_bytewise(alice: Client) -> None:
    keys = ["b", "a/b", "a.b", "a:b", "a", "é", "z", "A", "a0"]
    for key in keys:
        alice.put(key, b"v")
    assert [e.key for e in alice.list()] == sorted(keys, key=lambda k: k.encode())


def test_list_prefix_and_pages(alice: Client) -> None:
    for i in range(25):
        alice.put(f"users/{i:03d}", {"i": i})
    alice.put("users0", b"not under users/")
    alice.put("other", b"x")
    listed = list(alice.list("users/", page_size=7, include_values=True))
    assert [e.key for e in listed] == [f"users/{i:03d}" for i in range(25)]
    assert [e.value for e in listed] == [{"i": i} for i in range(25)]
    without = list(alice.list("users/", page_size=10))
    assert all(not e.has_value for e in without)


def test_list_pages_never_repeat_or_skip_while_others_write(alice: Client) -> None:
    for i in range(20):
        alice.put(f"p/{i:02d}", b"v")
    seen = []
    pages = alice.list("p/", page_size=5)
    for index, entry in enumerate(pages):
        seen.append(entry.key)
        if index == 6:
            alice.put("p/00a", b"new, before the cursor")
            alice.put("p/99", b"new, after the cursor: created after the first page")
            alice.put("p/15", b"rewritten")
    assert seen == [f"p/{i:02d}" for i in range(20)]


def test_delete_prefix_deletes_only_under_prefix(alice: Client) -> None:
    for key in ("session/1/a", "session/1/b", "session/2/a", "sessions"):
        alice.put(key, b"12345")
    result = alice.delete_prefix("session/1/")
    assert result.deleted_count == 2
    assert result.usage.used_keys == 2
    assert [e.key for e in alice.list()] == ["session/2/a", "sessions"]
    assert alice.delete_prefix("").deleted_count == 2
    assert alice.quota().used_keys == 0


def test_strong_get_reads_the_database(alice: Client) -> None:
    alice.put("s", b"1")
    assert alice.get("s", strong=True).value == b"1"


def test_spaces_are_isolated(connect: ClientFactory, app_id: str) -> None:
    alice, bob = connect(app_id, "alice"), connect(app_id, "bob")
    alice.put("k", b"alice's")
    with pytest.raises(NotFound):
        bob.get("k")
    bob.put("k", b"bob's")
    assert alice.get("k").value == b"alice's"
