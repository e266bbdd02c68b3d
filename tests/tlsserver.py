"""A real HTTPS server on 127.0.0.1 for tests, with its own certificate authority.

    certificates = make_certificates(tmp_path)      # a CA and a server certificate for 127.0.0.1
    with tls_server(certificates, lambda path: Reply(200, b"hello")) as server:
        monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca))  # trust it the standard way
        fetch_into_store(store, f"{server.url}/a.whl", cid)
    assert server.paths == ["/a.whl"]

Clients trust the CA through `SSL_CERT_FILE` (OpenSSL reads it whenever a default context is
made), in this process or in a child's environment: no client needs an insecure switch.
"""

from __future__ import annotations

import contextlib
import datetime
import http.server
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Certificates", "Reply", "TlsServer", "make_certificates", "tls_server"]


@dataclass(frozen=True)
class Certificates:
    """PEM files: the CA to trust, and the server's certificate and key (signed by the CA)."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class Reply:
    """What the server answers to one GET: status, body, and extra headers."""

    status: int
    body: bytes = b""
    headers: Sequence[tuple[str, str]] = ()


@dataclass
class TlsServer:
    url: str = ""  # https://127.0.0.1:PORT
    paths: list[str] = field(default_factory=list)  # request targets, in the order received


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificates(
    folder: Path, hosts: Sequence[str] = ("127.0.0.1", "localhost")
) -> Certificates:
    """Write a fresh CA and a server certificate for `hosts` (IP addresses or DNS names)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("ipwhl test CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext, answer: Callable[[str], Reply],
                 record: TlsServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.context = context
        self.answer = answer
        self.record = record

    def get_request(self) -> tuple[socket.socket, object]:
        sock, address = super().get_request()
        # The handshake happens on the request's own thread: a client that never sends a
        # ClientHello must not stall the accept loop.
        return self.context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        ), address

    def finish_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        request.settimeout(10)
        try:
            request.do_handshake()
        except (OSError, ssl.SSLError):
            return  # a client that did not trust us, or left: nothing to answer
        super().finish_request(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self.server.record.paths.append(self.path)
        reply = self.server.answer(self.path)
        self.send_response(reply.status)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Connection", "close")
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def tls_server(
    certificates: Certificates, answer: Callable[[str], Reply]
) -> Iterator[TlsServer]:
    """Serve HTTPS on a free port of 127.0.0.1 until the block exits; `answer(path)` makes
    each reply."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates.cert, certificates.key)
    record = TlsServer()
    server = _Server(context, answer, record)
    record.url = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
