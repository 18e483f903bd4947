"""What a client was constructed with, checked once and shared by both runners."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from tmcp_storage._retry import RetryPolicy
from tmcp_storage.tls import Tls

MAX_MESSAGE_BYTES = 20 * 1024 * 1024
"""Largest message sent or received: a 16 MiB batch plus headroom."""

USER_AGENT = "tmcp-storage-python/0.1"
"""Sent as the primary user agent, so that server logs can tell the client apart."""

Token = str | Callable[[], str]
"""A bearer token, or a function returning the current one (called for every attempt)."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """A client's connection and call settings."""

    target: str
    """Where the server listens, e.g. `localhost:50051`."""
    token: Token | None
    """Bearer token or token source; None sends no `authorization` header."""
    credentials: grpc.ChannelCredentials | None
    """TLS credentials (given, or built from `tls`); None for a plaintext channel."""
    timeout: float | None
    """Default deadline of a call in seconds, retries included; None for none."""
    retry: RetryPolicy
    """How UNAVAILABLE is retried."""
    options: tuple[tuple[str, Any], ...]
    """gRPC channel options, the client's own defaults first."""

    @classmethod
    def create(
        cls,
        target: str,
        *,
        token: Token | None,
        credentials: grpc.ChannelCredentials | None,
        timeout: float | None,
        retries: int,
        options: Sequence[tuple[str, Any]],
        tls: Tls | None = None,
    ) -> Settings:
        """Check the constructor arguments of a client and settle its defaults."""
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive or None, not {timeout}")
        if tls is not None:
            if credentials is not None:
                raise ValueError("give tls or credentials, not both")
            credentials = tls.credentials()
            options = (*tls.options(), *options)
        given = {name for name, _ in options}
        defaults = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.primary_user_agent", USER_AGENT),
        ]
        return cls(
            target=target,
            token=token,
            credentials=credentials,
            timeout=timeout,
            retry=RetryPolicy(retries=retries),
            options=(*[item for item in defaults if item[0] not in given], *options),
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata: the bearer token, fetched now if it comes from a function."""
        token = self.token() if callable(self.token) else self.token
        return (("authorization", f"Bearer {token}"),) if token else ()

    def call_timeout(self, timeout: float | None) -> float | None:
        """The deadline of one call: its own timeout if given, else the client's."""
        return self.timeout if timeout is None else timeout
