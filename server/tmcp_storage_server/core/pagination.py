"""Opaque page tokens: where a listing stopped and the revision it is pinned to."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from tmcp_storage_server.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class PageToken:
    """The last key returned, the prefix it belongs to, and the pinned revision."""

    prefix: str
    after: str
    revision: int

    def encode(self) -> str:
        """URL-safe text, opaque to clients."""
        raw = json.dumps([1, self.prefix, self.after, self.revision], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, *, prefix: str) -> PageToken:
        """Parse a token; it must belong to a listing of the same ``prefix``."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            version, token_prefix, after, revision = json.loads(raw)
            valid = (
                version == 1
                and isinstance(token_prefix, str)
                and isinstance(after, str)
                and isinstance(revision, int)
            )
        except (ValueError, TypeError, binascii.Error):
            valid = False
        if not valid:
            raise InvalidArgument("page_token", "malformed page token", reason="INVALID_PAGE_TOKEN")
        if token_prefix != prefix:
            raise InvalidArgument(
                "page_token", "page token belongs to another prefix", reason="INVALID_PAGE_TOKEN"
            )
        return cls(token_prefix, after, revision)
