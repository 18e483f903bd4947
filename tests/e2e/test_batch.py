"""Batch through the real server and the client, on both backends."""

from __future__ import annotations

import grpc
import pytest
from tmcp.storage.v1 import batch_pb2, batch_pb2_grpc, types_pb2
from tmcp_storage import (
    Client,
    DeleteItem,
    GetItem,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    SetItem,
    Space,
    VersionConflict,
)

from tests.e2e.conftest import ClientFactory
from tests.e2e.harness import ServerProcess
from tests.e2e.wire import bearer, failure


def _reasons(result: object) -> list[str]:
    return [getattr(r.error, "reason", "") for r in result.results]  # type: ignore[attr-defined]


def test_batch_get_answers_every_key_in_order(alice: Client) -> None:
    alice.put("a", {"n": 1})
    alice.put("b", b"raw")
    revision = alice.quota().revision
    result = alice.batch_get(["b", "missing", "a", "b", "bad\x00key"])
    assert [r.key for r in result.results] == ["b", "missing", "a", "b", "bad\x00key"]
    assert [r.found for r in result.results] == [True, False, True, True, False]
    assert [r.entry.value if r.entry else None for r in result.results] == [
        b"raw",
        None,
        {"n": 1},
        b"raw",
        None,
    ]
    assert _reasons(result) == ["", "", "", "", "INVALID_KEY"]
    assert result.revision == revision


def test_non_atomic_set_stores_good_items_and_reports_bad_ones(alice: Client) -> None:
    alice.put("exists", b"v1")
    before = alice.quota().revision
    result = alice.batch_set(
        [
            SetItem("ok1", {"x": 1}),
            SetItem("", b"bad key"),
            SetItem("exists", b"stale", expected_version=7),
            SetItem("big", b"x" * (1024 * 1024 + 1)),
            SetItem("json", b"{not json", content_type="application/json"),
            SetItem("ok2", b"raw", ttl=60),
        ]
    )
    assert _reasons(result) == [
        "",
        "INVALID_KEY",
        "VERSION_MISMATCH",
        "VALUE_TOO_LARGE",
        "INVALID_JSON",
        "",
    ]
    assert isinstance(result.results[2].error, VersionConflict)
    assert result.results[2].error.metadata["index"] == "2"
    assert result.results[0].entry is not None and result.results[0].entry.version == 1
    assert result.revision == before + 1  # the good items commit together
    assert result.usage is not None and result.usage.used_keys == 3
    assert alice.get("ok2").value == b"raw"
    assert alice.get("exists").value == b"v1"
    with pytest.raises(NotFound):
        alice.get("big")


def test_atomic_set_is_all_or_nothing_with_the_failing_index(alice: Client) -> None:
    alice.put("c", b"v")
    before = alice.quota()
    with pytest.raises(VersionConflict) as caught:
        alice.batch_set(
            [SetItem("a", b"1"), SetItem("b", b"2"), SetItem("c", b"3", expected_version=5)],
            atomic=True,
        )
    assert caught.value.metadata["index"] == "2"
    after = alice.quota()
    assert (after.revision, after.used_keys) == (before.revision, before.used_keys)
    with pytest.raises(NotFound):
        alice.get("a")
    ok = alice.batch_set([SetItem(f"k{i}", i) for i in range(10)], atomic=True)
    assert ok.revision == before.revision + 1
    assert {r.entry.mod_revision for r in ok.results if r.entry} == {ok.revision}


def test_atomic_rejects_invalid_items_and_duplicate_keys(alice: Client) -> None:
    with pytest.raises(InvalidArgument) as caught:
        alice.batch_set([SetItem("a", b"1"), SetItem("a\n", b"2")], atomic=True)
    assert (caught.value.reason, caught.value.metadata["index"]) == ("INVALID_KEY", "1")
    with pytest.raises(InvalidArgument) as caught:
        alice.batch_set([SetItem("a", b"1"), SetItem("b", b"2"), SetItem("a", b"3")], atomic=True)
    assert (caught.value.reason, caught.value.metadata["index"]) == ("DUPLICATE_KEY", "2")
    assert alice.quota().used_keys == 0


def test_duplicates_in_a_non_atomic_set_apply_in_order(alice: Client) -> None:
    result = alice.batch_set([SetItem("a", b"1"), SetItem("a", b"2")])
    assert [r.ok for r in result.results] == [True, True]
    assert alice.get("a").value == b"2"


def _limit(connect: ClientFactory, app_id: str, **limits: int) -> None:
    admin = connect(app_id, "svc", "storage:admin", space=Space(app_id, "alice"))
    admin.set_quota(space=Space(app_id, "alice"), **limits)  # type: ignore[arg-type]


