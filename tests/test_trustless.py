"""The trustless side of the gateway: raw blocks and CAR streams a client verifies itself, over
real HTTP on 127.0.0.1 from a real store."""

from __future__ import annotations

import collections
import http.client
import io
import random
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ipwhl import car, unixfs
from ipwhl.cid import CID
from ipwhl.fetch import fetch_into_store
from ipwhl.gateway import running
from ipwhl.store import Store
from ipwhl.unixfs import Link
from tests.conftest import ORACLES

CHUNK = unixfs.CHUNK_SIZE
WHEEL_SIZE = 2 * CHUNK + 5000  # three raw leaves
CAR_TYPE = "application/vnd.ipld.car; version=1; order=dfs; dups=n"


@dataclass(frozen=True)
class Tree:
    """root/{index.html, big.whl, copy/big.whl, many/ (a HAMT), loose.bin} in a store."""

    store: Store
    root: CID
    wheel: bytes
    wheel_cid: CID
    many: CID
    loose: CID  # a three-leaf file stored as plain blocks (no layout)
    loose_data: bytes


def _put(store: Store, blocks: list[unixfs.Block]) -> None:
    for block in blocks:
        store.put_block(block.cid, block.data)


def _file(store: Store, name: str, data: bytes) -> Link:
    cid, tsize, blocks = unixfs.encode_file(data)
    _put(store, blocks)
    return Link(name, cid, tsize)


def _directory(store: Store, name: str, links: list[Link]) -> Link:
    cid, tsize, blocks = unixfs.encode_directory(links)
    _put(store, blocks)
    return Link(name, cid, tsize)


def build_tree(where: Path, entries: int = 3000) -> Tree:
    store = Store(where / "store").open()
    wheel = random.Random(11).randbytes(WHEEL_SIZE)
    (where / "big.whl").write_bytes(wheel)
    fetched = fetch_into_store(store, (where / "big.whl").as_uri(), unixfs.file_cid(wheel))
    big = Link("big.whl", fetched.cid, fetched.tsize)
    many = _directory(
        store,
        "many",
        # One shared file under many long names: a HAMT, and few blocks to write.
        [_file(store, f"entry-with-a-name-long-enough-to-shard-the-directory-{i:05d}.toml", b"x")
         for i in range(entries)],
    )
    loose_data = random.Random(12).randbytes(WHEEL_SIZE)
    loose = _file(store, "loose.bin", loose_data)
    root = _directory(
        store,
        "",
        [
            _file(store, "index.html", b"<h1>hello</h1>\n"),
            big,
            _directory(store, "copy", [big]),
            many,
            loose,
        ],
    )
    return Tree(store, root.cid, wheel, fetched.cid, many.cid, loose.cid, loose_data)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    built = build_tree(tmp_path_factory.mktemp("trustless"))
    assert unixfs.node_kind(built.many, built.store.get_block) == "hamt"
    return built


@pytest.fixture(scope="module")
def gateway(tree: Tree) -> Iterator[str]:
    with running(tree.store) as url:
        yield url


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def blocks(self) -> list[tuple[CID, bytes]]:
        """The CAR body's blocks, each checked against its CID as a client must."""
        reader = car.CarReader(io.BytesIO(self.body))
        return [(cid, data) for cid, data, _ in reader.sections()]

    def roots(self) -> list[CID]:
        return car.CarReader(io.BytesIO(self.body)).roots


def get(base: str, target: str, method: str = "GET", **headers: str) -> Answer:
    parts = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, target, headers={k.replace("_", "-"): v
                                                    for k, v in headers.items()})
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


def leaves(store: Store, cid: CID) -> list[CID]:
    node = unixfs.decode_pbnode(store.get_block(cid))
    return [link.cid for link in node.links]


# --- raw blocks --------------------------------------------------------------------------------


def test_a_raw_block_by_format_and_by_accept(tree, gateway):
    answer = get(gateway, f"/ipfs/{tree.root}?format=raw")
    assert answer.status == 200
    assert answer.body == tree.store.get_block(tree.root)
    assert answer.headers["Content-Type"] == "application/vnd.ipld.raw"
    assert answer.headers["Content-Disposition"] == f'attachment; filename="{tree.root}.bin"'
    assert answer.headers["ETag"] == f'"{tree.root}.raw"'
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Cache-Control"] == "public, max-age=29030400, immutable"
    assert answer.headers["Content-Length"] == str(len(answer.body))
    assert answer.headers["Content-Location"] is None
    negotiated = get(gateway, f"/ipfs/{tree.root}", Accept="application/vnd.ipld.raw")
    assert negotiated.body == answer.body
    assert negotiated.headers["Content-Location"] == f"/ipfs/{tree.root}?format=raw"
    assert "Accept" in negotiated.headers["Vary"]


def test_a_raw_leaf_that_is_a_slice_of_a_stored_wheel(tree, gateway):
    middle = leaves(tree.store, tree.wheel_cid)[1]
    answer = get(gateway, f"/ipfs/{middle}?format=raw")
    assert answer.status == 200
    assert answer.body == tree.wheel[CHUNK : 2 * CHUNK]
    assert middle.verify(answer.body)


