"""Tests for ipwhl.gc: roots, what they reach, gc (dry, bounded, by age), its lock, and gc beside
builds and a gateway — all on real stores on disk."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ipwhl import cli
from ipwhl.build import build_release, load_plan
from ipwhl.cid import CID
from ipwhl.errors import NotFound, StoreCorrupt, StoreError
from ipwhl.gateway import running
from ipwhl.gc import (
    collect_garbage,
    list_roots,
    mark_roots,
    parse_bytes,
    parse_duration,
    pin,
    prune_roots,
    unpin,
)
from ipwhl.store import Store
from ipwhl.unixfs import encode_directory
from ipwhl.verify import verify_store
from tests.releasefactory import Project, Release, write_release

MAIN = Path(__file__).resolve().parents[1]
EMPTY_DIR = CID.parse("bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354")
HELLO = CID.parse("bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4")
SHARED = Project("shared", "1.0")
BIG = Project(
    "big", "2.0", modules={"big/__init__.py": random.Random(7).randbytes(400_000).hex()}
)


def _files(store: Store, kind: str) -> set[str]:
    return {name for name, _ in store.entries(kind)}


def _wheel_objects(store: Store, release: Release) -> dict[str, str]:
    """Wheel file name -> sha256 of the object it is stored as."""
    import hashlib

    return {name: hashlib.sha256(path.read_bytes()).hexdigest()
            for name, path in release.wheels.items()}


def _build(store: Store, release: Release) -> tuple[CID, int]:
    """Build a release in-process: (root CID, steps run)."""
    result = build_release(store, load_plan(release.path))
    return result.root, sum(result.realiser.ran.values())


def _ipwhl(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(MAIN)}
    env.pop("IPWHL_STORE", None)
    return subprocess.Popen(
        [sys.executable, "-m", "ipwhl", *args], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


@pytest.fixture
def two_releases(tmp_path: Path) -> tuple[Release, Release]:
    """Two lines, "one" and "two", sharing the wheels of `shared` and `big`."""
    one = write_release(tmp_path / "one", [Project("alpha", "1.0", requires_dist=["shared"]),
                                           SHARED, BIG], name="one")
    two = write_release(tmp_path / "two", [Project("gamma", "3.0", requires_dist=["big>=2"]),
                                           SHARED, BIG], name="two")
    return one, two


# -- gc ----------------------------------------------------------------------------------------


def test_gc_after_dropping_one_of_two_releases_that_share_wheels(
    store: Store, two_releases: tuple[Release, Release], tmp_path: Path, unixfs_oracle
) -> None:
    one, two = two_releases
    one_root, _ = _build(store, one)
    two_root, _ = _build(store, two)
    objects_one, objects_two = _wheel_objects(store, one), _wheel_objects(store, two)
    assert collect_garbage(store).total_freed == 0  # everything is rooted

    unpin(store, "one")
    report = collect_garbage(store)
    left = _files(store, "objects")
    assert objects_two["shared-1.0-py3-none-any.whl"] in left  # shared wheels survive
    assert objects_two["big-2.0-py3-none-any.whl"] in left
    assert objects_one["alpha-1.0-py3-none-any.whl"] not in left  # the other's go
    assert left == set(objects_two.values())
    assert report.files["objects"] == 1 and report.files["records"] > 0
    assert not store.has_block(one_root)
    assert verify_store(store).exit_code == 0

    # The surviving release still serves, byte for byte, and writes out to the same CID.
    with running(store) as url:
        big = f"{url}/ipfs/{two_root}/simple/big/big-2.0-py3-none-any.whl"
        with urllib.request.urlopen(big, timeout=10) as answer:
            assert answer.read() == two.wheels["big-2.0-py3-none-any.whl"].read_bytes()
    assert cli.main(["get", str(two_root), "-o", str(tmp_path / "out"), "--store",
                     str(store.root), "-q"]) == 0
    assert unixfs_oracle(tmp_path / "out", "--cid-version", "1") == str(two_root)

    # A rebuild of the rooted release runs nothing; the dropped one is rebuilt to its old CID.
    assert _build(store, two) == (two_root, 0)
    rebuilt, ran = _build(store, one)
    assert rebuilt == one_root and ran > 0


def test_dry_run_says_what_gc_would_delete_and_deletes_nothing(
    store: Store, two_releases: tuple[Release, Release]
) -> None:
    one, two = two_releases
    _build(store, one)
    _build(store, two)
    unpin(store, "one")
    before = {kind: _files(store, kind) for kind in ("objects", "blocks", "records")}
    dry = collect_garbage(store, dry_run=True)
    assert {kind: _files(store, kind) for kind in before} == before
    assert "would delete" in str(dry) and dry.total_freed > 0
    real = collect_garbage(store)
    assert (real.files, real.freed) == (dry.files, dry.freed)
    assert "would" not in str(real)


def test_max_freed_stops_early_and_a_second_gc_finishes(
    store: Store, two_releases: tuple[Release, Release]
) -> None:
    one, two = two_releases
    _build(store, one)
    two_root, _ = _build(store, two)
    unpin(store, "one")
    everything = collect_garbage(store, dry_run=True).total_freed
    bounded = collect_garbage(store, max_freed=1)
    assert bounded.stopped_early and 1 <= bounded.total_freed < everything
    assert "stopped at --max-freed" in str(bounded)
    rest = collect_garbage(store)
    assert bounded.total_freed + rest.total_freed == everything
    assert verify_store(store).exit_code == 0
    assert _build(store, two) == (two_root, 0)


def test_older_than_keeps_young_unrooted_records_and_what_they_name(
    store: Store, two_releases: tuple[Release, Release]
) -> None:
    one, _ = two_releases
    root, _ = _build(store, one)
    unpin(store, "one")
    # Young records keep what they name (pages, directories, wheels): a rebuild runs nothing.
    assert collect_garbage(store, older_than=3600).total_freed == 0
    assert _build(store, one) == (root, 0)
    unpin(store, "one")
    a_day_ago = time.time() - 86400
    for _, path in store.entries("records"):
        os.utime(path, (a_day_ago, a_day_ago))
    gone = collect_garbage(store, older_than=3600)
    assert gone.files["records"] > 0 and gone.files["objects"] == 3
    assert not _files(store, "records") and not _files(store, "objects")


def test_gc_removes_abandoned_temporaries_only(store: Store) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    abandoned = store.root / "tmp" / f"{dead.stdout.strip()}-0123456789abcdef.part"
    abandoned.write_bytes(b"half a wheel")
    ours = store.root / "tmp" / f"{os.getpid()}-fedcba9876543210"
    ours.write_bytes(b"being written")
    report = collect_garbage(store)
    assert report.files["tmp"] == 1
    assert not abandoned.exists() and ours.exists()


def test_gc_refuses_a_rooted_dag_it_cannot_read(
    store: Store, two_releases: tuple[Release, Release]
) -> None:
    one, _ = two_releases
    root, _ = _build(store, one)
    store.add_root("empty", 1, EMPTY_DIR)
    store.block_path(root).write_bytes(b"\xff not dag-pb")
    before = _files(store, "objects") | _files(store, "blocks")
    with pytest.raises(StoreCorrupt, match="store verify --repair"):
        collect_garbage(store)
    assert _files(store, "objects") | _files(store, "blocks") == before
    (store.root_path("broken", 1)).parent.mkdir()
    store.root_path("broken", 1).write_text("not a cid\n")
    with pytest.raises(StoreCorrupt, match="root file"):
        collect_garbage(store, dry_run=True)


def test_missing_blocks_of_a_pinned_root_are_reported_not_fatal(store: Store) -> None:
    absent = HELLO
    assert pin(store, "mirror", absent) == (1, 1)
    marks = mark_roots(store)
    assert marks.missing == [("mirror#1", f"block {absent}")]
    collect_garbage(store)  # nothing to follow, nothing to lose
    assert [(r.name, r.sequence, r.cid, r.missing, r.built) for r in list_roots(store)] == [
        ("mirror", 1, absent, 1, False)
    ]


# -- roots -------------------------------------------------------------------------------------


def test_roots_list_pin_unpin_and_keep(
    store: Store, two_releases: tuple[Release, Release], capsys: pytest.CaptureFixture[str]
) -> None:
    one, _ = two_releases
    root, _ = _build(store, one)
    # Pinning the same release under another line takes the release's own sequence.
    assert pin(store, "mirror", root) == (1, 0)
    assert pin(store, "mirror", root) == (1, 0)  # idempotent
    _, _, (empty,) = encode_directory([])
    store.put_block(empty.cid, empty.data)
    store.add_root("one", 2, EMPTY_DIR)  # a release #2 of the line, from elsewhere
    assert pin(store, "one", root) == (1, 0)  # #1 is this very release
    assert pin(store, "one", EMPTY_DIR) == (2, 0)  # no release.toml: the #2 already there
    assert pin(store, "one", HELLO) == (3, 1)  # no release.toml: the next sequence
    store.add_root("clash", 1, EMPTY_DIR)
    with pytest.raises(StoreError, match=r"clash#1 is already"):
        pin(store, "clash", root)  # the release says #1; #1 is taken by another CID
    listed = {(r.name, r.sequence): r for r in list_roots(store)}
    assert sorted(listed) == [("clash", 1), ("mirror", 1), ("one", 1), ("one", 2), ("one", 3)]
    assert listed[("one", 1)].built and not listed[("mirror", 1)].built
    assert listed[("one", 1)].closure_bytes > listed[("mirror", 1)].closure_bytes > 0
    assert prune_roots(store, "one", 1) == [1, 2]
    unpin(store, "clash")
    assert [(r.name, r.sequence) for r in list_roots(store)] == [("mirror", 1), ("one", 3)]
    with pytest.raises(StoreError, match="not usable"):
        pin(store, "../escape", root)

    assert cli.main(["roots", "--store", str(store.root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split("\t")[:3] == ["mirror", "1", str(root)]
    assert out[0].endswith("pinned")
    assert cli.main(["roots", "rm", "mirror@1", "--store", str(store.root), "-q"]) == 0
    assert cli.main(["roots", "rm", "mirror", "--store", str(store.root)]) == NotFound.exit_code
    assert "no root mirror" in capsys.readouterr().err
    assert cli.main(["roots", "add", "again", str(root), "--store", str(store.root)]) == 0
    assert [r.name for r in list_roots(store)] == ["again", "one"]
    with pytest.raises(NotFound):
        unpin(store, "one", 7)


def test_build_keep_n_unroots_older_releases(tmp_path: Path) -> None:
    release = write_release(tmp_path / "rel", [SHARED], name="line")
    store_dir = str(tmp_path / "store")
    code, first, err = _finish(_ipwhl("build", str(release.path), "--store", store_dir, "-q"))
    assert code == 0, err
    code, second, err = _finish(_ipwhl("build", str(release.path), "--store", store_dir,
                                       "--on-top-of", first.strip(), "--keep", "1"))
    assert code == 0, err
    assert "unrooted line #1 (--keep 1)" in err
    assert [(s, str(c)) for _, s, c in Store(store_dir).roots()] == [(2, second.strip())]
    code, _, err = _finish(_ipwhl("build", str(release.path), "--store", store_dir,
                                  "--keep", "0"))
    assert code == 2 and "at least 1" in err


def test_amounts() -> None:
    assert parse_duration("90") == 90 and parse_duration("15m") == 900
    assert parse_duration("7d") == 7 * 86400 and parse_duration("2w") == 14 * 86400
    assert parse_bytes("1000") == 1000 and parse_bytes("500K") == 500 * 1024
    assert parse_bytes("2GiB") == parse_bytes("2g") == 2 << 30
    for bad in ("", "7 days", "-1d"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)
    with pytest.raises(ValueError, match="not a size"):
        parse_bytes("lots")


def test_gc_cli(store: Store, two_releases: tuple[Release, Release],
                capsys: pytest.CaptureFixture[str]) -> None:
    one, _ = two_releases
    _build(store, one)
    args = ["--store", str(store.root)]
    assert cli.main(["gc", "--dry-run", *args]) == 0
    assert capsys.readouterr().out.strip() == "ipwhl: gc: would delete nothing; would free 0 B"
    assert cli.main(["roots", "rm", "one", *args, "-q"]) == 0
    assert cli.main(["gc", "--older-than", "1h", "--max-freed", "1G", *args]) == 0
    assert "deleted" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:
        cli.main(["gc", "--older-than", "soon", *args])
    assert usage.value.code == 2


# -- the lock, and gc beside other processes -----------------------------------------------------


def test_gc_waits_for_a_build_holding_the_lock(store: Store) -> None:
    waited = threading.Event()
    done = threading.Event()
    with store.lock():
        worker = threading.Thread(
            target=lambda: (collect_garbage(store, on_wait=waited.set), done.set())
        )
        worker.start()
        assert waited.wait(5)
        time.sleep(0.1)
        assert not done.is_set()  # gc cannot start while a build holds the lock
    worker.join(5)
    assert done.is_set()
    busy = Store(store.root).lock(wait=False)
    with store.lock(exclusive=True), pytest.raises(StoreError, match="in use"), busy:
        pass


def test_a_build_and_a_gc_at_once(tmp_path: Path, two_releases: tuple[Release, Release]) -> None:
    one, two = two_releases
    clean = Store(tmp_path / "clean").open()
    expected, _ = _build(clean, two)
    rng = random.Random(1)
    for run in range(3):
        store = Store(tmp_path / f"store{run}").open()
        _build(store, one)
        unpin(store, "one")
        # Unrooted records and objects of `two`: a build reuses them, a gc wants them gone.
        code, _, err = _finish(_ipwhl("check", str(two.path), "--store", str(store.root), "-q"))
        assert code == 0, err
        build = _ipwhl("build", str(two.path), "--store", str(store.root), "-q")
        time.sleep(rng.uniform(0, 0.3))
        gc = _ipwhl("gc", "--store", str(store.root))
        (build_code, built, build_err), (gc_code, _, gc_err) = _finish(build), _finish(gc)
        assert build_code == 0, build_err
        assert gc_code == 0, gc_err
        assert built.strip() == str(expected)
        assert verify_store(store).exit_code == 0
        assert _build(store, two) == (expected, 0)


def test_two_builds_of_different_releases_at_once(
    tmp_path: Path, two_releases: tuple[Release, Release]
) -> None:
    expected = {}
    for release in two_releases:
        expected[release.path] = str(_build(Store(tmp_path / f"clean-{release.path.parent.name}")
                                            .open(), release)[0])
    store = tmp_path / "shared-store"
    builds = {r.path: _ipwhl("build", str(r.path), "--store", str(store), "-q")
              for r in two_releases}
    for path, process in builds.items():
        code, out, err = _finish(process)
        assert code == 0, err
        assert out.strip() == expected[path]
    opened = Store(store).open()
    assert verify_store(opened).exit_code == 0
    assert sorted(name for name, _, _ in opened.roots()) == ["one", "two"]


def test_a_gateway_serves_during_a_gc(
    tmp_path: Path, store: Store, two_releases: tuple[Release, Release]
) -> None:
    one, two = two_releases
    garbage = write_release(tmp_path / "garbage",
                            [Project(f"junk{i:02d}", "1.0") for i in range(30)], name="junk")
    _build(store, garbage)
    _build(store, one)
    root, _ = _build(store, two)
    unpin(store, "junk")
    unpin(store, "one")
    wheel = two.wheels["big-2.0-py3-none-any.whl"].read_bytes()
    target = f"/ipfs/{root}/simple/big/big-2.0-py3-none-any.whl"
    answers: list[tuple[float, bytes]] = []
    reports = []

    def collect() -> None:
        reports.append(collect_garbage(store))
        reports.append(time.monotonic())

    with running(store) as url:
        gc = threading.Thread(target=collect)
        started = time.monotonic()
        gc.start()
        while gc.is_alive() or len(answers) < 5:
            with urllib.request.urlopen(url + target, timeout=10) as answer:
                answers.append((time.monotonic(), answer.read()))
        gc.join()
    report, ended = reports
    assert report.files["objects"] == 31  # junk and alpha
    assert all(body == wheel for _, body in answers)
    assert sum(started < at < ended for at, _ in answers) >= 2  # served while gc ran
    assert _files(store, "objects") == set(_wheel_objects(store, two).values())


def test_a_gateway_started_before_a_build_serves_the_builds_raw_leaves(
    tmp_path: Path, two_releases: tuple[Release, Release], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ipwhl.store

    one, _ = two_releases
    serving = Store(tmp_path / "store").open()
    monkeypatch.setattr(ipwhl.store, "_LEAF_RESCAN", 0.0)
    with running(serving) as url:
        absent = f"{url}/ipfs/{HELLO}?format=raw"
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(absent, timeout=10)  # the leaf index is built, empty
        root, _ = _build(Store(serving.root), one)  # another Store: as another process
        big = serving.get_layout(_file_cid(serving, root, "big"))
        assert big is not None
        leaf, offset, length = big.leaves[1]
        with urllib.request.urlopen(f"{url}/ipfs/{leaf}?format=raw", timeout=10) as answer:
            data = answer.read()
    wheel = one.wheels["big-2.0-py3-none-any.whl"].read_bytes()
    assert data == wheel[offset : offset + length]


def _file_cid(store: Store, root: CID, project: str) -> CID:
    from ipwhl.dag import resolve

    return resolve(store, root, ["simple", project, f"{project}-2.0-py3-none-any.whl"]).cid
