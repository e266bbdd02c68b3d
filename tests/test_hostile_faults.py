"""A damaged store: a byte flipped on disk, a file that became a directory or a dangling
symlink, an unreadable layout, a disk that answers EIO. `get`, `export`, `import` and `serve`
never hand out wrong bytes: each stops with an error that names the damage (and `store verify`),
leaving no half-written output behind."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import IncompleteRead
from pathlib import Path

import pytest

from ipwhl import car, cli
from ipwhl.build import build_release, load_plan
from ipwhl.cid import CID, DAG_PB, RAW
from ipwhl.gateway import running
from ipwhl.store import Store
from tests.releasefactory import Project, write_release

WHEEL = "demo-1.0-py3-none-any.whl"


@dataclass
class Built:
    store: Store
    root: CID
    wheel: bytes
    base: Path

    @property
    def object_path(self) -> Path:
        return self.store.object_path(hashlib.sha256(self.wheel).hexdigest())


@pytest.fixture
def built(tmp_path: Path) -> Built:
    text = "".join(f"line_{i} = {i}\n" for i in range(40_000))  # a wheel of a few leaves
    spec = write_release(tmp_path, [Project("demo", "1.0", modules={"demo/__init__.py": text})])
    store = Store(tmp_path / "store").open()
    root = build_release(store, load_plan(spec.path)).root
    return Built(store, root, spec.wheels[WHEEL].read_bytes(), tmp_path)


def ipwhl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run the CLI in this process; (exit code, stderr). A traceback fails the test."""
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    return code, err


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(".ipwhl-part")]


# --- a flipped byte ------------------------------------------------------------------------------


