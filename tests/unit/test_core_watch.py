"""WatchService on fakes: reads from the log at the subscriber's pace, so a lost wake-up
delays a change but never drops it, and every message is bounded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
from tmcp_storage_server.core.commands import PutCommand
from tmcp_storage_server.core.cursor import Cursor
from tmcp_storage_server.core.kv import KeyValueService
from tmcp_storage_server.core.watch import WatchEvent, WatchService, WatchSettings
from tmcp_storage_server.core.writes import Writer
from tmcp_storage_server.errors import Unavailable
from tmcp_storage_server.model import QuotaLimits, Space

from tests.unit.fakes import ALICE, SPACE, FakeClock, FakeRepository

LIMITS = QuotaLimits(10**7, 10_000, 2**20)


class _DeafSignal:
    async def wait(self, seconds: float) -> bool:
        await asyncio.sleep(seconds)
        return False


class DeafFeed:
    """A change feed whose wake-ups are all lost."""

    @contextlib.contextmanager
    def subscribe(self, space: Space) -> Iterator[_DeafSignal]:
        yield _DeafSignal()

    def notify(self, space: Space) -> None:
        pass

    def wake_all(self) -> None:
        pass


def _setup(settings: WatchSettings) -> tuple[KeyValueService, WatchService]:
    repository = FakeRepository()
    clock = FakeClock()
    writer = Writer(repository=repository, defaults=LIMITS)  # type: ignore[arg-type]
    kv = KeyValueService(repository=repository, writer=writer, clock=clock)  # type: ignore[arg-type]
    watcher = WatchService(
        repository=repository,  # type: ignore[arg-type]
        feed=DeafFeed(),
        clock=clock,
        settings=settings,
    )
    return kv, watcher


async def _next(events: AsyncIterator[WatchEvent]) -> WatchEvent:
    return await asyncio.wait_for(anext(events), timeout=2.0)


async def test_lost_wakeups_are_covered_by_the_poll() -> None:
    kv, watcher = _setup(WatchSettings(heartbeat=60, poll=0.05))
    events = watcher.watch(ALICE, SPACE, Cursor.start().encode(), "")
    await kv.put(ALICE, SPACE, PutCommand("a", b"1"))
    event = await _next(events)
    assert [c.key for c in event.changes] == ["a"]
    await kv.put(ALICE, SPACE, PutCommand("b", b"1"))  # nobody is woken
    event = await _next(events)
    assert [c.key for c in event.changes] == ["b"]
    await events.aclose()


async def test_messages_are_bounded_by_the_batch_and_resume_exactly() -> None:
    kv, watcher = _setup(WatchSettings(heartbeat=60, poll=0.05, batch=3))
    for i in range(7):
        await kv.put(ALICE, SPACE, PutCommand(f"k{i}", b"v"))
    events = watcher.watch(ALICE, SPACE, Cursor.start().encode(), "")
    first = await _next(events)
    await events.aclose()
    assert len(first.changes) == 3
    resumed = watcher.watch(ALICE, SPACE, first.cursor, "")
    rest = [await _next(resumed), await _next(resumed)]
    await resumed.aclose()
    assert [c.key for e in [first, *rest] for c in e.changes] == [f"k{i}" for i in range(7)]


async def test_heartbeat_after_silence_and_close_ends_with_the_cursor() -> None:
    _, watcher = _setup(WatchSettings(heartbeat=0.05, poll=0.05))
    events = watcher.watch(ALICE, SPACE, "", "")
    first = await _next(events)
    assert first.heartbeat and first.cursor
    assert (await _next(events)).heartbeat
    watcher.close()
    with pytest.raises(Unavailable) as caught:
        await _next(events)
    assert caught.value.metadata["cursor"] == first.cursor
