"""The database ceiling from Python: psycopg alone, same concurrency, no gRPC."""

from __future__ import annotations

import asyncio
import time

import psycopg_pool

from bench.baselines import CREATE, SELECT, UPSERT


async def run(url: str, kind: str, in_flight: int, duration: float) -> float:
    """Operations per second of ``kind`` ("upsert" or "pk select") with ``in_flight``
    concurrent tasks over a pool of 16 connections."""
    pool = psycopg_pool.AsyncConnectionPool(
        url, min_size=16, max_size=16, open=False, kwargs={"autocommit": True}
    )
    await pool.open(wait=True)
    async with pool.connection() as conn:
        await conn.execute(CREATE)
        await conn.execute(UPSERT, ("d0", "bench", "k", b"x" * 100))
    done = 0
    deadline = time.monotonic() + duration

    async def worker(index: int) -> None:
        nonlocal done
        user = f"d{index % 4}"
        while time.monotonic() < deadline:
            async with pool.connection() as conn:
                if kind == "upsert":
                    await conn.execute(UPSERT, (user, "bench", "k", b"x" * 100))
                else:
                    await (await conn.execute(SELECT, ("d0", "bench", "k"))).fetchone()
            done += 1

    await asyncio.gather(*(worker(i) for i in range(in_flight)))
    await pool.close()
    return done / duration
