"""`ipwhl eval` and the evaluator: derivations, their keys, and checks 1 and 4 without fetching."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ipwhl.build import load_plan
from ipwhl.cli import main
from ipwhl.evaluator import Plan
from ipwhl.unixfs import file_cid
from tests.releasefactory import Project, Release, declaration_text, write_release

REPO = Path(__file__).resolve().parents[1]
BUILDERS = ["fetch", "inspect", "check-metadata"]
PROJECT_BUILDERS = ["check-platform", "check-closure"]


def chain() -> list[Project]:
    """a -> b -> c, and d on its own; a has two wheels."""
    return [
        Project("a", "1.0", tags=("cp311-cp311-manylinux_2_17_x86_64", "cp312-cp312-win_amd64"),
                requires_dist=["b>=1"]),
        Project("b", "2.0", requires_dist=["c"], provides_extra=["fast"]),
        Project("c", "3.0"),
        Project("d", "4.0"),
    ]


def eval_json(
    capsys: pytest.CaptureFixture[str], release: Path, store: Path
) -> tuple[int, dict[str, Any]]:
    code = main(["eval", str(release), "--store", str(store), "--json"])
    out, _ = capsys.readouterr()
    return code, json.loads(out)


def keys(plan: Plan) -> dict[tuple[str, str], str]:
    """Every derivation key of a plan by (builder, label)."""
    found = {}
    for project in plan.projects:
        for derivation in project.derivations():
            found[(derivation.builder, derivation.label)] = derivation.key
    return found


# -- ipwhl eval ------------------------------------------------------------------------------


def test_eval_lists_projects_wheels_and_derivations_to_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = write_release(tmp_path, chain())
    code = main(["eval", str(release.path), "--store", str(tmp_path / "store")])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    plan = load_plan(release.path)
    lines = out.splitlines()
    assert lines[0] == "a 1.0"
    assert lines[1:3] == [
        "  a-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", "  a-1.0-cp312-cp312-win_amd64.whl"
    ]
    for project in plan.projects:
        assert f"{project.project} {project.version}" in lines
        for derivation in project.derivations():
            assert f"    {derivation.builder:<15} {derivation.key[:16]}  to build" in lines
    assert lines[-1] == "4 projects, 23 derivations, 0 realised"
    assert not (tmp_path / "store").exists(), "eval must not write the store"


def test_eval_json_and_what_check_realises(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = write_release(tmp_path, chain())
    store = tmp_path / "store"
    code, before = eval_json(capsys, release.path, store)
    assert code == 0
    assert before["release"] == "test"
    assert before["violations"] == []
    assert [p["project"] for p in before["projects"]] == ["a", "b", "c", "d"]
    assert [p["version"] for p in before["projects"]] == ["1.0", "2.0", "3.0", "4.0"]
    assert before["projects"][2]["wheels"] == ["c-3.0-py3-none-any.whl"]
    plan_keys = keys(load_plan(release.path))
    for project in before["projects"]:
        steps = project["derivations"]
        assert [s["builder"] for s in steps] == (
            BUILDERS * len(project["wheels"]) + PROJECT_BUILDERS
        )
        for step in steps:
            assert set(step) == {"builder", "label", "key", "realised"}
            assert step["key"] == plan_keys[(step["builder"], step["label"])]
            assert step["realised"] is False

    assert main(["check", str(release.path), "--store", str(store), "-q"]) == 0
    capsys.readouterr()
    code, after = eval_json(capsys, release.path, store)
    assert code == 0
    steps = [s for p in after["projects"] for s in p["derivations"]]
    assert len(steps) == 23
    assert all(s["realised"] for s in steps)
    assert [s["key"] for s in steps] == [
        s["key"] for p in before["projects"] for s in p["derivations"]
    ]
    main(["eval", str(release.path), "--store", str(store)])
    assert capsys.readouterr().out.splitlines()[-1] == "4 projects, 23 derivations, 23 realised"


def refuse_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("eval opened a network connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_eval_never_fetches_and_ignores_what_only_fetching_finds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_connections(monkeypatch)
    release = write_release(tmp_path, chain(), base_url="http://127.0.0.1:9/wheels")
    # Checks 2 and 3 would fail: a content-id of other bytes, metadata that differs.
    declaration = release.declaration_files["c-3.0-py3-none-any.whl"]
    declaration.write_text(
        declaration_text("http://127.0.0.1:9/wheels/c-3.0-py3-none-any.whl",
                         str(file_cid(b"other bytes")), ">=3.1", ["nothing"], [])
    )
    code = main(["eval", str(release.path), "--store", str(tmp_path / "store")])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == "4 projects, 23 derivations, 0 realised"


def test_eval_reports_platform_unique_and_closure_from_declarations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_connections(monkeypatch)
    release = write_release(
        tmp_path,
        [
            Project("a", "1.0", tags=("cp311-cp311-manylinux_2_17_x86_64", "py3-none-any"),
                    requires_dist=["b>=2"]),
            Project("b", "1.0"),
        ],
        base_url="http://127.0.0.1:9/wheels",
    )
    (tmp_path / "wheels" / "b-1.0-py3-none-any.whl").unlink()
    code = main(["eval", str(release.path), "--store", str(tmp_path / "store")])
    _, err = capsys.readouterr()
    assert code == 4
    lines = err.splitlines()
    assert lines[-1] == "ipwhl: 4 violation(s)"
    checks = sorted(line.split(": ")[1] for line in lines[:-1])
    assert checks == ["closure", "closure", "platform-unique", "platform-unique"]
    assert all(line.startswith(str(release.declarations / "a")) for line in lines[:-1])

    code, data = eval_json(capsys, release.path, tmp_path / "store")
    assert code == 4
    assert sorted(data["violations"]) == sorted(lines[:-1])


def test_the_example_release_evaluates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_connections(monkeypatch)
    code, data = eval_json(capsys, REPO / "examples" / "release.toml", tmp_path / "store")
    assert code == 0
    assert data["violations"] == []
    assert {"requests", "urllib3", "pyyaml"} <= {p["project"] for p in data["projects"]}


# -- derivation keys -----------------------------------------------------------------------


def test_keys_are_stable_across_directories_and_runs(tmp_path: Path) -> None:
    release = write_release(tmp_path / "one", chain())
    shutil.copytree(tmp_path / "one", tmp_path / "elsewhere" / "two")
    here = keys(load_plan(release.path))
    there = keys(load_plan(tmp_path / "elsewhere" / "two" / "release.toml"))
    assert here == there
    assert len(set(here.values())) == len(here) == 23

    # Another interpreter, another hash seed, another working directory.
    script = (
        "import json, sys; from ipwhl.build import load_plan; from pathlib import Path;"
        "plan = load_plan(Path(sys.argv[1]));"
        "print(json.dumps([[d.builder, d.label, d.key] for p in plan.projects"
        " for d in p.derivations()]))"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(REPO))
    output = subprocess.run(
        [sys.executable, "-c", script, "two/release.toml"],
        cwd=tmp_path / "elsewhere", env=env, capture_output=True, text=True, check=True,
    ).stdout
    assert {(builder, label): key for builder, label, key in json.loads(output)} == here


def rewrite(release: Release, wheel_name: str, **fields: Any) -> None:
    """Rewrite one declaration of a factory release with some fields changed."""
    wheel = release.wheels[wheel_name]
    values: dict[str, Any] = {
        "source": f"../../wheels/{wheel.name}",
        "content_id": str(file_cid(wheel.read_bytes())),
        "requires_python": None,
        "extras": (),
        "dependencies": (),
    }
    values.update(fields)
    release.declaration_files[wheel_name].write_text(declaration_text(**values))


def changed(before: dict[tuple[str, str], str], after: dict[tuple[str, str], str]) -> set:
    assert before.keys() == after.keys()
    return {name for name in before if before[name] != after[name]}


def test_changing_a_declaration_changes_its_keys_and_its_dependents_closure(
    tmp_path: Path,
) -> None:
    release = write_release(tmp_path, chain())
    before = keys(load_plan(release.path))
    b = "b-2.0-py3-none-any.whl"
    rewrite(release, b, extras=["fast", "slow"], dependencies=["c"])
    after = keys(load_plan(release.path))
    assert changed(before, after) == {
        ("check-metadata", b),
        ("check-platform", "b"),
        ("check-closure", "b"),
        ("check-closure", "a"),
    }

    # A new content-id is a new fetch and inspect too; still nothing of c or d moves.
    rewrite(release, b, content_id=str(file_cid(b"other bytes")), extras=["fast", "slow"],
            dependencies=["c"])
    again = keys(load_plan(release.path))
    assert changed(after, again) == {
        ("fetch", b),
        ("inspect", b),
        ("check-metadata", b),
        ("check-platform", "b"),
        ("check-closure", "b"),
        ("check-closure", "a"),
    }


def test_a_new_dependency_changes_the_dependents_closure_key(tmp_path: Path) -> None:
    release = write_release(tmp_path, chain())
    before = keys(load_plan(release.path))
    d = "d-4.0-py3-none-any.whl"
    rewrite(release, d, dependencies=["c>=3"])
    after = keys(load_plan(release.path))
    assert changed(before, after) == {
        ("check-metadata", d), ("check-platform", "d"), ("check-closure", "d"),
    }
    # c changing now moves d's closure too, as it moves b's.
    rewrite(release, "c-3.0-py3-none-any.whl", requires_python=">=3")
    assert ("check-closure", "d") in changed(after, keys(load_plan(release.path)))
    assert ("check-closure", "a") not in changed(after, keys(load_plan(release.path)))


def test_changing_the_supported_list_changes_only_the_release_wide_checks(tmp_path: Path) -> None:
    release = write_release(tmp_path, chain())
    before = keys(load_plan(release.path))
    text = release.path.read_text()
    release.path.write_text(text.replace("'cp312 win_amd64'", "'cp313 win_amd64'"))
    after = keys(load_plan(release.path))
    assert changed(before, after) == {
        (builder, project) for builder in PROJECT_BUILDERS for project in "abcd"
    }


def clashing_release(tmp_path: Path) -> Release:
    """a's two wheels clash on manylinux and a needs b>=2 where b is 1.0: checks 1 and 4 fail."""
    return write_release(tmp_path, [
        Project("a", "1.0", tags=("cp311-cp311-manylinux_2_17_x86_64", "py3-none-any"),
                requires_dist=["b>=2"]),
        Project("b", "1.0"), Project("c", "1.0", requires_dist=["b"]),
    ])


