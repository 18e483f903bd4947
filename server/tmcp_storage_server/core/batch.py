"""Batch: many keys of one space in one call, one revision per call.

One engine serves all four RPCs: BatchSet and BatchDelete are Executes of one kind of
operation. Atomic batches fail whole, naming the failing item's index; non-atomic ones
answer each item with its own outcome and commit the items that succeed together.
"""

from __future__ import annotations

from collections.abc import Sequence

from tmcp_storage_server.core import mutations, validate
from tmcp_storage_server.core.access import Action, authorize
from tmcp_storage_server.core.commands import (
    BadOperation,
    BatchResult,
    DeleteCommand,
    GetCommand,
    ItemResult,
    Operation,
    PutCommand,
)
from tmcp_storage_server.core.grouping import WriteGroups
from tmcp_storage_server.core.kv import validate_put
from tmcp_storage_server.core.ports import Cache, Clock, Repository
from tmcp_storage_server.core.writes import Writer, WriteSession
from tmcp_storage_server.errors import (
    InvalidArgument,
    StorageError,
    TooManyOperations,
)
from tmcp_storage_server.model import Entry, Principal, Space

MAX_ITEMS = 1000
MAX_BATCH_BYTES = 16 * 1024 * 1024


def _at(error: StorageError, field: str, index: int) -> StorageError:
    """``error`` marked with the index of the item that caused it."""
    error.metadata["index"] = str(index)
    if isinstance(error, InvalidArgument):
        error.field = f"{field}[{index}].{error.field}"
        error.metadata["field"] = error.field
    return error


def _check_size(field: str, operations: Sequence[Operation]) -> None:
    if len(operations) > MAX_ITEMS:
        raise TooManyOperations(field, len(operations), MAX_ITEMS)
    size = sum(
        len(op.key) + len(op.value) if isinstance(op, PutCommand) else len(op.key)
        for op in operations
    )
    if size > MAX_BATCH_BYTES:
        raise InvalidArgument(
            field, f"batch is {size} bytes; at most {MAX_BATCH_BYTES}", reason="BATCH_TOO_LARGE"
        )


def _prepare(op: Operation) -> Operation:
    """Validate one operation before any database work."""
    if isinstance(op, BadOperation):
        raise op.error
    if isinstance(op, PutCommand):
        return validate_put(op)
    validate.key(op.key)
    if isinstance(op, DeleteCommand) and (op.expected_version or 0) < 0:
        raise InvalidArgument("expected_version", "expected_version must not be negative")
    return op


class BatchService:
    """BatchGet, BatchSet, BatchDelete and Execute."""

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
        # A batch is one write of a group: one revision of its own in a shared transaction.
        self._groups = groups or WriteGroups(writer=writer, clock=clock)

    async def batch_get(
        self, principal: Principal, space: Space, keys: Sequence[str], *, strong: bool = False
    ) -> BatchResult:
        """One result per key, in request order; duplicates answered twice. ``strong``
        reads the database; otherwise the cache may answer."""
        authorize(principal, validate.space(space), Action.READ)
        _check_size("keys", [GetCommand(k) for k in keys])
        errors: dict[int, StorageError] = {}
        for index, key in enumerate(keys):
            try:
                validate.key(key)
            except InvalidArgument as error:
                errors[index] = _at(error, "keys", index)
        wanted = list(dict.fromkeys(k for i, k in enumerate(keys) if i not in errors))

        async def load(missed: Sequence[str]) -> tuple[dict[str, Entry], int]:
            return await self._repository.get_many(space, missed, self._clock.now())

        if strong or self._cache is None:
            found, revision = await load(wanted)
        else:
            found, revision = await self._cache.get_many(space, wanted, load)
        results = [
            ItemResult(key, error=errors[i])
            if i in errors
            else ItemResult(key, entry=found.get(key), found=key in found)
            for i, key in enumerate(keys)
        ]
        return BatchResult(revision, results)

    async def batch_set(
        self,
        principal: Principal,
        space: Space,
        items: Sequence[PutCommand | BadOperation],
        atomic: bool,
    ) -> BatchResult:
        """Write many entries."""
        return await self.execute(
            principal, space, items, atomic, field="items", unique_keys=atomic
        )

    async def batch_delete(
        self,
        principal: Principal,
        space: Space,
        items: Sequence[DeleteCommand | BadOperation],
        atomic: bool,
    ) -> BatchResult:
        """Delete many keys."""
        return await self.execute(
            principal, space, items, atomic, field="items", unique_keys=atomic
        )

    async def execute(
        self,
        principal: Principal,
        space: Space,
        operations: Sequence[Operation],
        atomic: bool,
        *,
        field: str = "operations",
        unique_keys: bool = False,
    ) -> BatchResult:
        """Run operations in order in one transaction; reads see earlier writes, and a
        key written twice ends as its last write. ``unique_keys`` (atomic BatchSet and
        BatchDelete) rejects a key written twice instead."""
        validate.space(space)
        if any(isinstance(op, GetCommand) for op in operations):
            authorize(principal, space, Action.READ)
        if any(isinstance(op, PutCommand | DeleteCommand) for op in operations):
            authorize(principal, space, Action.WRITE)
        _check_size(field, operations)
        prepared: list[Operation | StorageError] = []
        for index, op in enumerate(operations):
            try:
                prepared.append(_prepare(op))
            except StorageError as error:
                if atomic:
                    raise _at(error, field, index) from None
                prepared.append(_at(error, field, index))
        if unique_keys:
            _reject_duplicate_writes(field, operations)
        keys = list(dict.fromkeys(p.key for p in prepared if not isinstance(p, StorageError)))

        async def run(session: WriteSession) -> list[ItemResult]:
            await session.load(keys)
            results: list[ItemResult] = []
            for index, item in enumerate(prepared):
                if isinstance(item, StorageError):
                    results.append(ItemResult(operations[index].key, error=item))
                    continue
                try:
                    results.append(_apply(session, item, check_quota=not atomic))
                except StorageError as error:
                    if atomic:
                        raise _at(error, field, index) from None
                    results.append(ItemResult(item.key, error=_at(error, field, index)))
            return results

        # The rate limit counts write items (a read-only Execute is free).
        writes = sum(not isinstance(op, GetCommand) for op in operations)
        done = await self._groups.write(space, keys, run, cost=writes)
        return BatchResult(done.revision, done.value, done.usage)


def _reject_duplicate_writes(field: str, operations: Sequence[Operation]) -> None:
    seen: set[str] = set()
    for index, op in enumerate(operations):
        if not isinstance(op, PutCommand | DeleteCommand):
            continue
        if op.key in seen:
            raise _at(
                InvalidArgument(
                    "key",
                    f"key {op.key!r} is written twice in an atomic batch",
                    reason="DUPLICATE_KEY",
                ),
                field,
                index,
            )
        seen.add(op.key)


def _apply(session: WriteSession, op: Operation, *, check_quota: bool) -> ItemResult:
    """One operation of a batch whose keys the session has all loaded."""
    current = session.loaded(op.key)
    if isinstance(op, GetCommand):
        entry = mutations.live(session, current)
        return ItemResult(op.key, entry=entry, found=entry is not None)
    if isinstance(op, PutCommand):
        entry = mutations.put_loaded(session, op, current, check_quota=check_quota)
        return ItemResult(op.key, entry=entry)
    assert isinstance(op, DeleteCommand), "bad operations fail in _prepare"
    return ItemResult(op.key, deleted=mutations.delete_loaded(session, op, current))
