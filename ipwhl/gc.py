"""GC roots, reachability and garbage collection of the store, after Nix's store.

What a root reaches is its whole DAG (blocks, the layouts of its files and the objects those
lie in) plus the derivation records that built it (`roots/<name>/<seq>.keys`) and whatever those
records name. `collect_garbage` deletes everything else, holding the store lock exclusively:
builds hold it shared from their first record to their root, so nothing a running build made or
is about to reuse can go.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack

from .cid import CID, DAG_PB, IDENTITY, InvalidCID, varint_decode
from .errors import NotFound, StoreCorrupt, StoreError
from .store import STORE_KINDS, Store
from .unixfs import InvalidBlock

__all__ = [
    "GcReport",
    "Marks",
    "RootInfo",
    "collect_garbage",
    "list_roots",
    "mark_roots",
    "parse_bytes",
    "parse_duration",
    "pin",
    "prune_roots",
    "unpin",
]

_HEX64 = re.compile(r"[0-9a-f]{64}")
# A tmp/ file whose writer is alive is left alone unless it is this old (the pid was reused).
_ABANDONED_AFTER = 3600.0
# Deleted first to last: nothing kept ever names something deleted before it, and --max-freed
# reaches the big files (objects) first.
_SWEEP_ORDER = ("tmp", "objects", "sources", "blocks", "layouts", "records", "keys")


@dataclass(frozen=True)
class Inventory:
    """The names of the files in each folder of the store, listed once."""

    names: dict[str, frozenset[str]]

    @classmethod
    def of(cls, store: Store) -> Inventory:
        return cls({kind: frozenset(store.names(kind)) for kind in STORE_KINDS})


@dataclass
class Marks:
    """What the roots reach: live file names by kind, and what a walk could not follow.

    With an inventory (`present`), what is in the store is looked up in it instead of on disk:
    a gc lists every folder anyway, and holds the lock, so the listing stays true.
    """

    objects: set[str] = field(default_factory=set)
    layouts: set[str] = field(default_factory=set)
    blocks: set[str] = field(default_factory=set)
    records: set[str] = field(default_factory=set)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (root, block or object)
    # What the walk could not follow: (kind, name, why), kind "layout", "block" or "root".
    unreadable: list[tuple[str, str, str]] = field(default_factory=list)
    bytes_read: int = 0
    files_read: int = 0
    present: Inventory | None = None
    _seen: set[bytes] = field(default_factory=set, repr=False)  # binary CIDs walked

    def has(self, store: Store, kind: str, name: str) -> bool:
        if self.present is not None:
            return name in self.present.names[kind]
        return store.entry_path(kind, name).exists()

    def size(self, store: Store) -> int:
        """Bytes on disk of everything marked."""
        total = 0
        for kind, names in (("objects", self.objects), ("layouts", self.layouts),
                            ("blocks", self.blocks), ("records", self.records)):
            for name in names:
                with contextlib.suppress(FileNotFoundError):
                    total += store.entry_path(kind, name).stat().st_size
        return total


def _cid_text(raw: bytes) -> str:
    """A binary CID as the store names its files (base32 for CIDv1), without a CID object."""
    if raw[:1] == b"\x01":
        return "b" + base64.b32encode(raw).decode("ascii").lower().rstrip("=")
    return str(CID.from_bytes(raw))


def _codec(raw: bytes) -> int | None:
    """A binary CID's codec; None for an identity CID, whose bytes are inline."""
    if raw[:1] != b"\x01":
        return DAG_PB  # CIDv0
    codec, pos = varint_decode(raw, 1)
    hash_code, _ = varint_decode(raw, pos)
    return None if hash_code == IDENTITY else codec


def _link_hashes(block: bytes) -> list[bytes]:
    """The Hash of every link of a dag-pb block (PBNode.Links = 2, PBLink.Hash = 1).

    Only what reachability needs, several times faster than decoding the node strictly (gc
    reads every directory of every root); ValueError if the block is cut short.
    """
    hashes = []
    pos, end = 0, len(block)
    while pos < end:
        key, pos = varint_decode(block, pos)
        if key & 7 != 2:
            raise ValueError(f"field {key >> 3} has wire type {key & 7}, expected 2")
        length, pos = varint_decode(block, pos)
        stop = pos + length
        if stop > end:
            raise ValueError("a field runs past the end of the block")
        inner = pos
        while key == 0x12 and inner < stop:  # a link: find its Hash
            field, inner = varint_decode(block, inner)
            if field & 7 == 0:
                _, inner = varint_decode(block, inner)
                continue
            size, inner = varint_decode(block, inner)
            if field == 0x0A:
                hashes.append(block[inner : inner + size])
            inner += size
        pos = stop
    return hashes


