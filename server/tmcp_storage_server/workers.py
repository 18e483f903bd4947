"""Serving with several worker processes that share one port (SO_REUSEPORT).

The parent only supervises: it fixes the port (binding port 0 itself when asked for any
port, and keeping that socket so nobody else takes the number), starts ``workers`` copies
of ``serve`` with the resolved settings in their environment, waits until each is
serving, prints the listening line once, restarts a worker that dies, and on SIGTERM or
SIGINT passes the signal on and waits for every worker to drain.

A worker dies with its parent (``PR_SET_PDEATHSIG`` on Linux), so a killed supervisor
leaves no orphans serving the port.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

from tmcp_storage_server.config import Config
from tmcp_storage_server.metrics.workers import WorkerMetrics

log = logging.getLogger("tmcp_storage_server")

READY_FD_ENV = "TMCP_STORAGE_READY_FD"
"""Set in a worker's environment: the pipe it writes to once it is serving."""
METRICS_SOCKET_ENV = "TMCP_STORAGE_METRICS_SOCKET"
"""Set in a worker's environment when metrics are on: the Unix socket where it serves
them to the supervisor (see ``metrics.workers``)."""
START_TIMEOUT = 60.0
POLL = 0.1
_PR_SET_PDEATHSIG = 1


def reserve_port(listen: str) -> tuple[str, socket.socket | None]:
    """``listen`` with a concrete port. For port 0, a socket bound with SO_REUSEPORT to a
    free port is returned too: keep it open while the workers run."""
    host, _, port = listen.rpartition(":")
    if int(port) != 0:
        return listen, None
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((host.strip("[]"), 0))
    return f"{host}:{holder.getsockname()[1]}", holder


def worker_ready() -> None:
    """In a worker: tell the supervisor this process is serving (no-op otherwise)."""
    fd = os.environ.get(READY_FD_ENV)
    if fd is None:
        return
    try:
        os.write(int(fd), b"ready\n")
        os.close(int(fd))
    except OSError:
        pass  # the supervisor stopped waiting (a restart): nothing to tell


def metrics_socket() -> str | None:
    """In a worker: where to serve metrics for the supervisor (None otherwise)."""
    return os.environ.get(METRICS_SOCKET_ENV) or None


def is_worker() -> bool:
    """Whether this process was started by a supervisor."""
    return READY_FD_ENV in os.environ


def die_with_parent() -> None:
    """In a worker: receive SIGTERM when the supervisor dies (Linux)."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class _Worker:
    slot: int
    process: subprocess.Popen[bytes]
    started: float
    ready_fd: int | None


@dataclass
class Supervisor:
    """Runs ``config.workers`` serving processes and keeps them running."""

    config: Config
    workers: list[_Worker] = field(default_factory=list)
    _stopping: bool = False
    _metrics: WorkerMetrics | None = None
    _web_listen: str = ""

    def run(self) -> int:
        """Until SIGTERM/SIGINT; returns the exit code."""
        listen, holder = reserve_port(self.config.listen)
        # The gRPC-Web gateway's port too, so that every worker binds the same one.
        web_listen, web_holder = (
            reserve_port(self.config.web_listen) if self.config.web_listen else ("", None)
        )
        self._web_listen = web_listen
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        try:
            if self.config.metrics_listen:
                self._metrics = WorkerMetrics(self.config.metrics_listen, self.config.workers)
                log.info("metrics: %s (every worker's)", self._metrics.start())
            self.workers = [self._spawn(slot, listen) for slot in range(self.config.workers)]
            if not self._wait_ready():
                self._stop_all()
                return 1
            port = listen.rpartition(":")[2]
            if web_listen:
                web_port = web_listen.rpartition(":")[2]
                print(
                    f"tmcp-storage gRPC-Web gateway on {self.config.web_listen} (port {web_port})"
                )
            print(f"tmcp-storage listening on {self.config.listen} (port {port})", flush=True)
            log.info("%d workers serving on %s", len(self.workers), listen)
            while not self._stopping:
                time.sleep(POLL)
                self._restart_dead(listen)
            return self._stop_all()
        finally:
            if holder is not None:
                holder.close()
            if self._metrics is not None:
                self._metrics.close()
            if web_holder is not None:
                web_holder.close()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _spawn(self, slot: int, listen: str) -> _Worker:
        read_fd, write_fd = os.pipe()
        env = {
            **os.environ,
            "STORAGE_LISTEN": listen,
            "STORAGE_DATABASE_URL": self.config.database_url,
            "STORAGE_DATA_DIR": self.config.data_dir,
            "STORAGE_JWT_SECRET": self.config.jwt_secret,
            "STORAGE_WORKERS": "1",
            "STORAGE_WEB_LISTEN": self._web_listen,
            READY_FD_ENV: str(write_fd),
        }
        if self._metrics is not None:
            env[METRICS_SOCKET_ENV] = self._metrics.socket_for(slot)
        process = subprocess.Popen(
            [sys.executable, "-m", "tmcp_storage_server", "serve"],
            env=env,
            pass_fds=(write_fd,),
            process_group=0,  # a terminal's Ctrl-C reaches the supervisor only
        )
        os.close(write_fd)
        log.info("worker %d started (pid %d)", slot, process.pid)
        return _Worker(slot, process, time.monotonic(), read_fd)

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while any(w.ready_fd is not None for w in self.workers):
            waiting = {w.ready_fd: w for w in self.workers if w.ready_fd is not None}
            readable, _, _ = select.select(list(waiting), [], [], POLL)
            for fd in readable:
                worker = waiting[fd]
                if not os.read(fd, 64):
                    log.error("worker %d exited before serving", worker.slot)
                    return False
                os.close(fd)
                worker.ready_fd = None
            if self._stopping or time.monotonic() > deadline:
                return False
        return True

    def _restart_dead(self, listen: str) -> None:
        for index, worker in enumerate(self.workers):
            code = worker.process.poll()
            if code is None or self._stopping:
                continue
            if worker.ready_fd is not None:
                os.close(worker.ready_fd)
            log.warning(
                "worker %d (pid %d) exited with %s; restarting",
                worker.slot,
                worker.process.pid,
                code,
            )
            if time.monotonic() - worker.started < 5:
                time.sleep(0.5)  # a crash loop must not spin
            self.workers[index] = self._spawn(worker.slot, listen)

    def _stop_all(self) -> int:
        """SIGTERM every worker, wait for them to drain (then SIGKILL); the exit code."""
        log.info("stopping %d workers", len(self.workers))
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.shutdown_grace + 10
        codes = []
        for worker in self.workers:
            try:
                codes.append(worker.process.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                codes.append(worker.process.wait())
            if worker.ready_fd is not None:
                os.close(worker.ready_fd)
                worker.ready_fd = None
        # Killed by our SIGTERM before it installed its handler: it had nothing to drain.
        return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1
