"""TLS and mutual TLS on the gRPC port, through the real server and the Python client.

Certificates come from throwaway CAs made here. The transport does not depend on the
database, so these servers use the embedded SQLite store. The server certificate names
only ``storage.test``: clients reach 127.0.0.1 and override the expected name.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tmcp_storage import AsyncClient, Client, Space, Tls, Unavailable

from tests.e2e.certs import CertificateAuthority, Issued
from tests.e2e.harness import TEST_SECRET, ServerProcess, token

SERVER_NAME = "storage.test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A trusted CA with a server and a client certificate, and a foreign CA with a
    client certificate of its own."""
    directory = tmp_path_factory.mktemp("pki")
    trusted = CertificateAuthority("trusted", directory)
    foreign = CertificateAuthority("foreign", directory)
    return {
        "dir": directory,
        "ca": trusted,
        "server": trusted.issue("server", dns=(SERVER_NAME,)),
        "client": trusted.issue("client"),
        "foreign_ca": foreign,
        "foreign_client": foreign.issue("intruder"),
    }


def _start(tmp: Path, env: dict[str, str], tls: Tls) -> ServerProcess:
    url = "sqlite:///" + str(tmp / f"{uuid.uuid4().hex[:8]}.db")
    return ServerProcess(url, env=env, tls=tls).start()


