"""Fetching a release from trustless gateways: our own gateway on 127.0.0.1, behind a proxy
that drops connections, sends wrong bytes and errors, as real networks do."""

from __future__ import annotations

import http.server
import io
import random
import socket
import string
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ipwhl import car, dag, remote, unixfs
from ipwhl.build import build_release, load_plan
from ipwhl.cid import CID
from ipwhl.errors import FetchError, NotFound
from ipwhl.gateway import running
from ipwhl.store import Store
from tests.releasefactory import Project, write_release


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, CID, Path]:
    """A built release with a wheel of three chunks, and its tree as plain files."""
    base = tmp_path_factory.mktemp("source")
    rng = random.Random(5)
    text = "".join(rng.choice(string.ascii_letters) for _ in range(900_000))
    spec = write_release(
        base,
        [Project("big", "1.0", modules={"big/__init__.py": text}),
         Project("small", "1.0", requires_dist=["big"])],
    )
    store = Store(base / "store").open()
    root = build_release(store, load_plan(spec.path)).root
    dag.write_out(store, root, base / "tree")
    return store, root, base / "tree"


@pytest.fixture(scope="module")
def gateway(source) -> Iterator[str]:
    with running(source[0]) as url:
        yield url


def all_blocks(store: Store, root: CID) -> list[CID]:
    return [cid for cid, _ in car.walk_dag(store.get_block, root)]


def same_tree(a: Path, b: Path) -> bool:
    files_a = {p.relative_to(a): p.read_bytes() for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b): p.read_bytes() for p in b.rglob("*") if p.is_file()}
    return files_a == files_b


# --- a proxy with faults ---------------------------------------------------------------------


@dataclass
class Proxy:
    """Forwards /ipfs/<cid>?... to a gateway; faults are queued per CID and used up in order."""

    upstream: str
    url: str = ""
    faults: dict[str, list[str]] = field(default_factory=dict)
    seen: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fault(self, cid: CID, *kinds: str) -> None:
        """kinds: "drop" (cut the body short), "corrupt" (flip a byte), "503", "404",
        "redirect"; "always-" before one repeats it for ever."""
        self.faults.setdefault(str(cid), []).extend(kinds)

    def _next_fault(self, cid: str) -> str | None:
        with self.lock:
            self.seen[cid] += 1
            queue = self.faults.get(cid) or []
            if not queue:
                return None
            if queue[0].startswith("always-"):
                return queue[0].removeprefix("always-")
            return queue.pop(0)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    proxy: Proxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        cid = self.path.split("?", 1)[0].removeprefix("/ipfs/").strip("/")
        fault = self.proxy._next_fault(cid)
        if fault in {"503", "404"}:
            self.send_response(int(fault))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fault == "redirect":
            self.send_response(302)
            self.send_header("Location", f"{self.proxy.upstream}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        request = urllib.request.Request(
            self.proxy.upstream + self.path, headers={"Accept": self.headers.get("Accept", "")}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        if fault == "corrupt" and body:
            body = body[:-1] + bytes([body[-1] ^ 0x55])
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.ipld.raw")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if fault == "drop":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def proxy(gateway) -> Iterator[Proxy]:
    state = Proxy(gateway)
    handler = type("Handler", (_ProxyHandler,), {"proxy": state})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}"
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- tests -----------------------------------------------------------------------------------


def test_fetch_a_release_into_an_empty_store(source, gateway, tmp_path):
    store, root, tree = source
    fresh = Store(tmp_path / "store").open()
    seen: list[remote.FetchStats] = []
    stats = remote.fetch_dag(fresh, root, [gateway], progress=seen.append)
    blocks = all_blocks(store, root)
    assert stats.fetched == len(blocks) and stats.present == 0
    assert stats.nbytes == sum(len(store.get_block(cid)) for cid in blocks)
    assert seen and seen[-1] == stats
    assert remote.missing_blocks(fresh, root) == []
    dag.write_out(fresh, root, tmp_path / "out")
    assert same_tree(tree, tmp_path / "out")
    # The copy exports to the same CAR as the original.
    ours, theirs = io.BytesIO(), io.BytesIO()
    car.write_car(store, root, ours)
    car.write_car(fresh, root, theirs)
    assert ours.getvalue() == theirs.getvalue()
    # Nothing is fetched twice.
    again = remote.fetch_dag(fresh, root, [gateway])
    assert again.fetched == 0 and again.present == len(blocks)


