"""Exceptions raised by the client, and the one place where gRPC errors become them.

    StorageError                  every failed call: code, reason, message, metadata, details
    ├── InvalidArgument           INVALID_ARGUMENT: INVALID_KEY, INVALID_VALUE,
    │                             VALUE_TOO_LARGE, INVALID_JSON, INVALID_TTL, …,
    │                             TOO_MANY_OPERATIONS
    ├── NotFound                  NOT_FOUND: KEY_NOT_FOUND
    ├── AlreadyExists             ALREADY_EXISTS: KEY_EXISTS; current_version
    ├── FailedPrecondition        FAILED_PRECONDITION
    │   └── VersionConflict       VERSION_MISMATCH; current_version
    ├── ResourceExhausted         RESOURCE_EXHAUSTED: SLOW_CONSUMER, message too large
    │   ├── QuotaExceeded         QUOTA_BYTES, QUOTA_KEYS; kind
    │   └── RateLimited           RATE_LIMITED; retry_after (nothing was written)
    ├── OutOfRange                OUT_OF_RANGE: CURSOR_COMPACTED, MUTATION_GAP
    ├── PermissionDenied          PERMISSION_DENIED: SCOPE_MISSING, SPACE_FORBIDDEN
    ├── Unauthenticated           UNAUTHENTICATED: TOKEN_INVALID, TOKEN_EXPIRED
    ├── Unavailable               UNAVAILABLE: BACKEND_UNAVAILABLE (retried by the client)
    ├── DeadlineExceeded          DEADLINE_EXCEEDED
    └── Internal                  INTERNAL, UNKNOWN, DATA_LOSS

The class comes from the `ErrorInfo.reason` of domain `storage.tmcp` when the server sent
one the client knows, else from the status code; codes not drawn above (CANCELLED,
UNIMPLEMENTED, ABORTED) raise `StorageError` itself. Catch a class to branch, or read
`reason` for the finer cause.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar, cast

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from tmcp_storage.models import QuotaKind

DOMAIN = "storage.tmcp"
"""The `ErrorInfo.domain` of the storage service."""

_M = TypeVar("_M", bound=Message)

_DETAIL_TYPES: dict[str, type[Message]] = {
    kind.DESCRIPTOR.full_name: kind
    for kind in (
        error_details_pb2.ErrorInfo,
        error_details_pb2.RetryInfo,
        error_details_pb2.BadRequest,
        error_details_pb2.PreconditionFailure,
        error_details_pb2.QuotaFailure,
        error_details_pb2.ResourceInfo,
        error_details_pb2.RequestInfo,
        error_details_pb2.DebugInfo,
        error_details_pb2.Help,
        error_details_pb2.LocalizedMessage,
    )
}


class StorageError(Exception):
    """A call failed; the base of every error the client raises for a call."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        details: Sequence[Message] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        """The server's message, written for the caller."""
        self.code = code
        """The gRPC status code."""
        self.reason = reason
        """`ErrorInfo.reason` (e.g. `VERSION_MISMATCH`), or "" when the server sent none."""
        self.domain = domain
        """`ErrorInfo.domain`; `storage.tmcp` for the storage service's own errors."""
        self.metadata = dict(metadata or {})
        """`ErrorInfo.metadata`: e.g. `key`, `current_version`, `limit`."""
        self.details = list(details)
        """Every detail message of the status (ErrorInfo, BadRequest, RetryInfo, …),
        decoded; a detail of an unknown type stays a `google.protobuf.Any`."""

    def __str__(self) -> str:
        label = f"{self.code.name} {self.reason}" if self.reason else self.code.name
        return f"{self.message} ({label})"

    def detail(self, kind: type[_M]) -> _M | None:
        """The first detail message of the given type, e.g. `detail(BadRequest)`."""
        for item in self.details:
            if isinstance(item, kind):
                return item
        return None

    @property
    def retry_delay(self) -> float | None:
        """Seconds the server asked the caller to wait (RetryInfo), if it asked."""
        info = self.detail(error_details_pb2.RetryInfo)
        if info is None or not info.HasField("retry_delay"):
            return None
        return float(info.retry_delay.ToTimedelta().total_seconds())


class InvalidArgument(StorageError):
    """A request field is malformed or out of bounds; `metadata["field"]` names it."""


class NotFound(StorageError):
    """The key is absent or expired."""


class AlreadyExists(StorageError):
    """A create-only write (`expected_version=0`) found the key."""

    @property
    def current_version(self) -> int | None:
        """The key's version on the server, when the server reported it."""
        return _int_or_none(self.metadata.get("current_version"))


class FailedPrecondition(StorageError):
    """The system is not in the state the call requires."""


class VersionConflict(FailedPrecondition):
    """A conditional write or delete expected another version of the key."""

    @property
    def current_version(self) -> int | None:
        """The key's version on the server, when the server reported it."""
        return _int_or_none(self.metadata.get("current_version"))


