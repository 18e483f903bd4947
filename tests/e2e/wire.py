"""Raw stubs and status decoding, to check errors exactly as any client sees them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.e2e.harness import token

DETAIL_TYPES = {
    "ErrorInfo": error_details_pb2.ErrorInfo,
    "BadRequest": error_details_pb2.BadRequest,
    "PreconditionFailure": error_details_pb2.PreconditionFailure,
    "QuotaFailure": error_details_pb2.QuotaFailure,
    "RetryInfo": error_details_pb2.RetryInfo,
}


@dataclass
class Failure:
    """A failed call: its code, ErrorInfo and the other details by type name."""

    code: grpc.StatusCode
    message: str
    reason: str
    domain: str
    metadata: dict[str, str]
    details: dict[str, Any]


def failure(call: Callable[[], object]) -> Failure:
    """Run ``call``, which must fail, and decode its rich status."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no rich status: {error}"
    details: dict[str, Any] = {}
    for packed in status.details:
        for name, kind in DETAIL_TYPES.items():
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                details[name] = message
    info = details["ErrorInfo"]
    return Failure(
        code=error.code(),
        message=status.message,
        reason=info.reason,
        domain=info.domain,
        metadata=dict(info.metadata),
        details=details,
    )


def bearer(app_id: str, user_id: str, *scopes: str, ttl: int = 3600) -> tuple[tuple[str, str], ...]:
    """Call metadata with a token."""
    return (("authorization", "Bearer " + token(app_id, user_id, *scopes, ttl=ttl)),)
