"""Domain errors. The api layer turns each class into one gRPC status (api/errors.py).

    StorageError                      reason chosen per instance
    ├── InvalidArgument               INVALID_ARGUMENT; names the offending field
    │   └── TooManyOperations         INVALID_ARGUMENT, TOO_MANY_OPERATIONS; the limit
    ├── NotFound                      NOT_FOUND, KEY_NOT_FOUND
    ├── AlreadyExists                 ALREADY_EXISTS, KEY_EXISTS
    ├── VersionMismatch               FAILED_PRECONDITION, VERSION_MISMATCH; current version
    ├── FailedPrecondition            FAILED_PRECONDITION (CONFLICT_RESOLVED)
    ├── QuotaExceeded                 RESOURCE_EXHAUSTED, QUOTA_BYTES / QUOTA_KEYS; usage
    ├── SlowConsumer                  RESOURCE_EXHAUSTED, SLOW_CONSUMER; resume cursor
    ├── RateLimited                   RESOURCE_EXHAUSTED, RATE_LIMITED; retry delay
    ├── OutOfRange                    OUT_OF_RANGE (CURSOR_COMPACTED, MUTATION_GAP)
    ├── Unauthenticated               UNAUTHENTICATED, TOKEN_INVALID / TOKEN_EXPIRED
    ├── PermissionDenied              PERMISSION_DENIED, SCOPE_MISSING / SPACE_FORBIDDEN
    └── Unavailable                   UNAVAILABLE, BACKEND_UNAVAILABLE; retry delay

Messages are written for the caller; nothing internal (SQL, stack, driver text) goes in
them. Anything that is not a StorageError becomes INTERNAL without its text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from tmcp_storage_server.model import QuotaUsage, Rejection


class StorageError(Exception):
    """Base of every error the service reports to callers."""

    default_reason = "UNKNOWN"

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] = {}
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata)


class InvalidArgument(StorageError):
    """A request field is malformed or out of bounds."""

    default_reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str, *, reason: str | None = None) -> None:
        super().__init__(message, reason=reason, metadata={"field": field})
        self.field = field


class TooManyOperations(InvalidArgument):
    """A batch has more items (or bytes) than allowed."""

    default_reason = "TOO_MANY_OPERATIONS"

    def __init__(self, field: str, count: int, limit: int) -> None:
        super().__init__(field, f"{count} operations is more than the limit of {limit}")
        self.metadata["limit"] = str(limit)
        self.limit = limit


class NotFound(StorageError):
    """The key is absent or expired."""

    default_reason = "KEY_NOT_FOUND"

    def __init__(self, key: str, message: str | None = None) -> None:
        super().__init__(message or f"key {key!r} not found", metadata={"key": key})
        self.key = key


class AlreadyExists(StorageError):
    """A create-only write found the key."""

    default_reason = "KEY_EXISTS"

    def __init__(self, key: str, current_version: int) -> None:
        super().__init__(
            f"key {key!r} already exists",
            metadata={"key": key, "current_version": str(current_version)},
        )
        self.key = key
        self.current_version = current_version


class VersionMismatch(StorageError):
    """A conditional write expected another version of the key."""

    default_reason = "VERSION_MISMATCH"

    def __init__(self, key: str, expected: int, current: int) -> None:
        super().__init__(
            f"key {key!r} is at version {current}, not {expected}",
            metadata={
                "key": key,
                "expected_version": str(expected),
                "current_version": str(current),
            },
        )
        self.key = key
        self.expected = expected
        self.current = current


class FailedPrecondition(StorageError):
    """The target is not in the state the call needs (a conflict already resolved)."""

    default_reason = "FAILED_PRECONDITION"


QUOTA_BYTES = "QUOTA_BYTES"
QUOTA_KEYS = "QUOTA_KEYS"
QUOTA_REASONS = (QUOTA_BYTES, QUOTA_KEYS)
"""The reasons of ``QuotaExceeded``: the limit in bytes, or in keys, was reached."""


class QuotaExceeded(StorageError):
    """The write would take the space over its byte or key limit."""

    def __init__(self, *, kind: str, usage: QuotaUsage, requested: int) -> None:
        if kind == "bytes":
            limit, used = usage.limit_bytes, usage.used_bytes
        else:
            limit, used = usage.limit_keys, usage.used_keys
        super().__init__(
            f"space quota exceeded: {used} of {limit} {kind} used, the write needs {requested}",
            reason=QUOTA_BYTES if kind == "bytes" else QUOTA_KEYS,
            metadata={"limit": str(limit), "used": str(used), "requested": str(requested)},
        )
        self.kind = kind
        self.usage = usage
        self.requested = requested


class SlowConsumer(StorageError):
    """A watcher fell too far behind; it may resume from the cursor in the metadata."""

    default_reason = "SLOW_CONSUMER"


class RateLimited(StorageError):
    """The space's write rate limit refused the call; nothing was written, and the same
    call is admitted after ``retry_after`` seconds (if no other write comes first)."""

    default_reason = "RATE_LIMITED"

    def __init__(self, *, retry_after: float, rate: float, burst: int) -> None:
        super().__init__(
            f"too many writes to this space: at most {rate:g} per second "
            f"(bursts of {burst}); retry in {retry_after:.3f} s",
            metadata={
                "rate": f"{rate:g}",
                "burst": str(burst),
                "retry_after_ms": str(math.ceil(retry_after * 1000)),
            },
        )
        self.retry_after = retry_after


class OutOfRange(StorageError):
    """A cursor or id lies outside what the server can serve."""

    default_reason = "OUT_OF_RANGE"


class Unauthenticated(StorageError):
    """No token, or a token that is malformed, badly signed or expired."""

    default_reason = "TOKEN_INVALID"


class PermissionDenied(StorageError):
    """The token lacks the scope, or does not reach the space."""

    default_reason = "SPACE_FORBIDDEN"


class Unavailable(StorageError):
    """A backend (database) cannot be reached; the call may be retried."""

    default_reason = "BACKEND_UNAVAILABLE"

    def __init__(self, message: str = "storage backend unavailable", *, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


def rejection(error: StorageError) -> Rejection:
    """The storable form of a permanent failure."""
    return Rejection(type(error).__name__, error.reason, error.message, dict(error.metadata))


def from_rejection(stored: Rejection) -> StorageError:
    """A stored failure as an error of its class again, for reporting (never raised)."""
    kinds = {kind.__name__: kind for kind in _REPORTABLE}
    error = StorageError.__new__(kinds.get(stored.kind, StorageError))
    StorageError.__init__(error, stored.message, reason=stored.reason, metadata=stored.metadata)
    if isinstance(error, InvalidArgument):
        error.field = stored.metadata.get("field", "")
    if isinstance(error, QuotaExceeded):
        error.kind = "bytes" if stored.reason == QUOTA_BYTES else "keys"
    return error


_REPORTABLE: tuple[type[StorageError], ...] = (
    InvalidArgument,
    TooManyOperations,
    NotFound,
    AlreadyExists,
    VersionMismatch,
    FailedPrecondition,
    QuotaExceeded,
    OutOfRange,
)
