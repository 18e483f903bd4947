"""Conflicts as records: list them, and resolve an open one with a new version."""

from __future__ import annotations

from dataclasses import replace

from tmcp_storage_server.core import validate
from tmcp_storage_server.core.access import Action, authorize
from tmcp_storage_server.core.commands import PutCommand, ResolveResult
from tmcp_storage_server.core.conflicts import stage_value
from tmcp_storage_server.core.pagination import PageToken
from tmcp_storage_server.core.ports import Clock, Repository
from tmcp_storage_server.core.writes import Writer
from tmcp_storage_server.errors import FailedPrecondition, InvalidArgument, NotFound
from tmcp_storage_server.model import (
    Conflict,
    ConflictSide,
    ConflictState,
    Principal,
    Resolution,
    Space,
    is_json_content_type,
)


class ConflictService:
    """ListConflicts and ResolveConflict."""

    def __init__(self, *, repository: Repository, writer: Writer, clock: Clock) -> None:
        self._repository = repository
        self._writer = writer
        self._clock = clock

    async def list(
        self,
        principal: Principal,
        space: Space,
        *,
        prefix: str,
        include_resolved: bool,
        page_size: int,
        page_token: str,
    ) -> tuple[list[Conflict], str]:
        """One page of conflicts in creation order, and the next page's token."""
        authorize(principal, validate.space(space), Action.READ)
        validate.prefix(prefix, "key_prefix")
        limit = validate.page_size(page_size)
        token = PageToken.decode(page_token, prefix=prefix) if page_token else None
        found = await self._repository.list_conflicts(
            space,
            prefix=prefix,
            include_resolved=include_resolved,
            after=token.after if token else "",
            limit=limit + 1,
        )
        page = found[:limit]
        more = len(found) > limit
        return page, PageToken(prefix, page[-1].conflict_id, 0).encode() if more else ""

    async def resolve(
        self,
        principal: Principal,
        space: Space,
        conflict_id: str,
        resolution: Resolution,
        value: ConflictSide | None,
        is_json: bool = False,
    ) -> ResolveResult:
        """Apply the chosen side (or ``value``) as a new version; the conflict is then
        resolved. A value of None (on that side) deletes the key."""
        authorize(principal, validate.space(space), Action.WRITE)
        if resolution is Resolution.VALUE and value is None:
            raise InvalidArgument("value", "RESOLUTION_VALUE needs a value")
        async with self._writer.session(space, self._clock.now()) as session:
            conflict = await session.tx.conflict(conflict_id)
            if conflict is None:
                raise NotFound(conflict_id, f"conflict {conflict_id!r} not found")
            if conflict.state is not ConflictState.OPEN:
                raise FailedPrecondition(
                    f"conflict {conflict_id!r} is already resolved", reason="CONFLICT_RESOLVED"
                )
            chosen = {Resolution.CLIENT: conflict.client, Resolution.SERVER: conflict.server}.get(
                resolution, value
            )
            assert chosen is not None
            put = None
            if chosen.value is not None:
                ctype = validate.content_type(chosen.content_type, is_json=is_json)
                validate.value(chosen.value, ctype, max_bytes=session.limits.max_value_bytes)
                put = PutCommand(
                    key=conflict.key,
                    value=chosen.value,
                    content_type=ctype,
                    is_json=is_json or is_json_content_type(ctype),
                )
            current = await session.load_one(conflict.key)
            entry = stage_value(session, conflict.key, current, put)
            await session.commit()
            resolved = replace(conflict, state=ConflictState.RESOLVED, resolved_at=session.now)
            await session.tx.save_conflict(resolved)
        return ResolveResult(session.revision, session.usage, entry)
