"""The image's HEALTHCHECK command, run as written against a real server process, and the
migration command of the Job and compose against a real PostgreSQL database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.deploy import files
from tests.deploy.files import DEPLOY
from tests.e2e.harness import TEST_SECRET, ServerProcess


def _healthcheck_argv() -> list[str]:
    final = files.dockerfile_stages(DEPLOY / "Dockerfile")[-1]
    instruction = files.only(final, "HEALTHCHECK")
    assert " CMD " in f" {instruction.rest} ", "HEALTHCHECK runs a command"
    argv = instruction.exec_form()
    assert argv[0] == "python", "the image's python (the venv is first on PATH)"
    return [sys.executable, *argv[1:]]


def _run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STORAGE_LISTEN": f"0.0.0.0:{port}"}
    return subprocess.run(
        _healthcheck_argv(), env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_healthcheck_passes_on_a_serving_server_and_fails_without_one(tmp_path: Path) -> None:
    server = ServerProcess("sqlite:///" + str(tmp_path / "storage.db")).start()
    try:
        healthy = _run_healthcheck(server.port)
        assert healthy.returncode == 0, healthy.stderr
    finally:
        server.stop()
    unhealthy = _run_healthcheck(_free_port())
    assert unhealthy.returncode != 0


def test_the_migration_job_command_migrates_with_the_configmap(postgres_url: str) -> None:
    (job,) = [c for where, c in files.storage_containers() if where.startswith("Job")]
    configmap = files.k8s_object("ConfigMap", "tmcp-storage")["data"]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STORAGE_")},
        **configmap,
        "STORAGE_DATABASE_URL": postgres_url,
        "STORAGE_JWT_SECRET": TEST_SECRET,
    }
    for _ in range(2):  # idempotent: a rerun of the Job is harmless
        done = subprocess.run(
            [sys.executable, "-m", "tmcp_storage_server", *job["args"]],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "migrations applied" in done.stdout
