"""The TypeScript client's tests (tests/web/node, tests/web/browser) run by pytest.

A real server (PostgreSQL, with Redis as its cache) is started with its gRPC-Web gateway on
a free port; the TypeScript tests are bundled once with esbuild (`npm run build:web`) and
run by Node as a subprocess, which must exit 0; its output is printed when it does not.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL
from tests.e2e.harness import TEST_SECRET, ServerProcess

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "web"
NPM = shutil.which("npm") or "npm"
NODE = shutil.which("node") or "node"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def page_port() -> int:
    """Where the browser test serves its page: the one origin the gateway allows."""
    return free_port()


@pytest.fixture(scope="session")
def web_bundles() -> Path:
    """The esbuild bundles of the client and of its tests."""
    run([NPM, "run", "--silent", "build:web"], timeout=120)
    return BUILD


@pytest.fixture(scope="session")
def web_server(postgres_url: str, page_port: int) -> Iterator[ServerProcess]:
    """The server on PostgreSQL and Redis, with the gateway allowing the test page."""
    env = {
        "STORAGE_WEB_LISTEN": "127.0.0.1:0",
        "STORAGE_WEB_ORIGINS": f"http://127.0.0.1:{page_port}",
        "STORAGE_REDIS_URL": REDIS_URL,
        "STORAGE_REDIS_PREFIX": f"web-{uuid.uuid4().hex[:8]}:",
        # Low enough for one test to reach, high enough for every other test's writes.
        "STORAGE_WRITE_RATE": "5",
        "STORAGE_WRITE_BURST": "20",
    }
    process = ServerProcess(postgres_url, env=env).start()
    assert process.web_port, process.log()
    try:
        yield process
    finally:
        process.stop()


def run(command: Sequence[str], *, env: dict[str, str] | None = None, timeout: float) -> str:
    """Run a command from the repository root; fail the test with its output unless it
    exits 0."""
    try:
        done = subprocess.run(
            list(command),
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        printed = f"{expired.stdout!s}\n{expired.stderr!s}"
        pytest.fail(f"{' '.join(command)} timed out after {timeout} s:\n{printed}")
    output = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {done.returncode}:\n{output}")
    return output


def node_tests(
    files: Sequence[Path], server: ServerProcess, extra: dict[str, str], timeout: float
) -> str:
    """Run bundled node:test files against the server's gateway."""
    env = {"TMCP_WEB_URL": server.web_url, "TMCP_JWT_SECRET": TEST_SECRET, **extra}
    output = run(
        [NODE, "--test", "--test-reporter=spec", *map(str, files)], env=env, timeout=timeout
    )
    print(output)
    passed = re.search(r"^\S* ?pass (\d+)$", output, re.MULTILINE)
    assert passed and int(passed.group(1)) > 0, f"no test passed:\n{output}"
    assert re.search(r"^\S* ?fail 0$", output, re.MULTILINE), output
    return output
