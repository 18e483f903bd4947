"""The grpc.aio server: our services, health and reflection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeAlias

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from tmcp.storage.v1 import (
    batch_pb2,
    batch_pb2_grpc,
    kv_pb2,
    kv_pb2_grpc,
    quota_pb2,
    quota_pb2_grpc,
    sync_pb2,
    sync_pb2_grpc,
)

from tmcp_storage_server.api.batch import BatchServicer
from tmcp_storage_server.api.kv import KeyValueServicer
from tmcp_storage_server.api.observe import CallObserver
from tmcp_storage_server.api.quota import QuotaServicer
from tmcp_storage_server.api.sync import SyncServicer

MAX_MESSAGE_BYTES = 20 * 1024 * 1024  # a 16 MiB batch plus framing and headers

SERVICE_NAMES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (kv_pb2, "KeyValue"),
        (batch_pb2, "Batch"),
        (quota_pb2, "Quota"),
        (sync_pb2, "Sync"),
    )
)


_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_Generic: TypeAlias = "grpc.GenericRpcHandler[Any, Any]"


class _GenericHandlers(Protocol):
    """The one method of a grpc.aio server that ``MethodTable`` uses."""

    def add_generic_rpc_handlers(self, handlers: Sequence[_Generic]) -> None: ...


class MethodTable(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Stands in for the server in the generated ``add_*_to_server`` functions: the
    methods they would register in advance go into one table instead, a generic handler
    that finds a method by one dict lookup (and comes first, before any other).

    grpc.aio keeps one pending task per method registered in advance and, for every call
    it accepts, waits on all of them again (``asyncio.wait(..., FIRST_COMPLETED)`` over
    our 26 methods, twice per call): that alone made a cached Get cost ~60 us more
    server CPU than a bare echo server (cProfile: 26 ``iscoroutine`` and 26
    ``add_done_callback`` per call; callgrind: 770k instructions per call against 462k)."""

    def __init__(self, server: _GenericHandlers) -> None:
        self._server = server
        self._methods: dict[str, _Handler] = {}
        server.add_generic_rpc_handlers([self])

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> _Handler | None:
        """The handler of the called method, if it is in the table."""
        return self._methods.get(handler_call_details.method)

    def add_generic_rpc_handlers(self, handlers: Sequence[_Generic]) -> None:
        """Generic handlers go to the server as they are (consulted after the table)."""
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, _Handler]) -> None:
        """Methods that would be registered in advance join the table instead."""
        for name, handler in handlers.items():
            self._methods[f"/{service}/{name}"] = handler


def build_server(
    *,
    kv: KeyValueServicer,
    batch: BatchServicer,
    quota: QuotaServicer,
    sync: SyncServicer,
    health_servicer: Any,
    options: Sequence[tuple[str, Any]] = (),
    observer: CallObserver | None = None,
) -> grpc.aio.Server:
    """A server with every service registered (not yet bound or started); with an
    observer, every call of every service (health and reflection too) is observed."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 1),
            *options,
        ],
    )
    target: Any = MethodTable(server)  # Any: the generated functions want a grpc.Server
    if observer is not None:
        target = observer.registrar(target)
    kv_pb2_grpc.add_KeyValueServicer_to_server(kv, target)
    batch_pb2_grpc.add_BatchServicer_to_server(batch, target)
    quota_pb2_grpc.add_QuotaServicer_to_server(quota, target)
    sync_pb2_grpc.add_SyncServicer_to_server(sync, target)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, target)
    # Registered as enable_server_reflection does for an aio server, but through target.
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer(  # type: ignore[attr-defined]  # public, unstubbed
            (
                *SERVICE_NAMES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            )
        ),
        target,
    )
    return server
