"""The gRPC-Web gateway through a real server process, on both backends, with a tiny
gRPC-Web client (``webclient``) next to the Python client."""

from __future__ import annotations

import asyncio
import base64
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from tmcp.storage.v1 import kv_pb2, sync_pb2, types_pb2
from tmcp_storage import AsyncClient, NotFound, Space

from tests.conftest import REDIS_URL
from tests.e2e import webclient
from tests.e2e.harness import ServerProcess, token

ALLOWED = "http://allowed.test:3000"
REFUSED = "http://evil.test"
KV = "/tmcp.storage.v1.KeyValue"


@pytest.fixture(scope="module")
def web_server(backend: str, database_url: str) -> Iterator[ServerProcess]:
    """A server with the gateway on a free port and one allowed origin."""
    env = {
        "STORAGE_WEB_LISTEN": "127.0.0.1:0",
        "STORAGE_WEB_ORIGINS": f"{ALLOWED}, http://other.test",
        "STORAGE_WATCH_HEARTBEAT": "30",
    }
    if backend == "postgres":
        env |= {
            "STORAGE_REDIS_URL": REDIS_URL,
            "STORAGE_REDIS_PREFIX": f"gw-{uuid.uuid4().hex[:8]}:",
        }
    process = ServerProcess(database_url, env=env).start()
    assert process.web_port, process.log()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def native(web_server: ServerProcess, app_id: str) -> AsyncIterator[AsyncClient]:
    """Alice's Python client on the gRPC port."""
    async with AsyncClient(
        web_server.target, token=token(app_id, "alice"), space=Space(app_id, "alice")
    ) as client:
        yield client


def auth(app_id: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token(app_id, 'alice')}"}


def space(app_id: str) -> types_pb2.Space:
    return types_pb2.Space(app_id=app_id, user_id="alice")


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
async def test_unary_put_and_get(
    web_server: ServerProcess,
    session: aiohttp.ClientSession,
    native: AsyncClient,
    app_id: str,
    text: bool,
) -> None:
    put = kv_pb2.PutRequest(space=space(app_id), key="k", value=types_pb2.Value(raw=b"\x00web"))
    body = webclient.request_body(put)
    if text:  # two base64 runs, each padded on its own, as a chunking sender makes them
        body = base64.b64encode(body[:7]) + base64.b64encode(body[7:])
        assert b"=" in body[:-2]
    reply = await webclient.call(
        session, web_server.web_url + KV + "/Put", body, text=text, headers=auth(app_id)
    )
    assert reply.http_status == 200
    assert reply.headers["Content-Type"] == (webclient.TEXT if text else webclient.BINARY)
    assert reply.code == 0, reply.trailers
    assert kv_pb2.PutResponse.FromString(reply.messages[0]).entry.version == 1
    assert (await native.get("k")).value == b"\x00web"  # the write is real

    get = kv_pb2.GetRequest(space=space(app_id), key="k")
    reply = await webclient.call(
        session,
        web_server.web_url + KV + "/Get",
        webclient.request_body(get, text=text),
        text=text,
        headers=auth(app_id),
    )
    assert reply.code == 0, reply.trailers
    [message] = reply.messages
    assert kv_pb2.GetResponse.FromString(message).entry.value.raw == b"\x00web"


async def test_errors_keep_their_reason(
    web_server: ServerProcess, session: aiohttp.ClientSession, app_id: str
) -> None:
    url = web_server.web_url + KV + "/Get"
    body = webclient.request_body(kv_pb2.GetRequest(space=space(app_id), key="clé"))
    reply = await webclient.call(session, url, body)
    assert reply.http_status == 200
    assert reply.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert reply.reason == "TOKEN_INVALID"
    assert reply.messages == []

    reply = await webclient.call(session, url, body, headers=auth(app_id))
    assert reply.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert reply.reason == "KEY_NOT_FOUND"
    assert "%C3%A9" in reply.trailers["grpc-message"]  # percent-encoded UTF-8
    assert reply.message == "key 'clé' not found" == reply.status().message


