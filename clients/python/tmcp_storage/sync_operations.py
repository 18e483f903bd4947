"""The sync operations, defined once as `Call`s for both entry points."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import status_pb2
from tmcp.storage.v1 import sync_pb2, types_pb2

from tmcp_storage import codec
from tmcp_storage.calls import Call, PagedCall, StreamCall
from tmcp_storage.errors import StorageError, build_error, decode_detail
from tmcp_storage.models import Entry, Space
from tmcp_storage.sync_models import (
    Change,
    Conflict,
    Mutation,
    MutationOutcome,
    PullResult,
    PushResult,
    Result,
    Strategy,
    SyncStatus,
    WatchEvent,
)

_STRATEGIES = {
    Strategy.DEFAULT: sync_pb2.CONFLICT_STRATEGY_UNSPECIFIED,
    Strategy.LAST_WRITE_WINS: sync_pb2.CONFLICT_STRATEGY_LAST_WRITE_WINS,
    Strategy.MERGE: sync_pb2.CONFLICT_STRATEGY_MERGE,
    Strategy.MANUAL: sync_pb2.CONFLICT_STRATEGY_MANUAL,
    Strategy.KEEP_BOTH: sync_pb2.CONFLICT_STRATEGY_KEEP_BOTH,
}
_STRATEGY_NAMES = {number: name for name, number in _STRATEGIES.items()}
_RESULTS = {
    sync_pb2.PUSH_RESULT_APPLIED: Result.APPLIED,
    sync_pb2.PUSH_RESULT_DUPLICATE: Result.DUPLICATE,
    sync_pb2.PUSH_RESULT_CONFLICT: Result.CONFLICT,
    sync_pb2.PUSH_RESULT_REJECTED: Result.REJECTED,
}
_OPS = {1: "put", 2: "delete", 3: "expire", 4: "touch"}
_RESOLUTIONS = {
    "client": sync_pb2.RESOLUTION_CLIENT,
    "server": sync_pb2.RESOLUTION_SERVER,
    "value": sync_pb2.RESOLUTION_VALUE,
}


class SyncOperations:
    """Builds the `Call` of each sync operation."""

    def __init__(self, *, space_of: Callable[[Space | None], types_pb2.Space]) -> None:
        self._space_of = space_of

    def push(
        self,
        client_id: str,
        mutations: Sequence[Mutation],
        *,
        strategy: Strategy,
        space: Space | None,
    ) -> Call[sync_pb2.PushResponse, PushResult]:
        """Push queued mutations (idempotent by mutation id)."""
        request = sync_pb2.PushRequest(
            space=self._space_of(space),
            client_id=client_id,
            mutations=[encode_mutation(m) for m in mutations],
            strategy=_STRATEGIES[Strategy(strategy)],
        )
        return Call(service="Sync", method="Push", request=request, parse=_push_result)

    def pull(
        self, cursor: str, *, limit: int, client_id: str, space: Space | None
    ) -> Call[sync_pb2.PullResponse, PullResult]:
        """One page of changes since `cursor`."""
        request = sync_pb2.PullRequest(
            space=self._space_of(space), cursor=cursor, limit=limit, client_id=client_id
        )
        return Call(service="Sync", method="Pull", request=request, parse=_pull_result)

    def status(
        self, *, client_id: str, space: Space | None
    ) -> Call[sync_pb2.GetStatusResponse, SyncStatus]:
        """The server's cursor and what it knows of `client_id`."""
        request = sync_pb2.GetStatusRequest(space=self._space_of(space), client_id=client_id)
        return Call(service="Sync", method="GetStatus", request=request, parse=_status)

    def conflicts(
        self, *, prefix: str, include_resolved: bool, page_size: int, space: Space | None
    ) -> PagedCall[sync_pb2.ListConflictsRequest, sync_pb2.ListConflictsResponse, Conflict]:
        """Conflict records, page after page."""
        request = sync_pb2.ListConflictsRequest(
            space=self._space_of(space),
            key_prefix=prefix,
            include_resolved=include_resolved,
            page_size=page_size,
        )
        return PagedCall(
            service="Sync",
            method="ListConflicts",
            request=request,
            items=lambda response: [decode_conflict(c) for c in response.conflicts],
            next_request=_next_conflicts,
        )

    def resolve_conflict(
        self,
        conflict_id: str,
        resolution: str,
        *,
        value: object,
        content_type: str | None,
        space: Space | None,
    ) -> Call[sync_pb2.ResolveConflictResponse, Entry | None]:
        """Settle an open conflict: `client`, `server`, or `value` (with `value`)."""
        request = sync_pb2.ResolveConflictRequest(
            space=self._space_of(space),
            conflict_id=conflict_id,
            resolution=_RESOLUTIONS[resolution],
            content_type=content_type or "",
        )
        if resolution == "value":
            request.value.CopyFrom(codec.encode_value(value))
        return Call(
            service="Sync",
            method="ResolveConflict",
            request=request,
            parse=_resolved_entry,
        )

    def watch(
        self, cursor: str, *, prefix: str, space: Space | None
    ) -> StreamCall[sync_pb2.WatchResponse, WatchEvent]:
        """Changes since `cursor` ("" = from now on), then live ones, with heartbeats."""
        request = sync_pb2.WatchRequest(
            space=self._space_of(space), cursor=cursor, key_prefix=prefix
        )
        return StreamCall(service="Sync", method="Watch", request=request, parse=watch_event)


