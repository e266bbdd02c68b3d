"""Tests for `ipwhl store verify [--repair]` (ipwhl.verify) on real stores: each kind of damage is
found, reported with its own exit code, and repaired or removed; a rebuild then restores the
release to the same CID."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import msgpack
import pytest

from ipwhl import cli
from ipwhl.build import build_release, load_plan
from ipwhl.cid import CID
from ipwhl.dag import iter_bytes, resolve
from ipwhl.errors import IntegrityError, StoreCorrupt, StoreIncomplete
from ipwhl.gc import collect_garbage
from ipwhl.store import Store
from ipwhl.verify import verify_store
from tests.releasefactory import Project, Release, write_release

BIG_WHEEL = "big-2.0-py3-none-any.whl"
BIG_PATH = f"simple/big/{BIG_WHEEL}"


@pytest.fixture
def release(tmp_path: Path) -> Release:
    # `big` spans three chunks, so its file has an interior block besides its layout.
    payload = random.Random(3).randbytes(300_000).hex()
    return write_release(tmp_path / "rel", [
        Project("small", "1.0", requires_dist=["big"]),
        Project("big", "2.0", modules={"big/__init__.py": payload}),
    ])


def _build(store: Store, release: Release) -> tuple[CID, int]:
    result = build_release(store, load_plan(release.path))
    return result.root, sum(result.realiser.ran.values())


def _verify(store: Store, *options: str) -> int:
    return cli.main(["store", "verify", "--store", str(store.root), "-q", *options])


def _flip(path: Path, offset: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def _big_object(store: Store, root: CID) -> tuple[CID, str]:
    cid = resolve(store, root, BIG_PATH.split("/")).cid
    layout = store.get_layout(cid)
    assert layout is not None and len(layout.leaves) > 1
    return cid, layout.object_sha256


def test_a_clean_store_passes(store: Store, release: Release,
                              capsys: pytest.CaptureFixture[str]) -> None:
    _build(store, release)
    report = verify_store(store)
    assert report.exit_code == 0 and not report.damage and not report.missing
    assert report.checked["objects"] == 2 and report.checked["roots"] == 1
    assert report.bytes_hashed >= sum(p.stat().st_size for p in release.wheels.values())
    assert cli.main(["store", "verify", "--store", str(store.root)]) == 0
    assert "0 corrupt, 0 missing" in capsys.readouterr().err


def test_a_corrupt_object_is_refetched_from_its_source(store: Store, release: Release) -> None:
    root, _ = _build(store, release)
    file_cid, sha = _big_object(store, root)
    _flip(store.object_path(sha), 300_000)
    with pytest.raises(IntegrityError):  # never served
        b"".join(iter_bytes(store, file_cid))
    report = verify_store(store)
    assert [(d.kind, d.name) for d in report.damage] == [("object", sha)]
    assert _verify(store) == StoreCorrupt.exit_code == 9
    repaired = verify_store(store, repair=True)
    assert repaired.exit_code == 0
    assert repaired.damage[0].action == f"refetched from {release.wheels[BIG_WHEEL].as_uri()}"
    assert b"".join(iter_bytes(store, file_cid)) == release.wheels[BIG_WHEEL].read_bytes()
    assert _verify(store) == 0


def test_a_corrupt_object_without_a_source_is_removed_and_rebuilt(
    store: Store, release: Release, tmp_path: Path
) -> None:
    root, _ = _build(store, release)
    _, sha = _big_object(store, root)
    _flip(store.object_path(sha), 10)
    hidden = tmp_path / "hidden.whl"
    shutil.move(release.wheels[BIG_WHEEL], hidden)  # the source is gone too
    report = verify_store(store, repair=True)
    assert "refetching failed" in report.damage[0].action
    assert not store.has_object(sha)
    assert report.exit_code == StoreIncomplete.exit_code == 15
    assert any("object" in what for _, what in report.missing)
    assert _verify(store) == 15
    shutil.move(hidden, release.wheels[BIG_WHEEL])
    rebuilt, ran = _build(store, release)
    assert rebuilt == root and ran > 0
    assert _verify(store) == 0


def test_a_corrupt_page_is_removed_and_a_rebuild_restores_it(
    store: Store, release: Release
) -> None:
    root, _ = _build(store, release)
    page = resolve(store, root, ["simple", "index.html"]).cid
    _flip(store.block_path(page), 5)
    assert _verify(store) == 9
    report = verify_store(store, repair=True)
    assert [(d.kind, d.name, d.action) for d in report.damage] == [("block", str(page), "removed")]
    assert report.missing == [("test#1", f"block {page}")]
    assert report.exit_code == 15
    # Only the page's step runs again, and the release record that vouches for the whole DAG.
    assert _build(store, release) == (root, 2)
    assert _verify(store) == 0


def test_a_corrupt_interior_block_and_layout_are_rewritten_from_the_object(
    store: Store, release: Release
) -> None:
    root, _ = _build(store, release)
    file_cid, _ = _big_object(store, root)
    _flip(store.block_path(file_cid), 3)  # the file's root node, an interior block
    store.layout_path(file_cid).write_bytes(b"\x93garbage")
    report = verify_store(store)
    assert {(d.kind, d.name) for d in report.damage} == {
        ("block", str(file_cid)), ("layout", str(file_cid))
    }
    repaired = verify_store(store, repair=True)
    assert repaired.exit_code == 0, repaired.lines()
    actions = {d.kind: d.action for d in repaired.damage}
    assert actions["block"].startswith("rewritten from object")
    assert _verify(store) == 0
    assert _build(store, release) == (root, 0)


def test_a_layout_naming_the_wrong_leaves_is_rewritten(store: Store, release: Release) -> None:
    root, _ = _build(store, release)
    file_cid, _ = _big_object(store, root)
    record = msgpack.unpackb(store.layout_path(file_cid).read_bytes())
    record["leaves"][0][1] += 1  # a wrong offset: valid msgpack, wrong content
    store.layout_path(file_cid).write_bytes(msgpack.packb(record))
    store._leaf_index = None
    assert [d.problem for d in verify_store(store).damage] == [
        f"its leaves do not match object {store.get_layout(file_cid).object_sha256}"
    ]
    assert verify_store(store, repair=True).damage[0].action == "rewritten from the object"
    assert _verify(store) == 0


def test_corrupt_records_sources_and_roots(store: Store, release: Release) -> None:
    root, _ = _build(store, release)
    key = store.root_record_keys("test", 1)[0]
    store.record_path(key).write_bytes(b"\xc1")
    sha = next(name for name, _ in store.entries("sources"))
    store.source_path(sha).write_bytes(b"\x01")
    (store.root / "roots" / "test" / "1.keys").write_bytes(b"\xc1")
    store.add_root("broken", 1, root)
    store.root_path("broken", 1).write_text("not a CID\n")
    found = {(d.kind, d.name) for d in verify_store(store).damage}
    assert found == {("record", key), ("sources", sha), ("root", "test/1.keys"),
                     ("root", "broken/1")}
    with pytest.raises(StoreCorrupt):
        collect_garbage(store)  # a root it cannot read: gc keeps its hands off
    repaired = verify_store(store, repair=True)
    assert {d.action for d in repaired.damage} == {"removed"}
    assert repaired.exit_code == 0
    assert [name for name, _, _ in store.roots()] == ["test"]
    assert _verify(store) == 0
    assert _build(store, release)[0] == root


def test_missing_blocks_of_a_rooted_dag(store: Store, release: Release,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = _build(store, release)
    simple = resolve(store, root, ["simple"]).cid
    store.block_path(simple).unlink()
    report = verify_store(store)
    assert report.missing == [("test#1", f"block {simple}")]
    assert report.exit_code == 15 and not report.damage
    assert cli.main(["store", "verify", "--store", str(store.root)]) == 15
    out, err = capsys.readouterr()
    assert f"missing block {simple} of root test#1" in out
    assert "1 missing" in err
    assert _verify(store, "--repair") == 15  # nothing to repair it from: a build restores it
    assert _build(store, release) == (root, 1)  # the release record; simple/ is encoded again
    assert store.has_block(simple)
    assert _verify(store) == 0


def test_abandoned_temporaries_are_noted_and_repair_removes_them(store: Store) -> None:
    abandoned = store.root / "tmp" / "999999999-0123456789abcdef.part"
    abandoned.write_bytes(b"half")
    report = verify_store(store)
    assert report.exit_code == 0
    assert report.notes == ["note: 1 abandoned temporary files in tmp/ (gc removes them)"]
    verify_store(store, repair=True)
    assert not abandoned.exists()


def test_sources_are_kept_once_per_url(store: Store, release: Release) -> None:
    _build(store, release)
    sha, _ = next(iter(store.entries("sources")))
    [url] = store.sources(sha)
    store.add_source(sha, url)
    store.add_source(sha, "https://mirror.example/big.whl")
    assert store.sources(sha) == [url, "https://mirror.example/big.whl"]
    assert store.sources("00" * 32) == []
