"""Metrics of ``serve --workers N``: one endpoint for all the workers.

Each worker keeps its counters in its own memory and serves them on a Unix socket in a
temporary directory that the supervisor owns (``worker-<slot>.sock``). The supervisor
serves ``STORAGE_METRICS_LISTEN`` itself: a scrape reads every worker's socket and
returns all their series, each labelled ``worker="<slot>"``, plus
``tmcp_storage_worker_up{worker}``. Sum over ``worker`` in queries for the totals.

Why labels rather than sums: a restarted worker starts its counters at zero, which a
per-worker series shows as an ordinary counter reset (``rate()`` handles it), whereas
a sum that suddenly drops would be misread. And why not prometheus_client's multiprocess
mode: its mmap-backed values cost a lock and a file write per update on the hot path,
and it cannot carry collectors that read live objects (cache, pool) at scrape time.
"""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT = 5.0
"""Seconds one worker has to answer a scrape."""


def fetch(path: str, timeout: float = SCRAPE_TIMEOUT) -> str:
    """``GET /metrics`` over the Unix socket ``path``: the exposition text."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(path)
        conn.sendall(b"GET /metrics HTTP/1.0\r\nHost: worker\r\n\r\n")
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.0 200"):
        raise OSError(f"worker metrics answered {head[:40]!r}")
    return body.decode()


def _families(path: str) -> list[Metric] | None:
    """A worker's families, or None when it does not answer (restarting, stuck)."""
    try:
        return list(text_string_to_metric_families(fetch(path)))
    except (OSError, ValueError) as exc:
        log.debug("worker metrics at %s: %s", path, exc)
        return None


class WorkerCollector(Collector):
    """Every worker's families, merged, with a ``worker`` label on each sample."""

    def __init__(self, sockets: dict[str, str]) -> None:
        self._sockets = sockets

    def collect(self) -> Iterator[Metric]:
        """Scrape the workers at once (a stuck one costs one timeout, not one each)."""
        merged: dict[str, Metric] = {}
        up = GaugeMetricFamily(
            "tmcp_storage_worker_up", "1 if the worker answered this scrape.", labels=["worker"]
        )
        slots = sorted(self._sockets, key=int)
        with ThreadPoolExecutor(max_workers=len(slots)) as pool:
            answers = list(pool.map(_families, [self._sockets[slot] for slot in slots]))
        for slot, families in zip(slots, answers, strict=True):
            if families is None:
                up.add_metric([slot], 0.0)
                continue
            up.add_metric([slot], 1.0)
            for family in families:
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                into.samples.extend(
                    s._replace(labels={**s.labels, "worker": slot}) for s in family.samples
                )
        yield from merged.values()
        yield up


class WorkerMetrics:
    """The supervisor's side: the socket directory and the public endpoint."""

    def __init__(self, listen: str, workers: int) -> None:
        self._listen = listen
        self._dir = Path(tempfile.mkdtemp(prefix="tmcp-metrics-"))
        self.sockets = {str(n): str(self._dir / f"worker-{n}.sock") for n in range(workers)}
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def socket_for(self, slot: int) -> str:
        """Where worker ``slot`` serves its metrics."""
        return self.sockets[str(slot)]

    def start(self) -> str:
        """Serve the merged metrics on ``listen`` (a thread); the URL."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(WorkerCollector(self.sockets))
        host, _, port = self._listen.rpartition(":")
        self._server, self._thread = start_http_server(
            int(port), addr=host.strip("[]"), registry=registry
        )
        return f"http://{host}:{self._server.server_port}/metrics"

    def close(self) -> None:
        """Stop serving and remove the socket directory."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=SCRAPE_TIMEOUT)
            self._thread = None
        shutil.rmtree(self._dir, ignore_errors=True)
