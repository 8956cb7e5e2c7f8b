"""The Python client's TLS options against a TLS server that requires client certificates.

The certificates are made for the test with the openssl command line: a CA, a server
certificate for `localhost` and a client certificate, all signed by it. The server is a grpcio
server over the same proto (remotemedia-server itself speaks plaintext; TLS terminates in
front of it), answering GetVersion with the common name of the client certificate it saw.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from remotemedia_client import TLS, AsyncClient, Client, RetryPolicy, pb
from remotemedia_client._proto.remotemedia.v1 import service_pb2_grpc
from remotemedia_client.errors import ServiceUnavailableError


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def issue(cwd: Path, name: str, cn: str, *, ext: str) -> None:
    """A key and a certificate for `cn` signed by ca.pem, with the extension lines `ext`."""
    (cwd / f"{name}.ext").write_text(ext)
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-subj", f"/CN={cn}", "-out", f"{name}.csr", cwd=cwd)
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=cwd,
    )  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tls")
    for ca in ("ca", "other-ca"):
        openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-subj", f"/CN={ca}",
            "-days", "2", "-out", f"{ca}.pem", cwd=d,
        )  # fmt: skip
    issue(d, "server", "localhost", ext="subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n")
    issue(d, "client", "pipeline-app", ext="extendedKeyUsage=clientAuth\n")
    return d


class WhoAmI(service_pb2_grpc.PipelineServiceServicer):
    def GetVersion(self, request: pb.VersionRequest, context: grpc.ServicerContext) -> pb.VersionResponse:  # noqa: N802 (the RPC name)
        cn = context.auth_context().get("x509_common_name", [b""])[0]
        assert isinstance(cn, bytes)
        return pb.VersionResponse(compatible=True, compatibility_message=cn.decode(), version_info=pb.VersionInfo(protocol_version="v1"))


@pytest.fixture(scope="module")
def tls_server(certs: Path) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    service_pb2_grpc.add_PipelineServiceServicer_to_server(WhoAmI(), server)  # type: ignore[no-untyped-call]
    credentials = grpc.ssl_server_credentials(
        [((certs / "server.key").read_bytes(), (certs / "server.pem").read_bytes())],
        root_certificates=(certs / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("localhost:0", credentials)
    server.start()
    yield f"localhost:{port}"
    server.stop(grace=None)


def test_mutual_tls_presents_the_client_certificate(certs: Path, tls_server: str) -> None:
    tls = TLS.from_files(certs / "ca.pem", certs / "client.pem", certs / "client.key")
    with Client(tls_server, tls=tls, timeout=10) as client:
        assert client.version().compatibility_message == "pipeline-app"


async def test_the_async_client_speaks_the_same_tls(certs: Path, tls_server: str) -> None:
    tls = TLS.from_files(certs / "ca.pem", certs / "client.pem", certs / "client.key")
    async with AsyncClient(tls_server, tls=tls, timeout=10) as client:
        assert (await client.version()).compatibility_message == "pipeline-app"


@pytest.mark.parametrize(
    ("ca", "with_client_cert", "why"),
    [
        ("ca.pem", False, "the server requires a client certificate"),
        ("other-ca.pem", True, "the server's certificate is not signed by the trusted CA"),
    ],
)
def test_a_failed_handshake_is_a_connection_error(certs: Path, tls_server: str, ca: str, with_client_cert: bool, why: str) -> None:
    cert = (certs / "client.pem", certs / "client.key") if with_client_cert else (None, None)
    tls = TLS.from_files(certs / ca, *cert)
    with Client(tls_server, tls=tls, timeout=5, retry=RetryPolicy.none()) as client, pytest.raises(ServiceUnavailableError):
        client.version()


def test_a_key_without_its_certificate_is_refused_at_once(certs: Path) -> None:
    with pytest.raises(ValueError, match="needs its private key"):
        TLS(root_certificates=(certs / "ca.pem").read_bytes(), private_key=(certs / "client.key").read_bytes())