def test_faults_once_each_end_with_a_verified_copy(source, proxy, tmp_path):
    store, root, tree = source
    wheel_dir = dag.resolve(store, root, ["simple", "big"])
    wheel = next(link for link in dag.list_dir(store, wheel_dir.cid) if link.name.endswith(".whl"))
    leaves = [link.cid for link in unixfs.decode_pbnode(store.get_block(wheel.cid)).links]
    assert len(leaves) == 3
    proxy.fault(root, "503")
    proxy.fault(leaves[0], "drop")
    proxy.fault(leaves[1], "corrupt")
    proxy.fault(leaves[2], "drop", "corrupt")
    proxy.fault(wheel.cid, "redirect")
    fresh = Store(tmp_path / "store").open()
    remote.fetch_dag(fresh, root, [proxy.url], workers=4)
    assert remote.missing_blocks(fresh, root) == []
    dag.write_out(fresh, root, tmp_path / "out")
    assert same_tree(tree, tmp_path / "out")
    assert proxy.seen[str(root)] == 2
    assert proxy.seen[str(leaves[0])] == proxy.seen[str(leaves[1])] == 2
    assert proxy.seen[str(leaves[2])] == 3
    assert proxy.seen[str(wheel.cid)] == 1  # then the gateway itself, by the redirect


def test_a_block_that_is_always_wrong_fails_clearly_then_resumes(source, gateway, proxy, tmp_path):
    store, root, _ = source
    wheel_dir = dag.resolve(store, root, ["simple", "big"])
    wheel = next(link for link in dag.list_dir(store, wheel_dir.cid) if link.name.endswith(".whl"))
    bad_leaf = unixfs.decode_pbnode(store.get_block(wheel.cid)).links[1].cid
    proxy.fault(bad_leaf, "always-corrupt")
    fresh = Store(tmp_path / "store").open()
    with pytest.raises(FetchError) as failure:
        remote.fetch_dag(fresh, root, [proxy.url], retries=2)
    message = str(failure.value)
    assert str(bad_leaf) in message and "do not hash" in message and "resume" in message
    assert not fresh.has_block(bad_leaf)
    # Nodes above the gap are held back: the store never claims a DAG it does not have.
    for above in (wheel.cid, wheel_dir.cid, root):
        assert not fresh.has_block(above)
    assert fresh.has_block(unixfs.decode_pbnode(store.get_block(wheel.cid)).links[0].cid)
    # The next run, from a good gateway, fetches the missing leaf and the nodes above it only.
    resumed = remote.fetch_dag(fresh, root, [gateway])
    assert remote.missing_blocks(fresh, root) == []
    simple = dag.resolve(store, root, ["simple"]).cid
    assert resumed.fetched == len([bad_leaf, wheel.cid, wheel_dir.cid, simple, root])


def test_gateways_are_tried_in_order(source, gateway, proxy, tmp_path):
    store, root, _ = source
    blocks = all_blocks(store, root)
    for cid in blocks:
        proxy.fault(cid, "always-404")
    fresh = Store(tmp_path / "store").open()
    stats = remote.fetch_dag(fresh, root, [dead_url(), proxy.url, gateway], retries=2)
    assert stats.fetched == len(blocks)
    assert all(proxy.seen[str(cid)] == 1 for cid in blocks)  # a 404 is not retried
    assert remote.missing_blocks(fresh, root) == []


