"""Drive a gRPC method with h2load and measure the server while it runs.

gRPC over HTTP/2 is a POST of a length-prefixed message; h2load (about 50 us of CPU per
call, against 270-340 us for a Python client) keeps the load generator from starving the
server on this 2-core machine. h2load sees only HTTP status, so callers check grpc-status
with a real client call before each run.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import Message

_DONE = re.compile(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded")
_TICKS = os.sysconf("SC_CLK_TCK")


def grpc_body(message: Message) -> bytes:
    """The HTTP/2 body of a unary gRPC call: flag 0, big-endian length, message."""
    data = message.SerializeToString()
    return b"\x00" + len(data).to_bytes(4, "big") + data


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def pin(pid: int, cpus: str) -> None:
    """Run every thread of ``pid`` and its descendants on ``cpus`` only."""
    for each in process_tree(pid):
        subprocess.run(
            ["taskset", "-a", "-p", "-c", cpus, str(each)], check=True, capture_output=True
        )


def peak_rss_mib(pids: list[int]) -> float:
    """The largest peak resident set (VmHWM) among these processes, in MiB."""
    peak = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return peak / 1024


@dataclass(frozen=True)
class Load:
    """One h2load run: per space (one h2load process each) a body and a token."""

    port: int
    path: str
    bodies: list[bytes]
    tokens: list[str]
    connections: int = 4
    streams: int = 4
    duration: float = 5.0
    warm_up: float = 1.0
    cpus: str = ""
    """If set, h2load runs on these CPUs only (``taskset -c``)."""


@dataclass(frozen=True)
class Result:
    """Throughput, latency and server cost of one run."""

    calls_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_call: float
    failed: int


def run(load: Load, server_pid: int | None) -> Result:
    """Run h2load processes in parallel (one per body) and measure the server."""
    with tempfile.TemporaryDirectory() as folder:
        procs, logs = [], []
        for index, (body, token) in enumerate(zip(load.bodies, load.tokens, strict=True)):
            body_path, log_path = Path(folder, f"body{index}"), Path(folder, f"log{index}")
            body_path.write_bytes(body)
            logs.append(log_path)
            command = [
                "h2load",
                "-c",
                str(load.connections),
                "-m",
                str(load.streams),
                "-D",
                str(int(load.duration)),
                "--warm-up-time",
                str(int(load.warm_up)),
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                "-H",
                f"authorization: Bearer {token}",
                "-d",
                str(body_path),
                f"--log-file={log_path}",
                f"http://127.0.0.1:{load.port}{load.path}",
            ]
            if load.cpus:
                command = ["taskset", "-c", load.cpus, *command]
            procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
        pids = process_tree(server_pid) if server_pid else []
        time.sleep(load.warm_up)
        cpu_start = cpu_seconds(pids)
        outputs = [p.communicate()[0] for p in procs]
        cpu_used = cpu_seconds(pids) - cpu_start
        done = failed = 0
        for output in outputs:
            match = _DONE.search(output)
            assert match, output
            done += int(match.group(1))
            failed += int(match.group(1)) - int(match.group(2))
        latencies = sorted(
            int(line.split("\t")[2]) for log in logs for line in log.read_text().splitlines()
        )
    cut = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return Result(
        calls_per_s=done / load.duration,
        p50_ms=cut[49] / 1000,
        p99_ms=cut[98] / 1000,
        cpu_us_per_call=cpu_used / done * 1e6 if done and pids else 0.0,
        failed=failed,
    )
