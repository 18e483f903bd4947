"""Configuration of TLS and abuse limits, and the client's RateLimited error."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from tmcp_storage import RateLimited, ResourceExhausted, errors
from tmcp_storage_server import errors as server_errors
from tmcp_storage_server.api.errors import code_of, to_status
from tmcp_storage_server.api.transport import server_options
from tmcp_storage_server.config import Config, ConfigError

BASE = {"STORAGE_DATABASE_URL": "sqlite:///x.db"}


def test_defaults() -> None:
    config = Config.from_env(BASE)
    assert (config.max_streams, config.keepalive_min_ping) == (1000, 10.0)
    assert (config.write_rate, config.write_burst) == (0.0, 0)
    assert not config.tls


def test_limits_are_read_and_checked() -> None:
    config = Config.from_env(
        {
            **BASE,
            "STORAGE_MAX_STREAMS": "8",
            "STORAGE_KEEPALIVE_MIN_PING": "2.5",
            "STORAGE_WRITE_RATE": "0.5",
            "STORAGE_WRITE_BURST": "20",
        }
    )
    assert (config.max_streams, config.keepalive_min_ping) == (8, 2.5)
    assert (config.write_rate, config.write_burst) == (0.5, 20)
    for name, value in [
        ("STORAGE_MAX_STREAMS", "-1"),
        ("STORAGE_MAX_STREAMS", "many"),
        ("STORAGE_KEEPALIVE_MIN_PING", "0"),
        ("STORAGE_WRITE_RATE", "-2"),
        ("STORAGE_WRITE_RATE", "nan"),
        ("STORAGE_WRITE_RATE", "inf"),
        ("STORAGE_WRITE_BURST", "1.5"),
    ]:
        with pytest.raises(ConfigError, match=name):
            Config.from_env({**BASE, name: value})


def test_server_options() -> None:
    options = dict(server_options(max_streams=8, min_ping=2.5))
    assert options["grpc.max_concurrent_streams"] == 8
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 2500
    assert options["grpc.http2.max_ping_strikes"] == 2
    assert options["grpc.keepalive_time_ms"] > 0
    assert "grpc.max_concurrent_streams" not in dict(server_options(max_streams=0, min_ping=1))


def test_rate_limited_is_resource_exhausted_with_retry_info() -> None:
    error = server_errors.RateLimited(retry_after=0.2501, rate=4, burst=8)
    assert code_of(error) is grpc.StatusCode.RESOURCE_EXHAUSTED
    status = to_status(error)
    retry = error_details_pb2.RetryInfo()
    assert status.details[1].Unpack(retry)
    assert retry.retry_delay.ToMilliseconds() == 251  # rounded up


def test_the_client_raises_rate_limited_with_retry_after() -> None:
    info = error_details_pb2.ErrorInfo(
        reason="RATE_LIMITED", domain=errors.DOMAIN, metadata={"retry_after_ms": "900"}
    )
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(750)
    error = errors.build_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "slow down",
        [info, error_details_pb2.RetryInfo(retry_delay=delay)],
    )
    assert isinstance(error, RateLimited) and isinstance(error, ResourceExhausted)
    assert error.retry_after == 0.75
    without_retry_info = errors.build_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "m", [info])
    assert isinstance(without_retry_info, RateLimited)
    assert without_retry_info.retry_after == 0.9
