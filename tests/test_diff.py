"""`ipwhl diff OLD NEW`: what changed between two releases, reading only subtrees that differ."""

from __future__ import annotations

import contextlib
import io
import json
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipwhl import unixfs
from ipwhl.build import BuildResult, build_release, load_plan
from ipwhl.cid import CID, DAG_PB
from ipwhl.cli import main
from ipwhl.dag import resolve
from ipwhl.diff import diff_directories, diff_releases
from ipwhl.store import Store
from tests.releasefactory import Project, write_release
from tests.test_overlay import prefixed

BOTH = ("cp311-cp311-manylinux_2_17_x86_64", "cp312-cp312-win_amd64")
OLD_SUPPORTED = ("cp311 manylinux_2_17_x86_64", "cp312 win_amd64")
NEW_SUPPORTED = ("cp311 manylinux_2_17_x86_64", "cp313 win_amd64")

OLD = [
    Project("a", "1.0", requires_dist=["b>=0.5,<3"]),
    Project("b", "1.0", tags=BOTH),
    Project("c", "1.0"),
    Project("e", "1.0"),
    Project("f", "2.0"),
]
NEW = [
    Project("a", "1.0", requires_dist=["b>=0.5,<3", "c>=1"]),  # same version, new dependency
    Project("b", "2.0"),  # upgraded, and one pure wheel instead of two platform wheels
    Project("c", "1.0"),
    Project("d", "1.0"),  # added; e removed
    Project("f", "1.5"),  # downgraded
]


@pytest.fixture
def releases(tmp_path: Path, store: Store) -> tuple[BuildResult, BuildResult]:
    old = build_release(store, load_plan(
        write_release(tmp_path / "old", OLD, supported=OLD_SUPPORTED).path))
    new = build_release(
        store, load_plan(write_release(tmp_path / "new", NEW, supported=NEW_SUPPORTED).path),
        on_top_of=str(old.root),
    )
    return old, new


def _diff(store: Store, old: CID, new: CID, *options: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["diff", str(old), str(new), *options, "--store", str(store.root)])
    return code, out.getvalue(), err.getvalue()


def test_diff_json_lists_every_kind_of_change(
    store: Store, releases: tuple[BuildResult, BuildResult]
) -> None:
    old, new = releases
    code, out, _ = _diff(store, old.root, new.root, "--json")
    assert code == 0

    def change(project: str, kind: str, old_version: str | None, new_version: str | None,
               **fields: list[str]) -> dict:
        return {"project": project, "kind": kind, "old_version": old_version,
                "new_version": new_version, "wheels_added": [], "wheels_removed": [],
                "dependencies_added": [], "dependencies_removed": [], **fields}

    assert json.loads(out) == {
        "old": str(old.root),
        "new": str(new.root),
        "old_sequence": 1,
        "new_sequence": 2,
        "environments_gained": ["cp313 win_amd64"],
        "environments_lost": ["cp312 win_amd64"],
        "changes": [
            change("a", "changed", "1.0", "1.0", dependencies_added=["c>=1"]),
            change("b", "upgraded", "1.0", "2.0",
                   wheels_added=["b-2.0-py3-none-any.whl"],
                   wheels_removed=["b-1.0-cp311-cp311-manylinux_2_17_x86_64.whl",
                                   "b-1.0-cp312-cp312-win_amd64.whl"]),
            change("d", "added", None, "1.0", wheels_added=["d-1.0-py3-none-any.whl"]),
            change("e", "removed", "1.0", None, wheels_removed=["e-1.0-py3-none-any.whl"]),
            change("f", "downgraded", "2.0", "1.5",
                   wheels_added=["f-1.5-py3-none-any.whl"],
                   wheels_removed=["f-2.0-py3-none-any.whl"]),
        ],
    }


