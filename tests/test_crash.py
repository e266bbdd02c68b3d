"""Crash safety on a real store: `ipwhl build` killed with SIGKILL at random points leaves a store
that `store verify` passes, and the next build finishes with the clean build's CID; a full disk
(a 2 MiB tmpfs) gives a clear error and no partial objects."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipwhl.errors import StoreError
from ipwhl.gc import collect_garbage
from ipwhl.store import Store
from ipwhl.verify import verify_store
from tests.releasefactory import Project, Release, write_release

MAIN = Path(__file__).resolve().parents[1]
KILLS = 16


def _ipwhl(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(MAIN)}
    env.pop("IPWHL_STORE", None)
    return subprocess.Popen(
        [sys.executable, "-m", "ipwhl", *args], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _build(release: Release, store: Path) -> tuple[int, str, str, float]:
    started = time.monotonic()
    process = _ipwhl("build", str(release.path), "--store", str(store))
    out, err = process.communicate(timeout=120)
    return process.returncode, out.strip(), err, time.monotonic() - started


def _incompressible(seed: int, size: int) -> dict[str, str]:
    # Hex of random bytes deflates to about half: a wheel of about `size` bytes.
    return {f"blob{seed}/__init__.py": random.Random(seed).randbytes(size).hex()}


@pytest.fixture
def release(tmp_path: Path) -> Release:
    """Twenty small projects in a chain and two wheels of several chunks."""
    projects = [
        Project(f"p{i:02d}", "1.0", requires_dist=[f"p{i - 1:02d}>=1"] if i else [])
        for i in range(20)
    ]
    projects += [Project(f"blob{seed}", "1.0", modules=_incompressible(seed, 600_000))
                 for seed in (1, 2)]
    return write_release(tmp_path / "rel", projects)


def test_sigkill_at_random_points_then_verify_and_rebuild(
    tmp_path: Path, release: Release
) -> None:
    code, expected, err, clean_time = _build(release, tmp_path / "clean")
    assert code == 0, err
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    store_dir = tmp_path / "store"
    killed_mid_build = 0
    for attempt in range(KILLS):
        process = _ipwhl("build", str(release.path), "--store", str(store_dir), "-q")
        time.sleep(rng.uniform(0.05, min(clean_time, 1.0)))
        if process.poll() is None:
            killed_mid_build += 1
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        store = Store(store_dir).open()
        report = verify_store(store)
        assert report.exit_code == 0, (seed, attempt, report.lines())
        if attempt % 2 == 1:
            # Drop what the killed builds left (nothing is rooted yet, or the root is dropped),
            # so later kills land in a cold build again.
            for name, sequence, _ in store.roots():
                store.remove_root(name, sequence)
            collect_garbage(store)
            assert not list((store_dir / "tmp").iterdir())
    assert killed_mid_build >= KILLS // 4, seed  # most kills land inside a build
    code, built, err, _ = _build(release, store_dir)
    assert code == 0, (seed, err)
    assert built == expected, seed
    assert verify_store(Store(store_dir)).exit_code == 0
    code, built, err, _ = _build(release, store_dir)
    assert (code, built) == (0, expected)
    assert " 0 steps run" in err  # the finished build left everything a rebuild needs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, mounted for the test (needs root and mount; skips otherwise)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8); ENOSPC is not tested")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); ENOSPC is not tested")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_is_a_clear_error_and_leaves_no_partial_objects(
    tmp_path: Path, small_disk: Path
) -> None:
    # Three wheels of about 0.9 MiB each: the second or third cannot fit in 2 MiB.
    release = write_release(tmp_path / "rel", [
        Project(f"blob{seed}", "1.0", modules=_incompressible(seed, 900_000))
        for seed in (1, 2, 3)
    ])
    store_dir = small_disk / "store"
    code, out, err, _ = _build(release, store_dir)
    assert code == StoreError.exit_code == 8, err
    assert out == ""
    assert "ipwhl: error: no space left on the store's disk" in err
    assert "Traceback" not in err
    store = Store(store_dir)
    assert not list((store_dir / "tmp").iterdir())  # nothing half-written is left
    report = verify_store(store)
    assert report.exit_code == 0, report.lines()
    assert report.checked["objects"] < 3
    # Once there is room again (here: a bigger disk), the same store finishes the build.
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    code, out, err, _ = _build(release, store_dir)
    assert code == 0, err
    assert verify_store(store).exit_code == 0
