"""The TypeScript client in headless Chromium (Debian's package, driven by playwright-core)
against the real server through the gateway, from a page on an allowed origin."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.harness import ServerProcess
from tests.web.conftest import node_tests

CHROMIUM = os.environ.get("TMCP_CHROMIUM", "/usr/bin/chromium")


def test_typescript_client_in_chromium(
    web_bundles: Path, web_server: ServerProcess, page_port: int
) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    files = sorted((web_bundles / "browser").glob("*.test.mjs"))
    assert files, "no bundled browser tests"
    env = {"TMCP_PAGE_PORT": str(page_port), "TMCP_CHROMIUM": CHROMIUM}
    node_tests(files, web_server, env, timeout=120)
