"""Operator work the command line runs: import a space's entries, sweep expiry now.

Both go through the same write path as every call (``Writer``): an import is one write
session, so it takes one new revision, bumps versions, checks quota against its net
change at commit, appends to the change log, updates the caches and wakes watchers. It
is all or nothing: a bad entry or a quota overrun leaves the space as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tmcp_storage_server.core import mutations, validate
from tmcp_storage_server.core.access import Action, authorize
from tmcp_storage_server.core.commands import PutCommand
from tmcp_storage_server.core.expiry import Sweeper
from tmcp_storage_server.core.kv import validate_put
from tmcp_storage_server.core.ports import Clock, Repository
from tmcp_storage_server.core.writes import Writer
from tmcp_storage_server.errors import InvalidArgument, PermissionDenied, StorageError
from tmcp_storage_server.model import Principal, QuotaUsage, Scope, Space


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import wrote."""

    revision: int
    usage: QuotaUsage
    written: int
    skipped_expired: int
    """Entries whose expiry had passed by the time of the import: not written."""
    deleted: int
    """Live keys absent from the import, deleted because it replaced the space."""


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What a sweep of expired entries did."""

    spaces: int
    entries: int


def _at(error: StorageError, index: int) -> StorageError:
    """``error`` marked with the index of the entry that caused it."""
    error.metadata["index"] = str(index)
    return error


class AdminService:
    """Import and purge, for a principal with ``storage:admin`` or ``storage:operator``."""

    def __init__(
        self, *, repository: Repository, writer: Writer, clock: Clock, batch: int = 100
    ) -> None:
        self._writer = writer
        self._clock = clock
        self._sweeper = Sweeper(repository=repository, writer=writer, clock=clock, batch=batch)

    async def import_entries(
        self,
        principal: Principal,
        space: Space,
        commands: Sequence[PutCommand],
        *,
        replace: bool = False,
    ) -> ImportResult:
        """Put every command in one revision (entries already expired are skipped); with
        ``replace``, also delete the live keys the commands do not name. A failing entry
        raises with ``metadata["index"]`` and nothing is written."""
        authorize(principal, validate.space(space), Action.ADMIN)
        now = self._clock.now()
        live: list[tuple[int, PutCommand]] = []
        names: set[str] = set()
        for index, cmd in enumerate(commands):
            try:
                cmd = validate_put(cmd)
            except StorageError as error:
                raise _at(error, index) from None
            if cmd.expected_version is not None or cmd.ttl is not None or cmd.keep_ttl:
                raise _at(InvalidArgument("entry", "an import sets only expires_at"), index)
            if cmd.key in names:
                raise _at(InvalidArgument("key", f"key {cmd.key!r} is imported twice"), index)
            names.add(cmd.key)
            if cmd.expires_at is None or cmd.expires_at > now:
                live.append((index, cmd))
        kept = {cmd.key for _, cmd in live}
        deleted = 0
        async with self._writer.session(space, now, list(kept)) as session:
            for index, cmd in live:
                try:
                    await mutations.put(session, cmd)
                except StorageError as error:
                    raise _at(error, index) from None
            if replace:
                for current in await session.load_prefix(""):
                    if current.key not in kept:
                        mutations.stage_delete(session, current)
                        deleted += 1
        return ImportResult(
            revision=session.revision,
            usage=session.usage,
            written=len(live),
            skipped_expired=len(commands) - len(live),
            deleted=deleted,
        )

    async def purge_expired(self, principal: Principal, space: Space | None) -> PurgeResult:
        """Turn due entries into tombstones (EXPIRE changes) now: in ``space``, or in
        every space that holds any."""
        if space is not None:
            authorize(principal, validate.space(space), Action.ADMIN)
            swept = await self._sweeper.sweep(space)
            return PurgeResult(1 if swept else 0, swept)
        if Scope.OPERATOR not in principal.scopes:
            raise PermissionDenied("purging every space needs scope storage:operator")
        spaces, entries = await self._sweeper.sweep_all()
        return PurgeResult(spaces, entries)
