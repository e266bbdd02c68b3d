"""CAR files (Content Addressable aRchives, v1): a DAG out of the store, and verified back in.

Writing follows `ipfs dag export`: one root, blocks in depth-first pre-order from the root,
links in order, each block once. It streams: the only state kept is the set of CIDs already
written and the links still to visit on the current path, so memory stays flat however large
the release is. The same walk, narrowed by the trustless gateway's `dag-scope` and
`entity-bytes`, answers `?format=car` requests.

Reading is strict: the header must be a dag-cbor `{roots, version: 1}` (a CARv2 wrapper is
unwrapped), every section must be complete, and every block must hash to its CID and decode
as dag-pb or be raw. `import_car` verifies a whole CAR, checks that the DAG under each root is
complete (each linked block in the CAR or already in the store), and only then writes blocks
into the store, children before parents; a CAR that fails any check leaves the store as it was.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import shutil
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Literal

from .cid import CID, DAG_PB, IDENTITY, RAW, InvalidCID, decode_prefix, varint_decode, varint_encode
from .errors import IntegrityError, NotFound, StoreError
from .store import Store
from .unixfs import DataType, InvalidBlock, decode_pbnode, decode_unixfs

__all__ = [
    "MAX_BLOCK_SIZE",
    "CarReader",
    "ExportResult",
    "ImportResult",
    "IncompleteCar",
    "InvalidCar",
    "Scope",
    "block_bytes",
    "car_stream",
    "encode_header",
    "export_car",
    "import_car",
    "pin_root",
    "resolve_path",
    "walk_dag",
    "write_car",
]

# Bitswap and gateways refuse blocks over 2 MiB; a section claiming more is hostile or broken.
MAX_BLOCK_SIZE = 2 * 1024 * 1024
_MAX_SECTION = MAX_BLOCK_SIZE + 128  # the block plus its CID
_MAX_HEADER = 1 << 20
_CARV2_PRAGMA = bytes.fromhex("0aa16776657273696f6e02")  # varint 10, dag-cbor {"version": 2}
_CARV2_HEADER = struct.Struct("<16sQQQ")  # characteristics, data offset, data size, index offset
_COPY_SIZE = 1 << 20
# Export reads leaves this many blocks (at most 256 KiB each) ahead, on this many threads.
_READ_WINDOW = 16
_READ_WORKERS = 2
# Import writes leaves on this many threads: each waits for its fsync, not for the CPU.
_WRITE_WORKERS = 8
_MEND_BYTES = 64 << 20  # corrupt stored copies replaced in one go by import

Scope = Literal["all", "entity", "block"]
GetBlock = Callable[[CID], bytes]
# progress(step, done, total): bytes so far of a long step ("export", "check", "write");
# total 0 when unknown.
StepCallback = Callable[[str, int, int], None]


class InvalidCar(IntegrityError):
    """A CAR is malformed, truncated, or holds a block that does not hash to its CID."""


class IncompleteCar(InvalidCar):
    """A CAR's DAG links to blocks that are neither in the CAR nor in the store."""


# --- blocks and walks -----------------------------------------------------------------------


def block_bytes(get_block: GetBlock, cid: CID) -> bytes:
    """The bytes of block `cid`: an identity CID carries them itself, others come from get_block."""
    if cid.hash_code == IDENTITY:
        return cid.digest
    return get_block(cid)


def _links(cid: CID, data: bytes) -> list[CID]:
    if cid.codec == RAW:
        return []
    if cid.codec != DAG_PB:
        raise InvalidBlock(f"{cid}: codec {cid.codec_name} is not supported (dag-pb and raw only)")
    try:
        return [link.cid for link in decode_pbnode(data).links]
    except InvalidBlock as exc:
        raise InvalidBlock(f"{cid}: {exc}") from None


