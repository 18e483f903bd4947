"""`AsyncClient`: the asyncio entry point, the twin of `client.Client`.

Each method builds its call with the same `Operations` as `Client` and awaits it on an
`AsyncRunner`; only the waiting differs.
"""

# `timeout` is the gRPC deadline, which the server sees and honours; asyncio.timeout
# (what ASYNC109 suggests) would only cancel the client's side.
# ruff: noqa: ASYNC109

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Literal

import grpc
import grpc.aio

from tmcp_storage import batching
from tmcp_storage._runners import AsyncRunner
from tmcp_storage._settings import Settings
from tmcp_storage.models import (
    AppUsage,
    BatchResult,
    DeleteItem,
    DeletePrefixResult,
    DeleteResult,
    Entry,
    GetItem,
    JsonInput,
    PutResult,
    QuotaInfo,
    QuotaLimits,
    RawInput,
    SetItem,
    Space,
    UsageInfo,
)
from tmcp_storage.operations import Operations
from tmcp_storage.sync_models import (
    Conflict,
    Mutation,
    PullResult,
    PushResult,
    Strategy,
    SyncStatus,
    WatchEvent,
)
from tmcp_storage.sync_operations import SyncOperations
from tmcp_storage.tls import Tls


class AsyncClient:
    """An asyncio client of the storage service; use `async with` or `await close()`.

    The channel opens on the first call, so the client may be built outside a running
    event loop; it then belongs to the loop of that first call.

    `token` is a bearer token, or a function returning one (called for every attempt,
    so it may refresh). `space` is the default for every call. `timeout` is the default
    deadline of a call in seconds, retries included (None: no deadline); a call's own
    `timeout` replaces it. UNAVAILABLE is retried up to `retries` times. `tls`
    (`tmcp_storage.Tls`: root CA, client certificate, server name) makes the channel
    TLS; `credentials` is the raw gRPC alternative. Calls raise
    `tmcp_storage.errors.StorageError` subclasses, and ValueError when no space is known.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | Callable[[], str] | None = None,
        space: Space | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        tls: Tls | None = None,
        timeout: float | None = 10.0,
        retries: int = 3,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        settings = Settings.create(
            target,
            token=token,
            credentials=credentials,
            tls=tls,
            timeout=timeout,
            retries=retries,
            options=options,
        )
        self._settings = settings
        self._channel: grpc.aio.Channel | None = None
        self._lazy_runner: AsyncRunner | None = None
        self._closed = False
        self._ops = Operations(space=space)
        self._sync = SyncOperations(space_of=self._ops.space)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; calls made afterwards fail."""
        self._closed = True
        if self._channel is not None:
            await self._channel.close(None)

    @property
    def _runner(self) -> AsyncRunner:
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._lazy_runner is None:
            settings = self._settings
            if settings.credentials is None:
                channel = grpc.aio.insecure_channel(settings.target, options=settings.options)
            else:
                channel = grpc.aio.secure_channel(
                    settings.target, settings.credentials, options=settings.options
                )
            self._channel = channel
            self._lazy_runner = AsyncRunner(channel, settings)
        return self._lazy_runner

    async def get(
        self,
        key: str,
        *,
        strong: bool = False,
        space: Space | None = None,
        timeout: float | None = None,
    ) -> Entry:
        """Read one entry; NotFound if absent or expired. `strong` bypasses caches."""
        return await self._runner.run(self._ops.get(key, strong=strong, space=space), timeout)

    async def put(
        self,
        key: str,
        value: RawInput | JsonInput,
        *,
        content_type: str | None = None,
        expected_version: int | None = None,
        ttl: float | timedelta | None = None,
        expires_at: datetime | None = None,
        keep_ttl: bool = False,
        metadata: Mapping[str, str] | None = None,
        space: Space | None = None,
        timeout: float | None = None,
    ) -> PutResult:
        """Create or replace an entry: bytes are stored raw, anything else as JSON.

        `expected_version` None writes unconditionally, 0 only creates, N needs version
        N. Without `ttl`/`expires_at` the entry does not expire, unless `keep_ttl`.
        """
        call = self._ops.put(
            key,
            value,
            content_type=content_type,
            expected_version=expected_version,
            ttl=ttl,
            expires_at=expires_at,
            keep_ttl=keep_ttl,
            metadata=metadata,
            space=space,
        )
        return await self._runner.run(call, timeout)

    async def delete(
        self,
        key: str,
        *,
        expected_version: int | None = None,
        space: Space | None = None,
        timeout: float | None = None,
    ) -> DeleteResult:
        """Delete one key; an absent key gives `deleted=False`, not an error."""
        call = self._ops.delete(key, expected_version=expected_version, space=space)
        return await self._runner.run(call, timeout)

    def list(
        self,
        prefix: str = "",
        *,
        page_size: int = 100,
        include_values: bool = False,
        max_bytes: int | None = None,
        space: Space | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Entry]:
        """Iterate (`async for`) over the entries under `prefix` in key order, page by page.

        `max_bytes` ends a page early once its values reach that many bytes; `timeout`
        applies to each page.
        """
        call = self._ops.list(
            prefix,
            page_size=page_size,
            include_values=include_values,
            max_bytes=max_bytes,
            space=space,
        )
        return self._runner.pages(call, timeout)

    async def touch(
        self,
        key: str,
        *,
        ttl: float | timedelta | None = None,
        expires_at: datetime | None = None,
        clear_ttl: bool = False,
        space: Space | None = None,
        timeout: float | None = None,
    ) -> Entry:
        """Set, refresh or clear a key's expiry without a new version; returns no value."""
        call = self._ops.touch(
            key, ttl=ttl, expires_at=expires_at, clear_ttl=clear_ttl, space=space
        )
        return await self._runner.run(call, timeout)

    async def delete_prefix(
        self, prefix: str, *, space: Space | None = None, timeout: float | None = None
    ) -> DeletePrefixResult:
        """Delete every key under `prefix` (all of the space for "") in one revision."""
        return await self._runner.run(self._ops.delete_prefix(prefix, space=space), timeout)

    async def quota(self, *, space: Space | None = None, timeout: float | None = None) -> QuotaInfo:
        """Read a space's limits, usage and headroom."""
        return await self._runner.run(self._ops.quota(space=space), timeout)

    async def usage(
        self, top_keys: int = 10, *, space: Space | None = None, timeout: float | None = None
    ) -> UsageInfo:
        """Read a space's usage by content type, expiring entries and largest keys."""
        return await self._runner.run(self._ops.usage(top_keys=top_keys, space=space), timeout)

    async def set_quota(
        self,
        *,
        app_id: str | None = None,
        space: Space | None = None,
        limit_bytes: int | None = None,
        limit_keys: int | None = None,
        max_value_bytes: int | None = None,
        reset: bool = False,
        timeout: float | None = None,
    ) -> QuotaLimits:
        """Admin: override limits of an app (`app_id`) or of a space; returns the overrides.

        None leaves a limit as it is; `reset` first drops every override of the target.
        """
        call = self._ops.set_quota(
            app_id=app_id,
            space=space,
            limit_bytes=limit_bytes,
            limit_keys=limit_keys,
            max_value_bytes=max_value_bytes,
            reset=reset,
        )
        return await self._runner.run(call, timeout)

    async def app_usage(
        self, app_id: str, top_spaces: int = 10, *, timeout: float | None = None
    ) -> AppUsage:
        """Admin: totals over every space of an app, and its largest spaces."""
        return await self._runner.run(self._ops.app_usage(app_id, top_spaces=top_spaces), timeout)

    async def batch_get(
        self,
        keys: Sequence[str],
        *,
        strong: bool = False,
        space: Space | None = None,
        timeout: float | None = None,
    ) -> BatchResult:
        """Read up to 1000 keys: one result per key, in request order (duplicates too);
        a missing key is `found=False` with no error."""
        call = batching.batch_get(self._ops.space(space), keys, strong=strong)
        return await self._runner.run(call, timeout)

    async def batch_set(
        self,
        items: Sequence[SetItem],
        *,
        atomic: bool = False,
        space: Space | None = None,
        timeout: float | None = None,
    ) -> BatchResult:
        """Write up to 1000 entries in one revision. Atomic: all or nothing (the error
        names the failing index); otherwise each result carries its own error."""
        call = batching.batch_set(self._ops.space(space), items, atomic=atomic)
        return await self._runner.run(call, timeout)

    async def batch_delete(
        self,
        items: Sequence[DeleteItem | str],
        *,
        atomic: bool = False,
        space: Space | None = None,
        timeout: float | None = None,
    ) -> BatchResult:
        """Delete up to 1000 keys in one revision (strings delete unconditionally)."""
        call = batching.batch_delete(self._ops.space(space), items, atomic=atomic)
        return await self._runner.run(call, timeout)

    async def execute(
        self,
        operations: Sequence[GetItem | SetItem | DeleteItem],
        *,
        atomic: bool = False,
        space: Space | None = None,
        timeout: float | None = None,
    ) -> BatchResult:
        """Mixed reads and writes in order, in one transaction; reads see the batch's
        own earlier writes."""
        call = batching.execute(self._ops.space(space), operations, atomic=atomic)
        return await self._runner.run(call, timeout)

    async def push(
        self,
        client_id: str,
        mutations: Sequence[Mutation],
        *,
        strategy: Strategy | str = Strategy.DEFAULT,
        space: Space | None = None,
        timeout: float | None = None,
    ) -> PushResult:
        """Push queued mutations in order; ids rise by one. Safe to repeat after a lost
        reply: already applied ids come back DUPLICATE with their first outcome."""
        call = self._sync.push(client_id, mutations, strategy=Strategy(strategy), space=space)
        return await self._runner.run(call, timeout)

    async def pull(
        self,
        cursor: str = "",
        *,
        limit: int = 0,
        client_id: str = "",
        space: Space | None = None,
        timeout: float | None = None,
    ) -> PullResult:
        """One page of keys changed since `cursor` ("" for everything)."""
        call = self._sync.pull(cursor, limit=limit, client_id=client_id, space=space)
        return await self._runner.run(call, timeout)

    async def status(
        self, client_id: str = "", *, space: Space | None = None, timeout: float | None = None
    ) -> SyncStatus:
        """The server's cursor and what it knows of `client_id`."""
        return await self._runner.run(self._sync.status(client_id=client_id, space=space), timeout)

    def conflicts(
        self,
        prefix: str = "",
        *,
        include_resolved: bool = False,
        page_size: int = 100,
        space: Space | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Conflict]:
        """Iterate over conflict records (open ones unless `include_resolved`)."""
        call = self._sync.conflicts(
            prefix=prefix, include_resolved=include_resolved, page_size=page_size, space=space
        )
        return self._runner.pages(call, timeout)

    async def resolve_conflict(
        self,
        conflict_id: str,
        resolution: Literal["client", "server", "value"],
        value: object = None,
        *,
        content_type: str | None = None,
        space: Space | None = None,
        timeout: float | None = None,
    ) -> Entry | None:
        """Settle an open conflict with the client's value, the server's, or `value`;
        returns the new entry (None when the chosen side was a deletion)."""
        call = self._sync.resolve_conflict(
            conflict_id, resolution, value=value, content_type=content_type, space=space
        )
        return await self._runner.run(call, timeout)

    def watch(
        self, cursor: str = "", *, prefix: str = "", space: Space | None = None
    ) -> AsyncIterator[WatchEvent]:
        """Iterate over changes since `cursor` ("" = from now on), then live ones, with
        heartbeats; every event's `cursor` resumes after it. Ends with an error: resume
        with the last event's cursor (SLOW_CONSUMER, UNAVAILABLE at server shutdown)."""
        return self._runner.stream(self._sync.watch(cursor, prefix=prefix, space=space))
