"""``serve --workers N``: processes sharing one port under a supervisor."""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tmcp_storage import Client, Space

from tests.e2e.harness import ServerProcess, token


def _worker_pids(server: ServerProcess) -> dict[int, int]:
    """The current pid of each worker slot, from the supervisor's log."""
    pids: dict[int, int] = {}
    for slot, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", server.log()):
        pids[int(slot)] = int(pid)
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited too.
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def _calls_on_fresh_connections(server: ServerProcess, app_id: str, count: int) -> None:
    """Each call on its own connection, so SO_REUSEPORT spreads them over the workers."""
    for i in range(count):
        with Client(
            server.target,
            token=token(app_id, "alice"),
            space=Space(app_id, "alice"),
            retries=2,
            timeout=5,
        ) as client:
            client.put(f"k{i}", b"v")
            assert client.get(f"k{i}").value == b"v"  # this worker's L1: it wrote it


def _served_by(server: ServerProcess, pids: list[int]) -> dict[int, int]:
    """Reads each worker served from its L1, from the cache stats it logs at shutdown."""
    served = {}
    for pid, hits in re.findall(r" (\d+) INFO \S+: cache stats: l1_hits=(\d+)", server.log()):
        served[int(pid)] = int(hits)
    return {pid: served.get(pid, 0) for pid in pids}


def test_two_workers_serve_restart_and_stop_together(postgres_url: str) -> None:
    app_id = "app-" + uuid.uuid4().hex[:12]
    server = ServerProcess(postgres_url, env={"STORAGE_WORKERS": "2"}).start()
    try:
        pids = _worker_pids(server)
        assert sorted(pids) == [0, 1] and all(_alive(p) for p in pids.values())
        assert server.log().count("listening on") == 1

        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while _worker_pids(server)[0] == pids[0]:
            assert time.monotonic() < deadline, "worker 0 was not restarted\n" + server.log()
            time.sleep(0.05)
        restarted = _worker_pids(server)
        assert restarted[1] == pids[1] and _alive(restarted[0])
        while f"{restarted[0]} INFO tmcp_storage_server: serving on" not in server.log():
            assert time.monotonic() < deadline, "worker 0 did not serve again\n" + server.log()
            time.sleep(0.05)
        _wait_health(server)
        _calls_on_fresh_connections(server, app_id, 40)
    finally:
        assert server.stop(signal.SIGTERM) == 0
    assert not any(_alive(p) for p in restarted.values())
    reads = _served_by(server, list(restarted.values()))
    assert all(hits > 0 for hits in reads.values()), reads  # both workers took calls


def _wait_health(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=5, wait_for_ready=True)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_embedded_sqlite_serves_with_one_worker(tmp_path: Path) -> None:
    server = ServerProcess(
        "sqlite:///" + str(tmp_path / "storage.db"), env={"STORAGE_WORKERS": "3"}
    ).start()
    try:
        assert "served by one process: ignoring workers=3" in server.log()
        assert "worker 0 started" not in server.log()
    finally:
        assert server.stop() == 0


def test_workers_die_with_a_killed_supervisor(postgres_url: str) -> None:
    server = ServerProcess(postgres_url, env={"STORAGE_WORKERS": "2"}).start()
    pids = list(_worker_pids(server).values())
    server.kill()
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, "workers outlived their supervisor"
        time.sleep(0.05)