def test_checks_realised_by_a_check_are_read_not_run(tmp_path: Path) -> None:
    # eval of a large release: checks 1 and 4 a build or check already ran are read from the
    # store, so no declaration is parsed for them.
    from ipwhl.build import check_release
    from ipwhl.declarations import load_declarations
    from ipwhl.declcache import DeclarationCache
    from ipwhl.evaluator import plan_release
    from ipwhl.releasefile import load_release
    from ipwhl.store import Store

    release = clashing_release(tmp_path)
    store = Store(tmp_path / "store").open()
    assert check_release(store, load_plan(release.path)).violations

    def plan() -> Plan:
        cache = DeclarationCache.in_store(store.root, release.declarations, racy_seconds=0)
        return plan_release(load_release(release.path),
                            load_declarations(release.declarations, cache))

    plan()
    cached = plan()
    read = [f for project in cached.projects for f in cached.declared_findings(project, store)]
    assert cached.declarations.parsed == 0
    run = [f for project in cached.projects for f in cached.declared_findings(project)]
    assert cached.declarations.parsed == 4
    assert read == run and {f.check for f in read} == {"platform-unique", "closure"}


def test_a_checked_release_gives_its_declared_findings_from_one_record(tmp_path: Path) -> None:
    from ipwhl.build import check_release
    from ipwhl.store import Store

    release = clashing_release(tmp_path)
    store = Store(tmp_path / "store").open()
    plan = load_plan(release.path)
    computed = plan.all_declared_findings()
    assert {f.check for f in computed} == {"platform-unique", "closure"}
    assert check_release(store, plan).violations
    assert store.has_record(plan.check.key)
    fresh = load_plan(release.path)
    assert sorted(fresh.all_declared_findings(store)) == sorted(computed)
    only_c = fresh.all_declared_findings(store, only={"c"})
    assert only_c == [] and fresh.all_declared_findings(only={"b"}) == []
    assert sorted(fresh.all_declared_findings(store, only={"a"})) == sorted(computed)


def test_each_project_is_handed_on_once_its_wheels_are_realised(tmp_path: Path) -> None:
    # A build writes a project's page while other wheels are still being fetched.
    from ipwhl.build import check_release
    from ipwhl.store import Store

    release = write_release(tmp_path, [
        Project("a", "1.0", tags=("cp311-cp311-manylinux_2_17_x86_64", "py3-none-any")),
        Project("b", "1.0"), Project("c", "1.0", requires_dist=["b"]),
    ])
    (release.wheels["c-1.0-py3-none-any.whl"]).write_bytes(b"not the declared bytes")
    store = Store(tmp_path / "store").open()
    plan = load_plan(release.path)
    handed: list[tuple[str, set[str]]] = []

    def on_project(project, wheels) -> None:  # type: ignore[no-untyped-def]
        handed.append((project.project, {w.summary.filename for w in project.wheels} - {
            w.plan.summary.filename for w in wheels.values()}))

    result = check_release(store, plan, workers=2, on_project=on_project)
    # c's only wheel failed its content-id: c is never handed on, and a and b are, complete.
    assert handed == [("a", set()), ("b", set())]
    assert "verifiable-source" in {v.check for v in result.violations}
