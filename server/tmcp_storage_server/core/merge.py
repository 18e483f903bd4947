"""JSON merges for the MERGE conflict strategy: pure functions, no I/O.

- ``three_way(base, server, client)``: what each side changed relative to ``base`` is
  kept; a field changed on both sides takes the client's (the mutation's) value, objects
  changed on both sides are merged field by field.
- ``merge_patch(target, patch)``: RFC 7396, used when the base version is not retained.

``merge_values`` works on stored bytes and answers None when the values are not both
JSON objects, so that the caller falls back to last-write-wins.
"""

from __future__ import annotations

import json
from typing import Any

_ABSENT = object()
"""A field missing from an object (distinct from JSON null)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: apply ``patch`` to ``target``; null in the patch removes a field."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def three_way(base: dict[str, Any], server: dict[str, Any], client: dict[str, Any]) -> Any:
    """Merge two objects that both descend from ``base``."""
    result: dict[str, Any] = {}
    for name in [*server, *(n for n in client if n not in server)]:
        merged = _field(
            base.get(name, _ABSENT), server.get(name, _ABSENT), client.get(name, _ABSENT)
        )
        if merged is not _ABSENT:
            result[name] = merged
    return result


def _field(base: Any, server: Any, client: Any) -> Any:
    if _same(client, base):
        return server
    if _same(server, base):
        return client
    if isinstance(base, dict) and isinstance(server, dict) and isinstance(client, dict):
        return three_way(base, server, client)
    if base is _ABSENT and isinstance(server, dict) and isinstance(client, dict):
        return three_way({}, server, client)
    return client  # changed on both sides: the mutation's value wins


def _same(a: Any, b: Any) -> bool:
    if a is _ABSENT or b is _ABSENT:
        return a is b
    # JSON equality: 1 and 1.0 are the same number, but True is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _object(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def merge_values(base: bytes | None, server: bytes, client: bytes) -> bytes | None:
    """The merged JSON of ``client`` into ``server`` (three-way when ``base`` is an
    object), or None when ``server`` or ``client`` is not a JSON object."""
    server_doc, client_doc = _object(server), _object(client)
    if server_doc is None or client_doc is None:
        return None
    base_doc = _object(base)
    if base_doc is not None:
        merged = three_way(base_doc, server_doc, client_doc)
    else:
        merged = merge_patch(server_doc, client_doc)
    return json.dumps(merged, separators=(",", ":"), ensure_ascii=False).encode()
