"""What each admin command does, through the core services; each returns a ``Report``
(data for ``--json``, text for people). Exit codes are chosen in ``admin.cli``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TextIO

from tmcp_storage_server.admin import dump
from tmcp_storage_server.admin.parts import OPERATOR, Parts
from tmcp_storage_server.core import validate
from tmcp_storage_server.errors import StorageError
from tmcp_storage_server.model import Entry, LimitOverrides, QuotaUsage, Space, SpaceState

PAGE = 1000


class UnknownSpace(StorageError):
    """The space (or app) has never been written and has no quota of its own."""

    default_reason = "SPACE_NOT_FOUND"


@dataclass(frozen=True, slots=True)
class Report:
    """A command's outcome: ``data`` for ``--json``, ``text`` for a terminal."""

    data: dict[str, Any]
    text: str


def describe(space: Space) -> str:
    """``app/user``, or ``app/(shared)``."""
    return f"{space.app_id}/{space.user_id or '(shared)'}"


def _space_data(space: Space) -> dict[str, str]:
    return {"app_id": space.app_id, "user_id": space.user_id}


def _usage_data(usage: QuotaUsage) -> dict[str, int]:
    return {
        "used_bytes": usage.used_bytes,
        "limit_bytes": usage.limit_bytes,
        "used_keys": usage.used_keys,
        "limit_keys": usage.limit_keys,
        "max_value_bytes": usage.max_value_bytes,
    }


def _usage_text(usage: QuotaUsage) -> str:
    return (
        f"{usage.used_bytes} of {usage.limit_bytes} bytes, {usage.used_keys} of "
        f"{usage.limit_keys} keys, values up to {usage.max_value_bytes} bytes"
    )


def _overrides_data(overrides: LimitOverrides) -> dict[str, int | None]:
    return {
        "limit_bytes": overrides.limit_bytes,
        "limit_keys": overrides.limit_keys,
        "max_value_bytes": overrides.max_value_bytes,
    }


def _overrides_text(overrides: LimitOverrides) -> str:
    pairs = [f"{k}={v}" for k, v in _overrides_data(overrides).items() if v is not None]
    return ", ".join(pairs) or "none"


async def _known(parts: Parts, space: Space) -> SpaceState:
    """The space's row; UnknownSpace when it was never written nor given limits."""
    validate.space(space)
    state = await parts.repository.space_state(space)
    if state.revision == 0 and state.space_overrides == LimitOverrides():
        raise UnknownSpace(f"space {describe(space)} does not exist")
    return state


async def _entries(
    parts: Parts, space: Space, prefix: str, *, values: bool, limit: int | None = None
) -> AsyncIterator[tuple[Entry, int]]:
    """Live entries in key order (with the first page's revision), pinned to it."""
    token, count = "", 0
    while True:
        page = await parts.kv.list(
            OPERATOR, space, prefix=prefix, page_size=PAGE, page_token=token, include_values=values
        )
        for entry in page.entries:
            if limit is not None and count >= limit:
                return
            count += 1
            yield entry, page.revision
        token = page.next_page_token
        if not token:
            return


async def inspect(parts: Parts, space: Space, *, prefix: str, keys: int, top: int) -> Report:
    """Usage, limits, keys and open conflicts of one space."""
    state = await _known(parts, space)
    usage, detail, revision = await parts.quota.get_usage(OPERATOR, space, top)
    listed = [e async for e, _ in _entries(parts, space, prefix, values=False, limit=keys + 1)]
    conflicts, _ = await parts.conflicts.list(
        OPERATOR, space, prefix="", include_resolved=False, page_size=100, page_token=""
    )
    data = {
        "space": _space_data(space),
        "revision": revision,
        "usage": _usage_data(usage),
        "overrides": {
            "space": _overrides_data(state.space_overrides),
            "app": _overrides_data(state.app_overrides),
        },
        "by_content_type": [
            {"content_type": c.content_type, "bytes": c.bytes, "keys": c.keys}
            for c in detail.by_content_type
        ],
        "expiring": {"keys": detail.expiring_keys, "bytes": detail.expiring_bytes},
        "largest_keys": [{"key": k, "size": s} for k, s in detail.largest_keys],
        "keys": [_key_data(e) for e in listed[:keys]],
        "keys_truncated": len(listed) > keys,
        "open_conflicts": detail.open_conflicts,
        "conflicts": [
            {
                "conflict_id": c.conflict_id,
                "key": c.key,
                "strategy": c.strategy.name.lower(),
                "client_id": c.client_id,
                "created_at": dump.timestamp(c.created_at),
            }
            for c in conflicts
        ],
    }
    return Report(data, _inspect_text(data))


def _key_data(entry: Entry) -> dict[str, Any]:
    return {
        "key": entry.key,
        "version": entry.version,
        "size": entry.size,
        "content_type": entry.content_type,
        "updated_at": dump.timestamp(entry.updated_at),
        "expires_at": dump.timestamp(entry.expires_at),
    }