def encode_mutation(m: Mutation) -> sync_pb2.Mutation:
    """The wire form of a queued mutation."""
    message = sync_pb2.Mutation(
        mutation_id=m.mutation_id,
        op=sync_pb2.MUTATION_OP_DELETE if m.delete else sync_pb2.MUTATION_OP_SET,
        key=m.key,
        content_type=m.content_type or "",
        base_version=m.base_version,
        metadata=dict(m.metadata) if m.metadata else None,
    )
    if not m.delete:
        message.value.CopyFrom(codec.encode_value(m.value))
    if m.ttl is not None:
        message.ttl.CopyFrom(codec.encode_ttl(m.ttl))
    return message


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def decode_status(status: status_pb2.Status) -> StorageError:
    """The error a `google.rpc.Status` inside a response stands for."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    return build_error(code, status.message, [decode_detail(d) for d in status.details])


def decode_outcome(message: sync_pb2.MutationOutcome) -> MutationOutcome:
    """One mutation outcome."""
    return MutationOutcome(
        mutation_id=message.mutation_id,
        result=_RESULTS.get(message.result, Result.UNSPECIFIED),
        original_result=_RESULTS.get(message.original_result, Result.UNSPECIFIED),
        entry=codec.decode_entry(message.entry) if message.HasField("entry") else None,
        conflict_id=message.conflict_id,
        error=decode_status(message.status) if message.HasField("status") else None,
    )


def _push_result(response: sync_pb2.PushResponse) -> PushResult:
    return PushResult(
        outcomes=[decode_outcome(o) for o in response.outcomes],
        last_mutation_id=response.last_mutation_id,
        revision=response.header.revision,
    )


def decode_change(message: sync_pb2.Change) -> Change:
    """A changed key."""
    return Change(
        key=message.key,
        op=_OPS.get(message.op, "unspecified"),
        revision=message.revision,
        entry=codec.decode_entry(message.entry) if message.HasField("entry") else None,
        client_id=message.client_id,
        mutation_id=message.mutation_id,
        version=message.version,
    )


def _pull_result(response: sync_pb2.PullResponse) -> PullResult:
    return PullResult(
        changes=[decode_change(c) for c in response.changes],
        cursor=response.cursor,
        has_more=response.has_more,
        reset=response.reset,
        last_mutation_id=response.last_mutation_id,
        revision=response.header.revision,
    )


def _when(stamp: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    return codec.decode_timestamp(stamp) if present else None


def _status(response: sync_pb2.GetStatusResponse) -> SyncStatus:
    return SyncStatus(
        revision=response.header.revision,
        cursor=response.cursor,
        last_mutation_id=response.last_mutation_id,
        last_push_time=_when(response.last_push_time, response.HasField("last_push_time")),
        last_pull_time=_when(response.last_pull_time, response.HasField("last_pull_time")),
        open_conflicts=response.open_conflicts,
        history_horizon_revision=response.history_horizon_revision,
        history_horizon_time=_when(
            response.history_horizon_time, response.HasField("history_horizon_time")
        ),
    )


def decode_conflict(message: sync_pb2.Conflict) -> Conflict:
    """A conflict record."""
    server, client = message.server_entry, message.client_entry
    return Conflict(
        conflict_id=message.conflict_id,
        key=message.key,
        strategy=_STRATEGY_NAMES.get(message.strategy, Strategy.DEFAULT),
        open=message.state == sync_pb2.CONFLICT_STATE_OPEN,
        server_value=codec.decode_value(server.value) if server.HasField("value") else None,
        client_value=codec.decode_value(client.value) if client.HasField("value") else None,
        client_id=message.client_id,
        mutation_id=message.mutation_id,
        base_version=message.base_version,
        created_at=_when(message.created_at, message.HasField("created_at")),
        resolved_at=_when(message.resolved_at, message.HasField("resolved_at")),
    )


def _next_conflicts(
    request: sync_pb2.ListConflictsRequest, response: sync_pb2.ListConflictsResponse
) -> sync_pb2.ListConflictsRequest | None:
    if not response.next_page_token:
        return None
    following = sync_pb2.ListConflictsRequest()
    following.CopyFrom(request)
    following.page_token = response.next_page_token
    return following


def watch_event(response: sync_pb2.WatchResponse) -> WatchEvent:
    """One watch message."""
    return WatchEvent(
        changes=[decode_change(c) for c in response.changes],
        cursor=response.cursor,
        heartbeat=response.heartbeat,
    )


def _resolved_entry(response: sync_pb2.ResolveConflictResponse) -> Entry | None:
    return codec.decode_entry(response.entry) if response.HasField("entry") else None