def mark_dag(store: Store, root: CID, marks: Marks, origin: str | None) -> None:
    """Mark every block, layout and object of the DAG under `root`.

    A file with a layout is its object: its raw leaves are not looked up one by one. Absent
    nodes are listed in `marks.missing` under `origin` (None: do not list them, as for the
    outputs of records, which a build re-realises when they are gone).
    """
    stack: list[tuple[bytes, frozenset[bytes]]] = [(bytes(root), frozenset())]
    while stack:
        raw, in_object = stack.pop()
        if raw in marks._seen:
            continue
        marks._seen.add(raw)
        codec = _codec(raw)
        if codec is None or raw in in_object:
            continue  # inline bytes, or a leaf that is a slice of an object already marked
        name = _cid_text(raw)
        if marks.has(store, "layouts", name):
            try:
                layout_bytes = store.read_entry("layouts", name)
                layout = msgpack.unpackb(layout_bytes)
                object_sha256 = layout["object"]
                in_object = frozenset(bytes(leaf[0]) for leaf in layout["leaves"])
            except (ValueError, KeyError, TypeError, IndexError, msgpack.UnpackException) as exc:
                marks.unreadable.append(("layout", name, f"unreadable ({exc})"))
                continue
            marks.bytes_read += len(layout_bytes)
            marks.files_read += 1
            marks.layouts.add(name)
            marks.objects.add(object_sha256)
            if origin is not None and not marks.has(store, "objects", object_sha256):
                marks.missing.append((origin, f"object {object_sha256} (file {name})"))
        if codec != DAG_PB:
            # A leaf (a page, a METADATA file): it only has to be there, not to be read.
            if marks.has(store, "blocks", name):
                marks.blocks.add(name)
            elif raw not in in_object and origin is not None:
                marks.missing.append((origin, f"block {name}"))
            continue
        try:
            data = store.read_entry("blocks", name)
        except FileNotFoundError:
            if origin is not None:
                marks.missing.append((origin, f"block {name}"))
            continue
        marks.blocks.add(name)
        marks.bytes_read += len(data)
        marks.files_read += 1
        try:
            links = _link_hashes(data)
        except ValueError as exc:
            marks.unreadable.append(("block", name, f"not valid dag-pb ({exc})"))
            continue
        stack.extend((link, in_object) for link in links)


