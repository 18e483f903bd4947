"""Sync Stream (bidi) through the real server with raw stubs, on both backends."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator

import grpc
from tmcp.storage.v1 import sync_pb2, sync_pb2_grpc, types_pb2
from tmcp_storage import Client

from tests.e2e.harness import ServerProcess
from tests.e2e.wire import bearer, failure

_END = None


class Session:
    """One open Stream: send requests, read responses in order."""

    def __init__(self, target: str, app_id: str, user: str, *scopes: str) -> None:
        self._channel = grpc.insecure_channel(target)
        self._requests: queue.Queue[sync_pb2.StreamRequest | None] = queue.Queue()
        self._early: list[sync_pb2.StreamResponse] = []
        stub = sync_pb2_grpc.SyncStub(self._channel)
        self.responses: Iterator[sync_pb2.StreamResponse] = iter(
            stub.Stream(self._iterate(), metadata=bearer(app_id, user, *scopes))
        )

    def _iterate(self) -> Iterator[sync_pb2.StreamRequest]:
        while (item := self._requests.get()) is not _END:
            yield item

    def send(self, request: sync_pb2.StreamRequest) -> None:
        self._requests.put(request)

    def next(self, kind: str, timeout: float = 10.0) -> sync_pb2.StreamResponse:
        """The next response of ``kind``, skipping heartbeats. Responses of other kinds
        are kept for later calls: a push's echoes may come before its result."""
        for index, response in enumerate(self._early):
            if response.WhichOneof("kind") == kind:
                return self._early.pop(index)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = next(self.responses)
            if response.WhichOneof("kind") == "changes" and response.changes.heartbeat:
                continue
            if response.WhichOneof("kind") == kind:
                return response
            self._early.append(response)
        raise AssertionError(f"no {kind} response")

    def close(self) -> None:
        self._requests.put(_END)
        self._channel.close()


def _hello(app_id: str, client_id: str, cursor: str = "") -> sync_pb2.StreamRequest:
    space = types_pb2.Space(app_id=app_id, user_id="alice")
    return sync_pb2.StreamRequest(
        hello=sync_pb2.StreamHello(space=space, client_id=client_id, cursor=cursor)
    )


def _push(push_id: int, first_id: int, *keys: str) -> sync_pb2.StreamRequest:
    mutations = [
        sync_pb2.Mutation(
            mutation_id=first_id + i,
            op=sync_pb2.MUTATION_OP_SET,
            key=key,
            value=types_pb2.Value(raw=b"v"),
        )
        for i, key in enumerate(keys)
    ]
    return sync_pb2.StreamRequest(push=sync_pb2.StreamPush(push_id=push_id, mutations=mutations))


def test_stream_pushes_and_receives_marked_changes(
    server: ServerProcess, app_id: str, alice: Client
) -> None:
    session = Session(server.target, app_id, "alice")
    try:
        session.send(_hello(app_id, "tablet"))
        ready = session.next("ready").ready
        assert ready.last_mutation_id == 0 and ready.cursor
        session.send(_push(7, 1, "a", "b"))
        result = session.next("push_result").push_result
        assert result.push_id == 7 and result.last_mutation_id == 2
        assert [o.result for o in result.outcomes] == [sync_pb2.PUSH_RESULT_APPLIED] * 2
        echoes: list[sync_pb2.Change] = []
        while len(echoes) < 2:
            echoes += session.next("changes").changes.changes
        assert [(c.key, c.client_id, c.mutation_id) for c in echoes] == [
            ("a", "tablet", 1),
            ("b", "tablet", 2),
        ]
        alice.put("other", b"x")  # someone else's write
        (change,) = session.next("changes").changes.changes
        assert (change.key, change.client_id) == ("other", "")
        session.send(_push(8, 9, "c"))  # a gap: reported, the stream goes on
        gap = session.next("push_result").push_result
        assert gap.push_id == 8 and gap.status.code == grpc.StatusCode.OUT_OF_RANGE.value[0]
        session.send(_push(9, 3, "c"))
        assert session.next("push_result").push_result.last_mutation_id == 3
    finally:
        session.close()
    again = Session(server.target, app_id, "alice")
    try:
        again.send(_hello(app_id, "tablet"))
        assert again.next("ready").ready.last_mutation_id == 3
    finally:
        again.close()


def test_stream_must_start_with_hello_and_owner_only(server: ServerProcess, app_id: str) -> None:
    session = Session(server.target, app_id, "alice")
    session.send(_push(1, 1, "a"))
    f = failure(lambda: session.next("ready"))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    session.close()
    owner = Session(server.target, app_id, "alice")
    owner.send(_hello(app_id, "phone"))
    owner.next("ready")
    owner.send(_push(1, 1, "a"))
    owner.next("push_result")
    owner.close()
    admin = Session(server.target, app_id, "backend", "storage:admin")
    admin.send(_hello(app_id, "phone"))
    f = failure(lambda: admin.next("ready"))
    assert (f.code, f.reason) == (grpc.StatusCode.PERMISSION_DENIED, "CLIENT_FORBIDDEN")
    admin.close()
