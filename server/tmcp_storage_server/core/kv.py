"""KeyValue: single-key reads and writes of a space."""

from __future__ import annotations

from dataclasses import replace

from tmcp_storage_server.core import mutations, validate
from tmcp_storage_server.core.access import Action, authorize
from tmcp_storage_server.core.commands import (
    DeleteCommand,
    DeletePrefixResult,
    ListPage,
    PutCommand,
    TouchCommand,
    WriteResult,
)
from tmcp_storage_server.core.grouping import WriteGroups
from tmcp_storage_server.core.pagination import PageToken
from tmcp_storage_server.core.ports import Cache, Clock, Repository
from tmcp_storage_server.core.writes import Writer, WriteSession
from tmcp_storage_server.errors import InvalidArgument, NotFound
from tmcp_storage_server.model import ChangeOp, Entry, Principal, Space


def validate_put(cmd: PutCommand) -> PutCommand:
    """Check a Put's fields against the hard limits; returns it with its content type
    normalized. (The space's own per-value limit is checked inside the transaction.)"""
    validate.key(cmd.key)
    ctype = validate.content_type(cmd.content_type, is_json=cmd.is_json)
    validate.value(cmd.value, ctype, max_bytes=validate.MAX_VALUE_BYTES)
    validate.metadata(cmd.metadata)
    options = (cmd.ttl is not None) + (cmd.expires_at is not None) + cmd.keep_ttl
    if options > 1:
        raise InvalidArgument(
            "ttl", "set at most one of ttl, expires_at and keep_ttl", reason="INVALID_TTL"
        )
    if cmd.expected_version is not None and cmd.expected_version < 0:
        raise InvalidArgument("expected_version", "expected_version must not be negative")
    return cmd if ctype == cmd.content_type else cmd.with_content_type(ctype)


class KeyValueService:
    """Get, Put, Delete, List, Touch and DeletePrefix."""

    def __init__(
        self,
        *,
        repository: Repository,
        writer: Writer,
        clock: Clock,
        cache: Cache | None = None,
        groups: WriteGroups | None = None,
    ) -> None:
        self._repository = repository
        self._writer = writer
        self._clock = clock
        self._cache = cache
        # Writes that arrive together share one transaction (with batches, when the
        # server passes the BatchService the same groups).
        self._groups = groups or WriteGroups(writer=writer, clock=clock)

    async def get(
        self, principal: Principal, space: Space, key: str, *, strong: bool = False
    ) -> tuple[Entry, int]:
        """The live entry of ``key`` and the revision it was read at; NotFound otherwise.
        ``strong`` reads the database; otherwise the cache may answer."""
        authorize(principal, validate.space(space), Action.READ)
        validate.key(key)
        # Most reads are L1 hits: answered here, without a coroutine or a closure.
        hit = None if strong or self._cache is None else self._cache.cached(space, key)
        entry, revision = hit if hit is not None else await self._read(space, key, strong)
        if entry is None:
            raise NotFound(key)
        return entry, revision

    async def _read(self, space: Space, key: str, strong: bool) -> tuple[Entry | None, int]:
        """What this process's memory could not answer: the cache's other levels, or
        (``strong``, or no cache) the database."""

        async def load() -> tuple[Entry | None, int]:
            return await self._repository.get(space, key, self._clock.now())

        if strong or self._cache is None:
            return await load()
        return await self._cache.get(space, key, load)

    async def put(self, principal: Principal, space: Space, cmd: PutCommand) -> WriteResult:
        """Create or replace one key."""
        authorize(principal, validate.space(space), Action.WRITE)
        cmd = validate_put(cmd)

        async def put(session: WriteSession) -> Entry:
            return await mutations.put(session, cmd)

        done = await self._groups.write(space, [cmd.key], put)
        return WriteResult(revision=done.revision, usage=done.usage, entry=done.value)

    async def delete(self, principal: Principal, space: Space, cmd: DeleteCommand) -> WriteResult:
        """Delete one key; an absent key is ``deleted = False``, not an error."""
        authorize(principal, validate.space(space), Action.WRITE)
        validate.key(cmd.key)

        async def delete(session: WriteSession) -> bool:
            return await mutations.delete(session, cmd)

        done = await self._groups.write(space, [cmd.key], delete)
        return WriteResult(revision=done.revision, usage=done.usage, deleted=done.value)

    async def touch(self, principal: Principal, space: Space, cmd: TouchCommand) -> WriteResult:
        """Set, refresh or clear the expiry of a live key, keeping its version."""
        authorize(principal, validate.space(space), Action.WRITE)
        validate.key(cmd.key)
        if (cmd.ttl is not None) + (cmd.expires_at is not None) + cmd.clear_ttl != 1:
            raise InvalidArgument(
                "ttl", "set exactly one of ttl, expires_at and clear_ttl", reason="INVALID_TTL"
            )

        async def touch(session: WriteSession) -> Entry:
            current = await session.load_one(cmd.key)
            if current is None or not current.live_at(session.now):
                raise NotFound(cmd.key)
            expires_at = validate.expiry(session.now, ttl=cmd.ttl, expires_at=cmd.expires_at)
            entry = replace(current, expires_at=expires_at, mod_revision=session.next_revision)
            session.stage(entry, current, ChangeOp.TOUCH)
            return entry

        done = await self._groups.write(space, [cmd.key], touch)
        return WriteResult(revision=done.revision, usage=done.usage, entry=done.value)

    async def delete_prefix(
        self, principal: Principal, space: Space, prefix: str
    ) -> DeletePrefixResult:
        """Delete every live key under ``prefix`` in one revision."""
        authorize(principal, validate.space(space), Action.WRITE)
        validate.prefix(prefix)
        async with self._writer.session(space, self._clock.now()) as session:
            doomed = await session.load_prefix(prefix)
            for current in doomed:
                mutations.stage_delete(session, current)
        return DeletePrefixResult(session.revision, session.usage, len(doomed))

    async def list(
        self,
        principal: Principal,
        space: Space,
        *,
        prefix: str,
        page_size: int,
        page_token: str,
        include_values: bool,
        max_bytes: int = 0,
    ) -> ListPage:
        """One page of live keys in key order, pinned to the first page's revision:
        keys created after it are left out, and no key is listed twice."""
        authorize(principal, validate.space(space), Action.READ)
        validate.prefix(prefix)
        limit = validate.page_size(page_size)
        if max_bytes < 0:
            raise InvalidArgument("max_bytes", "max_bytes must not be negative")
        token = PageToken.decode(page_token, prefix=prefix) if page_token else None
        entries, revision = await self._repository.list_entries(
            space,
            prefix=prefix,
            start_after=token.after if token else None,
            limit=limit + 1,
            include_values=include_values,
            max_create_revision=token.revision if token else None,
            now=self._clock.now(),
        )
        pinned = token.revision if token else revision
        page = _within_budget(entries[:limit], max_bytes) if include_values else entries[:limit]
        more = len(entries) > len(page)
        next_token = PageToken(prefix, page[-1].key, pinned).encode() if more and page else ""
        return ListPage(revision=revision, entries=page, next_page_token=next_token)


def _within_budget(entries: list[Entry], max_bytes: int) -> list[Entry]:
    """The leading entries whose values fit ``max_bytes`` (always at least one)."""
    if max_bytes <= 0:
        return entries
    total = 0
    for index, entry in enumerate(entries):
        total += entry.size
        if total > max_bytes and index > 0:
            return entries[:index]
    return entries
