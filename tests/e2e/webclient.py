"""A tiny gRPC-Web client for tests: aiohttp plus its own frame codec.

The codec here is written apart from the server's (``api.grpcweb``) on purpose, so that a
mistake in one is not hidden by the same mistake in the other.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

import aiohttp
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

BINARY = "application/grpc-web+proto"
TEXT = "application/grpc-web-text+proto"


def frame(payload: bytes, flags: int = 0) -> bytes:
    """One gRPC-Web frame."""
    return struct.pack(">BI", flags, len(payload)) + payload


def request_body(message: Message, *, text: bool = False) -> bytes:
    """The body of a call with one request message."""
    body = frame(message.SerializeToString())
    return base64.b64encode(body) if text else body


@dataclass
class WebReply:
    """A finished gRPC-Web call as the HTTP client saw it."""

    http_status: int
    headers: Mapping[str, str]
    messages: list[bytes] = field(default_factory=list)
    trailers: dict[str, str] = field(default_factory=dict)

    @property
    def code(self) -> int:
        """``grpc-status`` (from the trailer frame)."""
        return int(self.trailers["grpc-status"])

    @property
    def message(self) -> str:
        """``grpc-message``, percent-decoded."""
        return unquote(self.trailers.get("grpc-message", ""))

    def status(self) -> status_pb2.Status:
        """The rich status of ``grpc-status-details-bin``."""
        raw = self.trailers["grpc-status-details-bin"]
        return status_pb2.Status.FromString(base64.b64decode(raw + "=" * (-len(raw) % 4)))

    @property
    def reason(self) -> str:
        """``ErrorInfo.reason`` of the rich status."""
        for packed in self.status().details:
            if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                packed.Unpack(info)
                return str(info.reason)
        raise AssertionError(f"no ErrorInfo in {self.status()}")


def parse_frames(body: bytes) -> tuple[list[bytes], dict[str, str]]:
    """Messages and trailers of a binary response body."""
    messages: list[bytes] = []
    trailers: dict[str, str] = {}
    offset = 0
    while offset < len(body):
        flags, length = struct.unpack_from(">BI", body, offset)
        payload = body[offset + 5 : offset + 5 + length]
        assert len(payload) == length, "truncated response frame"
        offset += 5 + length
        if flags & 0x80:
            for line in payload.decode("ascii").split("\r\n"):
                if line:
                    name, _, value = line.partition(":")
                    trailers[name.strip()] = value.strip()
        else:
            messages.append(payload)
    return messages, trailers


def decode_text_body(body: bytes) -> bytes:
    """A text response body: base64 chunks, each padded on its own."""
    out = b""
    for i in range(0, len(body), 4):
        out += base64.b64decode(body[i : i + 4])
    return out


async def call(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    text: bool = False,
    headers: Mapping[str, str] | None = None,
) -> WebReply:
    """POST one gRPC-Web call and read the whole answer."""
    all_headers = {"content-type": TEXT if text else BINARY, "x-grpc-web": "1", **(headers or {})}
    async with session.post(url, data=body, headers=all_headers) as response:
        raw = await response.read()
        reply = WebReply(response.status, dict(response.headers))
        if response.status == 200:
            reply.messages, reply.trailers = parse_frames(decode_text_body(raw) if text else raw)
        return reply


async def stream_frames(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[int, bytes]]:
    """``(flags, payload)`` of each binary frame as soon as it has arrived."""
    while True:
        try:
            head = await response.content.readexactly(5)
        except aiohttp.ClientPayloadError:
            return
        except EOFError:
            return
        flags, length = struct.unpack(">BI", head)
        yield flags, await response.content.readexactly(length)
