"""The repository contract: SQLite and PostgreSQL must behave identically.

Every test runs on both backends (see ``conftest.backend``). Writes go through the real
core (``KeyValueService`` on a ``Writer``) where that is natural, and straight through
``Repository.transaction`` where the test is about the transaction itself.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from tmcp_storage_server.core.commands import DeleteCommand, PutCommand, TouchCommand
from tmcp_storage_server.core.kv import KeyValueService
from tmcp_storage_server.core.ports import Repository
from tmcp_storage_server.core.writes import Writer, checksum
from tmcp_storage_server.errors import QuotaExceeded, Unavailable, VersionMismatch
from tmcp_storage_server.model import (
    AppUsage,
    Change,
    ChangeOp,
    ContentTypeUsage,
    Entry,
    LimitOverrides,
    Principal,
    Scope,
    Space,
    SpaceState,
    SpaceTotals,
    UsageDetail,
)
from tmcp_storage_server.store import codec
from tmcp_storage_server.store.migrations import scripts
from tmcp_storage_server.store.postgres import PostgresRepository

from tests.contract.conftest import DEFAULTS, T0, Backend, ManualClock

SECOND = timedelta(seconds=1)
PUT, DELETE, EXPIRE, TOUCH = (int(op) for op in ChangeOp)


def make_entry(key: str, value: bytes | None, revision: int, **fields: Any) -> Entry:
    """An entry as the core would build it at ``T0`` under ``revision``."""
    entry = Entry(
        key=key,
        value=value,
        content_type="application/octet-stream",
        version=1,
        create_revision=revision,
        mod_revision=revision,
        created_at=T0,
        updated_at=T0,
        expires_at=None,
        size=len(value or b""),
        checksum=checksum(value) if value is not None else "",
    )
    return replace(entry, **fields)


async def store(repo: Repository, space: Space, revision: int, *entries: Entry) -> None:
    """Save ``entries`` under ``revision`` in a transaction of their own."""
    async with repo.transaction(space) as tx:
        live = [e for e in entries if not e.deleted]
        await tx.save(
            revision=revision,
            entries=entries,
            changes=[
                Change(revision, e.key, ChangeOp.DELETE if e.deleted else ChangeOp.PUT, e.version)
                for e in entries
            ],
            used_bytes=tx.state.used_bytes + sum(e.size for e in live),
            used_keys=tx.state.used_keys + len(live),
        )


async def put_all(kv: KeyValueService, who: Principal, space: Space, *keys: str) -> None:
    """Put each key (value: the key's bytes) through the core."""
    for key in keys:
        await kv.put(who, space, PutCommand(key, key.encode()))


async def list_all(
    repo: Repository, space: Space, prefix: str = "", **options: Any
) -> tuple[list[Entry], int]:
    """``list_entries`` with defaults: at ``T0``, values off, no paging unless asked."""
    params: dict[str, Any] = {
        "start_after": None,
        "limit": 1000,
        "include_values": False,
        "max_create_revision": None,
        "now": T0,
    }
    params.update(options)
    return await repo.list_entries(space, prefix=prefix, **params)


async def listed(repo: Repository, space: Space, prefix: str = "", **options: Any) -> list[str]:
    """The keys ``list_entries`` returns."""
    return [e.key for e in (await list_all(repo, space, prefix, **options))[0]]


# ---- get ---------------------------------------------------------------------------


async def test_get_in_a_new_space_finds_nothing_at_revision_zero(
    repository: Repository, space: Space
) -> None:
    assert await repository.get(space, "missing", T0) == (None, 0)


async def test_get_returns_the_live_entry_with_every_field(
    repository: Repository,
    kv: KeyValueService,
    clock: ManualClock,
    user: Principal,
    space: Space,
) -> None:
    clock.advance(timedelta(microseconds=123_456))  # times keep their microseconds
    expires = datetime(2030, 6, 1, 12, 0, 0, 654_321, tzinfo=timezone(timedelta(hours=2)))
    cmd = PutCommand("k", b"hello", "text/plain", metadata={"a": "1"}, expires_at=expires)
    written = await kv.put(user, space, cmd)
    await kv.put(user, space, PutCommand("other", b"x"))
    entry, revision = await repository.get(space, "k", clock.now())
    assert (entry, revision) == (written.entry, 2)
    assert entry is not None
    assert entry.created_at == entry.updated_at == clock.now()
    assert entry.expires_at == expires
    assert entry.created_at.tzinfo is entry.expires_at.tzinfo is UTC  # UTC, whatever was given
    assert (await repository.get(space, "absent", T0)) == (None, 2)


async def test_get_hides_an_entry_from_its_expiry_on(
    repository: Repository, kv: KeyValueService, user: Principal, space: Space
) -> None:
    await kv.put(user, space, PutCommand("k", b"v", ttl=10 * SECOND))
    before, _ = await repository.get(space, "k", T0 + 10 * SECOND - timedelta(microseconds=1))
    assert before is not None
    assert await repository.get(space, "k", T0 + 10 * SECOND) == (None, 1)


async def test_get_many_returns_live_entries_of_the_keys_that_exist(
    repository: Repository, kv: KeyValueService, user: Principal, space: Space
) -> None:
    assert await repository.get_many(space, ["a"], T0) == ({}, 0)
    big = b"z" * 5000  # stored compressed
    await kv.put(user, space, PutCommand("a", b"1"))
    await kv.put(user, space, PutCommand("b", big))
    await kv.put(user, space, PutCommand("gone", b"x"))
    await kv.delete(user, space, DeleteCommand("gone"))
    await kv.put(user, space, PutCommand("soon", b"x", ttl=10 * SECOND))
    found, revision = await repository.get_many(
        space, ["b", "a", "missing", "gone", "soon", "a"], T0 + 10 * SECOND
    )
    assert revision == 5
    assert sorted(found) == ["a", "b"]
    assert found["b"].value == big
    assert found["a"] == (await repository.get(space, "a", T0))[0]


async def test_get_hides_a_tombstone_which_load_still_returns(
    repository: Repository, kv: KeyValueService, user: Principal, space: Space
) -> None:
    await kv.put(user, space, PutCommand("k", b"v", metadata={"m": "x"}))
    await kv.delete(user, space, DeleteCommand("k"))
    assert await repository.get(space, "k", T0) == (None, 2)
    async with repository.transaction(space) as tx:
        tomb = (await tx.load(["k", "never"]))["k"]
        assert tx.state.revision == 2
    assert (tomb.deleted, tomb.version, tomb.value) == (True, 2, None)
    assert (tomb.size, tomb.checksum, tomb.metadata) == (0, "", {})
    assert (tomb.create_revision, tomb.mod_revision) == (1, 2)


async def test_one_transaction_over_several_spaces_commits_all_or_none(
    repository: Repository, space: Space
) -> None:
    other = Space(space.app_id, space.user_id + "-other")
    await store(repository, space, 1, make_entry("k", b"old", 1))

    async def save_each(spaces: Any, value: bytes) -> None:
        for tx in spaces.values():
            current = (await tx.load(["k"])).get("k")
            revision = tx.state.revision + 1
            version = current.version + 1 if current is not None else 1
            entry = make_entry("k", value, revision, version=version)
            await tx.save(
                revision=revision,
                entries=[entry],
                changes=[Change(revision, "k", ChangeOp.PUT, version)],
                used_bytes=entry.size,
                used_keys=1,
            )

    async def saved_then_failed() -> None:
        async with repository.transactions({space: ["k"], other: ["k"]}) as spaces:
            await save_each(spaces, b"lost")
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await saved_then_failed()
    assert await repository.get(space, "k", T0) == (make_entry("k", b"old", 1), 1)
    assert await repository.get(other, "k", T0) == (None, 0)

    async with repository.transactions({other: ["k"], space: ["k"]}) as spaces:
        assert {s: tx.state.revision for s, tx in spaces.items()} == {space: 1, other: 0}
        assert (await spaces[space].load(["k"]))["k"].value == b"old"  # read with the locks
        await save_each(spaces, b"new")
    for target, revision, version in ((space, 2, 2), (other, 1, 1)):
        entry, at = await repository.get(target, "k", T0)
        assert entry is not None and (entry.value, entry.version, at) == (b"new", version, revision)
        state = await repository.space_state(target)
        assert (state.revision, state.used_bytes, state.used_keys) == (revision, 3, 1)


# ---- list --------------------------------------------------------------------------

# fmt: off
ORDERED_KEYS = [
    "A", "a", "a-b", "a.b", "a/b", "a:b", "ab", "b", "z", "~", "é", "ÿ", "中",
    "\ue000", "\uffff", "\U0001f600", "\U0010ffff",
]
# fmt: on


async def test_list_orders_keys_bytewise(
    repository: Repository, kv: KeyValueService, user: Principal, space: Space
) -> None:
    assert sorted(ORDERED_KEYS, key=lambda k: k.encode()) == ORDERED_KEYS
    await put_all(kv, user, space, *reversed(ORDERED_KEYS))
    assert await listed(repository, space) == ORDERED_KEYS
    pages, token = [], ""
    while True:
        page = await kv.list(
            user, space, prefix="", page_size=4, page_token=token, include_values=False
        )
        pages.append([e.key for e in page.entries])
        if not (token := page.next_page_token):
            break
    assert [k for p in pages for k in p] == ORDERED_KEYS
    assert len(pages) == 5


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("a/", ["a/", "a/b", "a/c/d"]),
        ("a", ["a", "a.b", "a/", "a/b", "a/c/d", "a0", "a:b"]),
        ("é", ["é", "éa"]),
        ("\U0010ffff", ["\U0010ffff", "\U0010ffffa"]),
        ("z\U0010ffff", ["z\U0010ffff", "z\U0010ffffq"]),
        ("\ud7ff", ["\ud7ff", "\ud7ffz"]),  # the bound skips the surrogates: U+E000
        ("nothing", []),
    ],
)
async def test_list_keeps_to_the_prefix(
    repository: Repository,
    kv: KeyValueService,
    user: Principal,
    space: Space,
    prefix: str,
    expected: list[str],
) -> None:
    keys = ["a", "a.b", "a/", "a/b", "a/c/d", "a0", "a:b", "b", "e", "é", "éa", "ê"]
    keys += ["\U0010fffe", "\U0010ffff", "\U0010ffffa", "z\U0010ffff", "z\U0010ffffq", "{"]
    keys += ["\ud7ff", "\ud7ffz", "\ue000"]
    await put_all(kv, user, space, *keys)
    assert await listed(repository, space, prefix) == expected