def walk_dag(
    get_block: GetBlock,
    root: CID,
    *,
    scope: Scope = "all",
    byte_range: tuple[int, int] | None = None,
    dups: bool = False,
    seen: set[CID] | None = None,
) -> Iterator[tuple[CID, bytes]]:
    """Blocks under `root` in depth-first pre-order, each once unless `dups`; identity blocks
    are followed but not yielded (their bytes are in the CID).

    scope "all" is the whole DAG; "entity" is a whole UnixFS file, or a directory's own blocks
    (a HAMT's shards, not its entries); "block" is the root block alone. `byte_range`
    (first, last byte, inclusive) narrows a file to the blocks that hold those bytes.
    """
    seen = set() if seen is None else seen
    if scope == "block":
        if root not in seen or dups:
            seen.add(root)
            data = block_bytes(get_block, root)
            if root.hash_code != IDENTITY:
                yield root, data
        return
    if scope == "entity" and root.codec == DAG_PB:
        data = block_bytes(get_block, root)
        kind = _unixfs_type(root, data)
        if byte_range is not None and kind in (DataType.FILE, DataType.RAW):
            yield from _walk_range(get_block, root, data, byte_range, dups, seen, 0)
            return
        if kind == DataType.HAMT_SHARD:
            yield from _walk_shards(get_block, root, data, dups, seen, 0)
            return
        if kind not in (DataType.FILE, DataType.RAW):
            yield from walk_dag(get_block, root, scope="block", dups=dups, seen=seen)
            return
    for cid, data in _walk_all(get_block, root, dups, seen, lazy=False):
        yield cid, data  # type: ignore[misc]


def _walk_all(
    get_block: GetBlock, root: CID, dups: bool, seen: set[CID], *, lazy: bool
) -> Iterator[tuple[CID, bytes | None]]:
    # Depth-first pre-order; with `lazy`, raw leaves come without their bytes (None), which
    # the walk does not need: the caller reads them, possibly ahead, on other threads.
    # Each stack entry is the iterator over one block's links: the path from the root, no more.
    stack: list[Iterator[CID]] = [iter((root,))]
    while stack:
        cid = next(stack[-1], None)
        if cid is None:
            stack.pop()
            continue
        if not dups:
            if cid in seen:
                continue
            seen.add(cid)
        if lazy and cid.codec == RAW and cid.hash_code != IDENTITY:
            yield cid, None
            continue
        data = block_bytes(get_block, cid)
        if cid.hash_code != IDENTITY:
            yield cid, data
        links = _links(cid, data)
        if links:
            stack.append(iter(links))


def _read_ahead(
    get_block: GetBlock, blocks: Iterator[tuple[CID, bytes | None]], workers: int, window: int
) -> Iterator[tuple[CID, bytes]]:
    """`blocks` in order, the missing bytes read (and verified) by `workers` threads, at most
    `window` blocks ahead of the consumer."""
    ahead: collections.deque[tuple[CID, bytes | Future[bytes]]] = collections.deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="ipwhl-read") as pool:
        try:
            for cid, data in blocks:
                ahead.append((cid, pool.submit(get_block, cid) if data is None else data))
                while len(ahead) > window:
                    yield _settled(ahead.popleft())
            while ahead:
                yield _settled(ahead.popleft())
        finally:
            for _, pending in ahead:
                if isinstance(pending, Future):
                    pending.cancel()


def _settled(item: tuple[CID, bytes | Future[bytes]]) -> tuple[CID, bytes]:
    cid, data = item
    return cid, data.result() if isinstance(data, Future) else data


def _unixfs_type(cid: CID, data: bytes) -> int:
    node = decode_pbnode(data)
    if node.data is None:
        raise InvalidBlock(f"{cid}: dag-pb node has no UnixFS Data")
    return decode_unixfs(node.data).type


def _walk_shards(
    get_block: GetBlock, cid: CID, data: bytes, dups: bool, seen: set[CID], depth: int
) -> Iterator[tuple[CID, bytes]]:
    # A HAMT's entity is its shard nodes: a link named by the bare index prefix is a sub-shard.
    if depth > 64:
        raise InvalidBlock(f"{cid}: HAMT deeper than 64 levels")
    if not dups:
        if cid in seen:
            return
        seen.add(cid)
    if cid.hash_code != IDENTITY:
        yield cid, data
    node = decode_pbnode(data)
    meta = decode_unixfs(node.data or b"")
    width = len(f"{(meta.fanout or 256) - 1:X}")
    for link in node.links:
        if link.name is not None and len(link.name) == width:
            child = block_bytes(get_block, link.cid)
            yield from _walk_shards(get_block, link.cid, child, dups, seen, depth + 1)


