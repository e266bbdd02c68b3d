"""Crafted DAGs (from a CAR or a gateway: their CIDs check out, their content is anything):
entry names with NULs or slashes, duplicate names, directories nested a thousand deep, release
files that are not TOML. `get`, `diff`, overlays and `verify` refuse them with a typed error."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipwhl import dag, unixfs
from ipwhl.build import read_release_info
from ipwhl.cid import CID, DAG_PB
from ipwhl.diff import diff_releases
from ipwhl.errors import NotFound
from ipwhl.overlay import load_previous
from ipwhl.store import Store
from ipwhl.unixfs import DataType, PBLink, PBNode, UnixFSData, encode_pbnode, encode_unixfs


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store").open()


def put_file(store: Store, data: bytes) -> PBLink:
    cid, tsize, blocks = unixfs.encode_file(data)
    for block in blocks:
        store.put_block(block.cid, block.data)
    return PBLink("", cid, tsize)


def raw_directory(store: Store, entries: list[tuple[str, PBLink]]) -> CID:
    """A directory node written by hand, so nothing stops odd or repeated names."""
    links = tuple(PBLink(name, link.cid, link.tsize) for name, link in entries)
    block = encode_pbnode(PBNode(links, encode_unixfs(UnixFSData(type=DataType.DIRECTORY))))
    cid = CID.compute(block, DAG_PB)
    store.put_block(cid, block)
    return cid


@pytest.mark.parametrize("name", ["a\0b", "..", ".", "a/b", ""])
def test_get_refuses_entry_names_that_are_not_file_names(store, tmp_path, name):
    root = raw_directory(store, [(name, put_file(store, b"x"))])
    with pytest.raises(dag.InvalidPath, match="refusing it"):
        dag.write_out(store, root, tmp_path / "out")


def test_get_refuses_two_entries_of_one_name(store, tmp_path):
    inner = raw_directory(store, [("x", put_file(store, b"x"))])
    root = raw_directory(store, [("a", put_file(store, b"file")),
                                 ("a", PBLink("", inner, 10))])
    with pytest.raises(dag.InvalidPath, match="two entries named 'a'"):
        dag.write_out(store, root, tmp_path / "out")


def test_get_refuses_directories_nested_a_thousand_deep(store, tmp_path):
    cid = raw_directory(store, [("leaf", put_file(store, b"x"))])
    for _ in range(1200):  # past Python's stack, which a recursive walk used to hit
        cid = raw_directory(store, [("d", PBLink("", cid, 1))])
    with pytest.raises(dag.InvalidPath, match="nested more than 256 deep"):
        dag.write_out(store, cid, tmp_path / "out")


def crafted_release(store: Store, release_toml: bytes, declaration: bytes = b"") -> CID:
    """A release-shaped DAG: its demo project's page differs with its declaration."""
    declarations = raw_directory(store, [
        ("demo", PBLink("", raw_directory(store, [
            ("demo-1.0-py3-none-any.toml", put_file(store, declaration)),
        ]), 1)),
    ])
    ipwhl_dir = raw_directory(store, [
        ("declarations", PBLink("", declarations, 1)),
        ("release.toml", put_file(store, release_toml)),
    ])
    demo_page = raw_directory(store, [("index.html", put_file(store, declaration))])
    simple = raw_directory(store, [("demo", PBLink("", demo_page, 1)),
                                   ("index.html", put_file(store, b"<html></html>"))])
    return raw_directory(store, [("ipwhl", PBLink("", ipwhl_dir, 1)),
                                 ("simple", PBLink("", simple, 1))])


@pytest.mark.parametrize(
    "document", [b"\xff\xfe", b"name = ", b"x = " + b"[" * 2000 + b"]" * 2000],
    ids=["not-utf8", "not-toml", "deep"],
)
def test_a_release_toml_that_is_not_toml(store, document):
    root = crafted_release(store, document)
    with pytest.raises(NotFound, match="is not TOML"):
        read_release_info(store, root)
    with pytest.raises(NotFound, match="is not TOML"):
        load_previous(store, root)


GOOD_DECLARATION = f"source = 'a.whl'\ncontent-id = '{unixfs.file_cid(b'a wheel')}'\n".encode()


def test_diff_of_a_release_whose_declaration_is_not_toml(store):
    good = crafted_release(store, b'name = "demo"\nsequence = 1\n', GOOD_DECLARATION)
    bad = crafted_release(store, b'name = "demo"\nsequence = 2\n', b"\xff not toml")
    where = r"ipwhl/declarations/demo/demo-1.0-py3-none-any.toml:1:1: byte 0xff is not UTF-8"
    with pytest.raises(NotFound, match=f"{bad} is not an ipwhl release: {where}"):
        diff_releases(store, good, bad)
