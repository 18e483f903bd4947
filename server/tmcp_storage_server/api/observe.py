"""Every call, observed: a request id, RPC counters and latency, and an access log.

``CallObserver`` wraps every method handler of the server when its service is
registered (``build_server`` registers through ``CallObserver.registrar``). For each
call it takes the client's
``x-request-id`` (or makes one), puts it in ``logs.REQUEST_ID`` for every record logged
on the call's behalf, returns it to the client, and wraps the method's handler to count
the call in ``RpcStats``, the numbers behind the grpc-ecosystem metrics
(``grpc_server_started_total``, ``..._handled_total``, ``..._handling_seconds``,
``..._msg_received_total``, ``..._msg_sent_total``).

Where the id comes back: a stream sends it in its initial metadata before anything
else; a unary call in its trailing metadata, success or error. grpc.aio can only send a
unary call's initial metadata in a batch of its own, which measured +175 us of server
CPU per cached Get under h2load (bench/observe.py); trailing metadata rides in the
status batch for free, and an error-only response (Trailers-Only) has no separate
initial metadata on the wire anyway. ``api.errors.abort`` keeps it when it sets the error details.

The hot path pays only for plain integer updates: no locks, no label lookups; the
``metrics`` package turns ``RpcStats`` into Prometheus families when scraped. A wrapped
handler is made once per method and reused. A logged access record costs 35-50 us of
CPU, a tenth of a cached Get, so it is DEBUG for successes and routine answers
(``_ROUTINE``), INFO for other client errors and WARNING for server-side ones.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from bisect import bisect_left
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Protocol, TypeAlias

import grpc

from tmcp_storage_server.logs import REQUEST_ID, REQUEST_ID_HEADER, RequestIds

log = logging.getLogger("tmcp_storage_server.access")

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the handling-time histogram; +Inf follows. Finer than the
usual defaults at the low end: a cached Get takes well under a millisecond."""

_ROUTINE = frozenset({"OK", "NOT_FOUND", "ALREADY_EXISTS", "FAILED_PRECONDITION", "CANCELLED"})
"""Ordinary answers (an absent key, a lost compare-and-set, a client closing its
stream): their access records are DEBUG, like successes."""
_SERVER_ERRORS = frozenset({"UNKNOWN", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNIMPLEMENTED"})

_Context = grpc.aio.ServicerContext[Any, Any]
_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_Generic: TypeAlias = "grpc.GenericRpcHandler[Any, Any]"


_METADATA: ContextVar[tuple[_Context, Iterable[tuple[str, Any]]] | None] = ContextVar(
    "call_metadata", default=None
)
"""The metadata of the call being handled, as ``CallObserver`` read it, with its context."""


def invocation_metadata(context: _Context) -> Iterable[tuple[str, Any]]:
    """The call's metadata. grpc.aio builds a new tuple on every
    ``context.invocation_metadata()`` (1.5 us with four entries); a handler of an observed
    call gets the observer's, read once for the call."""
    seen = _METADATA.get()
    if seen is not None and seen[0] is context:
        return seen[1]
    return context.invocation_metadata() or ()


class HandlerRegistry(Protocol):
    """What the generated ``add_*_to_server`` functions call on a server: a grpc.aio
    server at run time (its stubs lack the second method), or a stand-in such as
    ``api.server.MethodTable``."""

    def add_generic_rpc_handlers(self, handlers: Sequence[_Generic]) -> None: ...

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, _Handler]
    ) -> None: ...


@dataclass(slots=True)
class MethodStats:
    """The counters of one method (plain ints, updated on the event loop only)."""

    service: str
    method: str
    kind: str
    """``unary``, ``server_stream``, ``client_stream`` or ``bidi_stream``."""
    started: int = 0
    handled: dict[str, int] = field(default_factory=dict)
    """Finished calls by status code name (``OK``, ``NOT_FOUND``...)."""
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    """Calls per histogram bucket (not cumulative); the last is +Inf."""
    seconds: float = 0.0
    received: int = 0
    """Stream messages received (a unary call counts its one request at scrape time)."""
    sent: int = 0
    """Stream messages sent (a unary call counts its response, if OK, at scrape time)."""

    def finish(self, code: str, elapsed: float) -> None:
        """A call ended with ``code`` after ``elapsed`` seconds."""
        self.handled[code] = self.handled.get(code, 0) + 1
        self.seconds += elapsed
        self.buckets[bisect_left(BUCKETS, elapsed)] += 1


