"""Releases on top of releases: an overlay runs only what changed and gives a cold build's CID."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from ipwhl import unixfs
from ipwhl.build import BuildResult, build_release, check_release, load_plan, read_release_info
from ipwhl.cid import CID
from ipwhl.cli import main
from ipwhl.dag import resolve
from ipwhl.declarations import load_declarations, prefix_of
from ipwhl.declcache import DeclarationCache
from ipwhl.derivations import Realiser
from ipwhl.errors import CheckFailed
from ipwhl.evaluator import Plan, plan_release
from ipwhl.overlay import index_derivation
from ipwhl.releasefile import load_release
from ipwhl.store import Store
from tests.releasefactory import DEFAULT_SUPPORTED, Project, Release, write_release

BOTH = ("cp311-cp311-manylinux_2_17_x86_64", "cp312-cp312-win_amd64")

# a needs b (b's two platform wheels, one per environment); c stands alone.
BASE = {
    "a": Project("a", "1.0", requires_dist=["b>=0.5,<3"]),
    "b": Project("b", "1.0", tags=BOTH),
    "c": Project("c", "1.0"),
}
UNCHANGED: dict[str, set[str]] = {}


def _write(directory: Path, projects: Mapping[str, Project | None], **kwargs) -> Release:
    return write_release(directory, [p for p in projects.values() if p is not None], **kwargs)


def _records(store: Store) -> set[str]:
    return {path.name for path in (store.root / "records").glob("*/*")}


def _steps_run(plan: Plan, new_records: set[str]) -> dict[str, set[str]]:
    """Per project, the builders of its own derivations that ran (wrote a new record)."""
    steps: dict[str, set[str]] = {}
    for project in plan.projects:
        builders = {d.builder for d in project.derivations() if d.key in new_records}
        if builders:
            steps[project.project] = builders
    return steps


def _cold(tmp_path: Path, release: Release, previous: CID, sequence: int) -> CID:
    """The same declarations built from nothing, in a store that has never seen `previous`."""
    fresh = Store(tmp_path / f"fresh-{sequence}").open()
    plan = load_plan(release.path)
    return build_release(fresh, plan, on_top_of=str(previous), overlay=False,
                         sequence=sequence).root


@pytest.fixture
def previous(tmp_path: Path, store: Store) -> BuildResult:
    return build_release(store, load_plan(_write(tmp_path / "v1", BASE).path))


WHOLE_B = {"fetch", "inspect", "check-metadata", "check-platform", "check-closure"}
WHOLE = {"fetch", "inspect", "check-metadata", "check-platform", "check-closure"}
TOP = {"release-toml": 1, "landing-page": 1, "release": 1}  # every new release: new sequence

# Each scenario: the projects, the supported lines, the derivations that run, each project's
# own derivations that run, and the folders written (by path in the new release): pages and
# directories are encoded, not looked up, and only those on the path of a change are written.
SCENARIOS = {
    # b's two wheels are fetched, inspected and checked; a's closure is checked again because
    # it depends on b.
    "upgrade": (
        {**BASE, "b": Project("b", "2.0", tags=BOTH)}, DEFAULT_SUPPORTED,
        {"fetch": 2, "inspect": 2, "check-metadata": 2, "check-platform": 1, "check-closure": 2,
         **TOP},
        {"a": {"check-closure"}, "b": WHOLE_B},
        {"", "simple", "simple/b", "ipwhl", "ipwhl/declarations", "ipwhl/declarations/b"},
    ),
    "downgrade": (
        {**BASE, "b": Project("b", "0.9", tags=BOTH)}, DEFAULT_SUPPORTED,
        {"fetch": 2, "inspect": 2, "check-metadata": 2, "check-platform": 1, "check-closure": 2,
         **TOP},
        {"a": {"check-closure"}, "b": WHOLE_B},
        {"", "simple", "simple/b", "ipwhl", "ipwhl/declarations", "ipwhl/declarations/b"},
    ),
    # A new name: the root page of simple/ is written again.
    "add": (
        {**BASE, "d": Project("d", "1.0")}, DEFAULT_SUPPORTED,
        {"fetch": 1, "inspect": 1, "check-metadata": 1, "check-platform": 1, "check-closure": 1,
         "simple-index": 1, **TOP},
        {"d": WHOLE},
        {"", "simple", "simple/d", "ipwhl", "ipwhl/declarations", "ipwhl/declarations/d"},
    ),
    # Nothing depends on c: no check runs, only simple, declarations, ipwhl and the root.
    "remove-leaf": (
        {**BASE, "c": None}, DEFAULT_SUPPORTED,
        {"simple-index": 1, **TOP},
        UNCHANGED,
        {"", "simple", "ipwhl", "ipwhl/declarations"},
    ),
    # A gained environment: every project's platform and closure checks see it; no wheel is
    # fetched and simple/ and declarations/ keep their CIDs (only ipwhl/ and the root change).
    "supported": (
        BASE, (*DEFAULT_SUPPORTED, "cp311 manylinux_2_28_x86_64"),
        {"check-platform": 3, "check-closure": 3, **TOP},
        {"a": {"check-platform", "check-closure"}, "b": {"check-platform", "check-closure"},
         "c": {"check-platform", "check-closure"}},
        {"", "ipwhl"},
    ),
    # Same version, a new wheel whose Requires-Dist gained c: only a is redone.
    "dependencies-only": (
        {**BASE, "a": Project("a", "1.0", requires_dist=["b>=0.5,<3", "c>=1"])},
        DEFAULT_SUPPORTED,
        {"fetch": 1, "inspect": 1, "check-metadata": 1, "check-platform": 1, "check-closure": 1,
         **TOP},
        {"a": WHOLE},
        {"", "simple", "simple/a", "ipwhl", "ipwhl/declarations", "ipwhl/declarations/a"},
    ),
}


def _folders(store: Store, root: CID, prefix: str = "") -> dict[CID, str]:
    """Every folder of a DAG: CID → its path (the root is "")."""
    found = {root: prefix}
    for link in unixfs.list_directory(root, store.get_block):
        if unixfs.node_kind(link.cid, store.get_block) in {"directory", "hamt"}:
            found.update(_folders(store, link.cid, f"{prefix}/{link.name}".lstrip("/")))
    return found


def _written_folders(store: Store, root: CID, blocks_before: set[str]) -> set[str]:
    """The folders of `root` whose blocks were not in the store before."""
    return {path for cid, path in _folders(store, root).items() if str(cid) not in blocks_before}


def _blocks(store: Store) -> set[str]:
    return {path.name for path in (store.root / "blocks").glob("*/*")}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_an_overlay_runs_only_what_changed_and_equals_a_cold_build(
    tmp_path: Path, store: Store, previous: BuildResult, scenario: str
) -> None:
    projects, supported, expected_ran, expected_steps, expected_folders = SCENARIOS[scenario]
    release = _write(tmp_path / "v2", projects, supported=supported)
    plan = load_plan(release.path)
    before = _records(store)
    blocks_before = _blocks(store)
    realiser = Realiser(store)

    result = build_release(store, plan, on_top_of=str(previous.root), realiser=realiser)

    assert result.root == _cold(tmp_path, release, previous.root, 2)
    assert dict(realiser.ran) == expected_ran
    assert _steps_run(plan, _records(store) - before) == expected_steps
    assert _written_folders(store, result.root, blocks_before) == expected_folders
    info = read_release_info(store, result.root)
    assert (info["sequence"], info["previous"]) == (2, str(previous.root))
    assert list(info["supported"]) == list(supported)
    assert (result.sequence, result.previous) == (2, str(previous.root))
    assert store.roots()[-1] == ("test", 2, result.root)


def test_unchanged_projects_keep_their_directory_cids(
    tmp_path: Path, store: Store, previous: BuildResult
) -> None:
    release = _write(tmp_path / "v2", {**BASE, "b": Project("b", "2.0", tags=BOTH)})
    result = build_release(store, load_plan(release.path), on_top_of=str(previous.root))
    for project in ("a", "c"):
        assert (resolve(store, result.root, ["simple", project]).cid
                == resolve(store, previous.root, ["simple", project]).cid)
    assert (resolve(store, result.root, ["simple", "b"]).cid
            != resolve(store, previous.root, ["simple", "b"]).cid)


def test_an_overlay_of_no_change_writes_only_a_new_release_file(
    tmp_path: Path, store: Store, previous: BuildResult
) -> None:
    release = _write(tmp_path / "v2", BASE)
    realiser = Realiser(store)
    result = build_release(store, load_plan(release.path), on_top_of=str(previous.root),
                           realiser=realiser)
    assert dict(realiser.ran) == TOP
    assert result.root != previous.root  # sequence and previous differ
    assert result.root == _cold(tmp_path, release, previous.root, 2)
    assert (resolve(store, result.root, ["simple"]).cid
            == resolve(store, previous.root, ["simple"]).cid)


def test_overlays_chain_and_each_equals_a_cold_build(
    tmp_path: Path, store: Store, previous: BuildResult
) -> None:
    second = _write(tmp_path / "v2", {**BASE, "b": Project("b", "2.0", tags=BOTH)})
    two = build_release(store, load_plan(second.path), on_top_of=str(previous.root))
    third = _write(tmp_path / "v3", {**BASE, "b": Project("b", "2.0", tags=BOTH), "c": None,
                                     "d": Project("d", "1.0", requires_dist=["a"])})
    realiser = Realiser(store)
    three = build_release(store, load_plan(third.path), on_top_of=str(two.root),
                          realiser=realiser)
    assert realiser.ran["fetch"] == 1  # d's wheel only
    assert three.root == _cold(tmp_path, third, two.root, 3)
    info = read_release_info(store, three.root)
    assert (info["sequence"], info["previous"]) == (3, str(two.root))


def test_cli_build_on_top_of_and_the_release_files_on_top_of_agree(
    tmp_path: Path, store: Store, previous: BuildResult, capsys: pytest.CaptureFixture[str]
) -> None:
    projects = {**BASE, "b": Project("b", "2.0", tags=BOTH)}
    release = _write(tmp_path / "v2", projects)
    code = main(["build", str(release.path), "--on-top-of", str(previous.root),
                 "--store", str(store.root), "-q"])
    assert code == 0
    root = capsys.readouterr().out.strip()
    assert root == str(_cold(tmp_path, release, previous.root, 2))

    in_file = _write(tmp_path / "v2-in-file", projects,
                     extra_release_lines=[f'on-top-of = "{previous.root}"'])
    realiser = Realiser(store)
    again = build_release(store, load_plan(in_file.path), realiser=realiser)
    assert str(again.root) == root
    assert sum(realiser.ran.values()) == 0  # the same release, already realised


def test_an_overlay_needs_no_unchanged_source_nor_wheel(tmp_path: Path) -> None:
    # The previous release declares a, b and c at an address nothing listens on; it could be
    # built because fetches are keyed by content-id and these were fetched before from files.
    store = Store(tmp_path / "store").open()
    fresh = Store(tmp_path / "fresh").open()
    local = _write(tmp_path / "local", BASE)
    for into in (store, fresh):
        assert not check_release(into, load_plan(local.path)).violations
    unreachable = "http://127.0.0.1:9"
    before = _write(tmp_path / "v1", BASE, base_url=unreachable)
    previous = build_release(store, load_plan(before.path))
    after = _write(tmp_path / "v2", {**BASE, "b": Project("b", "2.0", tags=BOTH)},
                   base_url=unreachable)
    for name, declaration in after.declaration_files.items():
        if name.startswith("b-"):  # b's new wheels are reachable, as files next to the release
            text = declaration.read_text().replace(f"{unreachable}/", "../../wheels/")
            declaration.write_text(text)
    unchanged = [path for release in (local, before, after)
                 for name, path in release.wheels.items() if not name.startswith("b-2.0")]
    objects = {hashlib.sha256(path.read_bytes()).hexdigest() for path in unchanged}
    for path in unchanged:
        path.unlink()
    # Nor are the unchanged wheels' bytes read from the store: their objects are gone too.
    for sha256 in objects:
        store.object_path(sha256).unlink()

    realiser = Realiser(store)
    result = build_release(store, load_plan(after.path), on_top_of=str(previous.root),
                           realiser=realiser)

    assert realiser.ran["fetch"] == 2
    # The cold build fetches b's new wheels and takes a's and c's from its earlier fetches.
    cold = build_release(fresh, load_plan(after.path), on_top_of=str(previous.root),
                         overlay=False, sequence=2)
    assert result.root == cold.root


def _dependency_line(release: Release, wheel: str) -> str:
    """`path:line:` of the first dependency in a declaration (releasefactory's formatting)."""
    path = release.declaration_files[wheel]
    line = path.read_text().splitlines().index("dependencies = [") + 2
    return f"{path}:{line}:"


def test_breaking_a_dependent_fails_naming_it(
    tmp_path: Path, store: Store, previous: BuildResult, capsys: pytest.CaptureFixture[str]
) -> None:
    release = _write(tmp_path / "v2", {**BASE, "b": Project("b", "3.0", tags=BOTH)})
    code = main(["build", str(release.path), "--on-top-of", str(previous.root),
                 "--store", str(store.root), "-q"])
    assert code == 4
    captured = capsys.readouterr()
    assert captured.out == ""
    problem = next(line for line in captured.err.splitlines() if ": closure: " in line)
    assert problem.startswith(_dependency_line(release, "a-1.0-py3-none-any.whl"))
    assert "a 1.0 requires 'b<3,>=0.5'" in problem
    assert "b 3.0" in problem
    assert problem.endswith("on cp311 manylinux_2_17_x86_64; cp312 win_amd64")
    assert [root for _, _, root in store.roots()] == [previous.root]


def test_removing_a_project_others_need_fails_naming_them(
    tmp_path: Path, store: Store, previous: BuildResult, capsys: pytest.CaptureFixture[str]
) -> None:
    release = _write(tmp_path / "v2", {**BASE, "b": None})
    code = main(["build", str(release.path), "--on-top-of", str(previous.root),
                 "--store", str(store.root), "-q"])
    assert code == 4
    problem = next(line for line in capsys.readouterr().err.splitlines() if "closure" in line)
    assert problem.startswith(_dependency_line(release, "a-1.0-py3-none-any.whl"))
    assert "a 1.0 requires 'b<3,>=0.5', but 'b' is not in the release" in problem
    assert problem.endswith("on cp311 manylinux_2_17_x86_64; cp312 win_amd64")


def test_a_gained_environment_rechecks_projects_whose_declarations_did_not_change(
    tmp_path: Path, store: Store, previous: BuildResult
) -> None:
    # b has no wheel for macOS, so a (unchanged) no longer closes: only a recheck finds it.
    release = _write(tmp_path / "v2", BASE,
                     supported=(*DEFAULT_SUPPORTED, "cp312 macosx_11_0_arm64"))
    with pytest.raises(CheckFailed) as failed:
        build_release(store, load_plan(release.path), on_top_of=str(previous.root))
    assert "no wheel of 'b' is installable on cp312 macosx_11_0_arm64" in str(failed.value)


def test_an_overlay_on_something_that_is_not_a_release_says_so(
    tmp_path: Path, store: Store, previous: BuildResult, capsys: pytest.CaptureFixture[str]
) -> None:
    release = _write(tmp_path / "v2", BASE)
    simple = resolve(store, previous.root, ["simple"]).cid
    code = main(["build", str(release.path), "--on-top-of", str(simple),
                 "--store", str(store.root), "-q"])
    assert code == 7
    assert "is not an ipwhl release" in capsys.readouterr().err
    missing = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
    code = main(["build", str(release.path), "--on-top-of", missing,
                 "--store", str(store.root), "-q"])
    assert code == 7
    assert missing in capsys.readouterr().err


# -- ipwhl eval --on-top-of ----------------------------------------------------------------


def _eval_json(release: Release, store: Store, on_top_of: CID,
               capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main(["eval", str(release.path), "--on-top-of", str(on_top_of), "--json",
                 "--store", str(store.root)])
    return code, json.loads(capsys.readouterr().out)


def test_eval_on_top_of_says_what_a_build_would_redo_and_why(
    tmp_path: Path, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _write(tmp_path / "v1", {**BASE, "e": Project("e", "1.0")})
    previous = build_release(store, load_plan(first.path)).root
    release = _write(tmp_path / "v2", {**BASE, "b": Project("b", "2.0", tags=BOTH),
                                       "d": Project("d", "1.0")})
    code, document = _eval_json(release, store, previous, capsys)
    assert code == 0
    assert document["on_top_of"] == str(previous)
    assert document["removed"] == ["e"]
    assert document["violations"] == []
    overlay = {p["project"]: p["overlay"] for p in document["projects"]}
    assert {p: (o["rebuild"], o["recheck"]) for p, o in overlay.items()} == {
        "a": (False, True), "b": (True, True), "c": (False, False), "d": (True, True),
    }
    assert overlay["a"]["reason"].startswith("depends on b (declarations changed)")
    assert overlay["b"]["reason"].startswith("declarations changed: ")
    assert "b-2.0-cp311-cp311-manylinux_2_17_x86_64.toml" in overlay["b"]["reason"]
    assert overlay["c"]["reason"] == "unchanged: reused as it was"
    assert overlay["d"]["reason"] == "added"

    code = main(["eval", str(release.path), "--on-top-of", str(previous),
                 "--store", str(store.root)])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert "c 1.0  [unchanged: reused as it was]" in lines
    assert "d 1.0  [added]" in lines
    assert "e  [removed]" in lines
    assert lines[-1] == (f"on top of {previous} (#1): 2 projects to rebuild, 3 to recheck, "
                         "1 removed, 2 reused")


def test_eval_on_top_of_names_a_change_of_supported_and_a_removed_dependency(
    tmp_path: Path, store: Store, previous: BuildResult, capsys: pytest.CaptureFixture[str]
) -> None:
    wider = _write(tmp_path / "wider", BASE,
                   supported=(*DEFAULT_SUPPORTED, "cp311 manylinux_2_28_x86_64"))
    code, document = _eval_json(wider, store, previous.root, capsys)
    assert code == 0
    assert {p["project"]: p["overlay"]["reason"] for p in document["projects"]} == dict.fromkeys(
        "abc", "supported environments changed: checks run again"
    )
    broken = _write(tmp_path / "broken", {**BASE, "b": None})
    code, document = _eval_json(broken, store, previous.root, capsys)
    assert code == 4
    assert document["removed"] == ["b"]
    (a,) = (p for p in document["projects"] if p["project"] == "a")
    assert a["overlay"]["reason"] == "depends on b (removed): closure checked again"
    assert len(document["violations"]) == 1
    assert "'b' is not in the release" in document["violations"][0]


def test_eval_on_top_of_reads_no_wheel(
    tmp_path: Path, store: Store, previous: BuildResult, capsys: pytest.CaptureFixture[str]
) -> None:
    release = _write(tmp_path / "v2", {**BASE, "b": Project("b", "2.0", tags=BOTH)})
    shutil.rmtree(release.path.parent / "wheels")
    shutil.rmtree(tmp_path / "v1" / "wheels")
    code, document = _eval_json(release, store, previous.root, capsys)
    assert code == 0
    (b,) = (p for p in document["projects"] if p["project"] == "b")
    assert Counter(s["realised"] for s in b["derivations"]) == Counter({False: 8})


# -- a sharded simple/ ---------------------------------------------------------------------


@pytest.fixture
def fast_tmp(tmp_path: Path) -> Iterator[Path]:
    """A folder on a memory file system where there is one: large builds here are fsync-bound."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="ipwhl-overlay-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _new_nodes(store: Store, before: set[str]) -> Counter[str]:
    kinds: Counter[str] = Counter()
    for path in (store.root / "blocks").glob("*/*"):
        if path.name not in before:
            kinds[unixfs.node_kind(CID.parse(path.name), store.get_block)] += 1
    return kinds


@pytest.mark.slow
def test_an_overlay_on_a_sharded_release_rewrites_only_the_touched_shards(
    fast_tmp: Path,
) -> None:
    # 1,150 projects with 200-character names make simple/ and ipwhl/declarations/ HAMTs
    # (see tests/e2e/test_release_cid.py).
    projects = {f"p{i:04d}": Project(f"p{i:04d}" + "x" * 195, "1.0") for i in range(1150)}
    supported = ("cp311 manylinux_2_17_x86_64",)
    store = Store(fast_tmp / "store").open()
    first = _write(fast_tmp / "v1", projects, supported=supported)
    previous = build_release(store, load_plan(first.path))
    simple = resolve(store, previous.root, ["simple"]).cid
    assert unixfs.node_kind(simple, store.get_block) == "hamt"
    shards_before = sum(1 for link in unixfs.decode_pbnode(store.get_block(simple)).links
                        if len(link.name or "") == 2)
    blocks_before = {path.name for path in (store.root / "blocks").glob("*/*")}

    bumped = projects["p0777"].name
    release = _write(fast_tmp / "v2", {**projects, "p0777": Project(bumped, "2.0")},
                     supported=supported)
    realiser = Realiser(store)
    result = build_release(store, load_plan(release.path), on_top_of=str(previous.root),
                           realiser=realiser)

    assert realiser.ran["fetch"] == 1 and realiser.ran["check-closure"] == 1
    new = _new_nodes(store, blocks_before)
    # simple/ and declarations/: a new root shard each, and the one sub-shard holding p0777.
    assert new["hamt"] <= 4 < shards_before
    # simple/p0777, declarations/p0777, ipwhl and the root.
    assert new["directory"] == 4
    fresh = Store(fast_tmp / "fresh").open()
    cold = build_release(fresh, load_plan(release.path), on_top_of=str(previous.root),
                         overlay=False, sequence=2)
    assert result.root == cold.root


def prefixed(release: Release) -> Release:
    """Move a release's declarations into IPWHL's shard layout, <prefix>/<project>/…"""
    for folder in sorted(release.declarations.iterdir()):
        target = release.declarations / prefix_of(folder.name) / folder.name
        target.parent.mkdir(exist_ok=True)
        folder.rename(target)
        for declaration in target.glob("*.toml"):
            text = declaration.read_text().replace("'../../wheels/", "'../../../wheels/")
            declaration.write_text(text)
    return release


def test_an_overlay_of_declarations_in_the_ipwhl_shard_layout(
    tmp_path: Path, store: Store
) -> None:
    first = prefixed(_write(tmp_path / "v1", BASE))
    previous = build_release(store, load_plan(first.path))
    release = prefixed(_write(tmp_path / "v2", {**BASE, "b": Project("b", "2.0", tags=BOTH)}))
    realiser = Realiser(store)
    blocks_before = _blocks(store)
    result = build_release(store, load_plan(release.path), on_top_of=str(previous.root),
                           realiser=realiser)
    assert dict(realiser.ran) == SCENARIOS["upgrade"][2]
    # As for the flat layout, plus declarations/<prefix of b>/.
    b = f"ipwhl/declarations/{prefix_of('b')}"
    assert _written_folders(store, result.root, blocks_before) == (
        {"", "simple", "simple/b", "ipwhl", "ipwhl/declarations", b, f"{b}/b"}
    )
    assert result.root == _cold(tmp_path, release, previous.root, 2)


def test_an_overlay_on_a_release_without_its_index_reads_its_declarations_once(
    tmp_path: Path, store: Store, previous: BuildResult
) -> None:
    # A release fetched from elsewhere comes without its index record (its project digests):
    # they are worked out from its declarations and kept for the next overlay.
    index = store.record_path(index_derivation(previous.root).key)
    index.unlink()
    release = _write(tmp_path / "v2", {**BASE, "b": Project("b", "2.0", tags=BOTH)})
    realiser = Realiser(store)
    result = build_release(store, load_plan(release.path), on_top_of=str(previous.root),
                           realiser=realiser)
    assert dict(realiser.ran) == SCENARIOS["upgrade"][2]
    assert result.root == _cold(tmp_path, release, previous.root, 2)
    assert index.is_file()
    assert index_derivation(previous.root).key in store.root_record_keys("test", 2)


def test_an_overlay_reads_only_the_declarations_it_checks(
    tmp_path: Path, store: Store, previous: BuildResult
) -> None:
    release = _write(tmp_path / "v2", {**BASE, "b": Project("b", "2.0", tags=BOTH)})

    def plan() -> Plan:
        folder = release.path.parent / "pkgs"
        cache = DeclarationCache.in_store(store.root, folder, racy_seconds=0)
        return plan_release(load_release(release.path), load_declarations(folder, cache))

    assert plan().declarations.parsed == 4
    cached = plan()
    assert cached.declarations.parsed == 0
    build_release(store, cached, on_top_of=str(previous.root))
    # b's two wheels (fetched, checked) and a (depends on b: its closure is checked again).
    assert cached.declarations.parsed == 3
    cached.declarations.load(cached.summaries["c"][0])
    assert cached.declarations.parsed == 4  # c's had not been read


def test_a_rebuild_after_its_root_was_dropped_roots_it_with_every_key(
    tmp_path: Path, store: Store, previous: BuildResult
) -> None:
    # The keys a build used live in a record of their own (a warm build does not read them);
    # rooting the release again, with nothing to run, takes them from there.
    keys = set(store.root_record_keys("test", 1))
    assert len(keys) > 10
    assert store.remove_root("test", 1)
    realiser = Realiser(store)
    again = build_release(store, load_plan(_write(tmp_path / "v1", BASE).path), realiser=realiser)
    assert again.root == previous.root and sum(realiser.ran.values()) == 0
    assert set(store.root_record_keys("test", 1)) == keys
