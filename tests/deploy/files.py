"""Reading the deployment files (deploy/) and what the server says about itself.

Pure parsing, no services: YAML documents, the Dockerfile's instructions, the settings
the server reads (from config.py's source) and the defaults they have (from Config).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tmcp_storage_server.config import Config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CONFIG_SOURCE = ROOT / "server" / "tmcp_storage_server" / "config.py"
STORAGE_IMAGE = "tmcp-storage"
"""The image name compose and Kubernetes give the server's image (deploy/Dockerfile)."""

_QUOTED_SETTING = re.compile(r'"(STORAGE_[A-Z0-9_]+)"')
_ANY_SETTING = re.compile(r"\bSTORAGE_[A-Z0-9_]+\b")
_FIELD_OF_SETTING = r'^    (\w+): [^=\n]+= [^\n]+\n\s+"""(?:(?!""").)*?``{name}``'


def deploy_files() -> list[Path]:
    """Every file under deploy/, sorted."""
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def yaml_files() -> list[Path]:
    """Every YAML file under deploy/."""
    return [p for p in deploy_files() if p.suffix in (".yaml", ".yml")]


def load_all(path: Path) -> list[Any]:
    """The non-empty documents of a YAML file."""
    with path.open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def load(path: Path) -> Any:
    """The one document of a YAML file."""
    (doc,) = load_all(path)
    return doc


def server_settings() -> set[str]:
    """The ``STORAGE_*`` names config.py reads (quoted string literals in its source)."""
    return set(_QUOTED_SETTING.findall(CONFIG_SOURCE.read_text()))


def settings_named(text: str) -> set[str]:
    """Every ``STORAGE_*`` name in ``text``."""
    return set(_ANY_SETTING.findall(text))


def default_of(setting: str) -> Any:
    """The default value of ``setting``: the Config field whose docstring names it
    (house style: the field line, then a docstring naming it in double backticks)."""
    pattern = re.compile(_FIELD_OF_SETTING.format(name=re.escape(setting)), re.S | re.M)
    match = pattern.search(CONFIG_SOURCE.read_text())
    assert match, f"config.py has no field documented as ``{setting}`` (not merged yet?)"
    return getattr(Config(), match.group(1))


def port_of(address: str) -> int:
    """The port of ``host:port``."""
    _host, sep, port = address.rpartition(":")
    assert sep and port.isdigit(), f"not host:port: {address!r}"
    return int(port)


def seconds(duration: str | int) -> float:
    """``20s``, ``1m30s`` or a bare number of seconds."""
    if isinstance(duration, int):
        return float(duration)
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", duration)
    assert parts and duration, f"not a duration: {duration!r}"
    return int(parts.group(1) or 0) * 60 + float(parts.group(2) or 0)


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: keyword (upper case) and the rest of its line."""

    keyword: str
    rest: str

    def exec_form(self) -> list[str]:
        """The JSON array of CMD / ENTRYPOINT / HEALTHCHECK ... CMD."""
        start = self.rest.index("[")
        value = json.loads(self.rest[start:])
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value


def dockerfile_stages(path: Path) -> list[list[Instruction]]:
    """The instructions of each build stage (a stage starts at FROM)."""
    stages: list[list[Instruction]] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        instruction = Instruction(keyword.upper(), rest.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"{path}: an instruction before FROM: {line!r}"
        stages[-1].append(instruction)
    return stages


def _logical_lines(text: str) -> Iterator[str]:
    """Lines with backslash continuations joined; comments and blank lines dropped."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"


def env_of(stage: list[Instruction]) -> dict[str, str]:
    """The ENV settings of a stage (``ENV A=1 B=2`` form)."""
    env: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for item in shlex.split(instruction.rest):
                name, sep, value = item.partition("=")
                assert sep, f"ENV without '=': {instruction.rest!r}"
                env[name] = value
    return env


def only(stage: list[Instruction], keyword: str) -> Instruction:
    """The one instruction of a kind in a stage."""
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


def k8s_documents() -> list[dict[str, Any]]:
    """Every Kubernetes object under deploy/k8s/."""
    return [doc for path in sorted((DEPLOY / "k8s").glob("*.yaml")) for doc in load_all(path)]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    """The one object of that kind and name."""
    found = [d for d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def storage_containers() -> list[tuple[str, dict[str, Any]]]:
    """(where, container) for every container running the server's image in Kubernetes."""
    result = []
    for doc in k8s_documents():
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            if container["image"].split(":")[0] == STORAGE_IMAGE:
                result.append((f"{doc['kind']}/{doc['metadata']['name']}", container))
    return result


def compose() -> dict[str, Any]:
    """deploy/compose.yaml with its YAML anchors and merge keys resolved."""
    doc = load(DEPLOY / "compose.yaml")
    assert isinstance(doc, dict)
    return doc


def compose_storage_services() -> dict[str, dict[str, Any]]:
    """The compose services that run the server's image."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if str(service.get("image", "")).split(":")[0] == STORAGE_IMAGE
    }


def envoy() -> dict[str, Any]:
    """deploy/envoy.yaml."""
    doc = load(DEPLOY / "envoy.yaml")
    assert isinstance(doc, dict)
    return doc


def envoy_listener(name: str) -> dict[str, Any]:
    """An Envoy listener by name."""
    found: list[dict[str, Any]] = [
        x for x in envoy()["static_resources"]["listeners"] if x["name"] == name
    ]
    assert len(found) == 1, f"expected one Envoy listener {name!r}"
    return found[0]


def connection_manager(listener: dict[str, Any]) -> dict[str, Any]:
    """The http_connection_manager config of a listener's only filter chain."""
    (chain,) = listener["filter_chains"]
    (network_filter,) = chain["filters"]
    assert network_filter["name"] == "envoy.filters.network.http_connection_manager"
    config = network_filter["typed_config"]
    assert isinstance(config, dict)
    return config