def test_diff_text_is_a_readable_table(
    store: Store, releases: tuple[BuildResult, BuildResult]
) -> None:
    old, new = releases
    code, out, err = _diff(store, old.root, new.root)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{old.root} (#1) -> {new.root} (#2)",
        "  + environment cp313 win_amd64",
        "  - environment cp312 win_amd64",
        "  changed    a 1.0 -> 1.0",
        "      + requires c>=1",
        "  upgraded   b 1.0 -> 2.0",
        "      + b-2.0-py3-none-any.whl",
        "      - b-1.0-cp311-cp311-manylinux_2_17_x86_64.whl",
        "      - b-1.0-cp312-cp312-win_amd64.whl",
        "  added      d 1.0",
        "      + d-1.0-py3-none-any.whl",
        "  removed    e 1.0",
        "      - e-1.0-py3-none-any.whl",
        "  downgraded f 2.0 -> 1.5",
        "      + f-1.5-py3-none-any.whl",
        "      - f-2.0-py3-none-any.whl",
    ]


def test_diff_backwards_inverts_every_change(
    store: Store, releases: tuple[BuildResult, BuildResult]
) -> None:
    old, new = releases
    result = diff_releases(store, new.root, old.root)
    assert {c.project: c.kind for c in result.changes} == {
        "a": "changed", "b": "downgraded", "d": "removed", "e": "added", "f": "upgraded",
    }
    (a,) = (c for c in result.changes if c.project == "a")
    assert (a.dependencies_added, a.dependencies_removed) == ((), ("c>=1",))
    assert (result.environments_gained, result.environments_lost) == (
        ("cp312 win_amd64",), ("cp313 win_amd64",))


def test_a_release_against_itself_has_no_change(
    store: Store, releases: tuple[BuildResult, BuildResult]
) -> None:
    old, _ = releases
    code, out, _ = _diff(store, old.root, old.root)
    assert code == 0
    assert out.splitlines()[1:] == ["  no project changed"]
    result = diff_releases(store, old.root, old.root)
    assert (result.changes, result.environments_gained, result.environments_lost) == ((), (), ())


def test_diff_of_something_that_is_not_a_release_says_so(
    store: Store, releases: tuple[BuildResult, BuildResult]
) -> None:
    old, new = releases
    simple = resolve(store, old.root, ["simple"]).cid
    code, out, err = _diff(store, simple, new.root)
    assert (code, out) == (7, "")
    assert err.startswith("ipwhl: error: ") and "is not an ipwhl release" in err
    missing = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
    code, out, err = _diff(store, old.root, CID.parse(missing))
    assert (code, out) == (7, "")
    assert missing in err
    code, _, err = _diff(store, old.root, "not-a-cid")  # type: ignore[arg-type]
    assert code != 0 and "not-a-cid" in err


# -- large releases: a sharded simple/ -------------------------------------------------------

# 1,150 projects with 200-character names put simple/ past kubo's 262,144-byte link estimate,
# so it is a HAMT (as in tests/e2e/test_release_cid.py). The build is bound by fsync, so the
# store goes on a memory file system where there is one: the test is about blocks read.
LONG = [Project(f"p{i:04d}" + "x" * 195, "1.0") for i in range(1150)]
SUPPORTED = ("cp311 manylinux_2_17_x86_64",)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, CID, CID]]:
    shm = Path("/dev/shm")
    if shm.is_dir():
        base = Path(tempfile.mkdtemp(prefix="ipwhl-diff-", dir=shm))
    else:
        base = tmp_path_factory.mktemp("sharded")
    try:
        store = Store(base / "store").open()
        old = build_release(store, load_plan(
            write_release(base / "old", LONG, supported=SUPPORTED).path))
        changed = list(LONG)
        changed[777] = Project(LONG[777].name, "2.0")
        new = build_release(
            store, load_plan(write_release(base / "new", changed, supported=SUPPORTED).path),
            on_top_of=str(old.root),
        )
        yield store, old.root, new.root
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _blocks_under(store: Store, cid: CID) -> int:
    seen: set[CID] = set()
    pending = [cid]
    while pending:
        here = pending.pop()
        if here in seen:
            continue
        seen.add(here)
        if here.codec == DAG_PB and store.has_block(here):
            pending += [link.cid for link in unixfs.decode_pbnode(store.get_block(here)).links]
    return len(seen)