def _walk_range(
    get_block: GetBlock,
    cid: CID,
    data: bytes,
    byte_range: tuple[int, int],
    dups: bool,
    seen: set[CID],
    depth: int,
) -> Iterator[tuple[CID, bytes]]:
    # Only the nodes and leaves whose bytes overlap [first, last] of this file.
    if depth > 64:
        raise InvalidBlock(f"{cid}: file DAG deeper than 64 levels")
    if dups or cid not in seen:
        seen.add(cid)
        if cid.hash_code != IDENTITY:
            yield cid, data
    if cid.codec == RAW:
        return
    first, last = byte_range
    node = decode_pbnode(data)
    meta = decode_unixfs(node.data or b"")
    if len(meta.blocksizes) != len(node.links):
        raise InvalidBlock(f"{cid}: {len(node.links)} links but {len(meta.blocksizes)} blocksizes")
    position = len(meta.data)
    for link, size in zip(node.links, meta.blocksizes, strict=True):
        end = position + size  # exclusive
        if position > last:
            break
        if end > first and size:
            child = block_bytes(get_block, link.cid)
            inner = (max(first - position, 0), min(last, end - 1) - position)
            yield from _walk_range(get_block, link.cid, child, inner, dups, seen, depth + 1)
        position = end


def resolve_path(
    get_block: GetBlock, root: CID, segments: Sequence[str]
) -> tuple[CID, list[CID], list[CID]]:
    """Follow `segments` from `root`: (the CID at the end, the blocks read on the way in order,
    the CID of each logical path step); NotFound if a segment is absent."""
    from . import unixfs

    read: list[CID] = []

    def recording(cid: CID) -> bytes:
        if cid not in read:
            read.append(cid)
        return block_bytes(get_block, cid)

    cid = root
    steps = [root]
    for depth, name in enumerate(segments):
        link = unixfs.lookup(cid, name, recording)
        if link is None:
            where = "/".join(segments[: depth + 1])
            raise NotFound(f"{root}/{where} does not exist")
        cid = link.cid
        steps.append(cid)
    return cid, [c for c in read if c != cid], steps


# --- writing ---------------------------------------------------------------------------------


def _cbor_head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes((major << 5 | value,))
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes((major << 5 | info,)) + value.to_bytes(size, "big")
    raise ValueError(f"CBOR argument {value} is too large")


def encode_header(roots: Sequence[CID]) -> bytes:
    """The varint-prefixed CARv1 header: dag-cbor {"roots": [...], "version": 1}."""
    body = bytearray(_cbor_head(5, 2))
    body += _cbor_head(3, 5) + b"roots" + _cbor_head(4, len(roots))
    for cid in roots:
        binary = b"\x00" + bytes(cid)  # dag-cbor links: tag 42 over the CID with a 0x00 prefix
        body += b"\xd8\x2a" + _cbor_head(2, len(binary)) + binary
    body += _cbor_head(3, 7) + b"version" + _cbor_head(0, 1)
    return varint_encode(len(body)) + bytes(body)


