"""UnixFS over dag-pb: files, directories and HAMT shards to blocks, and back.

The encoders reproduce `ipfs add [-r] [--cid-version=1] [--hash=blake3]` (kubo >= 0.40):
262144-byte chunks, balanced layout with at most 174 links per node, raw leaves for CIDv1
and UnixFS File leaves for CIDv0, directories with links sorted by name bytes, and HAMT
sharding (murmur3-x64-64, fanout 256) once a directory's link estimate exceeds 262144 bytes.
Nothing here touches the disk: blocks come out through return values or a callback, and the
readers fetch blocks through a `get_block(cid) -> bytes` callable that returns verified bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum

import mmh3

from ipwhl.cid import CID, DAG_PB, RAW, SHA2_256, InvalidCID, hash_digest, varint_decode
from ipwhl.cid import varint_encode as _varint
from ipwhl.errors import IntegrityError, NotFound

__all__ = [
    "CHUNK_SIZE",
    "HAMT_FANOUT",
    "HAMT_HASH_MURMUR3",
    "HAMT_THRESHOLD",
    "MAX_LINKS",
    "Block",
    "DataType",
    "FileBuilder",
    "InvalidBlock",
    "Link",
    "NotADirectory",
    "NotAFile",
    "PBLink",
    "PBNode",
    "UnixFSData",
    "decode_pbnode",
    "decode_unixfs",
    "directory_estimate",
    "encode_directory",
    "encode_file",
    "encode_pbnode",
    "encode_unixfs",
    "file_cid",
    "file_size",
    "iter_file",
    "list_directory",
    "lookup",
    "node_kind",
    "update_directory",
]

CHUNK_SIZE = 262144
MAX_LINKS = 174
HAMT_THRESHOLD = 262144
HAMT_FANOUT = 256
HAMT_HASH_MURMUR3 = 0x22

_DIRECTORY_DATA = b"\x08\x01"  # UnixFS Data{Type: Directory}
# Bounds recursion on hostile input; real DAGs are a few levels deep (174**8 chunks is 2**71 B).
_MAX_DEPTH = 64
_UPPER_HEX = frozenset("0123456789ABCDEF")


class DataType(IntEnum):
    """UnixFS Data.Type values."""

    RAW = 0
    DIRECTORY = 1
    FILE = 2
    METADATA = 3
    SYMLINK = 4
    HAMT_SHARD = 5


class InvalidBlock(IntegrityError, ValueError):
    """A block is not valid dag-pb or UnixFS, or contradicts the DAG around it."""


class NotADirectory(NotFound, ValueError):
    """A directory was expected but the CID names a file or other node."""


class NotAFile(NotFound, ValueError):
    """A file was expected but the CID names a directory or other node."""


@dataclass(frozen=True)
class Link:
    """A named directory entry: its name, CID and cumulative DAG size (Tsize)."""

    name: str
    cid: CID
    tsize: int


@dataclass(frozen=True)
class Block:
    """A block: its bytes and the CID they hash to."""

    cid: CID
    data: bytes


@dataclass(frozen=True)
class PBLink:
    """A dag-pb link; `name` and `tsize` are None when the field is absent."""

    name: str | None
    cid: CID
    tsize: int | None


@dataclass(frozen=True)
class PBNode:
    """A dag-pb node; `data` is None when the Data field is absent."""

    links: tuple[PBLink, ...] = ()
    data: bytes | None = None


@dataclass(frozen=True)
class UnixFSData:
    """The UnixFS Data message carried in a dag-pb node's Data field."""

    type: int
    data: bytes = b""
    filesize: int | None = None
    blocksizes: tuple[int, ...] = ()
    hash_type: int | None = None
    fanout: int | None = None


# --- protobuf -------------------------------------------------------------------------


def _name_bytes(name: str) -> bytes:
    # surrogateescape lets names decoded from foreign blocks (or os.listdir) round-trip.
    return name.encode("utf-8", "surrogateescape")


def _read_varint(buf: bytes | memoryview, pos: int, what: str) -> tuple[int, int]:
    try:
        return varint_decode(buf, pos)
    except ValueError as exc:
        raise InvalidBlock(f"{what}: {exc}") from None


def _read_bytes(buf: bytes | memoryview, pos: int, what: str) -> tuple[int, int]:
    length, pos = _read_varint(buf, pos, what)
    end = pos + length
    if end > len(buf):
        raise InvalidBlock(f"{what}: field of {length} bytes runs past the end")
    return pos, end


def encode_pbnode(node: PBNode) -> bytes:
    """Encode a dag-pb node canonically: Links (sorted by name bytes) then Data."""
    out = bytearray()
    previous: bytes | None = None
    for link in node.links:
        name = None if link.name is None else _name_bytes(link.name)
        key = name or b""
        if previous is not None and key < previous:
            raise ValueError(
                f"dag-pb links must be sorted by name bytes: {link.name!r} is out of order"
            )
        previous = key
        cid = bytes(link.cid)
        body = b"\x0a" + _varint(len(cid)) + cid
        if name is not None:
            body += b"\x12" + _varint(len(name)) + name
        if link.tsize is not None:
            body += b"\x18" + _varint(link.tsize)
        out += b"\x12" + _varint(len(body)) + body
    if node.data is not None:
        out += b"\x0a" + _varint(len(node.data)) + node.data
    return bytes(out)


