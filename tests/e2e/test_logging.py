"""Request ids and JSON logs through the real server, on both backends.

The id comes back in a unary call's trailing metadata (success or error) and in a
stream's initial metadata (see ``api.observe`` for why)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import grpc
import pytest
from tmcp.storage.v1 import kv_pb2, kv_pb2_grpc, sync_pb2, sync_pb2_grpc, types_pb2

from tests.e2e import webclient
from tests.e2e.conftest import own_server
from tests.e2e.harness import ServerProcess, token
from tests.e2e.wire import bearer

GENERATED = re.compile(r"[0-9a-f]{10}-[0-9a-f]+\Z")
ORIGIN = "http://app.test"


@pytest.fixture(scope="module")
def logged(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server of its own logging JSON at DEBUG (so successful calls are logged too)."""
    env = {
        "STORAGE_LOG_FORMAT": "json",
        "STORAGE_LOG_LEVEL": "DEBUG",
        "STORAGE_WEB_LISTEN": "127.0.0.1:0",
        "STORAGE_WEB_ORIGINS": ORIGIN,
    }
    with own_server(backend, request, tmp_path_factory, env) as process:
        yield process


@pytest.fixture
def stub(logged: ServerProcess) -> Iterator[kv_pb2_grpc.KeyValueStub]:
    """A raw KeyValue stub, to see the metadata exactly."""
    with grpc.insecure_channel(logged.target) as channel:
        yield kv_pb2_grpc.KeyValueStub(channel)


def _space(app_id: str) -> types_pb2.Space:
    return types_pb2.Space(app_id=app_id, user_id="alice")


def _lines(server: ServerProcess) -> list[dict[str, Any]]:
    """Every JSON log line (the one "listening on" line is plain stdout)."""
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def _access(server: ServerProcess, request_id: str) -> dict[str, Any]:
    """The access record of the call ``request_id`` (its handler may still be unwinding
    when an error reaches the client)."""
    deadline = time.monotonic() + 10
    while True:
        for line in _lines(server):
            if line.get("request_id") == request_id and "code" in line:
                return line
        assert time.monotonic() < deadline, f"no access record for {request_id}"
        time.sleep(0.05)


def _id_of(metadata: Any) -> str:
    return str(dict(metadata)["x-request-id"])


def test_every_call_gets_a_fresh_id(stub: kv_pb2_grpc.KeyValueStub, app_id: str) -> None:
    ids = set()
    for _ in range(3):
        stub.Put(
            kv_pb2.PutRequest(space=_space(app_id), key="k", value=types_pb2.Value(raw=b"v")),
            metadata=bearer(app_id, "alice"),
        )
        _, call = stub.Get.with_call(
            kv_pb2.GetRequest(space=_space(app_id), key="k"), metadata=bearer(app_id, "alice")
        )
        ids.add(_id_of(call.trailing_metadata()))
    assert len(ids) == 3 and all(GENERATED.match(i) for i in ids), ids


def test_a_client_id_is_echoed_and_logged(
    logged: ServerProcess, stub: kv_pb2_grpc.KeyValueStub, app_id: str
) -> None:
    sent = f"client-{uuid.uuid4().hex}"
    stub.Put(
        kv_pb2.PutRequest(space=_space(app_id), key="k", value=types_pb2.Value(raw=b"v")),
        metadata=(*bearer(app_id, "alice"), ("x-request-id", sent)),
    )
    _, call = stub.Get.with_call(
        kv_pb2.GetRequest(space=_space(app_id), key="k"),
        metadata=(*bearer(app_id, "alice"), ("x-request-id", sent)),
    )
    assert _id_of(call.trailing_metadata()) == sent
    record = _access(logged, sent)
    assert record["level"] == "DEBUG" and record["code"] == "OK"
    assert record["method"] in ("/tmcp.storage.v1.KeyValue/Put", "/tmcp.storage.v1.KeyValue/Get")
    assert isinstance(record["duration_ms"], float) and record["duration_ms"] >= 0
    assert record["logger"] == "tmcp_storage_server.access"
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z", record["ts"])


