"""The README's operator sessions, run word for word against the real server (only the
address and the Python interpreter are substituted)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from tmcp_storage import Client, Space

from tests.e2e import cli
from tests.e2e.harness import TEST_SECRET, ServerProcess, token

ROOT = Path(__file__).resolve().parents[2]


def _blocks(heading: str) -> list[str]:
    """The ``sh`` blocks of one README section (up to the next heading)."""
    readme = (ROOT / "README.md").read_text()
    section = re.split(r"\n#{2,3} ", readme.split(heading, 1)[1], maxsplit=1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert blocks, f"the README lost its {heading!r} commands"
    return blocks


def _runnable(script: str, server: ServerProcess) -> str:
    script = script.replace("127.0.0.1:50051", server.target)
    return script.replace(".venv/bin/python", sys.executable)


def _documents(out: str) -> list[Any]:
    return [json.loads(d) for d in re.findall(r"^\{.*?^\}", out, re.S | re.M)]


def _bash(script: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=180,
        **kwargs,
    )


def test_readme_buf_curl_session(server: ServerProcess) -> None:
    session = _blocks("### A session with `buf curl`")[0]
    done = _bash(
        _runnable(session, server),
        cwd=ROOT,
        env={**os.environ, "STORAGE_JWT_SECRET": TEST_SECRET},
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
    assert "tmcp.storage.v1.KeyValue/Put" in out and "tmcp.storage.v1.Sync/Watch" in out
    assert "- name: PutRequest" in out and "jsonName: expectedVersion" in out  # described
    put, get = _documents(out)[-2:]
    assert put["entry"]["version"] == get["entry"]["version"]
    assert get["entry"]["value"] == {"json": {"hello": "world"}}


def _read_documents(stream: Any, documents: queue.Queue[Any]) -> None:
    """Each JSON document buf curl prints (pretty, ending with a ``}`` line)."""
    lines: list[str] = []
    for line in stream:
        lines.append(line)
        if line.rstrip("\n") == "}":
            documents.put(json.loads("".join(lines)))
            lines = []


def test_readme_watch_sees_a_change_made_meanwhile(server: ServerProcess) -> None:
    watch = _blocks("### A session with `buf curl`")[1]
    process = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", _runnable(watch, server)],
        cwd=ROOT,
        env={**os.environ, "STORAGE_JWT_SECRET": TEST_SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: bash and buf stop together
    )
    documents: queue.Queue[Any] = queue.Queue()
    reader = threading.Thread(target=_read_documents, args=(process.stdout, documents))
    reader.start()
    key = "watched-" + uuid.uuid4().hex[:8]
    try:
        assert documents.get(timeout=60)["heartbeat"] is True  # watching from now on
        with Client(
            server.target, token=token("demo", "alice"), space=Space("demo", "alice")
        ) as alice:
            alice.put(key, {"seen": True})
        while True:
            document = documents.get(timeout=30)
            if any(change["key"] == key for change in document.get("changes", [])):
                break
        assert process.poll() is None  # still watching until stopped
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        reader.join(timeout=30)
        assert process.stderr is not None
        process.stderr.close()


def test_readme_admin_commands(server: ServerProcess, tmp_path: Path) -> None:
    with Client(server.target, token=token("demo", "alice"), space=Space("demo", "alice")) as kv:
        kv.put("greeting", {"hello": "world"})
    (commands,) = _blocks("### The admin command line")

    done = _bash(_runnable(commands, server), cwd=tmp_path, env=cli.server_env(server))

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "space demo/alice at revision" in out and "greeting  v" in out
    assert "space demo/alice: overrides limit_bytes=5242880, limit_keys=500" in out
    assert "app demo: overrides max_value_bytes=262144" in out
    usage = next(json.loads(line) for line in out.splitlines() if line.startswith("{"))
    assert usage["app_id"] == "demo" and usage["spaces"] >= 1
    exported = (tmp_path / "alice.jsonl").read_text().splitlines()
    assert any(json.loads(line).get("key") == "greeting" for line in exported)
    assert "into demo/alice-restored" in out
    assert "purged" in out and "compacted history older than 86400 s" in out
