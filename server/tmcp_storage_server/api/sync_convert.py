"""Sync messages to domain values and back. Protobuf types stop here."""

from __future__ import annotations

import hashlib
import json

from tmcp.storage.v1 import sync_pb2, types_pb2

from tmcp_storage_server.api import convert
from tmcp_storage_server.api.errors import to_status
from tmcp_storage_server.core.commands import MutationCommand, MutationReport
from tmcp_storage_server.errors import InvalidArgument
from tmcp_storage_server.model import (
    ChangedKey,
    Conflict,
    ConflictSide,
    ConflictStrategy,
    MutationOp,
    PushResult,
    is_json_content_type,
)


def strategy(value: int) -> ConflictStrategy:
    """A conflict strategy from the wire."""
    if value not in ConflictStrategy._value2member_map_:
        raise InvalidArgument("strategy", "unknown conflict strategy", reason="INVALID_STRATEGY")
    return ConflictStrategy(value)


def mutation(message: sync_pb2.Mutation) -> MutationCommand:
    """A pushed mutation. A malformed value or op is left for the core to reject as
    this mutation's outcome (REJECTED), not the whole push's."""
    value, is_json, error = b"", False, None
    if message.op == sync_pb2.MUTATION_OP_SET:
        try:
            value, is_json = convert.value_in(message.value, "mutations.value")
        except InvalidArgument as exc:
            error = exc
    known = message.op in (sync_pb2.MUTATION_OP_SET, sync_pb2.MUTATION_OP_DELETE)
    return MutationCommand(
        mutation_id=message.mutation_id,
        op=MutationOp(message.op) if known else MutationOp.UNSPECIFIED,
        key=message.key,
        value=value,
        content_type=message.content_type,
        is_json=is_json,
        ttl=convert.ttl(message.ttl, message.HasField("ttl")),
        base_version=message.base_version if message.HasField("base_version") else None,
        metadata=dict(message.metadata),
        decode_error=error,
    )


def outcome(report: MutationReport) -> sync_pb2.MutationOutcome:
    """The wire form of one mutation's outcome."""
    message = sync_pb2.MutationOutcome(
        mutation_id=report.outcome.mutation_id,
        result=int(report.result),  # type: ignore[arg-type]
        conflict_id=report.outcome.conflict_id,
    )
    if report.result is PushResult.DUPLICATE and report.outcome.result is not PushResult.DUPLICATE:
        message.original_result = int(report.outcome.result)  # type: ignore[assignment]
    if report.entry is not None:
        # CONFLICT: the value the server kept, so the client can show and adopt it.
        with_value = report.result is PushResult.CONFLICT
        convert.fill_entry(message.entry, report.entry, with_value=with_value)
    if report.error is not None:
        message.status.CopyFrom(to_status(report.error))
    return message


def change(value: ChangedKey) -> sync_pb2.Change:
    """The wire form of a changed key (with its value when live)."""
    message = sync_pb2.Change(
        key=value.key,
        op=int(value.op),  # type: ignore[arg-type]
        revision=value.revision,
        client_id=value.client_id,
        mutation_id=value.mutation_id,
        version=value.version,
    )
    if value.entry is not None:
        convert.fill_entry(message.entry, value.entry)
    return message


def _side_entry(key: str, side: ConflictSide) -> types_pb2.Entry:
    message = types_pb2.Entry(key=key, content_type=side.content_type, version=side.version)
    if side.value is not None:
        message.size = len(side.value)
        message.checksum = "sha256:" + hashlib.sha256(side.value).hexdigest()
        if is_json_content_type(side.content_type):
            try:
                message.value.json.CopyFrom(convert._value_pb(json.loads(side.value)))
            except ValueError:
                message.value.raw = side.value
        else:
            message.value.raw = side.value
    return message


def conflict(value: Conflict) -> sync_pb2.Conflict:
    """The wire form of a conflict record (both sides with their values)."""
    message = sync_pb2.Conflict(
        conflict_id=value.conflict_id,
        key=value.key,
        strategy=int(value.strategy),  # type: ignore[arg-type]
        state=int(value.state),  # type: ignore[arg-type]
        server_entry=_side_entry(value.key, value.server),
        client_entry=_side_entry(value.key, value.client),
        client_id=value.client_id,
        mutation_id=value.mutation_id,
        base_version=value.base_version,
        created_at=convert.timestamp(value.created_at),
    )
    if value.resolved_at is not None:
        convert.set_timestamp(message.resolved_at, value.resolved_at)
    return message
