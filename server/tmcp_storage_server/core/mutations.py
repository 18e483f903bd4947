"""What one Get, Put or Delete does inside a write session; shared by KeyValue and Batch."""

from __future__ import annotations

from tmcp_storage_server.core import validate
from tmcp_storage_server.core.commands import DeleteCommand, PutCommand
from tmcp_storage_server.core.writes import (
    WriteSession,
    build_put,
    build_tombstone,
    check_version,
)
from tmcp_storage_server.model import ChangeOp, Entry


def live(session: WriteSession, current: Entry | None) -> Entry | None:
    """``current`` (as loaded) if it is live."""
    return current if current is not None and current.live_at(session.now) else None


async def read(session: WriteSession, key: str) -> Entry | None:
    """The live entry of ``key`` as this session sees it (its own writes included)."""
    return live(session, await session.load_one(key))


def put_loaded(
    session: WriteSession, cmd: PutCommand, current: Entry | None, *, check_quota: bool = False
) -> Entry:
    """Stage a validated Put (see ``kv.validate_put``, which parsed a JSON value
    already) over ``current``, the key's entry as loaded; the new entry."""
    validate.value_size(cmd.value, max_bytes=session.limits.max_value_bytes)
    check_version(cmd.key, current, cmd.expected_version, session.now)
    entry = build_put(cmd, current, now=session.now, revision=session.next_revision)
    session.stage(entry, current, ChangeOp.PUT, check_quota=check_quota)
    return entry


async def put(session: WriteSession, cmd: PutCommand, *, check_quota: bool = False) -> Entry:
    """``put_loaded`` over the key's entry, loaded first."""
    return put_loaded(session, cmd, await session.load_one(cmd.key), check_quota=check_quota)


def delete_loaded(session: WriteSession, cmd: DeleteCommand, current: Entry | None) -> bool:
    """Stage a Delete over ``current``, the key's entry as loaded; whether a live key was
    deleted (absent is not an error)."""
    check_version(cmd.key, current, cmd.expected_version, session.now)
    existing = live(session, current)
    if existing is None:
        return False
    stage_delete(session, existing)
    return True


async def delete(session: WriteSession, cmd: DeleteCommand) -> bool:
    """``delete_loaded`` over the key's entry, loaded first."""
    return delete_loaded(session, cmd, await session.load_one(cmd.key))


def stage_delete(session: WriteSession, current: Entry) -> None:
    """Stage the deletion of the live entry ``current``: a tombstone under a new version."""
    tomb = build_tombstone(current, now=session.now, revision=session.next_revision, bump=True)
    session.stage(tomb, current, ChangeOp.DELETE)
