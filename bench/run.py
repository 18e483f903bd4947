"""make bench: the storage server against its ceilings, in one run, on loopback.

Starts a throwaway PostgreSQL database, the bare gRPC echo server, the one-query floor
server and the storage server (once per configuration), loads data, then runs every
scenario ROUNDS times interleaved (A B C ... A B C ...) with h2load at a fixed concurrency
and prints medians with min-max, each as a ratio to the echo ceiling and to the floor.

    python bench/run.py [--duration 5] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from tmcp.storage.v1 import batch_pb2, kv_pb2, types_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import direct, h2
from tests.e2e.harness import ServerProcess, token

REDIS_URL = os.environ.get("STORAGE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_URL = os.environ.get(
    "STORAGE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SERVER_ENV = {"STORAGE_SWEEP_INTERVAL": "1"}
"""The server's default sweep interval (the test harness sweeps every 0.2 s)."""
CONFIGURATIONS: list[tuple[str, dict[str, str], bool]] = [
    ("w1 L1+Redis", {"STORAGE_WORKERS": "1", "STORAGE_REDIS_URL": REDIS_URL}, True),
    (
        "w1 Redis only",
        {"STORAGE_WORKERS": "1", "STORAGE_CACHE_BYTES": "0", "STORAGE_REDIS_URL": REDIS_URL},
        False,
    ),
    ("w1 no cache", {"STORAGE_WORKERS": "1", "STORAGE_CACHE_BYTES": "0"}, False),
    ("w2 L1+Redis", {"STORAGE_WORKERS": "2", "STORAGE_REDIS_URL": REDIS_URL}, True),
]
"""Storage server configurations: name, environment, whether every scenario runs."""
APP, SPACES = "bench", 4  # one h2load process per space (user)
IN_FLIGHT_PER_SPACE = (4, 4)  # connections x streams: 64 calls in flight in all


@dataclass
class Target:
    """A server that scenarios run against."""

    name: str
    port: int = 0
    pid: int | None = None
    rss_mib: float = 0.0
    full: bool = True
    """Run every scenario; otherwise only Get (for cache configurations)."""


@dataclass
class Scenario:
    """One measured row: a method on a target with one request body per space."""

    name: str
    target: Target
    path: str
    request: Callable[[int], object]
    items_per_call: int = 1
    baseline: str = ""
    spaces: int = SPACES
    """Spaces (users) the calls spread over, one h2load process each; the same 64 calls
    stay in flight."""
    results: list[h2.Result] = field(default_factory=list)


def space(user: int) -> types_pb2.Space:
    return types_pb2.Space(app_id=APP, user_id=f"u{user}")


