"""Group commit: single-key writes to one space that arrive together share a transaction.

Every write locks its space's row for the whole transaction, so concurrent writers of one
space queue on that lock, each paying its own round trips, statements and cache and feed
notifications while the others wait. ``WriteGroups`` runs them as a group instead: the
first write of a space starts a runner; writes that arrive while its transaction is in
flight wait, and the runner takes all of them into the next transaction (up to
``max_group``). Inside it each write is applied in arrival order and committed under a
revision of its own, exactly as if the writes had run one after another:

- a write that fails on its own (version mismatch, quota, not found, ...) is discarded
  and answered with its error; the others go on;
- an error that breaks the transaction (database unreachable, a bug) fails every write of
  the group that had not already failed on its own: none of them was stored;
- results are only handed out after COMMIT, so no caller sees a write that could still be
  rolled back.

A caller that gives up (cancelled, deadline) before its write is applied is skipped, even
when its group already waits for the space's lock or a connection: a write whose caller
saw DEADLINE_EXCEEDED while it queued is never stored later. Once applied, it commits with
its group (a caller giving up during COMMIT cannot know the outcome, as for any RPC).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tmcp_storage_server.core.ports import Clock
from tmcp_storage_server.core.writes import Writer, WriteSession
from tmcp_storage_server.errors import StorageError, Unavailable
from tmcp_storage_server.model import QuotaUsage, Space

T = TypeVar("T")

Apply = Callable[[WriteSession], Awaitable[T]]
"""Stages one write on the session (loading what it needs) and returns its result."""


@dataclass(frozen=True, slots=True)
class Committed(Generic[T]):
    """What one write returned, with the revision it committed under and the usage after."""

    value: T
    revision: int
    usage: QuotaUsage


@dataclass(slots=True)
class _Pending:
    keys: Sequence[str]
    apply: Apply[Any]
    done: asyncio.Future[Committed[Any]]


class WriteGroups:
    """Runs single-key writes of a space in groups, one transaction per group."""

    def __init__(self, *, writer: Writer, clock: Clock, max_group: int = 64) -> None:
        self._writer = writer
        self._clock = clock
        self._max_group = max_group
        self._pending: dict[Space, list[_Pending]] = {}
        self._runners: dict[Space, asyncio.Task[None]] = {}

    async def write(self, space: Space, keys: Sequence[str], apply: Apply[T]) -> Committed[T]:
        """Apply one write to ``space`` (in a group with any that arrive meanwhile)."""
        self._writer.admit(space, 1)  # each write counts, not each group
        done: asyncio.Future[Committed[T]] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(space, []).append(_Pending(keys, apply, done))
        if space not in self._runners:
            self._runners[space] = asyncio.create_task(self._run(space), name="write-group")
        return await done

    async def _run(self, space: Space) -> None:
        try:
            while queue := self._pending.get(space):
                group = [p for p in queue[: self._max_group] if not p.done.done()]
                del queue[: self._max_group]
                if group:
                    await self._commit(space, group)
        finally:
            del self._runners[space]
            if not self._pending.get(space):
                self._pending.pop(space, None)
            else:  # a write arrived as this runner was stopping on an error
                self._runners[space] = asyncio.create_task(self._run(space), name="write-group")

    async def _commit(self, space: Space, group: list[_Pending]) -> None:
        outcomes: list[Committed[Any] | BaseException] = []
        keys = list(dict.fromkeys(k for p in group for k in p.keys))
        try:
            now = self._clock.now()
            async with self._writer.session(space, now, keys, cost=0) as session:
                for pending in group:
                    if pending.done.done():  # gave up while the group waited (lock, pool)
                        outcomes.append(asyncio.CancelledError())
                        continue
                    try:
                        value = await pending.apply(session)
                        await session.commit(defer=True)
                    except StorageError as exc:
                        if isinstance(exc, Unavailable):
                            raise
                        session.discard()
                        outcomes.append(exc)
                    else:
                        outcomes.append(Committed(value, session.revision, session.usage))
        except BaseException as exc:  # the transaction is gone: nothing of it was stored
            # A write's own error stands; every other write learns it was not stored.
            for index, pending in enumerate(group):
                own = outcomes[index] if index < len(outcomes) else None
                _settle(pending.done, own if isinstance(own, StorageError) else exc)
            if not isinstance(exc, Exception):
                raise
            return
        for pending, outcome in zip(group, outcomes, strict=True):
            _settle(pending.done, outcome)


def _settle(done: asyncio.Future[Committed[Any]], outcome: Committed[Any] | BaseException) -> None:
    if done.done():  # the caller gave up
        return
    if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
        done.cancel()  # the runner itself was cancelled (shutdown)
    elif isinstance(outcome, BaseException):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)
