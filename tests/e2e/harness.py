"""Run the real server as a subprocess on a free loopback port, and stop it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tmcp_storage import Tls
from tmcp_storage_server.api.auth import mint_token

TEST_SECRET = "test-secret-" + "x" * 32
_LISTENING = re.compile(r"listening on \S+ \(port (\d+)\)")
_GATEWAY = re.compile(r"gRPC-Web gateway on \S+ \(port (\d+)\)")


@dataclass
class ServerProcess:
    """One ``python -m tmcp_storage_server serve`` process."""

    database_url: str
    env: Mapping[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[str] | None = None
    log_path: str = ""
    tls: Tls | None = None
    """How to reach a server started with STORAGE_TLS_* (None: plaintext)."""
    web_port: int = 0
    """The gRPC-Web gateway's port, when ``STORAGE_WEB_LISTEN`` is set."""

    @property
    def target(self) -> str:
        """host:port for clients."""
        return f"127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 30.0) -> ServerProcess:
        """Start and wait until it reports its port and health says SERVING."""
        env = {
            **os.environ,
            "STORAGE_DATABASE_URL": self.database_url,
            "STORAGE_JWT_SECRET": TEST_SECRET,
            "STORAGE_LISTEN": f"127.0.0.1:{self.port}",
            "STORAGE_SWEEP_INTERVAL": "0.2",
            "STORAGE_SHUTDOWN_GRACE": "2",
            "STORAGE_WORKERS": "1",
            # Many servers run at once: no metrics port unless a test asks for one; and
            # the text log format, which tests read (test_logging reads the JSON one).
            "STORAGE_METRICS_LISTEN": "",
            "STORAGE_LOG_FORMAT": "text",
            **self.env,
        }
        log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept open for the process
            "w+", prefix="tmcp-server-", suffix=".log", delete=False
        )
        self.log_path = log.name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tmcp_storage_server", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            match = _LISTENING.search(self.log())
            if match:
                self.port = int(match.group(1))
                gateway = _GATEWAY.search(self.log())
                self.web_port = int(gateway.group(1)) if gateway else 0
                self._wait_serving(deadline)
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError("server did not start:\n" + self.log())

    @property
    def web_url(self) -> str:
        """Base URL of the gRPC-Web gateway."""
        return f"http://127.0.0.1:{self.web_port}"

    def log(self) -> str:
        """Everything the server printed so far."""
        with open(self.log_path) as out:
            return out.read()

    def channel(self) -> grpc.Channel:
        """A new blocking channel to the server, TLS when ``tls`` is set."""
        if self.tls is None:
            return grpc.insecure_channel(self.target)
        return grpc.secure_channel(self.target, self.tls.credentials(), self.tls.options())

    def _wait_serving(self, deadline: float) -> None:
        with self.channel() as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` and wait for the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup."""
        self.stop(signal.SIGKILL)


def token(
    app_id: str, user_id: str, *scopes: str, ttl: int = 3600, secret: str = TEST_SECRET
) -> str:
    """A signed token for tests."""
    return mint_token(
        secret,
        app_id=app_id,
        user_id=user_id,
        scopes=scopes or ("storage:read", "storage:write"),
        ttl_seconds=ttl,
    )
