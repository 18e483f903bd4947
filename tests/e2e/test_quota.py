"""Quota: limits, usage reports, overrides, and enforcement."""

from __future__ import annotations

import time

import grpc
import pytest
from tmcp.storage.v1 import kv_pb2, kv_pb2_grpc, types_pb2
from tmcp_storage import Client, InvalidArgument, QuotaExceeded, Space

from tests.e2e.conftest import ClientFactory
from tests.e2e.harness import ServerProcess
from tests.e2e.wire import bearer, failure


def test_defaults(alice: Client) -> None:
    quota = alice.quota()
    assert (quota.limit_bytes, quota.limit_keys, quota.max_value_bytes) == (
        10 * 1024 * 1024,
        1000,
        1024 * 1024,
    )
    assert (quota.used_bytes, quota.used_keys, quota.revision) == (0, 0, 0)
    assert quota.available_bytes == 10 * 1024 * 1024


def test_usage_detail(alice: Client) -> None:
    alice.put("a", {"x": 1})
    alice.put("b", b"12345678", content_type="text/plain", ttl=600)
    alice.put("c", b"1" * 100)
    usage = alice.usage(top_keys=2)
    by_type = {c.content_type: (c.bytes, c.keys) for c in usage.by_content_type}
    assert by_type == {
        "application/json": (7, 1),
        "text/plain": (8, 1),
        "application/octet-stream": (100, 1),
    }
    assert (usage.expiring_keys, usage.expiring_bytes) == (1, 8)
    assert [(k.key, k.size) for k in usage.largest_keys] == [("c", 100), ("b", 8)]
    assert usage.open_conflicts == 0
    assert usage.usage.used_bytes == 115


def _admin(connect: ClientFactory, app_id: str, user: str = "alice") -> Client:
    return connect(app_id, "backend", "storage:admin", space=Space(app_id, user))


def test_key_limit_and_quota_failure_detail(
    server: ServerProcess, connect: ClientFactory, app_id: str
) -> None:
    _admin(connect, app_id).set_quota(space=Space(app_id, "alice"), limit_keys=3)
    alice = connect(app_id, "alice")
    for key in "abc":
        alice.put(key, b"x")
    with pytest.raises(QuotaExceeded) as caught:
        alice.put("d", b"x")
    assert caught.value.reason == "QUOTA_KEYS"
    alice.put("a", b"overwrite is not a new key")
    with grpc.insecure_channel(server.target) as channel:
        stub = kv_pb2_grpc.KeyValueStub(channel)
        request = kv_pb2.PutRequest(
            space=types_pb2.Space(app_id=app_id, user_id="alice"),
            key="e",
            value=types_pb2.Value(raw=b"x"),
        )
        f = failure(lambda: stub.Put(request, metadata=bearer(app_id, "alice")))
    assert (f.code, f.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_KEYS")
    assert f.details["QuotaFailure"].violations[0].subject == "space:keys"
    assert f.metadata["limit"] == "3"
    assert alice.quota().used_keys == 3


def test_byte_limit(connect: ClientFactory, app_id: str) -> None:
    _admin(connect, app_id).set_quota(space=Space(app_id, "alice"), limit_bytes=100)
    alice = connect(app_id, "alice")
    alice.put("a", b"x" * 60)
    with pytest.raises(QuotaExceeded) as caught:
        alice.put("b", b"x" * 41)
    assert caught.value.reason == "QUOTA_BYTES"
    alice.put("b", b"x" * 40)
    alice.put("a", b"x" * 10)  # shrinking is always allowed
    assert alice.quota().used_bytes == 50


def test_shrinking_writes_allowed_over_a_lowered_limit(connect: ClientFactory, app_id: str) -> None:
    alice = connect(app_id, "alice")
    alice.put("a", b"x" * 100)
    _admin(connect, app_id).set_quota(space=Space(app_id, "alice"), limit_bytes=10)
    alice.put("a", b"x" * 50)
    with pytest.raises(QuotaExceeded):
        alice.put("a", b"x" * 60)
    alice.delete("a")


def test_per_value_limit_override(connect: ClientFactory, app_id: str) -> None:
    _admin(connect, app_id).set_quota(app_id=app_id, max_value_bytes=10)
    alice = connect(app_id, "alice")
    with pytest.raises(InvalidArgument) as caught:
        alice.put("k", b"x" * 11)
    assert caught.value.reason == "VALUE_TOO_LARGE"
    alice.put("k", b"x" * 10)


def test_expired_entries_never_count_against_a_write(connect: ClientFactory, app_id: str) -> None:
    _admin(connect, app_id).set_quota(space=Space(app_id, "alice"), limit_keys=2)
    alice = connect(app_id, "alice")
    alice.put("a", b"x", ttl=0.2)
    alice.put("b", b"x", ttl=0.2)
    time.sleep(0.3)
    alice.put("c", b"x")
    alice.put("d", b"x")
    assert alice.quota().used_keys == 2


def test_app_and_space_overrides_and_reset(connect: ClientFactory, app_id: str) -> None:
    admin = _admin(connect, app_id)
    limits = admin.set_quota(app_id=app_id, limit_keys=50, limit_bytes=5000)
    assert (limits.limit_keys, limits.limit_bytes, limits.max_value_bytes) == (50, 5000, None)
    alice = connect(app_id, "alice")
    assert (alice.quota().limit_keys, alice.quota().limit_bytes) == (50, 5000)
    admin.set_quota(space=Space(app_id, "alice"), limit_keys=7)
    assert (alice.quota().limit_keys, alice.quota().limit_bytes) == (7, 5000)
    merged = admin.set_quota(space=Space(app_id, "alice"), limit_bytes=900)
    assert (merged.limit_keys, merged.limit_bytes) == (7, 900)
    admin.set_quota(space=Space(app_id, "alice"), reset=True)
    assert (alice.quota().limit_keys, alice.quota().limit_bytes) == (50, 5000)
    admin.set_quota(app_id=app_id, reset=True)
    assert alice.quota().limit_keys == 1000
    with pytest.raises(InvalidArgument):
        admin.set_quota(app_id=app_id, limit_keys=-1)
    with pytest.raises(InvalidArgument):
        admin.set_quota(app_id=app_id, max_value_bytes=2 * 1024 * 1024)


def test_app_usage_totals_and_largest_spaces(connect: ClientFactory, app_id: str) -> None:
    for user, size in (("u1", 10), ("u2", 300), ("u3", 20)):
        connect(app_id, user).put("k", b"x" * size)
    connect(app_id, "u3").put("k2", b"x" * 5)
    usage = _admin(connect, app_id).app_usage(app_id, top_spaces=2)
    assert (usage.spaces, usage.used_bytes, usage.used_keys) == (3, 335, 4)
    assert [(s.space.user_id, s.usage.used_bytes) for s in usage.largest_spaces] == [
        ("u2", 300),
        ("u3", 25),
    ]
