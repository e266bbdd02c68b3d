"""A cache of declaration summaries in the store, so a rebuild reads only the files that changed.

`load_declarations` asks it for each file's summary by the file's identity on disk: device,
inode, size, mtime and ctime (the kernel sets ctime on every change, and no program can set it
back). A file whose identity is as when it was read is not read again, and a project folder
whose identity is as when it was listed is not listed again (adding, removing or renaming an
entry changes a folder's mtime and ctime; its files are still looked at one by one). A file or
folder read within `RACY_SECONDS` of its last change is not cached at all: a change in the same
clock tick could leave its identity as it was (git's "racy clean" problem). Symlinked files are
never cached.

The cache lives in `<store>/cache/declarations/<root>/<xx>`: one folder per declarations folder
(and per version of the code that parses declarations, so a change in what is read or how it
is checked cannot meet old summaries), 256 shards by project. Each shard is
written whole, atomically, and carries a blake3 of its contents: a torn or corrupt shard is
simply empty. Nothing else reads it; deleting it costs only time.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import sys
import zlib
from pathlib import Path
from typing import Any

import blake3
import msgpack

from .declarations import DeclarationSummary, StatKey

__all__ = ["RACY_SECONDS", "DeclarationCache", "FolderKey"]

# What says a project folder holds the same names: device, inode, mtime and ctime (ns).
FolderKey = tuple[int, int, int, int]

RACY_SECONDS = 2  # more than the coarsest timestamps (FAT's 2 s) and any clock tick
CACHE_FORMAT = 1
_DIGEST = 32
# The modules whose code decides what a declaration says and whether it is valid.
_PARSERS = ("declarations", "requirements", "tomlpos", "wheels", "cid", "unixfs")


def _code_digest() -> bytes:
    hasher = blake3.blake3(f"{CACHE_FORMAT} {sys.version_info[:2]}".encode())
    for name in _PARSERS:
        module = sys.modules.get(f"ipwhl.{name}")
        path = getattr(module, "__file__", None)
        try:
            hasher.update(Path(path).read_bytes() if path else name.encode())
        except OSError:
            hasher.update(secrets.token_bytes(16))  # unknown code: never reuse
    return hasher.digest()


class DeclarationCache:
    """Summaries of the declarations under one folder, by relpath and file identity."""

    def __init__(self, directory: Path, *, racy_seconds: float = RACY_SECONDS) -> None:
        self.directory = directory
        self.racy_ns = int(racy_seconds * 1_000_000_000)
        self._shards: dict[str, dict[str, tuple[Any, ...]]] = {}
        self._dirty: set[str] = set()
        self._folders: set[str] = set()  # listings looked up or put in this run
        self._strings: dict[str, str] = {}  # one copy of each version and project name

    @classmethod
    def in_store(
        cls, store_root: Path, declarations_root: Path, *, racy_seconds: float = RACY_SECONDS
    ) -> DeclarationCache | None:
        """The cache of `declarations_root` in the store at `store_root`; None when that is
        not a store (ipwhl makes no store just to cache in it)."""
        if not (store_root / "FORMAT").is_file():
            return None
        name = blake3.blake3(_code_digest() + os.fsencode(declarations_root.resolve()))
        return cls(store_root / "cache" / "declarations" / name.hexdigest()[:32],
                   racy_seconds=racy_seconds)

    def get(self, relpath: str, key: StatKey) -> DeclarationSummary | None:
        """The summary of the file at `relpath` if its identity is still `key`."""
        entry = self._shard(relpath).get(relpath)
        if entry is None or len(entry) != 12 or entry[:5] != key:
            return None
        version, requires_python, needs, digest, file_cid, file_tsize, content_id = entry[5:]
        strings = self._strings
        return DeclarationSummary(
            relpath, strings.setdefault(version, version), requires_python,
            tuple([strings.setdefault(name, name) for name in needs]), digest, file_cid,
            file_tsize, content_id,
        )

    def folder_summaries(self, folder: str, root_fd: int) -> list[DeclarationSummary] | None:
        """The summaries of every file in the project folder `folder` (a relpath under the
        declarations folder open as `root_fd`) when the folder's identity and each file's are
        as cached; else None.

        The one call a cached project costs: a stat of the folder and of each file."""
        listed = f"{folder}/"
        shard = self._shard(listed)
        self._folders.add(listed)
        entry = shard.get(listed)
        if entry is None or len(entry) != 5:
            return None
        try:
            info = os.stat(folder, dir_fd=root_fd, follow_symlinks=False)
        except OSError:
            return None
        if (entry[0] != info.st_dev or entry[1] != info.st_ino or entry[2] != info.st_mtime_ns
                or entry[3] != info.st_ctime_ns or not stat.S_ISDIR(info.st_mode)):
            return None
        strings = self._strings
        found = []
        for name in entry[4]:
            relpath = listed + name
            try:
                info = os.stat(relpath, dir_fd=root_fd, follow_symlinks=False)
            except OSError:
                return None
            cached = shard.get(relpath)
            if (cached is None or len(cached) != 12 or cached[0] != info.st_dev
                    or cached[1] != info.st_ino or cached[2] != info.st_size
                    or cached[3] != info.st_mtime_ns or cached[4] != info.st_ctime_ns
                    or not stat.S_ISREG(info.st_mode)):
                return None
            version, requires_python, needs, digest, file_cid, file_tsize, content_id = (
                cached[5:]
            )
            found.append(DeclarationSummary(
                relpath, strings.setdefault(version, version), requires_python,
                tuple([strings.setdefault(name, name) for name in needs]), digest, file_cid,
                file_tsize, content_id,
            ))
        return found

    def listing(self, folder: str, key: FolderKey) -> tuple[str, ...] | None:
        """The names in the project folder `folder` (a relpath) if its identity is still `key`."""
        entry = self._shard(f"{folder}/").get(f"{folder}/")
        self._folders.add(f"{folder}/")
        if entry is None or len(entry) != 5 or entry[:4] != key:
            return None
        return entry[4]

    def put_listing(
        self, folder: str, key: FolderKey, names: tuple[str, ...], read_at_ns: int
    ) -> None:
        """Remember what a project folder listed at `read_at_ns` holds (unless it was racy)."""
        _device, _inode, mtime, ctime = key
        if max(mtime, ctime) >= read_at_ns - self.racy_ns:
            return
        self._shard(f"{folder}/")[f"{folder}/"] = (*key, names)
        self._folders.add(f"{folder}/")
        self._dirty.add(_shard_name(f"{folder}/"))

    def put(self, summary: DeclarationSummary, key: StatKey, read_at_ns: int) -> None:
        """Remember a summary of a file read at `read_at_ns` (unless it was racy then)."""
        _device, _inode, _size, mtime, ctime = key
        if max(mtime, ctime) >= read_at_ns - self.racy_ns:
            return
        shard = self._shard(summary.relpath)
        shard[summary.relpath] = (*key, *summary[1:])
        self._dirty.add(_shard_name(summary.relpath))

    def save(self, relpaths: set[str]) -> None:
        """Keep the entries of `relpaths` (the files there are now) and of the folders looked
        at; write what changed."""
        for name, shard in self._shards.items():
            gone = [relpath for relpath in shard
                    if relpath not in relpaths and relpath not in self._folders]
            for relpath in gone:
                del shard[relpath]
            if gone or name in self._dirty:
                self._write(name, shard)
        self._dirty.clear()
        self._folders.clear()
        self._shards.clear()  # read again on the next use: the summaries hold what is needed

    def _shard(self, relpath: str) -> dict[str, tuple[Any, ...]]:
        name = _shard_name(relpath)
        shard = self._shards.get(name)
        if shard is None:
            shard = self._shards[name] = self._read(name)
        return shard

    def _read(self, name: str) -> dict[str, tuple[Any, ...]]:
        try:
            data = (self.directory / name).read_bytes()
        except OSError:
            return {}
        payload = data[_DIGEST:]
        if blake3.blake3(payload).digest() != data[:_DIGEST]:
            return {}
        try:
            entries = msgpack.unpackb(payload, use_list=False)
        except (ValueError, msgpack.UnpackException):
            return {}
        return entries if isinstance(entries, dict) else {}

    def _write(self, name: str, shard: dict[str, tuple[Any, ...]]) -> None:
        # A cache: no fsync. A shard torn by a crash fails its digest and reads as empty.
        payload = msgpack.packb(shard, use_bin_type=True)
        temp = self.directory / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            temp.write_bytes(blake3.blake3(payload).digest() + payload)
            os.replace(temp, self.directory / name)
        except OSError:
            pass  # a read-only or full store: the next run reads the files again
        finally:
            with contextlib.suppress(OSError):
                temp.unlink()


def _shard_name(relpath: str) -> str:
    # By project, so that a project's files share a shard: 256 of them, by crc32 (fast).
    return f"{zlib.crc32(relpath.rsplit('/', 2)[-2].encode()) & 0xFF:02x}"
