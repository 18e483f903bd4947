"""Per-space write rate limit: a token bucket per space, in this process.

Each space has a bucket of ``burst`` tokens that refills at ``rate`` tokens per second;
a write costs one token per item it writes. A call is admitted when the bucket holds
``min(cost, burst)`` tokens, and then takes its whole cost: a batch larger than the burst
is not refused forever, it empties the bucket below zero and the space's next writes wait
until the debt is repaid, so the long-run rate holds whatever the batch sizes. A refused
call takes nothing and learns how long to wait.

Memory is bounded: buckets live in a map ordered by last use; a bucket idle long enough
to be full again is the same as no bucket and is dropped, and past ``max_spaces`` the
least recently used bucket goes (its space then starts again with a full bucket).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from tmcp_storage_server.errors import RateLimited
from tmcp_storage_server.model import Space

MAX_SPACES = 100_000
"""Buckets kept at most (about 100 bytes each)."""


@dataclass(slots=True)
class Bucket:
    """Tokens of one space at one moment."""

    tokens: float
    updated: float


class WriteRateLimiter:
    """Admits or refuses writes to spaces at ``rate`` per second with bursts of ``burst``."""

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_spaces: int = MAX_SPACES,
    ) -> None:
        if rate <= 0 or burst < 1 or max_spaces < 1:
            raise ValueError("rate must be positive, burst and max_spaces at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_spaces = max_spaces
        self._buckets: OrderedDict[Space, Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def charge(self, space: Space, cost: int) -> None:
        """Take ``cost`` tokens from the space's bucket, or raise ``RateLimited`` with the
        seconds until the call would be admitted (taking nothing)."""
        if cost <= 0:
            return
        now = self._clock()
        self._forget_idle(now)
        bucket = self._buckets.pop(space, None)
        if bucket is None:
            bucket = Bucket(float(self.burst), now)
        else:
            elapsed = max(now - bucket.updated, 0.0)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        self._buckets[space] = bucket  # now the most recently used
        needed = min(cost, self.burst)
        if bucket.tokens < needed:
            raise RateLimited(
                retry_after=(needed - bucket.tokens) / self.rate, rate=self.rate, burst=self.burst
            )
        bucket.tokens -= cost
        if len(self._buckets) > self._max_spaces:
            self._buckets.popitem(last=False)

    def _forget_idle(self, now: float) -> None:
        """Drop buckets idle long enough to be full again (the oldest come first). A
        bucket in debt is full only once the debt is repaid too."""
        while self._buckets:
            space, bucket = next(iter(self._buckets.items()))
            if now - bucket.updated < (self.burst - bucket.tokens) / self.rate:
                return
            del self._buckets[space]


def limiter(rate: float, burst: int) -> WriteRateLimiter | None:
    """The limiter a configuration asks for: None when ``rate`` is 0 (unlimited); a
    ``burst`` of 0 means twice the rate, at least 1."""
    if rate <= 0:
        return None
    return WriteRateLimiter(rate=rate, burst=burst or max(1, math.ceil(2 * rate)))
