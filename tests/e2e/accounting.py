"""Accounting for the convergence test: every pushed mutation's fate, replayed.

A ``RecordingClient`` remembers each push (its mutations and outcomes) and, right after
it, the server's state of the keys it touched. The pushes of the test happen one at a time,
so replaying them in order against a model of each key (version, value) checks that every
outcome is what the server did: an APPLIED mutation became the key's state, and whatever
later replaced it either had seen it (its base version) or left a conflict record holding
it; a CONFLICT left an open record and the key unchanged; a REJECTED changed nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tmcp_storage import (
    Client,
    Conflict,
    Mutation,
    MutationOutcome,
    NotFound,
    PushResult,
    Result,
    Space,
    Strategy,
)


@dataclass(frozen=True)
class Push:
    """One recorded push and the touched keys' server values after it (None: absent)."""

    client_id: str
    strategy: Strategy
    mutations: list[Mutation]
    outcomes: list[MutationOutcome]
    after: dict[str, Any]


class RecordingClient(Client):
    """A client that records every push (for ``Ledger.replay``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pushes: list[Push] = []

    def push(
        self,
        client_id: str,
        mutations: Sequence[Mutation],
        *,
        strategy: Strategy | str = Strategy.DEFAULT,
        space: Space | None = None,
        timeout: float | None = None,
    ) -> PushResult:
        """Push, then read back (bypassing caches) every key the push touched."""
        result = super().push(client_id, mutations, strategy=strategy, space=space)
        after: dict[str, Any] = {}
        for key in {m.key for m in mutations}:
            try:
                after[key] = self.get(key, strong=True, space=space).value
            except NotFound:
                after[key] = None
        self.pushes.append(
            Push(client_id, Strategy(strategy), list(mutations), result.outcomes, after)
        )
        return result


@dataclass
class KeyState:
    """The model of one key: its version (a tombstone's too) and value (None: absent)."""

    version: int = 0
    value: Any = None
    known: bool = True
    """False after a MERGE: the merged value is learnt from the read after the push."""

    @property
    def live(self) -> bool:
        return not self.known or self.value is not None


@dataclass
class Ledger:
    """The replay of every recorded push against the conflict records of the space."""

    conflicts: Mapping[str, Conflict]
    keys: dict[str, KeyState] = field(default_factory=dict)
    referenced: set[str] = field(default_factory=set)
    counts: dict[Result, int] = field(default_factory=dict)

    def replay(self, pushes: Iterable[Push]) -> None:
        """Check every outcome against the model, then the model against the reads."""
        for push in pushes:
            assert [o.mutation_id for o in push.outcomes] == [m.mutation_id for m in push.mutations]
            for m, outcome in zip(push.mutations, push.outcomes, strict=True):
                self._account(push, m, outcome)
            for key, value in push.after.items():
                state = self.keys.setdefault(key, KeyState())
                assert not state.known or state.value == value, (key, state, value)
                state.value, state.known = value, True
        assert self.referenced == set(self.conflicts), "conflict records without an outcome"

    def state(self) -> dict[str, Any]:
        """The live keys of the model."""
        assert all(s.known for s in self.keys.values())
        return {k: s.value for k, s in sorted(self.keys.items()) if s.value is not None}

    def _account(self, push: Push, m: Mutation, outcome: MutationOutcome) -> None:
        state = self.keys.setdefault(m.key, KeyState())
        result = outcome.result
        assert result is not Result.DUPLICATE, "no reply was lost in this test"
        self.counts[result] = self.counts.get(result, 0) + 1
        conflicting = m.base_version is not None and m.base_version != state.version
        value = None if m.delete else m.value
        if result is Result.REJECTED:
            assert outcome.error is not None and not outcome.conflict_id
            return
        if conflicting:
            record = self._record(push, m, outcome, state, value)
            expect_open = push.strategy in (Strategy.MANUAL, Strategy.KEEP_BOTH)
            assert record.open == expect_open, record
        else:
            assert not outcome.conflict_id, (m, outcome)
        if result is Result.CONFLICT:
            assert conflicting and push.strategy is Strategy.MANUAL
            return  # the server kept its value
        assert result is Result.APPLIED, outcome
        if m.delete:
            if state.live:
                state.version, state.value, state.known = state.version + 1, None, True
            return
        assert outcome.entry is not None and outcome.entry.version == state.version + 1
        merged = conflicting and push.strategy is Strategy.MERGE and state.live
        state.version, state.value, state.known = state.version + 1, value, not merged

    def _record(
        self, push: Push, m: Mutation, outcome: MutationOutcome, state: KeyState, value: Any
    ) -> Conflict:
        """The conflict record of a conflicting mutation holds both sides."""
        assert outcome.conflict_id in self.conflicts, (m, outcome)
        self.referenced.add(outcome.conflict_id)
        record = self.conflicts[outcome.conflict_id]
        assert (record.key, record.client_id, record.mutation_id) == (
            m.key,
            push.client_id,
            m.mutation_id,
        )
        assert record.strategy is push.strategy
        assert record.base_version == (m.base_version or 0)
        assert record.client_value == value
        if state.known:  # the value this mutation overwrote (or would have) is kept
            assert record.server_value == state.value, (record, state)
        return record


def check_outcomes_are_stored(client: Client, pushes: Sequence[Push]) -> None:
    """Pushing every mutation again returns DUPLICATE with the outcome stored the first
    time: each outcome, REJECTED ones included, is recorded on the server."""
    by_client: dict[str, list[tuple[Mutation, MutationOutcome]]] = {}
    for push in pushes:
        by_client.setdefault(push.client_id, []).extend(
            zip(push.mutations, push.outcomes, strict=True)
        )
    for client_id, pairs in by_client.items():
        again = client.push(client_id, [m for m, _ in pairs])
        for (_, first), second in zip(pairs, again.outcomes, strict=True):
            assert second.result is Result.DUPLICATE
            assert (second.original_result, second.conflict_id) == (
                first.result,
                first.conflict_id,
            )
            if first.error is not None:
                assert second.error is not None and second.error.reason == first.error.reason
