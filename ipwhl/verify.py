"""`ipwhl store verify`: rehash everything in the store against its key, and repair what can be.

Objects are hashed with sha256 and re-encoded as UnixFS in the same pass, so their layouts and
the interior blocks of their files are checked (and, with repair, rewritten) from the bytes
themselves. Blocks are checked against their CIDs; records, source lists and roots must parse
(a record's key is the hash of its inputs, not of its bytes, so nothing more can be checked).
Then every rooted DAG is walked for what is missing.

Repair refetches a corrupt object from the URLs it was fetched from, checking it against its
CID and sha256 as any fetch does, and removes whatever cannot be refetched or rebuilt: a build
re-realises a record, page or directory that is gone, and nothing corrupt is ever served.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from .cid import CID, InvalidCID
from .errors import FetchError, IntegrityError, StoreCorrupt, StoreError, StoreIncomplete
from .gc import abandoned_temporaries, format_bytes, mark_roots
from .store import Layout, Store
from .unixfs import Block, FileBuilder

__all__ = ["Damage", "VerifyReport", "verify_store"]

_READ_SIZE = 1 << 20
_SHOWN = 20  # missing blocks listed one by one before the rest are counted


@dataclass
class Damage:
    """A file of the store that does not match its key, and what repair did about it."""

    kind: str  # object, block, layout, record, sources, root
    name: str
    problem: str
    action: str = ""

    def __str__(self) -> str:
        done = f"; {self.action}" if self.action else ""
        return f"corrupt {self.kind} {self.name}: {self.problem}{done}"


@dataclass
class VerifyReport:
    """What verify checked and found; `exit_code` is 0, StoreCorrupt's or StoreIncomplete's."""

    repair: bool
    checked: Counter[str] = field(default_factory=Counter)
    bytes_hashed: int = 0
    damage: list[Damage] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (root, block or object)
    notes: list[str] = field(default_factory=list)

    @property
    def unrepaired(self) -> list[Damage]:
        return [d for d in self.damage if not self.repair or d.action.startswith("could not")]

    @property
    def exit_code(self) -> int:
        if self.unrepaired:
            return StoreCorrupt.exit_code
        if self.missing:
            return StoreIncomplete.exit_code
        return 0

    def lines(self) -> list[str]:
        """The report for people: damage, missing blocks, notes, then a summary line."""
        out = [str(d) for d in self.damage]
        for root, what in self.missing[:_SHOWN]:
            out.append(f"missing {what} of root {root}")
        if len(self.missing) > _SHOWN:
            out.append(f"… and {len(self.missing) - _SHOWN} more missing")
        if self.missing:
            out.append("rebuild the release (`ipwhl build`) or import it to restore what is gone")
        out += self.notes
        counts = ", ".join(
            f"{self.checked[kind]} {kind}"
            for kind in ("objects", "blocks", "layouts", "records", "sources", "roots")
        )
        out.append(
            f"store verify: {counts} ({format_bytes(self.bytes_hashed)} hashed): "
            f"{len(self.damage)} corrupt, {len(self.missing)} missing"
            + (", repaired" if self.repair and self.damage and not self.unrepaired else "")
        )
        return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _is_hex64(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


class _Verifier:
    def __init__(self, store: Store, report: VerifyReport, refetch: bool) -> None:
        self.store = store
        self.report = report
        self.refetch = refetch
        self.file_cids: dict[str, CID] = {}  # object sha256 -> file CID, from fetch records
        self.layouts: dict[str, list[tuple[CID, Layout]]] = {}  # object sha256 -> its layouts
        self.found: dict[tuple[str, str], Damage] = {}

    def damaged(self, kind: str, name: str, problem: str, path: Path | None) -> Damage:
        damage = Damage(kind, name, problem)
        self.report.damage.append(damage)
        self.found[(kind, name)] = damage
        if self.report.repair and path is not None:
            self.remove(damage, path)
        return damage

    def remove(self, damage: Damage, path: Path) -> None:
        try:
            self.store.remove(path)
        except OSError as exc:
            damage.action = f"could not remove it: {exc.strerror or exc}"
        else:
            damage.action = "removed"

    def strays(self, kind: str, label: str) -> None:
        """Report (and with repair remove) what took the place of a file: a directory, a FIFO."""
        for name, path, what in self.store.strays(kind):
            self.report.checked[kind] += 1
            problem = f"{what} where its file should be"
            if kind == "objects" and _is_hex64(name):
                self.corrupt_object(name, path, problem)
            else:
                self.damaged(label, name, problem, path)

    # -- small files ---------------------------------------------------------------------------

    def records(self) -> None:
        self.strays("records", "record")
        for key, path in self.store.entries("records"):
            self.report.checked["records"] += 1
            if not _is_hex64(key):
                self.damaged("record", key, "the name is not a derivation key", path)
                continue
            try:
                output = msgpack.unpackb(path.read_bytes())
            except (ValueError, msgpack.UnpackException) as exc:
                self.damaged("record", key, f"not msgpack ({exc}); a build reruns its step", path)
                continue
            self._learn_file(output)

    def _learn_file(self, output: Any) -> None:
        if isinstance(output, dict) and isinstance(output.get("sha256"), str):
            with contextlib.suppress(KeyError, TypeError, InvalidCID):
                self.file_cids.setdefault(output["sha256"], CID.parse(output["cid"]))

    def sources(self) -> None:
        self.strays("sources", "sources")
        for name, path in self.store.entries("sources"):
            self.report.checked["sources"] += 1
            try:
                urls = msgpack.unpackb(path.read_bytes())
                if not (isinstance(urls, list) and all(isinstance(u, str) for u in urls)):
                    raise ValueError("not a list of URLs")
            except (ValueError, msgpack.UnpackException) as exc:
                self.damaged("sources", name, str(exc), path)

    def roots(self) -> None:
        for path in sorted((self.store.root / "roots").glob("*/*")):
            label = f"{path.parent.name}/{path.name}"
            if path.name.isdigit():
                self.report.checked["roots"] += 1
                try:
                    CID.parse(path.read_text().strip())
                except (InvalidCID, UnicodeDecodeError) as exc:
                    self.damaged("root", label, f"not a CID ({exc})", path)
            elif path.name.endswith(".keys"):
                try:
                    keys = msgpack.unpackb(path.read_bytes())
                    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
                        raise ValueError("not a list of derivation keys")
                except (ValueError, msgpack.UnpackException) as exc:
                    self.damaged("root", label, f"{exc}; the root stays, without its records", path)

    def blocks(self) -> None:
        self.strays("blocks", "block")
        for name, path in self.store.entries("blocks"):
            self.report.checked["blocks"] += 1
            try:
                cid = CID.parse(name)
            except InvalidCID:
                self.damaged("block", name, "the name is not a CID", path)
                continue
            data = path.read_bytes()
            self.report.bytes_hashed += len(data)
            if not cid.verify(data):
                self.damaged("block", name, "its bytes do not hash to its CID", path)

    def layouts_by_object(self) -> None:
        self.strays("layouts", "layout")
        for name, path in self.store.entries("layouts"):
            self.report.checked["layouts"] += 1
            try:
                cid = CID.parse(name)
                layout = Layout.from_record(msgpack.unpackb(path.read_bytes()))
            except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
                self.damaged("layout", name, f"unreadable ({exc})", path)
                continue
            self.layouts.setdefault(layout.object_sha256, []).append((cid, layout))

    # -- objects -------------------------------------------------------------------------------

    def objects(self, workers: int, progress: Callable[[str, int, int], None] | None) -> None:
        self.strays("objects", "object")
        listed = list(self.store.entries("objects"))
        self.report.checked["objects"] += len(listed)
        total = sum(_size(path) for _, path in listed) if progress is not None else 0
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for name, path, result in pool.map(lambda e: (*e, _encode(e[1])), listed):
                self.report.bytes_hashed += result.size
                if progress is not None:
                    progress("hash", self.report.bytes_hashed, total)
                if not _is_hex64(name):
                    self.damaged("object", name, "the name is not a sha256", path)
                elif result.sha256 != name:
                    self.corrupt_object(name, path, f"its bytes hash to sha256 {result.sha256}")
                else:
                    self.object_layouts(name, result)

    def corrupt_object(self, name: str, path: Path, problem: str) -> None:
        damage = self.damaged("object", name, problem, None)
        if not self.report.repair:
            return
        self.remove(damage, path)
        cid = self.file_cids.get(name) or next(iter(c for c, _ in self.layouts.get(name, ())), None)
        urls = self.store.sources(name) if self.refetch else []
        if cid is not None:
            from .fetch import fetch_into_store

            for url in urls:
                try:
                    fetched = fetch_into_store(self.store, url, cid)
                except (FetchError, IntegrityError) as exc:
                    damage.action = f"removed; refetching failed: {exc}"
                    continue
                if fetched.sha256 == name:
                    damage.action = f"refetched from {url}"
                    return
        # Its layouts stay: they say which file is missing, and a refetch writes them anyway.
        if not urls or cid is None:
            damage.action = "removed (nothing to refetch it from); a build fetches it again"

    def object_layouts(self, name: str, result: _Encoded) -> None:
        expected = result.layout(name)
        has_own = False
        for cid, layout in self.layouts.get(name, ()):
            if cid == result.cid and layout == expected:
                has_own = True
                continue
            problem = (
                f"names object {name}, whose file is {result.cid}"
                if cid != result.cid
                else f"its leaves do not match object {name}"
            )
            damage = self.damaged("layout", str(cid), problem, self.store.layout_path(cid))
            if self.report.repair and cid == result.cid and damage.action == "removed":
                self.store.put_layout(cid, expected)
                has_own = True
                damage.action = "rewritten from the object"
        if not has_own:
            self.report.notes.append(f"note: object {name} has no layout (an interrupted fetch)")
            if self.report.repair:
                self.store.put_layout(result.cid, expected)
        if self.report.repair:
            for block in result.interior:
                if not self.store.block_path(block.cid).exists():
                    self.store.put_block(block.cid, block.data)
                    earlier = self.found.get(("block", str(block.cid)))
                    if earlier is not None:
                        earlier.action = f"rewritten from object {name}"

    def temporaries(self) -> None:
        import time

        abandoned = list(abandoned_temporaries(self.store, time.time()))
        if not abandoned:
            return
        if self.report.repair:
            for path in abandoned:
                self.store.remove(path)
            self.report.notes.append(f"note: removed {len(abandoned)} abandoned temporary files")
        else:
            self.report.notes.append(
                f"note: {len(abandoned)} abandoned temporary files in tmp/ (gc removes them)"
            )


@dataclass(frozen=True)
class _Encoded:
    """An object's bytes as hashed and encoded: sha256, size, file CID, leaves, interior."""

    sha256: str
    size: int
    cid: CID
    leaves: tuple[tuple[CID, int, int], ...]
    interior: tuple[Block, ...]

    def layout(self, name: str) -> Layout:
        return Layout(name, self.size, self.leaves)


