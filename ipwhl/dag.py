"""Reading release DAGs out of the store: paths to CIDs, directories, file bytes, whole trees."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import unixfs
from .cid import CID, InvalidCID
from .errors import IpwhlError, NotFound
from .store import Store

__all__ = [
    "InvalidPath",
    "Node",
    "iter_bytes",
    "list_dir",
    "resolve",
    "walk_files",
    "write_out",
]


BlockGetter = Callable[[CID], bytes]


class InvalidPath(IpwhlError, ValueError):
    """A `CID[/PATH]` that cannot name anything in a DAG."""

    exit_code = 2


@dataclass(frozen=True)
class Node:
    """A resolved node: its CID, whether it is a directory, and (for files) its size."""

    cid: CID
    is_dir: bool
    size: int


def split_path(text: str) -> tuple[CID, list[str]]:
    """`CID[/PATH]` (optionally prefixed with /ipfs/) → the root CID and the path's segments."""
    text = text.removeprefix("/ipfs/").removeprefix("ipfs://")
    head, _, rest = text.partition("/")
    try:
        root = CID.parse(head)
    except InvalidCID as exc:
        raise InvalidPath(f"{head!r} is not a CID: {exc}") from None
    segments = []
    for raw in rest.split("/"):
        if raw == "":
            continue
        segment = urllib.parse.unquote(raw)
        if segment in {".", ".."} or "/" in segment or "\0" in segment:
            raise InvalidPath(f"path segment {raw!r} is not allowed in {text!r}")
        segments.append(segment)
    return root, segments


def node(store: Store, cid: CID, get_block: BlockGetter | None = None) -> Node:
    """What `cid` is in the store: a directory or a file, and a file's size.

    `get_block` (default: the store's) reads dag-pb blocks, so a caller may cache them."""
    layout = store.get_layout(cid)
    if layout is not None:
        return Node(cid, False, layout.size)
    get_block = get_block or store.get_block
    kind = unixfs.node_kind(cid, get_block)
    if kind in {"directory", "hamt"}:
        return Node(cid, True, 0)
    return Node(cid, False, unixfs.file_size(cid, get_block))


def resolve(
    store: Store,
    root: CID,
    segments: list[str],
    get_block: BlockGetter | None = None,
    lookup: Callable[[CID, str], unixfs.Link | None] | None = None,
) -> Node:
    """Follow `segments` from `root` (through HAMTs without listing them); NotFound if absent.

    `lookup(directory, name)` (default: unixfs.lookup over `get_block`) finds one entry, so a
    caller may keep directories it has decoded."""
    get_block = get_block or store.get_block
    if lookup is None:
        def lookup(cid: CID, name: str) -> unixfs.Link | None:
            return unixfs.lookup(cid, name, get_block)
    cid = root
    for depth, name in enumerate(segments):
        link = lookup(cid, name)
        if link is None:
            where = "/".join(segments[: depth + 1])
            raise NotFound(f"{root}/{where} does not exist")
        cid = link.cid
    return node(store, cid, get_block)


def list_dir(store: Store, cid: CID) -> list[unixfs.Link]:
    """The entries of a directory (HAMT shards flattened), sorted by name."""
    return unixfs.list_directory(cid, store.get_block)


def walk_files(store: Store, cid: CID) -> dict[str, CID]:
    """Every file under a directory, by POSIX path relative to it."""
    files: dict[str, CID] = {}
    pending = [("", cid)]
    while pending:
        prefix, folder = pending.pop()
        for link in list_dir(store, folder):
            if node(store, link.cid).is_dir:
                pending.append((f"{prefix}{link.name}/", link.cid))
            else:
                files[f"{prefix}{link.name}"] = link.cid
    return files


def iter_bytes(store: Store, cid: CID, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Bytes [start, end) of a file, verified block by block; whole objects are read directly."""
    layout = store.get_layout(cid)
    if layout is not None:
        return store.iter_layout(layout, start, end)
    return unixfs.iter_file(cid, store.get_block, start, end)


def write_out(store: Store, cid: CID, out: Path) -> int:
    """Write a file or a directory out as plain files, like `ipfs get`; returns files written."""
    return _write_tree(store, cid, out, 0)


# Far deeper than any release; a crafted DAG could otherwise nest past Python's stack.
_MAX_WRITE_DEPTH = 256


def _write_tree(store: Store, cid: CID, out: Path, depth: int) -> int:
    target = node(store, cid)
    if not target.is_dir:
        _write_file(store, cid, out)
        return 1
    if depth >= _MAX_WRITE_DEPTH:
        raise InvalidPath(f"directory {cid} is nested more than {_MAX_WRITE_DEPTH} deep")
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    seen: set[str] = set()
    for link in list_dir(store, cid):
        name = link.name
        if name in {"", ".", ".."} or "/" in name or os.sep in name or "\0" in name:
            raise InvalidPath(f"directory {cid} has an entry named {name!r}; refusing it")
        if name in seen:
            raise InvalidPath(f"directory {cid} has two entries named {name!r}; refusing it")
        seen.add(name)
        count += _write_tree(store, link.cid, out / name, depth + 1)
    return count


def _write_file(store: Store, cid: CID, out: Path) -> None:
    temp = out.with_name(f".{out.name}.ipwhl-part")
    try:
        with open(temp, "wb") as handle:
            for chunk in iter_bytes(store, cid):
                handle.write(chunk)
    except BaseException:
        # A corrupt or missing block stops the copy: leave no half file behind.
        temp.unlink(missing_ok=True)
        raise
    os.replace(temp, out)