async def test_list_pages_with_start_after_and_limit(
    repository: Repository, kv: KeyValueService, user: Principal, space: Space
) -> None:
    await put_all(kv, user, space, "a/1", "a/2", "a/3", "a/4", "b")
    assert await listed(repository, space, "a/", start_after="a/1", limit=2) == ["a/2", "a/3"]
    assert await listed(repository, space, "a/", start_after="a/3") == ["a/4"]
    assert await listed(repository, space, "a/", start_after="0") == ["a/1", "a/2", "a/3", "a/4"]
    assert await listed(repository, space, "a/", start_after="a/4") == []
    assert await listed(repository, space, "", start_after="a/4") == ["b"]
    assert await listed(repository, space, "", limit=1) == ["a/1"]


async def test_list_with_and_without_values(
    repository: Repository, kv: KeyValueService, user: Principal, space: Space
) -> None:
    big = b"0123456789abcdef" * 256
    await kv.put(user, space, PutCommand("big", big, metadata={"x": "y"}))
    await kv.put(user, space, PutCommand("small", b"s"))
    full, rev = await list_all(repository, space, include_values=True)
    bare, rev2 = await list_all(repository, space, include_values=False)
    assert [e.value for e in full] == [big, b"s"]
    assert [e.value for e in bare] == [None, None]
    assert bare == [replace(e, value=None) for e in full]
    assert full[0].metadata == {"x": "y"}
    assert rev == rev2 == 2