def test_a_raw_block_at_the_end_of_a_path(tree, gateway):
    answer = get(gateway, f"/ipfs/{tree.root}/copy/big.whl?format=raw")
    assert answer.status == 200
    assert tree.wheel_cid.verify(answer.body)
    copy = unixfs.lookup(tree.root, "copy", tree.store.get_block)
    assert copy is not None
    assert answer.headers["X-Ipfs-Roots"] == f"{tree.root},{copy.cid},{tree.wheel_cid}"


def test_conditional_head_missing_and_only_if_cached(tree, gateway):
    etag = get(gateway, f"/ipfs/{tree.root}?format=raw").headers["ETag"]
    assert get(gateway, f"/ipfs/{tree.root}?format=raw", If_None_Match=etag).status == 304
    head = get(gateway, f"/ipfs/{tree.root}?format=raw", "HEAD")
    assert head.status == 200 and head.body == b""
    assert head.headers["Content-Length"] == str(len(tree.store.get_block(tree.root)))
    absent = unixfs.file_cid(b"not in this store")
    assert get(gateway, f"/ipfs/{absent}?format=raw").status == 404
    assert get(gateway, f"/ipfs/{absent}?format=car").status == 404
    assert get(gateway, f"/ipfs/{absent}?format=car", "HEAD").status == 404
    assert get(gateway, f"/ipfs/{absent}", Cache_Control="only-if-cached").status == 412
    assert get(gateway, f"/ipfs/{tree.root}/", Cache_Control="only-if-cached").status == 200


def test_the_probe_cid(gateway):
    raw = get(gateway, "/ipfs/bafkqaaa?format=raw")
    assert (raw.status, raw.body) == (200, b"")
    stream = get(gateway, "/ipfs/bafkqaaa?format=car")
    assert stream.status == 200
    assert stream.roots() == [CID.parse("bafkqaaa")]
    assert stream.blocks() == []  # identity blocks are never sent


# --- CAR streams ---------------------------------------------------------------------------------


def test_a_whole_dag_as_car_is_the_export(tree, gateway, tmp_path):
    answer = get(gateway, f"/ipfs/{tree.root}?format=car")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == CAR_TYPE
    assert answer.headers["Content-Disposition"] == f'attachment; filename="{tree.root}.car"'
    assert answer.headers["Accept-Ranges"] == "none"
    assert answer.headers["Transfer-Encoding"] == "chunked"
    assert answer.headers["ETag"].startswith(f'W/"{tree.root}.car.')
    exported = io.BytesIO()
    car.write_car(tree.store, tree.root, exported)
    assert answer.body == exported.getvalue()
    if shutil.which("node"):
        (tmp_path / "got.car").write_bytes(answer.body)
        checked = subprocess.run(
            [str(ORACLES / "car-check"), str(tmp_path / "got.car"), "--root", str(tree.root),
             "--quiet"], capture_output=True, text=True, timeout=120,
        )
        assert checked.returncode == 0, checked.stderr


def test_car_by_accept_with_dups(tree, gateway):
    once = get(gateway, f"/ipfs/{tree.root}", Accept="application/vnd.ipld.car")
    assert once.headers["Content-Location"] == f"/ipfs/{tree.root}?format=car"
    twice = get(gateway, f"/ipfs/{tree.root}",
                Accept="application/vnd.ipld.car; version=1; order=dfs; dups=y")
    assert twice.headers["Content-Type"] == CAR_TYPE.replace("dups=n", "dups=y")
    counted = collections.Counter(cid for cid, _ in twice.blocks())
    # big.whl is in two places, one small file under all 3000 names of many/.
    shared = unixfs.file_cid(b"x")
    assert counted.pop(shared) == 3000
    for cid in (tree.wheel_cid, *leaves(tree.store, tree.wheel_cid)):
        assert counted.pop(cid) == 2
    assert set(counted.values()) == {1}
    assert len(counted) + 5 == len(once.blocks())
    by_query = get(gateway, f"/ipfs/{tree.root}?format=car&car-dups=y")
    assert by_query.body == twice.body
    assert once.headers["ETag"] != twice.headers["ETag"]


def test_dag_scope_block_and_entity(tree, gateway):
    block = get(gateway, f"/ipfs/{tree.root}/big.whl?format=car&dag-scope=block")
    assert [cid for cid, _ in block.blocks()] == [tree.root, tree.wheel_cid]
    assert block.roots() == [tree.root]
    entity = get(gateway, f"/ipfs/{tree.root}/big.whl?format=car&dag-scope=entity")
    assert [cid for cid, _ in entity.blocks()] == [
        tree.root, tree.wheel_cid, *leaves(tree.store, tree.wheel_cid)
    ]
    # A HAMT's entity is its shards: enough to list it, none of its entries' own blocks.
    listing = get(gateway, f"/ipfs/{tree.root}/many?format=car&dag-scope=entity")
    got = dict(listing.blocks())
    shards = {cid for cid in got if cid not in {tree.root}}
    assert tree.many in shards and len(shards) > 1
    assert all(unixfs.node_kind(cid, got.__getitem__) == "hamt" for cid in shards)
    names = unixfs.list_directory(tree.many, got.__getitem__)
    assert len(names) == 3000
    assert block.headers["ETag"] != entity.headers["ETag"] != listing.headers["ETag"]


