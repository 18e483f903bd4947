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

Under load a group waits for more writes before it starts. A transaction costs the
server about 2.4 ms of CPU whatever its size (two PostgreSQL round trips, the Redis
announcement, and hearing both its own NOTIFY and its own invalidation), a Put about
0.5 ms besides. With 64 Puts in flight, starting each transaction the moment the last
one ended gave groups of about 5 writes, because the event loop, busy with gRPC, accepts
calls only a few at a time; the transactions then took half the CPU. So while the latest
groups held ``busy_group`` writes or more on average, the next one waits, until as many
writes wait as the largest of them held, or until no write has arrived for ``quiet``
seconds, or ``linger`` seconds after the previous group started, whichever comes first.
The lone or occasional writer is not held up (its groups are of one or two writes), and
a few steady writers are held up by about ``quiet`` at most, since once they are all
back no more arrive. Measured on this 2-core machine with Puts of 100 B (medians of 3
back-to-back rounds, calls/s before -> after): 64 in flight 1,068 -> 1,440 (0.75 -> 1.05
x the one-upsert floor server); 8 in flight on one connection 785 -> 780 (groups under
4 on average: no waiting); 1 in flight 220 -> 262 (no waiting; the machine's noise).

A caller that gives up (cancelled, deadline) before its write is applied is skipped, even
when its group already waits for a lock or a connection: a write whose caller saw
DEADLINE_EXCEEDED while it queued is never stored later. Once applied, it commits with
its group (a caller giving up during COMMIT cannot know the outcome, as for any RPC).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tmcp_storage_server.core.ports import Clock
from tmcp_storage_server.core.writes import Writer, WriteSession
from tmcp_storage_server.errors import StorageError, Unavailable
from tmcp_storage_server.model import QuotaUsage, Space, record

log = logging.getLogger(__name__)

T = TypeVar("T")

_RECENT_GROUPS = 16
"""Groups whose sizes tell whether writes arrive under load (see ``WriteGroups``)."""

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
    """Runs single-key writes in groups, one transaction per group. ``linger``,
    ``quiet`` and ``busy_group`` say how a group waits for more writes under load (see
    the module's docstring); ``busy_group=inf`` turns waiting off."""

    def __init__(
        self,
        *,
        writer: Writer,
        clock: Clock,
        max_group: int = 64,
        max_keys: int = 2000,
        max_flushes: int = 2,
        stalled: float = 0.02,
        linger: float = 0.015,
        quiet: float = 0.002,
        busy_group: float = 4.0,
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
        self._linger = linger
        self._quiet = quiet
        self._busy_group = busy_group
        self._starting = False
        self._recheck: asyncio.TimerHandle | None = None
        self._recent: deque[int] = deque(maxlen=_RECENT_GROUPS)
        """Sizes (writes) of the latest groups."""
        self._last_start = 0.0
        self._last_arrival = 0.0
        """Loop times the latest group started and the latest write arrived at."""

    async def write(
        self, space: Space, keys: Sequence[str], apply: Apply[T], *, cost: int = 1
    ) -> Committed[T]:
        """Apply one write to ``space`` (in a group with any that arrive meanwhile).
        ``keys`` are those it will load (read with the lock); ``cost`` is what it counts
        against the space's write rate (its write items; 0 for a read-only Execute)."""
        self._writer.admit(space, cost)  # each write counts, not each group
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Committed[T]] = loop.create_future()
        self._pending.append(_Pending(space, keys, apply, done, max(1, len(keys))))
        self._last_arrival = loop.time()
        if not self._starting:  # once the loop's turn is over: the writes of this turn
            self._starting = True  # arrive together
            loop.call_soon(self._start)
        return await done

    def _start(self) -> None:
        """Start a transaction if none is in flight; start another beside those in flight
        only once the newest has run for ``stalled`` seconds (it waits for a lock held
        elsewhere, or for a slow database): writes that wait meanwhile make the next
        group larger, and a group's cost is mostly the same whatever its size."""
        self._starting = False
        loop = asyncio.get_running_loop()
        if not self._flushes and self._pending and self._lingering(loop):
            return
        while self._pending and len(self._flushes) < self._max_flushes:
            if self._flushes:
                due = max(self._flushes.values()) + self._stalled
                if loop.time() < due:
                    self._recheck_at(loop, due)
                    return
            group = self._take()
            if not group:
                return
            spaces = {p.space for p in group}
            self._busy |= spaces
            task = asyncio.create_task(self._commit(group), name="write-group")
            self._last_start = self._flushes[task] = loop.time()
            self._recent.append(len(group))
            task.add_done_callback(functools.partial(self._finished, spaces=spaces))

    def _lingering(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether the next group should wait for more writes (and a check is set)."""
        recent = self._recent
        if not recent or sum(recent) < self._busy_group * len(recent):
            return False  # not under load: start at once
        if len(self._pending) >= max(recent):  # (a group holds at most max_group)
            return False  # as large as groups have lately been
        if sum(p.weight for p in self._pending) >= self._max_keys:
            return False
        now = loop.time()
        until = min(self._last_start + self._linger, self._last_arrival + self._quiet)
        if now >= until:
            return False  # waited long enough, or writes stopped coming
        self._recheck_at(loop, until)
        return True

    def _recheck_at(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Call ``_start`` again at ``when`` (or sooner, if already due sooner)."""
        if self._recheck is not None:
            if self._recheck.when() <= when:
                return
            self._recheck.cancel()
        self._recheck = loop.call_at(when, self._rechecked)

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
