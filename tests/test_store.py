"""Tests for ipwhl.store: atomic writes, verified reads, layouts, records, roots, and two
processes sharing one store."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest

from ipwhl import store as store_module
from ipwhl.cid import CID, RAW
from ipwhl.errors import IntegrityError, NotFound, StoreError
from ipwhl.store import Layout, Store, default_store_path
from ipwhl.unixfs import CHUNK_SIZE, Block, FileBuilder, encode_file
from tests.releasefactory import Project, write_release

MAIN = Path(__file__).resolve().parents[1]
HELLO = CID.parse("bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4")  # hello world\n
FOLDERS = ("objects", "layouts", "blocks", "records", "roots")


def _files(store: Store, *folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (store.root / f).rglob("*") if p.is_file())


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def _put_file(store: Store, data: bytes) -> tuple[CID, Layout]:
    """Put `data` in the store the way fetch does: an object, a layout, interior blocks."""
    leaves: list[tuple[CID, int, int]] = []
    interior: list[Block] = []

    def on_block(block: Block, offset: int | None) -> None:
        if offset is None:
            interior.append(block)
        else:
            leaves.append((block.cid, offset, len(block.data)))

    builder = FileBuilder(on_block=on_block)
    builder.update(data)
    root, size, _ = builder.finish()
    sha = hashlib.sha256(data).hexdigest()
    with store.temporary() as (temp, handle):
        handle.write(data)
        store.commit_object(temp, handle, sha)
    for block in interior:
        store.put_block(block.cid, block.data)
    layout = Layout(sha, size, tuple(leaves))
    store.put_layout(root, layout)
    return root, layout


# -- opening -----------------------------------------------------------------------------------


def test_open_creates_a_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "new" / "store").open()
    assert (store.root / "FORMAT").read_text() == "1\n"
    for folder in (*FOLDERS, "tmp"):
        assert (store.root / folder).is_dir()
    Store(store.root).open()  # opening again is fine


def test_open_accepts_an_empty_folder_or_one_with_gitkeep(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    Store(tmp_path / "empty").open()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / ".gitkeep").touch()
    Store(tmp_path / "kept").open()


def test_open_refuses_a_folder_that_is_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not an ipwhl store"):
        Store(tmp_path).open()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_open_refuses_another_format(tmp_path: Path) -> None:
    (tmp_path / "FORMAT").write_text("2\n")
    with pytest.raises(StoreError, match="store format '2'"):
        Store(tmp_path).open()


def test_open_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "store").write_text("")
    with pytest.raises(StoreError, match="cannot use store"):
        Store(tmp_path / "store").open()


def test_open_while_another_process_creates_the_store(tmp_path: Path) -> None:
    # Another process has made the folders but not yet written FORMAT.
    for folder in (*FOLDERS, "tmp"):
        (tmp_path / folder).mkdir()
    Store(tmp_path).open()
    assert (tmp_path / "FORMAT").read_text() == "1\n"


def test_default_store_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("IPWHL_STORE", raising=False)
    assert default_store_path() == Path("store")
    monkeypatch.setenv("IPWHL_STORE", str(tmp_path))
    assert default_store_path() == tmp_path
    assert default_store_path(tmp_path / "x") == tmp_path / "x"


# -- atomic writes -----------------------------------------------------------------------------


def test_nothing_appears_before_commit(store: Store) -> None:
    data = b"wheel bytes" * 1000
    sha = hashlib.sha256(data).hexdigest()
    with store.temporary(".part") as (temp, handle):
        handle.write(data)
        assert temp.parent == store.root / "tmp"
        assert not _files(store, *FOLDERS)
        assert not store.has_object(sha)
        final = store.commit_object(temp, handle, sha)
    assert final == store.object_path(sha)
    assert store.read_object(sha) == data
    assert not _files(store, "tmp")


def test_temporary_is_removed_after_an_exception(store: Store) -> None:
    with pytest.raises(RuntimeError), store.temporary() as (temp, handle):
        handle.write(b"half")
        assert temp.exists()
        raise RuntimeError("fetch failed")
    assert not _files(store, "tmp", *FOLDERS)


def test_temporary_is_removed_when_not_committed(store: Store) -> None:
    with store.temporary() as (_temp, handle):
        handle.write(b"never committed")
    assert not _files(store, "tmp", *FOLDERS)


def test_a_failed_write_leaves_nothing(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    cid, _, blocks = encode_file(b"a page")
    with pytest.raises(StoreError, match="no space left"):
        store.put_block(cid, blocks[0].data)
    with pytest.raises(StoreError, match="no space left"):
        store.put_record("ab" * 32, {"x": 1})
    assert not _files(store, "tmp", *FOLDERS)


# -- blocks ------------------------------------------------------------------------------------


def test_blocks_round_trip_and_are_verified(store: Store) -> None:
    cid, _, blocks = encode_file(b"hello world\n")
    assert cid == HELLO
    assert not store.has_block(cid)
    with pytest.raises(NotFound, match=str(cid)):
        store.get_block(cid)
    store.put_block(cid, blocks[0].data)
    assert store.has_block(cid)
    assert store.get_block(cid) == b"hello world\n"
    _flip_byte(store.block_path(cid), 3)
    with pytest.raises(IntegrityError, match=f"block {cid} in the store is corrupt"):
        store.get_block(cid)


def test_put_is_idempotent(store: Store) -> None:
    cid, _, blocks = encode_file(b"same bytes")
    store.put_block(cid, blocks[0].data)
    before = store.block_path(cid).stat()
    store.put_block(cid, blocks[0].data)
    after = store.block_path(cid).stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    root, layout = _put_file(store, b"x" * 10)
    layout_stat = store.layout_path(root).stat()
    store.put_layout(root, layout)
    assert store.layout_path(root).stat().st_ino == layout_stat.st_ino
    assert len(_files(store, "blocks")) == 1
    assert len(_files(store, "layouts")) == 1
    assert not _files(store, "tmp")


# -- objects and layouts -----------------------------------------------------------------------


def test_read_object_verifies(store: Store) -> None:
    _, layout = _put_file(store, b"object bytes")
    assert store.read_object(layout.object_sha256) == b"object bytes"
    _flip_byte(store.object_path(layout.object_sha256), 0)
    with pytest.raises(IntegrityError, match="corrupt"):
        store.read_object(layout.object_sha256)
    with pytest.raises(NotFound):
        store.read_object("00" * 32)


def test_layout_serves_verified_slices(store: Store) -> None:
    data = bytes(range(256)) * 2100  # three leaves: 262144 + 262144 + 13312 bytes
    root, layout = _put_file(store, data)
    assert root.codec != RAW
    assert store.get_layout(root) == layout
    assert [length for _, _, length in layout.leaves] == [CHUNK_SIZE, CHUNK_SIZE, 13312]
    assert b"".join(store.iter_layout(layout)) == data
    for start, end in [(0, 10), (CHUNK_SIZE - 5, CHUNK_SIZE + 5), (500_000, None), (7, 7)]:
        assert b"".join(store.iter_layout(layout, start, end)) == data[start:end]
    for cid, offset, length in layout.leaves:
        assert store.has_block(cid)
        assert store.get_block(cid) == data[offset : offset + length]
    assert store.get_block(root)  # the interior node is a block of its own
    assert store.get_layout(HELLO) is None

    # A fresh Store on the same folder finds leaves through the layouts on disk.
    reopened = Store(store.root).open()
    assert reopened.get_block(layout.leaves[2][0]) == data[2 * CHUNK_SIZE :]

    _flip_byte(store.object_path(layout.object_sha256), CHUNK_SIZE + 1)
    assert b"".join(store.iter_layout(layout, 0, 100)) == data[:100]  # the first leaf is whole
    with pytest.raises(IntegrityError, match=f"corrupt at byte {CHUNK_SIZE}"):
        b"".join(store.iter_layout(layout))
    with pytest.raises(IntegrityError):
        reopened.get_block(layout.leaves[1][0])


def test_layout_without_its_object(store: Store) -> None:
    root, layout = _put_file(store, b"gone")
    store.object_path(layout.object_sha256).unlink()
    with pytest.raises(NotFound):
        b"".join(store.iter_layout(layout))
    with pytest.raises(NotFound):
        store.get_block(root)


def test_layout_record_round_trip() -> None:
    leaf = HELLO
    layout = Layout("ab" * 32, 12, ((leaf, 0, 12),))
    assert Layout.from_record(msgpack.unpackb(msgpack.packb(layout.to_record()))) == layout


# -- records and roots -------------------------------------------------------------------------


def test_records(store: Store) -> None:
    key = "cd" * 32
    assert store.get_record(key) is None
    assert not store.has_record(key)
    store.put_record(key, {"cid": "bafy", "sizes": [1, 2], "raw": b"\x00"})
    assert store.has_record(key)
    assert store.get_record(key) == {"cid": "bafy", "sizes": [1, 2], "raw": b"\x00"}
    store.record_path(key).write_bytes(b"\xc1")  # never valid msgpack
    with pytest.raises(IntegrityError, match=f"record {key}"):
        store.get_record(key)


# -- batches -----------------------------------------------------------------------------------


def test_a_batch_is_seen_here_at_once_and_on_disk_when_it_ends(store: Store) -> None:
    other = Store(store.root).open()  # another process, as far as held files go
    _root, layout = _put_file(store, b"x" * 10)
    cid, _, blocks = encode_file(b"a page")
    key = "ef" * 32
    with store.batch():
        store.put_block(cid, blocks[0].data)
        store.put_record(key, {"cid": str(cid)})
        store.add_source(layout.object_sha256, "https://example.invalid/x.whl")
        with store.batch():  # nested: only the outermost batch writes
            store.put_record("0f" * 32, [1])
        assert store.get_block(cid) == b"a page" and store.has_block(cid)
        assert store.get_record(key) == {"cid": str(cid)} and store.has_record(key)
        assert store.sources(layout.object_sha256) == ["https://example.invalid/x.whl"]
        assert not other.has_block(cid) and other.get_record(key) is None
        assert not other.has_record("0f" * 32)
        assert not _files(store, "tmp")
    assert other.get_block(cid) == b"a page"
    assert other.get_record(key) == {"cid": str(cid)}
    assert other.get_record("0f" * 32) == [1]
    assert other.sources(layout.object_sha256) == ["https://example.invalid/x.whl"]
    assert not _files(store, "tmp")


def test_a_held_layout_serves_its_leaves(store: Store) -> None:
    data = os.urandom(CHUNK_SIZE + 100)
    with store.batch():
        root, layout = _put_file(store, data)
        assert store.get_layout(root) == layout
        leaf, _, _ = layout.leaves[1]
        assert store.has_block(leaf)
        assert store.get_block(leaf) == data[CHUNK_SIZE:]
    assert Store(store.root).open().get_block(leaf) == data[CHUNK_SIZE:]


def test_a_batch_names_files_only_once_all_are_written_and_in_order(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    renamed: list[str] = []
    real_replace = os.replace

    def replace(source: str, target: str) -> None:
        if not renamed:  # the first name to appear: every file's bytes must be down already
            temps = sorted((store.root / "tmp").iterdir())
            assert len(temps) == 40
            assert all(t.stat().st_size > 0 for t in temps)
        real_replace(source, target)
        renamed.append(os.path.basename(target))

    monkeypatch.setattr(os, "replace", replace)
    expected = []
    with store.batch():
        for number in range(20):
            cid, _, blocks = encode_file(f"page {number}".encode())
            store.put_block(cid, blocks[0].data)
            key = f"{number:064x}"
            store.put_record(key, {"cid": str(cid)})  # names the block put just before it
            expected += [str(cid), key]
    assert renamed == expected
    assert not _files(store, "tmp")


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The descriptors fsynced from now on (they still are)."""
    calls: list[int] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        calls.append(descriptor)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_a_small_batch_fsyncs_each_file(store: Store, synced: list[int]) -> None:
    with store.batch():
        for number in range(3):
            store.put_record(f"{number:064x}", number)
        assert not synced
    assert len(synced) == 3


