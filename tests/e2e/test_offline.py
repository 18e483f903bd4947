"""The Python OfflineStore against the real server, on both backends."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tmcp_storage import (
    Client,
    MutationOutcome,
    NotFound,
    Result,
    Space,
    Strategy,
    Unavailable,
)
from tmcp_storage.offline import OfflineStore

from tests.e2e.accounting import Ledger, RecordingClient, check_outcomes_are_stored
from tests.e2e.harness import ServerProcess, token


def test_offline_writes_survive_a_restart_and_sync(alice: Client, tmp_path: Path) -> None:
    path = str(tmp_path / "phone.db")
    store = OfflineStore(path, alice, client_id="phone")
    store.put("note", {"text": "hi"})
    store.put("blob", b"\x00\x01")
    store.delete("blob")
    store.close()
    reopened = OfflineStore(path, alice, client_id="phone")
    assert reopened.pending == 3
    assert reopened.get("note") == {"text": "hi"} and reopened.get("blob") is None
    reopened.sync()
    assert reopened.pending == 0
    assert alice.get("note").value == {"text": "hi"}
    assert [e.key for e in alice.list()] == ["note"]
    reopened.close()


def test_manual_conflict_reaches_the_callback_and_adopts_the_server(
    alice: Client, tmp_path: Path
) -> None:
    seen: list[tuple[str, MutationOutcome]] = []
    store = OfflineStore(
        str(tmp_path / "a.db"),
        alice,
        client_id="phone",
        strategy=Strategy.MANUAL,
        on_conflict=lambda key, outcome: seen.append((key, outcome)),
    )
    alice.put("doc", {"v": 1})
    store.sync()
    assert store.get("doc") == {"v": 1}
    alice.put("doc", {"v": "server"})  # another device, while the phone is offline
    store.put("doc", {"v": "phone"})
    store.sync()
    assert [(k, o.result) for k, o in seen] == [("doc", Result.CONFLICT)]
    assert store.get("doc") == {"v": "server"}
    assert next(iter(alice.conflicts())).client_value == {"v": "phone"}
    store.close()


@pytest.mark.parametrize("seed", [4, 11])
def test_stores_converge_after_random_offline_work(
    server: ServerProcess, app_id: str, alice: Client, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    strategies = [Strategy.LAST_WRITE_WINS, Strategy.MERGE, Strategy.MANUAL, Strategy.KEEP_BOTH]
    recorder = RecordingClient(
        server.target, token=token(app_id, "alice"), space=Space(app_id, "alice"), retries=0
    )
    stores = [
        OfflineStore(
            str(tmp_path / f"s{i}.db"),
            recorder,
            client_id=f"device-{i}",
            strategy=strategies[i % 4],
        )
        for i in range(5)
    ]
    keys = [f"k{i}" for i in range(6)]
    for _ in range(8):
        for index, store in enumerate(stores):
            for _ in range(rng.randint(0, 4)):
                key = rng.choice(keys)
                if rng.random() < 0.2:
                    store.delete(key)
                elif rng.random() < 0.5:
                    store.put(key, {"n": rng.randint(0, 99), "by": index})
                else:  # some with a TTL long enough to outlive the test
                    ttl = 600.0 if rng.random() < 0.5 else None
                    store.put(key, bytes([rng.randint(0, 255)]), ttl=ttl)
            if rng.random() < 0.5:  # online this round
                store.sync()
    stores[0].put("with-ttl", b"last", ttl=600.0)  # at least one TTL write survives
    for store in stores:
        store.sync()
    for store in stores:
        store.pull()
    listed = list(alice.list(include_values=True))
    server_state = {e.key: e.value for e in listed}
    server_expiry = {e.key: e.expires_at for e in listed}
    assert any(server_expiry.values()), "the run stored no TTL write"
    for store in stores:
        assert store.pending == 0
        assert dict(store.items()) == server_state
        assert {key: store.expires_at(key) for key in server_state} == server_expiry
        store.close()
    # Every pushed mutation is accounted for: its effect, or what replaced it, or its record.
    records = {c.conflict_id: c for c in alice.conflicts(include_resolved=True)}
    assert records, "the run made no conflicts"
    ledger = Ledger(records)
    ledger.replay(recorder.pushes)
    assert ledger.state() == server_state
    assert ledger.counts.get(Result.APPLIED) and ledger.counts.get(Result.CONFLICT)
    check_outcomes_are_stored(alice, recorder.pushes)
    recorder.close()


def test_ttl_writes_expire_locally_and_on_the_server(alice: Client, tmp_path: Path) -> None:
    store = OfflineStore(str(tmp_path / "ttl.db"), alice, client_id="phone")
    store.put("short", b"x", ttl=0.6)
    store.put("long", b"y", ttl=600)
    assert store.get("short") == b"x"
    store.sync()
    server_short = alice.get("short").expires_at
    assert server_short is not None and store.expires_at("short") == server_short
    time.sleep(0.8)
    assert store.get("short") is None  # hidden locally at once, before any sync
    with pytest.raises(NotFound):
        alice.get("short")
    _eventually(lambda: _pulled_expiry(store))
    assert dict(store.items()) == {"long": b"y"}
    store.close()


def _pulled_expiry(store: OfflineStore) -> bool:
    store.pull()  # the server's sweep turns the expiry into an EXPIRE change
    return store.expires_at("short") is None  # a tombstone now, not an expired value


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_run_keeps_a_stream_open_both_ways(alice: Client, tmp_path: Path) -> None:
    store = OfflineStore(str(tmp_path / "live.db"), alice, client_id="live")
    store.put("queued", b"before")  # queued before the stream opens
    stop = threading.Event()
    runner = threading.Thread(target=store.run, args=(stop,))
    runner.start()
    try:
        _eventually(lambda: _server_value(alice, "queued") == b"before")
        alice.put("from-server", {"x": 1})
        _eventually(lambda: store.get("from-server") == {"x": 1})
        store.put("from-store", b"live")
        _eventually(lambda: _server_value(alice, "from-store") == b"live")
        _eventually(lambda: store.pending == 0)
    finally:
        stop.set()
        runner.join(timeout=10)
    assert not runner.is_alive()
    store.close()


def test_run_reconnects_and_resumes_after_a_server_restart(
    database_url: str, app_id: str, tmp_path: Path
) -> None:
    first = ServerProcess(database_url).start()
    port = first.port
    space = Space(app_id, "alice")
    client = Client(
        first.target,
        token=token(app_id, "alice"),
        space=space,
        retries=0,
        options=[("grpc.max_reconnect_backoff_ms", 500)],
    )
    store = OfflineStore(str(tmp_path / "r.db"), client, client_id="r")
    stop = threading.Event()
    runner = threading.Thread(target=store.run, args=(stop,), kwargs={"max_delay": 0.5})
    runner.start()
    second: ServerProcess | None = None
    try:
        client.put("a", b"1")
        _eventually(lambda: store.get("a") == b"1")
        first.stop()
        store.put("offline", b"queued while down")
        second = ServerProcess(database_url, port=port).start()
        _eventually(lambda: _server_value(client, "offline") == b"queued while down", 20)
        client.put("b", b"2")
        _eventually(lambda: store.get("b") == b"2")
    finally:
        stop.set()
        runner.join(timeout=10)
        first.stop()
        if second is not None:
            second.stop()
        client.close()
    assert not runner.is_alive()
    store.close()


def _server_value(client: Client, key: str) -> object:
    try:
        return client.get(key).value
    except (NotFound, Unavailable):
        return None
