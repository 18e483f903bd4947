"""The admin subcommands of ``python -m tmcp_storage_server``: arguments, output, exit codes.

Exit codes: 0 done; 1 the operation failed (quota exceeded, database or Redis
unreachable...); 2 bad input (arguments, import file, an invalid value); 3 unknown space
or app. Errors go to stderr (a JSON object with ``--json``), results to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from tmcp_storage_server.admin import commands, dump
from tmcp_storage_server.admin.commands import Report, UnknownSpace
from tmcp_storage_server.admin.parts import Parts, open_parts
from tmcp_storage_server.config import Config
from tmcp_storage_server.errors import InvalidArgument, StorageError
from tmcp_storage_server.model import LimitOverrides, Space

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNKNOWN = 1, 2, 3
WRITING = {"purge", "import"}
"""Commands that write entries (and so open the cache channel and the change feed); limits
are read by every write transaction, never cached."""

_SIZE = re.compile(r"(\d+)\s*(|B|KiB|MiB|GiB)", re.I)
_UNITS = {"": 1, "b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def size(text: str) -> int:
    """``1048576``, ``512KiB``, ``10MiB`` or ``1GiB`` as bytes."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 1000, 512KiB or 10MiB")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def count(text: str) -> int:
    """A non-negative integer."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return int(text)


def _space_args(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("--app", required=required, help="app id")
    parser.add_argument("--user", default="", help="user id (default: the app's shared space)")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the admin subcommands to the main parser's ``commands``."""
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="machine-readable output")
    add = commands.add_parser
    inspect = add("inspect", parents=[json_flag], help="a space's usage, limits, keys, conflicts")
    _space_args(inspect)
    inspect.add_argument("--prefix", default="", help="list only keys under this prefix")
    inspect.add_argument("--keys", type=count, default=100, help="keys to list (default 100)")
    inspect.add_argument("--top", type=count, default=10, help="largest keys to show")
    quota = add("set-quota", parents=[json_flag], help="set limit overrides of an app or a space")
    quota.add_argument("--app", required=True, help="app id")
    quota.add_argument("--user", help="user id of one space ('' = shared); omit for the app")
    quota.add_argument("--bytes", type=size, help="byte limit, e.g. 10MiB")
    quota.add_argument("--keys", type=count, help="key limit")
    quota.add_argument("--max-value", type=size, help="per-value limit, e.g. 1MiB")
    quota.add_argument("--reset", action="store_true", help="clear other overrides first")
    usage = add("app-usage", parents=[json_flag], help="totals over every space of an app")
    usage.add_argument("--app", required=True, help="app id")
    usage.add_argument("--top", type=count, default=10, help="largest spaces to show")
    purge = add("purge", parents=[json_flag], help="sweep expired entries now")
    _space_args(purge, required=False)
    compact = add("compact", parents=[json_flag], help="forget old sync history now")
    compact.add_argument(
        "--older-than", type=float, help="seconds of history to keep (STORAGE_HISTORY_RETENTION)"
    )
    export = add("export", parents=[json_flag], help="a space's entries as JSON lines")
    _space_args(export)
    export.add_argument("--prefix", default="", help="only keys under this prefix")
    export.add_argument("-o", "--output", default="-", help="file to write (default stdout)")
    export.add_argument("--base64", action="store_true", help="every value as base64")
    import_ = add("import", parents=[json_flag], help="write an export into a space")
    import_.add_argument("file", help="an export (JSON lines); - for stdin")
    import_.add_argument("--app", help="target app (default: the file's)")
    import_.add_argument("--user", help="target user (default: the file's)")
    import_.add_argument("--replace", action="store_true", help="delete keys not in the file")


COMMANDS = frozenset({"inspect", "set-quota", "app-usage", "purge", "compact", "export", "import"})


