"""Wheel sources over HTTPS, against a real TLS server with its own CA (tests/tlsserver.py),
trusted the standard way (SSL_CERT_FILE). A fetch is verified end to end, an untrusted
certificate is refused, a redirect within https: is followed, and a redirect from
https: down to http: is refused naming both URLs before the http: server sees a request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ipwhl.cid import CID
from ipwhl.errors import FetchError, IntegrityError
from ipwhl.fetch import fetch_into_store
from ipwhl.store import Store
from ipwhl.unixfs import file_cid
from tests.hostileserver import Request, hostile_server, response
from tests.releasefactory import Project, write_release
from tests.tlsserver import Certificates, Reply, make_certificates, tls_server
from tests.wheelfactory import build_wheel

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def wheel(tmp_path: Path) -> tuple[bytes, CID]:
    (tmp_path / "built").mkdir()
    path = build_wheel(tmp_path / "built", "demo", "1.0",
                       modules={"demo/__init__.py": "x = 1\n" * 60_000})  # a few leaves
    data = path.read_bytes()
    return data, file_cid(data)


@pytest.fixture
def trusted(certificates: Certificates, monkeypatch: pytest.MonkeyPatch) -> Certificates:
    """This process trusts the test CA (and only it) for the length of a test."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return certificates


def objects(store: Store) -> list[str]:
    return list(store.names("objects"))


def test_an_https_source_is_fetched_and_its_content_id_checked(store, wheel, trusted):
    data, cid = wheel
    with tls_server(trusted, lambda path: Reply(200, data)) as server:
        fetched = fetch_into_store(store, f"{server.url}/demo.whl", cid)
        assert fetched.cid == cid and fetched.size == len(data)
        assert store.object_path(fetched.sha256).read_bytes() == data
        # The same bytes declared under another CID: refused, nothing more stored.
        other = file_cid(data + b"\0")
        with pytest.raises(IntegrityError, match="hashes to"):
            fetch_into_store(store, f"{server.url}/demo.whl", other, retries=0)
    assert objects(store) == [fetched.sha256]
    assert server.paths == ["/demo.whl", "/demo.whl"]


def test_a_certificate_from_an_untrusted_ca_is_refused(store, wheel, certificates, monkeypatch,
                                                       tmp_path):
    data, cid = wheel
    stranger = make_certificates(tmp_path / "stranger")  # a CA the server's cert is not from
    monkeypatch.setenv("SSL_CERT_FILE", str(stranger.ca))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with (
        tls_server(certificates, lambda path: Reply(200, data)) as server,
        pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        fetch_into_store(store, f"{server.url}/demo.whl", cid, retries=0)
    assert server.paths == [] and objects(store) == []


def test_an_https_to_http_redirect_is_refused_naming_both_urls(store, wheel, trusted):
    data, cid = wheel

    def plain(request: Request) -> None:
        request.send(response("200 OK", data))

    with hostile_server(plain) as http_mirror:
        target = f"{http_mirror.url}/demo.whl"
        with tls_server(trusted, lambda path: Reply(302, headers=[("Location", target)])) as tls:
            source = f"{tls.url}/demo.whl"
            with pytest.raises(FetchError) as caught:
                fetch_into_store(store, source, cid)
    message = str(caught.value)
    assert caught.value.exit_code == 5
    assert source in message and target in message and "never https: to http:" in message
    assert tls.paths == ["/demo.whl"]  # refused at once, not retried
    assert http_mirror.requests == []  # the downgraded URL was never asked
    assert objects(store) == []


@pytest.mark.parametrize("spelling", ["relative", "absolute"])
def test_an_https_redirect_on_the_same_host_is_followed(store, wheel, trusted, spelling):
    data, cid = wheel
    urls: list[str] = []

    def answer(path: str) -> Reply:
        if path == "/old/demo.whl":
            location = "/new/demo.whl" if spelling == "relative" else f"{urls[0]}/new/demo.whl"
            return Reply(301, headers=[("Location", location)])
        return Reply(200, data) if path == "/new/demo.whl" else Reply(404)

    with tls_server(trusted, answer) as server:
        urls.append(server.url)
        fetched = fetch_into_store(store, f"{server.url}/old/demo.whl", cid)
    assert fetched.cid == cid
    assert server.paths == ["/old/demo.whl", "/new/demo.whl"]


# --- `ipwhl check` in a child process, trusting the CA through its environment ----------------


def ipwhl(*argv: str, cwd: Path, ca: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"IPWHL_STORE", "SSL_CERT_DIR"}}
    env.update(PYTHONPATH=str(REPO), SSL_CERT_FILE=str(ca))
    return subprocess.run([sys.executable, "-m", "ipwhl", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_check_over_https_and_a_downgrading_source(certificates, tmp_path):
    wheels: dict[str, bytes] = {}
    downgrade: list[str] = []  # set: every wheel redirects to this http: URL

    def answer(path: str) -> Reply:
        if downgrade:
            return Reply(302, headers=[("Location", downgrade[0] + path)])
        name = path.rsplit("/", 1)[-1]
        return Reply(200, wheels[name]) if name in wheels else Reply(404)

    def plain(request: Request) -> None:
        request.send(response("404 Not Found"))

    with tls_server(certificates, answer) as server, hostile_server(plain) as http_mirror:
        release = write_release(tmp_path, [Project("demo", "1.0")], base_url=server.url)
        wheels.update({name: path.read_bytes() for name, path in release.wheels.items()})
        store = str(tmp_path / "store")
        done = ipwhl("check", str(release.path), "--store", store, cwd=tmp_path,
                     ca=certificates.ca)
        assert done.returncode == 0, done.stderr
        assert server.paths == ["/demo-1.0-py3-none-any.whl"]

        # A fresh store, and now the https: source redirects to http:.
        downgrade.append(http_mirror.url)
        done = ipwhl("check", str(release.path), "--store", str(tmp_path / "fresh"),
                     cwd=tmp_path, ca=certificates.ca)
    # `check` reports a source it cannot fetch as a verifiable-source violation (SPEC: exit 4).
    assert done.returncode == 4, done.stderr
    source = f"{server.url}/demo-1.0-py3-none-any.whl"
    assert (f"verifiable-source: cannot fetch {source}: it redirects to "
            f"{http_mirror.url}/demo-1.0-py3-none-any.whl") in done.stderr
    assert "never https: to http:" in done.stderr and "Traceback" not in done.stderr
    assert http_mirror.requests == []
