"""The grpc.aio server: our services, health and reflection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from tmcp.storage.v1 import (
    batch_pb2,
    kv_pb2,
    kv_pb2_grpc,
    quota_pb2,
    quota_pb2_grpc,
    sync_pb2,
    sync_pb2_grpc,
)

from tmcp_storage_server.api.errors import DOMAIN
from tmcp_storage_server.api.kv import KeyValueServicer
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


def _unimplemented(service: Any) -> grpc.GenericRpcHandler[Any, Any]:
    """Every method of ``service`` answers UNIMPLEMENTED (with ErrorInfo) until built."""
    from google.protobuf import any_pb2
    from google.rpc import code_pb2, error_details_pb2, status_pb2

    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="NOT_IMPLEMENTED", domain=DOMAIN))
    status = rpc_status.to_status(
        status_pb2.Status(
            code=code_pb2.UNIMPLEMENTED,
            message=f"{service.full_name} is not implemented yet",
            details=[info],
        )
    )

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(status.code, status.details, status.trailing_metadata)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(status.code, status.details, status.trailing_metadata)
        yield  # pragma: no cover - makes this an async generator

    handlers = {}
    for method in service.methods:
        if method.server_streaming and method.client_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(refuse_stream)
        elif method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(refuse_stream)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(refuse)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def build_server(
    *,
    kv: KeyValueServicer,
    quota: QuotaServicer,
    sync: SyncServicer,
    health_servicer: Any,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Server:
    """A server with every service registered (not yet bound or started)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 1),
            *options,
        ]
    )
    kv_pb2_grpc.add_KeyValueServicer_to_server(kv, server)
    quota_pb2_grpc.add_QuotaServicer_to_server(quota, server)
    sync_pb2_grpc.add_SyncServicer_to_server(sync, server)
    server.add_generic_rpc_handlers(
        [_unimplemented(batch_pb2.DESCRIPTOR.services_by_name["Batch"])]
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            *SERVICE_NAMES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    return server
