"""Publishing against loopback servers of the tests' own, which check each request as the kubo
RPC and the IPFS Pinning Service API describe it, and answer as those services do."""

from __future__ import annotations

import http.server
import io
import json
import re
import shutil
import socket
import subprocess
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from ipwhl import car, unixfs
from ipwhl.cid import CID
from ipwhl.publish import PublishError, pin_remotely, publish_to_kubo, rpc_base
from ipwhl.store import Store
from tests.conftest import ORACLES


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, CID]:
    """A small DAG with a multi-block file: enough for a CAR with structure."""
    store = Store(tmp_path_factory.mktemp("publish") / "store").open()
    links = []
    for name, data in (("index.html", b"<h1>release</h1>\n"), ("big.bin", bytes(600_000))):
        cid, tsize, blocks = unixfs.encode_file(data)
        for block in blocks:
            store.put_block(block.cid, block.data)
        links.append(unixfs.Link(name, cid, tsize))
    root, _, blocks = unixfs.encode_directory(links)
    for block in blocks:
        store.put_block(block.cid, block.data)
    return store, root


@dataclass
class Served:
    """A loopback server: what it saw, what was wrong with it, and how to answer next."""

    url: str = ""
    problems: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    answer: str = "ok"
    state: dict[str, Any] = field(default_factory=dict)


def serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Callable[..., Served]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(**state: Any) -> Served:
        served = Served(state=dict(state))
        bound = type("Bound", (handler,), {"served": served})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), bound)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        served.url = f"http://127.0.0.1:{server.server_port}"
        servers.append(server)
        return served

    start.servers = servers  # type: ignore[attr-defined]
    return start


class _Quiet(http.server.BaseHTTPRequestHandler):
    served: Served

    def log_message(self, format: str, *args: object) -> None:
        pass

    def reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# --- a kubo RPC that checks dag/import requests -------------------------------------------------


def parse_multipart(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """multipart/form-data as RFC 7578 writes it; AssertionError on anything else."""
    match = re.fullmatch(r"multipart/form-data; boundary=([0-9A-Za-z'()+_,./:=?-]{1,70})",
                         content_type)
    assert match, f"Content-Type {content_type!r} is not multipart/form-data with a boundary"
    delimiter = b"--" + match[1].encode()
    assert body.startswith(delimiter + b"\r\n"), "body does not open with the boundary"
    assert body.endswith(b"\r\n" + delimiter + b"--\r\n"), "body does not close the boundary"
    inner = body[len(delimiter) + 2 : -(len(delimiter) + 6)]
    parts = []
    for raw in inner.split(b"\r\n" + delimiter + b"\r\n"):
        head, separator, content = raw.partition(b"\r\n\r\n")
        assert separator, "a part has no blank line after its headers"
        headers = {}
        for line in head.decode("ascii").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, content))
    return parts


class KuboRPC(_Quiet):
    """POST /api/v0/dag/import?pin-roots=true with one multipart part "file" holding a CAR."""

    def do_GET(self) -> None:
        # kubo's RPC answers only POST.
        self.reply(405, b'{"Message":"405 - Method Not Allowed","Code":0,"Type":"error"}')

    def do_POST(self) -> None:
        served = self.served
        url = urllib.parse.urlsplit(self.path)
        served.requests.append(("POST", self.path))
        problems = []
        if url.path != "/api/v0/dag/import":
            problems.append(f"path {url.path}")
        query = urllib.parse.parse_qs(url.query)
        if query.get("pin-roots") != ["true"]:
            problems.append(f"pin-roots is {query.get('pin-roots')}")
        length = self.headers.get("Content-Length")
        body = self.rfile.read(int(length)) if length else b""
        if self.headers.get("Authorization") != served.state.get("authorization"):
            self.reply(401, b'{"Message":"401 - Unauthorized","Code":0,"Type":"error"}')
            return
        if not length:
            problems.append("no Content-Length")
        roots: list[CID] = []
        try:
            parts = parse_multipart(self.headers.get("Content-Type", ""), body)
            assert len(parts) == 1, f"{len(parts)} parts"
            headers, content = parts[0]
            assert re.fullmatch(r'form-data; name="file"(; filename="[^"]+")?',
                                headers.get("content-disposition", "")), headers
            reader = car.CarReader(io.BytesIO(content))  # checks every block's hash
            roots = reader.roots
            blocks = list(reader.sections())
            served.bodies.append(content)
        except (AssertionError, car.InvalidCar) as exc:
            problems.append(f"body: {exc}")
        if problems:
            served.problems.extend(problems)
            message = json.dumps({"Message": "; ".join(problems), "Code": 1, "Type": "error"})
            self.reply(400, message.encode())
            return
        if served.answer == "refuse":
            refusal = {"Message": "blockstore: disk quota exceeded", "Code": 0, "Type": "error"}
            self.reply(500, json.dumps(refusal).encode())
            return
        pin_error = "pin: not enough space" if served.answer == "pin-error" else ""
        lines = [
            {"Root": {"Cid": {"/": str(roots[0])}, "PinErrorMsg": pin_error}},
            {"Stats": {"BlockCount": len(blocks),
                       "BlockBytesCount": sum(len(block) for _, block, _ in blocks)}},
        ]
        if query.get("stats") != ["true"]:
            lines.pop()
        answer = "".join(json.dumps(line) + "\n" for line in lines).encode()
        self.reply(200, answer, "application/json")


