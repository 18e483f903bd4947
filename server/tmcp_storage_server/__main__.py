"""Command line: ``serve``, ``migrate``, ``token``, and the admin commands.

    python -m tmcp_storage_server serve [--listen HOST:PORT] [--database-url URL] [--workers N]
    python -m tmcp_storage_server migrate
    python -m tmcp_storage_server token --app A --user U [--scope S ...] [--ttl SECONDS]
    python -m tmcp_storage_server inspect|set-quota|app-usage|purge|compact|export|import ...
      (see admin/cli.py)

Settings come from ``STORAGE_*`` environment variables (see config.py); flags win.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from dataclasses import replace

from tmcp_storage_server import logs, workers
from tmcp_storage_server.admin import cli as admin_cli
from tmcp_storage_server.api.auth import mint_token
from tmcp_storage_server.app import App, build_repository
from tmcp_storage_server.config import Config, ConfigError
from tmcp_storage_server.errors import StorageError
from tmcp_storage_server.model import Scope

log = logging.getLogger("tmcp_storage_server")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tmcp-storage", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="STORAGE_DATA_DIR")
    parser.add_argument("--database-url", help="STORAGE_DATABASE_URL")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC server in the foreground")
    serve.add_argument("--listen", help="STORAGE_LISTEN, host:port")
    serve.add_argument(
        "--workers",
        type=int,
        help="STORAGE_WORKERS: processes sharing the port (default: one per core; "
        "always 1 with the embedded SQLite database)",
    )
    commands.add_parser("migrate", help="apply database migrations and exit")
    token = commands.add_parser("token", help="mint a development token")
    token.add_argument("--app", required=True, help="app id (claim 'app')")
    token.add_argument("--user", default="", help="user id (claim 'sub')")
    token.add_argument(
        "--scope",
        action="append",
        choices=[s.value for s in Scope],
        help="repeatable; default storage:read and storage:write",
    )
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    admin_cli.add_commands(commands)
    return parser


GC_YOUNG_THRESHOLD = 20_000
"""Container objects allocated (net) before a young-generation collection; Python's
default is 700. A batch holds a few thousand short-lived objects at once, so at 700 the
collector ran every few items and found nothing. In process, with 4 BatchSets of 100 in
flight, 450 us of every 4.5 ms call went to collections (gc.callbacks), and at 10,000 none
ran at all (CPU per BatchSet -20%); through gRPC under h2load the server's CPU per
BatchSet fell ~5%. Only garbage in reference cycles waits longer for it."""


def _tune_gc() -> None:
    """Objects made while starting (modules, descriptors, pools) live as long as the
    process: frozen, later collections skip them; then the young threshold above."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


async def _serve(config: Config) -> None:
    app = await App.start(config)
    _tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if workers.is_worker():
        workers.worker_ready()
    else:
        if app.gateway is not None:  # before the listening line, which tells readiness
            print(f"tmcp-storage gRPC-Web gateway on {config.web_listen} (port {app.gateway.port})")
        print(f"tmcp-storage listening on {config.listen} (port {app.port})", flush=True)
    await stop.wait()
    # From now on a repeated signal (a supervisor repeating its SIGTERM) is ignored, to the
    # end of the process: a clean stop must not become death by signal. Done here, while
    # the loop runs: closing it would put its signals back to their defaults, and a
    # signal before the interpreter exits would then kill the process (-15). Between
    # the two calls below the default holds for a few microseconds.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)
    log.info("shutting down: draining in-flight calls")
    await app.stop()


async def _migrate(config: Config) -> None:
    repository = build_repository(config)
    await repository.open()
    await repository.close()


def _serve_all(config: Config) -> int:
    """One process, or a supervisor of ``config.workers`` processes."""
    if workers.is_worker():
        workers.die_with_parent()
    if config.workers > 1 and config.embedded:
        log.warning(
            "the embedded SQLite database is served by one process: ignoring workers=%d",
            config.workers,
        )
        config = replace(config, workers=1)
    if config.workers > 1:
        return workers.Supervisor(config).run()
    asyncio.run(_serve(config))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tmcp_storage_server`` and ``tmcp-storage``."""
    args = _parser().parse_args(argv)
    overrides = {"data_dir": args.data_dir, "database_url": args.database_url}
    if args.command == "serve":
        overrides["listen"] = args.listen
        overrides["workers"] = None if args.workers is None else str(args.workers)
    try:
        config = Config.from_env(os.environ, **overrides)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(level=config.log_level, fmt=config.log_format)
    config, secret_file = config.resolve_secret()
    if secret_file:
        log.info("JWT secret (HS256) is in %s; mint tokens with the 'token' command", secret_file)
    if args.command in admin_cli.COMMANDS:
        return admin_cli.run(args, config)
    try:
        if args.command == "token":
            scopes = args.scope or [Scope.READ.value, Scope.WRITE.value]
            print(
                mint_token(
                    config.jwt_secret,
                    app_id=args.app,
                    user_id=args.user,
                    scopes=scopes,
                    ttl_seconds=args.ttl,
                )
            )
        elif args.command == "migrate":
            asyncio.run(_migrate(config))
            print("migrations applied")
        else:
            return _serve_all(config)
    except StorageError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:  # a port (gRPC or metrics) that cannot be bound
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
