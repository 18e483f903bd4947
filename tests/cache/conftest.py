"""Fixtures of the cache tests: a throwaway Redis of our own, and pairs of servers.

The shared Redis on 6379 is never stopped or flushed: tests that take Redis away start
their own ``redis-server`` (no persistence) on a free loopback port and stop it by pid.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis


def free_port() -> int:
    """A loopback port nobody listens on (right now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A ``redis-server`` process we own: started, stopped and restarted by pid."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (again, on the same port) and wait until it answers."""
        binary = shutil.which("redis-server")
        assert binary, "redis-server is required for the cache tests"
        self.process = subprocess.Popen(
            [
                binary,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--protected-mode", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        while True:
            try:
                client.ping()
                client.close()
                return self
            except redis.RedisError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)

    def stop(self) -> None:
        """SIGKILL, as an outage looks to clients (no goodbye)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A throwaway Redis on a free port, stopped after the test."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
