"""The export format: JSON Lines, a header line and then one line per entry.

    {"format": "tmcp-storage-export/1", "space": {"app_id": "demo", "user_id": "alice"},
     "revision": 42, "exported_at": "2026-01-02T03:04:05.123456Z"}
    {"key": "profile", "content_type": "application/json", "json": {"name": "Ann"},
     "metadata": {"source": "web"}, "expires_at": null, "version": 3}
    {"key": "avatar", "content_type": "image/png", "base64": "iVBORw0KGgo...",
     "metadata": {}, "expires_at": "2026-02-01T00:00:00Z", "version": 1}

A JSON value is written as JSON when it reads back to the very same bytes (the server's
compact form, as every ``Value.json`` write stores it); any other value, JSON or not, as
``base64``. ``version`` is the source's and only informative: an import writes new
versions. ``expires_at`` is absolute, so an entry keeps its moment of expiry.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from tmcp_storage_server.core.commands import PutCommand
from tmcp_storage_server.model import Entry, Space

FORMAT = "tmcp-storage-export/1"


class BadFile(ValueError):
    """The import file is not an export; the message names the line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


def timestamp(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with a ``Z``."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _moment(text: object, line: int, field: str) -> datetime | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise BadFile(line, f"{field} must be an RFC 3339 time or null")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadFile(line, f"{field} {text!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise BadFile(line, f"{field} {text!r} has no time zone")
    return moment.astimezone(UTC)


def compact_json(data: bytes) -> Any:
    """The parsed value when ``data`` is JSON in the server's compact form; else a
    ``ValueError``."""
    value = json.loads(data)
    if json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() != data:
        raise ValueError("not in compact form")
    return value


def header(space: Space, revision: int, now: datetime) -> dict[str, Any]:
    """The first line of an export."""
    return {
        "format": FORMAT,
        "space": {"app_id": space.app_id, "user_id": space.user_id},
        "revision": revision,
        "exported_at": timestamp(now),
    }


def entry_line(entry: Entry, *, raw: bool = False) -> dict[str, Any]:
    """One entry as a line; ``raw`` writes every value as base64."""
    assert entry.value is not None, "an export reads values"
    line: dict[str, Any] = {"key": entry.key, "content_type": entry.content_type}
    try:
        if raw or not entry.is_json:
            raise ValueError("not JSON")
        line["json"] = compact_json(entry.value)
    except ValueError:
        line["base64"] = base64.b64encode(entry.value).decode()
    line["metadata"] = dict(entry.metadata)
    line["expires_at"] = timestamp(entry.expires_at)
    line["version"] = entry.version
    return line


def write_line(out: TextIO, line: dict[str, Any]) -> None:
    """One JSON line."""
    out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")


@dataclass(frozen=True, slots=True)
class Dump:
    """An export as read back."""

    space: Space | None
    """The header's space; None when the file has no header."""
    commands: list[PutCommand]
    lines: list[int]
    """The line number of each command."""


def read(lines: Iterator[str]) -> Dump:
    """The file's header and one Put per entry; ``BadFile`` for anything that is not the
    export format."""
    space: Space | None = None
    commands: list[PutCommand] = []
    numbers: list[int] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except ValueError:
            raise BadFile(number, "not a JSON document") from None
        if not isinstance(item, dict):
            raise BadFile(number, "not a JSON object")
        if "format" in item:
            if number != 1 or item["format"] != FORMAT:
                raise BadFile(number, f"expected one header first, of format {FORMAT!r}")
            space = _space(item.get("space"), number)
            continue
        commands.append(_command(item, number))
        numbers.append(number)
    return Dump(space, commands, numbers)


def _space(value: object, line: int) -> Space:
    if not isinstance(value, dict) or not all(
        isinstance(value.get(name), str) for name in ("app_id", "user_id")
    ):
        raise BadFile(line, "space must be {'app_id': ..., 'user_id': ...}")
    return Space(value["app_id"], value["user_id"])


def _command(item: dict[str, Any], line: int) -> PutCommand:
    key, ctype, metadata = item.get("key"), item.get("content_type", ""), item.get("metadata", {})
    if not isinstance(key, str):
        raise BadFile(line, "key must be a string")
    if not isinstance(ctype, str):
        raise BadFile(line, "content_type must be a string")
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise BadFile(line, "metadata must be an object of strings")
    if ("json" in item) == ("base64" in item):
        raise BadFile(line, "an entry has exactly one of json and base64")
    if "json" in item:
        try:
            text = json.dumps(
                item["json"], separators=(",", ":"), ensure_ascii=False, allow_nan=False
            )
        except ValueError:
            raise BadFile(line, "json holds a number JSON cannot store") from None
        value, is_json = text.encode(), True
    else:
        try:
            value = base64.b64decode(item["base64"], validate=True)
        except (binascii.Error, TypeError):
            raise BadFile(line, "base64 is not valid base64") from None
        is_json = False
    return PutCommand(
        key=key,
        value=value,
        content_type=ctype,
        is_json=is_json,
        expires_at=_moment(item.get("expires_at"), line, "expires_at"),
        metadata=metadata,
    )