def car_stream(roots: Sequence[CID], blocks: Iterable[tuple[CID, bytes]]) -> Iterator[bytes]:
    """A CARv1 as a series of byte strings: the header, then one per block section."""
    yield encode_header(roots)
    for cid, data in blocks:
        binary = bytes(cid)
        yield varint_encode(len(binary) + len(data)) + binary + data


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the root, how many blocks and bytes (the CAR file's size)."""

    root: CID
    blocks: int
    size: int


def write_car(
    store: Store, root: CID, out: IO[bytes], *, progress: StepCallback | None = None
) -> ExportResult:
    """Write the DAG under `root` to `out` as ipfs dag export does (every block verified);
    `progress("export", bytes_written, 0)` is called after each block."""
    header = encode_header([root])
    out.write(header)
    blocks, size = 0, len(header)
    # Leaves are read and hashed on other threads while this one writes (sha256 frees the GIL).
    walk = _walk_all(store.get_block, root, False, set(), lazy=True)
    for cid, data in _read_ahead(store.get_block, walk, _READ_WORKERS, _READ_WINDOW):
        binary = bytes(cid)
        prefix = varint_encode(len(binary) + len(data)) + binary
        out.write(prefix)
        out.write(data)
        blocks += 1
        size += len(prefix) + len(data)
        if progress is not None:
            progress("export", size, 0)
    return ExportResult(root, blocks, size)


def export_car(
    store: Store, root: CID, output: str | os.PathLike[str], *,
    progress: StepCallback | None = None,
) -> ExportResult:
    """Write a CAR of `root` to the file `output` ("-" for stdout); a failed export leaves no
    partial file behind."""
    if str(output) == "-":
        import sys

        stream = sys.stdout.buffer
        result = write_car(store, root, stream, progress=progress)
        stream.flush()
        return result
    path = Path(output)
    temp = path.with_name(f".{path.name}.ipwhl-part")
    try:
        with open(temp, "wb", buffering=_COPY_SIZE) as handle:
            result = write_car(store, root, handle, progress=progress)
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return result


# --- reading ---------------------------------------------------------------------------------


class _Cbor:
    """Just enough strict dag-cbor for a CAR header: maps, arrays, strings, ints, CIDs."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def item(self, depth: int = 0) -> object:
        if depth > 8:
            raise InvalidCar("CAR header nests too deeply")
        major, value = self._head()
        if major == 0:
            return value
        if major == 1:
            return -1 - value
        if major in (2, 3):
            raw = self._take(value)
            if major == 2:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidCar("CAR header has a string that is not UTF-8") from None
        if major == 4:
            return [self.item(depth + 1) for _ in range(value)]
        if major == 5:
            result: dict[str, object] = {}
            for _ in range(value):
                key = self.item(depth + 1)
                if not isinstance(key, str) or key in result:
                    raise InvalidCar("CAR header map keys must be distinct strings")
                result[key] = self.item(depth + 1)
            return result
        if major == 6:
            if value != 42:
                raise InvalidCar(f"CAR header has CBOR tag {value}; only 42 (a CID) is allowed")
            raw = self.item(depth + 1)
            if not isinstance(raw, bytes) or raw[:1] != b"\x00":
                raise InvalidCar("CAR header has a malformed CID (tag 42)")
            try:
                return CID.from_bytes(raw[1:])
            except InvalidCID as exc:
                raise InvalidCar(f"CAR header has a malformed root CID: {exc}") from None
        if value in (20, 21, 22):
            return {20: False, 21: True, 22: None}[value]
        raise InvalidCar("CAR header holds a CBOR value dag-cbor does not allow")

    def _head(self) -> tuple[int, int]:
        byte = self._take(1)[0]
        major, info = byte >> 5, byte & 0x1F
        if major == 7 and info >= 24:
            raise InvalidCar("CAR header holds a float, which it never needs")
        if info < 24:
            return major, info
        sizes = {24: 1, 25: 2, 26: 4, 27: 8}
        if info not in sizes:
            raise InvalidCar("CAR header uses an indefinite-length or reserved CBOR item")
        return major, int.from_bytes(self._take(sizes[info]), "big")

    def _take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise InvalidCar("CAR header is truncated")
        raw = self.data[self.pos : self.pos + count]
        self.pos += count
        return raw


class CarReader:
    """Reads a CAR from a binary stream: `roots`, then `sections()` yields (cid, block, offset)
    with every block checked against its CID. A CARv2 is read through to its CARv1 payload."""

    def __init__(self, stream: BinaryIO, *, name: str = "CAR") -> None:
        self.stream = stream
        self.name = name
        self.position = 0
        self.limit: int | None = None  # a CARv2's payload ends before its index
        self.version = 1
        self.roots = self._read_header()

    def _fail(self, message: str) -> InvalidCar:
        return InvalidCar(f"{self.name}: {message}")

    def _read(self, count: int, what: str) -> bytes:
        data = self.stream.read(count)
        self.position += len(data)
        if len(data) != count:
            raise self._fail(f"truncated: {what} at byte {self.position - len(data)} is cut short")
        return data

    def _varint(self, what: str) -> int | None:
        """A varint from the stream; None at a clean end of input."""
        raw = bytearray()
        while True:
            if self.limit is not None and self.position >= self.limit:
                if raw:
                    raise self._fail(f"truncated: {what} at byte {self.position} is cut short")
                return None
            byte = self.stream.read(1)
            if not byte:
                if raw:
                    raise self._fail(f"truncated: {what} at byte {self.position} is cut short")
                return None
            self.position += 1
            raw += byte
            if byte[0] < 0x80:
                break
            if len(raw) >= 9:
                raise self._fail(f"{what} at byte {self.position - len(raw)} is not a varint")
        try:
            return varint_decode(bytes(raw))[0]
        except ValueError as exc:
            raise self._fail(f"{what}: {exc}") from None

    def _read_header(self) -> list[CID]:
        length = self._varint("the header length")
        if length is None:
            raise self._fail("empty file, expected a CAR header")
        if length == 0 or length > _MAX_HEADER:
            raise self._fail(f"header length {length} is not plausible; is this a CAR file?")
        raw = self._read(length, "the header")
        if varint_encode(length) + raw == _CARV2_PRAGMA:
            return self._read_v2_header()
        decoder = _Cbor(raw)
        try:
            header = decoder.item()
        except InvalidCar as exc:
            raise self._fail(str(exc)) from None
        if decoder.pos != len(raw):
            raise self._fail("header has trailing bytes after its dag-cbor map")
        if not isinstance(header, dict):
            raise self._fail("header is not a dag-cbor map; is this a CAR file?")
        if header.get("version") != 1:
            raise self._fail(f"CAR version {header.get('version')!r} is not supported "
                             "(CARv1, or a CARv2 wrapping one)")
        roots = header.get("roots")
        if not isinstance(roots, list) or not all(isinstance(r, CID) for r in roots):
            raise self._fail("header has no list of root CIDs")
        return list(roots)  # type: ignore[arg-type]

    def _read_v2_header(self) -> list[CID]:
        _, data_offset, data_size, _ = _CARV2_HEADER.unpack(
            self._read(_CARV2_HEADER.size, "the CARv2 header")
        )
        if data_offset < self.position:
            raise self._fail(f"CARv2 data offset {data_offset} points into its header")
        self._read(data_offset - self.position, "the CARv2 padding")
        self.version = 2
        self.limit = data_offset + data_size
        inner = self._read_header()
        if self.version != 2:  # the payload was itself another CARv2
            raise self._fail("CARv2 payload is not a CARv1")
        return inner

    def sections(self) -> Iterator[tuple[CID, bytes, int]]:
        """Each block as (cid, bytes, offset of the bytes in the stream), verified."""
        index = 0
        while True:
            start = self.position
            length = self._varint(f"the length of section {index}")
            if length is None:
                return
            if length == 0 or length > _MAX_SECTION:
                raise self._fail(
                    f"section {index} at byte {start} claims {length} bytes "
                    f"(a block is 1 to {MAX_BLOCK_SIZE} bytes)"
                )
            if self.limit is not None and self.position + length > self.limit:
                raise self._fail(f"truncated: section {index} runs past the CARv2 payload")
            section = self._read(length, f"section {index}")
            try:
                cid, used = decode_prefix(section)
            except InvalidCID as exc:
                raise self._fail(f"section {index} at byte {start}: bad CID: {exc}") from None
            data = section[used:]
            try:
                good = cid.verify(data)
            except InvalidCID as exc:
                raise self._fail(f"block {cid}: {exc}") from None
            if not good:
                raise self._fail(
                    f"block {cid} (section {index} at byte {start}) does not hash to its CID"
                )
            yield cid, data, self.position - len(data)
            index += 1


# --- importing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportResult:
    """What an import did: the roots, blocks written, blocks already there, bytes written,
    blocks in the CAR that no root reaches (not written), and the GC root pinned if any."""

    roots: tuple[CID, ...]
    written: int
    present: int
    size: int
    unreachable: int
    pinned: tuple[str, int] | None = None
    replaced: int = 0  # blocks whose stored copy was corrupt, replaced by the CAR's (of written)


def import_car(
    store: Store,
    source: str | os.PathLike[str] | BinaryIO,
    *,
    root_name: str | None = None,
    progress: StepCallback | None = None,
) -> ImportResult:
    """Verify a CAR (hashes, structure, completeness from its roots) and only then add its
    blocks to the store; InvalidCar or IncompleteCar with the store unchanged otherwise.

    `source` is a path, "-" for stdin, or a binary stream (spooled to the store's tmp/ first
    when it cannot seek). With `root_name` the CAR's single root is pinned as a GC root.
    `progress` hears of the bytes checked ("check") and then written ("write").
    """
    if isinstance(source, str | os.PathLike) and str(source) != "-":
        path = Path(source)
        try:
            handle = open(path, "rb", buffering=_COPY_SIZE)
        except OSError as exc:
            raise NotFound(f"cannot read {path}: {exc.strerror or exc}") from None
        with handle:
            return _import_seekable(store, handle, str(path), root_name, progress)
    if isinstance(source, str | os.PathLike):
        import sys

        stream: BinaryIO = sys.stdin.buffer
        name = "<stdin>"
    else:
        stream = source
        name = getattr(source, "name", "CAR")
    if stream.seekable():
        return _import_seekable(store, stream, str(name), root_name, progress)
    with store.temporary(".car") as (spool_path, spool):
        shutil.copyfileobj(stream, spool, _COPY_SIZE)
        spool.flush()
        with open(spool_path, "rb", buffering=_COPY_SIZE) as handle:
            return _import_seekable(store, handle, str(name), root_name, progress)


def _import_seekable(
    store: Store, handle: BinaryIO, name: str, root_name: str | None,
    progress: StepCallback | None = None,
) -> ImportResult:
    base = handle.tell()
    total = handle.seek(0, os.SEEK_END) - base
    handle.seek(base)
    reader = CarReader(handle, name=name)
    if not reader.roots:
        raise InvalidCar(f"{name}: the header names no root")
    if root_name is not None and len(reader.roots) != 1:
        raise InvalidCar(f"{name}: --root-name needs a CAR with one root, this one has "
                         f"{len(reader.roots)}")
    # Pass 1: check every block, remember where it lies and what it links to, and whether the
    # store holds a good copy of it already. Good: the same bytes as the CAR's, which hash to
    # the CID; a compare while the block is in hand costs a read of the stored copy, not a
    # hash, and the copy that differs (a byte flipped on disk) is replaced in pass 2.
    where: dict[CID, tuple[int, int]] = {}
    links: dict[CID, list[CID]] = {}
    present: set[CID] = set()
    stale: set[CID] = set()
    for cid, data, offset in reader.sections():
        if cid in where:
            continue
        try:
            children = _links(cid, data)
        except InvalidBlock as exc:
            raise InvalidCar(f"{name}: {exc}") from None
        where[cid] = (offset, len(data))
        if children:
            links[cid] = children
        same = store.compare_block(cid, data)
        if same:
            present.add(cid)
        elif same is not None:
            stale.add(cid)
        if progress is not None:
            progress("check", offset + len(data), total)
    order = _completeness(store, name, reader.roots, where, links)
    # Pass 2: every block is known good and the DAG complete. Leaves go in first, several at a
    # time (each write waits for its fsync), then the nodes, children before parents; every
    # block is checked again as it is read back (the file could have changed in between).
    read = _positional_reader(handle, base)
    missing = [cid for cid in order if cid not in present and cid not in stale]
    replace = [cid for cid in order if cid in stale]

    def good(cid: CID) -> bytes:
        offset, length = where[cid]
        data = read(offset, length)
        if len(data) != length or not cid.verify(data):
            raise InvalidCar(f"{name}: block {cid} changed while it was being imported")
        return data

    def put(cid: CID) -> int:
        store.put_block(cid, good(cid))
        return where[cid][1]

    leaves = [cid for cid in missing if cid not in links]
    to_write = sum(where[cid][1] for cid in (*missing, *replace))
    size = 0

    def wrote(length: int) -> None:
        nonlocal size
        size += length
        if progress is not None:
            progress("write", size, to_write)

    with ThreadPoolExecutor(_WRITE_WORKERS, thread_name_prefix="ipwhl-import") as pool:
        for length in pool.map(put, leaves):
            wrote(length)
    for cid in missing:
        if cid in links:
            wrote(put(cid))
    # Corrupt copies are mended a few MiB at a time (leaves of one object in one copy of it).
    mending: dict[CID, bytes] = {}
    held = 0
    for number, cid in enumerate(replace, 1):
        mending[cid] = good(cid)
        held += where[cid][1]
        if number == len(replace) or held >= _MEND_BYTES:
            store.replace_blocks(mending)
            wrote(held)
            mending, held = {}, 0
    written = len(missing) + len(replace)
    pinned = None
    if root_name is not None:
        pinned = (root_name, pin_root(store, reader.roots[0], root_name))
    return ImportResult(
        tuple(reader.roots), written, len(order) - written, size, len(where) - len(order),
        pinned, len(replace),
    )


def _positional_reader(handle: BinaryIO, base: int) -> Callable[[int, int], bytes]:
    """read(offset, length) of the CAR, safe to call from several threads at once."""
    try:
        descriptor = handle.fileno()
    except (OSError, io.UnsupportedOperation):
        lock = threading.Lock()

        def read_locked(offset: int, length: int) -> bytes:
            with lock:
                handle.seek(base + offset)
                return handle.read(length)

        return read_locked
    return lambda offset, length: os.pread(descriptor, length, base + offset)


def _completeness(
    store: Store,
    name: str,
    roots: Sequence[CID],
    where: dict[CID, tuple[int, int]],
    links: dict[CID, list[CID]],
) -> list[CID]:
    """The CAR's blocks under `roots` in post-order; IncompleteCar if any link leads nowhere.

    A linked block already in the store counts, but its own links are followed too (a fetch
    cut short can leave part of a DAG); a file the store holds as a whole object is complete.
    """
    order: list[CID] = []
    done: set[CID] = set()
    missing: list[tuple[CID, CID | None]] = []
    for root in roots:
        stack: list[tuple[CID, CID | None, Iterator[CID] | None]] = [(root, None, None)]
        while stack:
            cid, parent, children = stack[-1]
            if children is None:
                if cid in done:
                    stack.pop()
                    continue
                done.add(cid)
                if cid in where:
                    kids = links.get(cid, [])
                elif cid.hash_code == IDENTITY:
                    try:
                        kids = _links(cid, cid.digest) if cid.codec == DAG_PB else []
                    except InvalidBlock as exc:  # the CID itself holds a malformed node
                        raise InvalidCar(f"{name}: {exc}") from None
                elif cid.codec == DAG_PB and store.get_layout(cid) is None and store.has_block(cid):
                    try:
                        kids = _links(cid, store.get_block(cid))
                    except (InvalidBlock, IntegrityError) as exc:
                        raise StoreError(f"{exc}; run `ipwhl store verify`") from None
                elif store.has_block(cid):
                    kids = []
                else:
                    missing.append((cid, parent))
                    stack.pop()
                    continue
                stack[-1] = (cid, parent, iter(kids))
                continue
            child = next(children, None)
            if child is None:
                stack.pop()
                if cid in where:
                    order.append(cid)
                continue
            stack.append((child, cid, None))
    if missing:
        shown = ", ".join(
            f"{cid} (linked from {parent})" if parent else str(cid) for cid, parent in missing[:3]
        )
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise IncompleteCar(
            f"{name}: incomplete DAG: {len(missing)} block(s) are neither in the CAR nor in "
            f"the store: {shown}{more}; nothing was imported"
        )
    return order


def pin_root(store: Store, root: CID, name: str) -> int:
    """Make `root` a GC root of the line `name`; its sequence is the release's own (from its
    ipwhl/release.toml) or the next free one. Returns the sequence."""
    from .build import read_release_info

    if not name or "/" in name or name.startswith("."):
        raise StoreError(f"root name {name!r} is not usable (no '/', no leading '.')")
    existing = {seq: cid for line, seq, cid in store.roots() if line == name}
    try:
        sequence = int(read_release_info(store, root).get("sequence", 0)) or None
    except (NotFound, InvalidBlock, ValueError, TypeError):
        sequence = None
    if sequence is None:
        if root in existing.values():
            return next(seq for seq, cid in existing.items() if cid == root)
        sequence = max(existing, default=0) + 1
    if sequence in existing:
        if existing[sequence] == root:
            return sequence
        raise StoreError(
            f"root {name} #{sequence} already names {existing[sequence]}, not {root}; "
            "pick another root name"
        )
    store.add_root(name, sequence, root)
    return sequence