@dataclass
class RpcStats:
    """Every method's counters, keyed by full method path."""

    methods: dict[str, MethodStats] = field(default_factory=dict)

    def method(self, path: str, kind: str) -> MethodStats:
        """The counters of ``/package.Service/Method``."""
        stats = self.methods.get(path)
        if stats is None:
            service, _, name = path.lstrip("/").rpartition("/")
            stats = self.methods[path] = MethodStats(service, name, kind)
        return stats


def _kind(handler: _Handler) -> str:
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def _code(context: _Context, error: BaseException | None) -> str:
    """The status a call ended with: what the handler set or aborted with; a
    cancellation is CANCELLED and any other escaped exception UNKNOWN (as grpc sends)."""
    code = context.code()
    if code is not None:
        return str(code.name)
    if error is None:
        return "OK"
    return "CANCELLED" if isinstance(error, asyncio.CancelledError) else "UNKNOWN"


class _CountingContext:
    """A servicer context that counts the messages a coroutine stream handler writes."""

    def __init__(self, context: _Context, stats: MethodStats) -> None:
        self._context = context
        self._stats = stats

    async def write(self, message: Any) -> None:
        await self._context.write(message)
        self._stats.sent += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class CallObserver:
    """Request ids, RPC statistics and the access log for every call.

    Not a grpc.aio interceptor: an interceptor puts a Python coroutine chain in front of
    every call's handler lookup, which measured +36 us of server CPU per cached Get under
    h2load (a tenth of the call). Each method's handler is wrapped once instead, when its
    service is registered through ``registrar(server)``."""

    def __init__(self, *, stats: RpcStats, ids: RequestIds | None = None) -> None:
        self.stats = stats
        self._ids = ids or RequestIds()
        self._wrapped: dict[str, tuple[_Handler, _Handler]] = {}

    def registrar(self, server: HandlerRegistry) -> _Registrar:
        """A stand-in for ``server`` to hand to the generated ``add_*_to_server``
        functions (and reflection, health): the handlers they register are observed."""
        return _Registrar(server, self)

    def wrap(self, path: str, inner: _Handler) -> _Handler:
        """The observed handler of method ``path`` (made once per method)."""
        cached = self._wrapped.get(path)
        if cached is not None and cached[0] is inner:
            return cached[1]
        wrapped = self._wrap(path, inner)
        self._wrapped[path] = (inner, wrapped)
        return wrapped

    def _begin(self, context: _Context) -> tuple[tuple[str, str]]:
        """Set the call's request id (the client's ``x-request-id`` if acceptable) in
        ``logs.REQUEST_ID``; returns the metadata that sends it back. The metadata read
        is kept for ``invocation_metadata``."""
        metadata: Iterable[tuple[str, Any]] = context.invocation_metadata() or ()
        _METADATA.set((context, metadata))
        request_id = None
        for key, value in metadata:
            if key == REQUEST_ID_HEADER:
                request_id = self._ids.accept(value)
                break
        if request_id is None:
            request_id = self._ids.new()
        REQUEST_ID.set(request_id)
        return ((REQUEST_ID_HEADER, request_id),)

    def _wrap(self, path: str, inner: _Handler) -> _Handler:
        stats = self.stats.method(path, _kind(inner))
        behavior: Any = {
            "unary": inner.unary_unary,
            "server_stream": inner.unary_stream,
            "client_stream": inner.stream_unary,
            "bidi_stream": inner.stream_stream,
        }[stats.kind]
        if not (inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)):
            return inner  # a sync handler runs in grpc's thread pool: left as it is
        kwargs = {
            "request_deserializer": inner.request_deserializer,
            "response_serializer": inner.response_serializer,
        }
        kind = stats.kind
        if kind == "unary":
            return grpc.unary_unary_rpc_method_handler(self._unary(path, stats, behavior), **kwargs)
        if kind == "client_stream":
            return grpc.stream_unary_rpc_method_handler(
                self._client_stream(path, stats, behavior), **kwargs
            )
        wrapper = self._streaming(path, stats, behavior)
        if kind == "server_stream":
            return grpc.unary_stream_rpc_method_handler(wrapper, **kwargs)
        return grpc.stream_stream_rpc_method_handler(wrapper, **kwargs)

    def _unary(
        self, path: str, stats: MethodStats, behavior: Callable[[Any, _Context], Awaitable[Any]]
    ) -> Callable[[Any, _Context], Awaitable[Any]]:
        begin = self._begin

        # _Observed's work, spelled out: every call is one of these (0.6 us less).
        async def observed(request: Any, context: _Context) -> Any:
            started = perf_counter()
            stats.started += 1
            code = None
            try:
                context.set_trailing_metadata(begin(context))
                return await behavior(request, context)
            except BaseException as error:
                code = _code(context, error)
                raise
            finally:
                _finish(path, stats, code or _code(context, None), perf_counter() - started)

        return observed

    def _client_stream(
        self, path: str, stats: MethodStats, behavior: Callable[[Any, _Context], Awaitable[Any]]
    ) -> Callable[[Any, _Context], Awaitable[Any]]:
        begin = self._begin

        async def observed(requests: AsyncIterator[Any], context: _Context) -> Any:
            with _Observed(path, stats, context):
                context.set_trailing_metadata(begin(context))
                response = await behavior(_counted(requests, stats), context)
                stats.sent += 1
                return response

        return observed

    def _streaming(self, path: str, stats: MethodStats, behavior: Any) -> Any:
        """Server-streaming and bidi: a coroutine handler (writes through the context)
        or an async generator (yields its responses)."""
        streaming_requests = stats.kind == "bidi_stream"
        begin = self._begin

        if inspect.isasyncgenfunction(behavior):

            async def generated(request: Any, context: _Context) -> AsyncIterator[Any]:
                with _Observed(path, stats, context):
                    if streaming_requests:
                        request = _counted(request, stats)
                    await context.send_initial_metadata(begin(context))
                    async for response in behavior(request, context):
                        yield response
                        stats.sent += 1

            return generated

        async def written(request: Any, context: _Context) -> None:
            with _Observed(path, stats, context):
                if streaming_requests:
                    request = _counted(request, stats)
                # The handler gets the counting wrapper: begin keeps the metadata for it.
                counting: Any = _CountingContext(context, stats)
                await context.send_initial_metadata(begin(counting))
                await behavior(request, counting)

        return written


