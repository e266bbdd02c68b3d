"""The content-addressed local store: objects, blocks, file layouts, records and roots.

Layout under the store root (every file is written once, atomically, and never changed):

    objects/<xx>/<sha256>     whole files (wheels), keyed by the sha256 of their bytes
    layouts/<xx>/<cid>        where a UnixFS file's raw leaves lie inside an object
    blocks/<xx>/<cid>         IPFS blocks that are not slices of an object (dag-pb nodes, pages)
    records/<xx>/<key>        msgpack outputs of derivations, keyed by the derivation's key
    roots/<name>/<sequence>   GC roots: a release CID per line of releases (+ `.keys`, its records)
    sources/<xx>/<sha256>     the URLs an object was fetched from (so a repair can fetch it again)
    tmp/                      files being written; never read as store contents
    LOCK                      builds hold it shared, gc and repair exclusive (flock)

A wheel's bytes are kept once (in objects/); its raw leaf blocks are served as slices of the object,
checked against their CIDs on the way out, so corrupt bytes are never handed on.

Within `Store.batch()` small files (blocks, layouts, records, source lists) are held in memory and
made durable a few hundred at a time by a writer thread: written into tmp/, made durable together
(one syncfs), then renamed into place in the order they were put. So, as outside a batch, no name
ever appears before its bytes are on disk, and a record never before what it names (see
docs/performance.md).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import msgpack

from .cid import CID, InvalidCID
from .errors import IntegrityError, NotFound, StoreCorrupt, StoreError

__all__ = ["Layout", "Store", "default_store_path"]

STORE_FORMAT = "1"
_READ_SIZE = 1 << 20
_FOLDERS = ("objects", "layouts", "blocks", "records", "roots", "tmp")
_OWN_NAMES = frozenset(
    {*_FOLDERS, "FORMAT", ".gitkeep", "sources", "signatures", "whole", "LOCK", "GENERATION"}
)
# Disk full or over quota: the store cannot take more, whatever was being written.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
STORE_KINDS = ("objects", "layouts", "blocks", "records", "sources")
_LEAF_RESCAN = 1.0  # seconds between looks for new layouts when a leaf is not known
# A batch hands this many files (or bytes) to its writer thread at a time: file creation then
# overlaps the work that puts them, memory stays bounded, and each syncfs covers many files.
_HAND_OFF_FILES = 512
_BATCH_BYTES = 64 << 20
# Groups handed to the writer and not yet written, at most: past that, putting waits. Without
# a bound a writer slower than the puts (a slow disk, or starved of the GIL by a busy main
# thread) let held files grow without end: 8 GiB at 600,000 projects.
_IN_FLIGHT = 4
# fsyncs in flight at once: the file system commits concurrent fsyncs in one journal transaction.
_SYNC_THREADS = 16
_SYNCFS_FROM = 16  # files in a flush from which one syncfs beats an fsync each
# syncfs writes back every dirty page of the file system, other programs' too: with more than
# this much dirty beyond the flush's own files, an fsync each (16 in flight) is cheaper.
_SYNCFS_OTHERS_DIRTY = 32 << 20

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; a store there is not shared safely
    fcntl = None  # type: ignore[assignment]


def _load_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    return function  # type: ignore[no-any-return]


_syncfs: Callable[[int], int] | None = None
_syncfs_loaded = False


def _dirty_bytes() -> int:
    """Bytes the kernel holds dirty or under write-back, all file systems (0 if unknown)."""
    try:
        with open("/proc/meminfo", "rb") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return 0
    total = 0
    for line in lines:
        if line.startswith((b"Dirty:", b"Writeback:")):
            total += int(line.split()[1]) * 1024
    return total


def _syncfs_pays(files: int, size: int, dirty: Callable[[], int]) -> bool:
    """Whether one syncfs beats an fsync each for `files` files of `size` bytes in all, given
    how much the kernel holds dirty (asked only when the count alone does not decide)."""
    return files >= _SYNCFS_FROM and dirty() - size <= _SYNCFS_OTHERS_DIRTY


def _sync_files(folder: str, paths: list[str], size: int = 0) -> None:
    """Make the written files `paths` (all inside `folder`, `size` bytes in all) durable;
    OSError if the disk says no.

    Many small files: one syncfs(2) of the store's file system costs about one journal commit,
    where an fsync each costs a commit each (measured: 2,400 records in 35 ms against 250 ms
    with 16 fsyncs in flight). Linux ≥ 5.8 reports write-back errors through it. A few files,
    no syncfs, or other programs' writes pending (syncfs would wait for them: a build beside a
    large copy spent 1.1 s in one): fsync them, several at once.
    """
    global _syncfs, _syncfs_loaded
    if not _syncfs_loaded:
        _syncfs, _syncfs_loaded = _load_syncfs(), True
    if _syncfs is not None and _syncfs_pays(len(paths), size, _dirty_bytes):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            if _syncfs(descriptor) != 0:
                import ctypes

                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code))
        finally:
            os.close(descriptor)
        return

    def sync(path: str) -> None:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    with ThreadPoolExecutor(min(_SYNC_THREADS, len(paths))) as pool:
        list(pool.map(sync, paths))  # list(): the first error surfaces here


def default_store_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The store to use: an explicit path, else $IPWHL_STORE, else ./store."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("IPWHL_STORE") or "store")


@dataclass(frozen=True)
class Layout:
    """A UnixFS file whose raw leaves are consecutive slices of one stored object."""

    object_sha256: str
    size: int
    leaves: tuple[tuple[CID, int, int], ...]  # (leaf cid, offset, length)

    def to_record(self) -> dict[str, Any]:
        return {
            "object": self.object_sha256,
            "size": self.size,
            "leaves": [[bytes(cid), offset, length] for cid, offset, length in self.leaves],
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Layout:
        return cls(
            object_sha256=record["object"],
            size=record["size"],
            leaves=tuple(
                (CID.from_bytes(cid), offset, length) for cid, offset, length in record["leaves"]
            ),
        )


_KINDS_OF_FILE = (
    (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink"),
)


def _kind_of(mode: int) -> str:
    return next((name for test, name in _KINDS_OF_FILE if test(mode)), "not a regular file")


def _damaged(path: str | os.PathLike[str], what: str) -> StoreCorrupt:
    return StoreCorrupt(
        f"{os.fspath(path)} is {what}, not a file: the store is damaged; "
        "run `ipwhl store verify --repair`"
    )


def _is_file(path: str | os.PathLike[str]) -> bool:
    """Whether a file of the store is there (one stat, as Path.exists); StoreCorrupt when a
    directory, FIFO, device or symlink loop took its place (it would be skipped as present)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _damaged(path, "a symlink loop") from None
        raise
    if stat.S_ISREG(mode):
        return True
    raise _damaged(path, _kind_of(mode))