def test_errors_carry_the_id_too(
    logged: ServerProcess, stub: kv_pb2_grpc.KeyValueStub, app_id: str
) -> None:
    sent = f"missing-{uuid.uuid4().hex}"
    with pytest.raises(grpc.RpcError) as caught:
        stub.Get(
            kv_pb2.GetRequest(space=_space(app_id), key="absent"),
            metadata=(*bearer(app_id, "alice"), ("x-request-id", sent)),
        )
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert _id_of(error.trailing_metadata()) == sent
    record = _access(logged, sent)
    assert record["level"] == "DEBUG" and record["code"] == "NOT_FOUND"  # a routine answer
    assert record["method"] == "/tmcp.storage.v1.KeyValue/Get"

    # Refused before any handler logic (no token): still an id, still a record.
    with pytest.raises(grpc.RpcError) as caught:
        stub.Get(kv_pb2.GetRequest(space=_space(app_id), key="k"))
    error = caught.value
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    record = _access(logged, _id_of(error.trailing_metadata()))
    assert record["code"] == "UNAUTHENTICATED" and record["level"] == "INFO"


@pytest.mark.parametrize("sent", ["has space", "x" * 129, "semi;colon", ""])
def test_a_malformed_id_is_replaced(stub: kv_pb2_grpc.KeyValueStub, app_id: str, sent: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Get(
            kv_pb2.GetRequest(space=_space(app_id), key="absent"),
            metadata=(*bearer(app_id, "alice"), ("x-request-id", sent)),
        )
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.NOT_FOUND  # the call itself is unaffected
    assert GENERATED.match(_id_of(error.trailing_metadata()))


def test_streams_return_the_id_first(logged: ServerProcess, app_id: str) -> None:
    sent = f"watch-{uuid.uuid4().hex}"
    with grpc.insecure_channel(logged.target) as channel:
        call: Any = sync_pb2_grpc.SyncStub(channel).Watch(
            sync_pb2.WatchRequest(space=_space(app_id)),
            metadata=(*bearer(app_id, "alice"), ("x-request-id", sent)),
        )
        assert _id_of(call.initial_metadata()) == sent
        assert next(call).heartbeat
        call.cancel()
    record = _access(logged, sent)
    assert record["code"] == "CANCELLED" and record["method"] == "/tmcp.storage.v1.Sync/Watch"


def test_every_log_line_is_one_json_object(logged: ServerProcess) -> None:
    # All but the lines `serve` prints on stdout ("tmcp-storage listening on ...").
    printed = [line for line in logged.log().splitlines() if not line.startswith("tmcp-storage")]
    lines = _lines(logged)
    assert len(lines) == len(printed) > 0
    for line in lines:
        assert {"ts", "level", "logger", "msg", "pid"} <= line.keys()
    assert any("serving on" in line["msg"] for line in lines)
    # grpc's own per-call DEBUG chatter stays out even at DEBUG.
    assert not any(line["logger"].startswith("grpc") for line in lines)


async def test_grpc_web_callers_get_the_id_too(logged: ServerProcess, app_id: str) -> None:
    sent = f"web-{uuid.uuid4().hex}"
    body = webclient.request_body(kv_pb2.GetRequest(space=_space(app_id), key="absent"))
    headers = {
        "Origin": ORIGIN,
        "authorization": f"Bearer {token(app_id, 'alice')}",
        "x-request-id": sent,
    }
    async with aiohttp.ClientSession() as session:
        reply = await webclient.call(
            session, logged.web_url + "/tmcp.storage.v1.KeyValue/Get", body, headers=headers
        )
    assert reply.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert reply.trailers["x-request-id"] == sent
    assert "x-request-id" in reply.headers["Access-Control-Expose-Headers"]
    assert _access(logged, sent)["code"] == "NOT_FOUND"
