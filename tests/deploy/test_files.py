"""The deployment files agree with the server: settings, commands, ports, probes, users.

Fast and without services: the files are parsed, and checked against the server's own
configuration source, its argparse parser and its health service names.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tmcp_storage_server.__main__ import _parser
from tmcp_storage_server.api.server import SERVICE_NAMES
from tmcp_storage_server.app import CACHE_HEALTH_SERVICE
from tmcp_storage_server.config import Config, ConfigError

from tests.deploy import files
from tests.deploy.files import DEPLOY

HEALTH_NAMES = {"", *SERVICE_NAMES, CACHE_HEALTH_SERVICE}
"""Every service name the server sets a health status for (app.py)."""
DOCKERFILE = DEPLOY / "Dockerfile"
ENTRYPOINT = ["python", "-m", "tmcp_storage_server"]
MINIMUM_FILES = {
    "Dockerfile",
    "compose.yaml",
    "envoy.yaml",
    "prometheus.yml",
    "kustomization.yaml",
    "README.md",
    "SCALING.md",
    "k8s/deployment.yaml",
    "k8s/service.yaml",
    "k8s/configmap.yaml",
    "k8s/secret.yaml",
    "k8s/hpa.yaml",
    "k8s/pdb.yaml",
    "k8s/migrate-job.yaml",
}


def _relative(path: Path) -> str:
    return str(path.relative_to(DEPLOY))


def test_every_deploy_file_is_there_and_described_in_the_readme() -> None:
    present = {_relative(p) for p in files.deploy_files()}
    assert present >= MINIMUM_FILES, f"missing: {sorted(MINIMUM_FILES - present)}"
    readme = (DEPLOY / "README.md").read_text()
    undescribed = sorted(name for name in present - {"README.md"} if f"`{name}`" not in readme)
    assert not undescribed, f"deploy/README.md does not describe {undescribed}"
    assert (files.ROOT / ".dockerignore").is_file()


@pytest.mark.parametrize("path", files.yaml_files(), ids=_relative)
def test_every_yaml_file_parses(path: Path) -> None:
    documents = files.load_all(path)
    assert documents, f"{path} is empty"
    assert all(isinstance(doc, dict) for doc in documents)


def test_a_broken_yaml_file_would_be_caught(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\nb: c\n")
    with pytest.raises(yaml.YAMLError):
        files.load_all(broken)


def _proposed_settings() -> set[str]:
    """Names listed under SCALING.md's "Proposed settings" heading: not implemented yet."""
    text = (DEPLOY / "SCALING.md").read_text()
    section = re.search(r"^## Proposed settings\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, "SCALING.md has no '## Proposed settings' section"
    return files.settings_named(section.group(1))


def test_every_setting_named_in_a_deploy_file_exists_in_the_server() -> None:
    known = files.server_settings()
    assert "STORAGE_LISTEN" in known and "STORAGE_JWT_SECRET" in known  # the regex works
    proposed = _proposed_settings()
    unknown: dict[str, list[str]] = {}
    for path in [*files.deploy_files(), files.ROOT / ".dockerignore"]:
        text = path.read_text()
        if path.name == "SCALING.md":
            text = re.sub(r"^## Proposed settings\n.*?(?=^## |\Z)", "", text, flags=re.S | re.M)
        for name in files.settings_named(text) - known - proposed:
            unknown.setdefault(name, []).append(str(path.relative_to(files.ROOT)))
    assert not unknown, "settings the server does not read (config.py): " + "; ".join(
        f"{name} in {', '.join(where)}" for name, where in sorted(unknown.items())
    )
    implemented = sorted(proposed & known)
    assert not implemented, (
        f"SCALING.md calls these proposed, but config.py reads them: {implemented}"
    )


def _parses(argv: list[str]) -> Any:
    try:
        return _parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"the server's command line rejects {argv}") from exc


def _image_command() -> tuple[list[str], list[str]]:
    final = files.dockerfile_stages(DOCKERFILE)[-1]
    return files.only(final, "ENTRYPOINT").exec_form(), files.only(final, "CMD").exec_form()


