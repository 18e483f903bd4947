"""Request ids, log formats, the RPC collector and the metrics endpoint, in process."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

import grpc
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tmcp.storage.v1 import kv_pb2, kv_pb2_grpc
from tmcp_storage_server.api.observe import BUCKETS, CallObserver, RpcStats, invocation_metadata
from tmcp_storage_server.api.server import MethodTable
from tmcp_storage_server.config import Config, ConfigError
from tmcp_storage_server.logs import REQUEST_ID, JsonFormatter, RequestIds, TextFormatter
from tmcp_storage_server.metrics.collectors import RpcCollector
from tmcp_storage_server.metrics.endpoint import build_registry, response


def test_request_ids_are_unique_and_client_ids_validated() -> None:
    ids = RequestIds()
    fresh = {ids.new() for _ in range(1000)}
    assert len(fresh) == 1000
    assert RequestIds().new().split("-")[0] != ids.new().split("-")[0]  # per-process prefix
    assert ids.accept("abc-123_x.y:z+/=") == "abc-123_x.y:z+/="
    assert ids.accept("x" * 128) == "x" * 128
    for bad in ("", "x" * 129, "a b", "a\nb", b"bytes", None):
        assert ids.accept(bad) not in ("", "x" * 129, "a b", "a\nb")


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("t.logger", logging.INFO, __file__, 1, msg, (), None)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_the_request_id_and_access_fields() -> None:
    formatter = JsonFormatter()
    outside = json.loads(formatter.format(_record("hello %s")))
    assert outside["msg"] == "hello %s" and "request_id" not in outside
    assert outside["level"] == "INFO" and outside["logger"] == "t.logger"
    token = REQUEST_ID.set("rid-1")
    try:
        line = formatter.format(_record("x", method="/a.B/C", code="OK", duration_ms=0.25))
        text = TextFormatter().format(_record("plain"))
    finally:
        REQUEST_ID.reset(token)
    parsed = json.loads(line)
    assert parsed["request_id"] == "rid-1" and parsed["method"] == "/a.B/C"
    assert parsed["code"] == "OK" and parsed["duration_ms"] == 0.25
    assert "\n" not in line
    assert text.endswith("INFO t.logger: plain request_id=rid-1")


def test_json_lines_carry_exceptions_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exc"]


def test_observability_settings() -> None:
    default = Config.from_env({})
    assert default.metrics_listen == "127.0.0.1:9090" and default.log_format == "json"
    custom = Config.from_env({"STORAGE_METRICS_LISTEN": "", "STORAGE_LOG_FORMAT": "TEXT"})
    assert custom.metrics_listen == "" and custom.log_format == "text"
    with pytest.raises(ConfigError, match="STORAGE_METRICS_LISTEN"):
        Config.from_env({"STORAGE_METRICS_LISTEN": "9090"})
    with pytest.raises(ConfigError, match="STORAGE_LOG_FORMAT"):
        Config.from_env({"STORAGE_LOG_FORMAT": "yaml"})


def test_rpc_collector_builds_cumulative_histograms() -> None:
    stats = RpcStats()
    get = stats.method("/tmcp.storage.v1.KeyValue/Get", "unary")
    for elapsed, code in ((0.0001, "OK"), (0.003, "OK"), (0.003, "NOT_FOUND"), (99.0, "OK")):
        get.started += 1
        get.finish(code, elapsed)
    watch = stats.method("/tmcp.storage.v1.Sync/Watch", "server_stream")
    watch.started, watch.sent = 1, 7
    text = generate_latest(build_registry([RpcCollector(stats)])).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    labels = (
        ("grpc_method", "Get"),
        ("grpc_service", "tmcp.storage.v1.KeyValue"),
        ("grpc_type", "unary"),
    )
    assert samples[("grpc_server_started_total", labels)] == 4
    assert samples[("grpc_server_handled_total", tuple(sorted((*labels, ("grpc_code", "OK")))))]
    bucket = "grpc_server_handling_seconds_bucket"
    assert samples[(bucket, tuple(sorted((*labels, ("le", "0.0005")))))] == 1
    assert samples[(bucket, tuple(sorted((*labels, ("le", "0.005")))))] == 3
    assert samples[(bucket, tuple(sorted((*labels, ("le", str(BUCKETS[-1]))))))] == 3
    assert samples[(bucket, tuple(sorted((*labels, ("le", "+Inf")))))] == 4
    assert samples[("grpc_server_msg_received_total", labels)] == 4
    assert samples[("grpc_server_msg_sent_total", labels)] == 3
    watch_labels = (
        ("grpc_method", "Watch"),
        ("grpc_service", "tmcp.storage.v1.Sync"),
        ("grpc_type", "server_stream"),
    )
    assert samples[("grpc_server_msg_sent_total", watch_labels)] == 7
    assert samples[("grpc_server_msg_received_total", watch_labels)] == 1


def test_endpoint_answers_only_get_metrics() -> None:
    registry = build_registry([RpcCollector(RpcStats())])
    assert response(registry, b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 200 OK")
    assert response(registry, b"GET /metrics?x=1 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 200")
    assert response(registry, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 404")
    assert response(registry, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 405")
    head = response(registry, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert head.endswith(b"\r\n\r\n") and b"Content-Length: 0" in head


class _Server:
    """Records what a registrar hands on."""

    def __init__(self) -> None:
        self.generic: list[Any] = []
        self.registered: dict[str, dict[str, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        self.registered[service] = handlers


class _Context:
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata
        self.trailing: Any = ()
        self.metadata_reads = 0

    def invocation_metadata(self) -> Any:
        self.metadata_reads += 1
        return tuple(self._metadata)  # a new tuple each time, as grpc.aio's

    def set_trailing_metadata(self, metadata: Any) -> None:
        self.trailing = tuple(metadata)

    def code(self) -> None:
        return None


async def test_handlers_registered_through_the_observer_are_observed() -> None:
    async def echo(request: bytes, context: Any) -> bytes:
        assert REQUEST_ID.get() == "client-id-1"
        return request

    handlers = {"Get": grpc.unary_unary_rpc_method_handler(echo)}
    server, stats = _Server(), RpcStats()
    registrar = CallObserver(stats=stats).registrar(server)
    registrar.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("pkg.S", handlers)])
    registrar.add_registered_method_handlers("pkg.S", handlers)

    details: Any = type("Details", (), {"method": "/pkg.S/Get", "invocation_metadata": ()})
    by_lookup = server.generic[0].service(details)
    by_registration = server.registered["pkg.S"]["Get"]
    assert by_lookup is by_registration  # one wrapper per method
    context = _Context((("x-request-id", "client-id-1"),))
    assert await by_registration.unary_unary(b"hi", context) == b"hi"
    assert context.trailing == (("x-request-id", "client-id-1"),)
    method = stats.methods["/pkg.S/Get"]
    assert (method.kind, method.started, method.handled) == ("unary", 1, {"OK": 1})
    unknown: Any = type("Details", (), {"method": "/pkg.S/Nope", "invocation_metadata": ()})
    assert server.generic[0].service(unknown) is None


async def test_the_method_table_registers_nothing_in_advance_and_finds_every_method() -> None:
    """grpc.aio waits on one task per method registered in advance for every call it
    accepts: the generated code's methods go into one generic handler instead, observed
    when an observer stands in front of the table."""
    server, stats = _Server(), RpcStats()
    table = MethodTable(server)
    servicer: Any = kv_pb2_grpc.KeyValueServicer  # every method answers UNIMPLEMENTED
    observed: Any = CallObserver(stats=stats).registrar(table)
    kv_pb2_grpc.add_KeyValueServicer_to_server(servicer(), observed)

    assert server.registered == {}
    assert server.generic[0] is table  # first: consulted before any other handler
    methods = kv_pb2.DESCRIPTOR.services_by_name["KeyValue"].methods
    for method in methods:
        path = f"/tmcp.storage.v1.KeyValue/{method.name}"
        details: Any = type("Details", (), {"method": path, "invocation_metadata": ()})
        handler = table.service(details)
        assert handler is not None, path
        assert path in stats.methods  # wrapped by the observer
    unknown: Any = type("D", (), {"method": "/tmcp.storage.v1.KeyValue/Nope"})
    assert table.service(unknown) is None
    # The generated generic handler still reaches the server, after the table.
    assert len(server.generic) == 2


async def test_an_observed_handler_reads_the_metadata_the_observer_read() -> None:
    """grpc.aio converts the metadata anew on every invocation_metadata() (1.5 us): the
    handler of an observed call gets the observer's copy; any other context its own."""
    seen: list[Any] = []
    other: Any = _Context((("authorization", "Bearer other"),))

    async def handler(request: bytes, context: Any) -> bytes:
        seen.append(invocation_metadata(context))
        seen.append(invocation_metadata(other))  # not this call's context
        return request

    handlers = {"Get": grpc.unary_unary_rpc_method_handler(handler)}
    server = _Server()
    CallObserver(stats=RpcStats()).registrar(server).add_registered_method_handlers(
        "pkg.S", handlers
    )
    context: Any = _Context((("authorization", "Bearer t"), ("x-request-id", "r-1")))
    # A task of its own, as grpc.aio gives every call.
    await asyncio.create_task(server.registered["pkg.S"]["Get"].unary_unary(b"", context))
    assert seen == [
        (("authorization", "Bearer t"), ("x-request-id", "r-1")),
        (("authorization", "Bearer other"),),
    ]
    assert context.metadata_reads == 1
    # Outside an observed call, the context is asked.
    assert invocation_metadata(context) == context._metadata
    assert context.metadata_reads == 2


