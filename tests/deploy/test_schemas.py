"""The Kubernetes manifests against the Kubernetes API schemas (kubernetes-validate, strict:
unknown fields are errors) and the Envoy config against Envoy's v3 data-plane API
(envoy-data-plane: unknown fields, wrong types and deprecated fields are errors); then
what the Envoy config must do for this server."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from tests.deploy import files
from tests.deploy.files import DEPLOY

K8S_VERSION = "1.37.0"
K8S_FILES = sorted((DEPLOY / "k8s").glob("*.yaml"))


@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: p.name)
def test_kubernetes_manifests_match_the_api_schema(path: Path) -> None:
    for document in files.load_all(path):
        try:
            kubernetes_validate.validate(document, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{path.name}: {exc.path}: {exc.message}") from None


def test_kubernetes_validation_rejects_an_unknown_field() -> None:
    deployment = files.k8s_object("Deployment", "tmcp-storage")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container["readinessProbe"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_kustomization_applies_every_manifest_and_the_envoy_config() -> None:
    kustomization = files.load(DEPLOY / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(f"k8s/{p.name}" for p in K8S_FILES)
    (generated,) = kustomization["configMapGenerator"]
    assert generated["files"] == ["envoy.yaml"]
    pod = files.k8s_object("Deployment", "tmcp-envoy")["spec"]["template"]["spec"]
    assert pod["volumes"][0]["configMap"]["name"] == generated["name"]


def _type_urls(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "@type" in node:
            yield node["@type"]
        for value in node.values():
            yield from _type_urls(value)
    elif isinstance(node, list):
        for value in node:
            yield from _type_urls(value)


def _parse_envoy(config: dict[str, Any]) -> Any:
    """The config as Envoy's Bootstrap message; raises on any unknown or deprecated field."""
    packages = {url.rsplit("/", 1)[1].rsplit(".", 1)[0] for url in _type_urls(config)}
    with warnings.catch_warnings():
        # The generated modules warn about their own pydantic validators when imported.
        warnings.simplefilter("ignore", DeprecationWarning)
        bootstrap = importlib.import_module("envoy_data_plane.envoy.config.bootstrap.v3")
        for package in packages:  # registers each type a typed_config names
            importlib.import_module(f"envoy_data_plane.{package}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        return bootstrap.Bootstrap.from_dict(config)


def test_envoy_config_matches_the_v3_api() -> None:
    bootstrap = _parse_envoy(files.envoy())
    assert {x.name for x in bootstrap.static_resources.listeners} == {"grpc_web", "grpc"}


def test_envoy_validation_rejects_unknown_and_deprecated_fields() -> None:
    config = files.envoy()
    manager = files.connection_manager(config["static_resources"]["listeners"][0])
    manager["route_config"]["virtual_hosts"][0]["cors"] = {"allow_methods": "POST"}
    with pytest.raises(DeprecationWarning):
        _parse_envoy(config)
    config = files.envoy()
    config["static_resources"]["clusters"][0]["health_checks"][0]["grpc_health_check"] = {
        "service_nam": ""
    }
    with pytest.raises(KeyError, match="service_nam"):
        _parse_envoy(config)


def _filters(listener: str) -> list[str]:
    manager = files.connection_manager(files.envoy_listener(listener))
    return [f["name"] for f in manager["http_filters"]]


def test_envoy_serves_grpc_web_with_a_cors_allow_list() -> None:
    assert _filters("grpc_web") == [
        "envoy.filters.http.grpc_web",
        "envoy.filters.http.cors",
        "envoy.filters.http.router",
    ]
    assert _filters("grpc") == ["envoy.filters.http.router"]
    manager = files.connection_manager(files.envoy_listener("grpc_web"))
    (host,) = manager["route_config"]["virtual_hosts"]
    policy = host["typed_per_filter_config"]["envoy.filters.http.cors"]
    origins = policy["allow_origin_string_match"]
    assert origins and all(set(o) == {"exact"} and "*" not in o["exact"] for o in origins)
    for header in ("authorization", "x-grpc-web", "grpc-timeout"):
        assert header in policy["allow_headers"].split(",")
    for header in ("grpc-status", "grpc-message", "grpc-status-details-bin"):
        assert header in policy["expose_headers"].split(",")
    # Only the storage services are reachable from the web (no reflection, no health).
    assert [r["match"] for r in host["routes"]] == [{"prefix": "/tmcp.storage.v1."}]


def test_envoy_routes_never_cut_a_watch() -> None:
    for listener in ("grpc_web", "grpc"):
        manager = files.connection_manager(files.envoy_listener(listener))
        assert files.seconds(manager["stream_idle_timeout"]) > 15 * 4  # heartbeats: 15 s
        for host in manager["route_config"]["virtual_hosts"]:
            for route in host["routes"]:
                action = route["route"]
                assert action["cluster"] == "storage"
                assert files.seconds(action["timeout"]) == 0, "a route timeout ends Watch"
                assert files.seconds(action["max_stream_duration"]["grpc_timeout_header_max"]) == 0
                assert set(action["retry_policy"]["retry_on"].split(",")) <= {
                    "connect-failure",
                    "refused-stream",
                }, "retrying after a reset or UNAVAILABLE could apply a write twice"


def test_envoy_cluster_speaks_http2_and_checks_grpc_health() -> None:
    (cluster,) = files.envoy()["static_resources"]["clusters"]
    options = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    http2 = options["explicit_http_config"]["http2_protocol_options"]
    configmap = files.k8s_object("ConfigMap", "tmcp-storage")["data"]
    assert http2["max_concurrent_streams"] == int(configmap["STORAGE_MAX_STREAMS"])
    (check,) = cluster["health_checks"]
    assert check["grpc_health_check"] == {"service_name": ""}
    (thresholds,) = cluster["circuit_breakers"]["thresholds"]
    assert thresholds["max_requests"] > 1024, "each open Watch holds one request"
