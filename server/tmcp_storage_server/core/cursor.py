"""Sync cursors: opaque to clients, a position in a space's ``(revision, key)`` order.

A cursor means "everything up to and including ``(revision, key)`` is known"; one
revision may hold many keys (batches, DeletePrefix, sweeps), so a page can end inside a
revision. "All of revision R" is ``(R + 1, "")``: keys are never empty. ``snapshot``
marks a client that started from nothing (an empty cursor or a reset), which therefore
needs no reset when the history it pages through has been compacted.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from tmcp_storage_server.errors import InvalidArgument

_VERSION = "c1"


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in a space's change order."""

    revision: int
    key: str = ""
    snapshot: bool = False

    @classmethod
    def start(cls) -> Cursor:
        """Before every change, for a client that holds nothing."""
        return cls(1, "", True)

    @classmethod
    def after_revision(cls, revision: int) -> Cursor:
        """After every change up to and including ``revision``."""
        return cls(revision + 1, "", False)

    def encode(self) -> str:
        """The opaque string form."""
        text = f"{_VERSION}:{self.revision}:{int(self.snapshot)}:{self.key}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, field: str = "cursor") -> Cursor:
        """Parse a cursor; an empty one is the start. Garbage is INVALID_ARGUMENT."""
        if not token:
            return cls.start()
        try:
            text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            version, revision, snapshot, key = text.split(":", 3)
            if version != _VERSION or snapshot not in ("0", "1") or not revision.isdigit():
                raise ValueError(text)
            return cls(int(revision), key, snapshot == "1")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise InvalidArgument(field, "cursor is not valid", reason="INVALID_CURSOR") from None