@contextmanager
def database() -> Iterator[str]:
    name = f"tmcp_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def baseline(kind: str, *args: str) -> Iterator[Target]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = Path(__file__).with_name("baselines.py")
    process = subprocess.Popen(
        [sys.executable, str(script), kind, str(port), *args], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    try:
        yield Target(kind, port, process.pid)
    finally:
        process.terminate()
        process.wait(10)


def load_data(target: str) -> None:
    """Keys every read scenario finds: k (100 B) and list/000..099 in each space."""
    from tmcp_storage import Client, SetItem, Space

    for user in range(SPACES):
        with Client(target, token=token(APP, f"u{user}"), space=Space(APP, f"u{user}")) as c:
            c.put("k", b"x" * 100)
            c.batch_set([SetItem(f"list/{i:03d}", b"x" * 100) for i in range(100)])


def analyze(url: str) -> None:
    """Planner statistics for the loaded tables, as autovacuum's ANALYZE gives them in
    production. This machine's PostgreSQL runs with autovacuum off (the server warns at
    start): without statistics the planner sees the primary key and ``entries_by_revision``
    as equally cheap for a key lookup, and the write path's prepared load statement kept
    the latter, scanning the whole space for each key (measured: 8.3 ms mean per group of
    BatchSets, 43% of the database's time, against 2.2 ms after ANALYZE)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")


def scenarios(echo: Target, floor: Target, storage: list[Target]) -> list[Scenario]:
    value100, value4k = b"x" * 100, b"y" * 4096
    rows = [
        Scenario(
            "Get",
            echo,
            "/tmcp.storage.v1.KeyValue/Get",
            lambda u: kv_pb2.GetRequest(space=space(u), key="k"),
        ),
        Scenario(
            "Put 100 B",
            floor,
            "/tmcp.storage.v1.KeyValue/Put",
            lambda u: kv_pb2.PutRequest(
                space=space(u), key="floor", value=types_pb2.Value(raw=value100)
            ),
        ),
        Scenario(
            "Get",
            floor,
            "/tmcp.storage.v1.KeyValue/Get",
            lambda u: kv_pb2.GetRequest(space=space(u), key="floor"),
        ),
        Scenario(
            "Put 100 B, 16 spaces",
            floor,
            "/tmcp.storage.v1.KeyValue/Put",
            lambda u: kv_pb2.PutRequest(
                space=space(u), key="floor", value=types_pb2.Value(raw=value100)
            ),
            spaces=16,
        ),
    ]
    for target in storage:
        rows.append(
            Scenario(
                "Get",
                target,
                "/tmcp.storage.v1.KeyValue/Get",
                lambda u: kv_pb2.GetRequest(space=space(u), key="k"),
                baseline="Get",
            )
        )
        if not target.full:
            continue
        rows += [
            Scenario(
                "Get STRONG",
                target,
                "/tmcp.storage.v1.KeyValue/Get",
                lambda u: kv_pb2.GetRequest(
                    space=space(u), key="k", consistency=types_pb2.CONSISTENCY_STRONG
                ),
                baseline="Get",
            ),
            Scenario(
                "Put 100 B",
                target,
                "/tmcp.storage.v1.KeyValue/Put",
                lambda u: kv_pb2.PutRequest(
                    space=space(u), key="p", value=types_pb2.Value(raw=value100)
                ),
                baseline="Put 100 B",
            ),
            Scenario(
                "Put 100 B, 16 spaces",
                target,
                "/tmcp.storage.v1.KeyValue/Put",
                lambda u: kv_pb2.PutRequest(
                    space=space(u), key="p", value=types_pb2.Value(raw=value100)
                ),
                baseline="Put 100 B, 16 spaces",
                spaces=16,
            ),
            Scenario(
                "Put 4 KiB",
                target,
                "/tmcp.storage.v1.KeyValue/Put",
                lambda u: kv_pb2.PutRequest(
                    space=space(u), key="p4", value=types_pb2.Value(raw=value4k)
                ),
                baseline="Put 100 B",
            ),
            Scenario(
                "BatchSet 100 x 100 B",
                target,
                "/tmcp.storage.v1.Batch/BatchSet",
                lambda u: batch_pb2.BatchSetRequest(
                    space=space(u),
                    items=[
                        batch_pb2.BatchSetItem(
                            key=f"b/{i:03d}", value=types_pb2.Value(raw=value100)
                        )
                        for i in range(100)
                    ],
                ),
                items_per_call=100,
                baseline="Put 100 B",
            ),
            Scenario(
                "BatchGet 100",
                target,
                "/tmcp.storage.v1.Batch/BatchGet",
                lambda u: batch_pb2.BatchGetRequest(
                    space=space(u), keys=[f"list/{i:03d}" for i in range(100)]
                ),
                items_per_call=100,
                baseline="Get",
            ),
            Scenario(
                "List 100 keys",
                target,
                "/tmcp.storage.v1.KeyValue/List",
                lambda u: kv_pb2.ListRequest(
                    space=space(u), prefix="list/", page_size=100, include_values=True
                ),
                baseline="Get",
            ),
        ]
    return rows


def redis_prefix() -> str:
    """A Redis key prefix of its own for one server configuration."""
    return f"bench-{uuid.uuid4().hex[:8]}:"


def memory_check(url: str) -> float:
    """Peak RSS (MiB) of one worker with the default 64 MiB L1 after writing 200k keys of
    100 B and reading each of them through the cache (BatchGet, so L1 fills and evicts)."""
    from tmcp_storage import Client, SetItem, Space

    keys = 200_000
    env = {
        "STORAGE_WORKERS": "1",
        "STORAGE_LIMIT_KEYS": str(keys),
        "STORAGE_LIMIT_BYTES": str(keys * 200),
        "STORAGE_REDIS_URL": REDIS_URL,
        "STORAGE_REDIS_PREFIX": redis_prefix(),
        **SERVER_ENV,
    }
    server = ServerProcess(url, env=env).start()
    try:
        with Client(
            server.target, token=token(APP, "mem"), space=Space(APP, "mem"), timeout=120
        ) as client:
            for start in range(0, keys, 1000):
                client.batch_set(
                    [SetItem(f"m/{i:06d}", b"x" * 100) for i in range(start, start + 1000)]
                )
                if start % 20_000 == 0:
                    # This machine's PostgreSQL runs with autovacuum off; do what it would.
                    with psycopg.connect(url, autocommit=True) as conn:
                        conn.execute("ANALYZE entries")
            for start in range(0, keys, 1000):
                got = client.batch_get([f"m/{i:06d}" for i in range(start, start + 1000)])
                assert all(r.found for r in got.results)
        assert server.process is not None
        return h2.peak_rss_mib(h2.process_tree(server.process.pid))
    finally:
        server.stop()


def check_grpc_status(scenario: Scenario) -> None:
    """h2load sees HTTP status only: make one real call and require grpc-status 0."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{scenario.target.port}") as channel:
        call = channel.unary_unary(scenario.path, None, None)
        body = scenario.request(0).SerializeToString()  # type: ignore[attr-defined]
        call(body, metadata=(("authorization", "Bearer " + token(APP, "u0")),), timeout=10)