def _decode_pblink(buf: bytes | memoryview, pos: int, end: int) -> PBLink:
    cid: CID | None = None
    name: str | None = None
    tsize: int | None = None
    last_field = 0
    while pos < end:
        key, pos = _read_varint(buf, pos, "dag-pb link")
        field, wire = key >> 3, key & 7
        if field <= last_field or field > 3:
            raise InvalidBlock(
                f"dag-pb link: unexpected field {field} (Hash, Name, Tsize in order)"
            )
        last_field = field
        if field == 3:
            if wire != 0:
                raise InvalidBlock(f"dag-pb link: Tsize has wire type {wire}, expected 0")
            tsize, pos = _read_varint(buf, pos, "dag-pb link Tsize")
            continue
        if wire != 2:
            raise InvalidBlock(f"dag-pb link: field {field} has wire type {wire}, expected 2")
        start, pos = _read_bytes(buf, pos, "dag-pb link")
        if pos > end:
            raise InvalidBlock("dag-pb link: field runs past the end of the link")
        if field == 1:
            try:
                cid = CID.from_bytes(buf[start:pos])
            except InvalidCID as exc:
                raise InvalidBlock(f"dag-pb link: Hash is not a CID: {exc}") from None
        else:
            name = bytes(buf[start:pos]).decode("utf-8", "surrogateescape")
    if pos != end:
        raise InvalidBlock("dag-pb link: field runs past the end of the link")
    if cid is None:
        raise InvalidBlock("dag-pb link: missing Hash")
    return PBLink(name, cid, tsize)


def decode_pbnode(block: bytes | memoryview) -> PBNode:
    """Decode a dag-pb block strictly (Links then at most one Data, no other fields)."""
    links: list[PBLink] = []
    data: bytes | None = None
    pos = 0
    size = len(block)
    while pos < size:
        key, pos = _read_varint(block, pos, "dag-pb node")
        field, wire = key >> 3, key & 7
        if wire != 2 or field not in (1, 2):
            raise InvalidBlock(f"dag-pb node: unexpected field {field} wire type {wire}")
        start, pos = _read_bytes(block, pos, "dag-pb node")
        if data is not None:
            raise InvalidBlock("dag-pb node: a field follows Data (Links must come first)")
        if field == 1:
            data = bytes(block[start:pos])
        else:
            links.append(_decode_pblink(block, start, pos))
    return PBNode(tuple(links), data)


def encode_unixfs(message: UnixFSData) -> bytes:
    """Encode a UnixFS Data message as kubo does (empty data and unset fields omitted)."""
    out = bytearray(b"\x08" + _varint(message.type))
    if message.data:
        out += b"\x12" + _varint(len(message.data)) + message.data
    if message.filesize is not None:
        out += b"\x18" + _varint(message.filesize)
    for size in message.blocksizes:
        out += b"\x20" + _varint(size)
    if message.hash_type is not None:
        out += b"\x28" + _varint(message.hash_type)
    if message.fanout is not None:
        out += b"\x30" + _varint(message.fanout)
    return bytes(out)


def decode_unixfs(data: bytes | memoryview) -> UnixFSData:
    """Decode a UnixFS Data message; mode, mtime and unknown fields are skipped."""
    fields: dict[int, int | bytes] = {}
    blocksizes: list[int] = []
    pos = 0
    size = len(data)
    while pos < size:
        key, pos = _read_varint(data, pos, "UnixFS")
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos, "UnixFS")
            if field == 4:
                blocksizes.append(value)
            else:
                fields[field] = value
        elif wire == 2:
            start, pos = _read_bytes(data, pos, "UnixFS")
            if field == 4:  # packed blocksizes, as a proto3 encoder would write them
                inner = start
                while inner < pos:
                    value, inner = _read_varint(data, inner, "UnixFS blocksizes")
                    blocksizes.append(value)
            else:
                fields[field] = bytes(data[start:pos])
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise InvalidBlock(f"UnixFS: field {field} has unsupported wire type {wire}")
        if pos > size:
            raise InvalidBlock("UnixFS: field runs past the end")
    kind = fields.get(1)
    if not isinstance(kind, int):
        raise InvalidBlock("UnixFS: Data has no Type")
    if kind not in DataType._value2member_map_:
        raise InvalidBlock(f"UnixFS: unknown Type {kind}")
    payload = fields.get(2, b"")
    if not isinstance(payload, bytes):
        raise InvalidBlock("UnixFS: Data field has the wrong wire type")
    ints = {}
    for number, label in ((3, "filesize"), (5, "hashType"), (6, "fanout")):
        value = fields.get(number)
        if value is not None and not isinstance(value, int):
            raise InvalidBlock(f"UnixFS: {label} has the wrong wire type")
        ints[number] = value
    return UnixFSData(DataType(kind), payload, ints[3], tuple(blocksizes), ints[5], ints[6])


