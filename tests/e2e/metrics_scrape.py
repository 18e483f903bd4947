"""Reading a server's ``/metrics`` as a test sees it: samples by name and labels."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import ServerProcess

_METRICS_URL = re.compile(r"metrics: (http://\S+/metrics)")


class Scrape:
    """One scrape: every sample, queried by name and a subset of its labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [
            (s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def matching(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        """The samples named ``name`` whose labels include ``labels``."""
        return [
            (have, value)
            for sample, have, value in self.samples
            if sample == name and all(have.get(k) == v for k, v in labels.items())
        ]

    def since(self, before: Scrape, name: str, **labels: str) -> float:
        """How much ``name`` (with ``labels``) grew since ``before``."""
        return self.total(name, **labels) - before.total(name, **labels)

    def total(self, name: str, **labels: str) -> float:
        """The sum of the matching samples (0 when none)."""
        return sum(value for _, value in self.matching(name, **labels))

    def has(self, name: str, **labels: str) -> bool:
        """Whether any sample matches."""
        return bool(self.matching(name, **labels))


_URLS: dict[str, str] = {}
"""Metrics addresses found so far, by server log (a started server's log is its own)."""


def metrics_url(server: ServerProcess) -> str:
    """The address the server logged for its metrics endpoint (the log read until found,
    once per server)."""
    known = _URLS.get(server.log_path)
    if known is not None:
        return known
    deadline = time.monotonic() + 10
    while True:
        found = _METRICS_URL.search(server.log())
        if found:
            _URLS[server.log_path] = found.group(1)
            return found.group(1)
        assert time.monotonic() < deadline, "no metrics address logged:\n" + server.log()
        time.sleep(0.05)


def scrape(server: ServerProcess) -> Scrape:
    """GET the server's ``/metrics``."""
    with urllib.request.urlopen(metrics_url(server), timeout=10) as reply:  # noqa: S310
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        return Scrape(reply.read().decode())


def wait_for(server: ServerProcess, check: Callable[[Scrape], bool], what: str) -> Scrape:
    """Scrape until ``check`` holds (10 s at most)."""
    deadline = time.monotonic() + 10
    while True:
        result = scrape(server)
        if check(result):
            return result
        assert time.monotonic() < deadline, f"{what}; last scrape:\n{result.text}"
        time.sleep(0.05)


def wait_for_more(
    server: ServerProcess, before: Scrape, name: str, what: str, **labels: str
) -> Scrape:
    """Scrape until ``name`` (with ``labels``) totals more than in ``before``."""
    return wait_for(server, lambda s: s.total(name, **labels) > before.total(name, **labels), what)