def measure(row: Scenario, duration: float, cpus: str = "") -> h2.Result:
    connections, streams = IN_FLIGHT_PER_SPACE
    if row.spaces != SPACES:  # the same calls in flight, spread over more spaces
        connections, streams = 1, connections * streams * SPACES // row.spaces
    load = h2.Load(
        port=row.target.port,
        path=row.path,
        bodies=[h2.grpc_body(row.request(u)) for u in range(row.spaces)],  # type: ignore[arg-type]
        tokens=[token(APP, f"u{u}") for u in range(row.spaces)],
        connections=connections,
        streams=streams,
        duration=duration,
        cpus=cpus,
    )
    return h2.run(load, row.target.pid)


TARGET_PAIRS = (
    ("Get hot / echo", ("echo", "Get"), ("w1 L1+Redis", "Get")),
    ("Put 100 B / floor", ("floor", "Put 100 B"), ("w1 L1+Redis", "Put 100 B")),
    (
        "BatchSet entries / Put",
        ("w1 L1+Redis", "Put 100 B"),
        ("w1 L1+Redis", "BatchSet 100 x 100 B"),
    ),
)
"""The targets' ratios, measured again as back-to-back pairs (A B A B ...), unpinned and
then pinned (servers on CPU 1, h2load on CPU 0), so that the machine's drift between the
table's rows, minutes apart, cannot skew them."""


def _pid(target: Target) -> int:
    assert target.pid, f"{target.name}: no pid to pin"  # pid 0 would mean every process
    return target.pid


def target_pairs(rows: list[Scenario], pairs: int, duration: float, *, pin: bool) -> None:
    """Each target's ratio from ``pairs`` back-to-back runs (A B A B ...)."""
    by_name = {(row.target.name, row.name): row for row in rows}
    how = "pinned (servers on CPU 1, h2load on CPU 0; PostgreSQL unpinned)" if pin else "unpinned"
    print(f"\nback-to-back pairs, {how}, {pairs} pairs")
    print(f"{'ratio':<24} {'A calls/s':>18} {'B calls/s':>18} {'B/A median [min-max]':>26}")
    for label, first, second in TARGET_PAIRS:
        a, b = by_name[first], by_name[second]
        servers = {_pid(a.target), _pid(b.target)} if pin else set()
        cpus = "0" if pin else ""
        try:
            for pid in servers:
                h2.pin(pid, "1")
            ratios, a_rates, b_rates = [], [], []
            for _ in range(pairs):
                ra = measure(a, duration, cpus=cpus).calls_per_s * a.items_per_call
                rb = measure(b, duration, cpus=cpus).calls_per_s * b.items_per_call
                a_rates.append(ra)
                b_rates.append(rb)
                ratios.append(rb / ra)
        finally:
            for pid in servers:
                h2.pin(pid, f"0-{(os.cpu_count() or 1) - 1}")
        print(
            f"{label:<24} {fmt_range(a_rates):>18} {fmt_range(b_rates):>18} "
            f"{fmt_range(ratios, 2):>26}"
        )


def fmt_range(values: list[float], digits: int = 0) -> str:
    med = statistics.median(values)
    return f"{med:,.{digits}f} [{min(values):,.{digits}f}-{max(values):,.{digits}f}]"


