"""The retry policy, shared by the blocking and the asyncio runner.

Only UNAVAILABLE is retried: the server returns it when the call did not take effect
(the database or the server itself could not be reached), so another attempt is safe
even for a write. Every other code is the answer and is raised at once. Waits grow
exponentially with jitter, are at least what the server asked for in `RetryInfo`, and
never run past the call's deadline.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from tmcp_storage.errors import StorageError, from_rpc_error

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})
"""The only status codes worth another attempt."""


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently a call is retried."""

    retries: int = 3
    """Attempts after the first (so at most `retries + 1` calls)."""
    initial_backoff: float = 0.05
    """Wait before the first retry, in seconds, before jitter."""
    max_backoff: float = 2.0
    """Longest wait between attempts, in seconds, before jitter."""
    multiplier: float = 2.0
    """Growth of the wait from one retry to the next."""

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be 0 or more, not {self.retries}")

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (0 for the first)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier**retry)
        # Jitter keeps clients that failed together from retrying together.
        return ceiling * random.uniform(0.5, 1.0)

    def start(
        self, timeout: float | None, *, clock: Callable[[], float] = time.monotonic
    ) -> Attempts:
        """Begin one call that must finish within `timeout` seconds (None: no limit)."""
        return Attempts(self, timeout, clock=clock)


class Attempts:
    """One call's way through the policy: its deadline and the retries it has made."""

    def __init__(
        self, policy: RetryPolicy, timeout: float | None, *, clock: Callable[[], float]
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._deadline = None if timeout is None else clock() + timeout
        self._retries = 0

    @property
    def retries(self) -> int:
        """Retries made so far."""
        return self._retries

    def timeout(self) -> float | None:
        """The time left for the next attempt, in seconds (None: no limit)."""
        if self._deadline is None:
            return None
        return max(self._deadline - self._clock(), 0.0)

    def failed(self, error: grpc.RpcError) -> float:
        """Account for a failed attempt: return the wait before the next one, or raise.

        This is where every gRPC error of a call becomes a `StorageError`; it is raised
        when the code is not retryable, the retries are spent, or the wait would pass
        the deadline.
        """
        storage_error = from_rpc_error(error)
        delay = self._next_delay(storage_error)
        if delay is None:
            raise storage_error from error
        self._retries += 1
        return delay

    def _next_delay(self, error: StorageError) -> float | None:
        if error.code not in RETRYABLE or self._retries >= self._policy.retries:
            return None
        delay = max(self._policy.backoff(self._retries), error.retry_delay or 0.0)
        if self._deadline is not None and self._clock() + delay >= self._deadline:
            return None
        return delay
