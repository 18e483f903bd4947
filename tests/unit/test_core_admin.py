"""Imports through the core write path, on an in-memory repository."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tmcp_storage_server.core.admin import AdminService
from tmcp_storage_server.core.commands import PutCommand
from tmcp_storage_server.core.kv import KeyValueService
from tmcp_storage_server.core.writes import Writer
from tmcp_storage_server.errors import InvalidArgument, PermissionDenied, QuotaExceeded
from tmcp_storage_server.model import Principal, QuotaLimits, Scope

from tests.unit.fakes import ALICE, SPACE, FakeClock, FakeRepository

OPERATOR = Principal("ops", "", frozenset({Scope.OPERATOR}))


@pytest.fixture
def services(repo: FakeRepository, clock: FakeClock) -> tuple[AdminService, KeyValueService]:
    writer = Writer(repository=repo, defaults=QuotaLimits(100, 3, 50))  # type: ignore[arg-type]
    admin = AdminService(repository=repo, writer=writer, clock=clock)  # type: ignore[arg-type]
    kv = KeyValueService(repository=repo, writer=writer, clock=clock)  # type: ignore[arg-type]
    return admin, kv


async def test_replace_leaves_exactly_the_live_entries_of_the_import(
    services: tuple[AdminService, KeyValueService], repo: FakeRepository, clock: FakeClock
) -> None:
    admin, kv = services
    for key in ("a", "old", "other"):
        await kv.put(ALICE, SPACE, PutCommand(key, b"1"))
    past = clock.now() - timedelta(seconds=1)

    result = await admin.import_entries(
        OPERATOR,
        SPACE,
        [PutCommand("a", b"2"), PutCommand("old", b"x", expires_at=past)],
        replace=True,
    )

    assert (result.written, result.skipped_expired, result.deleted) == (1, 1, 2)
    live = [e for e in repo.spaces[SPACE].entries.values() if e.live_at(clock.now())]
    assert [(e.key, e.value, e.version) for e in live] == [("a", b"2", 2)]
    assert {c.revision for c in repo.spaces[SPACE].changes[-3:]} == {4}  # one revision


async def test_a_bad_entry_names_its_index_and_nothing_is_written(
    services: tuple[AdminService, KeyValueService], repo: FakeRepository
) -> None:
    admin, _ = services
    bad = [
        [PutCommand("a", b"1"), PutCommand("a", b"2")],
        [PutCommand("a", b"1"), PutCommand("", b"2")],
        [PutCommand("a", b"1"), PutCommand("b", b"x" * 51)],
        [PutCommand("a", b"1"), PutCommand("b", b"1", expected_version=0)],
    ]
    for commands in bad:
        with pytest.raises(InvalidArgument) as caught:
            await admin.import_entries(OPERATOR, SPACE, commands)
        assert caught.value.metadata["index"] == "1"
    with pytest.raises(QuotaExceeded):
        await admin.import_entries(OPERATOR, SPACE, [PutCommand(k, b"1") for k in "abcd"])
    with pytest.raises(PermissionDenied):
        await admin.import_entries(ALICE, SPACE, [PutCommand("a", b"1")])
    assert SPACE not in repo.spaces or not repo.spaces[SPACE].entries
