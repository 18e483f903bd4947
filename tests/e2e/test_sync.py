"""Sync Push and conflicts through the real server and the client, on both backends."""

from __future__ import annotations

import pytest
from tmcp_storage import (
    Client,
    FailedPrecondition,
    InvalidArgument,
    Mutation,
    OutOfRange,
    PermissionDenied,
    QuotaExceeded,
    Result,
    Space,
    Strategy,
)

from tests.e2e.conftest import ClientFactory


def _set(mid: int, key: str, value: object, base: int | None = None) -> Mutation:
    return Mutation(mutation_id=mid, key=key, value=value, base_version=base)


def test_push_applies_in_order_and_reports_entries(alice: Client) -> None:
    pushed = alice.push("phone", [_set(1, "a", {"n": 1}), _set(2, "b", b"x")])
    assert [o.result for o in pushed.outcomes] == [Result.APPLIED, Result.APPLIED]
    assert pushed.outcomes[0].entry is not None and pushed.outcomes[0].entry.version == 1
    assert pushed.last_mutation_id == 2
    assert alice.get("a").value == {"n": 1}
    assert alice.status("phone").last_mutation_id == 2


def test_duplicates_after_a_lost_response_apply_once(alice: Client) -> None:
    batch = [
        _set(1, "k", {"v": 1}),
        _set(2, "k", {"v": 2}),
        Mutation(mutation_id=3, key="j", delete=True),
    ]
    first = alice.push("phone", batch)
    again = alice.push("phone", batch)  # the first reply was "lost": the client retries
    assert [o.result for o in again.outcomes] == [Result.DUPLICATE] * 3
    assert [o.original_result for o in again.outcomes] == [o.result for o in first.outcomes]
    assert alice.get("k").version == 2  # applied once
    overlap = alice.push("phone", [_set(3, "j", 0), _set(4, "k", {"v": 4})])
    assert [o.result for o in overlap.outcomes] == [Result.DUPLICATE, Result.APPLIED]
    assert alice.get("k").value == {"v": 4} and alice.get("k").version == 3
    assert overlap.last_mutation_id == 4


def test_gap_fails_whole_push_with_expected_id(alice: Client) -> None:
    alice.push("phone", [_set(1, "a", 1)])
    with pytest.raises(OutOfRange) as caught:
        alice.push("phone", [_set(3, "b", 1), _set(4, "c", 1)])
    assert caught.value.reason == "MUTATION_GAP"
    assert caught.value.metadata["expected_mutation_id"] == "2"
    assert [e.key for e in alice.list()] == ["a"]
    assert alice.status("phone").last_mutation_id == 1


def test_ids_must_rise_by_exactly_one_before_anything_applies(alice: Client) -> None:
    with pytest.raises(InvalidArgument):
        alice.push("phone", [_set(1, "a", 1), _set(3, "b", 1)])
    with pytest.raises(InvalidArgument):
        alice.push("phone", [_set(2, "a", 1), _set(1, "b", 1)])
    assert list(alice.list()) == []
    assert alice.status("phone").last_mutation_id == 0


def test_permanent_failures_are_rejected_and_advance(
    alice: Client, connect: ClientFactory, app_id: str
) -> None:
    admin = connect(app_id, "backend", "storage:admin", space=Space(app_id, "alice"))
    admin.set_quota(space=Space(app_id, "alice"), limit_keys=1)
    pushed = alice.push(
        "phone",
        [
            _set(1, "", b"bad key"),
            _set(2, "one", b"fits"),
            _set(3, "two", b"over the key limit"),
            _set(4, "one", b"replaces"),
        ],
    )
    results = [o.result for o in pushed.outcomes]
    assert results == [Result.REJECTED, Result.APPLIED, Result.REJECTED, Result.APPLIED]
    assert isinstance(pushed.outcomes[0].error, InvalidArgument)
    assert pushed.outcomes[0].error.reason == "INVALID_KEY"
    assert isinstance(pushed.outcomes[2].error, QuotaExceeded)
    assert pushed.last_mutation_id == 4
    again = alice.push("phone", [_set(3, "two", b"over the key limit")])
    assert again.outcomes[0].result == Result.DUPLICATE
    assert again.outcomes[0].original_result == Result.REJECTED
    assert isinstance(again.outcomes[0].error, QuotaExceeded)
    assert alice.get("one").value == b"replaces"


def test_client_id_belongs_to_its_first_user(
    alice: Client, connect: ClientFactory, app_id: str
) -> None:
    alice.push("phone", [_set(1, "a", 1)])
    admin = connect(app_id, "backend", "storage:admin", space=Space(app_id, "alice"))
    with pytest.raises(PermissionDenied):
        admin.push("phone", [_set(2, "a", 2)])
    admin.push("backend-tool", [_set(1, "b", 2)])  # its own id in the same space is fine
    assert alice.get("a").value == 1


