"""Run the admin command line as an operator would: a process with the server's settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e.harness import TEST_SECRET, ServerProcess


def server_env(server: ServerProcess) -> dict[str, str]:
    """The environment a server runs with (database, secret, Redis and its prefix)."""
    return {
        **os.environ,
        "STORAGE_DATABASE_URL": server.database_url,
        "STORAGE_JWT_SECRET": TEST_SECRET,
        "STORAGE_LOG_LEVEL": "WARNING",
        **server.env,
    }


def run(
    server: ServerProcess, *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m tmcp_storage_server ARGS`` against ``server``'s database."""
    return run_with(server_env(server), *args, stdin=stdin, cwd=cwd)


def run_with(
    env: dict[str, str], *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m tmcp_storage_server ARGS`` with the settings in ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "tmcp_storage_server", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def ok(server: ServerProcess, *args: str, stdin: str | None = None) -> str:
    """Its stdout, asserting it succeeded."""
    done = run(server, *args, stdin=stdin)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stderr}"
    return done.stdout


def ok_json(server: ServerProcess, *args: str) -> Any:
    """Its ``--json`` output, asserting it succeeded."""
    return json.loads(ok(server, *args, "--json"))