# --- files ----------------------------------------------------------------------------

# A pending child of a file node: (cid, tsize, bytes of file content below it).
_Entry = tuple[CID, int, int]


class FileBuilder:
    """Encode one file as it streams in; keeps at most one chunk and the pending link lists."""

    def __init__(
        self,
        *,
        cid_version: int = 1,
        hash_code: int = SHA2_256,
        on_block: Callable[[Block, int | None], None] | None = None,
        on_leaf: Callable[[CID, int, int], None] | None = None,
    ) -> None:
        """`on_block(block, offset)` gets every block made (offset None for interior nodes);
        with `on_leaf(cid, offset, size)` too, leaves go there instead, without their bytes,
        so that a chunk given as a view of a reused buffer is never copied."""
        if cid_version not in (0, 1):
            raise ValueError(f"cid_version must be 0 or 1, got {cid_version}")
        if cid_version == 0 and hash_code != SHA2_256:
            raise ValueError("CIDv0 only supports sha2-256")
        hash_digest(hash_code, b"")  # fail now on an unsupported hash, not at the first chunk
        self._version = cid_version
        self._hash_code = hash_code
        self._on_block = on_block
        self._on_leaf = on_leaf
        self._wants_leaves = on_block is not None and on_leaf is None
        self._buffer = bytearray()
        self._offset = 0
        self._levels: list[list[_Entry]] = [[]]
        self._result: tuple[CID, int, int] | None = None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Append file content (a lone CHUNK_SIZE `bytes` object is used without a copy)."""
        if self._result is not None:
            raise ValueError("FileBuilder.update() after finish()")
        size = len(data)
        if not size:
            return
        if not self._buffer and size == CHUNK_SIZE and isinstance(data, bytes):
            self._leaf(data)
            return
        view = memoryview(data).cast("B")
        pos = 0
        if self._buffer:
            pos = min(CHUNK_SIZE - len(self._buffer), size)
            self._buffer += view[:pos]
            if len(self._buffer) < CHUNK_SIZE:
                return
            self._leaf(bytes(self._buffer) if self._wants_leaves else self._buffer)
            self._buffer.clear()
        while size - pos >= CHUNK_SIZE:
            self._leaf(view[pos : pos + CHUNK_SIZE])
            pos += CHUNK_SIZE
        if pos < size:
            self._buffer += view[pos:]

    def finish(self) -> tuple[CID, int, int]:
        """Flush and return (root CID, file size, Tsize of the root); idempotent."""
        if self._result is not None:
            return self._result
        if self._buffer or self._offset == 0:
            self._leaf(bytes(self._buffer))
            self._buffer.clear()
        levels = self._levels
        level = 0
        while True:
            top = max(i for i, entries in enumerate(levels) if entries)
            if level == top and len(levels[level]) == 1:
                break
            if levels[level]:
                entries, levels[level] = levels[level], []
                self._push(level + 1, self._node(entries))
            level += 1
        cid, tsize, _ = levels[top][0]
        self._result = (cid, self._offset, tsize)
        return self._result

    def _leaf(self, chunk: bytes | bytearray | memoryview) -> None:
        size = len(chunk)
        if self._version == 1:
            cid = CID(1, RAW, self._hash_code, hash_digest(self._hash_code, chunk))
            if self._on_leaf is not None:
                self._on_leaf(cid, self._offset, size)
            elif self._on_block is not None:
                data = chunk if isinstance(chunk, bytes) else bytes(chunk)
                self._on_block(Block(cid, data), self._offset)
            tsize = size
        else:
            # A CIDv0 leaf is dag-pb Data{Type: File, Data: chunk, filesize}; hashing the
            # framing around the chunk avoids building the block unless someone wants it.
            inner_head = b"\x08\x02" + (b"\x12" + _varint(size) if size else b"")
            inner_tail = b"\x18" + _varint(size)
            head = b"\x0a" + _varint(len(inner_head) + size + len(inner_tail)) + inner_head
            hasher = hashlib.sha256()
            hasher.update(head)
            hasher.update(chunk)
            hasher.update(inner_tail)
            cid = CID(0, DAG_PB, SHA2_256, hasher.digest())
            tsize = len(head) + size + len(inner_tail)
            if self._on_leaf is not None:
                self._on_leaf(cid, self._offset, size)
            elif self._on_block is not None:
                self._on_block(Block(cid, b"".join((head, chunk, inner_tail))), self._offset)
        self._offset += size
        self._push(0, (cid, tsize, size))

    def _push(self, level: int, entry: _Entry) -> None:
        while len(self._levels) <= level:
            self._levels.append([])
        entries = self._levels[level]
        entries.append(entry)
        if len(entries) == MAX_LINKS:
            self._levels[level] = []
            self._push(level + 1, self._node(entries))

    def _node(self, entries: list[_Entry]) -> _Entry:
        filesize = sum(entry[2] for entry in entries)
        data = encode_unixfs(
            UnixFSData(DataType.FILE, filesize=filesize, blocksizes=tuple(e[2] for e in entries))
        )
        links = tuple(PBLink("", cid, tsize) for cid, tsize, _ in entries)
        block = encode_pbnode(PBNode(links, data))
        cid = CID.compute(block, DAG_PB, version=self._version, hash_code=self._hash_code)
        if self._on_block is not None:
            self._on_block(Block(cid, block), None)
        return cid, len(block) + sum(entry[1] for entry in entries), filesize


def encode_file(
    data: bytes | memoryview, *, cid_version: int = 1, hash_code: int = SHA2_256
) -> tuple[CID, int, list[Block]]:
    """Encode a whole file; return (root CID, Tsize, blocks with children before parents)."""
    blocks: list[Block] = []
    builder = FileBuilder(
        cid_version=cid_version, hash_code=hash_code, on_block=lambda b, _o: blocks.append(b)
    )
    builder.update(data)
    cid, _, tsize = builder.finish()
    return cid, tsize, blocks


def file_cid(data: bytes | memoryview, *, cid_version: int = 1, hash_code: int = SHA2_256) -> CID:
    """Return the CID `ipfs add` gives `data` under these options."""
    builder = FileBuilder(cid_version=cid_version, hash_code=hash_code)
    builder.update(data)
    return builder.finish()[0]


# --- directories ----------------------------------------------------------------------


def _check_name(name: str) -> bytes:
    raw = _name_bytes(name)
    if not raw or name in (".", "..") or b"/" in raw or b"\0" in raw:
        raise ValueError(f"invalid directory entry name {name!r}")
    return raw


def directory_estimate(links: Iterable[Link]) -> int:
    """Kubo's size estimate for a directory: sum of len(name) + len(binary CID)."""
    return sum(len(_name_bytes(link.name)) + len(bytes(link.cid)) for link in links)


