"""Property tests: every decoder of outside input, fed arbitrary bytes or text, either returns
or raises its own typed error (never IndexError, RecursionError, UnicodeError, struct.error…).

Inputs: TOML documents (declarations, release files, release records), CIDs, dag-pb and
UnixFS blocks and the readers that walk them, CAR files (and their import), METADATA files,
minisign keys and signatures, the trust state file.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ipwhl import car, tomlpos, unixfs
from ipwhl.cid import CID, DAG_PB, RAW, InvalidCID
from ipwhl.declarations import load_declaration
from ipwhl.errors import DeclarationError, IpwhlError, NotFound
from ipwhl.releasefile import load_release
from ipwhl.signing import BadSignature, InvalidKey, PublicKey, Signature, parse_public_keys
from ipwhl.store import Store
from ipwhl.trust import InvalidRecord, ReleaseRecord, load_state
from ipwhl.unixfs import InvalidBlock, PBLink, PBNode, UnixFSData, encode_pbnode, encode_unixfs
from ipwhl.wheels import InvalidWheel, parse_metadata

SLOW = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
FAST = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# Text that looks like TOML often enough to get past the first character.
toml_pieces = st.sampled_from([
    "source", "content-id", "extras", "dependencies", "requires-python", "name", "supported",
    "declarations", "date", "keys", "on-top-of", " = ", "=", "'", '"', "'''", '"""', "[", "]",
    "[[", "]]", "{", "}", ",", ".", "\n", "\r\n", "#", "\\", "\\u0000", "1979-05-27T07:32:00Z",
    "1979-05-27", "true", "inf", "nan", "0x1F", "1_000", "-", "\t", "a", "é", "\x00",
])
toml_text = st.lists(toml_pieces | st.text(max_size=8), max_size=40).map("".join)
toml_bytes = toml_text.map(lambda t: t.encode("utf-8", "surrogatepass")) | st.binary(max_size=200)


# --- TOML: declarations, release files, release records ---------------------------------------


@FAST
@given(toml_bytes)
def test_toml_parse_raises_only_invalid_toml(data: bytes) -> None:
    try:
        tomlpos.parse(data)
    except tomlpos.InvalidToml as error:
        assert error.line >= 1 and error.col >= 1


@given(st.integers(1, 3000), st.sampled_from(["[", "{x=", "a."]))
@settings(max_examples=30, deadline=None)
def test_deep_nesting_is_invalid_toml_not_a_recursion_error(depth: int, opener: str) -> None:
    closer = {"[": "]", "{x=": "}", "a.": ""}[opener]
    if opener == "a.":
        text = "a" + ".a" * depth + " = 1\n"
    else:
        text = "k = " + opener * depth + "1" + closer * depth + "\n"
    with contextlib.suppress(tomlpos.InvalidToml):
        tomlpos.parse(text.encode())


@pytest.fixture(scope="module")
def workspace() -> Path:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "pkgs" / "demo").mkdir(parents=True)
        yield root


@FAST
@given(toml_bytes)
def test_declarations_raise_only_declaration_error(workspace: Path, data: bytes) -> None:
    path = workspace / "pkgs" / "demo" / "demo-1.0-py3-none-any.toml"
    path.write_bytes(data)
    try:
        load_declaration(path, workspace / "pkgs")
    except DeclarationError as error:
        assert error.violations


@FAST
@given(toml_bytes)
def test_release_files_raise_only_declaration_error(workspace: Path, data: bytes) -> None:
    path = workspace / "release.toml"
    path.write_bytes(data)
    try:
        load_release(path, environ={})
    except DeclarationError as error:
        assert error.violations


@FAST
@given(toml_bytes)
def test_release_records_raise_only_invalid_record(data: bytes) -> None:
    with contextlib.suppress(InvalidRecord):
        ReleaseRecord.from_bytes(data)


@FAST
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_the_trust_state_raises_only_ipwhl_error(workspace: Path, data: bytes) -> None:
    path = workspace / "trust.json"
    path.write_bytes(data)
    with contextlib.suppress(IpwhlError):
        load_state(path)


def test_a_deeply_nested_trust_state_is_an_error_not_a_crash(workspace: Path) -> None:
    path = workspace / "trust.json"
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(IpwhlError, match="unreadable"):
        load_state(path)


# --- CIDs, METADATA, keys and signatures --------------------------------------------------------


