"""The README's operator session, run as written against the real server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.harness import TEST_SECRET, ServerProcess

ROOT = Path(__file__).resolve().parents[2]


def _session_script() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## An operator's session with `buf curl`", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "the README lost its buf curl session"
    return match.group(1)


def test_readme_buf_curl_session(server: ServerProcess) -> None:
    script = _session_script().replace("127.0.0.1:50051", server.target)
    script = script.replace(".venv/bin/python", sys.executable)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env={**os.environ, "STORAGE_JWT_SECRET": TEST_SECRET},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for service in (
        "tmcp.storage.v1.KeyValue",
        "tmcp.storage.v1.Quota",
        "tmcp.storage.v1.Batch",
        "tmcp.storage.v1.Sync",
        "grpc.health.v1.Health",
    ):
        assert service in out
    documents = [json.loads(d) for d in re.findall(r"^\{.*?^\}", out, re.S | re.M)]
    put, get = documents[-2], documents[-1]
    assert put["entry"]["version"] == get["entry"]["version"]
    assert get["entry"]["value"] == {"json": {"hello": "world"}}