class _Observed:
    """One call, from start to end: counts it started, then times it and records the
    code it ended with (whatever ended it, cancellation included)."""

    __slots__ = ("_context", "_path", "_started", "_stats")

    def __init__(self, path: str, stats: MethodStats, context: _Context) -> None:
        self._path, self._stats, self._context = path, stats, context
        self._started = perf_counter()
        stats.started += 1

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, trace: object) -> None:
        elapsed = perf_counter() - self._started
        _finish(self._path, self._stats, _code(self._context, error), elapsed)


class _Registrar:
    """Takes a service's handlers on the server's behalf and registers them observed."""

    def __init__(self, server: HandlerRegistry, observer: CallObserver) -> None:
        self._server = server
        self._observer = observer

    def add_generic_rpc_handlers(self, handlers: Sequence[_Generic]) -> None:
        self._server.add_generic_rpc_handlers(
            [_ObservedGeneric(handler, self._observer) for handler in handlers]
        )

    def add_registered_method_handlers(self, service: str, handlers: dict[str, _Handler]) -> None:
        observe = self._observer.wrap
        self._server.add_registered_method_handlers(
            service, {name: observe(f"/{service}/{name}", h) for name, h in handlers.items()}
        )


class _ObservedGeneric(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """A generic handler whose method handlers are observed (looked up per call, as
    grpc does for methods not registered in advance)."""

    def __init__(self, inner: _Generic, observer: CallObserver) -> None:
        self._inner = inner
        self._observer = observer

    def service(self, details: grpc.HandlerCallDetails) -> _Handler | None:
        handler = self._inner.service(details)
        return None if handler is None else self._observer.wrap(details.method, handler)


async def _counted(requests: AsyncIterator[Any], stats: MethodStats) -> AsyncIterator[Any]:
    async for request in requests:
        stats.received += 1
        yield request


def _finish(path: str, stats: MethodStats, code: str, elapsed: float) -> None:
    stats.finish(code, elapsed)
    level = (
        logging.DEBUG
        if code in _ROUTINE
        else logging.WARNING
        if code in _SERVER_ERRORS
        else logging.INFO
    )
    if log.isEnabledFor(level):
        duration_ms = round(elapsed * 1000, 3)
        log.log(
            level,
            "%s %s %.3fms",
            path,
            code,
            duration_ms,
            extra={"method": path, "code": code, "duration_ms": duration_ms},
        )