def _encode(path: Path) -> _Encoded:
    digest = hashlib.sha256()
    leaves: list[tuple[CID, int, int]] = []
    interior: list[Block] = []

    def on_block(block: Block, offset: int | None) -> None:
        if offset is None:
            interior.append(block)
        else:
            leaves.append((block.cid, offset, len(block.data)))

    builder = FileBuilder(on_block=on_block)
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_SIZE):
            digest.update(chunk)
            builder.update(chunk)
    cid, size, _ = builder.finish()
    return _Encoded(digest.hexdigest(), size, cid, tuple(leaves), tuple(interior))


def verify_store(
    store: Store,
    *,
    repair: bool = False,
    refetch: bool = True,
    workers: int = 0,
    on_wait: Callable[[], None] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> VerifyReport:
    """Rehash every object, block and layout, parse every record and root, and walk every
    rooted DAG; with `repair`, refetch or rebuild what can be and remove what cannot.
    `progress("hash", bytes_hashed, total)` follows the objects, the long part."""
    report = VerifyReport(repair=repair)
    verifier = _Verifier(store, report, refetch)
    workers = workers or min(4, os.cpu_count() or 1)
    try:
        # Repair deletes, so it runs alone, like gc; a plain check runs beside builds.
        with store.lock(exclusive=repair, on_wait=on_wait):
            verifier.records()
            verifier.sources()
            verifier.roots()
            verifier.blocks()
            verifier.layouts_by_object()
            verifier.objects(workers, progress)
            verifier.temporaries()
            try:
                marks = mark_roots(store, strict=False)
            except StoreCorrupt:
                # A node of a rooted DAG is not a file (listed above): nothing under it can be
                # followed until repair removes it.
                report.notes.append(
                    "note: the rooted DAGs were not walked for missing blocks past the damage; "
                    "`ipwhl store verify --repair` removes it, then walks them"
                )
                return report
            if marks.missing:
                # Gone behind the store's back: records that vouch for whole DAGs must look again.
                store.bump_generation()
    except OSError as exc:
        raise StoreError(f"cannot read the store {store.root}: {exc.strerror or exc}") from exc
    report.missing = marks.missing
    for kind, name, why in marks.unreadable:
        if (kind, name) not in verifier.found:  # reported already, as what it is
            report.damage.append(Damage(kind, name, why, "could not follow it"))
    return report
