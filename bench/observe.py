"""What observing a call costs: the interceptor in process, then the whole server.

1. In process: CPU (time.process_time) of N calls of a trivial async unary handler,
   bare and wrapped by ``CallObserver`` (request id, counters, histogram;
   the access record is below the INFO level, as in production), with a fake context:
   the Python-side cost only.
2. Through the server (``--compare NAME=ROOT``, repeatable): server CPU per cached Get
   (from /proc) under h2load with 64 calls in flight, as ``make bench``, for this tree's
   server and for the tree at each ROOT (a checkout whose ``server`` and
   ``clients/python`` go first on that server's PYTHONPATH), rounds interleaved.

    python bench/observe.py [--calls 20000] [--compare main=/tmp/main-tree ...]
"""

from __future__ import annotations

import argparse
import asyncio
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

from bench import h2
from tests.e2e.harness import ServerProcess, token


class _Context:
    trailing: Any = ()

    def invocation_metadata(self) -> Any:
        return (("authorization", "Bearer x"), ("user-agent", "grpc-python"))

    def set_trailing_metadata(self, metadata: Any) -> None:
        self.trailing = tuple(metadata)

    def code(self) -> None:
        return None


async def _handler(request: Any, context: Any) -> Any:
    return request


async def _micro(calls: int) -> tuple[float, float]:
    """Microseconds of CPU per call: bare, observed."""
    context: Any = _Context()
    inner: Any = grpc.unary_unary_rpc_method_handler(_handler)
    wrapped: Any = CallObserver(stats=RpcStats()).wrap("/tmcp.storage.v1.KeyValue/Get", inner)

    async def bare() -> None:
        for _ in range(calls):
            await inner.unary_unary(b"x", context)

    async def observed() -> None:
        for _ in range(calls):
            await wrapped.unary_unary(b"x", context)

    results: dict[str, list[float]] = {"bare": [], "observed": []}
    for _ in range(5):
        for name, run in (("bare", bare), ("observed", observed)):
            start = time.process_time()
            await run()
            results[name].append((time.process_time() - start) / calls * 1e6)
    return min(results["bare"]), min(results["observed"])


def _server_cpu_per_get(server: ServerProcess, duration: float) -> float:
    """Server CPU per cached Get under h2load, 64 calls in flight (as ``make bench``)."""
    assert server.process is not None
    space = types_pb2.Space(app_id="bench", user_id="u")
    metadata = (("authorization", "Bearer " + token("bench", "u")),)
    with grpc.insecure_channel(server.target) as channel:
        stub = kv_pb2_grpc.KeyValueStub(channel)
        value = types_pb2.Value(raw=b"v" * 100)
        stub.Put(kv_pb2.PutRequest(space=space, key="hot", value=value), metadata=metadata)
        stub.Get(kv_pb2.GetRequest(space=space, key="hot"), metadata=metadata)
    load = h2.Load(
        port=server.port,
        path="/tmcp.storage.v1.KeyValue/Get",
        bodies=[h2.grpc_body(kv_pb2.GetRequest(space=space, key="hot"))] * 4,
        tokens=[token("bench", "u")] * 4,
        duration=duration,
    )
    result = h2.run(load, server.process.pid)
    assert result.failed == 0
    return result.cpu_us_per_call


def _servers(trees: dict[str, str], duration: float, rounds: int) -> None:
    """Server CPU per Get of this tree and of each other tree, rounds interleaved."""
    with tempfile.TemporaryDirectory() as tmp:
        servers = {"this tree": ServerProcess(f"sqlite:///{tmp}/this.db")}
        for index, (name, root) in enumerate(trees.items()):
            env = {
                "PYTHONPATH": f"{root}/server:{root}/clients/python",
                "PYTHONDONTWRITEBYTECODE": "1",
            }
            servers[name] = ServerProcess(f"sqlite:///{tmp}/{index}.db", env=env)
        try:
            for server in servers.values():
                server.start()
            figures: dict[str, list[float]] = {name: [] for name in servers}
            for _ in range(rounds):
                for name, server in servers.items():
                    figures[name].append(_server_cpu_per_get(server, duration))
        finally:
            for server in servers.values():
                server.stop()
    for name, values in figures.items():
        print(
            f"server CPU per cached Get, {name:>12}: median {statistics.median(values):6.1f} us "
            f"(min {min(values):.1f}, max {max(values):.1f}; {rounds} rounds of {duration:g} s)"
        )


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=ROOT",
        help="also measure whole servers: this tree's and the tree at ROOT (repeatable)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args()
    bare, observed = asyncio.run(_micro(args.calls))
    print(
        f"in process, {args.calls} calls: bare {bare:.2f} us, observed {observed:.2f} us, "
        f"added {observed - bare:.2f} us of CPU per call"
    )
    if args.compare:
        trees = dict(item.split("=", 1) for item in args.compare)
        _servers(trees, args.duration, args.rounds)


if __name__ == "__main__":
    main()
