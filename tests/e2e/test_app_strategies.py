"""The app's configured default conflict strategy (``STORAGE_APP_STRATEGIES``): a push or a
Stream that names no strategy gets its app's default, else LAST_WRITE_WINS; a named one
always wins. On both backends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from tmcp.storage.v1 import sync_pb2, types_pb2
from tmcp_storage import Client, Mutation, Result, Space, Strategy

from tests.e2e.harness import ServerProcess, token
from tests.e2e.test_stream import Session


@dataclass(frozen=True)
class Apps:
    """A server configured with a MERGE app and a MANUAL app."""

    server: ServerProcess
    merge: str
    manual: str


@pytest.fixture(scope="module")
def apps(database_url: str) -> Iterator[Apps]:
    """A server whose two fresh apps default to MERGE and MANUAL."""
    merge, manual = (f"app-{uuid.uuid4().hex[:12]}" for _ in range(2))
    env = {"STORAGE_APP_STRATEGIES": f"{merge}=merge, {manual}=MANUAL"}
    process = ServerProcess(database_url, env=env).start()
    try:
        yield Apps(process, merge, manual)
    finally:
        process.stop()


def _user(apps: Apps, app_id: str, user: str = "") -> Client:
    """A client of a fresh user (the apps outlive one test)."""
    user = user or f"user-{uuid.uuid4().hex[:8]}"
    return Client(apps.server.target, token=token(app_id, user), space=Space(app_id, user))


def _conflicting(alice: Client, key: str) -> Mutation:
    """A mutation based on version 1 of ``key`` while the server holds version 2."""
    alice.put(key, {"a": 1, "b": 1})
    alice.put(key, {"a": 2, "b": 1})
    return Mutation(mutation_id=1, key=key, value={"a": 1, "b": 3}, base_version=1)


def test_unset_strategy_takes_the_apps_default(apps: Apps) -> None:
    with _user(apps, apps.manual) as alice:
        (outcome,) = alice.push("phone", [_conflicting(alice, "doc")]).outcomes
        assert outcome.result == Result.CONFLICT
        assert alice.get("doc").value == {"a": 2, "b": 1}
        (record,) = alice.conflicts()
        assert record.open and record.strategy == Strategy.MANUAL
    with _user(apps, apps.merge) as alice:
        (outcome,) = alice.push("phone", [_conflicting(alice, "doc")]).outcomes
        assert outcome.result == Result.APPLIED
        assert alice.get("doc").value == {"a": 2, "b": 3}  # three-way merge
        (record,) = alice.conflicts(include_resolved=True)
        assert record.strategy == Strategy.MERGE


def test_a_named_strategy_and_other_apps_are_unchanged(apps: Apps) -> None:
    with _user(apps, apps.manual) as alice:
        pushed = alice.push(
            "phone", [_conflicting(alice, "doc")], strategy=Strategy.LAST_WRITE_WINS
        )
        assert pushed.outcomes[0].result == Result.APPLIED
        assert alice.get("doc").value == {"a": 1, "b": 3}
    with _user(apps, f"app-{uuid.uuid4().hex[:12]}") as alice:  # no configured default
        (outcome,) = alice.push("phone", [_conflicting(alice, "doc")]).outcomes
        assert outcome.result == Result.APPLIED
        assert alice.get("doc").value == {"a": 1, "b": 3}
        (record,) = alice.conflicts(include_resolved=True)
        assert record.strategy == Strategy.LAST_WRITE_WINS


def _stream_push(
    apps: Apps, user: str, key: str, hello_strategy: sync_pb2.ConflictStrategy.ValueType
) -> sync_pb2.MutationOutcome:
    space = types_pb2.Space(app_id=apps.manual, user_id=user)
    session = Session(apps.server.target, apps.manual, user)
    try:
        hello = sync_pb2.StreamHello(space=space, client_id=f"tab-{key}", strategy=hello_strategy)
        session.send(sync_pb2.StreamRequest(hello=hello))
        session.next("ready")
        mutation = sync_pb2.Mutation(
            mutation_id=1,
            op=sync_pb2.MUTATION_OP_SET,
            key=key,
            value=types_pb2.Value(raw=b"client"),
            base_version=1,
        )
        push = sync_pb2.StreamPush(push_id=1, mutations=[mutation])
        session.send(sync_pb2.StreamRequest(push=push))
        (outcome,) = session.next("push_result").push_result.outcomes
        return outcome
    finally:
        session.close()


def test_stream_without_strategy_takes_the_apps_default(apps: Apps) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    with _user(apps, apps.manual, user) as alice:
        for key in ("s1", "s2"):
            alice.put(key, b"server")
            alice.put(key, b"server2")
        default = _stream_push(apps, user, "s1", sync_pb2.CONFLICT_STRATEGY_UNSPECIFIED)
        assert default.result == sync_pb2.PUSH_RESULT_CONFLICT
        assert alice.get("s1").value == b"server2"
        named = _stream_push(apps, user, "s2", sync_pb2.CONFLICT_STRATEGY_LAST_WRITE_WINS)
        assert named.result == sync_pb2.PUSH_RESULT_APPLIED
        assert alice.get("s2").value == b"client"
