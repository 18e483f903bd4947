"""make bench (after bench/run.py): sync figures against the issue's targets, on loopback.

Starts a throwaway PostgreSQL database and two storage server processes (A and B) on it,
sharing one Redis under a fresh key prefix (removed at the end), then measures with
grpc.aio clients in this process:

- Push throughput: pushes of 100 mutations (100-byte values), 1 client and several in
  parallel (each in its own space), rounds interleaved; server A's CPU per mutation.
- Pull of 10,000 changed keys: from a cursor taken before they were written, paging with
  the default limit, and asking for limit 10000 (coerced to the 1000 maximum); first
  right after loading, then after ANALYZE (the planner's statistics, as autovacuum would
  have them on a database in service; push figures are taken after ANALYZE too).
- Write-to-watcher latency across processes: Put through A, Watch through B, one write
  at a time, from the Put's start to the change's arrival.
- Extra RSS of server B for 1,000 idle Watch streams (1,000 spaces, one client process),
  and its CPU while they idle.

It prints figures and the targets (watcher p99 <= 50 ms; 1,000 idle watchers <= 50 MiB;
Pull of 10,000 keys <= 1 s); it asserts nothing on time.

    python bench/sync.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import grpc
import redis
from tmcp.storage.v1 import kv_pb2, kv_pb2_grpc, sync_pb2, sync_pb2_grpc, types_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.run import analyze, database
from tests.e2e.harness import ServerProcess, token

REDIS_URL = os.environ.get("STORAGE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
APP = "bench-sync"
VALUE = b"v" * 100
PUSH_SIZE = 100
PULL_KEYS = 10_000
TICK = os.sysconf("SC_CLK_TCK")
Metadata = tuple[tuple[str, str], ...]


def auth(user: str, *scopes: str) -> Metadata:
    return (("authorization", f"Bearer {token(APP, user, *scopes)}"),)


def space(user: str) -> types_pb2.Space:
    return types_pb2.Space(app_id=APP, user_id=user)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def status_kib(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


def fmt(values: Sequence[float], digits: int = 0) -> str:
    """Median (min-max)."""
    return (
        f"{statistics.median(values):,.{digits}f} "
        f"({min(values):,.{digits}f}-{max(values):,.{digits}f})"
    )


class Pusher:
    """One sync client pushing batches of mutations into its own space."""

    def __init__(self, channel: grpc.aio.Channel, user: str) -> None:
        self._stub = sync_pb2_grpc.SyncStub(channel)
        self._user = user
        self._meta = auth(user)
        self._client_id = f"bench-{uuid.uuid4().hex[:8]}"
        self._next_id = 1

    async def push(self, first_key: int = 0) -> None:
        mutations = [
            sync_pb2.Mutation(
                mutation_id=self._next_id + i,
                op=sync_pb2.MUTATION_OP_SET,
                key=f"k{first_key + i:05d}",
                value=types_pb2.Value(raw=VALUE),
            )
            for i in range(PUSH_SIZE)
        ]
        request = sync_pb2.PushRequest(
            space=space(self._user), client_id=self._client_id, mutations=mutations
        )
        reply = await self._stub.Push(request, metadata=self._meta)
        bad = [o for o in reply.outcomes if o.result != sync_pb2.PUSH_RESULT_APPLIED]
        assert not bad, bad[0]
        self._next_id += PUSH_SIZE


async def push_round(pushers: list[Pusher], pushes_each: int) -> float:
    """Mutations per second with every pusher pushing ``pushes_each`` batches in turn."""

    async def one(pusher: Pusher) -> None:
        for n in range(pushes_each):
            await pusher.push((n * PUSH_SIZE) % 1000)

    started = time.perf_counter()
    await asyncio.gather(*(one(p) for p in pushers))
    return len(pushers) * pushes_each * PUSH_SIZE / (time.perf_counter() - started)


async def bench_push(
    target: ServerProcess, url: str, rounds: int, pushes_each: int, clients: int
) -> None:
    assert target.process is not None
    async with grpc.aio.insecure_channel(target.target) as channel:
        configs = {1: [Pusher(channel, "push-solo")]}
        configs[clients] = [Pusher(channel, f"push-{c}") for c in range(clients)]
        for pushers in configs.values():  # warm-up: creates the keys
            await push_round(pushers, 2)
        analyze(url)
        rates: dict[int, list[float]] = {n: [] for n in configs}
        cpu: dict[int, list[float]] = {n: [] for n in configs}
        for _ in range(rounds):
            for n, pushers in configs.items():
                before = cpu_seconds(target.process.pid)
                rates[n].append(await push_round(pushers, pushes_each))
                mutations = n * pushes_each * PUSH_SIZE
                cpu[n].append((cpu_seconds(target.process.pid) - before) / mutations * 1e6)
    print(f"Push throughput ({PUSH_SIZE} mutations of {len(VALUE)} B per push, {rounds} rounds)")
    for n in configs:
        print(
            f"  {f'{n} clients in parallel' if n > 1 else '1 client':>21}: {fmt(rates[n])}"
            f" mutations/s; server CPU {fmt(cpu[n])} us per mutation"
        )


async def bench_pull(target: ServerProcess, url: str, samples: int) -> None:
    user, meta = "pull", auth("pull")
    async with grpc.aio.insecure_channel(target.target) as channel:
        stub = sync_pb2_grpc.SyncStub(channel)
        status = await stub.GetStatus(sync_pb2.GetStatusRequest(space=space(user)), metadata=meta)
        pusher = Pusher(channel, user)
        for first in range(0, PULL_KEYS, PUSH_SIZE):
            await pusher.push(first)

        async def pull_all(limit: int) -> tuple[float, int, int]:
            started = time.perf_counter()
            cursor, keys, pages, more = status.cursor, 0, 0, True
            while more:
                request = sync_pb2.PullRequest(space=space(user), cursor=cursor, limit=limit)
                page = await stub.Pull(request, metadata=meta)
                cursor, more = page.cursor, page.has_more
                keys, pages = keys + len(page.changes), pages + 1
            return (time.perf_counter() - started) * 1000, keys, pages

        print(f"Pull of {PULL_KEYS:,} changed keys (100 B values; median of {samples})")
        fresh = [await pull_all(0) for _ in range(samples)]
        print(
            f"  default limit, just loaded (no planner statistics yet): "
            f"{fmt([r[0] for r in fresh], 1)} ms in {fresh[0][2]} pages"
        )
        analyze(url)
        await pull_all(0)  # warm-up
        medians = [statistics.median(r[0] for r in fresh)]
        for limit, label in ((0, "default limit"), (10_000, "limit 10000")):
            runs = [await pull_all(limit) for _ in range(samples)]
            (_, keys, pages) = runs[0]
            assert keys == PULL_KEYS, keys
            ms = [r[0] for r in runs]
            medians.append(statistics.median(ms))
            note = " (the server coerces limits above 1000 to 1000)" if limit > 1000 else ""
            print(f"  {label}, after ANALYZE: {fmt(ms, 1)} ms in {pages} pages{note}")
    print(f"  target <= 1000 ms (every row): {'met' if max(medians) <= 1000 else 'MISSED'}")


async def bench_latency(writer: ServerProcess, watcher: ServerProcess, samples: int) -> None:
    user, meta = "latency", auth("latency")
    async with (
        grpc.aio.insecure_channel(writer.target) as a,
        grpc.aio.insecure_channel(watcher.target) as b,
    ):
        kv = kv_pb2_grpc.KeyValueStub(a)
        stream = sync_pb2_grpc.SyncStub(b).Watch(
            sync_pb2.WatchRequest(space=space(user)), metadata=meta
        )
        first = await stream.read()
        assert isinstance(first, sync_pb2.WatchResponse)
        assert first.heartbeat
        latencies: list[float] = []
        for n in range(samples + 20):
            key = f"lat{n:05d}"
            started = time.perf_counter()
            put = kv_pb2.PutRequest(space=space(user), key=key, value=types_pb2.Value(raw=VALUE))
            await kv.Put(put, metadata=meta)
            while True:
                message = await stream.read()
                assert isinstance(message, sync_pb2.WatchResponse)
                if any(c.key == key for c in message.changes):
                    break
            if n >= 20:  # the first ones warm up
                latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.002)
        stream.cancel()
    cuts = statistics.quantiles(latencies, n=100)
    p50, p99 = cuts[49], cuts[98]
    print(f"Write-to-watcher latency, Put through A -> Watch through B ({samples} samples)")
    print(f"  p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(latencies):.1f} ms")
    print(f"  target p99 <= 50 ms: {'met' if p99 <= 50 else 'MISSED'}")


async def bench_idle_watchers(target: ServerProcess, watchers: int, idle: float) -> None:
    assert target.process is not None
    pid = target.process.pid
    meta = auth("bench-admin", "storage:admin")
    before = status_kib(pid, "VmRSS")
    channels = [grpc.aio.insecure_channel(target.target) for _ in range(4)]
    streams = []
    try:
        for n in range(watchers):
            stub = sync_pb2_grpc.SyncStub(channels[n % len(channels)])
            request = sync_pb2.WatchRequest(space=space(f"idle{n:04d}"))
            streams.append(stub.Watch(request, metadata=meta))
        started = time.perf_counter()
        for stream in streams:  # each answers "from now on" with a first heartbeat
            first = await stream.read()
            assert isinstance(first, sync_pb2.WatchResponse)
            assert first.heartbeat
        opened = time.perf_counter() - started
        cpu_before = cpu_seconds(pid)
        await asyncio.sleep(idle)
        cpu = (cpu_seconds(pid) - cpu_before) / idle * 100
        after = status_kib(pid, "VmRSS")
    finally:
        for stream in streams:
            stream.cancel()
        for channel in channels:
            await channel.close(None)
    extra = (after - before) / 1024
    print(f"{watchers:,} idle Watch streams on server B (one client process, 4 channels)")
    print(
        f"  VmRSS {before / 1024:.1f} -> {after / 1024:.1f} MiB: +{extra:.1f} MiB"
        f" ({(after - before) / watchers:.1f} KiB per watcher); all open in {opened:.1f} s;"
        f" server CPU while idle {cpu:.1f}% of a core over {idle:.0f} s"
    )
    print(f"  target <= 50 MiB extra: {'met' if extra <= 50 else 'MISSED'}")


def clear_redis(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
    finally:
        client.close()


async def run(a: ServerProcess, b: ServerProcess, url: str, quick: bool, clients: int) -> None:
    rounds, pushes = (2, 5) if quick else (3, 20)
    await bench_push(a, url, rounds=rounds, pushes_each=pushes, clients=clients)
    await bench_pull(a, url, samples=3 if quick else 5)
    await bench_latency(a, b, samples=100 if quick else 500)
    await bench_idle_watchers(b, watchers=1000, idle=3 if quick else 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and samples")
    parser.add_argument("--clients", type=int, default=4, help="parallel pushers")
    args = parser.parse_args()
    prefix = f"bench-sync-{uuid.uuid4().hex[:8]}:"
    env = {
        "STORAGE_REDIS_URL": REDIS_URL,
        "STORAGE_REDIS_PREFIX": prefix,
        "STORAGE_LIMIT_KEYS": "1000000",
        "STORAGE_LIMIT_BYTES": str(1 << 40),
        "STORAGE_SHUTDOWN_GRACE": "1",
    }
    print(f"sync benchmark: 2 server processes, one PostgreSQL database, Redis prefix {prefix}")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with database() as url:
        a = ServerProcess(url, env=env).start()
        b = ServerProcess(url, env=env).start()
        try:
            asyncio.run(run(a, b, url, args.quick, args.clients))
        finally:
            a.stop()
            b.stop()
            clear_redis(prefix)
    print(f"load average after: {os.getloadavg()[0]:.1f} (other work on the machine skews rates)")


if __name__ == "__main__":
    main()