@FAST
@given(st.text(max_size=80) | st.sampled_from(["Qm", "b", "bafy", "z", "f01", "bafkqaaa"]).flatmap(
    lambda p: st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567", max_size=70).map(p.__add__)))
def test_cid_parse_raises_only_invalid_cid(text: str) -> None:
    try:
        cid = CID.parse(text)
    except InvalidCID:
        return
    assert CID.parse(str(cid)) == cid


@FAST
@given(st.binary(max_size=80))
def test_cid_from_bytes_raises_only_invalid_cid(data: bytes) -> None:
    with contextlib.suppress(InvalidCID):
        CID.from_bytes(data)


@FAST
@given(st.binary(max_size=400) | st.lists(st.sampled_from([
    b"Name: x\n", b"Version: 1\n", b"Requires-Dist: a\n", b"  folded\n", b"\n", b"\r\n", b":",
    b"\xff", b"\xef\xbb\xbf", b"Name:", b"\x00",
]), max_size=20).map(b"".join))
def test_metadata_raises_only_invalid_wheel(data: bytes) -> None:
    try:
        parse_metadata(data)
    except InvalidWheel as error:
        assert error.problems


@FAST
@given(st.text(max_size=300))
def test_public_keys_raise_only_invalid_key(text: str) -> None:
    with contextlib.suppress(InvalidKey):
        parse_public_keys(text)


@FAST
@given(st.text(max_size=400))
def test_signatures_raise_only_bad_signature(text: str) -> None:
    with contextlib.suppress(BadSignature, InvalidKey):
        Signature.from_text(text)


@FAST
@given(st.text(max_size=80))
def test_a_public_key_from_base64_raises_only_invalid_key(text: str) -> None:
    with contextlib.suppress(InvalidKey):
        PublicKey.from_base64(text)


# --- dag-pb and UnixFS: decoders and the readers that walk blocks ------------------------------


def raw_cid(data: bytes) -> CID:
    return CID.compute(data, codec=RAW)


def pb_cid(data: bytes) -> CID:
    return CID.compute(data, codec=DAG_PB)


@st.composite
def hostile_blocks(draw: st.DrawFn) -> tuple[CID, dict[CID, bytes]]:
    """A small DAG of well-formed protobufs whose UnixFS content is arbitrary and may lie
    (sizes, types, fanouts, names), plus raw leaves; the root is the last node drawn."""
    blocks: dict[CID, bytes] = {}
    cids: list[CID] = []
    for _ in range(draw(st.integers(1, 6))):
        if cids and draw(st.booleans()):
            leaf = draw(st.binary(max_size=30))
            cid = raw_cid(leaf)
            blocks[cid] = leaf
            cids.append(cid)
            continue
        links = sorted(
            (PBLink(
                name=draw(st.none() | st.text(max_size=6) | st.sampled_from(["00", "FFa", "1"])),
                cid=draw(st.sampled_from(cids)) if cids and draw(st.booleans())
                else raw_cid(draw(st.binary(max_size=4))),
                tsize=draw(st.none() | st.integers(0, 2**40)),
            )
            for _ in range(draw(st.integers(0, 4)))),
            key=lambda link: (link.name or "").encode("utf-8", "surrogatepass"),
        )
        kind = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 99]))
        message = UnixFSData(
            type=kind,
            data=draw(st.binary(max_size=16)),
            filesize=draw(st.none() | st.integers(0, 2**40)),
            blocksizes=tuple(draw(st.lists(st.integers(0, 2**20), max_size=5))),
            hash_type=draw(st.none() | st.sampled_from([0x22, 0x23])),
            fanout=draw(st.none() | st.sampled_from([0, 1, 3, 4, 256, 1024, 2048])),
        )
        data = encode_unixfs(message) if draw(st.booleans()) else draw(st.binary(max_size=20))
        block = encode_pbnode(PBNode(tuple(links), data))
        cid = pb_cid(block)
        blocks[cid] = block
        cids.append(cid)
    return cids[-1], blocks


def getter(blocks: dict[CID, bytes]):
    def get_block(cid: CID) -> bytes:
        try:
            return blocks[cid]
        except KeyError:
            raise NotFound(f"block {cid} is not here") from None

    return get_block


READER_ERRORS = (InvalidBlock, NotFound)


@SLOW
@given(hostile_blocks(), st.text(max_size=6), st.integers(-5, 100), st.integers(-5, 100))
def test_unixfs_readers_raise_only_invalid_block_or_not_found(dag, name, start, end) -> None:
    root, blocks = dag
    get_block = getter(blocks)
    for read in (
        lambda: unixfs.node_kind(root, get_block),
        lambda: unixfs.list_directory(root, get_block),
        lambda: unixfs.lookup(root, name, get_block),
        lambda: unixfs.file_size(root, get_block),
        lambda: b"".join(unixfs.iter_file(root, get_block, max(start, 0), max(end, 0))),
        lambda: list(car.walk_dag(get_block, root)),
        lambda: list(car.walk_dag(get_block, root, scope="entity", byte_range=(0, 10))),
    ):
        with contextlib.suppress(READER_ERRORS):
            read()


@FAST
@given(st.binary(max_size=300))
def test_pbnode_and_unixfs_decoders_raise_only_invalid_block(data: bytes) -> None:
    try:
        node = unixfs.decode_pbnode(data)
    except InvalidBlock:
        node = None
    with contextlib.suppress(InvalidBlock):
        unixfs.decode_unixfs(data if node is None or node.data is None else node.data)


# --- CAR files ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def a_car(workspace: Path) -> bytes:
    store = Store(workspace / "car-store").open()
    leaves = [os.urandom(40) for _ in range(3)]
    links = []
    for index, leaf in enumerate(leaves):
        cid = raw_cid(leaf)
        store.put_block(cid, leaf)
        links.append(unixfs.Link(f"f{index}", cid, len(leaf)))
    root, _, blocks = unixfs.encode_directory(links)
    for block in blocks:
        store.put_block(block.cid, block.data)
    out = io.BytesIO()
    car.write_car(store, root, out)
    return out.getvalue()


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_not_a_car(data: bytes) -> None:
    try:
        reader = car.CarReader(io.BytesIO(data))
        for _ in reader.sections():
            pass
    except car.InvalidCar:
        pass


@SLOW
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
       st.none() | st.integers(0, 10**6))
def test_mutated_cars_are_refused_and_leave_the_store_alone(a_car, workspace, edits, cut) -> None:
    data = bytearray(a_car)
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data)]
    assume(bytes(data) != a_car)
    with tempfile.TemporaryDirectory(dir=workspace) as directory:
        store = Store(Path(directory) / "store").open()
        try:
            car.import_car(store, io.BytesIO(bytes(data)))
        except car.InvalidCar:
            assert list(store.names("blocks")) == []