async def test_list_pins_to_a_create_revision_and_skips_dead_entries(
    repository: Repository, kv: KeyValueService, user: Principal, space: Space
) -> None:
    await put_all(kv, user, space, "a", "b")  # revisions 1, 2
    await kv.put(user, space, PutCommand("a", b"new"))  # 3: same create_revision
    await put_all(kv, user, space, "c", "gone")  # 4, 5
    await kv.put(user, space, PutCommand("brief", b"x", ttl=SECOND))  # 6
    await kv.delete(user, space, DeleteCommand("gone"))  # 7
    entries, revision = await list_all(
        repository, space, include_values=True, max_create_revision=2
    )
    assert ([e.key for e in entries], revision) == (["a", "b"], 7)
    assert entries[0].value == b"new"
    assert await listed(repository, space, now=T0 + SECOND) == ["a", "b", "c"]
    assert await listed(repository, space, now=T0) == ["a", "b", "brief", "c"]


async def test_list_of_a_new_space_is_empty_at_revision_zero(
    repository: Repository, space: Space
) -> None:
    assert await list_all(repository, space, include_values=True) == ([], 0)


# ---- transactions ------------------------------------------------------------------


async def test_transaction_commits_entries_changes_and_counters(
    repository: Repository, backend: Backend, space: Space
) -> None:
    first = make_entry("k", b"one", 1, metadata={"a": "b"}, expires_at=T0 + SECOND)
    async with repository.transaction(space) as tx:
        assert tx.state == SpaceState()
        assert await tx.load(["k"]) == {}
        changes = [Change(1, "k", ChangeOp.PUT, 1)]
        await tx.save(revision=1, entries=[first], changes=changes, used_bytes=3, used_keys=1)
        assert await tx.load(["k"]) == {"k": first}  # sees its own write
        second = replace(first, value=b"two!", version=2, mod_revision=2, size=4)
        tomb = make_entry("t", None, 2, version=4, deleted=True)
        changes = [
            Change(2, "k", ChangeOp.PUT, 2, "client-1", 7),
            Change(2, "t", ChangeOp.DELETE, 4),
        ]
        await tx.save(
            revision=2, entries=[second, tomb], changes=changes, used_bytes=4, used_keys=1
        )
    state = await repository.space_state(space)
    assert (state.revision, state.used_bytes, state.used_keys) == (2, 4, 1)
    assert await repository.get(space, "k", T0) == (second, 2)
    assert await repository.get(space, "t", T0) == (None, 2)
    async with repository.transaction(space) as tx:
        assert await tx.load(["k", "t"]) == {"k": second, "t": tomb}
    assert await backend.changes(space) == [
        (1, "k", PUT, 1, "", 0),
        (2, "k", PUT, 2, "client-1", 7),
        (2, "t", DELETE, 4, "", 0),
    ]