def test_no_gateway_at_all(source, tmp_path):
    _, root, _ = source
    fresh = Store(tmp_path / "store").open()
    with pytest.raises(FetchError, match="--from URL"):
        remote.fetch_dag(fresh, root, [])
    with pytest.raises(FetchError, match="cannot fetch all") as failure:
        remote.fetch_dag(fresh, root, [dead_url()], retries=2)
    assert "refused" in str(failure.value)
    assert not any((fresh.root / "blocks").iterdir())


def test_ensure_dag_fetches_only_when_something_is_missing(source, gateway, tmp_path):
    store, root, _ = source
    fresh = Store(tmp_path / "store").open()
    with pytest.raises(NotFound, match="--from URL"):
        remote.ensure_dag(fresh, root, [])
    assert remote.ensure_dag(fresh, root, [gateway]) is not None
    assert remote.ensure_dag(fresh, root, [dead_url()]) is None  # whole already: no request
    assert remote.ensure_dag(store, root) is None


def test_gateway_urls_and_the_environment(monkeypatch):
    assert remote.gateway_base("https://ipfs.io/ipfs/") == "https://ipfs.io"
    assert remote.gateway_base("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert remote.gateway_base("https://example.org/mirror/ipfs") == "https://example.org/mirror"
    with pytest.raises(FetchError, match="not a gateway URL"):
        remote.gateway_base("ipfs.io")
    monkeypatch.setenv(remote.GATEWAYS_ENV, " https://a.example , https://b.example,,")
    assert remote.configured_gateways() == ["https://a.example", "https://b.example"]
    assert remote.configured_gateways(["http://c"]) == ["http://c"]


def test_progress_line(tmp_path):
    stream = io.StringIO()
    shown = remote.FetchProgress(stream)
    shown(remote.FetchStats(fetched=3, nbytes=2_000_000, present=1))
    assert stream.getvalue() == ""  # not a terminal: nothing redrawn
    assert shown.summary().startswith("fetched 3 blocks (2.0 MB")
    assert shown.summary().endswith("1 already here")


# --- the commands --------------------------------------------------------------------------------


def test_fetch_command(source, gateway, tmp_path, capsys, monkeypatch):
    from ipwhl.cli import main

    _, root, tree = source
    where = str(tmp_path / "store")
    monkeypatch.delenv(remote.GATEWAYS_ENV, raising=False)
    assert main(["fetch", "--store", where, str(root)]) == 5
    assert "--from URL" in capsys.readouterr().err
    monkeypatch.setenv(remote.GATEWAYS_ENV, f"{dead_url()},{gateway}")
    assert main(["fetch", "--store", where, str(root), "--root-name", "mirror", "-j", "3"]) == 0
    assert "rooted as mirror #1" in capsys.readouterr().err
    assert main(["get", "--store", where, str(root), "-o", str(tmp_path / "out")]) == 0
    assert same_tree(tree, tmp_path / "out")
    assert main(["fetch", "--store", where, f"{root}/simple"]) == 2


def test_build_on_top_of_a_release_the_store_lacks(source, gateway, tmp_path, capsys, monkeypatch):
    from ipwhl.cli import main

    store, root, _ = source
    rng = random.Random(5)
    text = "".join(rng.choice(string.ascii_letters) for _ in range(900_000))
    spec = write_release(
        tmp_path,
        [Project("big", "1.0", modules={"big/__init__.py": text}),
         Project("small", "1.0", requires_dist=["big"]), Project("extra", "0.1")],
    )
    monkeypatch.delenv(remote.GATEWAYS_ENV, raising=False)
    where = str(tmp_path / "store")
    args = ["build", "--store", where, str(spec.path), "--on-top-of", str(root)]
    assert main(args) == 7
    assert "--from URL" in capsys.readouterr().err
    assert main([*args, "--from", gateway]) == 0
    built = CID.parse(capsys.readouterr().out.strip())
    assert remote.missing_blocks(Store(where), root) == []
    # The same build where the previous release was built gives the same CID.
    assert build_release(store, load_plan(spec.path), on_top_of=str(root)).root == built