@pytest.fixture
def kubo() -> Iterator[Callable[..., Served]]:
    start = serve(KuboRPC)
    yield start
    for server in start.servers:  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()


def exported(store: Store, root: CID) -> bytes:
    out = io.BytesIO()
    car.write_car(store, root, out)
    return out.getvalue()


def test_publish_to_kubo_sends_the_car_and_checks_the_pin(release, kubo, tmp_path):
    store, root = release
    node = kubo(authorization="Bearer s3cret")
    result = publish_to_kubo(store, root, node.url, auth="bearer:s3cret")
    assert node.problems == []
    assert result.root == root
    assert node.bodies == [exported(store, root)]
    assert result.car_size == len(node.bodies[0])
    assert result.blocks == 5  # directory, page, file node, two leaves (both zero: one block)
    if shutil.which("node"):
        (tmp_path / "sent.car").write_bytes(node.bodies[0])
        checked = subprocess.run(
            [str(ORACLES / "car-check"), str(tmp_path / "sent.car"), "--root", str(root),
             "--quiet"], capture_output=True, text=True, timeout=120,
        )
        assert checked.returncode == 0, checked.stderr
    assert not any((store.root / "tmp").iterdir())


def test_kubo_basic_auth_from_the_url_or_the_flag(release, kubo):
    store, root = release
    node = kubo(authorization="Basic YWxpY2U6cEBzcw==")  # alice:p@ss
    port = urllib.parse.urlsplit(node.url).port
    publish_to_kubo(store, root, f"http://alice:p%40ss@127.0.0.1:{port}/api/v0/")
    publish_to_kubo(store, root, f"/ip4/127.0.0.1/tcp/{port}", auth="basic:alice:p@ss")
    assert node.problems == [] and len(node.bodies) == 2
    with pytest.raises(PublishError, match="401") as refused:
        publish_to_kubo(store, root, node.url, auth="bearer:wrong")
    assert "--rpc-auth" in str(refused.value)
    with pytest.raises(PublishError, match="bearer:TOKEN or basic"):
        publish_to_kubo(store, root, node.url, auth="password")


def test_kubo_refusals_are_reported(release, kubo):
    store, root = release
    node = kubo()
    node.answer = "refuse"
    with pytest.raises(PublishError, match="disk quota exceeded"):
        publish_to_kubo(store, root, node.url)
    node.answer = "pin-error"
    with pytest.raises(PublishError, match="could not pin it: pin: not enough space"):
        publish_to_kubo(store, root, node.url)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PublishError, match="port 5001"):
        publish_to_kubo(store, root, f"http://127.0.0.1:{port}")


def test_rpc_addresses():
    assert rpc_base("http://127.0.0.1:5001/api/v0/") == "http://127.0.0.1:5001"
    assert rpc_base("/ip4/10.0.0.2/tcp/5001") == "http://10.0.0.2:5001"
    assert rpc_base("/ip6/::1/tcp/5001") == "http://[::1]:5001"
    assert rpc_base("/dns4/node.example/tcp/443/https") == "https://node.example:443"
    for bad in ("127.0.0.1:5001", "/ip4/1.2.3.4/udp/5001", "ftp://x"):
        with pytest.raises(PublishError):
            rpc_base(bad)


# --- a pinning service that checks its API ------------------------------------------------------

_STATES = {"queued", "pinning", "pinned", "failed"}


