"""How values and fields are laid out at rest, shared by every repository."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import zstandard

from tmcp_storage_server.model import (
    ChangedKey,
    ChangeOp,
    Conflict,
    ConflictSide,
    ConflictState,
    ConflictStrategy,
    Entry,
    Outcome,
    PushResult,
    Rejection,
)

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


def qualified(columns: str, alias: str) -> str:
    """``columns`` (a comma-separated list) with every plain column prefixed by ``alias``."""
    return ", ".join(
        c if c.upper() == "NULL" or c.isdigit() else f"{alias}.{c}"
        for c in (part.strip() for part in columns.split(","))
    )


CONFLICT_COLUMNS = (
    "conflict_id, key, strategy, state, server_value, server_content_type, server_version, "
    "client_value, client_content_type, client_version, client_id, mutation_id, "
    "base_version, created_at, resolved_at"
)
"""The conflict columns, in the order ``conflict_from_row`` reads."""

OUTCOME_COLUMNS = (
    "mutation_id, result, key, version, conflict_id, error_kind, error_reason, "
    "error_message, error_metadata"
)
"""The push outcome columns, in the order ``outcome_from_row`` reads."""


def conflict_from_row(row: Sequence[Any], to_time: Callable[[Any], datetime]) -> Conflict:
    """A ``Conflict`` from a row of ``CONFLICT_COLUMNS``."""
    (conflict_id, key, strategy, state, s_value, s_ctype, s_version, c_value, c_ctype,
     c_version, client_id, mutation_id, base_version, created, resolved) = row  # fmt: skip
    return Conflict(
        conflict_id=conflict_id,
        key=key,
        strategy=ConflictStrategy(strategy),
        state=ConflictState(state),
        server=ConflictSide(None if s_value is None else bytes(s_value), s_ctype, s_version),
        client=ConflictSide(None if c_value is None else bytes(c_value), c_ctype, c_version),
        client_id=client_id,
        mutation_id=mutation_id,
        base_version=base_version,
        created_at=to_time(created),
        resolved_at=None if resolved is None else to_time(resolved),
    )


def conflict_params(conflict: Conflict, to_db_time: Callable[[datetime], Any]) -> dict[str, Any]:
    """Named parameters of a conflict row."""
    return {
        "conflict_id": conflict.conflict_id,
        "key": conflict.key,
        "strategy": int(conflict.strategy),
        "state": int(conflict.state),
        "server_value": conflict.server.value,
        "server_content_type": conflict.server.content_type,
        "server_version": conflict.server.version,
        "client_value": conflict.client.value,
        "client_content_type": conflict.client.content_type,
        "client_version": conflict.client.version,
        "client_id": conflict.client_id,
        "mutation_id": conflict.mutation_id,
        "base_version": conflict.base_version,
        "created_at": to_db_time(conflict.created_at),
        "resolved_at": None if conflict.resolved_at is None else to_db_time(conflict.resolved_at),
    }


def outcome_from_row(row: Sequence[Any]) -> Outcome:
    """An ``Outcome`` from a row of ``OUTCOME_COLUMNS``."""
    mutation_id, result, key, version, conflict_id, kind, reason, message, metadata = row
    rejection = Rejection(kind, reason, message, unpack_metadata(metadata)) if kind else None
    return Outcome(mutation_id, PushResult(result), key, version, conflict_id, rejection)


def outcome_params(outcome: Outcome) -> dict[str, Any]:
    """Named parameters of a push outcome row."""
    rejection = outcome.rejection
    return {
        "mutation_id": outcome.mutation_id,
        "result": int(outcome.result),
        "key": outcome.key,
        "version": outcome.version,
        "conflict_id": outcome.conflict_id,
        "error_kind": rejection.kind if rejection else "",
        "error_reason": rejection.reason if rejection else "",
        "error_message": rejection.message if rejection else "",
        "error_metadata": pack_metadata(rejection.metadata) if rejection else "{}",
    }


def changed_from_row(
    row: Sequence[Any], now: datetime, to_time: Callable[[Any], datetime]
) -> ChangedKey:
    """A ``ChangedKey`` from ``ENTRY_COLUMNS`` followed by the change's op, client id and
    mutation id (NULL when the change row was compacted)."""
    entry = entry_from_row(row[:14], to_time)
    op, client_id, mutation_id = row[14:17]
    if entry.live_at(now):
        kind = ChangeOp(op) if op in (ChangeOp.PUT, ChangeOp.TOUCH) else ChangeOp.PUT
        return ChangedKey(
            entry.key,
            kind,
            entry.mod_revision,
            entry,
            client_id or "",
            mutation_id or 0,
            entry.version,
        )
    if entry.deleted:
        kind = ChangeOp.EXPIRE if op == ChangeOp.EXPIRE else ChangeOp.DELETE
    else:
        kind = ChangeOp.EXPIRE  # past its expiry, not yet swept
    return ChangedKey(
        entry.key, kind, entry.mod_revision, None, client_id or "", mutation_id or 0, entry.version
    )
