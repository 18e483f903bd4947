"""Error translation and retries of both clients, against a real grpc.aio server.

The server runs in a thread with its own event loop, so that the blocking client can call
it from the test's thread and the asyncio client from the test's loop. It answers `Get`
according to the key's first segment (`missing/…` fails with KEY_NOT_FOUND, and so on),
with rich statuses built by `grpc_status.rpc_status.to_status`.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from tmcp.storage.v1 import kv_pb2, kv_pb2_grpc, types_pb2
from tmcp_storage import codec, errors
from tmcp_storage._retry import RetryPolicy
from tmcp_storage.aio import AsyncClient
from tmcp_storage.client import Client
from tmcp_storage.models import Entry, Space

SPACE = Space("app", "user-1")


@dataclass(frozen=True)
class Failure:
    """A rich status the fake server answers with."""

    code: grpc.StatusCode
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    extra: tuple[Message, ...] = ()

    def status(self, message: str) -> status_pb2.Status:
        status = status_pb2.Status(code=self.code.value[0], message=message)
        details: list[Message] = list(self.extra)
        if self.reason:
            info = error_details_pb2.ErrorInfo(
                reason=self.reason, domain=errors.DOMAIN, metadata=self.metadata
            )
            details.insert(0, info)
        for detail in details:
            packed = any_pb2.Any()
            packed.Pack(detail)
            status.details.append(packed)
        return status


C = grpc.StatusCode
FAILURES: dict[str, Failure] = {
    "missing": Failure(C.NOT_FOUND, "KEY_NOT_FOUND", {"key": "missing"}),
    "exists": Failure(C.ALREADY_EXISTS, "KEY_EXISTS", {"current_version": "4"}),
    "conflict": Failure(
        C.FAILED_PRECONDITION,
        "VERSION_MISMATCH",
        {"current_version": "7", "expected_version": "6"},
        (
            error_details_pb2.PreconditionFailure(
                violations=[error_details_pb2.PreconditionFailure.Violation(type="VERSION")]
            ),
        ),
    ),
    "quota": Failure(
        C.RESOURCE_EXHAUSTED,
        "QUOTA_KEYS",
        {"limit": "1000"},
        (
            error_details_pb2.QuotaFailure(
                violations=[error_details_pb2.QuotaFailure.Violation(subject="keys")]
            ),
        ),
    ),
    "bad": Failure(
        C.INVALID_ARGUMENT,
        "INVALID_KEY",
        {"field": "key"},
        (
            error_details_pb2.BadRequest(
                field_violations=[error_details_pb2.BadRequest.FieldViolation(field="key")]
            ),
        ),
    ),
    "forbidden": Failure(C.PERMISSION_DENIED, "SPACE_FORBIDDEN"),
    "expired": Failure(C.UNAUTHENTICATED, "TOKEN_EXPIRED"),
    "gap": Failure(C.OUT_OF_RANGE, "MUTATION_GAP", {"expected_mutation_id": "5"}),
    "unavailable": Failure(C.UNAVAILABLE, "BACKEND_UNAVAILABLE"),
    "bare-unavailable": Failure(C.UNAVAILABLE),
    "internal": Failure(C.INTERNAL),
}


class FakeKeyValue(kv_pb2_grpc.KeyValueServicer):
    """Answers Get by key prefix, lists `pages` of entries, and records what it saw."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.tokens: list[str] = []
        self.requests: list[Message] = []

    def _record(
        self, key: str, request: Message, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        self.calls[key] += 1
        self.requests.append(request)
        metadata = dict(context.invocation_metadata() or ())
        self.tokens.append(str(metadata.get("authorization", "")))

    async def Get(
        self, request: kv_pb2.GetRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> kv_pb2.GetResponse:
        self._record(request.key, request, context)
        kind = request.key.split("/", 1)[0]
        if kind == "flaky" and self.calls[request.key] <= 2:
            kind = "unavailable"
        failure = FAILURES.get(kind)
        if failure is not None:
            status = rpc_status.to_status(failure.status(f"{kind} happened"))
            await context.abort(status.code, status.details, status.trailing_metadata)
        value = codec.encode_value({"key": request.key})
        entry = types_pb2.Entry(key=request.key, value=value, content_type="application/json")
        return kv_pb2.GetResponse(header=types_pb2.ResponseHeader(revision=3), entry=entry)

    async def List(
        self, request: kv_pb2.ListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> kv_pb2.ListResponse:
        self._record("list", request, context)
        keys = [f"{request.prefix}{index}" for index in range(5)]
        start = int(request.page_token or 0)
        end = start + request.page_size
        return kv_pb2.ListResponse(
            entries=[types_pb2.Entry(key=key, version=1) for key in keys[start:end]],
            next_page_token=str(end) if end < len(keys) else "",
        )

    async def Put(
        self, request: kv_pb2.PutRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> kv_pb2.PutResponse:
        self._record(request.key, request, context)
        return kv_pb2.PutResponse(
            header=types_pb2.ResponseHeader(revision=4),
            entry=types_pb2.Entry(key=request.key, version=1),
            usage=types_pb2.QuotaUsage(used_keys=1, limit_keys=1000),
        )

    async def Delete(
        self, request: kv_pb2.DeleteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> kv_pb2.DeleteResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this fake")

    async def Touch(
        self, request: kv_pb2.TouchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> kv_pb2.TouchResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this fake")

    async def DeletePrefix(
        self, request: kv_pb2.DeletePrefixRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> kv_pb2.DeletePrefixResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this fake")


class ServerThread:
    """A grpc.aio server on 127.0.0.1 (free port) in a thread with its own event loop."""

    def __init__(self, servicer: FakeKeyValue) -> None:
        self.servicer = servicer
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        server = grpc.aio.server()
        kv_pb2_grpc.add_KeyValueServicer_to_server(self.servicer, server)
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await server.stop(grace=None)

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "test server did not start"

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive(), "test server did not stop"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    thread = ServerThread(FakeKeyValue())
    thread.start()
    yield thread
    thread.stop()


class Caller:
    """Runs one client method through the blocking or the asyncio client."""

    def __init__(self, kind: str, target: str, **settings: Any) -> None:
        self.kind = kind
        self.target = target
        self.settings = {"space": SPACE, "token": "secret", **settings}

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.kind == "sync":
            with Client(self.target, **self.settings) as client:
                return getattr(client, method)(*args, **kwargs)
        async with AsyncClient(self.target, **self.settings) as aclient:
            return await getattr(aclient, method)(*args, **kwargs)

    async def list(self, *args: Any, **kwargs: Any) -> list[Entry]:
        if self.kind == "sync":
            with Client(self.target, **self.settings) as client:
                return list(client.list(*args, **kwargs))
        async with AsyncClient(self.target, **self.settings) as aclient:
            return [entry async for entry in aclient.list(*args, **kwargs)]


@pytest.fixture(params=["sync", "async"])
def caller_factory(request: pytest.FixtureRequest, server: ServerThread) -> Callable[..., Caller]:
    kind: str = request.param
    return lambda **settings: Caller(kind, f"127.0.0.1:{server.port}", **settings)


def unique(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex}"


# --- against the server -------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "kind", "reason"),
    [
        ("missing", errors.NotFound, "KEY_NOT_FOUND"),
        ("exists", errors.AlreadyExists, "KEY_EXISTS"),
        ("conflict", errors.VersionConflict, "VERSION_MISMATCH"),
        ("quota", errors.QuotaExceeded, "QUOTA_KEYS"),
        ("bad", errors.InvalidArgument, "INVALID_KEY"),
        ("forbidden", errors.PermissionDenied, "SPACE_FORBIDDEN"),
        ("expired", errors.Unauthenticated, "TOKEN_EXPIRED"),
        ("gap", errors.OutOfRange, "MUTATION_GAP"),
        ("internal", errors.Internal, ""),
    ],
)
async def test_each_status_becomes_its_exception(
    caller_factory: Callable[..., Caller],
    server: ServerThread,
    prefix: str,
    kind: type[errors.StorageError],
    reason: str,
) -> None:
    key = unique(prefix)
    with pytest.raises(kind) as caught:
        await caller_factory()("get", key)
    error = caught.value
    assert type(error) is kind
    assert error.reason == reason
    assert error.code == FAILURES[prefix].code
    assert error.message == f"{prefix} happened"
    assert error.metadata == FAILURES[prefix].metadata
    assert isinstance(error.__cause__, grpc.RpcError)
    assert server.servicer.calls[key] == 1  # never retried


async def test_a_version_conflict_carries_the_current_version_and_details(
    caller_factory: Callable[..., Caller],
) -> None:
    with pytest.raises(errors.VersionConflict) as caught:
        await caller_factory()("get", unique("conflict"))
    error = caught.value
    assert error.current_version == 7
    assert isinstance(error, errors.FailedPrecondition)
    assert isinstance(error.details[0], error_details_pb2.ErrorInfo)
    failure = error.detail(error_details_pb2.PreconditionFailure)
    assert failure is not None
    assert failure.violations[0].type == "VERSION"
    assert "FAILED_PRECONDITION VERSION_MISMATCH" in str(error)


async def test_quota_and_bad_request_details_are_decoded(
    caller_factory: Callable[..., Caller],
) -> None:
    with pytest.raises(errors.QuotaExceeded) as quota:
        await caller_factory()("get", unique("quota"))
    assert quota.value.kind == "keys"
    assert isinstance(quota.value, errors.ResourceExhausted)
    assert quota.value.detail(error_details_pb2.QuotaFailure) is not None
    with pytest.raises(errors.InvalidArgument) as bad:
        await caller_factory()("get", unique("bad"))
    request = bad.value.detail(error_details_pb2.BadRequest)
    assert request is not None
    assert request.field_violations[0].field == "key"


@pytest.mark.parametrize("retries", [0, 1, 3])
async def test_unavailable_is_retried_the_configured_number_of_times(
    caller_factory: Callable[..., Caller], server: ServerThread, retries: int
) -> None:
    key = unique("unavailable")
    with pytest.raises(errors.Unavailable) as caught:
        await caller_factory(retries=retries)("get", key)
    assert caught.value.reason == "BACKEND_UNAVAILABLE"
    assert server.servicer.calls[key] == retries + 1


async def test_unavailable_without_details_is_retried_and_mapped_by_code(
    caller_factory: Callable[..., Caller], server: ServerThread
) -> None:
    key = unique("bare-unavailable")
    with pytest.raises(errors.Unavailable) as caught:
        await caller_factory(retries=2)("get", key)
    assert (caught.value.reason, caught.value.details) == ("", [])
    assert server.servicer.calls[key] == 3


async def test_a_retry_that_succeeds_returns_the_answer(
    caller_factory: Callable[..., Caller], server: ServerThread
) -> None:
    key = unique("flaky")  # UNAVAILABLE twice, then the entry
    entry = await caller_factory(retries=3)("get", key)
    assert entry.value == {"key": key}
    assert server.servicer.calls[key] == 3


async def test_a_token_function_is_asked_again_for_every_attempt(
    caller_factory: Callable[..., Caller], server: ServerThread
) -> None:
    counter = iter(range(100))
    key = unique("unavailable")
    start = len(server.servicer.tokens)
    with pytest.raises(errors.Unavailable):
        await caller_factory(token=lambda: f"t{next(counter)}", retries=2)("get", key)
    assert server.servicer.tokens[start:] == ["Bearer t0", "Bearer t1", "Bearer t2"]


async def test_list_iterates_over_every_page(
    caller_factory: Callable[..., Caller], server: ServerThread
) -> None:
    before = server.servicer.calls["list"]
    entries = await caller_factory().list("p/", page_size=2)
    assert [entry.key for entry in entries] == [f"p/{index}" for index in range(5)]
    assert not any(entry.has_value for entry in entries)
    assert server.servicer.calls["list"] - before == 3


async def test_put_sends_expected_version_zero_and_returns_usage(
    caller_factory: Callable[..., Caller], server: ServerThread
) -> None:
    key = unique("put")
    result = await caller_factory()("put", key, b"raw", expected_version=0, ttl=5)
    request = server.servicer.requests[-1]
    assert isinstance(request, kv_pb2.PutRequest)
    assert request.HasField("expected_version")
    assert request.value.raw == b"raw"
    assert request.ttl.seconds == 5
    assert (result.revision, result.usage.limit_keys, result.entry.key) == (4, 1000, key)
    assert server.servicer.tokens[-1] == "Bearer secret"


async def test_a_call_without_space_fails_before_reaching_the_server(
    caller_factory: Callable[..., Caller],
) -> None:
    with pytest.raises(ValueError, match="no space"):
        await caller_factory(space=None)("get", "k")


# --- pure translation ---------------------------------------------------------------


class FakeRpcError(grpc.RpcError):
    """A finished call, as a blocking stub raises it."""

    def __init__(self, code: grpc.StatusCode, message: str, status: status_pb2.Status | None):
        self._code = code
        self._message = message
        self._trailers = (
            (("grpc-status-details-bin", status.SerializeToString()),) if status else ()
        )

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def trailing_metadata(self) -> Any:
        return self._trailers


def fake_error(failure: Failure, message: str = "boom") -> FakeRpcError:
    return FakeRpcError(failure.code, message, failure.status(message))


def test_an_unknown_reason_falls_back_to_the_code() -> None:
    error = errors.from_rpc_error(fake_error(Failure(C.NOT_FOUND, "SOMETHING_NEW")))
    assert type(error) is errors.NotFound
    assert error.reason == "SOMETHING_NEW"


def test_a_reason_of_another_domain_does_not_choose_the_class() -> None:
    info = error_details_pb2.ErrorInfo(reason="KEY_NOT_FOUND", domain="elsewhere.example")
    error = errors.build_error(C.FAILED_PRECONDITION, "x", [info])
    assert type(error) is errors.FailedPrecondition
    assert (error.reason, error.domain) == ("KEY_NOT_FOUND", "elsewhere.example")


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (C.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
        (C.UNKNOWN, errors.Internal),
        (C.CANCELLED, errors.StorageError),
        (C.UNIMPLEMENTED, errors.StorageError),
    ],
)
def test_codes_without_details(code: grpc.StatusCode, kind: type[errors.StorageError]) -> None:
    error = errors.from_rpc_error(FakeRpcError(code, "m", None))
    assert type(error) is kind
    assert (error.reason, error.metadata, error.details) == ("", {}, [])


def test_a_rich_status_that_contradicts_the_call_is_dropped() -> None:
    status = Failure(C.NOT_FOUND, "KEY_NOT_FOUND").status("boom")
    error = errors.from_rpc_error(FakeRpcError(C.INTERNAL, "boom", status))
    assert type(error) is errors.Internal
    assert error.details == []


def test_an_unknown_detail_type_stays_packed() -> None:
    status = status_pb2.Status(code=code_pb2.NOT_FOUND, message="m")
    status.details.add().Pack(types_pb2.Space(app_id="a"))
    error = errors.from_rpc_error(FakeRpcError(C.NOT_FOUND, "m", status))
    assert isinstance(error.details[0], any_pb2.Any)


def test_a_non_numeric_current_version_reads_as_none() -> None:
    info = error_details_pb2.ErrorInfo(
        reason="VERSION_MISMATCH", domain=errors.DOMAIN, metadata={"current_version": "x"}
    )
    error = errors.build_error(C.FAILED_PRECONDITION, "m", [info])
    assert isinstance(error, errors.VersionConflict)
    assert error.current_version is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_retries_stop_when_the_wait_would_pass_the_deadline() -> None:
    clock = FakeClock()
    attempts = RetryPolicy(retries=10, initial_backoff=0.4, max_backoff=0.4).start(1.0, clock=clock)
    unavailable = fake_error(Failure(C.UNAVAILABLE, "BACKEND_UNAVAILABLE"))
    assert 0.2 <= attempts.failed(unavailable) <= 0.4
    clock.now += 0.5
    assert attempts.timeout() == pytest.approx(0.5)
    clock.now += 0.45  # 0.05 s left: less than any wait
    with pytest.raises(errors.Unavailable):
        attempts.failed(unavailable)
    assert attempts.retries == 1


def test_the_server_retry_delay_is_a_floor_for_the_wait() -> None:
    retry_info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=3))
    failure = Failure(C.UNAVAILABLE, "BACKEND_UNAVAILABLE", extra=(retry_info,))
    attempts = RetryPolicy(retries=1).start(None)
    error = errors.from_rpc_error(fake_error(failure))
    assert error.retry_delay == 3.0
    assert attempts.failed(fake_error(failure)) == 3.0
    with pytest.raises(errors.Unavailable):
        attempts.failed(fake_error(failure))


def test_other_codes_are_raised_at_once() -> None:
    attempts = RetryPolicy(retries=5).start(None)
    with pytest.raises(errors.NotFound):
        attempts.failed(fake_error(Failure(C.NOT_FOUND, "KEY_NOT_FOUND")))
    assert attempts.retries == 0