async def test_transaction_rolls_back_on_an_exception(
    repository: Repository, backend: Backend, kv: KeyValueService, user: Principal, space: Space
) -> None:
    async def failing_write(target: Space, revision: int) -> None:
        async with repository.transaction(target) as tx:
            entries = [make_entry("k", b"lost", revision), make_entry("n", b"lost", revision)]
            changes = [Change(revision, "n", ChangeOp.PUT, 1)]
            await tx.save(
                revision=revision, entries=entries, changes=changes, used_bytes=8, used_keys=2
            )
            assert (await tx.load(["n"]))["n"].value == b"lost"
            raise RuntimeError("boom")

    await kv.put(user, space, PutCommand("k", b"kept"))
    fresh = Space(space.app_id, "bob")
    for target in (space, fresh):
        before = await repository.space_state(target)
        with pytest.raises(RuntimeError, match="boom"):
            await failing_write(target, before.revision + 1)
        assert await repository.space_state(target) == before
        assert await repository.get(target, "n", T0) == (None, before.revision)
    kept, _ = await repository.get(space, "k", T0)
    assert kept is not None
    assert kept.value == b"kept"
    assert await backend.changes(space) == [(1, "k", PUT, 1, "", 0)]
    assert await backend.changes(fresh) == []
    assert (await repository.app_usage(space.app_id, 10)).spaces == 1


async def test_a_failing_statement_is_a_bug_not_unavailable_and_rolls_back(
    repository: Repository, space: Space
) -> None:
    twice = [Change(1, "k", ChangeOp.PUT, 1), Change(1, "k", ChangeOp.PUT, 1)]  # same row

    async def broken_write(then_load: bool) -> None:
        async with repository.transaction(space) as tx:
            entries = [make_entry("k", b"v", 1)]
            await tx.save(revision=1, entries=entries, changes=twice, used_bytes=1, used_keys=1)
            if then_load:  # else the failure shows at commit
                await tx.load(["k"])

    for then_load in (True, False):
        with pytest.raises(Exception) as raised:  # noqa: PT011 - the driver's own error
            await broken_write(then_load)
        assert not isinstance(raised.value, Unavailable)
        assert "duplicate" in str(raised.value).lower() or "unique" in str(raised.value).lower()
        assert await repository.get(space, "k", T0) == (None, 0)
    await repository.ping()  # the connection (or pool) is still usable


async def test_core_write_over_quota_changes_nothing(
    repository: Repository, kv: KeyValueService, user: Principal, space: Space
) -> None:
    await repository.set_overrides(space.app_id, space.user_id, LimitOverrides(limit_keys=1), False)
    await kv.put(user, space, PutCommand("a", b"1"))
    with pytest.raises(QuotaExceeded):
        await kv.put(user, space, PutCommand("b", b"2"))
    state = await repository.space_state(space)
    assert (state.revision, state.used_keys) == (1, 1)
    assert await listed(repository, space) == ["a"]