def _references(value: Any) -> Iterator[str]:
    """Every string in a record's output (CIDs and sha256s among them)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _references(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _references(item)


def mark_record(store: Store, key: str, marks: Marks) -> None:
    """Mark a derivation record and the objects and DAGs its output names."""
    if key in marks.records:
        return
    try:
        raw = store.read_entry("records", key)
    except FileNotFoundError:
        return  # a build re-realises a record that is gone
    marks.records.add(key)
    marks.bytes_read += len(raw)
    marks.files_read += 1
    try:
        output = msgpack.unpackb(raw)
    except (ValueError, msgpack.UnpackException):
        return  # a corrupt record is rerun, never trusted; `store verify` reports it
    for text in _references(output):
        if _HEX64.fullmatch(text):
            marks.objects.add(text)
        elif len(text) >= 46 and text.startswith(("b", "Qm")) and " " not in text:
            with contextlib.suppress(ValueError):  # InvalidCID, or not a CID at all
                mark_dag(store, CID.parse(text), marks, origin=None)


def _root_label(name: str, sequence: int) -> str:
    return f"{name}#{sequence}"


def _read_roots(store: Store, strict: bool = True) -> list[tuple[str, int, CID]]:
    try:
        return store.roots(skip_unreadable=not strict)
    except (InvalidCID, UnicodeDecodeError) as exc:
        raise StoreCorrupt(
            f"a root file under {store.root / 'roots'} is unreadable ({exc}); "
            "run `ipwhl store verify --repair` (it removes it) or write the CID back"
        ) from None


def mark_roots(
    store: Store, *, records_since: float | None = None, strict: bool = True
) -> Marks:
    """Everything the roots reach; with `records_since` (a time), records written since then
    count as reached too, with what they name. StoreCorrupt if a root file is unreadable
    (unless not `strict`: then it is skipped)."""
    marks = Marks(present=Inventory.of(store))
    roots = _read_roots(store, strict)
    for name, sequence, cid in roots:
        mark_dag(store, cid, marks, origin=_root_label(name, sequence))
    for name, sequence, _cid in roots:
        try:
            keys = store.root_record_keys(name, sequence)
        except (ValueError, msgpack.UnpackException):
            marks.unreadable.append(("root", f"{name}/{sequence}.keys", "unreadable"))
            continue
        for key in keys:
            mark_record(store, key, marks)
    if records_since is not None:
        for key in marks.present.names["records"] if marks.present else ():
            with contextlib.suppress(FileNotFoundError):
                if store.record_path(key).stat().st_mtime >= records_since:
                    mark_record(store, key, marks)
    return marks


# -- gc ----------------------------------------------------------------------------------------


@dataclass
class GcReport:
    """What a gc deleted (or, dry, would delete): files and bytes by kind."""

    dry_run: bool
    files: Counter[str] = field(default_factory=Counter)
    freed: Counter[str] = field(default_factory=Counter)
    kept: int = 0  # files reachable from the roots (or young unrooted records)
    bytes_read: int = 0  # what the marking read: the cost of a gc beyond listing the store
    files_read: int = 0
    stopped_early: bool = False

    @property
    def total_freed(self) -> int:
        return sum(self.freed.values())

    def __str__(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        parts = [
            f"{self.files[kind]} {_KIND_NAMES[kind]} ({format_bytes(self.freed[kind])})"
            for kind in _SWEEP_ORDER
            if self.files[kind]
        ]
        what = ", ".join(parts) if parts else "nothing"
        freed = "would free" if self.dry_run else "freed"
        tail = " (stopped at --max-freed)" if self.stopped_early else ""
        return f"gc: {verb} {what}; {freed} {format_bytes(self.total_freed)}{tail}"


_KIND_NAMES = {
    "tmp": "abandoned temporary files",
    "objects": "objects",
    "sources": "source lists",
    "blocks": "blocks",
    "layouts": "layouts",
    "records": "records",
    "keys": "orphan root key lists",
}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def abandoned_temporaries(store: Store, now: float) -> Iterator[Path]:
    """Files in tmp/ whose writer is gone (its pid is dead, or the file is an hour old)."""
    with contextlib.suppress(FileNotFoundError), os.scandir(store.root / "tmp") as entries:
        for entry in entries:
            if not entry.is_file(follow_symlinks=False):
                continue
            pid_text = entry.name.partition("-")[0]
            with contextlib.suppress(FileNotFoundError):
                old = now - entry.stat().st_mtime > _ABANDONED_AFTER
                if old or not (pid_text.isdigit() and _pid_alive(int(pid_text))):
                    yield Path(entry.path)


def _garbage(store: Store, marks: Marks, now: float) -> Iterator[tuple[str, Path]]:
    """(kind, path) of every file no root reaches, in sweep order."""
    yield from (("tmp", path) for path in abandoned_temporaries(store, now))
    present = marks.present or Inventory.of(store)
    for kind, live in (("objects", marks.objects), ("sources", marks.objects),
                       ("blocks", marks.blocks), ("layouts", marks.layouts),
                       ("records", marks.records)):
        for name in sorted(present.names[kind] - live):
            # Files of other names are not ours to delete (keys are sha256s and blake3s).
            if kind in ("blocks", "layouts") or _HEX64.fullmatch(name):
                yield kind, store.entry_path(kind, name)
    for path in (store.root / "roots").glob("*/*.keys"):
        if not path.with_name(path.name.removesuffix(".keys")).exists():
            yield "keys", path


def collect_garbage(
    store: Store,
    *,
    dry_run: bool = False,
    max_freed: int | None = None,
    older_than: float | None = None,
    on_wait: Callable[[], None] | None = None,
    now: float | None = None,
) -> GcReport:
    """Delete every object, block, layout and record no root reaches; return what went.

    `older_than` (seconds) keeps unrooted records younger than that, with what they name;
    `max_freed` stops once that many bytes are freed. Waits for running builds to finish
    (`on_wait` is told when it has to). StoreCorrupt if a rooted DAG cannot be followed.
    """
    now = time.time() if now is None else now
    report = GcReport(dry_run=dry_run)
    with store.lock(exclusive=True, on_wait=on_wait):
        since = None if older_than is None else now - older_than
        marks = mark_roots(store, records_since=since)
        if marks.unreadable:
            shown = "; ".join(f"{kind} {name}: {why}" for kind, name, why in marks.unreadable[:3])
            raise StoreCorrupt(
                f"gc stopped before deleting anything: {shown}; a DAG that cannot be read "
                "cannot be kept safely; run `ipwhl store verify --repair` first"
            )
        report.bytes_read, report.files_read = marks.bytes_read, marks.files_read
        report.kept = (
            len(marks.objects) + len(marks.blocks) + len(marks.layouts) + len(marks.records)
        )
        for kind, path in _garbage(store, marks, now):
            if max_freed is not None and report.total_freed >= max_freed:
                report.stopped_early = True
                break
            if dry_run:
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    continue
            else:
                size = store.remove(path)
            report.files[kind] += 1
            report.freed[kind] += size
    return report


# -- roots -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RootInfo:
    """A GC root: a release of a line, when it was rooted, and what it keeps alive."""

    name: str
    sequence: int
    cid: CID
    date: datetime
    closure_bytes: int
    missing: int  # blocks or objects of its DAG not in the store
    built: bool  # registered by a build (with its records), not pinned by hand

    @property
    def label(self) -> str:
        return _root_label(self.name, self.sequence)


def list_roots(store: Store) -> list[RootInfo]:
    """Every root with its date and closure size (shared files count in each closure)."""
    found = []
    for name, sequence, cid in _read_roots(store):
        marks = Marks()
        mark_dag(store, cid, marks, origin=_root_label(name, sequence))
        keys = []
        with contextlib.suppress(ValueError, msgpack.UnpackException):
            keys = store.root_record_keys(name, sequence)
        for key in keys:
            mark_record(store, key, marks)
        try:
            stamp = store.root_path(name, sequence).stat().st_mtime
        except FileNotFoundError:
            continue
        found.append(
            RootInfo(
                name, sequence, cid, datetime.fromtimestamp(stamp, UTC),
                marks.size(store), len(marks.missing), bool(keys),
            )
        )
    return found


def check_root_name(name: str) -> str:
    """`name` if it can name a line of roots (a folder under roots/); StoreError otherwise."""
    if not name or name.startswith(".") or any(c in name for c in "/\\\0") or name.isdigit():
        raise StoreError(
            f"root name {name!r} is not usable: it names a folder (no '/', no leading '.', "
            "not all digits)"
        )
    return name


def pin(store: Store, name: str, cid: CID) -> tuple[int, int]:
    """Root `cid` by hand under the line `name`; returns (sequence, blocks of it missing).

    The sequence is the release's own (its ipwhl/release.toml) when the store has it, else the
    next free one. A sequence of the line already rooted at another CID is a StoreError.
    """
    from .build import read_release_info

    check_root_name(name)
    with store.lock():
        existing = {seq: root for line, seq, root in _read_roots(store) if line == name}
        try:
            sequence = int(read_release_info(store, cid).get("sequence", 0)) or None
        except (NotFound, InvalidBlock, ValueError, TypeError):
            sequence = None
        if sequence is None:
            same = [seq for seq, root in existing.items() if root == cid]
            sequence = same[0] if same else max(existing, default=0) + 1
        if existing.get(sequence, cid) != cid:
            raise StoreError(
                f"root {_root_label(name, sequence)} is already {existing[sequence]}, not {cid}; "
                f"unpin it first (`ipwhl roots rm {name}@{sequence}`) or use another name"
            )
        if sequence not in existing:
            store.add_root(name, sequence, cid)
        marks = Marks()
        mark_dag(store, cid, marks, origin=name)
    return sequence, len(marks.missing)


def unpin(store: Store, name: str, sequence: int | None = None) -> list[int]:
    """Drop one release of a line (or all of them) from the roots; NotFound if none was."""
    sequences = [seq for line, seq, _ in _read_roots(store) if line == name]
    if sequence is not None:
        sequences = [seq for seq in sequences if seq == sequence]
    removed = [seq for seq in sequences if store.remove_root(name, seq)]
    if not removed:
        which = name if sequence is None else _root_label(name, sequence)
        raise NotFound(f"no root {which} in the store {store.root}; `ipwhl roots` lists them")
    return removed


def prune_roots(store: Store, name: str, keep: int) -> list[int]:
    """Keep the `keep` highest sequences of the line `name`; returns the sequences dropped."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    sequences = sorted(seq for line, seq, _ in _read_roots(store) if line == name)
    dropped = sequences[:-keep]
    return [seq for seq in dropped if store.remove_root(name, seq)]


# -- amounts -----------------------------------------------------------------------------------

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_BYTE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '12h', '7d', '2w' → seconds; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration; expected a number with s, m, h, d or w")
    return float(match[1]) * _DURATION_UNITS[match[2] or "s"]


def parse_bytes(text: str) -> int:
    """'1000', '500K', '20M', '2G', '1T' (powers of 1024; 'B' and 'iB' allowed) → bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a size; expected a number with K, M, G or T")
    return int(float(match[1]) * _BYTE_UNITS[match[2]])


def format_bytes(size: int) -> str:
    """A size for people: 512 B, 1.5 KiB, 3.2 MiB, …"""
    amount = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def describe_roots(roots: Iterable[RootInfo]) -> list[str]:
    """`ipwhl roots` lines: name, sequence, CID, date, closure size, and how it was rooted."""
    lines = []
    for root in roots:
        how = "built" if root.built else "pinned"
        gap = f", {root.missing} missing" if root.missing else ""
        lines.append(
            f"{root.name}\t{root.sequence}\t{root.cid}\t"
            f"{root.date.strftime('%Y-%m-%dT%H:%M:%SZ')}\t{format_bytes(root.closure_bytes)}"
            f"\t{how}{gap}"
        )
    return lines

