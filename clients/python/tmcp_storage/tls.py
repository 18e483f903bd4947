"""TLS settings of a client: which CAs to trust, an optional client certificate (mutual
TLS), and the name to expect in the server's certificate.

    Client("storage.example:443", tls=Tls(root_ca="ca.pem"), token=...)
    Client("10.0.0.5:50051", tls=Tls(root_ca="ca.pem", client_cert="me.pem",
                                     client_key="me.key", server_name="storage.internal"))

Each PEM item is the PEM text itself (`bytes`) or the path of a file holding it (`str` or
`os.PathLike`), read once when the client is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

Pem = bytes | str | os.PathLike[str]
"""PEM text (bytes), or the path of a PEM file."""


def _read(item: Pem | None) -> bytes | None:
    if item is None or isinstance(item, bytes):
        return item
    return Path(item).read_bytes()


@dataclass(frozen=True, kw_only=True)
class Tls:
    """How a client speaks TLS to the server."""

    root_ca: Pem | None = None
    """CA certificates that may sign the server's certificate; None: the system's roots."""
    client_cert: Pem | None = None
    """This client's certificate (chain), for a server that requires mutual TLS."""
    client_key: Pem | None = None
    """The private key of `client_cert`."""
    server_name: str | None = None
    """The name the server's certificate must carry when it differs from the host in the
    target (e.g. connecting to an IP address); also sent as SNI."""

    def __post_init__(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        if self.server_name is not None and not self.server_name:
            raise ValueError("server_name must not be empty")

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials (files are read now)."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.root_ca),
            private_key=_read(self.client_key),
            certificate_chain=_read(self.client_cert),
        )

    def options(self) -> tuple[tuple[str, Any], ...]:
        """Channel options the settings need."""
        if self.server_name is None:
            return ()
        return (("grpc.ssl_target_name_override", self.server_name),)