def encode_directory(
    links: Iterable[Link],
    *,
    cid_version: int = 1,
    hash_code: int = SHA2_256,
    shard_threshold: int = HAMT_THRESHOLD,
) -> tuple[CID, int, list[Block]]:
    """Encode a directory as kubo does; return (CID, Tsize, blocks with the root last).

    It becomes a HAMT when `directory_estimate` of its entries exceeds `shard_threshold`
    (kubo's Import.UnixFSHAMTDirectorySizeThreshold).
    """
    if cid_version == 0 and hash_code != SHA2_256:
        raise ValueError("CIDv0 only supports sha2-256")
    entries: dict[bytes, Link] = {}
    for link in links:
        raw = _check_name(link.name)
        if raw in entries:
            raise ValueError(f"duplicate directory entry name {link.name!r}")
        entries[raw] = link
    estimate = sum(len(raw) + len(bytes(link.cid)) for raw, link in entries.items())
    blocks: list[Block] = []
    if estimate > shard_threshold:
        items = [(_hamt_hash(raw), raw, link) for raw, link in entries.items()]
        cid, tsize = _encode_shard(items, 0, cid_version, hash_code, blocks)
        return cid, tsize, blocks
    pblinks = tuple(
        PBLink(entries[raw].name, entries[raw].cid, entries[raw].tsize) for raw in sorted(entries)
    )
    block = encode_pbnode(PBNode(pblinks, _DIRECTORY_DATA))
    cid = CID.compute(block, DAG_PB, version=cid_version, hash_code=hash_code)
    blocks.append(Block(cid, block))
    return cid, len(block) + sum(link.tsize for link in entries.values()), blocks


def _hamt_hash(key: bytes, round_: int = 0) -> bytes:
    # murmur3-x64-128's first 64-bit word (h1), big-endian, as go-unixfs hashes names; when
    # its 64 bits run out the JS importer rehashes key + round byte, so do the same.
    digest = mmh3.hash_bytes(key if round_ == 0 else key + bytes((round_,)))
    return digest[7::-1]