async def test_a_streaming_handler_reads_the_metadata_the_observer_read() -> None:
    """A coroutine streaming handler writes through a counting wrapper of its context:
    the observer's metadata must reach it through that wrapper too."""
    seen: list[Any] = []

    async def watch(request: bytes, context: Any) -> None:
        seen.append(invocation_metadata(context))
        await context.write(b"event")

    handlers = {"Watch": grpc.unary_stream_rpc_method_handler(watch)}
    server, stats = _Server(), RpcStats()
    CallObserver(stats=stats).registrar(server).add_registered_method_handlers("pkg.S", handlers)
    context: Any = _Context((("authorization", "Bearer t"),))
    context.written = []

    async def send_initial_metadata(metadata: Any) -> None:
        context.initial = tuple(metadata)

    async def write(message: bytes) -> None:
        context.written.append(message)

    context.send_initial_metadata, context.write = send_initial_metadata, write
    await asyncio.create_task(server.registered["pkg.S"]["Watch"].unary_stream(b"", context))
    assert seen == [(("authorization", "Bearer t"),)]
    assert context.metadata_reads == 1
    assert context.written == [b"event"]
    assert stats.methods["/pkg.S/Watch"].sent == 1


async def test_a_unary_call_is_counted_with_the_code_it_ended_with() -> None:
    outcomes: list[BaseException | None] = [None, RuntimeError("bug"), asyncio.CancelledError()]

    async def handler(request: bytes, context: Any) -> bytes:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return request

    stats = RpcStats()
    wrapped = CallObserver(stats=stats).wrap(
        "/pkg.S/Get", grpc.unary_unary_rpc_method_handler(handler)
    )
    observed: Any = wrapped.unary_unary
    assert await observed(b"x", _Context(())) == b"x"
    with pytest.raises(RuntimeError):
        await observed(b"x", _Context(()))
    with pytest.raises(asyncio.CancelledError):
        await observed(b"x", _Context(()))
    method = stats.methods["/pkg.S/Get"]
    assert method.started == 3 and sum(method.buckets) == 3
    assert method.handled == {"OK": 1, "UNKNOWN": 1, "CANCELLED": 1}