def _open_file(path: str | os.PathLike[str]) -> BinaryIO:
    """A file of the store opened for reading; FileNotFoundError when absent, StoreCorrupt when
    not a regular file (a FIFO is opened without waiting for a writer, then refused)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # a symlink loop; a socket
            _is_file(path)
        raise
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise _damaged(path, _kind_of(mode))
        return open(descriptor, "rb")  # the caller closes it
    except BaseException:
        os.close(descriptor)
        raise


def _read_file(path: str | os.PathLike[str]) -> bytes:
    with _open_file(path) as handle:
        return handle.read()


def _shard(name: str) -> str:
    # CID strings share their first characters; the last two spread files evenly.
    return name[-2:]


def _entry_relpath(kind: str, name: str) -> str:
    shard = _shard(name) if kind in ("blocks", "layouts") else name[:2]
    return f"{kind}/{shard}/{name}"


class Store:
    """A store rooted at a directory; safe to share between processes."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        # Raw leaves of laid-out files, found through the layouts (see _leaf_location).
        self._leaf_index: dict[CID, tuple[str, int, int]] | None = None
        self._layouts_indexed: set[str] = set()
        self._leaf_scanned = 0.0
        self._leaf_lock = threading.Lock()
        self._generation_bumped = False
        # Files put inside batch(): final path -> bytes, in the order they were put; then
        # handed to the writer thread, and held (readable here) until they are renamed.
        self._pending: dict[str, bytes] = {}
        self._pending_bytes = 0
        self._writing: deque[dict[str, bytes]] = deque()  # handed off, oldest first
        # Every file held by a handed-off group: path -> (its group, its bytes), newest wins;
        # so that looking a file up costs one dict access however far the writer is behind.
        self._writing_index: dict[str, tuple[dict[str, bytes], bytes]] = {}
        self._writing_lock = threading.Lock()
        self._in_flight: deque[Future[None]] = deque()  # handed-off groups, oldest first
        self._writer: ThreadPoolExecutor | None = None
        self._write_error: BaseException | None = None
        self._batch_depth = 0
        self._batch_lock = threading.RLock()
        self._folders: set[str] = set()  # shard folders known to exist (the writer's own)

    # -- set-up -----------------------------------------------------------------------------

    def open(self) -> Store:
        """Create the store's folders if needed; refuse a folder that is not an ipwhl store."""
        marker = self.root / "FORMAT"
        try:
            if marker.exists():
                found = marker.read_text().strip()
                if found != STORE_FORMAT:
                    raise StoreError(
                        f"{self.root} holds store format {found!r}; "
                        f"this ipwhl reads {STORE_FORMAT!r}"
                    )
            else:
                # Another process may be creating this store right now: its folders are
                # ours, and FORMAT appears last.
                if self.root.exists() and any(
                    p.name not in _OWN_NAMES for p in self.root.iterdir()
                ):
                    raise StoreError(
                        f"{self.root} is not empty and is not an ipwhl store (no FORMAT file); "
                        "pass --store with an empty or existing store folder"
                    )
                for sub in _FOLDERS:
                    (self.root / sub).mkdir(parents=True, exist_ok=True)
                self._write_atomic(marker, STORE_FORMAT.encode() + b"\n")
        except OSError as exc:
            raise StoreError(f"cannot use store {self.root}: {exc.strerror or exc}") from exc
        return self

    # -- locking ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(
        self,
        *,
        exclusive: bool = False,
        wait: bool = True,
        on_wait: Callable[[], None] | None = None,
    ) -> Iterator[None]:
        """Hold the store lock: shared (builds, checks, pins) or exclusive (gc, repair).

        Shared holders run side by side; an exclusive holder runs alone. `on_wait` is called
        once if the lock is not free at once; with `wait=False` a busy lock is a StoreError.
        """
        if fcntl is None:  # pragma: no cover - no flock on this platform
            yield
            return
        try:
            handle = open(self.root / "LOCK", "a+b")
        except OSError as exc:
            raise StoreError(f"cannot lock store {self.root}: {exc.strerror or exc}") from exc
        with handle:
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            try:
                fcntl.flock(handle.fileno(), mode | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    raise StoreError(
                        f"the store {self.root} is in use by another ipwhl process"
                    ) from None
                if on_wait is not None:
                    on_wait()
                fcntl.flock(handle.fileno(), mode)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # -- atomic writing ---------------------------------------------------------------------

    @contextlib.contextmanager
    def temporary(self, suffix: str = "") -> Iterator[tuple[Path, BinaryIO]]:
        """A new file under tmp/; removed at exit unless it was moved into place.

        A full disk, met anywhere inside the block, is a StoreError and leaves nothing behind.
        """
        tmp_dir = self.root / "tmp"
        path = tmp_dir / f"{os.getpid()}-{secrets.token_hex(8)}{suffix}"
        try:
            self._ensure_folder(tmp_dir)
            try:
                handle = open(path, "xb")
            except FileNotFoundError:  # tmp/ was removed since (by hand)
                tmp_dir.mkdir(parents=True, exist_ok=True)
                handle = open(path, "xb")
            with handle:
                yield path, handle
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise StoreError(
                    f"no space left on the store's disk ({self.root}): {exc.strerror}; "
                    "free some space (`ipwhl gc`) and run the command again"
                ) from exc
            raise
        finally:
            # After a commit the name is gone; anything left is an abandoned write.
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _ensure_folder(self, folder: Path) -> None:
        # One mkdir per folder and process, not one per file written.
        if str(folder) not in self._folders:
            folder.mkdir(parents=True, exist_ok=True)
            self._folders.add(str(folder))

    def _commit(self, temp: Path, handle: IO[bytes], final: Path) -> None:
        handle.flush()
        os.fsync(handle.fileno())
        self._ensure_folder(final.parent)
        try:
            os.replace(temp, final)
        except FileNotFoundError:  # the folder was removed since (by hand)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, final)

    def _write_atomic(self, final: Path, data: bytes) -> None:
        with self.temporary() as (temp, handle):
            handle.write(data)
            self._commit(temp, handle, final)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Hold small writes (blocks, layouts, records, sources) and make them durable together.

        Inside, such files are visible to this Store at once, and on disk (to other processes)
        once written: a thread writes them a few hundred at a time while the batch goes on, and
        the outermost batch waits for the last of them when it ends. Each is on disk before its
        name appears, and names appear in the order the files were put, so a crash at any point
        loses at most work, never leaves a file whose bytes are not there. Objects and roots
        are never held (a root waits for the batch first). A write that fails (a full disk)
        drops every file put after it too, and is raised when the batch ends.
        """
        with self._batch_lock:
            self._batch_depth += 1
        try:
            yield
        finally:
            with self._batch_lock:
                self._batch_depth -= 1
                if self._batch_depth == 0:
                    try:
                        self.flush()
                    finally:
                        if self._writer is not None:
                            self._writer.shutdown(wait=True)
                            self._writer = None

    def flush(self) -> None:
        """Wait until every file put in a batch so far is on disk; StoreError if one cannot be."""
        with self._batch_lock:
            if self._pending:
                self._hand_off()
            while self._in_flight:
                self._in_flight.popleft().result()  # never raises: _write_handed keeps errors
            error, self._write_error = self._write_error, None
        if error is None:
            return
        if isinstance(error, OSError) and error.errno in _NO_SPACE:
            raise StoreError(
                f"no space left on the store's disk ({self.root}): {error.strerror}; "
                "free some space (`ipwhl gc`) and run the command again"
            ) from error
        raise error

    def _hand_off(self) -> None:
        # Under _batch_lock. One writer thread: batches are renamed in the order they were put.
        # Indexed before it leaves _pending, so that a reader without the lock finds it.
        files = self._pending
        with self._writing_lock:
            self._writing.append(files)
            for key, data in files.items():
                self._writing_index[key] = (files, data)
        self._pending, self._pending_bytes = {}, 0
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="ipwhl-store-writer")
        self._in_flight.append(self._writer.submit(self._write_handed, files))
        while self._in_flight and (self._in_flight[0].done() or len(self._in_flight) > _IN_FLIGHT):
            self._in_flight.popleft().result()  # never raises: _write_handed keeps the error

    def _write_handed(self, files: dict[str, bytes]) -> None:
        try:
            if self._write_error is None:  # after a failure, what follows may name what failed
                self._write_many(files)
        except BaseException as exc:
            self._write_error = exc
        finally:
            # Written or not, they are no longer held: what failed is simply not there.
            with self._writing_lock:
                self._writing.remove(files)  # the oldest: one writer, in order
                index = self._writing_index
                for key in files:
                    held = index.get(key)
                    if held is not None and held[0] is files:
                        del index[key]

    def _write_many(self, files: dict[str, bytes]) -> None:
        tmp_dir = os.path.join(self.root, "tmp")
        os.makedirs(tmp_dir, exist_ok=True)
        prefix = os.path.join(tmp_dir, f"{os.getpid()}-{secrets.token_hex(6)}-")
        temps = [f"{prefix}{index}" for index in range(len(files))]
        written = renamed = 0
        try:
            for temp, data in zip(temps, files.values(), strict=True):
                descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                written += 1
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(descriptor, view) :]
                finally:
                    os.close(descriptor)
            _sync_files(tmp_dir, temps, sum(map(len, files.values())))
            for temp, final in zip(temps, files, strict=True):
                folder = os.path.dirname(final)
                if folder not in self._folders:  # a shard folder met for the first time
                    os.makedirs(folder, exist_ok=True)
                    self._folders.add(folder)
                try:
                    os.replace(temp, final)
                except FileNotFoundError:  # the folder was removed since (by hand)
                    os.makedirs(folder, exist_ok=True)
                    os.replace(temp, final)
                renamed += 1
        finally:
            for temp in temps[renamed:written]:  # what was written and never renamed
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)

    def _put(self, final: Path, data: bytes) -> None:
        """Write a small file atomically, or hold it in the running batch."""
        with self._batch_lock:
            if self._batch_depth:
                key = str(final)
                self._pending_bytes += len(data) - len(self._pending.pop(key, b""))
                self._pending[key] = data
                if len(self._pending) >= _HAND_OFF_FILES or self._pending_bytes >= _BATCH_BYTES:
                    self._hand_off()
                return
        self._write_atomic(final, data)

    def _held(self, final: Path) -> bytes | None:
        # Without _batch_lock: dict and list reads are atomic, and a batch is renamed before it
        # stops being held. The newest holding wins (a record put twice).
        if not self._pending and not self._writing_index:
            return None
        key = str(final)
        found = self._pending.get(key)
        if found is None:
            held = self._writing_index.get(key)
            if held is not None:
                found = held[1]
        return found

    def _held_items(self) -> list[tuple[str, bytes]]:
        with self._batch_lock, self._writing_lock:
            return [item for files in (*self._writing, self._pending) for item in files.items()]

    def _exists(self, final: Path) -> bool:
        return self._held(final) is not None or _is_file(final)

    def _read(self, final: Path) -> bytes:
        held = self._held(final)
        return held if held is not None else _read_file(final)

    def commit_object(self, temp: Path, handle: IO[bytes], sha256_hex: str) -> Path:
        """Move a fully written and verified temporary file into objects/ under its sha256."""
        final = self.object_path(sha256_hex)
        self._commit(temp, handle, final)
        return final

    # -- objects ----------------------------------------------------------------------------

    def object_path(self, sha256_hex: str) -> Path:
        return self.root / "objects" / sha256_hex[:2] / sha256_hex

    def has_object(self, sha256_hex: str) -> bool:
        return _is_file(self.object_path(sha256_hex))

    def read_object(self, sha256_hex: str) -> bytes:
        """The object's bytes, checked against its sha256."""
        try:
            data = _read_file(self.object_path(sha256_hex))
        except FileNotFoundError:
            raise NotFound(f"object {sha256_hex} is not in the store {self.root}") from None
        if hashlib.sha256(data).hexdigest() != sha256_hex:
            raise IntegrityError(f"store object {sha256_hex} is corrupt; run `ipwhl store verify`")
        return data

    # -- blocks and layouts -----------------------------------------------------------------

    def block_path(self, cid: CID) -> Path:
        name = str(cid)
        return self.root / "blocks" / _shard(name) / name

    def layout_path(self, cid: CID) -> Path:
        name = str(cid)
        return self.root / "layouts" / _shard(name) / name

    def put_block(self, cid: CID, data: bytes) -> None:
        """Store one block under its CID, unless it is already there."""
        path = self.block_path(cid)
        if not self._exists(path):
            self._put(path, data)

    def has_block(self, cid: CID) -> bool:
        if self._exists(self.block_path(cid)):
            return True
        return self._leaf_location(cid) is not None

    def get_block(self, cid: CID) -> bytes:
        """The block's bytes, verified against its CID; NotFound or IntegrityError otherwise."""
        try:
            data = self._read(self.block_path(cid))
        except FileNotFoundError:
            location = self._leaf_location(cid)
            if location is None:
                raise NotFound(f"block {cid} is not in the store {self.root}") from None
            data = self._read_slice(*location)
        if not cid.verify(data):
            raise IntegrityError(f"block {cid} in the store is corrupt; run `ipwhl store verify`")
        return data

    def compare_block(self, cid: CID, data: bytes | memoryview) -> bool | None:
        """Whether the store's copy of block `cid` (its file, or its slice of an object) is
        `data` byte for byte; None when the store has none.

        `data` is known to hash to `cid`, so equal bytes are a good copy: a compare checks the
        copy for the price of reading it, without hashing it again (import, issue 10).
        """
        path = self.block_path(cid)
        held = self._held(path)
        if held is not None:
            return held == data
        try:
            with _open_file(path) as handle:
                stored = handle.read(len(data) + 1)  # a corrupt file may be any size
        except FileNotFoundError:
            location = self._leaf_location(cid)
            if location is None:
                return None
            try:
                stored = self._read_slice(*location)
            except NotFound:  # its object is gone: the copy is missing, not corrupt
                return None
        return stored == data

    def replace_blocks(self, blocks: Mapping[CID, bytes]) -> int:
        """Put good copies of blocks in place of corrupt ones; returns how many were replaced.

        Each must hash to its CID. A block's own file is rewritten atomically (a rename over
        it); leaves held in an object are patched into a copy of the object, which then
        replaces it atomically, so a reader sees the old object or the mended one.
        """
        patches: dict[str, list[tuple[int, bytes]]] = {}
        for cid, data in blocks.items():
            if not cid.verify(data):
                raise IntegrityError(f"block {cid}: the replacement does not hash to its CID")
            path = self.block_path(cid)
            location = None if self._exists(path) else self._leaf_location(cid)
            if location is None:
                self._put(path, data)
            else:
                sha256_hex, offset, length = location
                if length != len(data):
                    raise IntegrityError(f"block {cid} is {length} bytes in its object, not "
                                         f"{len(data)}; run `ipwhl store verify --repair`")
                patches.setdefault(sha256_hex, []).append((offset, data))
        for sha256_hex, fixes in patches.items():
            final = self.object_path(sha256_hex)
            with self.temporary() as (temp, handle):
                with _open_file(final) as old:
                    shutil.copyfileobj(old, handle, _READ_SIZE)
                for offset, data in fixes:
                    handle.seek(offset)
                    handle.write(data)
                self._commit(temp, handle, final)
        return len(blocks)

    def put_layout(self, root: CID, layout: Layout) -> None:
        """Record that the UnixFS file `root` is the object `layout.object_sha256`, leaf by leaf."""
        path = self.layout_path(root)
        if not self._exists(path):
            self._put(path, msgpack.packb(layout.to_record()))
        if self._leaf_index is not None:
            with self._leaf_lock:
                self._index_leaves(str(root), layout)

    def get_layout(self, root: CID) -> Layout | None:
        try:
            raw = self._read(self.layout_path(root))
        except FileNotFoundError:
            return None
        try:
            return Layout.from_record(msgpack.unpackb(raw))
        except (ValueError, TypeError, KeyError, msgpack.UnpackException):
            raise IntegrityError(
                f"layout {root} in the store is unreadable; run `ipwhl store verify`"
            ) from None

    def iter_layout(
        self, layout: Layout, start: int = 0, end: int | None = None
    ) -> Iterator[bytes]:
        """Bytes [start, end) of a laid-out file, each leaf checked against its CID first."""
        end = layout.size if end is None else min(end, layout.size)
        try:
            handle = _open_file(self.object_path(layout.object_sha256))
        except FileNotFoundError:
            raise NotFound(f"object {layout.object_sha256} is not in the store") from None
        with handle:
            for cid, offset, length in layout.leaves:
                if offset + length <= start or offset >= end:
                    continue
                handle.seek(offset)
                leaf = handle.read(length)
                if not cid.verify(leaf):
                    raise IntegrityError(
                        f"object {layout.object_sha256} is corrupt at byte {offset}; "
                        "run `ipwhl store verify`"
                    )
                yield leaf[max(start - offset, 0) : min(end - offset, length)]

    def _read_slice(self, sha256_hex: str, offset: int, length: int) -> bytes:
        try:
            with _open_file(self.object_path(sha256_hex)) as handle:
                handle.seek(offset)
                return handle.read(length)
        except FileNotFoundError:
            raise NotFound(f"object {sha256_hex} is not in the store") from None

    def _leaf_location(self, cid: CID) -> tuple[str, int, int] | None:
        index = self._leaf_index
        if index is not None:
            found = index.get(cid)
            # Another process may have laid out files since (a build beside a gateway): look
            # again on a miss, at most once a second, reading only the layouts that are new.
            if found is not None or time.monotonic() - self._leaf_scanned < _LEAF_RESCAN:
                return found
        with self._leaf_lock:
            if self._leaf_index is None:
                self._leaf_index, self._layouts_indexed = {}, set()
            for name, path in self.entries("layouts"):
                if name not in self._layouts_indexed:
                    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                        self._index_leaves(name, Layout.from_record(
                            msgpack.unpackb(path.read_bytes())
                        ))
            for held_path, raw in self._held_items():
                name = os.path.basename(held_path)
                if os.path.basename(os.path.dirname(os.path.dirname(held_path))) == "layouts":
                    self._index_leaves(name, Layout.from_record(msgpack.unpackb(raw)))
            self._leaf_scanned = time.monotonic()
            return self._leaf_index.get(cid)

    def _index_leaves(self, name: str, layout: Layout) -> None:
        assert self._leaf_index is not None
        self._layouts_indexed.add(name)
        for leaf, offset, length in layout.leaves:
            self._leaf_index[leaf] = (layout.object_sha256, offset, length)

    # -- records ----------------------------------------------------------------------------

    def record_path(self, key: str) -> Path:
        return self.root / "records" / key[:2] / key

    def has_record(self, key: str) -> bool:
        return self._exists(self.record_path(key))

    def get_record(self, key: str) -> Any | None:
        """The output of the derivation `key`, or None when it is not realised."""
        try:
            raw = self._read(self.record_path(key))
        except FileNotFoundError:
            return None
        try:
            return msgpack.unpackb(raw)
        except (ValueError, msgpack.UnpackException):
            raise IntegrityError(
                f"record {key} in the store is unreadable; run `ipwhl store verify`"
            ) from None

    def put_record(self, key: str, value: Any) -> None:
        self._put(self.record_path(key), msgpack.packb(value))

    # -- sources ----------------------------------------------------------------------------

    def source_path(self, sha256_hex: str) -> Path:
        return self.root / "sources" / sha256_hex[:2] / sha256_hex

    def sources(self, sha256_hex: str) -> list[str]:
        """The URLs the object was fetched from, oldest first (empty when none was kept)."""
        try:
            raw = self._read(self.source_path(sha256_hex))
        except FileNotFoundError:
            return []
        try:
            urls = msgpack.unpackb(raw)
        except (ValueError, msgpack.UnpackException):
            return []
        return [u for u in urls if isinstance(u, str)] if isinstance(urls, list) else []

    def signature_files(self, cid: str) -> tuple[Path, Path]:
        """Where the signed record of release `cid` is kept: signatures/<cid>.record[.minisig]."""
        record = self.root / "signatures" / f"{cid}.record"
        return record, record.with_name(record.name + ".minisig")

    def signed_record(self, cid: str) -> tuple[bytes, bytes] | None:
        """The signed record of release `cid` kept here (record, signature), or None."""
        record, signature = self.signature_files(cid)
        try:
            return record.read_bytes(), signature.read_bytes()
        except FileNotFoundError:
            return None

    def add_source(self, sha256_hex: str, url: str) -> None:
        """Remember that the object `sha256_hex` can be fetched from `url` (a fixed-output
        derivation's output does not depend on its source, so the source is kept beside it)."""
        known = self.sources(sha256_hex)
        if url not in known:
            self._put(self.source_path(sha256_hex), msgpack.packb([*known, url]))

    # -- listing and removing (gc, verify) -----------------------------------------------------

    def entries(self, kind: str) -> Iterator[tuple[str, Path]]:
        """(name, path) of every file of `kind` (one of STORE_KINDS), in no particular order."""
        for entry in self._scan(kind):
            yield entry.name, Path(entry.path)

    def names(self, kind: str) -> Iterator[str]:
        """The name of every file of `kind` (one of STORE_KINDS), in no particular order."""
        return (entry.name for entry in self._scan(kind))

    def _scan(self, kind: str) -> Iterator[os.DirEntry[str]]:
        if kind not in STORE_KINDS:
            raise ValueError(f"unknown store kind {kind!r}; expected one of {STORE_KINDS}")
        return (e for e in self._sharded(kind) if e.is_file(follow_symlinks=False))

    def _sharded(self, kind: str) -> Iterator[os.DirEntry[str]]:
        # Everything inside the shard folders of `kind`, whatever it is.
        try:
            shards = os.scandir(self.root / kind)
        except FileNotFoundError:
            return
        with shards:
            for shard in shards:
                if not shard.is_dir(follow_symlinks=False):
                    continue
                with os.scandir(shard.path) as files:
                    yield from files

    def strays(self, kind: str) -> Iterator[tuple[str, Path, str]]:
        """(name, path, what it is) of everything in the folders of `kind` that is not a regular
        file where one should be: a directory, a FIFO, a symlink (damage: `entries` skips them)."""
        for entry in self._sharded(kind):
            if not entry.is_file(follow_symlinks=False):
                mode = entry.stat(follow_symlinks=False).st_mode
                yield entry.name, Path(entry.path), _kind_of(mode)

    def entry_path(self, kind: str, name: str) -> Path:
        """Where the file `name` of `kind` (one of STORE_KINDS) lives, whether or not it does."""
        return self.root / _entry_relpath(kind, name)

    def read_entry(self, kind: str, name: str) -> bytes:
        """The raw bytes of the file `name` of `kind`, unchecked; FileNotFoundError if absent,
        StoreCorrupt if something else took its place."""
        # A plain string path: gc reads thousands of small files, and Path objects cost.
        return _read_file(os.path.join(self.root, _entry_relpath(kind, name)))

    def generation(self) -> str:
        """A token that changes whenever anything is deleted from the store (gc, repair).

        Records that vouch for a whole DAG (a realised release) carry the generation they were
        written in: after a deletion they are checked again the long way."""
        try:
            return (self.root / "GENERATION").read_text().strip()
        except FileNotFoundError:
            return "0"

    def _whole_path(self, cid: CID) -> Path:
        # Beside the content folders, not in them: a marker is not content, gc need not keep
        # it, and a stale one (an older generation) means nothing.
        name = str(cid)
        return self.root / "whole" / _shard(name) / name

    def mark_whole(self, cid: CID) -> None:
        """Note that every block of the DAG under `cid` is in the store (until a deletion)."""
        self._write_atomic(self._whole_path(cid), self.generation().encode())

    def known_whole(self, cid: CID) -> bool:
        """Whether `mark_whole(cid)` was said since the last deletion: no walk needed."""
        try:
            return self._whole_path(cid).read_bytes().decode() == self.generation()
        except (FileNotFoundError, UnicodeDecodeError):
            return False

    def bump_generation(self) -> None:
        """Say that something may be gone from the store (see `generation`)."""
        self._write_atomic(self.root / "GENERATION", secrets.token_hex(16).encode() + b"\n")
        self._generation_bumped = True

    def remove(self, path: Path) -> int:
        """Delete one file of the store, or whatever took its place (a directory: repair);
        returns the bytes it held (0 if it was already gone)."""
        if not self._generation_bumped:
            self.bump_generation()
        try:
            found = path.lstat()
            if stat.S_ISDIR(found.st_mode):
                shutil.rmtree(path)
                return 0
            size = found.st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        if path.parent.parent.name == "layouts":
            self._leaf_index = None  # a leaf may have pointed into it: index afresh
        return size

    # -- roots ------------------------------------------------------------------------------

    def root_path(self, name: str, sequence: int) -> Path:
        return self.root / "roots" / name / str(sequence)

    def add_root(
        self, name: str, sequence: int, cid: CID, record_keys: Iterable[str] = ()
    ) -> Path:
        """Register `cid` as release `sequence` of the line `name` (a GC root), with the keys of
        the derivation records that built it (kept alive with it, so a rebuild runs nothing)."""
        self.flush()  # a root vouches for records and blocks: they go to disk first
        path = self.root_path(name, sequence)
        keys_path = path.with_name(f"{sequence}.keys")
        self._write_atomic(keys_path, msgpack.packb(sorted(record_keys)))
        self._write_atomic(path, f"{cid}\n".encode())
        return path

    def root_record_keys(self, name: str, sequence: int) -> list[str]:
        """The derivation keys registered with a root (empty for a root pinned by hand)."""
        try:
            raw = (self.root / "roots" / name / f"{sequence}.keys").read_bytes()
        except FileNotFoundError:
            return []
        return list(msgpack.unpackb(raw))

    def roots(self, *, skip_unreadable: bool = False) -> list[tuple[str, int, CID]]:
        """Every root as (name, sequence, cid), by name then sequence; InvalidCID if a root
        file does not hold a CID (unless `skip_unreadable`)."""
        found = []
        for path in (self.root / "roots").glob("*/*"):
            if path.name.isdigit():
                try:
                    cid = CID.parse(path.read_text().strip())
                except FileNotFoundError:  # unpinned while we looked
                    continue
                except (InvalidCID, UnicodeDecodeError):
                    if skip_unreadable:
                        continue
                    raise
                found.append((path.parent.name, int(path.name), cid))
        return sorted(found, key=lambda root: root[:2])

    def remove_root(self, name: str, sequence: int) -> bool:
        """Unregister release `sequence` of `name`; False if it was not a root."""
        path = self.root_path(name, sequence)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        with contextlib.suppress(FileNotFoundError):
            path.with_name(f"{sequence}.keys").unlink()
        return True
