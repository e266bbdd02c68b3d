"""Property tests: dag-pb and UnixFS codecs round-trip, chunking and directories read back."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipwhl.cid import BLAKE3, CID, DAG_PB, RAW, SHA2_256
from ipwhl.unixfs import (
    CHUNK_SIZE,
    Block,
    DataType,
    FileBuilder,
    InvalidBlock,
    Link,
    PBLink,
    PBNode,
    UnixFSData,
    decode_pbnode,
    decode_unixfs,
    encode_directory,
    encode_file,
    encode_pbnode,
    encode_unixfs,
    file_size,
    iter_file,
    list_directory,
    lookup,
    node_kind,
)

cids = st.builds(
    CID,
    version=st.just(1),
    codec=st.sampled_from([RAW, DAG_PB, 0x71]),
    hash_code=st.sampled_from([SHA2_256, BLAKE3]),
    digest=st.binary(min_size=32, max_size=32),
) | st.builds(lambda d: CID(0, DAG_PB, SHA2_256, d), st.binary(min_size=32, max_size=32))

names = st.text(min_size=0, max_size=30)
pblinks = st.builds(
    PBLink,
    name=st.none() | names,
    cid=cids,
    tsize=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
)


@st.composite
def pbnodes(draw: st.DrawFn) -> PBNode:
    links = draw(st.lists(pblinks, max_size=8))
    links.sort(key=lambda link: (link.name or "").encode())
    return PBNode(tuple(links), draw(st.none() | st.binary(max_size=64)))


@given(pbnodes())
def test_pbnode_round_trip(node: PBNode) -> None:
    encoded = encode_pbnode(node)
    assert decode_pbnode(encoded) == node
    assert encode_pbnode(decode_pbnode(encoded)) == encoded


@given(st.binary(max_size=200))
def test_pbnode_decoder_accepts_only_the_canonical_form(data: bytes) -> None:
    try:
        node = decode_pbnode(data)
    except InvalidBlock:
        return
    keys = [(link.name or "").encode("utf-8", "surrogateescape") for link in node.links]
    if keys == sorted(keys):
        assert encode_pbnode(node) == data
    else:  # the only leniency: foreign blocks with unsorted links still decode
        with pytest.raises(ValueError, match="sorted"):
            encode_pbnode(node)


unixfs_messages = st.builds(
    UnixFSData,
    type=st.sampled_from(list(DataType)),
    data=st.binary(max_size=40),
    filesize=st.none() | st.integers(min_value=0, max_value=2**62),
    blocksizes=st.lists(st.integers(min_value=0, max_value=2**40), max_size=6).map(tuple),
    hash_type=st.none() | st.integers(min_value=0, max_value=2**32),
    fanout=st.none() | st.integers(min_value=0, max_value=2**16),
)


@given(unixfs_messages)
def test_unixfs_round_trip(message: UnixFSData) -> None:
    assert decode_unixfs(encode_unixfs(message)) == message


@given(st.binary(max_size=100))
def test_unixfs_decoder_only_raises_invalid_block(data: bytes) -> None:
    try:
        message = decode_unixfs(data)
    except InvalidBlock:
        return
    assert decode_unixfs(encode_unixfs(message)) == message


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.sampled_from([0, 1, 100, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1])
    | st.integers(min_value=0, max_value=4 * CHUNK_SIZE + 10),
    seed=st.integers(min_value=0, max_value=2**16),
    version=st.sampled_from([0, 1]),
)
def test_chunking_is_independent_of_how_bytes_arrive(size: int, seed: int, version: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(size)
    cid, tsize, blocks = encode_file(data, cid_version=version)
    leaves: list[tuple[Block, int]] = []

    def on_block(block: Block, offset: int | None) -> None:
        if offset is not None:
            leaves.append((block, offset))

    builder = FileBuilder(cid_version=version, on_block=on_block)
    pos = 0
    while pos < size:
        step = rng.choice([1, rng.randrange(1, CHUNK_SIZE + 2), 3 * CHUNK_SIZE])
        builder.update(data[pos : pos + step])
        pos += step
    assert builder.finish() == (cid, size, tsize)
    assert [offset for _, offset in leaves] == list(range(0, max(size, 1), CHUNK_SIZE))
    store = {block.cid: block.data for block in blocks}
    assert tsize == sum(len(store[c]) for c in _reachable(cid, store))
    assert file_size(cid, store.__getitem__) == size
    start = rng.randrange(0, size + 1)
    end = rng.randrange(start, size + 1)
    assert b"".join(iter_file(cid, store.__getitem__, start, end)) == data[start:end]


def _reachable(cid: CID, store: dict[CID, bytes]) -> list[CID]:
    # Tsize counts a block once per path to it, so walk paths, not distinct blocks.
    if cid.codec == RAW:
        return [cid]
    out = [cid]
    for link in decode_pbnode(store[cid]).links:
        out += _reachable(link.cid, store)
    return out


entry_names = st.text(
    st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)), min_size=1, max_size=12
).filter(lambda name: name not in (".", ".."))


@settings(max_examples=40, deadline=None)
@given(
    st.sets(entry_names, max_size=120),
    st.sampled_from([0, 200, 2000, 262144]),
    st.lists(entry_names, max_size=5),
)
def test_directories_list_and_look_up(entries: set[str], threshold: int, absent: list[str]) -> None:
    links = [Link(name, CID.compute(name.encode(), RAW), len(name.encode())) for name in entries]
    cid, tsize, blocks = encode_directory(links, shard_threshold=threshold)
    store = {block.cid: block.data for block in blocks}
    assert tsize == sum(len(block.data) for block in blocks) + sum(link.tsize for link in links)
    listed = list_directory(cid, store.__getitem__)
    assert listed == sorted(links, key=lambda link: link.name.encode())
    for link in links:
        assert lookup(cid, link.name, store.__getitem__) == link
    for name in absent:
        if name not in entries:
            assert lookup(cid, name, store.__getitem__) is None
    expected_kind = (
        "hamt" if sum(len(n.encode()) + 36 for n in entries) > threshold else "directory"
    )
    assert node_kind(cid, store.__getitem__) == expected_kind
