"""Bearer tokens: JWT (HS256, shared secret) in the ``authorization`` metadata.

Claims: ``sub`` (user id), ``app`` (app id), ``scope`` (space-separated), ``exp``.
Verified tokens are cached until they expire, so a hot client costs one dict lookup.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import jwt

from tmcp_storage_server.errors import Unauthenticated
from tmcp_storage_server.model import Principal, Scope

ALGORITHM = "HS256"
_SCOPES = {scope.value: scope for scope in Scope}


def mint_token(
    secret: str, *, app_id: str, user_id: str, scopes: Iterable[str], ttl_seconds: int
) -> str:
    """A signed token for development and tests (``tmcp-storage token``)."""
    now = int(time.time())
    claims = {
        "sub": user_id,
        "app": app_id,
        "scope": " ".join(scopes),
        "iat": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


class TokenVerifier:
    """Turns the ``authorization`` metadata into a ``Principal``."""

    def __init__(self, *, secret: str, leeway_seconds: float = 5.0, cache_size: int = 10_000):
        self._secret = secret
        self._leeway = leeway_seconds
        # A dict, oldest verification dropped first when full: a hit costs one dict lookup
        # (cachetools' LRUCache costs 2 us, on every call).
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._cache_size = cache_size

    def authenticate(self, metadata: Iterable[tuple[str, Any]] | None) -> Principal:
        """The caller, or ``Unauthenticated`` (TOKEN_INVALID / TOKEN_EXPIRED)."""
        header = _authorization(metadata or ())
        # Keyed by the whole header value: a hit skips parsing "Bearer <token>" too.
        cached = self._cache.get(header)
        if cached is not None:
            principal, expires = cached
            if time.time() < expires + self._leeway:
                return principal
            del self._cache[header]
        principal, expires = self._verify(_bearer(header))
        if len(self._cache) >= self._cache_size:
            del self._cache[next(iter(self._cache))]
        self._cache[header] = (principal, expires)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                leeway=self._leeway,
                options={"require": ["exp", "sub", "app"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired", reason="TOKEN_EXPIRED") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid token: {exc}", reason="TOKEN_INVALID") from None
        subject, app_id, scope = claims.get("sub"), claims.get("app"), claims.get("scope", "")
        if not isinstance(subject, str) or not isinstance(app_id, str) or not app_id:
            raise Unauthenticated(
                "token claims sub and app must be strings", reason="TOKEN_INVALID"
            )
        if not isinstance(scope, str):
            raise Unauthenticated("token claim scope must be a string", reason="TOKEN_INVALID")
        scopes = frozenset(_SCOPES[s] for s in scope.split() if s in _SCOPES)
        return Principal(subject, app_id, scopes), float(claims["exp"])


def _authorization(metadata: Iterable[tuple[str, Any]]) -> str:
    for name, value in metadata:
        if name == "authorization":
            return value.decode() if isinstance(value, bytes) else str(value)
    raise Unauthenticated("missing bearer token in authorization metadata", reason="TOKEN_INVALID")


def _bearer(header: str) -> str:
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    raise Unauthenticated("authorization must be 'Bearer <token>'", reason="TOKEN_INVALID")
