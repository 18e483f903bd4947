"""The in-process gRPC-Web gateway: HTTP/1.1 gRPC-Web in, the server's own gRPC port out.

An aiohttp server takes each gRPC-Web POST, decodes its one request frame (binary or
base64 text), and calls the same method on the gRPC port through one grpc.aio channel with
generic ``unary_stream`` calls and no serializers, so message bytes pass through untouched
and any method works without per-method code. A unary method answers one message on that
call, a server-streaming one many; each is written to the HTTP client as it arrives (Watch
is never buffered). Request headers become metadata (``grpc-timeout`` becomes the call's
deadline); the call's response headers become HTTP headers, and its status and trailing
metadata (``grpc-status-details-bin`` included, so ``ErrorInfo.reason`` survives) the
trailer frame. Client-streaming and bidi methods (known from the protobuf descriptors)
answer UNIMPLEMENTED: gRPC-Web cannot carry them.

Why not a library: sonora (the maintained Python gRPC-Web package) hosts servicers itself
inside ASGI/WSGI with its own context object instead of forwarding to a gRPC port, so our
grpc.aio handlers, abort details and streaming would run under a different runtime; the
Envoy filter is the production path (``deploy/``). The forwarder is small: the wire format
is in ``api.grpcweb``, headers and CORS in ``api.gateway_http``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import Sequence

import grpc
from aiohttp import web
from google.protobuf import descriptor_pool
from google.rpc import code_pb2, status_pb2

from tmcp_storage_server.api import gateway_http as http
from tmcp_storage_server.api import grpcweb
from tmcp_storage_server.api.gateway_upstream import Upstream
from tmcp_storage_server.errors import InvalidArgument

log = logging.getLogger(__name__)

BINARY = "application/grpc-web+proto"
TEXT = "application/grpc-web-text+proto"
_PATH = re.compile(r"/[^/]+/[^/]+")


def upstream_target(listen: str, port: int) -> str:
    """Where this process reaches its own gRPC port: a wildcard host is loopback."""
    host = listen.rpartition(":")[0]
    if host in ("", "0.0.0.0"):  # noqa: S104 - mapping the wildcard, not binding it
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "[::1]"
    return f"{host}:{port}"


def _client_streaming(path: str) -> bool:
    """Whether the method at ``/package.Service/Method`` takes a request stream, by the
    descriptors this process has loaded (an unknown method is left to the server)."""
    service, _, method = path[1:].partition("/")
    try:
        descriptor = descriptor_pool.Default().FindServiceByName(service)
    except KeyError:
        return False
    found = descriptor.methods_by_name.get(method)
    return found is not None and bool(found.client_streaming)


def _bind(listen: str) -> socket.socket:
    """A listening socket on ``host:port`` with SO_REUSEPORT (port 0: any free port)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, int(port)))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Refused(Exception):
    """The gateway answers the request itself with ``status``."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status


class Gateway:
    """The gRPC-Web listener of one server process."""

    def __init__(
        self,
        *,
        listen: str,
        upstream: str,
        origins: Sequence[str],
        max_message_bytes: int,
        credentials: grpc.ChannelCredentials | None = None,
        shutdown_grace: float = 10.0,
        streams_per_connection: int = 100,
    ) -> None:
        self._listen = listen
        self._cors = http.Cors(tuple(origins))
        self._max_message_bytes = max_message_bytes
        self._upstream = Upstream(
            target=upstream,
            credentials=credentials,
            max_message_bytes=max_message_bytes,
            per_channel=streams_per_connection,
        )
        self._grace = shutdown_grace
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> int:
        """Bind (SO_REUSEPORT, so worker processes share the port) and serve; the port."""
        sock = _bind(self._listen)
        # Base64 makes a text body 4/3 of its bytes; frame headers add a little.
        app = web.Application(client_max_size=self._max_message_bytes * 4 // 3 + 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=self._grace
        )
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner
        self.port = int(sock.getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop listening, let calls in flight finish (up to the grace), close."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._upstream.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and not self._cors.allows(origin):
            return web.Response(status=403, text="origin not allowed\n")
        if request.method == "OPTIONS":
            if origin is None:
                return web.Response(status=403, text="not a CORS preflight\n")
            return web.Response(
                status=204, headers=self._cors.preflight_headers(origin, request.headers)
            )
        cors = self._cors.response_headers(origin)
        if request.method != "POST":
            return web.Response(status=405, headers={**cors, "Allow": "POST, OPTIONS"})
        if not _PATH.fullmatch(request.path):
            return web.Response(status=404, headers=cors, text="not a gRPC method path\n")
        mime = request.content_type.lower()
        if mime not in grpcweb.BINARY_TYPES + grpcweb.TEXT_TYPES:
            return web.Response(
                status=415, headers=cors, text="content-type must be application/grpc-web*\n"
            )
        text = mime in grpcweb.TEXT_TYPES
        response = web.StreamResponse(status=200, headers=cors)
        response.content_type = TEXT if text else BINARY
        try:
            payload, timeout, metadata = await self._decode(request, text)
        except _Refused as refused:
            await response.prepare(request)
            await self._write(
                response, grpcweb.encode_trailers(http.rich_trailers(refused.status)), text
            )
            await response.write_eof()
            return response
        await self._forward(request, response, text, payload, timeout, metadata)
        return response

    async def _decode(
        self, request: web.Request, text: bool
    ) -> tuple[bytes, float | None, http.Metadata]:
        """The request message, deadline and metadata, or ``_Refused``."""
        if _client_streaming(request.path):
            raise _Refused(
                http.unimplemented(
                    f"{request.path} takes a request stream, which gRPC-Web cannot carry; "
                    "use native gRPC",
                    "STREAMING_NOT_SUPPORTED",
                )
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _Refused(
                http.gateway_status(
                    code_pb2.RESOURCE_EXHAUSTED,
                    f"the request body is over {self._max_message_bytes} bytes",
                    "MESSAGE_TOO_LARGE",
                )
            ) from None
        try:
            frames = grpcweb.decode_frames(grpcweb.decode_text(body) if text else body)
        except grpcweb.ProtocolError as exc:
            raise _Refused(http.invalid("body", str(exc), "MALFORMED_GRPC_WEB")) from None
        header = request.headers.get("grpc-timeout")
        try:
            timeout = grpcweb.parse_timeout(header) if header is not None else None
        except grpcweb.ProtocolError as exc:
            raise _Refused(http.invalid("grpc-timeout", str(exc), "MALFORMED_GRPC_WEB")) from None
        data = [f for f in frames if not f.is_trailer]
        if len(data) != 1 or len(frames) != 1:
            message = f"a gRPC-Web request carries exactly one message frame, not {len(frames)}"
            raise _Refused(http.invalid("body", message, "MALFORMED_GRPC_WEB"))
        if data[0].flags & grpcweb.COMPRESSED:
            raise _Refused(
                http.unimplemented(
                    "compressed gRPC-Web messages are not supported", "COMPRESSION_NOT_SUPPORTED"
                )
            )
        try:
            metadata = http.request_metadata(request.headers.items())
        except InvalidArgument as exc:
            raise _Refused(http.invalid(exc.field, exc.message, exc.reason)) from None
        metadata = http.forwarded_for(metadata, request.remote)
        return data[0].payload, timeout, metadata

    async def _forward(
        self,
        request: web.Request,
        response: web.StreamResponse,
        text: bool,
        payload: bytes,
        deadline: float | None,
        metadata: http.Metadata,
    ) -> None:
        """Call the method upstream and relay headers, messages and trailers."""
        with self._upstream.lease() as channel:
            # No serializers: the message bytes pass through as they are.
            method = channel.unary_stream(request.path, None, None)
            call = method(payload, metadata=metadata, timeout=deadline)
            try:
                await self._relay(request, response, text, call)
            except (asyncio.CancelledError, ConnectionError):
                # The HTTP client went away: end the upstream call with it.
                call.cancel()
                raise
            finally:
                if not call.done():
                    call.cancel()

    async def _relay(
        self,
        request: web.Request,
        response: web.StreamResponse,
        text: bool,
        call: grpc.aio.UnaryStreamCall[bytes, bytes],
    ) -> None:
        """Response headers, then each message as it arrives, then the trailers."""
        headers = await call.initial_metadata()
        for name, value in http.metadata_headers(headers or ()):
            response.headers.add(name, value)
        await response.prepare(request)
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for message in call:
                await self._write(response, grpcweb.encode_frame(message), text)
        code = await call.code()
        trailers = http.status_trailers(
            code.value[0], await call.details() or "", await call.trailing_metadata() or ()
        )
        await self._write(response, grpcweb.encode_trailers(trailers), text)
        await response.write_eof()

    @staticmethod
    async def _write(response: web.StreamResponse, data: bytes, text: bool) -> None:
        await response.write(grpcweb.encode_text(data) if text else data)