class PinningService(_Quiet):
    """GET /pins, POST /pins, GET /pins/{requestid}, as the OpenAPI document describes them."""

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.served.state['token']}":
            return True
        self.fail(401, "UNAUTHORIZED", "Access token is missing or invalid")
        return False

    def fail(self, status: int, reason: str, details: str) -> None:
        self.reply(status, json.dumps({"error": {"reason": reason, "details": details}}).encode())

    def status(self, requestid: str) -> dict[str, Any]:
        return self.served.state["pins"][requestid]

    def do_GET(self) -> None:
        served = self.served
        served.requests.append(("GET", self.path))
        if not self._authorised():
            return
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/pins":
            query = urllib.parse.parse_qs(url.query)
            statuses = query.get("status", ["pinned"])
            if not set(statuses) <= _STATES or len(query.get("cid", [])) > 10:
                served.problems.append(f"bad query {url.query}")
                self.fail(400, "BAD_REQUEST", "bad filters")
                return
            found = [
                pin for pin in served.state["pins"].values()
                if pin["status"] in statuses and pin["pin"]["cid"] in query.get("cid", [])
            ]
            self.reply(200, json.dumps({"count": len(found), "results": found}).encode())
            return
        match = re.fullmatch(r"/pins/([^/]+)", url.path)
        if match is None or match[1] not in served.state["pins"]:
            self.fail(404, "NOT_FOUND", "The specified resource was not found")
            return
        pin = self.status(match[1])
        # Each look moves a pin one step on: queued, pinning, then pinned (or failed).
        pin["status"] = {"queued": "pinning", "pinning": served.answer}.get(pin["status"],
                                                                           pin["status"])
        if pin["status"] == "failed":
            pin["info"] = {"status_details": "DAG too big for your plan"}
        self.reply(200, json.dumps(pin).encode())

    def do_POST(self) -> None:
        served = self.served
        served.requests.append(("POST", self.path))
        if not self._authorised():
            return
        problems = []
        if self.path != "/pins":
            problems.append(f"path {self.path}")
        if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
            problems.append(f"Content-Type {self.headers.get('Content-Type')}")
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if not isinstance(body.get("cid"), str):
            problems.append("no cid")
        if "name" in body and not (isinstance(body["name"], str) and len(body["name"]) <= 255):
            problems.append("bad name")
        origins = body.get("origins", [])
        if not (isinstance(origins, list) and len(origins) <= 20
                and all(isinstance(o, str) and o.startswith("/") for o in origins)):
            problems.append("bad origins")
        if not all(isinstance(v, str) for v in body.get("meta", {}).values()):
            problems.append("bad meta")
        if set(body) - {"cid", "name", "origins", "meta"}:
            problems.append(f"unknown fields {set(body)}")
        if problems:
            served.problems.extend(problems)
            self.fail(400, "BAD_REQUEST", "; ".join(problems))
            return
        requestid = f"req-{len(served.state['pins']) + 1}"
        pin = {
            "requestid": requestid,
            "status": "queued",
            "created": "2026-11-25T00:00:00Z",
            "pin": body,
            "delegates": ["/dnsaddr/pin-service.example/p2p/QmDelegate"],
            "info": {"status_details": "queue position: 1 of 1"},
        }
        served.state["pins"][requestid] = pin
        self.reply(202, json.dumps(pin).encode())


@pytest.fixture
def pinning() -> Iterator[Callable[..., Served]]:
    start = serve(PinningService)
    yield start
    for server in start.servers:  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()


def test_pin_and_wait_until_pinned(release, pinning):
    _, root = release
    service = pinning(token="t0ken", pins={})
    service.answer = "pinned"
    status = pin_remotely(service.url, "t0ken", root, name="example #3",
                          origins=["/ip4/203.0.113.5/tcp/4001/p2p/QmOrigin"], wait=5, poll=0.01)
    assert service.problems == []
    assert status.status == "pinned" and status.cid == root
    assert status.delegates == ("/dnsaddr/pin-service.example/p2p/QmDelegate",)
    sent = service.state["pins"][status.requestid]["pin"]
    assert sent == {"cid": str(root), "name": "example #3",
                    "origins": ["/ip4/203.0.113.5/tcp/4001/p2p/QmOrigin"], "meta": {"app": "ipwhl"}}
    methods = [method for method, _ in service.requests]
    assert methods == ["GET", "POST", "GET", "GET"]  # look for a pin, add it, poll twice
    # Asking again finds the pin instead of adding another.
    again = pin_remotely(service.url, "t0ken", root)
    assert again.requestid == status.requestid
    assert [method for method, _ in service.requests].count("POST") == 1


def test_pin_without_waiting_returns_the_queued_request(release, pinning):
    _, root = release
    service = pinning(token="t0ken", pins={})
    status = pin_remotely(service.url + "/", "t0ken", root)
    assert status.status == "queued"
    assert status.info["status_details"] == "queue position: 1 of 1"


def test_pinning_service_refusals(release, pinning):
    _, root = release
    service = pinning(token="t0ken", pins={})
    with pytest.raises(PublishError, match="UNAUTHORIZED: Access token is missing") as refused:
        pin_remotely(service.url, "wrong", root)
    assert "--token" in str(refused.value)
    service.answer = "failed"
    with pytest.raises(PublishError, match="DAG too big for your plan"):
        pin_remotely(service.url, "t0ken", root, wait=5, poll=0.01)
    with pytest.raises(PublishError, match="access token"):
        pin_remotely(service.url, "", root)
    assert service.problems == []


def test_publish_command(release, kubo, pinning, capsys, monkeypatch, tmp_path):
    from ipwhl.cli import main

    store, root = release
    node = kubo()
    service = pinning(token="t0ken", pins={})
    service.answer = "pinned"
    monkeypatch.setenv("IPWHL_PINNING_TOKEN", "t0ken")
    where = str(store.root)
    assert main(["publish", "--store", where, str(root), "--to", node.url,
                 "--pinning-service", service.url, "--wait", "0"]) == 0
    said = capsys.readouterr().err
    assert f"imported and pinned {root}" in said
    assert "is queued" in said and "ipfs swarm connect /dnsaddr/pin-service.example" in said
    assert node.bodies == [exported(store, root)] and service.problems == []
    assert main(["publish", "--store", where, str(root)]) == 2
    assert "--to URL" in capsys.readouterr().err
    empty = str(tmp_path / "empty")
    Store(empty).open()
    assert main(["publish", "--store", empty, str(root), "--to", node.url]) == 7
    assert "`ipwhl fetch` it first" in capsys.readouterr().err
