"""How values and fields are laid out at rest, shared by every repository."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import zstandard

from tmcp_storage_server.model import Entry

COMPRESS_ABOVE = 1024
RAW, ZSTD = 0, 1

_compressor = zstandard.ZstdCompressor(level=3)
_decompressor = zstandard.ZstdDecompressor()


def pack_value(value: bytes) -> tuple[bytes, int]:
    """Values over 1 KiB are stored zstd-compressed when that makes them smaller."""
    if len(value) > COMPRESS_ABOVE:
        packed = _compressor.compress(value)
        if len(packed) < len(value):
            return packed, ZSTD
    return value, RAW


def unpack_value(stored: bytes, codec: int) -> bytes:
    """The value bytes as written."""
    return _decompressor.decompress(stored) if codec == ZSTD else bytes(stored)


def pack_metadata(metadata: Mapping[str, str]) -> str:
    """Metadata as compact JSON text."""
    return json.dumps(dict(metadata), separators=(",", ":"), sort_keys=True) if metadata else "{}"


def unpack_metadata(text: str | Mapping[str, str] | None) -> dict[str, str]:
    """Metadata from JSON text (or an already decoded mapping)."""
    if not text:
        return {}
    return dict(text) if isinstance(text, Mapping) else dict(json.loads(text))


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string above every string that starts with ``prefix`` (bytewise
    UTF-8 order equals code point order), or None when there is none."""
    chars = list(prefix)
    while chars:
        point = ord(chars.pop()) + 1
        if 0xD800 <= point <= 0xDFFF:  # surrogates cannot be encoded
            point = 0xE000
        if point <= 0x10FFFF:
            return "".join(chars) + chr(point)
    return None


ENTRY_COLUMNS = (
    "key, value, codec, content_type, version, create_revision, mod_revision, "
    "created_at, updated_at, expires_at, size, checksum, metadata, deleted"
)
"""The entry columns every repository selects, in the order ``entry_from_row`` reads."""

ENTRY_COLUMNS_NO_VALUE = ENTRY_COLUMNS.replace("value, codec", "NULL, 0", 1)
"""The same columns with the value left out."""


def entry_from_row(row: Sequence[Any], to_time: Callable[[Any], datetime]) -> Entry:
    """An ``Entry`` from a row of ``ENTRY_COLUMNS``; ``to_time`` decodes the database's
    time values into UTC datetimes."""
    (key, value, value_codec, ctype, version, create_rev, mod_rev, created, updated,
     expires, size, checksum, metadata, deleted) = row  # fmt: skip
    return Entry(
        key=key,
        value=None if value is None else unpack_value(value, value_codec),
        content_type=ctype,
        version=version,
        create_revision=create_rev,
        mod_revision=mod_rev,
        created_at=to_time(created),
        updated_at=to_time(updated),
        expires_at=None if expires is None else to_time(expires),
        size=size,
        checksum=checksum,
        metadata=unpack_metadata(metadata),
        deleted=bool(deleted),
    )