def _hamt_index(key: bytes, first: bytes, depth: int) -> int:
    if depth < 8:
        return first[depth]
    return _hamt_hash(key, depth // 8)[depth % 8]


def _encode_shard(
    items: list[tuple[bytes, bytes, Link]],
    depth: int,
    cid_version: int,
    hash_code: int,
    blocks: list[Block],
) -> tuple[CID, int]:
    if depth >= _MAX_DEPTH:
        raise ValueError("HAMT too deep: names collide on every hash bit")
    slots: dict[int, list[tuple[bytes, bytes, Link]]] = {}
    for item in items:
        slots.setdefault(_hamt_index(item[1], item[0], depth), []).append(item)
    children: dict[int, tuple[str, CID, int]] = {}
    for index, group in slots.items():
        if len(group) == 1:
            link = group[0][2]
            children[index] = (link.name, link.cid, link.tsize)
        else:
            cid, tsize = _encode_shard(group, depth + 1, cid_version, hash_code, blocks)
            children[index] = ("", cid, tsize)
    return _shard_node(children, cid_version, hash_code, blocks)


def _shard_node(
    children: Mapping[int, tuple[str, CID, int]], cid_version: int, hash_code: int,
    blocks: list[Block],
) -> tuple[CID, int]:
    # One HAMT node from its slots: (entry name, CID, Tsize) of a leaf, ("", …) of a shard.
    links = []
    children_tsize = 0
    for index in sorted(children):
        name, cid, tsize = children[index]
        links.append(PBLink(f"{index:02X}{name}", cid, tsize))
        children_tsize += tsize
    bitfield = sum(1 << index for index in children)
    data = encode_unixfs(
        UnixFSData(
            DataType.HAMT_SHARD,
            data=bitfield.to_bytes((bitfield.bit_length() + 7) // 8, "big"),
            hash_type=HAMT_HASH_MURMUR3,
            fanout=HAMT_FANOUT,
        )
    )
    block = encode_pbnode(PBNode(tuple(links), data))
    cid = CID.compute(block, DAG_PB, version=cid_version, hash_code=hash_code)
    blocks.append(Block(cid, block))
    return cid, len(block) + children_tsize


# --- updating a directory -------------------------------------------------------------

# The fewest bytes an entry adds to a directory's estimate: a one-byte name and the shortest
# CID (version, codec, hash code and digest length, one byte each, an empty digest).
_MIN_ENTRY_ESTIMATE = 5


@dataclass(frozen=True)
class _Subshard:
    """A HAMT child node not read (it holds at least two entries)."""

    cid: CID
    tsize: int


class _Shard:
    """A HAMT node being updated: slot → a leaf's Link, an unread child, or a read child."""

    def __init__(self, slots: dict[int, Link | _Subshard | _Shard], cid: CID | None,
                 tsize: int) -> None:
        self.slots = slots
        self.cid = cid  # as read; None once changed (or for a new node)
        self.tsize = tsize


def update_directory(
    root: CID,
    changes: Mapping[str, Link | None],
    get_block: GetBlock,
    *,
    cid_version: int = 1,
    hash_code: int = SHA2_256,
    shard_threshold: int = HAMT_THRESHOLD,
) -> tuple[CID, int, list[Block]]:
    """The directory `root` with `changes` applied, encoded as `encode_directory` would encode
    the whole result; returns (CID, Tsize, the blocks not in `root`'s DAG, root last).

    `changes` maps a name to its new link (added or replaced) or to None (removed; a name not
    there is ignored). In a HAMT only the shards on the path of a change are read and
    rewritten, and only as much of the rest as proves the result still needs sharding.
    """
    node, meta = _load_directory(root, get_block)
    if (meta.type != DataType.HAMT_SHARD or meta.fanout != HAMT_FANOUT
            or cid_version != root.version or hash_code != root.hash_code):
        entries = {link.name: link for link in list_directory(root, get_block)}
        return _encode_changed(entries, changes, cid_version, hash_code, shard_threshold)
    top = _read_shard(root, node, 0, 0, check=True)
    top.cid = None  # the root is written again: its Tsize at least may change
    for name, link in sorted(changes.items()):
        key = _check_name(name)
        first = _hamt_hash(key)
        if link is None:
            _remove(top, name, key, first, 0, get_block)
        else:
            _insert(top, Link(name, link.cid, link.tsize), key, first, 0, get_block)
    if not _exceeds(top, shard_threshold, get_block):
        entries = {link.name: link for link in _leaves(top, 0, get_block)}
        return encode_directory(entries.values(), cid_version=cid_version, hash_code=hash_code,
                                shard_threshold=shard_threshold)
    blocks: list[Block] = []
    cid, tsize = _write_shard(top, cid_version, hash_code, blocks)
    return cid, tsize, blocks


def _encode_changed(
    entries: dict[str, Link], changes: Mapping[str, Link | None], cid_version: int,
    hash_code: int, shard_threshold: int,
) -> tuple[CID, int, list[Block]]:
    for name, link in changes.items():
        if link is None:
            entries.pop(name, None)
        else:
            entries[name] = Link(name, link.cid, link.tsize)
    return encode_directory(entries.values(), cid_version=cid_version, hash_code=hash_code,
                            shard_threshold=shard_threshold)


def _read_shard(
    cid: CID, node: PBNode, depth: int, tsize: int, *, check: bool = False
) -> _Shard:
    # `check`: this node will be changed, so it must be as `encode_directory` writes it.
    if depth >= _MAX_DEPTH:
        raise InvalidBlock(f"{cid}: HAMT deeper than {_MAX_DEPTH} levels")
    slots: dict[int, Link | _Subshard | _Shard] = {}
    last = -1
    for link in node.links:
        index, rest = _split_shard_name(cid, link.name, 2)
        if check and index <= last:
            raise InvalidBlock(f"{cid}: HAMT links are not one per slot, in slot order")
        last = index
        if rest:
            if check:
                key = _name_bytes(rest)
                if _hamt_index(key, _hamt_hash(key), depth) != index:
                    raise InvalidBlock(f"{cid}: HAMT entry {rest!r} is not in its hash's slot")
            slots[index] = Link(rest, link.cid, link.tsize or 0)
        else:
            slots[index] = _Subshard(link.cid, link.tsize or 0)
    if check and depth and len(slots) == 1 and isinstance(next(iter(slots.values())), Link):
        raise InvalidBlock(f"{cid}: a HAMT shard holds a single entry")
    return _Shard(slots, cid, tsize)


def _child(shard: _Shard, index: int, depth: int, get_block: GetBlock) -> _Shard:
    child = shard.slots[index]
    if isinstance(child, _Subshard):
        child = _read_subshard(child, depth + 1, get_block, check=True)
        shard.slots[index] = child
    assert isinstance(child, _Shard)
    return child


def _read_subshard(
    sub: _Subshard, depth: int, get_block: GetBlock, *, check: bool = False
) -> _Shard:
    node, meta = _load(sub.cid, get_block)
    if meta.type != DataType.HAMT_SHARD or meta.fanout != HAMT_FANOUT:
        raise InvalidBlock(f"{sub.cid}: a HAMT link points at a node of another kind")
    return _read_shard(sub.cid, node, depth, sub.tsize, check=check)


def _insert(
    shard: _Shard, link: Link, key: bytes, first: bytes, depth: int, get_block: GetBlock
) -> None:
    if depth >= _MAX_DEPTH:
        raise ValueError("HAMT too deep: names collide on every hash bit")
    index = _hamt_index(key, first, depth)
    here = shard.slots.get(index)
    shard.cid = None
    if here is None or (isinstance(here, Link) and here.name == link.name):
        shard.slots[index] = link
    elif isinstance(here, Link):
        # Two entries in one slot: both move one level down, into a new shard.
        child = _Shard({}, None, 0)
        other = _name_bytes(here.name)
        _insert(child, here, other, _hamt_hash(other), depth + 1, get_block)
        _insert(child, link, key, first, depth + 1, get_block)
        shard.slots[index] = child
    else:
        _insert(_child(shard, index, depth, get_block), link, key, first, depth + 1, get_block)


def _remove(
    shard: _Shard, name: str, key: bytes, first: bytes, depth: int, get_block: GetBlock
) -> bool:
    index = _hamt_index(key, first, depth)
    here = shard.slots.get(index)
    if here is None or (isinstance(here, Link) and here.name != name):
        return False
    if isinstance(here, Link):
        del shard.slots[index]
        shard.cid = None
        return True
    child = _child(shard, index, depth, get_block)
    if not _remove(child, name, key, first, depth + 1, get_block):
        return False
    shard.cid = None
    if len(child.slots) == 1:
        (only,) = child.slots.values()
        if isinstance(only, Link):  # a shard of one entry is that entry, one level up
            shard.slots[index] = only
    return True


def _exceeds(top: _Shard, threshold: int, get_block: GetBlock) -> bool:
    """Whether the HAMT's estimate exceeds `threshold`, reading as few shards as prove it."""
    unread: list[tuple[_Subshard, int]] = []
    bound = _estimate(top, 0, unread)
    unread.sort(key=lambda item: item[1])  # shallow shards first: they hold the most
    queue: list[CID | bytes] = [sub.cid for sub, _ in unread]
    position = 0
    while bound <= threshold and position < len(queue):
        # Each shard read replaces its lower bound by what it holds; its own children are
        # deeper, so they go to the end.
        cid = queue[position]
        position += 1
        if not isinstance(cid, CID):
            cid = CID.from_bytes(cid)
        leaves, children = _scan_shard(cid, get_block(cid))
        bound += leaves + 2 * _MIN_ENTRY_ESTIMATE * (len(children) - 1)
        queue += children
    return bound > threshold


def _scan_shard(cid: CID, block: bytes) -> tuple[int, list[CID | bytes]]:
    """The estimate of a HAMT node's own entries, and its child shards (binary CIDs), without
    building every link (a block not laid out as dag-pb encoders write it is decoded instead)."""
    leaves = 0
    children: list[CID | bytes] = []
    pos, end = 0, len(block)
    try:
        while pos < end and block[pos] == 0x12:  # a link
            length, pos = varint_decode(block, pos + 1)
            stop = pos + length
            if block[pos] != 0x0A:
                raise ValueError("a link without its Hash first")
            cid_length, pos = varint_decode(block, pos + 1)
            cid_start, pos = pos, pos + cid_length
            name_length = 0
            if pos < stop and block[pos] == 0x12:
                name_length, pos = varint_decode(block, pos + 1)
            if name_length > 2:
                leaves += name_length - 2 + cid_length
            elif name_length == 2:
                children.append(block[cid_start : cid_start + cid_length])
            else:
                raise ValueError("a HAMT link without its slot")
            pos = stop
        if pos > end:
            raise ValueError("a link runs past the end")
    except (ValueError, IndexError):
        node = decode_pbnode(block)
        leaves, children = 0, []
        for link in node.links:
            _, rest = _split_shard_name(cid, link.name, 2)
            if rest:
                leaves += len(_name_bytes(rest)) + len(bytes(link.cid))
            else:
                children.append(link.cid)
    return leaves, children


def _estimate(shard: _Shard, depth: int, unread: list[tuple[_Subshard, int]]) -> int:
    # A lower bound of the estimate of the entries under `shard`: exact but for `unread`.
    bound = 0
    for value in shard.slots.values():
        if isinstance(value, Link):
            bound += len(_name_bytes(value.name)) + len(bytes(value.cid))
        elif isinstance(value, _Subshard):
            bound += 2 * _MIN_ENTRY_ESTIMATE  # a shard holds two entries or more
            unread.append((value, depth + 1))
        else:
            bound += _estimate(value, depth + 1, unread)
    return bound


def _leaves(shard: _Shard, depth: int, get_block: GetBlock) -> Iterator[Link]:
    for value in shard.slots.values():
        if isinstance(value, Link):
            yield value
        else:
            if isinstance(value, _Subshard):
                value = _read_subshard(value, depth + 1, get_block)
            yield from _leaves(value, depth + 1, get_block)


def _write_shard(
    shard: _Shard, cid_version: int, hash_code: int, blocks: list[Block]
) -> tuple[CID, int]:
    if shard.cid is not None:
        return shard.cid, shard.tsize
    children: dict[int, tuple[str, CID, int]] = {}
    for index, value in shard.slots.items():
        if isinstance(value, Link):
            children[index] = (value.name, value.cid, value.tsize)
        elif isinstance(value, _Subshard):
            children[index] = ("", value.cid, value.tsize)
        else:
            children[index] = ("", *_write_shard(value, cid_version, hash_code, blocks))
    return _shard_node(children, cid_version, hash_code, blocks)


# --- reading --------------------------------------------------------------------------

GetBlock = Callable[[CID], bytes]


def _load(cid: CID, get_block: GetBlock) -> tuple[PBNode, UnixFSData]:
    if cid.codec != DAG_PB:
        raise InvalidBlock(f"{cid}: codec {cid.codec_name} is not dag-pb")
    node = decode_pbnode(get_block(cid))
    if node.data is None:
        raise InvalidBlock(f"{cid}: dag-pb node has no UnixFS Data")
    try:
        return node, decode_unixfs(node.data)
    except InvalidBlock as exc:
        raise InvalidBlock(f"{cid}: {exc}") from None


def _load_directory(cid: CID, get_block: GetBlock) -> tuple[PBNode, UnixFSData]:
    if cid.codec == RAW:
        raise NotADirectory(f"{cid} is a file, not a directory")
    node, meta = _load(cid, get_block)
    if meta.type not in (DataType.DIRECTORY, DataType.HAMT_SHARD):
        raise NotADirectory(f"{cid} is a {meta.type.name.lower()} node, not a directory")
    if meta.type == DataType.HAMT_SHARD:
        _shard_geometry(cid, meta)
    return node, meta


def _shard_geometry(cid: CID, meta: UnixFSData) -> tuple[int, int]:
    # Returns (bits per level, width of the hex prefix) of a HAMT node.
    if meta.hash_type != HAMT_HASH_MURMUR3:
        raise InvalidBlock(f"{cid}: HAMT hashType {meta.hash_type} is not murmur3-x64-64 (0x22)")
    fanout = meta.fanout or 0
    if fanout < 2 or fanout & (fanout - 1) or fanout > 1024:
        raise InvalidBlock(f"{cid}: HAMT fanout {fanout} is not a power of two up to 1024")
    return fanout.bit_length() - 1, len(f"{fanout - 1:X}")


def _split_shard_name(cid: CID, name: str | None, width: int) -> tuple[int, str]:
    name = name or ""
    prefix = name[:width]
    if len(prefix) != width or not set(prefix) <= _UPPER_HEX:
        raise InvalidBlock(
            f"{cid}: HAMT link name {name!r} lacks a {width}-digit uppercase hex prefix"
        )
    return int(prefix, 16), name[width:]


def list_directory(cid: CID, get_block: GetBlock) -> list[Link]:
    """List a directory's entries (a HAMT flattened), sorted by name bytes."""
    node, meta = _load_directory(cid, get_block)
    if meta.type == DataType.DIRECTORY:
        entries = [Link(link.name or "", link.cid, link.tsize or 0) for link in node.links]
    else:
        entries = []
        _walk_shard(cid, node, meta, get_block, entries, 0)
    entries.sort(key=lambda link: _name_bytes(link.name))
    return entries


def _walk_shard(
    cid: CID, node: PBNode, meta: UnixFSData, get_block: GetBlock, out: list[Link], depth: int
) -> None:
    if depth >= _MAX_DEPTH:
        raise InvalidBlock(f"{cid}: HAMT deeper than {_MAX_DEPTH} levels")
    _, width = _shard_geometry(cid, meta)
    for link in node.links:
        _, rest = _split_shard_name(cid, link.name, width)
        if rest:
            out.append(Link(rest, link.cid, link.tsize or 0))
            continue
        child, child_meta = _load(link.cid, get_block)
        if child_meta.type != DataType.HAMT_SHARD:
            raise InvalidBlock(f"{cid}: HAMT link {link.name!r} points at a non-shard node")
        _walk_shard(link.cid, child, child_meta, get_block, out, depth + 1)


def lookup(cid: CID, name: str, get_block: GetBlock) -> Link | None:
    """Find entry `name` in a directory, following a HAMT's hash path; None if absent."""
    node, meta = _load_directory(cid, get_block)
    if meta.type == DataType.DIRECTORY:
        for link in node.links:
            if link.name == name:
                return Link(name, link.cid, link.tsize or 0)
        return None
    key = _name_bytes(name)
    first = _hamt_hash(key)
    depth = 0
    while True:
        bits, width = _shard_geometry(cid, meta)
        want = _hamt_bits(key, first, depth, bits)
        for link in node.links:
            index, rest = _split_shard_name(cid, link.name, width)
            if index != want:
                continue
            if rest:
                return Link(name, link.cid, link.tsize or 0) if rest == name else None
            depth += 1
            if depth >= _MAX_DEPTH:
                raise InvalidBlock(f"{cid}: HAMT deeper than {_MAX_DEPTH} levels")
            cid = link.cid
            node, meta = _load(cid, get_block)
            if meta.type != DataType.HAMT_SHARD:
                raise InvalidBlock(f"{cid}: HAMT link points at a non-shard node")
            break
        else:
            return None


def _hamt_bits(key: bytes, first: bytes, depth: int, bits: int) -> int:
    # The index at `depth` is the next `bits` bits of the hash stream, most significant first.
    if bits == 8:
        return _hamt_index(key, first, depth)
    start, stop = depth * bits, (depth + 1) * bits
    stream = b"".join(
        first if round_ == 0 else _hamt_hash(key, round_)
        for round_ in range(start // 64, (stop - 1) // 64 + 1)
    )
    value = int.from_bytes(stream, "big")
    offset = start - (start // 64) * 64
    return (value >> (len(stream) * 8 - offset - bits)) & ((1 << bits) - 1)


def node_kind(cid: CID, get_block: GetBlock) -> str:
    """Say what a CID names: "file", "directory", "hamt" or "raw" (a raw-leaf file)."""
    if cid.codec == RAW:
        return "raw"
    _, meta = _load(cid, get_block)
    kind = {
        DataType.FILE: "file",
        DataType.RAW: "file",
        DataType.DIRECTORY: "directory",
        DataType.HAMT_SHARD: "hamt",
    }.get(DataType(meta.type))
    if kind is None:
        raise InvalidBlock(f"{cid}: unsupported UnixFS type {DataType(meta.type).name}")
    return kind


def _load_file(cid: CID, get_block: GetBlock) -> tuple[PBNode, UnixFSData]:
    node, meta = _load(cid, get_block)
    if meta.type not in (DataType.FILE, DataType.RAW):
        raise NotAFile(f"{cid} is a {DataType(meta.type).name.lower()} node, not a file")
    if len(meta.blocksizes) != len(node.links):
        raise InvalidBlock(f"{cid}: {len(node.links)} links but {len(meta.blocksizes)} blocksizes")
    return node, meta


def _content_size(cid: CID, meta: UnixFSData) -> int:
    size = len(meta.data) + sum(meta.blocksizes)
    if meta.filesize is not None and meta.filesize != size:
        raise InvalidBlock(f"{cid}: filesize {meta.filesize} != data plus blocksizes {size}")
    return size


def file_size(cid: CID, get_block: GetBlock) -> int:
    """Return the size in bytes of the file `cid` names (reads only its root block)."""
    if cid.codec == RAW:
        return len(get_block(cid))
    _, meta = _load_file(cid, get_block)
    return _content_size(cid, meta)


def iter_file(
    cid: CID, get_block: GetBlock, start: int = 0, end: int | None = None
) -> Iterator[bytes]:
    """Yield the bytes [start, end) of a file, fetching only the blocks that overlap it."""
    if start < 0 or (end is not None and end < 0):
        raise ValueError("byte range must not be negative")
    if end is not None and end <= start:
        return
    yield from _iter_range(cid, get_block, start, end, None, 0)


def _iter_range(
    cid: CID, get_block: GetBlock, start: int, end: int | None, expected: int | None, depth: int
) -> Iterator[bytes]:
    if depth >= _MAX_DEPTH:
        raise InvalidBlock(f"{cid}: file DAG deeper than {_MAX_DEPTH} levels")
    if cid.codec == RAW:
        block = get_block(cid)
        if expected is not None and len(block) != expected:
            raise InvalidBlock(f"{cid}: raw leaf has {len(block)} bytes, parent says {expected}")
        if start == 0 and (end is None or end >= len(block)):
            if block:
                yield bytes(block)
        elif start < len(block):
            yield bytes(block[start:end])
        return
    node, meta = _load_file(cid, get_block)
    size = _content_size(cid, meta)
    if expected is not None and size != expected:
        raise InvalidBlock(f"{cid}: file node holds {size} bytes, parent says {expected}")
    if end is None or end > size:
        end = size
    data = meta.data
    if data and start < len(data):
        yield data[start:end]
    position = len(data)
    for link, child_size in zip(node.links, meta.blocksizes, strict=True):
        child_end = position + child_size
        if position >= end:
            break
        if child_end > start and child_size:
            yield from _iter_range(
                link.cid,
                get_block,
                max(start - position, 0),
                min(end, child_end) - position,
                child_size,
                depth + 1,
            )
        position = child_end