# ---- values at rest ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "compressible", "stored_codec"),
    [
        (100 * 1024, True, codec.ZSTD),
        (1025, True, codec.ZSTD),
        (1024, True, codec.RAW),
        (5, True, codec.RAW),
        (0, True, codec.RAW),
        (4096, False, codec.RAW),  # zstd would not make it smaller
    ],
)
async def test_values_round_trip_compressed_above_one_kib(
    repository: Repository,
    backend: Backend,
    kv: KeyValueService,
    user: Principal,
    space: Space,
    size: int,
    compressible: bool,
    stored_codec: int,
) -> None:
    value = (b"0123456789abcdef" * (size // 16 + 1))[:size] if compressible else os.urandom(size)
    await kv.put(user, space, PutCommand("v", value))
    entry, _ = await repository.get(space, "v", T0)
    assert entry is not None
    assert (entry.value, entry.size, entry.checksum) == (value, size, checksum(value))
    at_rest_codec, at_rest_size = await backend.stored(space, "v")
    assert at_rest_codec == stored_codec
    assert at_rest_size < size if stored_codec == codec.ZSTD else at_rest_size == size
    assert (await repository.space_state(space)).used_bytes == size  # uncompressed
    async with repository.transaction(space) as tx:
        assert (await tx.load(["v"]))["v"].value == value


async def test_metadata_round_trips(
    repository: Repository, kv: KeyValueService, user: Principal, space: Space
) -> None:
    metadata = {"a": "1", "ключ": "значение", "empty": "", 'quote"s': "back\\slash", "😀": "x"}
    await kv.put(user, space, PutCommand("m", b"v", metadata=metadata))
    await kv.put(user, space, PutCommand("none", b"v"))
    entry, _ = await repository.get(space, "m", T0)
    bare, _ = await repository.get(space, "none", T0)
    assert entry is not None
    assert bare is not None
    assert (entry.metadata, bare.metadata) == (metadata, {})
    entries, _ = await list_all(repository, space)
    assert [e.metadata for e in entries] == [metadata, {}]


# ---- inside a transaction: due_expired, load_prefix -------------------------------


async def test_due_expired_returns_live_entries_past_expiry_without_values(
    repository: Repository, space: Space
) -> None:
    soon = make_entry("soon", b"1", 1, expires_at=T0 + SECOND)
    later = make_entry("later", b"22", 1, expires_at=T0 + 2 * SECOND)
    forever = make_entry("forever", b"333", 1)
    tomb = make_entry("tomb", None, 1, deleted=True, expires_at=T0)
    await store(repository, space, 1, soon, later, forever, tomb)
    async with repository.transaction(space) as tx:
        assert await tx.due_expired(T0) == []
        assert await tx.due_expired(T0 + SECOND) == [replace(soon, value=None)]
        due = sorted(await tx.due_expired(T0 + 5 * SECOND), key=lambda e: e.key)
        assert due == [replace(later, value=None), replace(soon, value=None)]
    async with repository.transaction(Space(space.app_id, "empty")) as tx:
        assert await tx.due_expired(T0 + 1000 * SECOND) == []
        # An entry saved with an expiry in this very transaction is due too.
        fresh = make_entry("fresh", b"4", 1, expires_at=T0 + SECOND)
        await tx.save(revision=1, entries=[fresh], changes=[], used_bytes=1, used_keys=1)
        assert await tx.due_expired(T0 + SECOND) == [replace(fresh, value=None)]


async def test_load_prefix_returns_live_entries_in_key_order_without_values(
    repository: Repository, space: Space
) -> None:
    entries = [
        make_entry("a/2", b"2", 1),
        make_entry("a/1", b"1", 1, metadata={"k": "v"}),
        make_entry("a/é", b"3", 1),
        make_entry("a/old", b"4", 1, expires_at=T0),
        make_entry("a/dead", None, 1, deleted=True),
        make_entry("a0", b"5", 1),
        make_entry("b", b"6", 1),
    ]
    await store(repository, space, 1, *entries)
    async with repository.transaction(space) as tx:
        under = await tx.load_prefix("a/", T0)
        everything = await tx.load_prefix("", T0)
    assert [e.key for e in under] == ["a/1", "a/2", "a/é"]
    assert under[0] == replace(entries[1], value=None)
    assert all(e.value is None for e in everything)
    assert [e.key for e in everything] == ["a/1", "a/2", "a/é", "a0", "b"]


# ---- the core end to end on the repository -----------------------------------------


async def test_core_versions_revisions_and_sweeps(
    repository: Repository,
    backend: Backend,
    kv: KeyValueService,
    clock: ManualClock,
    user: Principal,
    space: Space,
) -> None:
    await kv.put(user, space, PutCommand("k", b"1"))  # rev 1, v1
    await kv.put(user, space, PutCommand("k", b"22", expected_version=1))  # rev 2, v2
    await kv.delete(user, space, DeleteCommand("k"))  # rev 3, v3 (tombstone)
    with pytest.raises(VersionMismatch):
        await kv.put(user, space, PutCommand("k", b"x", expected_version=2))
    again = await kv.put(user, space, PutCommand("k", b"333", expected_version=3))  # rev 4, v4
    assert again.entry is not None
    assert (again.entry.version, again.entry.create_revision) == (4, 4)
    await kv.touch(user, space, TouchCommand("k", ttl=10 * SECOND))  # rev 5, v4
    await kv.put(user, space, PutCommand("p/1", b"a"))  # rev 6
    await kv.put(user, space, PutCommand("p/2", b"b"))  # rev 7
    assert (await kv.delete_prefix(user, space, "p/")).deleted_count == 2  # rev 8
    clock.advance(10 * SECOND)  # "k" expires: the next write sweeps it first (rev 9)
    await kv.put(user, space, PutCommand("n", b"4444"))  # rev 10
    async with repository.transaction(space) as tx:
        k = (await tx.load(["k"]))["k"]
    assert (k.deleted, k.version, k.mod_revision) == (True, 4, 9)
    clock.advance(SECOND)
    await kv.put(user, space, PutCommand("k2", b"x", ttl=SECOND))  # rev 11
    clock.advance(SECOND)  # "k2" expires; re-created in the write that sweeps it
    result = await kv.put(user, space, PutCommand("k2", b"55555", expected_version=1))  # 12, 13
    assert result.entry is not None
    assert (result.entry.version, result.entry.create_revision) == (2, 13)
    assert (result.revision, result.usage.used_bytes, result.usage.used_keys) == (13, 9, 2)
    entry, revision = await repository.get(space, "k2", clock.now())
    assert (revision, entry) == (13, result.entry)
    assert await backend.changes(space) == [
        (1, "k", PUT, 1, "", 0),
        (2, "k", PUT, 2, "", 0),
        (3, "k", DELETE, 3, "", 0),
        (4, "k", PUT, 4, "", 0),
        (5, "k", TOUCH, 4, "", 0),
        (6, "p/1", PUT, 1, "", 0),
        (7, "p/2", PUT, 1, "", 0),
        (8, "p/1", DELETE, 2, "", 0),
        (8, "p/2", DELETE, 2, "", 0),
        (9, "k", EXPIRE, 4, "", 0),
        (10, "n", PUT, 1, "", 0),
        (11, "k2", PUT, 1, "", 0),
        (12, "k2", EXPIRE, 1, "", 0),
        (13, "k2", PUT, 2, "", 0),
    ]


# ---- quota state -------------------------------------------------------------------


async def test_space_state_of_a_new_space_carries_the_app_overrides(
    repository: Repository, space: Space
) -> None:
    assert await repository.space_state(space) == SpaceState()
    await repository.set_overrides(space.app_id, None, LimitOverrides(limit_keys=5), False)
    expected = SpaceState(app_overrides=LimitOverrides(limit_keys=5))
    assert await repository.space_state(space) == expected
    async with repository.transaction(space) as tx:
        assert tx.state == expected


@pytest.mark.parametrize("user_id", [None, "alice", ""])
async def test_set_overrides_merges_and_resets(
    repository: Repository, space: Space, user_id: str | None
) -> None:
    app = space.app_id

    async def set_(overrides: LimitOverrides, reset: bool = False) -> LimitOverrides:
        return await repository.set_overrides(app, user_id, overrides, reset)

    assert await set_(LimitOverrides(limit_bytes=100)) == LimitOverrides(100, None, None)
    assert await set_(LimitOverrides(limit_keys=5)) == LimitOverrides(100, 5, None)
    assert await set_(LimitOverrides(limit_bytes=7, max_value_bytes=9)) == LimitOverrides(7, 5, 9)
    assert await set_(LimitOverrides()) == LimitOverrides(7, 5, 9)
    assert await set_(LimitOverrides(limit_keys=1), reset=True) == LimitOverrides(None, 1, None)
    state = await repository.space_state(Space(app, "someone" if user_id is None else user_id))
    overrides = LimitOverrides(None, 1, None)
    if user_id is None:
        assert (state.app_overrides, state.space_overrides) == (overrides, LimitOverrides())
    else:
        assert (state.app_overrides, state.space_overrides) == (LimitOverrides(), overrides)
        assert state.revision == 0
        assert (await repository.app_usage(app, 10)).spaces == 1


async def test_usage_detail(
    repository: Repository, kv: KeyValueService, user: Principal, space: Space
) -> None:
    puts = [
        PutCommand("j1", b'{"a":1}', "application/json"),
        PutCommand("j2", b"[1,2,3,4]", "application/json"),
        PutCommand("T", b"Hello", "Text/plain"),  # "T" sorts before "a" bytewise
        PutCommand("t", b"hello!", "text/plain", ttl=timedelta(hours=1)),
        PutCommand("o", b"12345678", ttl=timedelta(hours=2)),
        PutCommand("gone", b"x" * 50, ttl=SECOND),  # expired at T0 + 1s
        PutCommand("deleted", b"y" * 60),
    ]
    for cmd in puts:
        await kv.put(user, space, cmd)
    await kv.delete(user, space, DeleteCommand("deleted"))
    detail = await repository.usage_detail(space, T0 + SECOND, 3)
    assert detail == UsageDetail(
        by_content_type=(
            ContentTypeUsage("Text/plain", 5, 1),
            ContentTypeUsage("application/json", 16, 2),
            ContentTypeUsage("application/octet-stream", 8, 1),
            ContentTypeUsage("text/plain", 6, 1),
        ),
        expiring_keys=2,
        expiring_bytes=14,
        open_conflicts=0,
        largest_keys=(("j2", 9), ("o", 8), ("j1", 7)),
    )
    empty = await repository.usage_detail(Space(space.app_id, "nobody"), T0, 3)
    assert empty == UsageDetail((), 0, 0, 0, ())


async def test_app_usage_totals_and_largest_spaces(
    repository: Repository, kv: KeyValueService, admin: Principal, space: Space
) -> None:
    app = space.app_id
    assert await repository.app_usage(app, 5) == AppUsage(app, 0, 0, 0, LimitOverrides(), ())
    sizes = {"alice": 300, "bob": 100, "Zed": 300, "": 50}
    for user_id, size in sizes.items():
        await kv.put(admin, Space(app, user_id), PutCommand("k", b"x" * size))
    await kv.put(admin, Space(app, "bob"), PutCommand("k2", b"x"))
    await repository.set_overrides(app, None, LimitOverrides(limit_bytes=1000), False)
    await repository.set_overrides(app, "alice", LimitOverrides(limit_keys=3), False)
    usage = await repository.app_usage(app, 3)
    assert usage == AppUsage(
        app_id=app,
        spaces=4,
        used_bytes=751,
        used_keys=5,
        overrides=LimitOverrides(limit_bytes=1000),
        largest_spaces=(
            SpaceTotals(Space(app, "Zed"), 300, 1, LimitOverrides()),
            SpaceTotals(Space(app, "alice"), 300, 1, LimitOverrides(limit_keys=3)),
            SpaceTotals(Space(app, "bob"), 101, 2, LimitOverrides()),
        ),
    )


async def test_spaces_with_expired(
    repository: Repository, kv: KeyValueService, admin: Principal, space: Space
) -> None:
    app = space.app_id
    for user_id, ttl in [("a", SECOND), ("b", 2 * SECOND), ("c", None), ("d", timedelta(days=1))]:
        await kv.put(admin, Space(app, user_id), PutCommand("k", b"v", ttl=ttl))
        await kv.put(admin, Space(app, user_id), PutCommand("k2", b"v", ttl=ttl))

    async def due(now: datetime, limit: int = 10_000) -> set[str]:
        spaces = await repository.spaces_with_expired(now, limit)
        assert len(spaces) <= limit
        return {s.user_id for s in spaces if s.app_id == app}

    assert await due(T0) == set()
    assert await due(T0 + SECOND) == {"a"}
    assert await due(T0 + 5 * SECOND) == {"a", "b"}
    assert len(await repository.spaces_with_expired(T0 + 5 * SECOND, 1)) == 1
    sweeper = KeyValueService(
        repository=repository,
        writer=Writer(repository=repository, defaults=DEFAULTS),
        clock=ManualClock(T0 + 5 * SECOND),
    )
    await sweeper.delete(admin, Space(app, "a"), DeleteCommand("unrelated"))  # sweeps "a"
    assert await due(T0 + 5 * SECOND) == {"b"}


# ---- lifecycle ---------------------------------------------------------------------


async def test_migrations_applied_twice_are_a_no_op(
    repository: Repository, backend: Backend, kv: KeyValueService, user: Principal, space: Space
) -> None:
    await kv.put(user, space, PutCommand("k", b"v"))
    second = backend.make()
    await second.open()
    try:
        assert (await second.get(space, "k", T0))[0] is not None
    finally:
        await second.close()
    assert await backend.migrations() == [version for version, _, _ in scripts(backend.name)]


async def test_ping_answers_while_open_and_is_unavailable_after_close(
    repository: Repository, backend: Backend
) -> None:
    await repository.ping()
    closed = backend.make()
    await closed.open()
    await closed.close()
    with pytest.raises(Unavailable):
        await closed.ping()


async def test_concurrent_transactions_serialize_per_space(
    repository: Repository, backend: Backend, space: Space
) -> None:
    """16 read-modify-write transactions at once (on PostgreSQL each on its own pooled
    connection): none is lost, revisions have no gaps."""

    async def increment() -> None:
        async with repository.transaction(space) as tx:
            current = (await tx.load(["counter"])).get("counter")
            await asyncio.sleep(0.01)  # widen the window a lost update would need
            version = (current.version if current else 0) + 1
            revision = tx.state.revision + 1
            value = str(version).encode()
            entry = make_entry("counter", value, revision, version=version)
            if current is not None:
                entry = replace(entry, create_revision=current.create_revision)
            changes = [Change(revision, "counter", ChangeOp.PUT, version)]
            await tx.save(
                revision=revision,
                entries=[entry],
                changes=changes,
                used_bytes=len(value),
                used_keys=1,
            )

    await asyncio.gather(*(increment() for _ in range(16)))
    entry, revision = await repository.get(space, "counter", T0)
    assert entry is not None
    assert (entry.version, entry.value, entry.create_revision, revision) == (16, b"16", 1, 16)
    assert [c[0] for c in await backend.changes(space)] == list(range(1, 17))


async def test_concurrent_writers_never_overshoot_the_quota(
    repository: Repository, kv: KeyValueService, user: Principal, space: Space
) -> None:
    await repository.set_overrides(space.app_id, space.user_id, LimitOverrides(limit_keys=5), False)
    outcomes = await asyncio.gather(
        *(kv.put(user, space, PutCommand(f"k{i:02}", b"v")) for i in range(16)),
        return_exceptions=True,
    )
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 5
    assert all(isinstance(o, QuotaExceeded) for o in outcomes if isinstance(o, BaseException))
    state = await repository.space_state(space)
    assert (state.revision, state.used_keys, len(await listed(repository, space))) == (5, 5, 5)


# ---- PostgreSQL only ---------------------------------------------------------------


async def test_postgres_open_fails_fast_when_unreachable() -> None:
    repo = PostgresRepository(url="postgresql://postgres@127.0.0.1:1/nowhere")
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await repo.open()
    assert time.monotonic() - started < 10
    with pytest.raises(Unavailable):
        await repo.get(Space("app", "u"), "k", T0)


async def test_postgres_cut_connection_is_unavailable_then_replaced(postgres_url: str) -> None:
    repo = PostgresRepository(url=postgres_url, min_size=1, max_size=1)
    await repo.open()
    try:
        space = Space("app-cut", "u")
        await repo.get(space, "k", T0)
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND application_name = 'tmcp-storage'"
            )
        with pytest.raises(Unavailable):
            await repo.get(space, "k", T0)
        assert await repo.get(space, "k", T0) == (None, 0)
    finally:
        await repo.close()


async def test_postgres_concurrent_opens_of_a_fresh_database_migrate_once(
    postgres_url: str,
) -> None:
    name = f"tmcp_contract_{os.getpid()}_{time.monotonic_ns()}"
    base = postgres_url.rpartition("/")[0]
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            repos = [PostgresRepository(url=f"{base}/{name}") for _ in range(4)]
            await asyncio.gather(*(r.open() for r in repos))
            await asyncio.gather(*(r.close() for r in repos))
            backend = Backend("postgres", PostgresRepository, f"{base}/{name}")
            assert await backend.migrations() == [v for v, _, _ in scripts("postgres")]
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_postgres_warns_when_autovacuum_is_off(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        setting = (await (await conn.execute("SHOW autovacuum")).fetchone() or ("",))[0]
    repo = PostgresRepository(url=postgres_url)
    with caplog.at_level("WARNING", logger="tmcp_storage_server.store.postgres"):
        await repo.open()
        await repo.close()
    warned = any("autovacuum off" in r.getMessage() for r in caplog.records)
    assert warned == (setting != "on")


async def test_postgres_sessions_run_in_utc_whatever_the_url_asks(postgres_url: str) -> None:
    # In UTC psycopg returns datetime.UTC itself, and the repository's conversions cost
    # nothing; a URL asking for another zone must change neither that nor any instant.
    repo = PostgresRepository(url=postgres_url + "?options=-c%20TimeZone%3DAsia/Tokyo")
    await repo.open()
    try:
        space = Space(f"app-{uuid.uuid4().hex[:12]}", "alice")
        user = Principal(space.user_id, space.app_id, frozenset({Scope.READ, Scope.WRITE}))
        kv = KeyValueService(
            repository=repo, writer=Writer(repository=repo, defaults=DEFAULTS), clock=ManualClock()
        )
        expires = datetime(2030, 6, 1, 12, 0, 0, 654_321, tzinfo=timezone(timedelta(hours=9)))
        await kv.put(user, space, PutCommand("k", b"v", expires_at=expires))
        entry, _ = await repo.get(space, "k", T0)
        assert entry is not None
        assert (entry.created_at, entry.expires_at) == (T0, expires)
        assert entry.created_at.tzinfo is UTC
        async with repo._connection() as conn:  # the pool's own session
            assert conn.info.parameter_status("TimeZone") == "UTC"
            row = await (await conn.execute("SELECT now()")).fetchone()
            assert row is not None and row[0].tzinfo is UTC
    finally:
        await repo.close()
