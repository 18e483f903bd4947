"""The per-space write rate limiter, with a fake monotonic clock."""

from __future__ import annotations

import pytest
from tmcp_storage_server.core.ratelimit import WriteRateLimiter, limiter
from tmcp_storage_server.errors import RateLimited
from tmcp_storage_server.model import Space

A, B = Space("app", "a"), Space("app", "b")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limiter(rate: float = 2.0, burst: int = 4, **more: int) -> tuple[WriteRateLimiter, FakeClock]:
    clock = FakeClock()
    return WriteRateLimiter(rate=rate, burst=burst, clock=clock, **more), clock


def test_a_burst_is_admitted_then_writes_wait_for_tokens() -> None:
    bucket, clock = _limiter(rate=2.0, burst=4)
    for _ in range(4):
        bucket.charge(A, 1)
    with pytest.raises(RateLimited) as refused:
        bucket.charge(A, 1)
    assert refused.value.retry_after == pytest.approx(0.5)
    assert refused.value.reason == "RATE_LIMITED"
    assert refused.value.metadata == {"rate": "2", "burst": "4", "retry_after_ms": "500"}
    clock.now += 0.49
    with pytest.raises(RateLimited) as again:
        bucket.charge(A, 1)
    assert again.value.retry_after == pytest.approx(0.01)
    clock.now += 0.01
    bucket.charge(A, 1)  # exactly when it was told


def test_a_refused_call_takes_nothing() -> None:
    bucket, clock = _limiter(rate=1.0, burst=1)
    bucket.charge(A, 1)
    for _ in range(5):
        with pytest.raises(RateLimited):
            bucket.charge(A, 1)
    clock.now += 1.0
    bucket.charge(A, 1)


def test_the_rate_is_sustained_and_never_exceeded() -> None:
    bucket, clock = _limiter(rate=10.0, burst=5)
    admitted = 0
    for _ in range(1000):  # 10 s of attempts every 10 ms
        try:
            bucket.charge(A, 1)
            admitted += 1
        except RateLimited:
            pass
        clock.now += 0.01
    assert admitted == 5 + 100 - 1 or admitted == 5 + 100


def test_a_batch_counts_its_items() -> None:
    bucket, _ = _limiter(rate=1.0, burst=10)
    bucket.charge(A, 6)
    with pytest.raises(RateLimited) as refused:
        bucket.charge(A, 5)
    assert refused.value.retry_after == pytest.approx(1.0)
    bucket.charge(A, 4)


def test_a_batch_larger_than_the_burst_borrows_and_the_debt_is_repaid() -> None:
    bucket, clock = _limiter(rate=2.0, burst=4)
    bucket.charge(A, 10)  # a full bucket admits it; 6 tokens of debt
    with pytest.raises(RateLimited) as refused:
        bucket.charge(A, 1)
    assert refused.value.retry_after == pytest.approx(3.5)  # from -6 to +1 at 2/s
    clock.now += 3.5
    bucket.charge(A, 1)
    with pytest.raises(RateLimited) as big:
        bucket.charge(A, 10)  # needs a full bucket again: 4 tokens from 0
    assert big.value.retry_after == pytest.approx(2.0)


def test_spaces_have_their_own_buckets() -> None:
    bucket, _ = _limiter(rate=1.0, burst=1)
    bucket.charge(A, 1)
    bucket.charge(B, 1)
    with pytest.raises(RateLimited):
        bucket.charge(A, 1)


def test_free_calls_are_not_counted() -> None:
    bucket, _ = _limiter(rate=1.0, burst=1)
    for _ in range(10):
        bucket.charge(A, 0)
    bucket.charge(A, 1)
    assert len(bucket) == 1


def test_buckets_that_refilled_are_forgotten() -> None:
    bucket, clock = _limiter(rate=1.0, burst=2)
    for user in range(50):
        bucket.charge(Space("app", str(user)), 1)
    assert len(bucket) == 50
    clock.now += 1.0  # every bucket is full again
    bucket.charge(A, 1)
    assert len(bucket) == 1


def test_a_bucket_in_debt_is_kept_until_repaid() -> None:
    bucket, clock = _limiter(rate=1.0, burst=2)
    bucket.charge(A, 5)  # -3: full again after 5 s
    clock.now += 4.0
    bucket.charge(B, 1)
    assert len(bucket) == 2
    with pytest.raises(RateLimited):
        bucket.charge(A, 2)


def test_memory_is_bounded_by_max_spaces() -> None:
    bucket, _ = _limiter(rate=1.0, burst=2, max_spaces=10)
    for user in range(100):
        bucket.charge(Space("app", str(user)), 1)
    assert len(bucket) == 10
    bucket.charge(Space("app", "99"), 1)  # the most recent ones are kept
    with pytest.raises(RateLimited):
        bucket.charge(Space("app", "99"), 1)


def test_configuration() -> None:
    assert limiter(0, 100) is None
    configured = limiter(2.5, 0)
    assert configured is not None and configured.burst == 5  # twice the rate
    small = limiter(0.1, 0)
    assert small is not None and small.burst == 1
    explicit = limiter(5, 7)
    assert explicit is not None and (explicit.rate, explicit.burst) == (5, 7)
    with pytest.raises(ValueError, match="positive"):
        WriteRateLimiter(rate=1, burst=0)