def test_atomic_quota_is_checked_on_the_net_change(connect: ClientFactory, app_id: str) -> None:
    _limit(connect, app_id, limit_bytes=100)
    alice = connect(app_id, "alice")
    alice.put("big", b"x" * 90)
    with pytest.raises(QuotaExceeded):
        alice.batch_set([SetItem("a", b"x" * 20)], atomic=True)
    # deleting 90 and adding 2 x 40 in one atomic batch fits, in either order
    result = alice.execute(
        [SetItem("a", b"x" * 40), SetItem("b", b"x" * 40), DeleteItem("big")], atomic=True
    )
    assert [r.ok for r in result.results] == [True, True, True]
    assert alice.quota().used_bytes == 80


def test_non_atomic_quota_per_item_in_order(connect: ClientFactory, app_id: str) -> None:
    _limit(connect, app_id, limit_keys=3)
    alice = connect(app_id, "alice")
    result = alice.batch_set([SetItem(f"k{i}", b"v") for i in range(5)] + [SetItem("k0", b"w")])
    assert _reasons(result) == ["", "", "", "QUOTA_KEYS", "QUOTA_KEYS", ""]
    assert alice.quota().used_keys == 3
    assert alice.get("k0").value == b"w"


def test_batch_delete(alice: Client) -> None:
    alice.batch_set([SetItem(k, b"v") for k in "abc"])
    result = alice.batch_delete(["a", DeleteItem("b", expected_version=9), "zz"])
    assert [(r.deleted, getattr(r.error, "reason", "")) for r in result.results] == [
        (True, ""),
        (False, "VERSION_MISMATCH"),
        (False, ""),
    ]
    with pytest.raises(VersionConflict) as caught:
        alice.batch_delete(["b", DeleteItem("c", expected_version=3)], atomic=True)
    assert caught.value.metadata["index"] == "1"
    assert sorted(e.key for e in alice.list()) == ["b", "c"]
    done = alice.batch_delete([DeleteItem("b", expected_version=1), "c"], atomic=True)
    assert [r.deleted for r in done.results] == [True, True]
    assert done.usage is not None and done.usage.used_keys == 0


def test_execute_reads_see_earlier_writes(alice: Client) -> None:
    alice.put("n", 1)
    for atomic in (True, False):
        result = alice.execute(
            [
                GetItem("n"),
                SetItem("n", 2),
                GetItem("n"),
                DeleteItem("n"),
                GetItem("n"),
                SetItem("n", 1),
            ],
            atomic=atomic,
        )
        got = [(r.found, r.entry.value if r.found and r.entry else None) for r in result.results]
        assert got[0] == (True, 1) and got[2] == (True, 2) and got[4] == (False, None)
        assert result.results[1].entry is not None and not result.results[1].entry.has_value
        assert result.results[3].deleted
    assert alice.get("n").value == 1


def test_too_many_operations(alice: Client, server: ServerProcess, app_id: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        alice.batch_set([SetItem(f"k{i}", b"") for i in range(1001)])
    assert (caught.value.reason, caught.value.metadata["limit"]) == ("TOO_MANY_OPERATIONS", "1000")
    with grpc.insecure_channel(server.target) as channel:
        stub = batch_pb2_grpc.BatchStub(channel)
        request = batch_pb2.BatchGetRequest(
            space=types_pb2.Space(app_id=app_id, user_id="alice"), keys=["k"] * 1001
        )
        f = failure(lambda: stub.BatchGet(request, metadata=bearer(app_id, "alice")))
    assert (f.code, f.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "TOO_MANY_OPERATIONS")
    assert f.details["BadRequest"].field_violations[0].field == "keys"


def test_a_full_batch_of_1000(alice: Client) -> None:
    result = alice.batch_set([SetItem(f"k{i:04d}", b"v" * 100) for i in range(1000)])
    assert all(r.ok for r in result.results)
    got = alice.batch_get([f"k{i:04d}" for i in range(1000)])
    assert all(r.found for r in got.results)
    assert alice.quota().used_keys == 1000


def test_batch_scopes(connect: ClientFactory, app_id: str) -> None:
    connect(app_id, "alice").put("k", b"v")
    reader = connect(app_id, "alice", "storage:read")
    assert reader.batch_get(["k"]).results[0].found
    assert reader.execute([GetItem("k")]).results[0].found
    with pytest.raises(PermissionDenied):
        reader.batch_set([SetItem("k", b"w")])
    with pytest.raises(PermissionDenied):
        reader.execute([GetItem("k"), DeleteItem("k")])
    with pytest.raises(PermissionDenied):
        connect(app_id, "bob").batch_get(["k"], space=Space(app_id, "alice"))