def report(
    rows: list[Scenario], direct_rows: dict[str, list[float]], targets: list[Target]
) -> None:
    echo = statistics.median(r.calls_per_s for r in rows[0].results)
    floors = {
        row.name: statistics.median(r.calls_per_s for r in row.results)
        for row in rows
        if row.target.name == "floor"
    }
    print(
        f"\n{'scenario':<22} {'server':<18} {'calls/s median [min-max]':>28} "
        f"{'items/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/call':>11} "
        f"{'x echo':>7} {'x floor':>7}"
    )
    for row in rows:
        calls = [r.calls_per_s for r in row.results]
        med = statistics.median(calls)
        floor = floors.get(row.baseline)
        print(
            f"{row.name:<22} {row.target.name:<18} {fmt_range(calls):>28} "
            f"{med * row.items_per_call:>10,.0f} "
            f"{statistics.median(r.p50_ms for r in row.results):>7.2f} "
            f"{statistics.median(r.p99_ms for r in row.results):>7.2f} "
            f"{statistics.median(r.cpu_us_per_call for r in row.results):>11.0f} "
            f"{med / echo:>7.2f} {(med / floor) if floor else float('nan'):>7.2f}"
        )
        if any(r.failed for r in row.results):
            print(f"   ! {sum(r.failed for r in row.results)} requests failed at HTTP level")
    for name, values in direct_rows.items():
        print(f"{name:<22} {'direct psycopg':<18} {fmt_range(values):>28}")
    print("\npeak RSS (MiB): " + ", ".join(f"{t.name} {t.rss_mib:.0f}" for t in targets))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=5, help="back-to-back pairs per target")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds, args.pairs = 2, 1, 1
    in_flight = SPACES * IN_FLIGHT_PER_SPACE[0] * IN_FLIGHT_PER_SPACE[1]
    print(
        f"{SPACES} spaces x {IN_FLIGHT_PER_SPACE[0]} connections x "
        f"{IN_FLIGHT_PER_SPACE[1]} streams = {in_flight} calls in flight; "
        f"{args.duration:g} s per run after 1 s warm-up; {args.rounds} interleaved rounds; "
        f"100 B values unless named; {os.cpu_count()} cores, unpinned; each storage "
        f"database ANALYZEd after loading"
    )
    # Each configuration has a database and a Redis prefix of its own: servers sharing
    # them would hear every commit of the one measured (NOTIFY, Redis invalidations) and
    # take CPU from it on this 2-core machine, as replicas on other machines would not.
    # The two workers of "w2" do hear each other.
    with (
        database() as url,
        baseline("echo") as echo,
        baseline("floor", url) as floor,
        ExitStack() as databases,
    ):
        storage_targets = []
        servers = []
        try:
            for name, env, full in CONFIGURATIONS:
                server = ServerProcess(
                    databases.enter_context(database()),
                    env={**SERVER_ENV, **env, "STORAGE_REDIS_PREFIX": redis_prefix()},
                ).start()
                servers.append(server)
                assert server.process is not None
                storage_targets.append(Target(name, server.port, server.process.pid, full=full))
                load_data(server.target)
                analyze(server.database_url)
            rows = scenarios(echo, floor, storage_targets)
            for row in rows:
                check_grpc_status(row)
            direct_rows: dict[str, list[float]] = {"upsert": [], "pk select": []}
            for round_number in range(args.rounds):
                for row in rows:
                    row.results.append(measure(row, args.duration))
                for name in direct_rows:
                    direct_rows[name].append(
                        asyncio.run(direct.run(url, name, in_flight, args.duration))
                    )
                print(f"round {round_number + 1}/{args.rounds} done", flush=True)
            for target in (echo, floor, *storage_targets):
                target.rss_mib = h2.peak_rss_mib(h2.process_tree(target.pid or 0))
            report(rows, direct_rows, [echo, floor, *storage_targets])
            target_pairs(rows, args.pairs, min(args.duration, 3), pin=False)
            if (os.cpu_count() or 1) >= 2:
                target_pairs(rows, args.pairs, min(args.duration, 3), pin=True)
            for server in servers:
                server.stop()
            servers.clear()
            rss = memory_check(databases.enter_context(database()))
            print(
                f"peak RSS of a worker (64 MiB L1) after writing and reading 200k keys of "
                f"100 B: {rss:.0f} MiB (target < 200 MiB)"
            )
        finally:
            for server in servers:
                server.stop()


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"bench took {time.monotonic() - started:.0f} s")