def test_last_write_wins_records_the_overwritten_value(alice: Client) -> None:
    alice.put("doc", {"v": "server"})
    alice.put("doc", {"v": "server2"})
    pushed = alice.push("phone", [_set(1, "doc", {"v": "client"}, base=1)])
    outcome = pushed.outcomes[0]
    assert outcome.result == Result.APPLIED and outcome.conflict_id
    assert alice.get("doc").value == {"v": "client"}
    assert list(alice.conflicts()) == []  # resolved
    (record,) = alice.conflicts(include_resolved=True)
    assert record.conflict_id == outcome.conflict_id and not record.open
    assert record.server_value == {"v": "server2"}
    assert record.client_value == {"v": "client"}
    assert record.strategy == Strategy.LAST_WRITE_WINS


def test_merge_three_way_against_the_retained_base(alice: Client) -> None:
    alice.put("profile", {"name": "Ann", "age": 30, "city": "Oslo"})  # version 1: the base
    alice.put("profile", {"name": "Ann", "age": 31, "city": "Oslo"})  # another device
    pushed = alice.push(
        "phone",
        [_set(1, "profile", {"name": "Anna", "age": 30, "city": "Bergen"}, base=1)],
        strategy=Strategy.MERGE,
    )
    assert pushed.outcomes[0].result == Result.APPLIED and pushed.outcomes[0].conflict_id
    assert alice.get("profile").value == {"name": "Anna", "age": 31, "city": "Bergen"}


def test_merge_without_base_is_a_merge_patch_and_non_json_falls_back(alice: Client) -> None:
    alice.put("p", {"a": 1, "b": 1})
    for n in range(7):  # the base version 1 is no longer retained
        alice.put("p", {"a": 1, "b": 2, "n": n})
    pushed = alice.push("c", [_set(1, "p", {"b": 3, "c": 1}, base=1)], strategy=Strategy.MERGE)
    assert pushed.outcomes[0].result == Result.APPLIED
    assert alice.get("p").value == {"a": 1, "b": 3, "n": 6, "c": 1}
    alice.put("raw", b"server")
    alice.put("raw", b"server2")
    alice.push("c", [_set(2, "raw", b"client", base=1)], strategy=Strategy.MERGE)
    assert alice.get("raw").value == b"client"


def test_manual_keeps_the_server_value_until_resolved(alice: Client) -> None:
    alice.put("doc", b"server")
    alice.put("doc", b"server2")
    pushed = alice.push("phone", [_set(1, "doc", b"client", base=1)], strategy=Strategy.MANUAL)
    outcome = pushed.outcomes[0]
    assert outcome.result == Result.CONFLICT and outcome.conflict_id
    assert outcome.entry is not None and outcome.entry.version == 2
    assert alice.get("doc").value == b"server2"
    assert alice.usage().open_conflicts == 1
    assert alice.status("phone").open_conflicts == 1
    (record,) = alice.conflicts()
    assert record.open and record.client_value == b"client"
    entry = alice.resolve_conflict(record.conflict_id, "client")
    assert entry is not None and entry.version == 3
    assert alice.get("doc").value == b"client"
    assert alice.usage().open_conflicts == 0
    with pytest.raises(FailedPrecondition) as caught:
        alice.resolve_conflict(record.conflict_id, "server")
    assert caught.value.reason == "CONFLICT_RESOLVED"


def test_keep_both_applies_and_keeps_the_sibling(alice: Client) -> None:
    alice.put("note", {"t": "server"})
    alice.put("note", {"t": "server2"})
    pushed = alice.push(
        "phone", [_set(1, "note", {"t": "client"}, base=1)], strategy=Strategy.KEEP_BOTH
    )
    assert pushed.outcomes[0].result == Result.APPLIED
    assert alice.get("note").value == {"t": "client"}
    (record,) = alice.conflicts()
    assert record.open and record.server_value == {"t": "server2"}
    alice.resolve_conflict(record.conflict_id, "value", {"t": "both"})
    assert alice.get("note").value == {"t": "both"}
    assert list(alice.conflicts()) == []


def test_blind_writes_never_conflict(alice: Client) -> None:
    alice.put("k", b"1")
    alice.put("k", b"2")
    pushed = alice.push("phone", [_set(1, "k", b"3")], strategy=Strategy.MANUAL)
    assert pushed.outcomes[0].result == Result.APPLIED and not pushed.outcomes[0].conflict_id


def test_a_merge_over_the_value_limit_is_rejected(
    alice: Client, connect: ClientFactory, app_id: str
) -> None:
    admin = connect(app_id, "backend", "storage:admin", space=Space(app_id, "alice"))
    admin.set_quota(space=Space(app_id, "alice"), max_value_bytes=60)
    alice.put("doc", {"a": "x" * 20})
    alice.put("doc", {"a": "x" * 20, "b": "y" * 20})
    pushed = alice.push(
        "phone", [_set(1, "doc", {"a": "x" * 20, "c": "z" * 20}, base=1)], strategy=Strategy.MERGE
    )
    assert pushed.outcomes[0].result == Result.REJECTED
    assert isinstance(pushed.outcomes[0].error, InvalidArgument)
    assert pushed.outcomes[0].error.reason == "VALUE_TOO_LARGE"
    assert alice.get("doc").value == {"a": "x" * 20, "b": "y" * 20}
