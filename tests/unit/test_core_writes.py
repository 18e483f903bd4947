"""The write path of the core, on an in-memory repository."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tmcp_storage_server.core import mutations
from tmcp_storage_server.core.commands import DeleteCommand, PutCommand, TouchCommand
from tmcp_storage_server.core.kv import KeyValueService
from tmcp_storage_server.core.writes import Writer
from tmcp_storage_server.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    QuotaExceeded,
    VersionMismatch,
)
from tmcp_storage_server.model import ChangeOp, QuotaLimits

from tests.unit.fakes import ALICE, SPACE, FakeClock, FakeRepository


@pytest.fixture
def kv(repo: FakeRepository, clock: FakeClock) -> KeyValueService:
    writer = Writer(repository=repo, defaults=QuotaLimits(100, 3, 50))  # type: ignore[arg-type]
    return KeyValueService(repository=repo, writer=writer, clock=clock)  # type: ignore[arg-type]


async def test_put_creates_then_replaces(kv: KeyValueService) -> None:
    first = await kv.put(ALICE, SPACE, PutCommand("k", b"one"))
    second = await kv.put(ALICE, SPACE, PutCommand("k", b"two!"))
    assert first.entry is not None and second.entry is not None
    assert (first.entry.version, second.entry.version) == (1, 2)
    assert second.entry.create_revision == 1
    assert second.entry.mod_revision == 2
    assert (second.usage.used_bytes, second.usage.used_keys) == (4, 1)


async def test_failed_write_changes_nothing(kv: KeyValueService, repo: FakeRepository) -> None:
    await kv.put(ALICE, SPACE, PutCommand("k", b"v"))
    with pytest.raises(VersionMismatch):
        await kv.put(ALICE, SPACE, PutCommand("k", b"x", expected_version=9))
    with pytest.raises(AlreadyExists):
        await kv.put(ALICE, SPACE, PutCommand("k", b"x", expected_version=0))
    state = repo.spaces[SPACE].state
    assert (state.revision, state.used_bytes) == (1, 1)


async def test_quota_counts_net_change(kv: KeyValueService) -> None:
    await kv.put(ALICE, SPACE, PutCommand("a", b"x" * 50))
    await kv.put(ALICE, SPACE, PutCommand("b", b"x" * 50))
    with pytest.raises(QuotaExceeded) as caught:
        await kv.put(ALICE, SPACE, PutCommand("c", b"x"))
    assert caught.value.reason == "QUOTA_BYTES"
    await kv.put(ALICE, SPACE, PutCommand("a", b"x" * 49))  # replaces: net -1
    await kv.put(ALICE, SPACE, PutCommand("c", b"x"))
    with pytest.raises(QuotaExceeded) as caught:
        await kv.put(ALICE, SPACE, PutCommand("d", b""))
    assert caught.value.reason == "QUOTA_KEYS"


async def test_space_value_limit(kv: KeyValueService) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await kv.put(ALICE, SPACE, PutCommand("k", b"x" * 51))
    assert caught.value.reason == "VALUE_TOO_LARGE"


async def test_delete_bumps_version_and_keeps_tombstone(
    kv: KeyValueService, repo: FakeRepository
) -> None:
    await kv.put(ALICE, SPACE, PutCommand("k", b"v"))
    result = await kv.delete(ALICE, SPACE, DeleteCommand("k"))
    assert result.deleted
    tomb = repo.spaces[SPACE].entries["k"]
    assert (tomb.deleted, tomb.version, tomb.size) == (True, 2, 0)
    assert repo.spaces[SPACE].changes[-1].op is ChangeOp.DELETE
    again = await kv.put(ALICE, SPACE, PutCommand("k", b"v", expected_version=2))
    assert again.entry is not None and again.entry.version == 3


async def test_expiry_is_swept_in_its_own_revision(
    kv: KeyValueService, repo: FakeRepository, clock: FakeClock
) -> None:
    await kv.put(ALICE, SPACE, PutCommand("t", b"x" * 40, ttl=timedelta(seconds=5)))
    clock.advance(5)
    with pytest.raises(NotFound):
        await kv.get(ALICE, SPACE, "t")
    result = await kv.put(ALICE, SPACE, PutCommand("u", b"x" * 45))
    ops = [(c.revision, c.key, c.op) for c in repo.spaces[SPACE].changes]
    assert ops == [(1, "t", ChangeOp.PUT), (2, "t", ChangeOp.EXPIRE), (3, "u", ChangeOp.PUT)]
    assert result.usage.used_bytes == 45
    assert repo.spaces[SPACE].entries["t"].version == 1  # expiry does not bump it


async def test_touch_keeps_version(kv: KeyValueService, clock: FakeClock) -> None:
    await kv.put(ALICE, SPACE, PutCommand("k", b"v"))
    touched = await kv.touch(ALICE, SPACE, TouchCommand("k", ttl=timedelta(seconds=10)))
    assert touched.entry is not None
    assert touched.entry.version == 1
    assert touched.entry.expires_at == clock.now() + timedelta(seconds=10)
    with pytest.raises(InvalidArgument):
        await kv.touch(ALICE, SPACE, TouchCommand("k"))


async def test_keep_ttl(kv: KeyValueService, clock: FakeClock) -> None:
    await kv.put(ALICE, SPACE, PutCommand("k", b"v", ttl=timedelta(seconds=30)))
    kept = await kv.put(ALICE, SPACE, PutCommand("k", b"w", keep_ttl=True))
    assert kept.entry is not None
    assert kept.entry.expires_at == clock.now() + timedelta(seconds=30)


async def test_delete_prefix_is_one_revision(kv: KeyValueService, repo: FakeRepository) -> None:
    for key in ("s/1", "s/2", "t"):
        await kv.put(ALICE, SPACE, PutCommand(key, b"v"))
    result = await kv.delete_prefix(ALICE, SPACE, "s/")
    assert (result.deleted_count, result.revision) == (2, 4)
    assert {c.key for c in repo.spaces[SPACE].changes if c.revision == 4} == {"s/1", "s/2"}


async def test_loaded_answers_keys_already_loaded_and_sees_staged_writes(
    repo: FakeRepository,
) -> None:
    writer = Writer(repository=repo, defaults=QuotaLimits(1000, 10, 100))  # type: ignore[arg-type]
    kv = KeyValueService(repository=repo, writer=writer, clock=FakeClock())  # type: ignore[arg-type]
    await kv.put(ALICE, SPACE, PutCommand("old", b"1"))
    async with writer.session(SPACE, FakeClock().now()) as session:
        await session.load(["old", "absent"])
        old = session.loaded("old")
        assert old is not None and old.value == b"1"
        assert session.loaded("absent") is None  # loaded: known to be absent
        with pytest.raises(KeyError):
            session.loaded("never-loaded")
        assert mutations.put_loaded(session, PutCommand("old", b"2"), old).version == 2
        assert session.loaded("old") == await session.load_one("old")
        assert session.loaded("old").value == b"2"  # type: ignore[union-attr]
        session.discard()
