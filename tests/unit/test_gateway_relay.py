"""The gateway in this process in front of a small real grpc.aio server, to check what the
storage server itself never exercises: custom request metadata arriving, response headers
and custom trailers coming back, and a closed HTTP response cancelling the upstream call."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import pytest
from tmcp_storage_server.api.gateway import Gateway

from tests.e2e import webclient

_Context = grpc.aio.ServicerContext[bytes, bytes]


@dataclass
class Echo:
    """Records what reached it; ``Unary`` echoes the request reversed, ``Ticks`` sends
    two messages and then waits a minute."""

    metadata: list[tuple[str, str | bytes]] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def unary(self, request: bytes, context: _Context) -> bytes:
        self.metadata = [(k, v) for k, v in context.invocation_metadata() or ()]
        await context.send_initial_metadata((("x-echo", "hello"), ("x-echo-bin", b"\x00\xff")))
        context.set_trailing_metadata((("x-trailer", "t"), ("x-trailer-bin", b"\x01\x02")))
        if request == b"fail":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "échec: 100%")
        return request[::-1]

    async def ticks(self, request: bytes, context: _Context) -> AsyncIterator[bytes]:
        try:
            yield b"tick0"
            yield b"tick1"
            # Silence: only the HTTP connection's loss can end the call in time.
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


@pytest.fixture
async def relay() -> AsyncIterator[tuple[Echo, str]]:
    echo = Echo()
    server = grpc.aio.server()
    handler: Any = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(echo.unary),
            "Ticks": grpc.unary_stream_rpc_method_handler(echo.ticks),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    gateway = Gateway(
        listen="127.0.0.1:0",
        upstream=f"127.0.0.1:{port}",
        origins=(),
        max_message_bytes=1 << 20,
        shutdown_grace=1,
    )
    web_port = await gateway.start()
    try:
        yield echo, f"http://127.0.0.1:{web_port}"
    finally:
        await gateway.stop()
        await server.stop(None)


async def test_metadata_both_ways(relay: tuple[Echo, str]) -> None:
    echo, url = relay
    headers = {
        "authorization": "Bearer abc",
        "x-custom": "v",
        "x-blob-bin": base64.b64encode(b"\x00\x01").decode(),
        "cookie": "session=secret",
    }
    async with aiohttp.ClientSession() as session:
        reply = await webclient.call(
            session, url + "/test.Echo/Unary", webclient.frame(b"abc"), headers=headers
        )
    assert reply.messages == [b"cba"]
    received = dict(echo.metadata)
    assert received["authorization"] == "Bearer abc"
    assert received["x-custom"] == "v"
    assert received["x-blob-bin"] == b"\x00\x01"
    assert received["x-forwarded-for"] == "127.0.0.1"
    assert "cookie" not in received and "origin" not in received and "x-grpc-web" not in received
    assert reply.headers["x-echo"] == "hello"
    assert base64.b64decode(reply.headers["x-echo-bin"]) == b"\x00\xff"
    assert reply.trailers["grpc-status"] == "0"
    assert reply.trailers["x-trailer"] == "t"
    assert base64.b64decode(reply.trailers["x-trailer-bin"]) == b"\x01\x02"


async def test_error_message_is_percent_encoded(relay: tuple[Echo, str]) -> None:
    _, url = relay
    async with aiohttp.ClientSession() as session:
        reply = await webclient.call(session, url + "/test.Echo/Unary", webclient.frame(b"fail"))
    assert reply.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert reply.trailers["grpc-message"] == "%C3%A9chec: 100%25"
    assert reply.message == "échec: 100%"
    assert reply.trailers["x-trailer"] == "t"


async def test_closing_the_http_response_cancels_the_upstream_call(
    relay: tuple[Echo, str],
) -> None:
    echo, url = relay
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            url + "/test.Echo/Ticks",
            data=webclient.frame(b""),
            headers={"content-type": webclient.BINARY},
        )
        frames = webclient.stream_frames(response)
        assert await asyncio.wait_for(anext(frames), 5) == (0, b"tick0")
        assert await asyncio.wait_for(anext(frames), 5) == (0, b"tick1")
        response.close()  # drops the connection, as a closed browser tab does
        await asyncio.wait_for(echo.cancelled.wait(), 5)