def test_get_refuses_a_flipped_object_and_leaves_no_half_file(built, capsys):
    flip(built.object_path, len(built.wheel) // 2)
    out = built.base / "out"
    code, err = ipwhl(
        capsys, "get", str(built.root), "-o", str(out), "--store", str(built.store.root)
    )
    assert code == 6
    assert "corrupt" in err and "store verify" in err
    assert not (out / "simple" / "demo" / WHEEL).exists()
    assert leftovers(out) == []  # used to leave .demo-1.0-py3-none-any.whl.ipwhl-part


def test_export_refuses_a_flipped_object_and_leaves_no_car(built, capsys):
    flip(built.object_path, 10)
    out = built.base / "release.car"
    code, err = ipwhl(capsys, "export", str(built.root), "-o", str(out),
                      "--store", str(built.store.root))
    assert code == 6 and "store verify" in err
    assert not out.exists() and leftovers(built.base) == []


def root_only_car(built: Built, tmp_path: Path) -> tuple[Store, list[CID], Path]:
    """A store holding the release, and a CAR of the root block alone (it relies on the store
    for the rest); the CIDs of the release's blocks in the CAR's order."""
    exported = io.BytesIO()
    car.write_car(built.store, built.root, exported)
    other = Store(tmp_path / "other").open()
    car.import_car(other, io.BytesIO(exported.getvalue()))
    sections = list(car.CarReader(io.BytesIO(exported.getvalue())).sections())
    partial = tmp_path / "root-only.car"
    partial.write_bytes(b"".join(car.car_stream([built.root], [sections[0][:2]])))
    return other, [cid for cid, _, _ in sections], partial


def test_import_refuses_to_build_on_a_corrupt_node_of_the_store(built, capsys, tmp_path):
    other, cids, partial = root_only_car(built, tmp_path)
    node = next(cid for cid in cids[1:] if cid.codec == DAG_PB)
    flip(other.block_path(node), 3)
    before = sorted(other.names("blocks"))
    code, err = ipwhl(capsys, "import", str(partial), "--store", str(other.root))
    assert code == 8 and "is corrupt" in err and "store verify" in err
    assert sorted(other.names("blocks")) == before


def test_a_corrupt_leaf_an_import_relies_on_is_caught_when_read(built, capsys, tmp_path):
    # Import does not read the leaves the store already has (it never hands them out); the
    # first read of the damaged one refuses it.
    other, cids, partial = root_only_car(built, tmp_path)
    leaf = next(cid for cid in cids if cid.codec == RAW and other.block_path(cid).exists())
    flip(other.block_path(leaf), 0)
    assert ipwhl(capsys, "import", str(partial), "--store", str(other.root))[0] == 0
    code, err = ipwhl(capsys, "get", str(built.root), "-o", str(tmp_path / "out"),
                      "--store", str(other.root))
    assert code == 6 and f"block {leaf} in the store is corrupt" in err


# --- import mends what it would have skipped as already present -------------------------------


def exported(built: Built, tmp_path: Path) -> Path:
    path = tmp_path / "release.car"
    with open(path, "wb") as out:
        car.write_car(built.store, built.root, out)
    return path


def verify_clean(store: Store, capsys: pytest.CaptureFixture[str]) -> bool:
    code = cli.main(["store", "verify", "--store", str(store.root)])
    capsys.readouterr()
    return code == 0


def test_import_replaces_corrupt_blocks_and_leaves_it_would_have_skipped(built, capsys, tmp_path):
    # A store filled by an import keeps each leaf as a block file of its own.
    whole = exported(built, tmp_path)
    other = Store(tmp_path / "other").open()
    car.import_car(other, whole)
    cids = [cid for cid, _, _ in car.CarReader(io.BytesIO(whole.read_bytes())).sections()]
    leaf = next(cid for cid in cids if cid.codec == RAW and len(other.get_block(cid)) > 1000)
    node = next(cid for cid in cids if cid.codec == DAG_PB and cid != built.root)
    good = {cid: other.block_path(cid).read_bytes() for cid in (leaf, node)}
    flip(other.block_path(leaf), 500)
    flip(other.block_path(node), 3)
    assert not verify_clean(other, capsys)
    code, err = ipwhl(capsys, "import", str(whole), "--store", str(other.root))
    assert code == 0 and "2 of the store's copies were corrupt and are replaced" in err, err
    assert {cid: other.block_path(cid).read_bytes() for cid in good} == good  # was kept corrupt
    assert verify_clean(other, capsys)
    assert leftovers(other.root) == [] and not any((other.root / "tmp").iterdir())
    again = car.import_car(other, whole)
    assert (again.written, again.replaced, again.present) == (0, 0, len(set(cids)))


def test_import_mends_a_leaf_held_in_an_object(built, capsys, tmp_path):
    # A built store keeps a wheel as one object; its leaves are slices of it.
    whole = exported(built, tmp_path)
    flip(built.object_path, len(built.wheel) // 3)
    assert not verify_clean(built.store, capsys)
    result = car.import_car(built.store, whole)
    assert result.replaced == 1 and result.written == 1
    assert built.object_path.read_bytes() == built.wheel
    assert verify_clean(built.store, capsys)
    code, _ = ipwhl(capsys, "get", str(built.root), "-o", str(tmp_path / "out"),
                    "--store", str(built.store.root))
    assert code == 0 and (tmp_path / "out" / "simple" / "demo" / WHEEL).read_bytes() == built.wheel


def test_an_import_that_fails_replaces_nothing(built, capsys, tmp_path):
    whole = exported(built, tmp_path)
    flip(built.object_path, 7)
    damaged = built.object_path.read_bytes()
    data = bytearray(whole.read_bytes())
    data[-10] ^= 0x01  # the CAR's last block no longer hashes to its CID
    broken = tmp_path / "broken.car"
    broken.write_bytes(bytes(data))
    code, _ = ipwhl(capsys, "import", str(broken), "--store", str(built.store.root))
    assert code != 0
    assert built.object_path.read_bytes() == damaged  # checked whole before anything is written


def test_serve_never_sends_a_flipped_object(built):
    flip(built.object_path, len(built.wheel) - 5)
    with running(built.store) as url:
        target = f"{url}/ipfs/{built.root}/simple/demo/{WHEEL}"
        # The bad leaf is read after the headers went out: the connection is cut, never finished.
        with (
            pytest.raises((urllib.error.HTTPError, ConnectionError, OSError, IncompleteRead)),
            urllib.request.urlopen(target, timeout=10) as response,
        ):
            response.read()


def test_an_unreadable_layout_is_reported_as_damage(built, capsys):
    layout = next(path for _, path in built.store.entries("layouts"))
    os.chmod(layout, 0o644)
    layout.write_bytes(b"\xc1 not msgpack")
    code, err = ipwhl(capsys, "get", str(built.root), "-o", str(built.base / "out"),
                      "--store", str(built.store.root))
    assert code == 6 and "unreadable" in err and "store verify" in err


# --- files that are no longer files -----------------------------------------------------------


def replace_with(path: Path, damage: str, base: Path) -> None:
    path.unlink()
    if damage == "directory":
        path.mkdir()
        (path / "inside").write_bytes(b"x")
    elif damage == "fifo":
        os.mkfifo(path)
    elif damage == "dangling symlink":
        path.symlink_to(base / "nowhere")
    elif damage == "symlink loop":
        path.symlink_to(path)
    else:
        path.write_bytes(b"")


# What each damage is reported as: taken for a file of the wrong bytes, for no file, or for
# something that is not a file at all (store damage: exit 9 and `store verify --repair`).
DAMAGE_EXIT = {"directory": 9, "fifo": 9, "symlink loop": 9, "dangling symlink": 7, "empty": 6}


@pytest.mark.parametrize("damage", list(DAMAGE_EXIT))
def test_an_object_that_is_no_longer_a_file(built, capsys, damage):
    path = built.object_path
    replace_with(path, damage, built.base)
    out = built.base / "out"
    code, err = ipwhl(
        capsys, "get", str(built.root), "-o", str(out), "--store", str(built.store.root)
    )
    assert code == DAMAGE_EXIT[damage], err  # a FIFO was read forever; a directory was exit 1
    assert err.startswith("ipwhl: error: ")
    if code == 9:
        assert f"{path} is a " in err and "run `ipwhl store verify --repair`" in err
    assert not (out / "simple" / "demo" / WHEEL).exists() and leftovers(out) == []
    with running(built.store) as url:
        target = f"{url}/ipfs/{built.root}/simple/demo/{WHEEL}"
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(target, timeout=10)
        assert caught.value.code in {404, 500}
        assert b"Traceback" not in caught.value.read()
        with urllib.request.urlopen(f"{url}/ipfs/{built.root}/simple/", timeout=10) as page:
            assert page.status == 200  # and the gateway goes on serving


@pytest.mark.parametrize("damage", ["directory", "fifo"])
def test_a_block_replaced_by_something_else(built, capsys, tmp_path, damage):
    block = built.store.block_path(built.root)
    replace_with(block, damage, built.base)
    store = ["--store", str(built.store.root)]
    for argv in (["get", str(built.root), "-o", str(tmp_path / "out")],
                 ["export", str(built.root), "-o", str(tmp_path / "out.car")],
                 ["gc"]):  # gc refuses to walk past it (it would free what lies under it)
        code, err = ipwhl(capsys, *argv, *store)
        assert code == 9, (argv, err)  # was 1: "Is a directory"
        assert f"{block} is a " in err and "store verify --repair" in err
    assert not (tmp_path / "out.car").exists()
    assert cli.main(["store", "verify", *store]) == 9
    report = capsys.readouterr()
    assert "Traceback" not in report.err
    assert f"corrupt block {block.name}: a {'directory' if damage == 'directory' else 'FIFO'} " \
           "where its file should be" in report.out + report.err
    with running(built.store) as url:
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{url}/ipfs/{built.root}/simple/demo/{WHEEL}", timeout=10)
        assert caught.value.code == 500 and b"Traceback" not in caught.value.read()
        with urllib.request.urlopen(f"{url}/", timeout=10) as page:
            assert page.status == 200


def test_store_verify_lists_and_repairs_an_object_that_became_a_directory(built, capsys, tmp_path):
    replace_with(built.object_path, "directory", built.base)
    store = ["--store", str(built.store.root)]
    code, _ = ipwhl(capsys, "store", "verify", *store)
    assert code == 9
    code, _ = ipwhl(capsys, "store", "verify", "--repair", *store)
    assert code == 0  # removed and refetched from the wheel's source
    assert built.object_path.is_file()
    assert ipwhl(capsys, "get", str(built.root), "-o", str(tmp_path / "out"), *store)[0] == 0
    assert (tmp_path / "out" / "simple" / "demo" / WHEEL).read_bytes() == built.wheel


def test_a_build_that_needs_an_object_that_became_a_directory(built, capsys, tmp_path):
    replace_with(built.object_path, "directory", built.base)
    text = "".join(f"line_{i} = {i}\n" for i in range(40_000))
    other = write_release(tmp_path / "other", [
        Project("demo", "1.0", modules={"demo/__init__.py": text}), Project("more", "1.0")])
    code, err = ipwhl(capsys, "build", str(other.path), "--store", str(built.store.root))
    # Store damage, not a check the wheel failed (that finding would be kept in a record).
    assert code == 9 and f"{built.object_path} is a directory" in err, err


# --- EIO from a real block device ---------------------------------------------------------------


@contextlib.contextmanager
def eio_store(where: Path, built: Built) -> Iterator[Path]:
    """A copy of the store on an ext4 loop device whose wheel object sits past the device's end
    once it is shrunk: reading it then fails with EIO from the kernel. Skips where loop devices,
    mounting or dropping the page cache are not allowed (it needs root)."""
    if os.geteuid() != 0 or not shutil.which("losetup") or not shutil.which("mkfs.ext4"):
        pytest.skip("EIO needs root, losetup and mkfs.ext4 (a loop device)")
    image = where / "disk.img"
    mount = where / "mnt"
    mount.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(32 << 20)

    def run(*command: str) -> str:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"{command[0]} failed here: {done.stderr.strip()[:200]}")
        return done.stdout.strip()

    device = run("losetup", "--find", "--show", str(image))
    try:
        run("mkfs.ext4", "-q", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0",
            device)
        run("mount", device, str(mount))
        try:
            copy = mount / "store"
            shutil.copytree(built.store.root, copy, symlinks=True)
            obj = copy / built.object_path.relative_to(built.store.root)
            # Rewrite the object last, so its blocks are the highest allocated on the device.
            data = obj.read_bytes()
            obj.unlink()
            run("sync", "-f", str(copy))  # syncfs: this file system only
            with open(obj, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            extents = run("filefrag", "-b4096", "-v", str(obj)).splitlines()
            first = min(
                int(line.split(":")[2].split("..")[0])
                for line in extents if line.strip()[:1].isdigit()
            )
            run("sync", "-f", str(copy))
            # Shrink the device to end where the object begins; drop the cached pages.
            os.truncate(image, first * 4096)
            run("losetup", "--set-capacity", device)
            try:
                Path("/proc/sys/vm/drop_caches").write_text("3\n")
            except OSError as exc:
                pytest.skip(f"cannot drop the page cache: {exc}")
            try:
                obj.read_bytes()
            except OSError as exc:
                if exc.errno != errno.EIO:
                    pytest.skip(f"reading past the device's end gave {exc}, not EIO")
            else:
                pytest.skip("the object stayed readable after shrinking the device")
            yield copy
        finally:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


def test_eio_on_a_store_object_is_a_clean_error_and_serves_nothing(built, capsys, tmp_path):
    with eio_store(tmp_path, built) as copy:
        out = tmp_path / "out"
        code, err = ipwhl(capsys, "get", str(built.root), "-o", str(out), "--store", str(copy))
        assert code != 0 and "Input/output error" in err, err
        assert not (out / "simple" / "demo" / WHEEL).exists() and leftovers(out) == []
        with running(Store(copy)) as url:
            target = f"{url}/ipfs/{built.root}/simple/demo/{WHEEL}"
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(target, timeout=10)
            assert caught.value.code == 500
