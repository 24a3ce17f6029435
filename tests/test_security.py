"""TLS (and mutual TLS) end to end with certificates made here by openssl, and the key roles: client, catalogue
writer, admin, with keys given in clear or as SHA-256 digests."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

import preftrack
from preftrack.admin import AdminClient
from preftrack.errors import PermissionDeniedError, UnauthenticatedError, UnavailableError
from preftrack_dev.process import GatewayProcess

from .conftest import Trained, gateway_env

pytestmark = pytest.mark.e2e

CLIENT, CATALOG, ADMIN = "client-key-0123456789", "catalog-key-0123456789", "admin-key-0123456789"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 / localhost, and a client certificate, all signed by the CA."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make test certificates (apt-get install openssl)")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=preftrack test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)  # fmt: skip
        extra = ["-extfile", "server.ext"] if name == "server" else []
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-out", f"{name}.pem", *extra, cwd=d)  # fmt: skip
    return d


def test_tls_and_mutual_tls(triton, trained: Trained, pki: Path, tmp_path: Path) -> None:
    base = gateway_env(triton.grpc_url, f"sqlite:///{tmp_path / 'e.db'}", repository=trained.repository)
    tls = preftrack.TLS(ca_file=str(pki / "ca.pem"))
    env = {
        **base,
        "PREFTRACK_TLS_CERT_FILE": str(pki / "server.pem"),
        "PREFTRACK_TLS_KEY_FILE": str(pki / "server.key"),
    }
    with GatewayProcess(env, tmp_path / "tls.log", tls=tls) as gateway:
        with preftrack.Client(gateway.target, tls=tls) as client:
            assert client.score("u-1", ["i-1"]).model_version == "1"
        with preftrack.Client(gateway.target, timeout_s=2, max_attempts=2) as plain, pytest.raises(UnavailableError):
            plain.score("u-1", ["i-1"])  # plaintext to a TLS port never gets an answer
        wrong = preftrack.TLS(ca_file=str(pki / "client.pem"))  # not the CA that signed the server
        with (
            preftrack.Client(gateway.target, tls=wrong, timeout_s=2, max_attempts=2) as client,
            pytest.raises(UnavailableError),
        ):
            client.score("u-1", ["i-1"])
    mutual = {**env, "PREFTRACK_TLS_CLIENT_CA_FILE": str(pki / "ca.pem")}
    with_cert = preftrack.TLS(ca_file=str(pki / "ca.pem"), cert_file=str(pki / "client.pem"),
                              key_file=str(pki / "client.key"))  # fmt: skip
    with GatewayProcess(mutual, tmp_path / "mtls.log", tls=with_cert) as gateway:
        with preftrack.Client(gateway.target, tls=with_cert) as client:
            assert client.score("u-1", ["i-1"]).model_version == "1"
        with (
            preftrack.Client(gateway.target, tls=tls, timeout_s=2, max_attempts=2) as client,
            pytest.raises(UnavailableError),  # no client certificate: the handshake fails
        ):
            client.score("u-1", ["i-1"])
        with AdminClient(gateway.target, tls=with_cert) as admin:
            assert admin.rollout().stable_version == 1


def test_key_roles(triton, trained: Trained, tmp_path: Path) -> None:
    env = gateway_env(
        triton.grpc_url,
        f"sqlite:///{tmp_path / 'e.db'}",
        repository=trained.repository,
        PREFTRACK_API_KEYS=CLIENT,
        PREFTRACK_CATALOG_KEYS="sha256:" + hashlib.sha256(CATALOG.encode()).hexdigest(),  # not stored in clear
        PREFTRACK_ADMIN_KEYS=ADMIN,
    )
    item = preftrack.Item(item_id="i-new", categories=("c",), price=1.0)
    with GatewayProcess(env, tmp_path / "gw.log") as gateway:
        with preftrack.Client(gateway.target, api_key=CLIENT) as client:
            assert client.score("u-1", ["i-1"]).model_version == "1"
            with pytest.raises(PermissionDeniedError, match="catalogue"):
                client.upsert_items([item])
            with pytest.raises(PermissionDeniedError, match="catalogue"):
                client.upsert_users([preftrack.User(user_id="u-1", attributes={"region": "north"})])
        for key in (CATALOG, ADMIN):
            with preftrack.Client(gateway.target, api_key=key) as client:
                assert client.upsert_items([item]) == 1
                assert client.upsert_users([preftrack.User(user_id="u-1", attributes={"region": "north"})]) == 1
                assert client.score("u-1", ["i-1"]).model_version == "1"
        digest = "sha256:" + hashlib.sha256(CATALOG.encode()).hexdigest()
        with preftrack.Client(gateway.target, api_key=digest) as c, pytest.raises(UnauthenticatedError):
            c.upsert_items([item])  # the digest itself is not a key
        with AdminClient(gateway.target, api_key=CATALOG) as admin, pytest.raises(PermissionDeniedError):
            admin.versions()
        with AdminClient(gateway.target, api_key=ADMIN) as admin:
            assert admin.versions()[0].version == 1
        with preftrack.Client(gateway.target) as anonymous, pytest.raises(UnauthenticatedError):
            anonymous.upsert_items([item])


def _list_services(target: str, version: str) -> list[str]:
    """Service names through server reflection ``grpc.reflection.<version>`` (same messages as v1alpha)."""
    import grpc
    from grpc_reflection.v1alpha import reflection_pb2

    with grpc.insecure_channel(target) as channel:
        info = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        answers = list(info(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    return [s.name for s in answers[0].list_services_response.service]


def test_reflection_v1_and_v1alpha_and_a_metrics_key(triton, trained: Trained, tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    import grpc

    from preftrack_dev.process import free_port

    port = free_port()
    env = gateway_env(
        triton.grpc_url,
        f"sqlite:///{tmp_path / 'e.db'}",
        repository=trained.repository,
        PREFTRACK_METRICS_PORT=str(port),
        PREFTRACK_METRICS_KEYS="sha256:" + hashlib.sha256(b"metrics-key-0123").hexdigest(),
    )
    with GatewayProcess(env, tmp_path / "gw.log") as gateway:
        for version in ("v1", "v1alpha"):
            assert "preftrack.v1.ScoringService" in _list_services(gateway.target, version)
        url = f"http://127.0.0.1:{port}/metrics"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 401
        request = urllib.request.Request(url, headers={"Authorization": "Bearer metrics-key-0123"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert b"preftrack_rpc_latency_seconds" in answer.read()
    hidden = {**env, "PREFTRACK_REFLECTION": "false", "PREFTRACK_METRICS_PORT": "0"}
    with GatewayProcess(hidden, tmp_path / "gw2.log") as gateway:
        with pytest.raises(grpc.RpcError) as off:
            _list_services(gateway.target, "v1")
        assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED
