"""Watch and Stream: the streaming handlers of the Sync service.

Every change message is written under a watchdog: while a write waits for a consumer
that does not read, the consumer's lag is checked, and one that falls more than
``max_lag`` revisions behind is ended with RESOURCE_EXHAUSTED ``SLOW_CONSUMER`` and the
cursor of the last message written. The server never buffers more than that one message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from tmcp.storage.v1 import sync_pb2

from tmcp_storage_server.api import convert, sync_convert
from tmcp_storage_server.api.auth import TokenVerifier
from tmcp_storage_server.api.errors import abort, to_status
from tmcp_storage_server.api.observe import invocation_metadata
from tmcp_storage_server.core.sync import SyncService
from tmcp_storage_server.core.watch import WatchEvent, WatchService
from tmcp_storage_server.errors import InvalidArgument, StorageError
from tmcp_storage_server.model import Principal, Space

LAG_CHECK = 0.5
"""Seconds between lag checks while a change message waits for its consumer."""

_Context = grpc.aio.ServicerContext[Any, Any]


def _changes(event: WatchEvent) -> list[sync_pb2.Change]:
    return [sync_convert.change(c) for c in event.changes]


class StreamHandlers:
    """Serves Watch and Stream."""

    def __init__(self, *, sync: SyncService, watcher: WatchService, auth: TokenVerifier) -> None:
        self._sync = sync
        self._watcher = watcher
        self._auth = auth

    async def watch(self, request: sync_pb2.WatchRequest, context: _Context) -> None:
        """Server-streaming Watch."""
        try:
            principal = self._auth.authenticate(invocation_metadata(context))
            space = convert.space(request.space)
            delivered = request.cursor
            events = self._watcher.watch(principal, space, request.cursor, request.key_prefix)
            async for event in events:
                message = sync_pb2.WatchResponse(
                    changes=_changes(event),
                    cursor=event.cursor,
                    heartbeat=event.heartbeat,
                    header=convert.header(event.revision),
                )
                await self._write_watched(context, message, space, delivered)
                delivered = event.cursor
        except Exception as exc:
            await abort(context, exc, "Watch")

    async def _write_watched(
        self, context: _Context, message: Any, space: Space, delivered: str
    ) -> None:
        write = asyncio.ensure_future(context.write(message))
        while True:
            done, _ = await asyncio.wait({write}, timeout=LAG_CHECK)
            if done:
                write.result()
                return
            lag = await self._watcher.lag(space, delivered) if delivered else 0
            if lag > self._watcher.settings.max_lag:
                write.cancel()
                raise self._watcher.slow(delivered)

    async def stream(
        self, requests: AsyncIterator[sync_pb2.StreamRequest], context: _Context
    ) -> None:
        """Bidi Stream: a Hello, then pushes one way and live changes the other."""
        tasks: list[asyncio.Task[None]] = []
        try:
            principal = self._auth.authenticate(invocation_metadata(context))
            first = await anext(aiter(requests), None)
            if first is None or first.WhichOneof("kind") != "hello":
                raise InvalidArgument("hello", "the first message must be a StreamHello")
            hello = first.hello
            space = convert.space(hello.space)
            status = await self._sync.hello(principal, space, hello.client_id)
            cursor = hello.cursor or status.cursor
            lock = asyncio.Lock()
            ready = sync_pb2.StreamReady(
                last_mutation_id=status.client.last_mutation_id if status.client else 0,
                cursor=cursor,
            )
            await context.write(
                sync_pb2.StreamResponse(header=convert.header(status.revision), ready=ready)
            )
            session = _Session(self, context, principal, space, hello, lock)
            tasks = [
                asyncio.create_task(session.pushes(requests)),
                asyncio.create_task(session.changes(cursor)),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a half-closed request stream ends the call normally
        except Exception as exc:
            await abort(context, exc, "Stream")
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


class _Session:
    """One open Stream."""

    def __init__(
        self,
        handlers: StreamHandlers,
        context: _Context,
        principal: Principal,
        space: Space,
        hello: sync_pb2.StreamHello,
        lock: asyncio.Lock,
    ) -> None:
        self._handlers = handlers
        self._context = context
        self._principal = principal
        self._space = space
        self._hello = hello
        self._lock = lock

    async def pushes(self, requests: AsyncIterator[sync_pb2.StreamRequest]) -> None:
        """Answer each push with its outcomes, or with the status that failed it."""
        async for request in requests:
            if request.WhichOneof("kind") != "push":
                raise InvalidArgument("hello", "StreamHello is only the first message")
            push = request.push
            result = sync_pb2.StreamPushResult(push_id=push.push_id)
            try:
                strategy = sync_convert.strategy(push.strategy or self._hello.strategy)
                report = await self._handlers._sync.push(
                    self._principal,
                    self._space,
                    self._hello.client_id,
                    [sync_convert.mutation(m) for m in push.mutations],
                    strategy,
                )
                result.outcomes.extend(sync_convert.outcome(r) for r in report.reports)
                result.last_mutation_id = report.last_mutation_id
                header = convert.header(report.revision)
            except StorageError as exc:
                result.status.CopyFrom(to_status(exc))
                header = convert.header(0)
            async with self._lock:
                await self._context.write(
                    sync_pb2.StreamResponse(header=header, push_result=result)
                )

    async def changes(self, cursor: str) -> None:
        """Live changes from ``cursor``, each marked with the client and mutation that
        made it, so the client can skip its own echoes."""
        delivered = cursor
        events = self._handlers._watcher.watch(
            self._principal, self._space, cursor, self._hello.key_prefix
        )
        async for event in events:
            message = sync_pb2.StreamResponse(
                header=convert.header(event.revision),
                changes=sync_pb2.StreamChanges(
                    changes=_changes(event), cursor=event.cursor, heartbeat=event.heartbeat
                ),
            )
            async with self._lock:
                await self._handlers._write_watched(self._context, message, self._space, delivered)
            delivered = event.cursor
