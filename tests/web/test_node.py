"""The TypeScript client and its IndexedDB offline store in Node (fake-indexeddb),
against the real server through its gRPC-Web gateway."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.harness import ServerProcess
from tests.web.conftest import node_tests


def test_typescript_client_in_node(web_bundles: Path, web_server: ServerProcess) -> None:
    files = sorted((web_bundles / "node").glob("*.test.mjs"))
    assert files, "no bundled node tests"
    node_tests(files, web_server, {}, timeout=90)