@pytest.fixture(scope="module")
def tls_server(
    pki: dict[str, object], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """TLS without client certificates."""
    ca, server = pki["ca"], pki["server"]
    assert isinstance(ca, CertificateAuthority) and isinstance(server, Issued)
    env = {"STORAGE_TLS_CERT": server.cert_path, "STORAGE_TLS_KEY": server.key_path}
    process = _start(
        tmp_path_factory.mktemp("tls"), env, Tls(root_ca=ca.cert_path, server_name=SERVER_NAME)
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def mtls_server(
    pki: dict[str, object], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Mutual TLS: clients need a certificate from the trusted CA."""
    ca, server, client = pki["ca"], pki["server"], pki["client"]
    assert isinstance(ca, CertificateAuthority)
    assert isinstance(server, Issued) and isinstance(client, Issued)
    env = {
        "STORAGE_TLS_CERT": server.cert_path,
        "STORAGE_TLS_KEY": server.key_path,
        "STORAGE_TLS_CLIENT_CA": ca.cert_path,
    }
    tls = Tls(
        root_ca=ca.cert_pem,
        client_cert=client.cert_pem,
        client_key=client.key_pem,
        server_name=SERVER_NAME,
    )
    process = _start(tmp_path_factory.mktemp("mtls"), env, tls)
    yield process
    process.stop()


def _client(server: ServerProcess, tls: Tls | None) -> Client:
    app = "app-" + uuid.uuid4().hex[:8]
    return Client(
        server.target,
        token=token(app, "alice"),
        space=Space(app, "alice"),
        tls=tls,
        retries=0,
        timeout=5,
    )


def _ca_tls(pki: dict[str, object], **more: object) -> Tls:
    ca = pki["ca"]
    assert isinstance(ca, CertificateAuthority)
    return Tls(root_ca=ca.cert_path, server_name=SERVER_NAME, **more)  # type: ignore[arg-type]


def test_a_client_trusting_the_ca_reads_and_writes(
    tls_server: ServerProcess, pki: dict[str, object]
) -> None:
    with _client(tls_server, _ca_tls(pki)) as kv:
        kv.put("greeting", {"hello": "tls"})
        assert kv.get("greeting").value == {"hello": "tls"}


async def test_the_async_client_takes_the_same_tls_settings(
    tls_server: ServerProcess, pki: dict[str, object]
) -> None:
    app = "app-" + uuid.uuid4().hex[:8]
    async with AsyncClient(
        tls_server.target,
        token=token(app, "alice"),
        space=Space(app, "alice"),
        tls=_ca_tls(pki),
        retries=0,
        timeout=5,
    ) as kv:
        await kv.put("k", b"v")
        assert (await kv.get("k")).value == b"v"


def test_health_and_reflection_are_served_over_tls(tls_server: ServerProcess) -> None:
    with tls_server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = stub.ServerReflectionInfo(iter([request]), timeout=5)
        names = {s.name for s in reply.list_services_response.service}
        assert {"tmcp.storage.v1.KeyValue", "grpc.health.v1.Health"} <= names


def test_a_plaintext_client_is_refused(tls_server: ServerProcess) -> None:
    with _client(tls_server, None) as kv, pytest.raises(Unavailable):
        kv.put("k", b"v")


def test_a_server_from_another_ca_is_not_trusted(
    tls_server: ServerProcess, pki: dict[str, object]
) -> None:
    foreign = pki["foreign_ca"]
    assert isinstance(foreign, CertificateAuthority)
    tls = Tls(root_ca=foreign.cert_pem, server_name=SERVER_NAME)
    with _client(tls_server, tls) as kv, pytest.raises(Unavailable):
        kv.put("k", b"v")


def test_the_certificate_must_name_the_server(
    tls_server: ServerProcess, pki: dict[str, object]
) -> None:
    ca = pki["ca"]
    assert isinstance(ca, CertificateAuthority)
    # Without the override the client expects "127.0.0.1", which the certificate lacks.
    with _client(tls_server, Tls(root_ca=ca.cert_path)) as kv, pytest.raises(Unavailable):
        kv.put("k", b"v")


def test_mutual_tls_admits_a_client_certificate_from_the_ca(
    mtls_server: ServerProcess, pki: dict[str, object]
) -> None:
    client = pki["client"]
    assert isinstance(client, Issued)
    tls = _ca_tls(pki, client_cert=client.cert_path, client_key=client.key_path)
    with _client(mtls_server, tls) as kv:
        kv.put("k", b"v")
        assert kv.get("k").value == b"v"


async def test_mutual_tls_with_the_async_client(
    mtls_server: ServerProcess, pki: dict[str, object]
) -> None:
    client = pki["client"]
    assert isinstance(client, Issued)
    app = "app-" + uuid.uuid4().hex[:8]
    tls = _ca_tls(pki, client_cert=client.cert_pem, client_key=client.key_pem)
    async with AsyncClient(
        mtls_server.target, token=token(app, "u"), space=Space(app, "u"), tls=tls, retries=0
    ) as kv:
        await kv.put("k", b"v")
        assert (await kv.get("k")).version == 1


def test_mutual_tls_refuses_a_client_without_a_certificate(
    mtls_server: ServerProcess, pki: dict[str, object]
) -> None:
    with _client(mtls_server, _ca_tls(pki)) as kv, pytest.raises(Unavailable):
        kv.put("k", b"v")


def test_mutual_tls_refuses_a_certificate_from_another_ca(
    mtls_server: ServerProcess, pki: dict[str, object]
) -> None:
    intruder = pki["foreign_client"]
    assert isinstance(intruder, Issued)
    tls = _ca_tls(pki, client_cert=intruder.cert_pem, client_key=intruder.key_pem)
    with _client(mtls_server, tls) as kv, pytest.raises(Unavailable):
        kv.put("k", b"v")


def test_tls_settings_are_checked_when_the_client_is_built(pki: dict[str, object]) -> None:
    client = pki["client"]
    assert isinstance(client, Issued)
    with pytest.raises(ValueError, match="go together"):
        Tls(client_cert=client.cert_pem)
    with pytest.raises(ValueError, match="not both"):
        Client("127.0.0.1:1", tls=Tls(), credentials=grpc.ssl_channel_credentials())


def _serve_with(env: dict[str, str], tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tmcp_storage_server", "serve"],
        env={
            **os.environ,
            "STORAGE_DATABASE_URL": "sqlite:///" + str(tmp / "never.db"),
            "STORAGE_JWT_SECRET": TEST_SECRET,
            "STORAGE_LISTEN": "127.0.0.1:0",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _bad_configs(pki: dict[str, object]) -> dict[str, tuple[dict[str, str], str]]:
    server, client, ca = pki["server"], pki["client"], pki["ca"]
    directory = pki["dir"]
    assert isinstance(server, Issued) and isinstance(client, Issued)
    assert isinstance(ca, CertificateAuthority) and isinstance(directory, Path)
    garbage = directory / "garbage.pem"
    garbage.write_text("not a certificate\n")
    missing = str(directory / "missing.pem")
    pair = {"STORAGE_TLS_CERT": server.cert_path, "STORAGE_TLS_KEY": server.key_path}
    return {
        "missing cert": (
            {"STORAGE_TLS_CERT": missing, "STORAGE_TLS_KEY": server.key_path},
            "STORAGE_TLS_CERT: no such file",
        ),
        "missing key": (
            {"STORAGE_TLS_CERT": server.cert_path, "STORAGE_TLS_KEY": missing},
            "STORAGE_TLS_KEY: no such file",
        ),
        "cert not PEM": (
            {"STORAGE_TLS_CERT": str(garbage), "STORAGE_TLS_KEY": server.key_path},
            "STORAGE_TLS_CERT: " + repr(str(garbage)) + " holds no PEM certificate",
        ),
        "key not PEM": (
            {"STORAGE_TLS_CERT": server.cert_path, "STORAGE_TLS_KEY": str(garbage)},
            "is not an unencrypted PEM private key",
        ),
        "key of another certificate": (
            {"STORAGE_TLS_CERT": server.cert_path, "STORAGE_TLS_KEY": client.key_path},
            "is not the key of the certificate",
        ),
        "cert without key": (
            {"STORAGE_TLS_CERT": server.cert_path},
            "STORAGE_TLS_CERT and STORAGE_TLS_KEY must be set together",
        ),
        "client CA without TLS": (
            {"STORAGE_TLS_CLIENT_CA": ca.cert_path},
            "STORAGE_TLS_CLIENT_CA (mutual TLS) needs STORAGE_TLS_CERT and STORAGE_TLS_KEY",
        ),
        "TLS with the in-process gRPC-Web gateway": (
            {**pair, "STORAGE_WEB_LISTEN": "127.0.0.1:0"},
            "STORAGE_WEB_LISTEN cannot be combined with STORAGE_TLS_*",
        ),
        "client CA not PEM": (
            {**pair, "STORAGE_TLS_CLIENT_CA": str(garbage)},
            "STORAGE_TLS_CLIENT_CA: " + repr(str(garbage)) + " holds no PEM certificate",
        ),
        "client CA missing": (
            {**pair, "STORAGE_TLS_CLIENT_CA": missing},
            "STORAGE_TLS_CLIENT_CA: no such file",
        ),
    }


BAD_CASES = [
    "missing cert",
    "missing key",
    "cert not PEM",
    "key not PEM",
    "key of another certificate",
    "cert without key",
    "client CA without TLS",
    "TLS with the in-process gRPC-Web gateway",
    "client CA not PEM",
    "client CA missing",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_tls_files_stop_the_server_with_a_clear_message(
    case: str, pki: dict[str, object], tmp_path: Path
) -> None:
    env, message = _bad_configs(pki)[case]
    result = _serve_with(env, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "configuration error: " in result.stderr
    assert message in result.stderr
    assert "listening" not in result.stdout
