"""What observing a call costs: the interceptor in process, then the whole server.

1. In process: CPU (time.process_time) of N calls of a trivial async unary handler,
   bare and through ``CallObserver`` (interceptor chain, request id, counters, histogram;
   the access record is below the INFO level, as in production), with a fake context:
   the Python-side cost only.
2. Through the server (``--server``): server CPU per cached Get (from /proc), comparing
   the server of this tree with one given by ``--baseline PATH`` (a checkout's root whose
   ``server`` and ``clients/python`` are put first on the server's PYTHONPATH), rounds
   interleaved. Sequential calls, one in flight: each pays its own wake-ups, so the
   figures are higher than ``make bench``'s at 64 in flight.

    python bench/observe.py [--calls 20000] [--server --baseline /path/to/old/tree]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tmcp.storage.v1 import kv_pb2, kv_pb2_grpc, types_pb2
from tmcp_storage_server.api.observe import CallObserver, RpcStats

from tests.e2e.harness import ServerProcess, token


class _Details:
    method = "/tmcp.storage.v1.KeyValue/Get"
    invocation_metadata = (("authorization", "Bearer x"), ("user-agent", "grpc-python"))


class _Context:
    trailing: Any = ()

    def set_trailing_metadata(self, metadata: Any) -> None:
        self.trailing = tuple(metadata)

    def code(self) -> None:
        return None


async def _handler(request: Any, context: Any) -> Any:
    return request


async def _micro(calls: int) -> tuple[float, float]:
    """Microseconds of CPU per call: bare, observed."""
    context: Any = _Context()
    details: Any = _Details()
    inner = grpc.unary_unary_rpc_method_handler(_handler)
    observer = CallObserver(stats=RpcStats())

    async def continuation(_: Any) -> Any:
        return inner

    async def bare() -> None:
        for _ in range(calls):
            handler: Any = await continuation(details)
            await handler.unary_unary(b"x", context)

    async def observed() -> None:
        for _ in range(calls):
            handler: Any = await observer.intercept_service(continuation, details)
            await handler.unary_unary(b"x", context)

    results: dict[str, list[float]] = {"bare": [], "observed": []}
    for _ in range(5):
        for name, run in (("bare", bare), ("observed", observed)):
            start = time.process_time()
            await run()
            results[name].append((time.process_time() - start) / calls * 1e6)
    return min(results["bare"]), min(results["observed"])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_cpu_per_get(server: ServerProcess, calls: int) -> float:
    assert server.process is not None
    space = types_pb2.Space(app_id="bench", user_id="u")
    metadata = (("authorization", "Bearer " + token("bench", "u")),)
    with grpc.insecure_channel(server.target) as channel:
        stub = kv_pb2_grpc.KeyValueStub(channel)
        value = types_pb2.Value(raw=b"v" * 100)
        stub.Put(kv_pb2.PutRequest(space=space, key="hot", value=value), metadata=metadata)
        request = kv_pb2.GetRequest(space=space, key="hot")
        for _ in range(200):
            stub.Get(request, metadata=metadata)
        start = _cpu_seconds(server.process.pid)
        for _ in range(calls):
            stub.Get(request, metadata=metadata)
        return (_cpu_seconds(server.process.pid) - start) / calls * 1e6


def _servers(baseline: str, calls: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        old_path = f"{baseline}/server:{baseline}/clients/python"
        servers = {
            "this tree": ServerProcess(f"sqlite:///{tmp}/a.db"),
            "baseline": ServerProcess(
                f"sqlite:///{tmp}/b.db",
                env={"PYTHONPATH": old_path, "PYTHONDONTWRITEBYTECODE": "1"},
            ),
        }
        try:
            for server in servers.values():
                server.start()
            figures: dict[str, list[float]] = {name: [] for name in servers}
            for _ in range(rounds):
                for name, server in servers.items():
                    figures[name].append(_server_cpu_per_get(server, calls))
        finally:
            for server in servers.values():
                server.stop()
    for name, values in figures.items():
        print(
            f"server CPU per cached Get, {name:>9}: median {statistics.median(values):6.1f} us "
            f"(min {min(values):.1f}, max {max(values):.1f}, {rounds} rounds x {calls} calls)"
        )


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--server", action="store_true", help="also measure whole servers")
    parser.add_argument("--baseline", default="", help="root of the tree to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bare, observed = asyncio.run(_micro(args.calls))
    print(
        f"in process, {args.calls} calls: bare {bare:.2f} us, observed {observed:.2f} us, "
        f"added {observed - bare:.2f} us of CPU per call"
    )
    if args.server:
        _servers(args.baseline, args.calls // 4, args.rounds)


if __name__ == "__main__":
    main()