def test_dockerfile_runs_the_server_cli_as_a_non_root_user() -> None:
    stages = files.dockerfile_stages(DOCKERFILE)
    assert len(stages) >= 2, "multi-stage: build, then a clean runtime stage"
    final = stages[-1]
    assert files.only(final, "FROM").rest.startswith("python:3.11-slim")
    assert any(i.keyword == "COPY" and i.rest.startswith("--from=") for i in final)
    user = files.only(final, "USER").rest
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"USER must be a numeric non-root uid: {user!r}"
    run_as = {
        c.get("securityContext", {}).get("runAsUser") for _, c in files.storage_containers()
    } | {
        files.k8s_object(kind, name)["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
        for kind, name in (("Deployment", "tmcp-storage"), ("Job", "tmcp-storage-migrate"))
    }
    assert run_as - {None} == {int(uid)}, "Kubernetes runs the image as its own user"
    entrypoint, cmd = _image_command()
    assert entrypoint == ENTRYPOINT
    args = _parses(cmd)
    assert args.command == "serve" and args.workers >= 1


def test_server_commands_in_compose_and_kubernetes_parse_with_the_real_cli() -> None:
    services = files.compose_storage_services()
    assert {"migrate", "storage-1", "storage-2"} <= set(services)
    commands = {f"compose {name}": s["command"] for name, s in services.items()}
    commands |= {f"k8s {where}": c["args"] for where, c in files.storage_containers()}
    assert all("command" not in c for _, c in files.storage_containers()), (
        "Kubernetes keeps the image's ENTRYPOINT (python -m tmcp_storage_server)"
    )
    parsed = {where: _parses(argv) for where, argv in commands.items()}
    assert parsed["compose migrate"].command == "migrate"
    assert parsed["k8s Job/tmcp-storage-migrate"].command == "migrate"
    servers = [p for w, p in parsed.items() if "migrate" not in w]
    assert len(servers) == 3 and all(p.command == "serve" and p.workers >= 1 for p in servers)


def test_the_cli_documents_the_flags_the_deploy_files_use() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "tmcp_storage_server", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "--workers" in shown and "--listen" in shown


def test_kubernetes_probes_are_grpc_probes_on_the_health_port() -> None:
    (container,) = [c for w, c in files.storage_containers() if w.startswith("Deployment")]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[kind]
        assert set(probe) & {"httpGet", "tcpSocket", "exec"} == set(), kind
        assert probe["grpc"]["port"] == ports["grpc"], f"{kind} must probe the gRPC port"
        assert probe["grpc"].get("service", "") in HEALTH_NAMES, f"{kind}: unknown name"
    # Readiness is the server as a whole: NOT_SERVING without a database and while draining.
    assert container["readinessProbe"]["grpc"]["service"] == ""


def test_shutdown_grace_fits_in_the_termination_grace() -> None:
    configmap = files.k8s_object("ConfigMap", "tmcp-storage")["data"]
    grace = float(configmap["STORAGE_SHUTDOWN_GRACE"])
    pod = files.k8s_object("Deployment", "tmcp-storage")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pre_stop = files.seconds(int(container["lifecycle"]["preStop"]["exec"]["command"][1]))
    assert pod["terminationGracePeriodSeconds"] > pre_stop + grace
    for name, service in files.compose_storage_services().items():
        env = service["environment"]
        assert files.seconds(service["stop_grace_period"]) > float(env["STORAGE_SHUTDOWN_GRACE"]), (
            name
        )


def test_kubernetes_pods_run_non_root_on_a_read_only_root() -> None:
    for kind, name in (("Deployment", "tmcp-storage"), ("Job", "tmcp-storage-migrate")):
        pod = files.k8s_object(kind, name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert {"requests", "limits"} <= set(container["resources"])


def _secret_with_values() -> dict[str, str]:
    shipped = files.k8s_object("Secret", "tmcp-storage")["stringData"]
    return {**shipped, "STORAGE_JWT_SECRET": "k" * 48}


def test_configured_settings_are_valid_for_the_server() -> None:
    configmap = files.k8s_object("ConfigMap", "tmcp-storage")["data"]
    config = Config.from_env({**configmap, **_secret_with_values()})
    assert not config.embedded and config.redis_url
    for name, service in files.compose_storage_services().items():
        env = {k: _interpolated(str(v)) for k, v in service["environment"].items()}
        assert not Config.from_env(env).embedded, name
    # As shipped, the Secret's empty key keeps the server from starting.
    shipped = files.k8s_object("Secret", "tmcp-storage")["stringData"]
    with pytest.raises(ConfigError, match="STORAGE_JWT_SECRET"):
        Config.from_env({**configmap, **shipped})


def _interpolated(value: str) -> str:
    """A compose value with ``${VAR:?message}`` / ``${VAR:-default}`` filled in."""
    return re.sub(r"\$\{(\w+)(?::[?-][^}]*)?\}", lambda m: f"test-{m.group(1).lower()}", value)