def run(args: argparse.Namespace, config: Config) -> int:
    """Run one admin command; the exit code."""
    # The command reports the cache channel itself; the server's log lines about it
    # would only repeat that.
    logging.getLogger("tmcp_storage_server.store.cache").setLevel(logging.ERROR)
    as_json = bool(args.json)
    try:
        action = _action(args)
    except dump.BadFile as exc:
        return _fail(as_json, EXIT_BAD_INPUT, "BAD_FILE", str(exc))
    except OSError as exc:
        return _fail(as_json, EXIT_BAD_INPUT, "BAD_FILE", f"{exc.strerror}: {exc.filename}")
    except StorageError as exc:
        return _fail(as_json, _exit_code(exc), exc.reason, exc.message)
    try:
        if args.command in WRITING and config.embedded and not config.redis_url:
            print(
                "note: with the embedded database and no STORAGE_REDIS_URL a running server "
                "does not hear of this write: its cache may serve old values for up to "
                "STORAGE_CACHE_TTL seconds",
                file=sys.stderr,
            )
        report, announced = asyncio.run(_call(config, args.command in WRITING, action))
    except StorageError as exc:
        return _fail(as_json, _exit_code(exc), exc.reason, exc.message)
    except OSError as exc:  # the export's file (the database and Redis raise StorageErrors)
        return _fail(as_json, EXIT_BAD_INPUT, "BAD_FILE", f"{exc.strerror}: {exc.filename}")
    out = sys.stderr if args.command == "export" and args.output == "-" else sys.stdout
    print(json.dumps(report.data, ensure_ascii=False) if as_json else report.text, file=out)
    if not announced:
        print(
            "warning: the invalidation channel failed during the write: running servers may "
            "serve old values until their cache's STORAGE_CACHE_TTL",
            file=sys.stderr,
        )
    return 0


Action = Callable[[Parts], Awaitable[Report]]


async def _call(config: Config, writes: bool, action: Action) -> tuple[Report, bool]:
    async with open_parts(config, writes=writes) as parts:
        report = await action(parts)
        return report, parts.announced


def _action(args: argparse.Namespace) -> Action:
    """The command as a coroutine on the parts; reads the import file first."""
    user = getattr(args, "user", "")
    space = Space(args.app, user) if getattr(args, "app", None) and user is not None else None
    match args.command:
        case "inspect":
            assert space is not None
            return lambda p: commands.inspect(
                p, space, prefix=args.prefix, keys=args.keys, top=args.top
            )
        case "set-quota":
            limits = LimitOverrides(args.bytes, args.keys, args.max_value)
            return lambda p: commands.set_quota(p, args.app, args.user, limits, reset=args.reset)
        case "app-usage":
            return lambda p: commands.app_usage(p, args.app, top=args.top)
        case "purge":
            return lambda p: commands.purge(p, space)
        case "compact":
            return lambda p: commands.compact(
                p,
                older_than=p.config.history_retention
                if args.older_than is None
                else args.older_than,
            )
        case "export":
            assert space is not None
            return lambda p: _export(p, space, args)
        case _:
            return _import(args)


async def _export(parts: Parts, space: Space, args: argparse.Namespace) -> Report:
    """Into a file only once complete: a failed export never leaves a file to import."""
    if args.output == "-":
        return await commands.export(parts, space, sys.stdout, prefix=args.prefix, raw=args.base64)
    target = Path(args.output)
    partial = target.with_name(target.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8") as out:
            report = await commands.export(parts, space, out, prefix=args.prefix, raw=args.base64)
        partial.replace(target)
        return report
    finally:
        partial.unlink(missing_ok=True)


def _import(args: argparse.Namespace) -> Action:
    if args.file == "-":
        loaded = dump.read(iter(sys.stdin))
    else:
        with open(args.file, encoding="utf-8") as source:
            loaded = dump.read(iter(source))
    app_id = args.app or (loaded.space.app_id if loaded.space else None)
    if app_id is None:
        raise InvalidArgument("app", "the file has no header: name the target with --app")
    user_id = args.user if args.user is not None else loaded.space.user_id if loaded.space else ""
    space = Space(app_id, user_id)

    async def action(parts: Parts) -> Report:
        try:
            return await commands.import_(parts, space, loaded, replace=args.replace)
        except StorageError as error:
            index = error.metadata.get("index")
            if index is not None:
                error.message = f"line {loaded.lines[int(index)]}: {error.message}"
            raise

    return action


def _exit_code(error: StorageError) -> int:
    if isinstance(error, UnknownSpace):
        return EXIT_UNKNOWN
    return EXIT_BAD_INPUT if isinstance(error, InvalidArgument) else EXIT_FAILED


def _fail(as_json: bool, code: int, reason: str, message: str) -> int:
    if as_json:
        print(json.dumps({"error": {"reason": reason, "message": message}}), file=sys.stderr)
    else:
        print(f"error: {message} ({reason})", file=sys.stderr)
    return code
