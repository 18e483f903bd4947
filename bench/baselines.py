"""The baselines a benchmark compares the storage server with, each run as a process:

echo   a bare grpc.aio server answering every call with a fixed response (the ceiling
       of a Python gRPC server on this machine)
floor  a bare grpc.aio server whose handler does exactly one psycopg upsert (Put) or
       one primary-key select (Get) per call: the floor cost of a durable write or an
       uncached read through Python gRPC and PostgreSQL

python bench/baselines.py echo  PORT
python bench/baselines.py floor PORT DATABASE_URL
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc
import psycopg_pool
from tmcp.storage.v1 import kv_pb2, types_pb2

CREATE = """CREATE TABLE IF NOT EXISTS bench_floor (
    user_id text NOT NULL, app_id text NOT NULL, key text NOT NULL, value bytea NOT NULL,
    version bigint NOT NULL DEFAULT 1, PRIMARY KEY (user_id, app_id, key))"""
UPSERT = """INSERT INTO bench_floor (user_id, app_id, key, value) VALUES (%s, %s, %s, %s)
    ON CONFLICT (user_id, app_id, key) DO UPDATE
    SET value = EXCLUDED.value, version = bench_floor.version + 1 RETURNING version"""
SELECT = "SELECT value, version FROM bench_floor WHERE user_id = %s AND app_id = %s AND key = %s"


def _handler(methods: dict[str, Any]) -> grpc.GenericRpcHandler[Any, Any]:
    class Handler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
        def service(self, details: grpc.HandlerCallDetails) -> Any:
            return methods.get(details.method)

    return Handler()


async def echo(port: int) -> None:
    """KeyValue/Get answers one fixed GetResponse: the request is parsed and the response
    serialized as by any generated servicer, and nothing else is done."""
    reply = kv_pb2.GetResponse(
        header=types_pb2.ResponseHeader(revision=1),
        entry=types_pb2.Entry(key="k", value=types_pb2.Value(raw=b"x" * 100), version=1),
    )

    async def answer(request: kv_pb2.GetRequest, context: Any) -> kv_pb2.GetResponse:
        return reply

    handler = grpc.unary_unary_rpc_method_handler(
        answer, kv_pb2.GetRequest.FromString, kv_pb2.GetResponse.SerializeToString
    )
    await _serve(port, _handler({"/tmcp.storage.v1.KeyValue/Get": handler}))


async def floor(port: int, url: str) -> None:
    """Put: one upsert; Get: one primary-key select."""
    pool = psycopg_pool.AsyncConnectionPool(
        url, min_size=16, max_size=16, open=False, kwargs={"autocommit": True}
    )
    await pool.open(wait=True)
    async with pool.connection() as conn:
        await conn.execute(CREATE)

    async def put(request: kv_pb2.PutRequest, context: Any) -> kv_pb2.PutResponse:
        async with pool.connection() as conn:
            cursor = await conn.execute(
                UPSERT,
                (request.space.user_id, request.space.app_id, request.key, request.value.raw),
            )
            (version,) = await cursor.fetchone()  # type: ignore[misc]
        return kv_pb2.PutResponse(entry=types_pb2.Entry(key=request.key, version=version))

    async def get(request: kv_pb2.GetRequest, context: Any) -> kv_pb2.GetResponse:
        async with pool.connection() as conn:
            cursor = await conn.execute(
                SELECT, (request.space.user_id, request.space.app_id, request.key)
            )
            row = await cursor.fetchone()
        entry = types_pb2.Entry(key=request.key)
        if row is not None:
            entry.value.raw, entry.version = row
        return kv_pb2.GetResponse(entry=entry)

    await _serve(
        port,
        _handler(
            {
                "/tmcp.storage.v1.KeyValue/Put": grpc.unary_unary_rpc_method_handler(
                    put, kv_pb2.PutRequest.FromString, kv_pb2.PutResponse.SerializeToString
                ),
                "/tmcp.storage.v1.KeyValue/Get": grpc.unary_unary_rpc_method_handler(
                    get, kv_pb2.GetRequest.FromString, kv_pb2.GetResponse.SerializeToString
                ),
            }
        ),
    )


async def _serve(port: int, handler: grpc.GenericRpcHandler[Any, Any]) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([handler])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    asyncio.run(echo(port) if kind == "echo" else floor(port, sys.argv[3]))
