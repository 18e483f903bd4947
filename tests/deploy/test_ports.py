"""Ports agree across the Dockerfile, compose, Kubernetes, Envoy and Prometheus, and with
the server's defaults: gRPC (STORAGE_LISTEN), metrics (STORAGE_METRICS_LISTEN) and
gRPC-Web (Envoy's listener; the in-process gateway has no default port)."""

from __future__ import annotations

from typing import Any

from tests.deploy import files
from tests.deploy.files import DEPLOY


def _grpc_port() -> int:
    return files.port_of(str(files.default_of("STORAGE_LISTEN")))


def _metrics_port() -> int:
    return files.port_of(str(files.default_of("STORAGE_METRICS_LISTEN")))


def _web_port() -> int:
    listener = files.envoy_listener("grpc_web")
    return int(listener["address"]["socket_address"]["port_value"])


def _final_stage() -> list[files.Instruction]:
    return files.dockerfile_stages(DEPLOY / "Dockerfile")[-1]


def _exposed() -> set[int]:
    exposed: set[int] = set()
    for instruction in _final_stage():
        if instruction.keyword == "EXPOSE":
            exposed |= {int(p.split("/")[0]) for p in instruction.rest.split()}
    return exposed


def _settings_everywhere() -> list[tuple[str, dict[str, Any]]]:
    """(where, settings) of the image, each compose server and the ConfigMap."""
    found: list[tuple[str, dict[str, Any]]] = [("Dockerfile ENV", files.env_of(_final_stage()))]
    found += [
        (f"compose {n}", s["environment"]) for n, s in files.compose_storage_services().items()
    ]
    found.append(("ConfigMap", files.k8s_object("ConfigMap", "tmcp-storage")["data"]))
    return found


def test_the_image_exposes_grpc_web_and_metrics_ports() -> None:
    assert _exposed() == {_grpc_port(), _web_port(), _metrics_port()}


def test_grpc_port_agrees_everywhere() -> None:
    port = _grpc_port()
    assert port == 50051
    for where, settings in _settings_everywhere():
        assert files.port_of(settings["STORAGE_LISTEN"]) == port, where
    (endpoints,) = files.envoy()["static_resources"]["clusters"][0]["load_assignment"]["endpoints"]
    for endpoint in endpoints["lb_endpoints"]:
        assert endpoint["endpoint"]["address"]["socket_address"]["port_value"] == port
    # Backends reach Envoy's native gRPC listener on the same port as a server's.
    assert files.envoy_listener("grpc")["address"]["socket_address"]["port_value"] == port
    for where, container in files.storage_containers():
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        assert ports.get("grpc", port) == port, where
    for service in ("tmcp-storage", "storage"):
        spec = files.k8s_object("Service", service)["spec"]
        (grpc,) = [p for p in spec["ports"] if p["name"] == "grpc"]
        assert grpc["port"] == port and grpc["targetPort"] == "grpc", service


def test_metrics_port_agrees_everywhere() -> None:
    port = _metrics_port()
    assert port == 9090
    for where, settings in _settings_everywhere():
        assert files.port_of(settings["STORAGE_METRICS_LISTEN"]) == port, where
    prometheus = files.load(DEPLOY / "prometheus.yml")
    (job,) = prometheus["scrape_configs"]
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert sorted(targets) == [
        f"{s}:{port}" for s in sorted(files.compose_storage_services()) if s != "migrate"
    ]
    deployment = files.k8s_object("Deployment", "tmcp-storage")["spec"]["template"]
    assert deployment["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    (container,) = deployment["spec"]["containers"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"] == port


def test_grpc_web_port_agrees_everywhere() -> None:
    port = _web_port()
    assert port == 8080
    envoy_service = files.compose()["services"]["envoy"]
    published = {int(p.rsplit(":", 1)[1]) for p in envoy_service["ports"]}
    assert published == {port, _grpc_port()}
    assert all(p.startswith("127.0.0.1:") for p in envoy_service["ports"]), "loopback only"
    pod = files.k8s_object("Deployment", "tmcp-envoy")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc-web": port, "grpc": _grpc_port()}
    service = files.k8s_object("Service", "tmcp-envoy")["spec"]
    assert {p["name"]: p["port"] for p in service["ports"]} == ports
    # Envoy serves gRPC-Web: the in-process gateway stays off where Envoy runs.
    for where, settings in _settings_everywhere()[1:]:
        assert settings["STORAGE_WEB_LISTEN"] == "", where
