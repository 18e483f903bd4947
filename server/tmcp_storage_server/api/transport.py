"""Transport settings of the gRPC port: TLS credentials and the limits that protect a
connection (concurrent streams, keepalive policing, idle connections).

Message size limits live with the server (``api.server.MAX_MESSAGE_BYTES``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

KEEPALIVE_TIME = 60.0
"""Seconds between the server's own pings on a connection with calls open: a client that
vanished without closing (a phone that lost its network) is found and its Watch and
Stream calls end instead of holding resources."""
KEEPALIVE_TIMEOUT = 20.0
"""Seconds the server waits for a ping's answer before it closes the connection."""
MAX_PING_STRIKES = 2
"""Pings sooner than the minimum interval tolerated before GOAWAY ``too_many_pings``."""
MAX_CONNECTION_IDLE = 15 * 60.0
"""Seconds a connection with no call open is kept; then GOAWAY (clients reconnect on
their next call without an error). Long calls (Watch, Stream) keep it busy, not idle."""


def server_options(*, max_streams: int, min_ping: float) -> list[tuple[str, Any]]:
    """Channel arguments of the server: ``max_streams`` concurrent streams per connection
    (0: no limit), client pings no more often than every ``min_ping`` seconds."""
    options: list[tuple[str, Any]] = [
        ("grpc.keepalive_time_ms", int(KEEPALIVE_TIME * 1000)),
        ("grpc.keepalive_timeout_ms", int(KEEPALIVE_TIMEOUT * 1000)),
        # Accept a client's keepalive pings on a connection without calls (at the
        # permitted rate): otherwise an idle client that keeps its connection warm is
        # treated as abusive.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", int(min_ping * 1000)),
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
        ("grpc.max_connection_idle_ms", int(MAX_CONNECTION_IDLE * 1000)),
    ]
    if max_streams > 0:
        options.append(("grpc.max_concurrent_streams", max_streams))
    return options


def server_credentials(cert: str, key: str, client_ca: str) -> grpc.ServerCredentials | None:
    """TLS credentials from PEM files (paths; "" for unset), or None for plaintext. With
    ``client_ca``, clients must present a certificate that one of its CAs signed."""
    if not cert:
        return None
    pair = (Path(key).read_bytes(), Path(cert).read_bytes())
    if not client_ca:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair], root_certificates=Path(client_ca).read_bytes(), require_client_auth=True
    )