class ResourceExhausted(StorageError):
    """A limit was reached: rate, stream buffer, or (subclass) quota."""


class QuotaExceeded(ResourceExhausted):
    """The write would take the space over its byte or key limit."""

    @property
    def kind(self) -> QuotaKind | None:
        """`"bytes"` or `"keys"`: the limit the write ran into."""
        if self.reason == "QUOTA_BYTES":
            return "bytes"
        if self.reason == "QUOTA_KEYS":
            return "keys"
        return None


class RateLimited(ResourceExhausted):
    """The space's write rate limit refused the call. Nothing was written: the same call
    may be made again after `retry_after` seconds."""

    @property
    def retry_after(self) -> float:
        """Seconds to wait before the call is admitted (the server's RetryInfo)."""
        delay = self.retry_delay
        if delay is not None:
            return delay
        millis = _int_or_none(self.metadata.get("retry_after_ms"))
        return millis / 1000 if millis is not None else 1.0


class OutOfRange(StorageError):
    """A cursor or mutation id lies outside what the server can serve."""


class PermissionDenied(StorageError):
    """The token lacks the scope, or does not reach the space."""


class Unauthenticated(StorageError):
    """No token, or a malformed, badly signed or expired one."""


class Unavailable(StorageError):
    """The server or its database cannot be reached; raised once retries are spent."""


class DeadlineExceeded(StorageError):
    """The call did not finish within its timeout."""


class Internal(StorageError):
    """The server failed unexpectedly."""


_BY_REASON: dict[str, type[StorageError]] = {
    "KEY_NOT_FOUND": NotFound,
    "KEY_EXISTS": AlreadyExists,
    "VERSION_MISMATCH": VersionConflict,
    "QUOTA_BYTES": QuotaExceeded,
    "QUOTA_KEYS": QuotaExceeded,
    "SCOPE_MISSING": PermissionDenied,
    "SPACE_FORBIDDEN": PermissionDenied,
    "TOKEN_INVALID": Unauthenticated,
    "TOKEN_EXPIRED": Unauthenticated,
    "BACKEND_UNAVAILABLE": Unavailable,
    "CURSOR_COMPACTED": OutOfRange,
    "MUTATION_GAP": OutOfRange,
    "SLOW_CONSUMER": ResourceExhausted,
    "RATE_LIMITED": RateLimited,
    **dict.fromkeys(
        (
            "INVALID_ARGUMENT",
            "INVALID_KEY",
            "INVALID_VALUE",
            "VALUE_TOO_LARGE",
            "INVALID_JSON",
            "INVALID_METADATA",
            "INVALID_TTL",
            "INVALID_CONTENT_TYPE",
            "INVALID_PAGE_TOKEN",
            "INVALID_SPACE",
            "TOO_MANY_OPERATIONS",
        ),
        InvalidArgument,
    ),
}

_BY_CODE: dict[grpc.StatusCode, type[StorageError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNKNOWN: Internal,
    grpc.StatusCode.DATA_LOSS: Internal,
}


def from_rpc_error(error: grpc.RpcError) -> StorageError:
    """Translate a failed call (blocking or asyncio) into the matching StorageError."""
    code = error.code() or grpc.StatusCode.UNKNOWN
    status = _rich_status(error)
    details = [decode_detail(item) for item in status.details] if status else []
    return build_error(code, error.details() or "", details)


def grpc_code(number: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a numeric code (UNKNOWN for numbers gRPC does not define)."""
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


def build_error(code: grpc.StatusCode, message: str, details: Sequence[Message]) -> StorageError:
    """Choose the StorageError class for a status and build it (pure; for tests too)."""
    info = _error_info(details)
    reason = info.reason if info else ""
    kind = _BY_REASON.get(reason) if info and info.domain == DOMAIN else None
    kind = kind or _BY_CODE.get(code, StorageError)
    return kind(
        message,
        code=code,
        reason=reason,
        domain=info.domain if info else "",
        metadata=dict(info.metadata) if info else {},
        details=details,
    )


def decode_detail(detail: any_pb2.Any) -> Message:
    """Unpack a status detail of a known `google.rpc` type; leave others packed."""
    kind = _DETAIL_TYPES.get(detail.TypeName())
    if kind is None:
        return detail
    message = kind()
    detail.Unpack(message)
    return message


def _rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    # Both the blocking call's error and grpc.aio.AioRpcError offer the finished call's
    # code(), details() and trailing_metadata(), which is all from_call reads.
    try:
        status: status_pb2.Status | None = rpc_status.from_call(cast(grpc.Call, error))
    except ValueError:
        # The rich status contradicts the call's own code or message (a proxy rewrote
        # one of them): its details describe some other error, so they are dropped.
        return None
    return status


def _error_info(details: Sequence[Message]) -> error_details_pb2.ErrorInfo | None:
    infos = [item for item in details if isinstance(item, error_details_pb2.ErrorInfo)]
    for info in infos:
        if info.domain == DOMAIN:
            return info
    return infos[0] if infos else None


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