async def test_any_method_passes_through(
    web_server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    body = webclient.request_body(health_pb2.HealthCheckRequest())
    reply = await webclient.call(session, web_server.web_url + "/grpc.health.v1.Health/Check", body)
    assert reply.code == 0
    response = health_pb2.HealthCheckResponse.FromString(reply.messages[0])
    assert response.status == health_pb2.HealthCheckResponse.SERVING

    reply = await webclient.call(session, web_server.web_url + "/no.Such/Method", body)
    assert reply.code == grpc.StatusCode.UNIMPLEMENTED.value[0]


async def test_watch_streams_changes_as_they_happen(
    web_server: ServerProcess, session: aiohttp.ClientSession, native: AsyncClient, app_id: str
) -> None:
    body = webclient.request_body(sync_pb2.WatchRequest(space=space(app_id), key_prefix="w/"))
    headers = {"content-type": webclient.BINARY, **auth(app_id)}
    url = web_server.web_url + "/tmcp.storage.v1.Sync/Watch"
    async with session.post(url, data=body, headers=headers) as response:
        assert response.status == 200
        frames = webclient.stream_frames(response)
        # Watching "from now on" starts with a heartbeat: the stream is open.
        flags, payload = await asyncio.wait_for(anext(frames), 10)
        assert flags == 0 and sync_pb2.WatchResponse.FromString(payload).heartbeat
        # The response is still open while a change is made elsewhere...
        written = time.monotonic()
        await native.put("w/live", b"1")
        flags, payload = await asyncio.wait_for(anext(frames), 10)
        # ...and arrives long before the 30 s heartbeat would have flushed a buffer.
        assert time.monotonic() - written < 10
        event = sync_pb2.WatchResponse.FromString(payload)
        assert [c.key for c in event.changes] == ["w/live"]
        await native.put("w/second", b"2")
        flags, payload = await asyncio.wait_for(anext(frames), 10)
        assert [c.key for c in sync_pb2.WatchResponse.FromString(payload).changes] == ["w/second"]
    # Closing the HTTP response ends the upstream stream; the server goes on serving.
    assert (await native.get("w/live")).value == b"1"


async def test_grpc_timeout_becomes_the_deadline(
    web_server: ServerProcess, session: aiohttp.ClientSession, app_id: str
) -> None:
    body = webclient.request_body(sync_pb2.WatchRequest(space=space(app_id)))
    url = web_server.web_url + "/tmcp.storage.v1.Sync/Watch"
    started = time.monotonic()
    reply = await webclient.call(
        session, url, body, text=False, headers={**auth(app_id), "grpc-timeout": "400m"}
    )
    elapsed = time.monotonic() - started
    assert reply.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], reply.trailers
    assert len(reply.messages) == 1  # the opening heartbeat, then the deadline
    assert 0.3 < elapsed < 10

    reply = await webclient.call(
        session, url, body, headers={**auth(app_id), "grpc-timeout": "soon"}
    )
    assert reply.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert reply.reason == "MALFORMED_GRPC_WEB"


async def test_cors_preflight_allowed_and_refused(
    web_server: ServerProcess, session: aiohttp.ClientSession, native: AsyncClient, app_id: str
) -> None:
    url = web_server.web_url + KV + "/Put"
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-grpc-web,x-custom",
    }
    async with session.options(url, headers={"Origin": ALLOWED, **preflight}) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        assert "authorization" in response.headers["Access-Control-Allow-Headers"]
    async with session.options(url, headers={"Origin": REFUSED, **preflight}) as response:
        assert response.status == 403
        assert "Access-Control-Allow-Origin" not in response.headers

    body = webclient.request_body(
        kv_pb2.PutRequest(space=space(app_id), key="cors", value=types_pb2.Value(raw=b"x"))
    )
    reply = await webclient.call(session, url, body, headers={"Origin": ALLOWED, **auth(app_id)})
    assert reply.code == 0
    assert reply.headers["Access-Control-Allow-Origin"] == ALLOWED
    exposed = reply.headers["Access-Control-Expose-Headers"]
    for name in ("grpc-status", "grpc-message", "grpc-status-details-bin"):
        assert name in exposed

    await native.delete("cors")
    reply = await webclient.call(session, url, body, headers={"Origin": REFUSED, **auth(app_id)})
    assert reply.http_status == 403
    assert "Access-Control-Allow-Origin" not in reply.headers
    with pytest.raises(NotFound):  # refused before anything was forwarded
        await native.get("cors")


def _frame_body() -> bytes:
    return webclient.request_body(health_pb2.HealthCheckRequest(service="x" * 10))


@pytest.mark.parametrize(
    ("body", "text", "code", "reason"),
    [
        (_frame_body()[:-3], False, "INVALID_ARGUMENT", "MALFORMED_GRPC_WEB"),
        (b"\x00\x00", False, "INVALID_ARGUMENT", "MALFORMED_GRPC_WEB"),
        (b"", False, "INVALID_ARGUMENT", "MALFORMED_GRPC_WEB"),
        (_frame_body() * 2, False, "INVALID_ARGUMENT", "MALFORMED_GRPC_WEB"),
        (b"AAAA!!!!", True, "INVALID_ARGUMENT", "MALFORMED_GRPC_WEB"),
        (b"AA=A", True, "INVALID_ARGUMENT", "MALFORMED_GRPC_WEB"),
        (webclient.frame(b"", flags=1), False, "UNIMPLEMENTED", "COMPRESSION_NOT_SUPPORTED"),
    ],
    ids=["truncated", "short-header", "empty", "two-frames", "bad-base64", "bad-pad", "gzip"],
)
async def test_malformed_bodies_get_clean_errors(
    web_server: ServerProcess,
    session: aiohttp.ClientSession,
    body: bytes,
    text: bool,
    code: str,
    reason: str,
) -> None:
    url = web_server.web_url + "/grpc.health.v1.Health/Check"
    reply = await webclient.call(session, url, body, text=text)
    assert reply.http_status == 200
    assert reply.code == grpc.StatusCode[code].value[0], reply.trailers
    assert reply.reason == reason
    # The server is still healthy, through the gateway too.
    reply = await webclient.call(
        session, url, webclient.request_body(health_pb2.HealthCheckRequest())
    )
    assert reply.code == 0


