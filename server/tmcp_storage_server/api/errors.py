"""The one table from domain errors to gRPC status with rich details.

Every status carries ``google.rpc.ErrorInfo`` (domain ``storage.tmcp``, a reason) and
the standard detail that fits the error. Unexpected exceptions become INTERNAL with no
internal text.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from tmcp_storage_server import errors

DOMAIN = "storage.tmcp"
log = logging.getLogger(__name__)

# Most specific first: TooManyOperations is an InvalidArgument.
_CODES: tuple[tuple[type[errors.StorageError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.VersionMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.SlowConsumer, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
)


def code_of(error: errors.StorageError) -> grpc.StatusCode:
    """The gRPC code of a domain error."""
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _detail(error: errors.StorageError) -> Message | None:
    detail: Message
    if isinstance(error, errors.InvalidArgument):
        detail = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=error.field, description=error.message, reason=error.reason
                )
            ]
        )
        return detail
    if isinstance(error, errors.VersionMismatch | errors.AlreadyExists):
        detail = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type="VERSION", subject=error.key, description=error.message
                )
            ]
        )
        return detail
    if isinstance(error, errors.QuotaExceeded):
        detail = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=f"space:{error.kind}", description=error.message
                )
            ]
        )
        return detail
    if isinstance(error, errors.Unavailable | errors.RateLimited):
        delay = duration_pb2.Duration()
        # Rounded up: a client that waits exactly this long is admitted.
        delay.FromMilliseconds(math.ceil(error.retry_after * 1000))
        detail = error_details_pb2.RetryInfo(retry_delay=delay)
        return detail
    return None


def to_status(error: errors.StorageError) -> status_pb2.Status:
    """The ``google.rpc.Status`` of a domain error."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata)
    details = [_pack(info)]
    extra = _detail(error)
    if extra is not None:
        details.append(_pack(extra))
    return status_pb2.Status(code=code_of(error).value[0], message=error.message, details=details)


def internal_status() -> status_pb2.Status:
    """INTERNAL, with no internal text."""
    info = error_details_pb2.ErrorInfo(reason="INTERNAL", domain=DOMAIN)
    return status_pb2.Status(
        code=code_pb2.INTERNAL, message="internal error", details=[_pack(info)]
    )


def not_implemented_status(what: str) -> status_pb2.Status:
    """UNIMPLEMENTED with ErrorInfo reason NOT_IMPLEMENTED, for parts not built yet."""
    info = error_details_pb2.ErrorInfo(reason="NOT_IMPLEMENTED", domain=DOMAIN)
    return status_pb2.Status(
        code=code_pb2.UNIMPLEMENTED, message=f"{what} is not implemented yet", details=[_pack(info)]
    )


async def abort(
    context: grpc.aio.ServicerContext[Any, Any], error: BaseException, where: str
) -> None:
    """End the call with the status of ``error``: a StorageError's own, anything else
    INTERNAL (logged here, never sent)."""
    if isinstance(error, errors.StorageError):
        status = to_status(error)
    else:
        log.error("unexpected error in %s", where, exc_info=error)
        status = internal_status()
    rich = rpc_status.to_status(status)
    # Keep what is already set to go with the status (the request id, api.observe).
    trailing = (*(context.trailing_metadata() or ()), *rich.trailing_metadata)
    await context.abort(rich.code, rich.details, trailing)
