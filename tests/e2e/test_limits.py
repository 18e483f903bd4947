"""Abuse limits through the real server: the per-space write rate (on both backends),
message size, concurrent streams per connection and keepalive policing.

The rate-limited server admits one write per 20 s per space after a burst of 5, so a
test never sees a token come back while it runs, however slow the machine.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tmcp.storage.v1 import sync_pb2, sync_pb2_grpc, types_pb2
from tmcp_storage import (
    Client,
    DeleteItem,
    GetItem,
    Mutation,
    RateLimited,
    ResourceExhausted,
    SetItem,
    Space,
)

from tests.e2e.conftest import own_server
from tests.e2e.harness import ServerProcess, token
from tests.e2e.wire import bearer

RATE, BURST = 0.05, 5


@pytest.fixture(scope="module")
def limited(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server with a write rate limit, on the backend under test (its own database
    file with SQLite; the session's database with PostgreSQL, under fresh app ids)."""
    env = {"STORAGE_WRITE_RATE": str(RATE), "STORAGE_WRITE_BURST": str(BURST)}
    with own_server(backend, request, tmp_path_factory, env, redis=False) as process:
        yield process


@pytest.fixture
def space() -> Space:
    """A user's space in a fresh app."""
    return Space("app-" + uuid.uuid4().hex[:12], "u")


@pytest.fixture
def user(limited: ServerProcess, space: Space) -> Iterator[Client]:
    """The user of ``space`` on the rate-limited server."""
    with Client(limited.target, token=token(space.app_id, "u"), space=space, retries=0) as client:
        yield client


def _exhaust(client: Client) -> None:
    client.batch_set([SetItem(f"fill{i}", i) for i in range(BURST)], atomic=True)


def test_writes_past_the_burst_are_refused_with_retry_info(user: Client) -> None:
    _exhaust(user)
    with pytest.raises(RateLimited) as refused:
        user.put("late", b"x")
    error = refused.value
    assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "RATE_LIMITED" and error.domain == "storage.tmcp"
    assert error.detail(error_details_pb2.RetryInfo) is not None
    # One token comes back every 1 / RATE = 20 s.
    assert 1 / RATE - 5 < error.retry_after <= 1 / RATE + 0.001
    assert error.metadata["burst"] == str(BURST)
    # Nothing was written, and reads are not limited.
    assert [item.found for item in user.batch_get(["late", "fill0"]).results] == [False, True]
    assert user.get("fill4").value == 4
    assert [e.key for e in user.list("")] == [f"fill{i}" for i in range(BURST)]
    assert user.execute([GetItem("fill1")]).results[0].found


def _stream_push(target: str, space: Space) -> sync_pb2.StreamResponse:
    """Open a Stream, push one mutation, and return the push's result message."""
    requests: queue.Queue[sync_pb2.StreamRequest | None] = queue.Queue()

    def iterate() -> Iterator[sync_pb2.StreamRequest]:
        while (item := requests.get()) is not None:
            yield item

    wire_space = types_pb2.Space(app_id=space.app_id, user_id=space.user_id)
    requests.put(
        sync_pb2.StreamRequest(hello=sync_pb2.StreamHello(space=wire_space, client_id="phone"))
    )
    with grpc.insecure_channel(target) as channel:
        stub = sync_pb2_grpc.SyncStub(channel)
        responses: Any = stub.Stream(
            iterate(), metadata=bearer(space.app_id, space.user_id), timeout=30
        )
        try:
            assert next(responses).WhichOneof("kind") == "ready"
            mutation = sync_pb2.Mutation(mutation_id=1, key="s", value=types_pb2.Value(raw=b"x"))
            push = sync_pb2.StreamPush(push_id=7, mutations=[mutation])
            requests.put(sync_pb2.StreamRequest(push=push))
            for response in responses:
                if response.WhichOneof("kind") == "push_result":
                    result: sync_pb2.StreamResponse = response
                    return result
            raise AssertionError("the stream ended without a push result")
        finally:
            requests.put(None)
            responses.cancel()


def test_every_write_call_is_limited(user: Client, space: Space, limited: ServerProcess) -> None:
    _exhaust(user)
    writes: dict[str, Callable[[], Any]] = {
        "Put": lambda: user.put("k", b"v"),
        "Delete": lambda: user.delete("fill0"),
        "Touch": lambda: user.touch("fill0", ttl=60),
        "DeletePrefix": lambda: user.delete_prefix("fill"),
        "BatchSet": lambda: user.batch_set([SetItem("k", 1)]),
        "BatchDelete": lambda: user.batch_delete([DeleteItem("fill0")]),
        "Execute": lambda: user.execute([GetItem("fill0"), SetItem("k", 1)]),
        "Push": lambda: user.push("phone", [Mutation(mutation_id=1, key="k", value=b"v")]),
        "ResolveConflict": lambda: user.resolve_conflict("no-such-conflict", "server"),
    }
    refused = []
    for name, call in writes.items():
        try:
            call()
        except RateLimited:
            refused.append(name)
    assert refused == list(writes)
    result = _stream_push(limited.target, space)
    status = result.push_result.status
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    kinds = {d.TypeName().rsplit(".", 1)[-1]: d for d in status.details}
    info = error_details_pb2.ErrorInfo()
    kinds["ErrorInfo"].Unpack(info)
    assert info.reason == "RATE_LIMITED" and "RetryInfo" in kinds
    assert user.get("fill0").version == 1  # nothing above touched the space
    assert user.status("phone").last_mutation_id == 0