@pytest.mark.parametrize(
    ("entity_bytes", "first", "last"),
    [
        ("300000:300010", 300000, 300010),
        ("0:0", 0, 0),
        ("-10:*", WHEEL_SIZE - 10, WHEEL_SIZE - 1),
        ("262143:262144", 262143, 262144),  # straddles two leaves
        ("10:99999999", 10, WHEEL_SIZE - 1),  # runs past the end: what there is
        ("100:-100", 100, WHEEL_SIZE - 101),
    ],
)
def test_entity_bytes_sends_just_the_blocks_for_the_range(tree, gateway, entity_bytes, first, last):
    for target in (f"/ipfs/{tree.root}/big.whl", f"/ipfs/{tree.root}/loose.bin"):
        answer = get(gateway, f"{target}?format=car&entity-bytes={entity_bytes}")
        assert answer.status == 200, answer.body
        got = dict(answer.blocks())
        file_cid = unixfs.lookup(tree.root, target.rsplit("/", 1)[1], tree.store.get_block)
        assert file_cid is not None
        needed = {i for i in range(3) if i * CHUNK <= last and (i + 1) * CHUNK > first}
        want = {leaves(tree.store, file_cid.cid)[i] for i in needed}
        assert set(got) == {tree.root, file_cid.cid, *want}
        # The client can rebuild exactly those bytes from what it was sent, and verify them.
        rebuilt = b"".join(unixfs.iter_file(file_cid.cid, got.__getitem__, first, last + 1))
        source = tree.wheel if target.endswith("whl") else tree.loose_data
        assert rebuilt == source[first : last + 1]


def test_entity_bytes_edge_cases(tree, gateway):
    base = f"/ipfs/{tree.root}/big.whl?format=car"
    outside = get(gateway, f"{base}&entity-bytes={WHEEL_SIZE}:*")
    assert outside.status == 400
    empty = get(gateway, f"{base}&entity-bytes=500:400")
    assert [cid for cid, _ in empty.blocks()] == [tree.root, tree.wheel_cid]
    on_a_directory = get(gateway, f"/ipfs/{tree.root}/copy?format=car&entity-bytes=0:10")
    copy = unixfs.lookup(tree.root, "copy", tree.store.get_block)
    assert copy is not None
    assert [cid for cid, _ in on_a_directory.blocks()] == [tree.root, copy.cid]
    for bad in ("1-2", "a:b", "1:", ":5", "1:2:3"):
        assert get(gateway, f"{base}&entity-bytes={bad}").status == 400, bad


def test_bad_formats_and_unacceptable_cars(tree, gateway):
    assert get(gateway, f"/ipfs/{tree.root}?format=tar").status == 400
    assert get(gateway, f"/ipfs/{tree.root}?format=car&dag-scope=most").status == 400
    v2 = get(gateway, f"/ipfs/{tree.root}", Accept="application/vnd.ipld.car; version=2")
    assert v2.status == 406
    fallback = get(gateway, f"/ipfs/{tree.root}",
                   Accept="application/vnd.ipld.car; version=2, application/vnd.ipld.raw")
    assert fallback.headers["Content-Type"] == "application/vnd.ipld.raw"
    assert get(gateway, f"/ipfs/{tree.root}?format=car&car-order=random").status == 406
    # A browser's Accept gets the page, not a block.
    page = get(gateway, f"/ipfs/{tree.root}/", Accept="text/html,*/*;q=0.8")
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.body == b"<h1>hello</h1>\n"
    refused = get(gateway, f"/ipfs/{tree.root}/", Accept="application/vnd.ipld.raw;q=0, text/html")
    assert refused.headers["Content-Type"] == "text/html; charset=utf-8"


def test_a_car_head_sends_no_body(tree, gateway):
    head = get(gateway, f"/ipfs/{tree.root}?format=car", "HEAD")
    assert head.status == 200
    assert head.body == b""
    assert head.headers["Content-Type"] == CAR_TYPE


def test_a_block_missing_mid_stream_cuts_the_car_short(tmp_path):
    broken = build_tree(tmp_path, entries=1)
    last_leaf = leaves(broken.store, broken.loose)[-1]
    broken.store.block_path(last_leaf).unlink()
    with running(broken.store) as url:
        parts = urllib.parse.urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        connection.request("GET", f"/ipfs/{broken.root}/loose.bin?format=car")
        response = connection.getresponse()
        assert response.status == 200  # committed before the walk reached the gap
        with pytest.raises(http.client.IncompleteRead):
            response.read()
        connection.close()
