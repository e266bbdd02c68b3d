"""Lying trustless gateways: blocks that do not hash to their CID, redirects to other schemes,
endless or dripping answers, oversized blocks. `fetch_dag` stores only verified blocks, gives up
in bounded time, and names what is missing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ipwhl import remote, unixfs
from ipwhl.cid import CID, RAW
from ipwhl.errors import FetchError
from ipwhl.store import Store
from tests.hostileserver import Request, hostile_server, response


@pytest.fixture
def dag(tmp_path: Path) -> tuple[CID, dict[CID, bytes]]:
    """A directory of two small files: three blocks a gateway may be asked for."""
    blocks: dict[CID, bytes] = {}
    links = []
    for name, data in (("a.txt", b"alpha\n" * 10), ("b.txt", b"beta\n" * 10)):
        cid = CID.compute(data, RAW)
        blocks[cid] = data
        links.append(unixfs.Link(name, cid, len(data)))
    root, _, encoded = unixfs.encode_directory(links)
    for block in encoded:
        blocks[block.cid] = block.data
    return root, blocks


def cid_of(request: Request) -> CID:
    return CID.parse(request.target.split("?", 1)[0].removeprefix("/ipfs/"))


def honest(blocks: dict[CID, bytes], request: Request) -> None:
    request.send(response("200 OK", blocks[cid_of(request)]))


def fetch(store: Store, root: CID, url: str, **options: float) -> None:
    remote.fetch_dag(store, root, [url], retries=2, timeout=2.0, **options)  # type: ignore[arg-type]


def test_an_honest_scripted_gateway_works(dag, tmp_path):
    root, blocks = dag
    store = Store(tmp_path / "store").open()
    with hostile_server(lambda request: honest(blocks, request)) as server:
        fetch(store, root, server.url)
    assert remote.missing_blocks(store, root) == []


def test_blocks_of_another_dag_are_refused_and_nothing_is_stored(dag, tmp_path):
    root, blocks = dag
    other = b"not the block you asked for"

    def answer(request: Request) -> None:
        cid = cid_of(request)
        request.send(response("200 OK", other if cid.codec == RAW else blocks[cid]))

    store = Store(tmp_path / "store").open()
    with hostile_server(answer) as server, pytest.raises(FetchError, match="do not hash to"):
        fetch(store, root, server.url)
    assert list(store.names("blocks")) == []  # the root waits for its children


@pytest.mark.parametrize(
    "location", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1:70/x"]
)
def test_a_redirect_to_another_scheme_is_refused(dag, tmp_path, location):
    root, _ = dag
    store = Store(tmp_path / "store").open()

    def answer(request: Request) -> None:
        request.send(response("302 Found", b"", f"Location: {location}"))

    with hostile_server(answer) as server, pytest.raises(FetchError, match="not an http"):
        fetch(store, root, server.url)


def test_a_redirect_loop_ends(dag, tmp_path):
    root, _ = dag
    store = Store(tmp_path / "store").open()

    def answer(request: Request) -> None:
        request.send(response("307 Temporary Redirect", b"", f"Location: {request.target}"))

    with hostile_server(answer) as server, pytest.raises(FetchError, match="redirects"):
        fetch(store, root, server.url)


def test_a_block_over_the_size_limit_is_refused_early(dag, tmp_path):
    root, _ = dag
    store = Store(tmp_path / "store").open()

    def answer(request: Request) -> None:
        request.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b"\0" * 65536)
        while not server.stop.is_set():
            request.send(chunk)

    with hostile_server(answer) as server, pytest.raises(FetchError, match="more than 2 MiB"):
        fetch(store, root, server.url)


def test_a_gateway_that_drips_a_block_is_cut_at_the_deadline(dag, tmp_path):
    root, blocks = dag
    store = Store(tmp_path / "store").open()

    def answer(request: Request) -> None:
        request.drip(response("200 OK", blocks[cid_of(request)]), 0.05, server.stop)

    with hostile_server(answer) as server:
        started = time.monotonic()
        with pytest.raises(FetchError, match=r"no whole block within 0\.5 s"):
            remote.fetch_dag(store, root, [server.url], retries=1, timeout=2.0, deadline=0.5)
        assert time.monotonic() - started < 5


def test_a_gateway_that_never_answers_times_out(dag, tmp_path):
    root, _ = dag
    store = Store(tmp_path / "store").open()

    def answer(request: Request) -> None:
        server.stop.wait(30)

    with hostile_server(answer) as server:
        started = time.monotonic()
        with pytest.raises(FetchError, match="cannot fetch all"):
            remote.fetch_dag(store, root, [server.url], retries=1, timeout=0.5)
        assert time.monotonic() - started < 5


def test_a_lying_gateway_first_an_honest_one_second(dag, tmp_path):
    root, blocks = dag
    store = Store(tmp_path / "store").open()

    def liar(request: Request) -> None:
        request.send(response("200 OK", b"lies", length=4))

    with (
        hostile_server(liar) as bad,
        hostile_server(lambda request: honest(blocks, request)) as good,
    ):
        remote.fetch_dag(store, root, [bad.url, good.url], retries=1, timeout=2.0)
    assert remote.missing_blocks(store, root) == []
