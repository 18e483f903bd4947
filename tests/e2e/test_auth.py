"""Tokens and who reaches which space (DESIGN.md, Authentication and authorization)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tmcp.storage.v1 import kv_pb2, kv_pb2_grpc, quota_pb2, quota_pb2_grpc, types_pb2
from tmcp_storage import Client, PermissionDenied, Space

from tests.e2e.conftest import ClientFactory
from tests.e2e.harness import ServerProcess, token
from tests.e2e.wire import bearer, failure

Code = grpc.StatusCode
Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as channel:
        yield channel


def _get(channel: grpc.Channel, app_id: str, user: str, metadata: Metadata) -> None:
    kv_pb2_grpc.KeyValueStub(channel).Get(
        kv_pb2.GetRequest(space=types_pb2.Space(app_id=app_id, user_id=user), key="k"),
        metadata=metadata,
    )


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "TOKEN_INVALID"),
        ((("authorization", "Basic abc"),), "TOKEN_INVALID"),
        ((("authorization", "Bearer not.a.jwt"),), "TOKEN_INVALID"),
        (
            (("authorization", "Bearer " + token("A", "alice", secret="wrong-" + "y" * 30)),),
            "TOKEN_INVALID",
        ),
        ((("authorization", "Bearer " + token("A", "alice", ttl=-60)),), "TOKEN_EXPIRED"),
    ],
    ids=["none", "not-bearer", "garbage", "bad-signature", "expired"],
)
def test_unauthenticated(channel: grpc.Channel, metadata: Metadata, reason: str) -> None:
    f = failure(lambda: _get(channel, "A", "alice", metadata))
    assert (f.code, f.reason) == (Code.UNAUTHENTICATED, reason)


def test_other_users_space_is_forbidden(channel: grpc.Channel, app_id: str) -> None:
    f = failure(lambda: _get(channel, app_id, "bob", bearer(app_id, "alice")))
    assert (f.code, f.reason) == (Code.PERMISSION_DENIED, "SPACE_FORBIDDEN")


def test_other_apps_space_is_forbidden(channel: grpc.Channel, app_id: str) -> None:
    f = failure(lambda: _get(channel, "other-app", "alice", bearer(app_id, "alice")))
    assert (f.code, f.reason) == (Code.PERMISSION_DENIED, "SPACE_FORBIDDEN")
    admin = bearer(app_id, "svc", "storage:admin")
    f = failure(lambda: _get(channel, "other-app", "alice", admin))
    assert f.reason == "SPACE_FORBIDDEN"


def test_missing_scope(connect: ClientFactory, app_id: str) -> None:
    reader = connect(app_id, "alice", "storage:read")
    with pytest.raises(PermissionDenied) as caught:
        reader.put("k", b"x")
    assert caught.value.reason == "SCOPE_MISSING"
    writer = connect(app_id, "alice", "storage:write")
    writer.put("k", b"x")
    with pytest.raises(PermissionDenied) as caught:
        writer.get("k")
    assert caught.value.reason == "SCOPE_MISSING"
    with pytest.raises(PermissionDenied):
        reader.set_quota(app_id=app_id, limit_keys=5)


def test_shared_space_read_by_users_written_by_admin(connect: ClientFactory, app_id: str) -> None:
    shared = Space(app_id, "")
    admin = connect(app_id, "backend", "storage:admin", space=shared)
    user = connect(app_id, "alice", space=shared)
    admin.put("config", {"theme": "dark"})
    assert user.get("config").value == {"theme": "dark"}
    assert [e.key for e in user.list()] == ["config"]
    with pytest.raises(PermissionDenied) as caught:
        user.put("config", {"theme": "light"})
    assert caught.value.reason == "SCOPE_MISSING"
    assert user.get("config").value == {"theme": "dark"}


def test_admin_reaches_every_space_of_its_app(connect: ClientFactory, app_id: str) -> None:
    alice = connect(app_id, "alice")
    alice.put("k", b"mine")
    admin = connect(app_id, "backend", "storage:admin", space=Space(app_id, "alice"))
    assert admin.get("k").value == b"mine"
    admin.put("k", b"set by the backend")
    assert alice.get("k").value == b"set by the backend"


def test_operator_reaches_every_app(connect: ClientFactory, app_id: str) -> None:
    connect(app_id, "alice").put("k", b"v")
    operator = connect("ops", "oncall", "storage:operator", space=Space(app_id, "alice"))
    assert operator.get("k").value == b"v"
    assert operator.app_usage(app_id).spaces == 1


def test_health_and_reflection_need_no_token(channel: grpc.Channel) -> None:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for s in next(iter(responses)).list_services_response.service}
    assert {
        "tmcp.storage.v1.KeyValue",
        "tmcp.storage.v1.Batch",
        "tmcp.storage.v1.Quota",
        "tmcp.storage.v1.Sync",
        "grpc.health.v1.Health",
    } <= names


def test_app_usage_needs_admin_of_that_app(channel: grpc.Channel, app_id: str) -> None:
    stub = quota_pb2_grpc.QuotaStub(channel)
    request = quota_pb2.GetAppUsageRequest(app_id=app_id)
    f = failure(lambda: stub.GetAppUsage(request, metadata=bearer(app_id, "alice")))
    assert (f.code, f.reason) == (Code.PERMISSION_DENIED, "SCOPE_MISSING")
    other_admin = bearer("other", "svc", "storage:admin")
    f = failure(lambda: stub.GetAppUsage(request, metadata=other_admin))
    assert f.reason == "SPACE_FORBIDDEN"


def test_token_callable_is_asked_per_call(server: ServerProcess, app_id: str) -> None:
    calls = []

    def fresh() -> str:
        calls.append(1)
        return token(app_id, "alice")

    with Client(server.target, token=fresh, space=Space(app_id, "alice")) as client:
        client.put("k", b"v")
        client.get("k")
    assert len(calls) == 2