async def test_requests_the_gateway_refuses(
    web_server: ServerProcess, session: aiohttp.ClientSession, app_id: str
) -> None:
    body = webclient.request_body(sync_pb2.StreamRequest())
    reply = await webclient.call(
        session, web_server.web_url + "/tmcp.storage.v1.Sync/Stream", body, headers=auth(app_id)
    )
    assert reply.code == grpc.StatusCode.UNIMPLEMENTED.value[0]
    assert reply.reason == "STREAMING_NOT_SUPPORTED"

    health = webclient.request_body(health_pb2.HealthCheckRequest())
    url = web_server.web_url + "/grpc.health.v1.Health/Check"
    reply = await webclient.call(session, url, health, headers={"x-trace-bin": "not base64!"})
    assert reply.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert reply.reason == "INVALID_METADATA"
    reply = await webclient.call(session, url, health, headers={"x-trace-bin": "AQID"})
    assert reply.code == 0  # well-formed binary metadata passes

    async with session.post(url, data=health, headers={"content-type": "text/plain"}) as response:
        assert response.status == 415
    async with session.get(url) as response:
        assert response.status == 405


async def test_a_value_of_the_largest_size_in_text_mode(
    web_server: ServerProcess, session: aiohttp.ClientSession, native: AsyncClient, app_id: str
) -> None:
    value = bytes(range(256)) * 4096  # 1 MiB, the largest value a space takes
    put = kv_pb2.PutRequest(space=space(app_id), key="big", value=types_pb2.Value(raw=value))
    url = web_server.web_url + KV + "/Put"
    body = webclient.request_body(put, text=True)
    reply = await webclient.call(session, url, body, text=True, headers=auth(app_id))
    assert reply.code == 0, reply.trailers
    get = webclient.request_body(kv_pb2.GetRequest(space=space(app_id), key="big"), text=True)
    reply = await webclient.call(
        session, web_server.web_url + KV + "/Get", get, text=True, headers=auth(app_id)
    )
    assert kv_pb2.GetResponse.FromString(reply.messages[0]).entry.value.raw == value
    assert (await native.get("big")).value == value


async def test_shutdown_ends_a_gateway_watch_with_its_cursor(
    database_url: str, session: aiohttp.ClientSession, app_id: str
) -> None:
    process = ServerProcess(database_url, env={"STORAGE_WEB_LISTEN": "127.0.0.1:0"}).start()
    try:
        body = webclient.request_body(sync_pb2.WatchRequest(space=space(app_id)))
        headers = {"content-type": webclient.BINARY, **auth(app_id)}
        url = process.web_url + "/tmcp.storage.v1.Sync/Watch"
        async with session.post(url, data=body, headers=headers) as response:
            frames = webclient.stream_frames(response)
            flags, _ = await asyncio.wait_for(anext(frames), 10)
            assert flags == 0
            process.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            flags, payload = await asyncio.wait_for(anext(frames), 15)
            assert flags == 0x80
            _, trailers = webclient.parse_frames(webclient.frame(payload, flags=0x80))
        reply = webclient.WebReply(200, {}, [], trailers)
        assert reply.code == grpc.StatusCode.UNAVAILABLE.value[0], trailers
        info = error_details_pb2.ErrorInfo()
        assert reply.status().details[0].Unpack(info)
        assert info.metadata["cursor"]
        assert process.stop() == 0
    finally:
        process.stop()


def test_workers_share_the_gateway_port(postgres_url: str) -> None:
    """Two worker processes each serve gRPC-Web on the one port the supervisor chose."""
    app_id = "app-" + uuid.uuid4().hex[:12]
    env = {"STORAGE_WORKERS": "2", "STORAGE_WEB_LISTEN": "127.0.0.1:0"}
    process = ServerProcess(postgres_url, env=env).start()
    try:
        line = r" (\d+) INFO \S+: gRPC-Web gateway on \S+ \(port (\d+)\)"
        gateways = re.findall(line, process.log())
        assert len({pid for pid, _ in gateways}) == 2, process.log()
        assert {int(port) for _, port in gateways} == {process.web_port}

        async def calls() -> None:
            put = kv_pb2.PutRequest(space=space(app_id), key="k", value=types_pb2.Value(raw=b"v"))
            for _ in range(6):  # a fresh connection each, spread by SO_REUSEPORT
                async with aiohttp.ClientSession() as session:
                    reply = await webclient.call(
                        session,
                        process.web_url + KV + "/Put",
                        webclient.request_body(put),
                        headers=auth(app_id),
                    )
                    assert reply.code == 0, reply.trailers

        asyncio.run(calls())
    finally:
        process.stop()
