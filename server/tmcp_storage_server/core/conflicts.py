"""Applying one pushed mutation inside a write session, and settling conflicts.

A mutation conflicts when its ``base_version`` is set and differs from the key's stored
version (a tombstone keeps its version; an absent key is 0). Then the strategy decides:

- LAST_WRITE_WINS: apply; record the overwritten value as a resolved conflict.
- MERGE: JSON objects merge (three-way against the retained base version, else an RFC 7396
  merge patch onto the server value) and the merge is applied; recorded as resolved.
  Anything else falls back to LAST_WRITE_WINS.
- MANUAL: keep the server value; record an open conflict; report CONFLICT.
- KEEP_BOTH: apply; the overwritten value stays in an open conflict (the sibling).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from datetime import datetime

from tmcp_storage_server.core import validate
from tmcp_storage_server.core.commands import MutationCommand, MutationReport, PutCommand
from tmcp_storage_server.core.merge import merge_values
from tmcp_storage_server.core.writes import WriteSession, build_put, build_tombstone
from tmcp_storage_server.errors import InvalidArgument
from tmcp_storage_server.model import (
    JSON_CONTENT_TYPE,
    ChangeOp,
    Conflict,
    ConflictSide,
    ConflictState,
    ConflictStrategy,
    Entry,
    MutationOp,
    Outcome,
    PushResult,
)


def new_conflict_id() -> str:
    """Ids sort in creation order: microseconds, then randomness."""
    return f"{time.time_ns() // 1000:014x}{os.urandom(5).hex()}"


def validate_mutation(m: MutationCommand, max_value_bytes: int) -> MutationCommand:
    """A mutation's fields against the limits (a failure is a permanent REJECTED)."""
    if m.decode_error is not None:
        raise m.decode_error
    validate.key(m.key, "mutations.key")
    if m.op is MutationOp.DELETE:
        return m
    if m.op is not MutationOp.SET:
        raise InvalidArgument(
            "mutations.op", "op must be MUTATION_OP_SET or MUTATION_OP_DELETE", reason="INVALID_OP"
        )
    ctype = validate.content_type(m.content_type, is_json=m.is_json)
    validate.value(m.value, ctype, max_bytes=max_value_bytes)
    validate.metadata(m.metadata)
    return replace(m, content_type=ctype)


def _side(entry: Entry | None, now: datetime) -> ConflictSide:
    if entry is None:
        return ConflictSide(None, "", 0)
    if not entry.live_at(now):
        return ConflictSide(None, "", entry.version)
    return ConflictSide(entry.value, entry.content_type, entry.version)


def stage_value(
    session: WriteSession,
    key: str,
    current: Entry | None,
    put: PutCommand | None,
    *,
    client_id: str = "",
    mutation_id: int = 0,
) -> Entry | None:
    """Stage a put (or, with ``put`` None, a deletion); returns the new live entry."""
    if put is None:
        if current is not None and current.live_at(session.now):
            tomb = build_tombstone(
                current, now=session.now, revision=session.next_revision, bump=True
            )
            session.stage(
                tomb, current, ChangeOp.DELETE, client_id=client_id, mutation_id=mutation_id
            )
        return None
    entry = build_put(put, current, now=session.now, revision=session.next_revision)
    session.stage(entry, current, ChangeOp.PUT, client_id=client_id, mutation_id=mutation_id)
    return entry


async def apply_mutation(
    session: WriteSession, m: MutationCommand, strategy: ConflictStrategy, client_id: str
) -> MutationReport:
    """Apply (or hold back) one validated mutation and commit it under its own revision.
    Raises the permanent failures (InvalidArgument, QuotaExceeded) for the caller."""
    now = session.now
    current = await session.load_one(m.key)
    stored_version = current.version if current is not None else 0
    conflicting = m.base_version is not None and m.base_version != stored_version
    live = current if current is not None and current.live_at(now) else None
    put: PutCommand | None = None
    if m.op is MutationOp.SET:
        put = PutCommand(
            key=m.key,
            value=m.value,
            content_type=m.content_type,
            is_json=m.is_json,
            ttl=m.ttl,
            metadata=m.metadata,
        )
    if conflicting and strategy is ConflictStrategy.MANUAL:
        conflict = _record(m, strategy, ConflictState.OPEN, current, client_id, now)
        await session.tx.save_conflict(conflict)
        outcome = Outcome(
            m.mutation_id, PushResult.CONFLICT, m.key, stored_version, conflict.conflict_id
        )
        return MutationReport(PushResult.CONFLICT, outcome, entry=live)
    if conflicting and strategy is ConflictStrategy.MERGE and put is not None and live is not None:
        assert m.base_version is not None
        assert live.value is not None
        base = await session.tx.retained_value(m.key, m.base_version)
        merged = merge_values(base, live.value, m.value) if live.is_json else None
        if merged is not None:
            # The merge may outgrow the per-value limit: then it is REJECTED like any value.
            validate.value(merged, JSON_CONTENT_TYPE, max_bytes=session.limits.max_value_bytes)
            put = replace(put, value=merged, content_type=JSON_CONTENT_TYPE, is_json=True)
    entry = stage_value(
        session, m.key, current, put, client_id=client_id, mutation_id=m.mutation_id
    )
    await session.commit()
    conflict_id = ""
    if conflicting:
        state = (
            ConflictState.OPEN if strategy is ConflictStrategy.KEEP_BOTH else ConflictState.RESOLVED
        )
        conflict = _record(m, strategy, state, current, client_id, now)
        await session.tx.save_conflict(conflict)
        conflict_id = conflict.conflict_id
    version = entry.version if entry is not None else (stored_version + (live is not None))
    outcome = Outcome(m.mutation_id, PushResult.APPLIED, m.key, version, conflict_id)
    return MutationReport(PushResult.APPLIED, outcome, entry=entry)


def _record(
    m: MutationCommand,
    strategy: ConflictStrategy,
    state: ConflictState,
    current: Entry | None,
    client_id: str,
    now: datetime,
) -> Conflict:
    client = ConflictSide(
        m.value if m.op is MutationOp.SET else None,
        m.content_type if m.op is MutationOp.SET else "",
        m.base_version or 0,
    )
    return Conflict(
        conflict_id=new_conflict_id(),
        key=m.key,
        strategy=strategy,
        state=state,
        server=_side(current, now),
        client=client,
        client_id=client_id,
        mutation_id=m.mutation_id,
        base_version=m.base_version or 0,
        created_at=now,
        resolved_at=None if state is ConflictState.OPEN else now,
    )