def test_a_batch_counts_its_items_and_may_borrow(user: Client) -> None:
    # A full bucket admits a batch larger than the burst; the debt is repaid first.
    user.batch_set([SetItem(f"k{i}", i) for i in range(BURST + 3)])
    with pytest.raises(RateLimited) as refused:
        user.put("late", b"x")
    assert refused.value.retry_after > (1 + 3) / RATE - 5


def test_spaces_are_limited_separately(limited: ServerProcess, user: Client, space: Space) -> None:
    _exhaust(user)
    with Client(
        limited.target,
        token=token(space.app_id, "other"),
        space=Space(space.app_id, "other"),
        retries=0,
    ) as other:
        other.put("k", b"v")
    with pytest.raises(RateLimited):
        user.put("k", b"v")


def test_an_oversized_message_is_refused_and_the_server_carries_on(
    connect: Callable[..., Client], app_id: str
) -> None:
    big = 64 * 1024 * 1024
    sender = connect(app_id, "alice", options=[("grpc.max_send_message_length", big)])
    with pytest.raises(ResourceExhausted) as refused:
        sender.put("huge", b"x" * (21 * 1024 * 1024))
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in refused.value.message
    sender.put("small", b"x")
    assert sender.get("small").value == b"x"


# -- transport limits: one server, embedded database (the database plays no part) ------

MIN_PING = 3


@pytest.fixture(scope="module")
def transport(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Two streams per connection; client pings at most every MIN_PING seconds."""
    url = "sqlite:///" + str(tmp_path_factory.mktemp("transport") / "storage.db")
    env = {"STORAGE_MAX_STREAMS": "2", "STORAGE_KEEPALIVE_MIN_PING": str(MIN_PING)}
    process = ServerProcess(url, env=env).start()
    yield process
    process.stop()


def _channel(target: str, *options: tuple[str, Any]) -> grpc.Channel:
    # A subchannel of its own: one channel is one connection.
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1), *options])


def _watch(channel: grpc.Channel) -> Any:
    app = "app-" + uuid.uuid4().hex[:8]
    request = sync_pb2.WatchRequest(space=types_pb2.Space(app_id=app, user_id="u"))
    return sync_pb2_grpc.SyncStub(channel).Watch(request, metadata=bearer(app, "u"))


def _health(channel: grpc.Channel, timeout: float) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=timeout
    )
    return int(reply.status)


def test_calls_past_the_stream_limit_wait_for_a_free_stream(transport: ServerProcess) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    with _channel(transport.target) as busy, _channel(transport.target) as other:
        watches = [_watch(busy), _watch(busy)]
        for watch in watches:
            next(watch)  # open: its first heartbeat came
        with pytest.raises(grpc.RpcError) as waited:
            _health(busy, timeout=1)  # queued in the client behind the two streams
        assert waited.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert _health(other, timeout=5) == serving  # another connection is not affected
        queued = health_pb2_grpc.HealthStub(busy).Check.future(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        time.sleep(0.3)
        assert not queued.done()
        watches[0].cancel()
        assert queued.result().status == serving
        watches[1].cancel()


def _watch_until_ended(channel: grpc.Channel, seconds: float) -> grpc.RpcError:
    """Keep a Watch open on ``channel`` for ``seconds`` (then cancel it); how it ended."""
    watch = _watch(channel)
    timer = threading.Timer(seconds, watch.cancel)
    timer.start()
    try:
        for _ in watch:
            pass
    except grpc.RpcError as error:
        return error
    finally:
        timer.cancel()
    raise AssertionError("a Watch does not end by itself")


def test_a_client_that_pings_too_often_is_sent_away(transport: ServerProcess) -> None:
    rude = [
        ("grpc.keepalive_time_ms", 100),  # gRPC clients send at most one ping a second
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    started = time.monotonic()
    with _channel(transport.target, *rude) as channel:
        error = _watch_until_ended(channel, 30)
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert "too many pings" in (error.details() or "").lower()
    assert time.monotonic() - started < 20


def test_a_client_that_pings_within_the_limit_keeps_its_stream(
    transport: ServerProcess,
) -> None:
    polite = [
        ("grpc.keepalive_time_ms", int((MIN_PING + 0.5) * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    with _channel(transport.target, *polite) as channel:
        error = _watch_until_ended(channel, 2 * MIN_PING + 2)  # two pings, at least
    assert error.code() is grpc.StatusCode.CANCELLED  # ended by us, not by the server
