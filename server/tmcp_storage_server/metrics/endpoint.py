"""The ``/metrics`` HTTP endpoint of a serving process, on its event loop (no thread).

A process alone serves it on ``STORAGE_METRICS_LISTEN``; a worker under a supervisor
serves it on a Unix socket that the supervisor names and scrapes (``metrics.workers``).
Collectors therefore run on the loop that updates the counters they read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

log = logging.getLogger(__name__)

READ_TIMEOUT = 5.0
"""Seconds a client has to send its request head."""
MAX_HEAD = 16 * 1024


def build_registry(collectors: Iterable[Collector]) -> CollectorRegistry:
    """A registry of its own (never the global one) holding ``collectors``."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


def response(registry: CollectorRegistry, head: bytes) -> bytes:
    """The HTTP/1.0 response to a request ``head``: the exposition for ``GET /metrics``."""
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) < 2 or parts[0] not in (b"GET", b"HEAD"):
        return _reply(405, b"text/plain", b"only GET\n")
    if parts[1].split(b"?", 1)[0] != b"/metrics":
        return _reply(404, b"text/plain", b"see /metrics\n")
    body = generate_latest(registry)
    return _reply(200, CONTENT_TYPE_LATEST.encode(), body if parts[0] == b"GET" else b"")


def _reply(status: int, content_type: bytes, body: bytes) -> bytes:
    reason = {200: b"OK", 404: b"Not Found", 405: b"Method Not Allowed"}[status]
    return (
        b"HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % (status, reason, content_type, len(body))
    ) + body


class MetricsEndpoint:
    """Serves one registry over HTTP/1.0 on TCP or a Unix socket."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._server: asyncio.Server | None = None
        self._path: str | None = None

    async def listen_tcp(self, listen: str) -> int:
        """Serve on ``host:port`` (port 0 picks one); the port."""
        host, _, port = listen.rpartition(":")
        self._server = await asyncio.start_server(self._handle, host.strip("[]"), int(port))
        return int(self._server.sockets[0].getsockname()[1])

    async def listen_unix(self, path: str) -> None:
        """Serve on the Unix socket ``path`` (replacing a stale one)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._server = await asyncio.start_unix_server(self._handle, path)
        self._path = path

    async def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEAD:
                return
            writer.write(response(self._registry, head))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            pass  # a client that went away or never asked: nothing to answer
        except Exception:
            log.exception("metrics endpoint failed")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def start(
    registry: CollectorRegistry, *, listen: str, socket_path: str | None
) -> tuple[MetricsEndpoint | None, str]:
    """Serve ``registry`` on the supervisor's socket if this is a worker, else on
    ``listen`` ("" = nowhere). Also a description of where, for the log."""
    if not socket_path and not listen:
        return None, "off"
    endpoint = MetricsEndpoint(registry)
    if socket_path:
        await endpoint.listen_unix(socket_path)
        return endpoint, f"unix:{socket_path} (the supervisor serves them)"
    port = await endpoint.listen_tcp(listen)
    host = listen.rpartition(":")[0]
    return endpoint, f"http://{host}:{port}/metrics"