def _inspect_text(data: dict[str, Any]) -> str:
    usage = data["usage"]
    space = Space(**data["space"])
    lines = [
        f"space {describe(space)} at revision {data['revision']}",
        f"usage: {usage['used_bytes']} of {usage['limit_bytes']} bytes, "
        f"{usage['used_keys']} of {usage['limit_keys']} keys, "
        f"values up to {usage['max_value_bytes']} bytes",
        "overrides: space "
        + _overrides_text(LimitOverrides(**data["overrides"]["space"]))
        + "; app "
        + _overrides_text(LimitOverrides(**data["overrides"]["app"])),
        f"expiring: {data['expiring']['keys']} keys, {data['expiring']['bytes']} bytes",
        f"keys ({len(data['keys'])}{', more not shown' if data['keys_truncated'] else ''}):",
    ]
    lines += [
        f"  {k['key']}  v{k['version']}  {k['size']} B  {k['content_type']}"
        + (f"  expires {k['expires_at']}" if k["expires_at"] else "")
        for k in data["keys"]
    ]
    lines.append(f"open conflicts: {data['open_conflicts']}")
    lines += [
        f"  {c['conflict_id']}  {c['key']}  {c['strategy']}  client {c['client_id']}"
        for c in data["conflicts"]
    ]
    return "\n".join(lines)


async def set_quota(
    parts: Parts, app_id: str, user_id: str | None, overrides: LimitOverrides, *, reset: bool
) -> Report:
    """Merge limit overrides into an app (``user_id`` None) or one space."""
    result = await parts.quota.set_quota(
        OPERATOR, app_id=app_id, user_id=user_id, overrides=overrides, reset=reset
    )
    target = f"app {app_id}" if user_id is None else f"space {describe(Space(app_id, user_id))}"
    data: dict[str, Any] = {"app_id": app_id, "user_id": user_id}
    data["overrides"] = _overrides_data(result.overrides)
    text = f"{target}: overrides {_overrides_text(result.overrides)}"
    if result.usage is not None:
        data["usage"] = _usage_data(result.usage)
        text += f"\nusage: {_usage_text(result.usage)}"
    return Report(data, text)


async def app_usage(parts: Parts, app_id: str, *, top: int) -> Report:
    """Totals over every space of an app, and its largest spaces."""
    usage = await parts.quota.app_usage(OPERATOR, app_id, top)
    if usage.spaces == 0 and usage.overrides == LimitOverrides():
        raise UnknownSpace(f"app {app_id} has no spaces")
    largest = [
        (s.space, parts.quota.usage_under(s.overrides, usage.overrides, s.used_bytes, s.used_keys))
        for s in usage.largest_spaces
    ]
    data = {
        "app_id": app_id,
        "spaces": usage.spaces,
        "used_bytes": usage.used_bytes,
        "used_keys": usage.used_keys,
        "overrides": _overrides_data(usage.overrides),
        "largest_spaces": [
            {"space": _space_data(space), "usage": _usage_data(u)} for space, u in largest
        ],
    }
    lines = [
        f"app {app_id}: {usage.spaces} spaces, {usage.used_bytes} bytes, {usage.used_keys} keys",
        f"overrides: {_overrides_text(usage.overrides)}",
        "largest spaces:",
        *(f"  {describe(space)}: {_usage_text(u)}" for space, u in largest),
    ]
    return Report(data, "\n".join(lines))


async def purge(parts: Parts, space: Space | None) -> Report:
    """Sweep expired entries now (one space, or every space)."""
    if space is not None:
        await _known(parts, space)
    result = await parts.admin.purge_expired(OPERATOR, space)
    where = describe(space) if space is not None else "all spaces"
    data = {"spaces": result.spaces, "entries": result.entries}
    return Report(
        data, f"purged {result.entries} expired entries in {result.spaces} spaces ({where})"
    )


async def compact(parts: Parts, *, older_than: float) -> Report:
    """Forget sync history older than ``older_than`` seconds, in every space."""
    now = parts.clock.now()
    removed = await parts.repository.compact(now - timedelta(seconds=older_than), now)
    return Report(
        {"removed": removed, "before": dump.timestamp(now - timedelta(seconds=older_than))},
        f"compacted history older than {older_than:g} s: {removed} rows removed",
    )


async def export(parts: Parts, space: Space, out: TextIO, *, prefix: str, raw: bool) -> Report:
    """The space's live entries as JSON lines into ``out``."""
    state = await _known(parts, space)
    count = revision = 0
    async for entry, at in _entries(parts, space, prefix, values=True):
        if count == 0:
            revision = at
            dump.write_line(out, dump.header(space, revision, parts.clock.now()))
        dump.write_line(out, dump.entry_line(entry, raw=raw))
        count += 1
    if count == 0:
        revision = state.revision
        dump.write_line(out, dump.header(space, revision, parts.clock.now()))
    data = {"space": _space_data(space), "revision": revision, "entries": count}
    return Report(data, f"exported {count} entries of {describe(space)} at revision {revision}")


async def import_(parts: Parts, space: Space, loaded: dump.Dump, *, replace: bool) -> Report:
    """Write the entries of an export into ``space`` in one revision."""
    result = await parts.admin.import_entries(OPERATOR, space, loaded.commands, replace=replace)
    data = {
        "space": _space_data(space),
        "revision": result.revision,
        "written": result.written,
        "skipped_expired": result.skipped_expired,
        "deleted": result.deleted,
        "usage": _usage_data(result.usage),
    }
    text = (
        f"imported {result.written} entries into {describe(space)} at revision "
        f"{result.revision} ({result.skipped_expired} already expired, skipped; "
        f"{result.deleted} deleted)\nusage: {_usage_text(result.usage)}"
    )
    return Report(data, text)