def test_a_large_batch_fsyncs_each_file_while_other_writes_are_pending(
    store: Store, synced: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # syncfs would wait for every dirty page of the file system, other programs' too.
    monkeypatch.setattr(store_module, "_dirty_bytes", lambda: 1 << 40)
    with store.batch():
        for number in range(40):
            store.put_record(f"{number:064x}", number)
    assert len(synced) == 40
    assert all(store.get_record(f"{number:064x}") == number for number in range(40))


def test_syncfs_pays_for_many_files_unless_others_have_much_to_write() -> None:
    few = store_module._SYNCFS_FROM - 1
    many = 2400
    quiet = 1 << 20
    busy = store_module._SYNCFS_OTHERS_DIRTY + (8 << 20)
    assert store_module._syncfs_pays(many, quiet, lambda: quiet)
    assert store_module._syncfs_pays(many, 64 << 20, lambda: (64 << 20) + quiet)
    assert not store_module._syncfs_pays(many, quiet, lambda: busy)
    assert not store_module._syncfs_pays(few, quiet, lambda: quiet)
    assert store_module._dirty_bytes() >= 0


def test_a_batch_is_written_as_it_goes(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import ipwhl.store

    monkeypatch.setattr(ipwhl.store, "_HAND_OFF_FILES", 3)
    other = Store(store.root).open()
    with store.batch():
        for number in range(4):
            store.put_record(f"{number:064x}", number)
        ends = time.monotonic() + 10
        while other.get_record(f"{2:064x}") is None and time.monotonic() < ends:
            time.sleep(0.01)  # the first three are on their way to disk, the batch goes on
        assert [other.get_record(f"{n:064x}") for n in range(4)] == [0, 1, 2, None]
        assert [store.get_record(f"{n:064x}") for n in range(4)] == [0, 1, 2, 3]
    assert other.get_record(f"{3:064x}") == 3


def test_puts_wait_for_a_writer_that_falls_behind(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slow disk (here: every group takes 20 ms to become durable) must not let held files
    # pile up without bound, and a file held in any group is found at once.
    monkeypatch.setattr(store_module, "_HAND_OFF_FILES", 4)
    real_sync = store_module._sync_files

    def slow_sync(folder: str, paths: list[str], size: int = 0) -> None:
        time.sleep(0.02)
        real_sync(folder, paths, size)

    monkeypatch.setattr(store_module, "_sync_files", slow_sync)
    most_held = 0
    with store.batch():
        for number in range(200):
            store.put_record(f"{number:064x}", number)
            most_held = max(most_held, len(store._writing))
            assert store.get_record(f"{number:064x}") == number
            assert store.get_record(f"{number // 2:064x}") == number // 2
    assert most_held <= store_module._IN_FLIGHT
    assert not store._writing and not store._writing_index
    fresh = Store(store.root).open()
    assert [fresh.get_record(f"{n:064x}") for n in range(200)] == list(range(200))


def test_after_a_failed_write_nothing_later_appears(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ipwhl.store

    monkeypatch.setattr(ipwhl.store, "_HAND_OFF_FILES", 2)
    real_write = os.write
    failed = threading.Event()

    def write(descriptor: int, data: bytes) -> int:
        if bytes(data) == msgpack.packb("block"):
            failed.set()
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(descriptor, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(StoreError, match="no space left"), store.batch():
        store.put_record("01" * 32, "block")  # stands for a block the next records name
        store.put_record("02" * 32, "first")
        failed.wait(10)
        store.put_record("03" * 32, "names the block")
        store.put_record("04" * 32, "so does this")
    monkeypatch.undo()
    assert [store.get_record(f"{n:02d}" * 32) for n in range(1, 5)] == [None] * 4
    assert not _files(store, "tmp", *FOLDERS)


def test_a_root_writes_the_batch_first(store: Store) -> None:
    other = Store(store.root).open()
    with store.batch():
        store.put_record("aa" * 32, "built")
        store.add_root("line", 1, HELLO, ["aa" * 32])
        assert other.get_record("aa" * 32) == "built"
        assert other.roots() == [("line", 1, HELLO)]


def test_a_batch_that_cannot_be_written_leaves_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(StoreError, match="no space left"), store.batch():
        for number in range(30):
            store.put_record(f"{number:064x}", number)
        monkeypatch.setattr(os, "write", no_space)
    monkeypatch.undo()
    assert not _files(store, "tmp", *FOLDERS)
    assert store.get_record(f"{0:064x}") is None  # no longer held either
    store.put_record(f"{0:064x}", 0)  # and the store still takes writes
    assert store.get_record(f"{0:064x}") == 0


def test_roots(store: Store) -> None:
    first = CID.parse("bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354")
    second = HELLO
    assert store.roots() == []
    store.add_root("main", 2, second)
    store.add_root("main", 1, first)
    store.add_root("beta", 1, second)
    assert store.roots() == [("beta", 1, second), ("main", 1, first), ("main", 2, second)]
    assert (store.root / "roots" / "main" / "1").read_text() == f"{first}\n"
    assert not _files(store, "tmp")


# -- two processes, one store ------------------------------------------------------------------


def _ipwhl(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(MAIN)}
    env.pop("IPWHL_STORE", None)
    return subprocess.Popen(
        [sys.executable, "-m", "ipwhl", *args, "--quiet"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def test_two_processes_share_a_store(tmp_path: Path) -> None:
    release = write_release(
        tmp_path / "release",
        [Project("a", "1.0", requires_dist=["b>=1"]), Project("b", "1.0"),
         Project("c", "3.0", tags=("cp311-cp311-manylinux_2_17_x86_64", "cp312-cp312-win_amd64"))],
    )
    fresh = _ipwhl("build", str(release.path), "--store", str(tmp_path / "fresh"), cwd=tmp_path)
    fresh_code, expected, fresh_err = _finish(fresh)
    assert fresh_code == 0, fresh_err
    assert expected.strip().startswith("bafy")
    for run in range(3):
        shared = tmp_path / f"shared{run}"
        both = [
            _ipwhl("check", str(release.path), "--store", str(shared), cwd=tmp_path)
            for _ in range(2)
        ]
        for code, _, err in map(_finish, both):
            assert code == 0, err
        assert not list((shared / "tmp").iterdir())
        code, built, err = _finish(
            _ipwhl("build", str(release.path), "--store", str(shared), cwd=tmp_path)
        )
        assert code == 0, err
        assert built == expected
