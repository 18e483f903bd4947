"""The shape every unary handler shares: authenticate, call, map errors.

A servicer method decorated with ``@unary`` receives ``(request, principal)`` and returns
the response; domain errors become rich statuses from the one table in ``api.errors``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import grpc

from tmcp_storage_server.api.auth import TokenVerifier
from tmcp_storage_server.api.errors import abort
from tmcp_storage_server.api.observe import invocation_metadata
from tmcp_storage_server.model import Principal

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class HasAuth(Protocol):
    """A servicer holding the token verifier."""

    auth: TokenVerifier


S = TypeVar("S", bound=HasAuth)


def unary(
    method: Callable[[S, Req, Principal], Awaitable[Resp]],
) -> Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]:
    """Wrap ``method(self, request, principal)`` as a gRPC unary handler."""

    @functools.wraps(method)
    async def handle(self: S, request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
        try:
            principal = self.auth.authenticate(invocation_metadata(context))
            return await method(self, request, principal)
        except Exception as exc:
            await abort(context, exc, method.__qualname__)
            raise AssertionError("abort returned") from exc  # pragma: no cover

    return handle
