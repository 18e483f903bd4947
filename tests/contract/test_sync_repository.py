"""The sync part of the repository contract, on SQLite and PostgreSQL: sync clients,
push outcomes, conflicts, retained versions, changed-since reads and compaction; and the
push rules that need a real transaction (a transient failure advances nothing)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from tmcp_storage_server.core.commands import DeleteCommand, MutationCommand, PutCommand
from tmcp_storage_server.core.kv import KeyValueService
from tmcp_storage_server.core.ports import Repository, SpaceTransaction
from tmcp_storage_server.core.sync import SyncService
from tmcp_storage_server.core.writes import Writer
from tmcp_storage_server.errors import Unavailable
from tmcp_storage_server.model import (
    ChangeOp,
    Conflict,
    ConflictSide,
    ConflictState,
    ConflictStrategy,
    MutationOp,
    Outcome,
    Principal,
    PushResult,
    Rejection,
    Space,
    SyncClient,
)

from tests.contract.conftest import DEFAULTS, T0, ManualClock

SECOND = timedelta(seconds=1)


async def test_sync_client_round_trips_and_keeps_its_owner(
    repository: Repository, space: Space
) -> None:
    async with repository.transaction(space) as tx:
        assert await tx.sync_client("c1") is None
        await tx.save_sync_client(SyncClient("c1", "alice", 3, T0, None))
    async with repository.transaction(space) as tx:
        await tx.save_sync_client(SyncClient("c1", "mallory", 5, T0 + SECOND, None))
    stored = await repository.sync_client(space, "c1")
    assert stored == SyncClient("c1", "alice", 5, T0 + SECOND, None)
    assert await repository.mark_pulled(space, "c1", T0 + 2 * SECOND) == 5
    assert await repository.mark_pulled(space, "nobody", T0) == 0
    pulled = await repository.sync_client(space, "c1")
    assert pulled is not None and pulled.last_pull_at == T0 + 2 * SECOND


async def test_outcomes_round_trip_in_id_order(repository: Repository, space: Space) -> None:
    rejected = Outcome(
        2,
        PushResult.REJECTED,
        "k",
        0,
        rejection=Rejection("InvalidArgument", "INVALID_KEY", "bad", {"field": "key"}),
    )
    applied = Outcome(1, PushResult.APPLIED, "k", 4, "cid")
    async with repository.transaction(space) as tx:
        await tx.save_outcomes("c1", [rejected, applied])
    async with repository.transaction(space) as tx:
        assert await tx.outcomes("c1", 1, 2) == [applied, rejected]
        assert await tx.outcomes("c1", 2, 9) == [rejected]
        assert await tx.outcomes("other", 1, 2) == []


def _conflict(cid: str, key: str, state: ConflictState) -> Conflict:
    return Conflict(
        conflict_id=cid,
        key=key,
        strategy=ConflictStrategy.MANUAL,
        state=state,
        server=ConflictSide(b"srv", "text/plain", 2),
        client=ConflictSide(None, "", 1),
        client_id="c1",
        mutation_id=7,
        base_version=1,
        created_at=T0,
        resolved_at=None if state is ConflictState.OPEN else T0 + SECOND,
    )


async def test_conflicts_round_trip_list_and_count(repository: Repository, space: Space) -> None:
    a = _conflict("a1", "doc/1", ConflictState.OPEN)
    b = _conflict("b2", "doc/2", ConflictState.RESOLVED)
    c = _conflict("c3", "other", ConflictState.OPEN)
    async with repository.transaction(space) as tx:
        for record in (a, b, c):
            await tx.save_conflict(record)
    async with repository.transaction(space) as tx:
        assert await tx.conflict("a1") == a
        assert await tx.conflict("zz") is None
    listed = await repository.list_conflicts(
        space, prefix="", include_resolved=False, after="", limit=10
    )
    assert [x.conflict_id for x in listed] == ["a1", "c3"]
    listed = await repository.list_conflicts(
        space, prefix="doc/", include_resolved=True, after="a1", limit=10
    )
    assert listed == [b]
    detail = await repository.usage_detail(space, T0, 3)
    assert detail.open_conflicts == 2
    async with repository.transaction(space) as tx:
        await tx.save_conflict(_conflict("a1", "doc/1", ConflictState.RESOLVED))
    assert (await repository.usage_detail(space, T0, 3)).open_conflicts == 1


@pytest.fixture
def sync(repository: Repository, clock: ManualClock) -> SyncService:
    """The real core sync service on the repository."""
    return SyncService(
        repository=repository, writer=Writer(repository=repository, defaults=DEFAULTS), clock=clock
    )


async def test_json_versions_are_retained_the_last_five(
    repository: Repository, kv: KeyValueService, user: Principal, space: Space
) -> None:
    for n in range(1, 8):
        await kv.put(user, space, PutCommand("doc", f'{{"n":{n}}}'.encode(), is_json=True))
    await kv.put(user, space, PutCommand("raw", b"x"))
    async with repository.transaction(space) as tx:
        assert await tx.retained_value("doc", 7) == b'{"n":7}'
        assert await tx.retained_value("doc", 3) == b'{"n":3}'
        assert await tx.retained_value("doc", 2) is None
        assert await tx.retained_value("raw", 1) is None


async def test_changed_since_orders_by_revision_then_key_and_stops_inside_a_revision(
    repository: Repository, kv: KeyValueService, user: Principal, space: Space, clock: ManualClock
) -> None:
    for key in ("b", "a", "c"):
        await kv.put(user, space, PutCommand(key, key.encode()))
    await kv.delete_prefix(user, space, "")  # one revision, three keys
    await kv.put(user, space, PutCommand("a", b"again"))
    page = await repository.changed_since(
        space, revision=0, key="", prefix="", limit=10, now=clock.now()
    )
    assert [(c.revision, c.key, c.op) for c in page.changes] == [
        (4, "b", ChangeOp.DELETE),
        (4, "c", ChangeOp.DELETE),
        (5, "a", ChangeOp.PUT),
    ]
    assert page.revision == 5 and page.horizon == 0
    assert page.changes[2].entry is not None and page.changes[2].entry.value == b"again"
    after = await repository.changed_since(
        space, revision=4, key="b", prefix="", limit=1, now=clock.now()
    )
    assert [(c.revision, c.key) for c in after.changes] == [(4, "c")]


async def test_compaction_forgets_old_tombstones_and_raises_the_horizon(
    repository: Repository, kv: KeyValueService, user: Principal, space: Space, clock: ManualClock
) -> None:
    await kv.put(user, space, PutCommand("gone", b"x"))
    await kv.put(user, space, PutCommand("kept", b"y"))
    await kv.delete(user, space, DeleteCommand("gone"))
    removed = await repository.compact(clock.now() + 60 * SECOND, clock.now())
    assert removed >= 1
    page = await repository.changed_since(
        space, revision=0, key="", prefix="", limit=10, now=clock.now()
    )
    assert [c.key for c in page.changes] == ["kept"]
    assert page.horizon == 3 and page.horizon_time is not None


class _FailingRepository:
    """Delegates to a real repository, but its transactions fail when the push writes
    its bookkeeping: the database "goes away" after mutations were staged and saved."""

    def __init__(self, inner: Repository) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @asynccontextmanager
    async def transactions(
        self, requests: Mapping[Space, Sequence[str]]
    ) -> AsyncIterator[dict[Space, SpaceTransaction]]:
        async with self._inner.transactions(requests) as spaces:
            yield {space: _FailingTransaction(tx) for space, tx in spaces.items()}


class _FailingTransaction:
    def __init__(self, inner: SpaceTransaction) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def save_outcomes(self, client_id: str, outcomes: Sequence[Outcome]) -> None:
        raise Unavailable()


async def test_transient_failure_advances_nothing(
    repository: Repository, clock: ManualClock, user: Principal, space: Space
) -> None:
    failing: Any = _FailingRepository(repository)
    broken = SyncService(
        repository=failing, writer=Writer(repository=failing, defaults=DEFAULTS), clock=clock
    )
    mutations = [
        MutationCommand(1, MutationOp.SET, "k", b"v"),
        MutationCommand(2, MutationOp.SET, "j", b"w"),
    ]
    with pytest.raises(Unavailable):
        await broken.push(user, space, "c1", mutations, ConflictStrategy.UNSPECIFIED)
    assert await repository.sync_client(space, "c1") is None
    assert (await repository.get(space, "k", clock.now()))[0] is None
    assert (await repository.space_state(space)).revision == 0
    healthy = SyncService(
        repository=repository, writer=Writer(repository=repository, defaults=DEFAULTS), clock=clock
    )
    report = await healthy.push(user, space, "c1", mutations, ConflictStrategy.UNSPECIFIED)
    assert [r.result for r in report.reports] == [PushResult.APPLIED, PushResult.APPLIED]
