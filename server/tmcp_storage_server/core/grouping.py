"""Group commit: writes that arrive together share one transaction.

A write is a single-key Put, Delete or Touch, or a whole batch (BatchSet, BatchDelete,
Execute). Every write locks its space's row for the whole transaction and costs two
round trips, a handful of statements and a cache announcement; at the rates a server
takes writes, that fixed cost is most of a single write's CPU. ``WriteGroups`` shares it:
a write that arrives while ``max_flushes`` transactions are in flight waits, and the next
transaction takes every waiting write (up to ``max_group`` writes naming ``max_keys``
keys in all; a larger write goes alone), of any number of spaces. It locks their rows
(in one order, so transactions sharing spaces cannot deadlock), reads every key they
name in the same round trip, and saves everything in one statement with COMMIT.

Inside it each write is applied in arrival order and committed under a revision of its
own, exactly as if the writes had run one after another:

- a write that fails on its own (version mismatch, quota, not found, ...) is discarded
  and answered with its error; the others go on;
- an error that breaks the transaction (database unreachable, a bug) fails every write of
  the group that had not already failed on its own: none of them was stored;
- results are only handed out after COMMIT, so no caller sees a write that could still be
  rolled back.

A space is in at most one transaction at a time: its writes stay in arrival order, and a
space whose lock is slow to come (held by another process's long batch) holds up one
transaction, not every write of this process (``max_flushes`` > 1). Batches go through
the same queue for the same reason: when each batch took its own transaction, concurrent
batches of a space queued on its row lock inside PostgreSQL, holding pooled connections
that batches of free spaces then waited for (measured: 64 BatchSets of 100 in flight over
4 spaces kept the server 37% idle at 72 calls/s).

A caller that gives up (cancelled, deadline) before its write is applied is skipped, even
when its group already waits for a lock or a connection: a write whose caller saw
DEADLINE_EXCEEDED while it queued is never stored later. Once applied, it commits with
its group (a caller giving up during COMMIT cannot know the outcome, as for any RPC).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tmcp_storage_server.core.ports import Clock
from tmcp_storage_server.core.writes import Writer, WriteSession
from tmcp_storage_server.errors import StorageError, Unavailable
from tmcp_storage_server.model import QuotaUsage, Space, record

log = logging.getLogger(__name__)

T = TypeVar("T")

Apply = Callable[[WriteSession], Awaitable[T]]
"""Stages one write on the session (loading what it needs) and returns its result."""


@record
class Committed(Generic[T]):
    """What one write returned, with the revision it committed under and the usage after."""

    value: T
    revision: int
    usage: QuotaUsage


@dataclass(slots=True)
class _Pending:
    space: Space
    keys: Sequence[str]
    apply: Apply[Any]
    done: asyncio.Future[Committed[Any]]
    weight: int
    """Keys (or items) the write names: what it adds to its group's transaction."""


class WriteGroups:
    """Runs single-key writes in groups, one transaction per group."""

    def __init__(
        self,
        *,
        writer: Writer,
        clock: Clock,
        max_group: int = 64,
        max_keys: int = 2000,
        max_flushes: int = 2,
        stalled: float = 0.02,
    ) -> None:
        self._writer = writer
        self._clock = clock
        self._max_group = max_group
        self._max_keys = max_keys
        self._max_flushes = max_flushes
        self._stalled = stalled
        self._pending: list[_Pending] = []
        self._busy: set[Space] = set()
        """Spaces of the transactions in flight."""
        self._flushes: dict[asyncio.Task[None], float] = {}
        """Transactions in flight, with the loop time each started at."""
        self._starting = False
        self._recheck: asyncio.TimerHandle | None = None

    async def write(
        self, space: Space, keys: Sequence[str], apply: Apply[T], *, cost: int = 1
    ) -> Committed[T]:
        """Apply one write to ``space`` (in a group with any that arrive meanwhile).
        ``keys`` are those it will load (read with the lock); ``cost`` is what it counts
        against the space's write rate (its write items; 0 for a read-only Execute)."""
        self._writer.admit(space, cost)  # each write counts, not each group
        done: asyncio.Future[Committed[T]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(space, keys, apply, done, max(1, len(keys))))
        if not self._starting:  # once the loop's turn is over: the writes of this turn
            self._starting = True  # arrive together
            asyncio.get_running_loop().call_soon(self._start)
        return await done

    def _start(self) -> None:
        """Start a transaction if none is in flight; start another beside those in flight
        only once the newest has run for ``stalled`` seconds (it waits for a lock held
        elsewhere, or for a slow database): writes that wait meanwhile make the next
        group larger, and a group's cost is mostly the same whatever its size."""
        self._starting = False
        loop = asyncio.get_running_loop()
        while self._pending and len(self._flushes) < self._max_flushes:
            if self._flushes:
                due = max(self._flushes.values()) + self._stalled
                if loop.time() < due:
                    if self._recheck is None:
                        self._recheck = loop.call_at(due, self._rechecked)
                    return
            group = self._take()
            if not group:
                return
            spaces = {p.space for p in group}
            self._busy |= spaces
            task = asyncio.create_task(self._commit(group), name="write-group")
            self._flushes[task] = loop.time()
            task.add_done_callback(functools.partial(self._finished, spaces=spaces))

    def _rechecked(self) -> None:
        self._recheck = None
        self._start()

    def _take(self) -> list[_Pending]:
        """The waiting writes of spaces not in flight, in arrival order, until the group
        is full (the callers that gave up are dropped)."""
        group: list[_Pending] = []
        kept: list[_Pending] = []
        weight = 0
        full = False
        for pending in self._pending:
            if pending.done.done():
                continue
            if not full and group and weight + pending.weight > self._max_keys:
                full = True  # and stays full: a later write never passes an earlier one
            if full or pending.space in self._busy or len(group) >= self._max_group:
                kept.append(pending)
            else:
                group.append(pending)
                weight += pending.weight
        self._pending = kept
        return group

    def _finished(self, task: asyncio.Task[None], spaces: set[Space]) -> None:
        del self._flushes[task]
        self._busy -= spaces
        if not task.cancelled() and task.exception() is not None:  # a bug: keep it seen
            log.error("write group failed", exc_info=task.exception())
        self._start()

    async def _commit(self, group: list[_Pending]) -> None:
        outcomes: list[Committed[Any] | BaseException] = []
        requests: dict[Space, list[str]] = {}
        for pending in group:
            requests.setdefault(pending.space, []).extend(pending.keys)
        try:
            now = self._clock.now()
            async with self._writer.sessions(requests, now) as sessions:
                for pending in group:
                    if pending.done.done():  # gave up while the group waited (lock, pool)
                        outcomes.append(asyncio.CancelledError())
                        continue
                    session = sessions[pending.space]
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
