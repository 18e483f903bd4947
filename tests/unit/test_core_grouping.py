"""Group commit of single-key writes and batches (core/grouping.py) on the in-memory repository."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tmcp_storage_server.core.batch import BatchService
from tmcp_storage_server.core.commands import DeleteCommand, PutCommand
from tmcp_storage_server.core.grouping import WriteGroups
from tmcp_storage_server.core.kv import KeyValueService
from tmcp_storage_server.core.writes import Writer
from tmcp_storage_server.errors import QuotaExceeded, Unavailable, VersionMismatch
from tmcp_storage_server.model import ChangeOp, Principal, QuotaLimits, Scope, Space

from tests.unit.fakes import ALICE, SPACE, FakeClock, FakeRepository


@pytest.fixture
def kv(repo: FakeRepository) -> KeyValueService:
    writer = Writer(repository=repo, defaults=QuotaLimits(1000, 5, 100))  # type: ignore[arg-type]
    return KeyValueService(repository=repo, writer=writer, clock=FakeClock())  # type: ignore[arg-type]


async def _queued(kv: KeyValueService, repo: FakeRepository, *calls: PutCommand) -> list[object]:
    """Run one Put alone (held open), queue ``calls`` behind it, then release both groups."""
    repo.hold = asyncio.Event()
    first = asyncio.ensure_future(kv.put(ALICE, SPACE, PutCommand("first", b"1")))
    await asyncio.sleep(0)  # the first write's group is open and waits on ``hold``
    rest = [asyncio.ensure_future(kv.put(ALICE, SPACE, c)) for c in calls]
    await asyncio.sleep(0)
    repo.hold.set()
    await first
    return list(await asyncio.gather(*rest, return_exceptions=True))


async def test_writes_that_queue_share_one_transaction_each_under_its_own_revision(
    kv: KeyValueService, repo: FakeRepository
) -> None:
    results = await _queued(kv, repo, *(PutCommand(f"k{i}", b"v") for i in range(3)))
    assert repo.opened == 2  # the first alone, then the three together
    assert [r.revision for r in results] == [2, 3, 4]  # type: ignore[attr-defined]
    changes = repo.spaces[SPACE].changes
    assert [(c.revision, c.key, c.op) for c in changes] == [
        (1, "first", ChangeOp.PUT),
        (2, "k0", ChangeOp.PUT),
        (3, "k1", ChangeOp.PUT),
        (4, "k2", ChangeOp.PUT),
    ]
    assert repo.spaces[SPACE].state.revision == 4


async def test_writes_of_one_key_in_a_group_apply_in_arrival_order(
    kv: KeyValueService, repo: FakeRepository
) -> None:
    results = await _queued(
        kv,
        repo,
        PutCommand("k", b"a"),
        PutCommand("k", b"bb", expected_version=1),
        PutCommand("k", b"ccc", expected_version=1),  # sees version 2: fails alone
    )
    assert [r.entry.version for r in results[:2]] == [1, 2]  # type: ignore[attr-defined]
    assert isinstance(results[2], VersionMismatch)
    stored = repo.spaces[SPACE].entries["k"]
    assert (stored.value, stored.version, stored.mod_revision) == (b"bb", 2, 3)
    assert repo.spaces[SPACE].state.used_bytes == len(b"1") + len(b"bb")


async def test_a_write_over_quota_fails_alone(kv: KeyValueService, repo: FakeRepository) -> None:
    # 5 keys allowed: "first" plus four; the fifth and sixth new key are refused.
    results = await _queued(kv, repo, *(PutCommand(f"k{i}", b"v") for i in range(6)))
    assert [type(r).__name__ for r in results] == ["WriteResult"] * 4 + ["QuotaExceeded"] * 2
    assert isinstance(results[4], QuotaExceeded)
    assert repo.spaces[SPACE].state.used_keys == 5
    assert sorted(repo.spaces[SPACE].entries) == ["first", "k0", "k1", "k2", "k3"]


async def test_a_failed_commit_fails_every_write_of_the_group_and_stores_none(
    kv: KeyValueService, repo: FakeRepository
) -> None:
    await kv.put(ALICE, SPACE, PutCommand("k", b"old"))
    repo.fail_commit = Unavailable("database unreachable")
    # Calls made in one turn of the loop land in one group.
    outcomes = await asyncio.gather(
        kv.put(ALICE, SPACE, PutCommand("k", b"new")),
        kv.put(ALICE, SPACE, PutCommand("k", b"x", expected_version=7)),
        kv.delete(ALICE, SPACE, DeleteCommand("other")),
        return_exceptions=True,
    )
    assert repo.opened == 2
    # The version mismatch is that write's own answer; the others learn nothing was stored.
    assert [type(o) for o in outcomes] == [Unavailable, VersionMismatch, Unavailable]
    stored = repo.spaces[SPACE]
    assert (stored.entries["k"].value, stored.entries["k"].version) == (b"old", 1)
    assert stored.state.revision == 1


async def test_a_caller_that_gave_up_before_its_group_started_is_skipped(
    kv: KeyValueService, repo: FakeRepository
) -> None:
    repo.hold = asyncio.Event()
    first = asyncio.ensure_future(kv.put(ALICE, SPACE, PutCommand("first", b"1")))
    await asyncio.sleep(0)
    abandoned = asyncio.ensure_future(kv.put(ALICE, SPACE, PutCommand("gone", b"x")))
    kept = asyncio.ensure_future(kv.put(ALICE, SPACE, PutCommand("kept", b"y")))
    await asyncio.sleep(0)
    abandoned.cancel()
    repo.hold.set()
    await first
    assert (await kept).revision == 2
    assert "gone" not in repo.spaces[SPACE].entries
    assert abandoned.cancelled()


async def test_writes_of_several_spaces_share_one_transaction(
    kv: KeyValueService, repo: FakeRepository
) -> None:
    other = Space("app", "bob")
    bob = Principal("bob", "app", frozenset({Scope.READ, Scope.WRITE}))
    a, b, a2 = await asyncio.gather(
        kv.put(ALICE, SPACE, PutCommand("k", b"a")),
        kv.put(bob, other, PutCommand("k", b"b")),
        kv.put(ALICE, SPACE, PutCommand("k2", b"c")),
    )
    assert (a.revision, b.revision, a2.revision) == (1, 1, 2)  # each space its own
    assert repo.opened == 1
    assert repo.spaces[other].entries["k"].value == b"b"
    assert repo.spaces[SPACE].state.revision == 2


async def test_a_space_held_up_delays_its_own_writes_not_other_spaces(
    kv: KeyValueService, repo: FakeRepository
) -> None:
    other = Space("app", "bob")
    bob = Principal("bob", "app", frozenset({Scope.READ, Scope.WRITE}))
    repo.hold = hold = asyncio.Event()
    first = asyncio.ensure_future(kv.put(ALICE, SPACE, PutCommand("k", b"1")))
    await asyncio.sleep(0.01)  # alice's transaction is open and cannot commit
    repo.hold = None  # later transactions commit at once
    queued = asyncio.ensure_future(kv.put(ALICE, SPACE, PutCommand("k", b"2")))
    done = await asyncio.wait_for(kv.put(bob, other, PutCommand("k", b"b")), 1)
    assert done.revision == 1  # bob's write went by in a transaction of its own
    assert not first.done() and not queued.done()  # alice's second waits for her first
    hold.set()
    assert ((await first).revision, (await queued).revision) == (1, 2)
    assert repo.spaces[SPACE].entries["k"].value == b"2"


async def test_a_caller_that_gave_up_while_its_group_waited_for_the_lock_is_skipped(
    kv: KeyValueService, repo: FakeRepository
) -> None:
    gate = asyncio.Event()
    real = repo.transactions

    def waiting_for_lock(requests: object) -> object:
        async def enter() -> object:
            await gate.wait()
            return await context.__aenter__()

        context = real(requests)  # type: ignore[arg-type]

        class Locked:
            async def __aenter__(self) -> object:
                return await enter()

            async def __aexit__(self, *exc: object) -> object:
                return await context.__aexit__(*exc)  # type: ignore[arg-type]

        return Locked()

    repo.transactions = waiting_for_lock  # type: ignore[method-assign,assignment]
    gave_up = asyncio.ensure_future(kv.put(ALICE, SPACE, PutCommand("k", b"late")))
    await asyncio.sleep(0.01)  # its group is open and waits for the lock
    gave_up.cancel()
    gate.set()
    assert (await kv.put(ALICE, SPACE, PutCommand("k", b"patient"))).entry.version == 1  # type: ignore[union-attr]
    assert repo.spaces[SPACE].entries["k"].value == b"patient"


def _services(
    repo: FakeRepository, *, max_keys: int = 2000
) -> tuple[KeyValueService, BatchService]:
    writer = Writer(repository=repo, defaults=QuotaLimits(1000, 5, 100))  # type: ignore[arg-type]
    clock = FakeClock()
    groups = WriteGroups(writer=writer, clock=clock, max_keys=max_keys)
    kv = KeyValueService(repository=repo, writer=writer, clock=clock, groups=groups)  # type: ignore[arg-type]
    batch = BatchService(repository=repo, writer=writer, clock=clock, groups=groups)  # type: ignore[arg-type]
    return kv, batch


async def test_batches_share_a_transaction_with_single_writes_and_fail_alone(
    repo: FakeRepository,
) -> None:
    kv, batch = _services(repo)
    repo.hold = asyncio.Event()
    first = asyncio.ensure_future(kv.put(ALICE, SPACE, PutCommand("first", b"1")))
    await asyncio.sleep(0)
    queued = [
        batch.batch_set(ALICE, SPACE, [PutCommand("a", b"1"), PutCommand("b", b"2")], True),
        # atomic, and its second item's version is wrong: nothing of it is stored
        batch.batch_set(
            ALICE, SPACE, [PutCommand("c", b"3"), PutCommand("a", b"x", expected_version=7)], True
        ),
        kv.put(ALICE, SPACE, PutCommand("a", b"22", expected_version=1)),
        # atomic and over the 5-key quota as a whole (first, a, b + three)
        batch.batch_set(ALICE, SPACE, [PutCommand(f"q{i}", b"q") for i in range(3)], True),
        batch.batch_delete(ALICE, SPACE, [DeleteCommand("b")], False),
    ]
    rest = [asyncio.ensure_future(call) for call in queued]
    await asyncio.sleep(0)
    repo.hold.set()
    await first
    results: list[Any] = list(await asyncio.gather(*rest, return_exceptions=True))
    assert repo.opened == 2  # the first alone, then the other five together
    assert results[0].revision == 2
    assert isinstance(results[1], VersionMismatch)
    assert results[1].metadata["index"] == "1"
    assert results[2].revision == 3
    assert isinstance(results[3], QuotaExceeded)
    assert results[4].revision == 4 and results[4].results[0].deleted
    data = repo.spaces[SPACE]
    assert [(c.revision, c.key) for c in data.changes] == [
        (1, "first"),
        (2, "a"),
        (2, "b"),
        (3, "a"),
        (4, "b"),
    ]
    live = {k: e.value for k, e in data.entries.items() if not e.deleted}
    assert live == {"first": b"1", "a": b"22"}
    assert (data.state.revision, data.state.used_keys, data.state.used_bytes) == (4, 2, 3)


async def test_a_group_takes_writes_up_to_max_keys_in_arrival_order(
    repo: FakeRepository,
) -> None:
    kv, batch = _services(repo, max_keys=3)
    other = Space(SPACE.app_id, "bob")
    bob = Principal("bob", SPACE.app_id, frozenset(Scope))
    repo.hold = asyncio.Event()
    first = asyncio.ensure_future(kv.put(ALICE, SPACE, PutCommand("first", b"1")))
    await asyncio.sleep(0)
    queued = [
        batch.batch_set(ALICE, SPACE, [PutCommand("a", b"1"), PutCommand("b", b"2")], False),
        batch.batch_set(ALICE, SPACE, [PutCommand("c", b"3"), PutCommand("d", b"4")], False),
        kv.put(bob, other, PutCommand("x", b"1")),  # would fit, but must not pass the batch
        batch.batch_set(ALICE, SPACE, [PutCommand(k, b"new") for k in "abcd"], False),
    ]
    rest = [asyncio.ensure_future(call) for call in queued]
    await asyncio.sleep(0)
    repo.hold.set()
    await first
    results: list[Any] = list(await asyncio.gather(*rest, return_exceptions=True))
    # first alone; then [a b]; then [c d] with bob's x (3 keys); then the 4-key batch,
    # alone since it is larger than max_keys
    assert repo.opened == 4
    assert [r.revision for r in results] == [2, 3, 1, 4]
    assert all(r.error is None for r in results[3].results)
    assert {k: repo.spaces[SPACE].entries[k].value for k in "abcd"} == dict.fromkeys("abcd", b"new")


def _lingering_kv(repo: FakeRepository, *, linger: float, quiet: float) -> KeyValueService:
    """Groups that count as under load once the latest ones averaged 2 writes."""
    writer = Writer(repository=repo, defaults=QuotaLimits(1000, 50, 100))  # type: ignore[arg-type]
    clock = FakeClock()
    groups = WriteGroups(writer=writer, clock=clock, linger=linger, quiet=quiet, busy_group=2)
    return KeyValueService(repository=repo, writer=writer, clock=clock, groups=groups)  # type: ignore[arg-type]


async def _under_load(kv: KeyValueService, repo: FakeRepository) -> None:
    """Two groups, of 1 and of 3 writes: on average 2, the largest 3."""
    await _queued(kv, repo, *(PutCommand(f"load{i}", b"v") for i in range(3)))
    assert repo.opened == 2


async def test_under_load_a_group_waits_until_it_is_as_large_as_the_latest_ones(
    repo: FakeRepository,
) -> None:
    kv = _lingering_kv(repo, linger=60, quiet=60)  # only the size ends the wait
    await _under_load(kv, repo)
    calls = []
    for key in "abc":
        calls.append(asyncio.ensure_future(kv.put(ALICE, SPACE, PutCommand(key, b"v"))))
        await asyncio.sleep(0.02)  # arriving one by one, in turns of the loop of their own
        assert repo.opened == 2 + (key == "c")  # waits for the third, then starts
    results = await asyncio.wait_for(asyncio.gather(*calls), 5)
    assert [r.revision for r in results] == [5, 6, 7]
    assert repo.opened == 3


async def test_under_load_a_group_starts_once_writes_stop_coming(repo: FakeRepository) -> None:
    kv = _lingering_kv(repo, linger=60, quiet=0.05)
    await _under_load(kv, repo)
    # Fewer writes than the latest groups held: they go once none came for ``quiet``.
    both = asyncio.gather(*(kv.put(ALICE, SPACE, PutCommand(k, b"v")) for k in "ab"))
    assert [r.revision for r in await asyncio.wait_for(both, 5)] == [5, 6]
    assert repo.opened == 3


async def test_under_load_a_group_waits_at_most_linger_after_the_previous_one(
    repo: FakeRepository,
) -> None:
    kv = _lingering_kv(repo, linger=0.05, quiet=60)
    await _under_load(kv, repo)
    result = await asyncio.wait_for(kv.put(ALICE, SPACE, PutCommand("a", b"v")), 5)
    assert result.revision == 5
    assert repo.opened == 3


async def test_a_lone_writer_is_never_held_up(repo: FakeRepository) -> None:
    kv = _lingering_kv(repo, linger=60, quiet=60)
    for index in range(5):  # groups of one write: not under load
        result = await asyncio.wait_for(kv.put(ALICE, SPACE, PutCommand("k", b"v")), 5)
        assert result.revision == index + 1
    assert repo.opened == 5