def test_diff_of_sharded_releases_reads_only_the_changed_path(
    sharded: tuple[Store, CID, CID]
) -> None:
    store, old, new = sharded
    old_simple = resolve(store, old, ["simple"]).cid
    assert unixfs.node_kind(old_simple, store.get_block) == "hamt"
    under_simple = _blocks_under(store, old_simple)
    assert under_simple > 3 * len(LONG)

    reads: list[CID] = []
    get_block = store.get_block

    def counting(cid: CID) -> bytes:
        reads.append(cid)
        return get_block(cid)

    store.get_block = counting  # type: ignore[method-assign]
    try:
        result = diff_releases(store, old, new)
    finally:
        del store.get_block
    assert [(c.project, c.kind) for c in result.changes] == [(LONG[777].name, "upgraded")]
    # Two roots, their ipwhl/ and declarations/ paths, simple/'s top shards and the one
    # changed slot on each side: a few dozen blocks, not the thousands under simple/.
    assert len(reads) <= 40, len(reads)
    assert len(reads) * 50 < under_simple


def test_diff_directories_skips_equal_shards(sharded: tuple[Store, CID, CID]) -> None:
    store, old, new = sharded
    old_simple = resolve(store, old, ["simple"]).cid
    new_simple = resolve(store, new, ["simple"]).cid
    changes = diff_directories(store, old_simple, new_simple)
    assert set(changes) == {LONG[777].name}
    before, after = changes[LONG[777].name]
    assert before is not None and after is not None and before.cid != after.cid
    assert diff_directories(store, old_simple, old_simple) == {}


def _file(text: str) -> unixfs.Link:
    return unixfs.Link("", unixfs.file_cid(text.encode()), len(text))


def _put_directory(store: Store, entries: dict[str, str], threshold: int) -> CID:
    links = [unixfs.Link(name, _file(text).cid, len(text)) for name, text in entries.items()]
    cid, _, blocks = unixfs.encode_directory(links, shard_threshold=threshold)
    for block in blocks:
        store.put_block(block.cid, block.data)
    return cid


@pytest.mark.parametrize("seed", range(12))
def test_diff_directories_agrees_with_comparing_full_listings(store: Store, seed: int) -> None:
    # Small HAMTs (threshold 0) and plain directories, with entries added, removed and
    # changed, so that slots go from one entry to a sub-shard and back.
    rng = random.Random(seed)
    names = [f"n{i}" for i in range(rng.choice([3, 40, 600]))]
    old = {name: str(rng.randrange(3)) for name in names if rng.random() < 0.8}
    new = dict(old)
    for name in rng.sample(names, k=min(len(names), rng.randrange(1, 30))):
        action = rng.randrange(3)
        if action == 0:
            new.pop(name, None)
        else:
            new[name] = str(rng.randrange(3, 6))
    thresholds = [(0, 0), (0, 1 << 30), (1 << 30, 0), (1 << 30, 1 << 30)][seed % 4]
    old_cid = _put_directory(store, old, thresholds[0])
    new_cid = _put_directory(store, new, thresholds[1])
    expected = {
        name: (old.get(name), new.get(name))
        for name in old.keys() | new.keys()
        if old.get(name) != new.get(name)
    }
    found = diff_directories(store, old_cid, new_cid)
    assert set(found) == set(expected)
    for name, (before, after) in found.items():
        assert (before is None) == (name not in old)
        assert (after is None) == (name not in new)
        if before is not None:
            assert before.cid == _file(old[name]).cid
        if after is not None:
            assert after.cid == _file(new[name]).cid


def test_diff_reads_declarations_in_the_ipwhl_shard_layout(tmp_path: Path, store: Store) -> None:
    old = build_release(store, load_plan(prefixed(write_release(tmp_path / "old", OLD)).path))
    new = build_release(store, load_plan(prefixed(write_release(tmp_path / "new", NEW)).path))
    result = diff_releases(store, old.root, new.root)
    assert [(c.project, c.kind, c.old_version, c.new_version) for c in result.changes] == [
        ("a", "changed", "1.0", "1.0"), ("b", "upgraded", "1.0", "2.0"),
        ("d", "added", None, "1.0"), ("e", "removed", "1.0", None),
        ("f", "downgraded", "2.0", "1.5"),
    ]
    assert result.changes[0].dependencies_added == ("c>=1",)
