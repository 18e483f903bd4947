"""Sync servicer: convert, call core, convert. Watch and Stream live in ``streams``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from tmcp.storage.v1 import sync_pb2, sync_pb2_grpc

from tmcp_storage_server.api import convert, sync_convert
from tmcp_storage_server.api.auth import TokenVerifier
from tmcp_storage_server.api.handler import unary
from tmcp_storage_server.api.streams import StreamHandlers
from tmcp_storage_server.core.conflict_records import ConflictService
from tmcp_storage_server.core.sync import SyncService
from tmcp_storage_server.core.watch import WatchService
from tmcp_storage_server.errors import InvalidArgument
from tmcp_storage_server.model import ConflictSide, Principal, Resolution


class SyncServicer(sync_pb2_grpc.SyncServicer):
    """``tmcp.storage.v1.Sync``."""

    def __init__(
        self,
        *,
        service: SyncService,
        conflicts: ConflictService,
        watcher: WatchService,
        auth: TokenVerifier,
    ) -> None:
        self.service = service
        self.conflicts = conflicts
        self.streams = StreamHandlers(sync=service, watcher=watcher, auth=auth)
        self.auth = auth

    @unary
    async def Push(
        self, request: sync_pb2.PushRequest, principal: Principal
    ) -> sync_pb2.PushResponse:
        report = await self.service.push(
            principal,
            convert.space(request.space),
            request.client_id,
            [sync_convert.mutation(m) for m in request.mutations],
            sync_convert.strategy(request.strategy),
        )
        return sync_pb2.PushResponse(
            header=convert.header(report.revision),
            outcomes=[sync_convert.outcome(r) for r in report.reports],
            last_mutation_id=report.last_mutation_id,
            usage=convert.usage(report.usage),
        )

    @unary
    async def Pull(
        self, request: sync_pb2.PullRequest, principal: Principal
    ) -> sync_pb2.PullResponse:
        page = await self.service.pull(
            principal,
            convert.space(request.space),
            request.cursor,
            request.limit,
            request.client_id,
        )
        return sync_pb2.PullResponse(
            header=convert.header(page.revision),
            changes=[sync_convert.change(c) for c in page.changes],
            cursor=page.cursor,
            has_more=page.has_more,
            reset=page.reset,
            last_mutation_id=page.last_mutation_id,
        )

    @unary
    async def GetStatus(
        self, request: sync_pb2.GetStatusRequest, principal: Principal
    ) -> sync_pb2.GetStatusResponse:
        status = await self.service.status(
            principal, convert.space(request.space), request.client_id
        )
        response = sync_pb2.GetStatusResponse(
            header=convert.header(status.revision),
            cursor=status.cursor,
            open_conflicts=status.open_conflicts,
            history_horizon_revision=status.horizon_revision,
        )
        client = status.client
        if client is not None:
            response.last_mutation_id = client.last_mutation_id
            if client.last_push_at is not None:
                convert.set_timestamp(response.last_push_time, client.last_push_at)
            if client.last_pull_at is not None:
                convert.set_timestamp(response.last_pull_time, client.last_pull_at)
        if status.horizon_time is not None:
            convert.set_timestamp(response.history_horizon_time, status.horizon_time)
        return response

    @unary
    async def ListConflicts(
        self, request: sync_pb2.ListConflictsRequest, principal: Principal
    ) -> sync_pb2.ListConflictsResponse:
        space = convert.space(request.space)
        conflicts, token = await self.conflicts.list(
            principal,
            space,
            prefix=request.key_prefix,
            include_resolved=request.include_resolved,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        revision = (await self.service.status(principal, space, "")).revision
        return sync_pb2.ListConflictsResponse(
            header=convert.header(revision),
            conflicts=[sync_convert.conflict(c) for c in conflicts],
            next_page_token=token,
        )

    @unary
    async def ResolveConflict(
        self, request: sync_pb2.ResolveConflictRequest, principal: Principal
    ) -> sync_pb2.ResolveConflictResponse:
        if request.resolution not in (1, 2, 3):
            raise InvalidArgument("resolution", "resolution must be CLIENT, SERVER or VALUE")
        value, is_json = None, False
        if request.resolution == sync_pb2.RESOLUTION_VALUE:
            data, is_json = convert.value_in(request.value)
            value = ConflictSide(data, request.content_type, 0)
        result = await self.conflicts.resolve(
            principal,
            convert.space(request.space),
            request.conflict_id,
            Resolution(request.resolution),
            value,
            is_json,
        )
        response = sync_pb2.ResolveConflictResponse(
            header=convert.header(result.revision), usage=convert.usage(result.usage)
        )
        if result.entry is not None:
            convert.fill_entry(response.entry, result.entry, with_value=False)
        return response

    async def Stream(  # type: ignore[override]
        self,
        request_iterator: AsyncIterator[sync_pb2.StreamRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        await self.streams.stream(request_iterator, context)

    async def Watch(  # type: ignore[override]
        self, request: sync_pb2.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        await self.streams.watch(request, context)
