"""What the gRPC-Web gateway translates besides frames: HTTP headers to gRPC metadata and
back, gateway-made statuses, and CORS by an exact allow-list of origins.

CORS policy: a request whose ``Origin`` is listed (or any origin when the list holds
``*``) gets ``Access-Control-Allow-Origin`` with that origin and the gRPC status headers
exposed. A request from an unlisted origin is refused with HTTP 403 and no CORS headers,
before anything is forwarded: a browser would block the answer anyway, and refusing also
keeps a page on another origin from causing side effects. A request with no ``Origin``
(curl, native and server-side clients) is not a browser's cross-origin request and is
served without CORS headers.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from tmcp_storage_server.api.errors import DOMAIN, to_status
from tmcp_storage_server.api.grpcweb import percent_encode
from tmcp_storage_server.errors import InvalidArgument

Metadata = list[tuple[str, str | bytes]]

EXPOSED_HEADERS = ("grpc-status", "grpc-message", "grpc-status-details-bin", "x-request-id")
PREFLIGHT_MAX_AGE = 600
"""Seconds a browser may cache a preflight answer."""

# Headers that belong to HTTP/1.1, the browser or this hop, never to the gRPC call.
_NOT_METADATA = frozenset(
    {
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "cache-control",
        "connection",
        "content-length",
        "content-type",
        "cookie",
        "dnt",
        "expect",
        "host",
        "keep-alive",
        "origin",
        "pragma",
        "priority",
        "proxy-authorization",
        "proxy-connection",
        "referer",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-grpc-web",
    }
)
_NOT_METADATA_PREFIXES = ("grpc-", "sec-", "access-control-", ":")
_METADATA_KEY = re.compile(r"[0-9a-z_.\-]+")
_ASCII_VALUE = re.compile(r"[\x20-\x7e]*")


def request_metadata(headers: Iterable[tuple[str, str]]) -> Metadata:
    """The gRPC metadata an HTTP request carries: every end-to-end header except those
    of HTTP and the browser; ``-bin`` values are base64-decoded. Names gRPC cannot carry
    are dropped; a value it cannot carry is INVALID_ARGUMENT."""
    metadata: Metadata = []
    for raw_name, value in headers:
        name = raw_name.lower()
        if name in _NOT_METADATA or name.startswith(_NOT_METADATA_PREFIXES):
            continue
        if not _METADATA_KEY.fullmatch(name):
            continue
        if name.endswith("-bin"):
            metadata.append((name, _unbase64(name, value)))
        elif _ASCII_VALUE.fullmatch(value):
            metadata.append((name, value.strip()))
        else:
            raise InvalidArgument(
                name, f"header {name} is not printable ASCII", reason="INVALID_METADATA"
            )
    return metadata


def forwarded_for(metadata: Metadata, peer: str | None) -> Metadata:
    """``metadata`` with the HTTP client's address appended to ``x-forwarded-for``, so
    the server sees who called rather than the gateway."""
    if not peer:
        return metadata
    earlier = [str(v) for k, v in metadata if k == "x-forwarded-for"]
    rest = [(k, v) for k, v in metadata if k != "x-forwarded-for"]
    return [*rest, ("x-forwarded-for", ", ".join([*earlier, peer]))]


def _unbase64(name: str, value: str) -> bytes:
    try:
        parts = [p.strip() for p in value.split(",")]
        return b"".join(base64.b64decode(p + "=" * (-len(p) % 4), validate=True) for p in parts)
    except binascii.Error:
        raise InvalidArgument(
            name, f"header {name} is not base64", reason="INVALID_METADATA"
        ) from None


def metadata_headers(metadata: Iterable[tuple[str, str | bytes]]) -> list[tuple[str, str]]:
    """gRPC metadata as HTTP header (or trailer) pairs; binary values in base64."""
    pairs: list[tuple[str, str]] = []
    for name, value in metadata:
        if isinstance(value, bytes):
            pairs.append((name, base64.b64encode(value).decode("ascii")))
        else:
            pairs.append((name, value))
    return pairs


def status_trailers(
    code: int, message: str, trailing: Iterable[tuple[str, str | bytes]]
) -> list[tuple[str, str]]:
    """The trailer pairs of a finished call: ``grpc-status``, the percent-encoded
    ``grpc-message`` and every trailing metadata pair (``grpc-status-details-bin``
    included)."""
    pairs = [("grpc-status", str(code))]
    if message:
        pairs.append(("grpc-message", percent_encode(message)))
    pairs.extend(metadata_headers(trailing))
    return pairs


def rich_trailers(status: status_pb2.Status) -> list[tuple[str, str]]:
    """The trailer pairs of a status the gateway itself decides."""
    details = ("grpc-status-details-bin", status.SerializeToString())
    return status_trailers(status.code, status.message, [details])


def invalid(field: str, message: str, reason: str) -> status_pb2.Status:
    """INVALID_ARGUMENT with ErrorInfo ``reason`` and a BadRequest naming ``field``."""
    return to_status(InvalidArgument(field, message, reason=reason))


def gateway_status(code: int, message: str, reason: str) -> status_pb2.Status:
    """A status with only an ErrorInfo (domain ``storage.tmcp``, ``reason``)."""
    packed = any_pb2.Any()
    packed.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN))
    return status_pb2.Status(code=code, message=message, details=[packed])


def unimplemented(message: str, reason: str) -> status_pb2.Status:
    """UNIMPLEMENTED with ErrorInfo ``reason``."""
    return gateway_status(code_pb2.UNIMPLEMENTED, message, reason)


@dataclass(frozen=True)
class Cors:
    """The origins browsers may call the gateway from."""

    origins: Sequence[str]

    def allows(self, origin: str) -> bool:
        """Whether a page on ``origin`` may call."""
        return "*" in self.origins or origin in self.origins

    def response_headers(self, origin: str | None) -> dict[str, str]:
        """CORS headers of an answer to a (listed) ``origin``; none without an origin."""
        if origin is None or not self.allows(origin):
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": ", ".join(EXPOSED_HEADERS),
            "Vary": "Origin",
        }

    def preflight_headers(self, origin: str, request: Mapping[str, str]) -> dict[str, str]:
        """The answer to an allowed preflight: POST, and whatever headers the page asks
        to send (they are forwarded as metadata)."""
        headers = self.response_headers(origin)
        headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        asked = request.get("Access-Control-Request-Headers", "")
        allowed = asked or "content-type, x-grpc-web, x-user-agent, grpc-timeout, authorization"
        headers["Access-Control-Allow-Headers"] = allowed
        headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE)
        headers["Vary"] = "Origin, Access-Control-Request-Headers"
        return headers
