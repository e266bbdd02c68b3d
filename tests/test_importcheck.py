"""Import checks: real wheels, a real release served from the store, real pip, real venvs."""

from __future__ import annotations

import platform
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

from ipwhl.build import CheckResult, build_release, check_release, load_plan
from ipwhl.cli import main
from ipwhl.derivations import Realiser
from ipwhl.environments import parse_environment
from ipwhl.evaluator import Plan
from ipwhl.gateway import GatewayConfig, running
from ipwhl.importcheck import (
    ImportReport,
    check_imports,
    closure,
    plan_import_checks,
    run_import_checks,
    runnable_environments,
)
from ipwhl.store import Store
from tests.releasefactory import Project, write_release

INTERPRETER = f"cp{sys.version_info.major}{sys.version_info.minor}"
ARCH = platform.machine()
HERE = f"{INTERPRETER} manylinux_2_17_{ARCH}"
ELSEWHERE = f"{INTERPRETER} win_amd64"
on_glibc_linux = pytest.mark.skipif(
    sys.platform != "linux" or ARCH not in {"x86_64", "aarch64"}
    or "musl" in (sysconfig.get_config_var("HOST_GNU_TYPE") or ""),
    reason="the test release targets glibc Linux on x86_64 or aarch64",
)

# glibc 2.5 to 2.36 on x86_64, as `packaging.tags.sys_tags()` lists them on Debian 12.
MACHINE = [f"manylinux_2_{minor}_x86_64" for minor in range(5, 37)] + [
    "manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64", "linux_x86_64", "any",
]


def test_runnable_environments_need_this_interpreter_and_every_platform_here() -> None:
    lines = ["cp311 manylinux_2_17_x86_64", "cp311 manylinux_2_40_x86_64",
             "cp312 manylinux_2_17_x86_64", "cp311 musllinux_1_2_x86_64", "cp311 win_amd64",
             "cp311 manylinux2014_x86_64"]
    environments = [parse_environment(line) for line in lines]
    runnable = runnable_environments(environments, interpreter="cp311", platforms=MACHINE)
    # glibc 2.40 would accept wheels this machine (2.36) cannot load.
    assert [e.line for e in runnable] == ["cp311 manylinux_2_17_x86_64",
                                          "cp311 manylinux2014_x86_64"]
    assert runnable_environments(environments, interpreter="cp313", platforms=MACHINE) == ()


def _plan(directory: Path, projects: list[Project], supported: list[str]) -> Plan:
    return load_plan(write_release(directory, projects, supported=supported).path)


def test_closure_follows_markers_extras_and_the_environments_wheel(tmp_path: Path) -> None:
    plan = _plan(tmp_path, [
        Project("app", "1.0", provides_extra=["fast"],
                requires_dist=["lib>=1", 'winonly; sys_platform == "win32"',
                               'speedy; extra == "fast"']),
        Project("lib", "1.0", requires_dist=["core[io]"]),
        Project("core", "2.0", provides_extra=["io"], requires_dist=['iolib; extra == "io"']),
        Project("iolib", "1.0"),
        Project("winonly", "1.0", tags=("cp311-cp311-win_amd64",)),
        Project("speedy", "1.0", tags=("cp311-cp311-manylinux_2_17_x86_64",
                                       "cp311-cp311-win_amd64")),
    ], ["cp311 manylinux_2_17_x86_64", "cp311 win_amd64"])
    linux, windows = plan.spec.supported
    app = plan.release["app"][0]

    def names(extras: tuple[str, ...], environment: object) -> list[str]:
        return [d.filename for d in closure(app, extras, plan.release, environment)]

    assert names((), linux) == ["app-1.0-py3-none-any.whl", "core-2.0-py3-none-any.whl",
                                "iolib-1.0-py3-none-any.whl", "lib-1.0-py3-none-any.whl"]
    assert "winonly-1.0-cp311-cp311-win_amd64.whl" in names((), windows)
    assert "speedy-1.0-cp311-cp311-manylinux_2_17_x86_64.whl" in names(("fast",), linux)
    assert "speedy-1.0-cp311-cp311-win_amd64.whl" in names(("fast",), windows)


def test_plan_keys_follow_the_closures_content_not_where_the_release_lives(
    tmp_path: Path,
) -> None:
    projects = [
        Project("app", "1.0", provides_extra=["fast", "docs"],
                requires_dist=["lib>=1", 'speedy; extra == "fast"',
                               'winonly; extra == "docs" and sys_platform == "win32"']),
        Project("lib", "1.0"), Project("speedy", "1.0"),
        Project("winonly", "1.0", tags=("cp311-cp311-win_amd64",)),
        Project("empty", "1.0", modules={}),
    ]
    supported = ["cp311 manylinux_2_17_x86_64"]

    def planned(directory: Path) -> tuple[dict[str, str], list[str]]:
        plan = _plan(directory, projects, supported)
        top_levels = {d.relpath: (d.project,) for d in plan.declarations.declarations
                      if d.project != "empty"}
        checks, notes = plan_import_checks(plan.declarations.declarations, plan.release,
                                           top_levels, plan.spec.supported, python="CPython 3")
        return {c.label: c.derivation.key for c in checks}, notes

    keys, notes = planned(tmp_path / "one")
    # 'docs' brings nothing on Linux: it would install and import the base's very files.
    assert sorted(keys) == [
        "app-1.0-py3-none-any.whl [fast] on cp311 manylinux_2_17_x86_64",
        "app-1.0-py3-none-any.whl on cp311 manylinux_2_17_x86_64",
        "lib-1.0-py3-none-any.whl on cp311 manylinux_2_17_x86_64",
        "speedy-1.0-py3-none-any.whl on cp311 manylinux_2_17_x86_64",
    ]
    assert notes == ["empty-1.0-py3-none-any.whl has no top-level modules; nothing to import"]
    assert planned(tmp_path / "elsewhere" / "two")[0] == keys

    # A new build of a dependency changes the check of everything that installs it.
    projects[1] = Project("lib", "1.0", modules={"lib/__init__.py": "CHANGED = True\n"})
    changed, _ = planned(tmp_path / "three")
    assert {label for label in keys if changed[label] != keys[label]} == {
        "app-1.0-py3-none-any.whl [fast] on cp311 manylinux_2_17_x86_64",
        "app-1.0-py3-none-any.whl on cp311 manylinux_2_17_x86_64",
        "lib-1.0-py3-none-any.whl on cp311 manylinux_2_17_x86_64",
    }


def test_no_runnable_environment_is_a_note_not_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = write_release(tmp_path, [Project("okpkg", "1.0")], supported=["cp311 win_amd64"])
    code = main(["check", "--import", str(release.path), "--store", str(tmp_path / "store")])
    assert code == 0
    assert "ipwhl: note: no supported environment can be run by this Python" in (
        capsys.readouterr().err
    )


# -- real pip, real venvs ----------------------------------------------------------------------


def _projects() -> list[Project]:
    return [
        Project("okpkg", "1.0", modules={"okpkg/__init__.py": "VALUE = 1\n",
                                          "okpkg_extra.py": "import okpkg\n"}),
        Project("boom", "1.0", modules={"boom/__init__.py": "raise RuntimeError('boom')\n"}),
        # Imports its dependency as it is imported: passes only if the closure is installed.
        Project("user", "1.0", requires_dist=["lib>=1", 'speedy; extra == "fast"'],
                provides_extra=["fast"],
                modules={"user/__init__.py": "import lib\nVALUE = lib.VALUE\n"}),
        Project("lib", "1.0", modules={"lib/__init__.py": "VALUE = 'lib'\n"}),
        Project("speedy", "1.0", modules={"speedy/__init__.py": ""}),
        Project("empty", "1.0", modules={}),
        # Two builds: the environment's (glibc 2.17) imports, the one this machine would
        # prefer if left to itself (glibc 2.28, installable in no supported environment) fails.
        Project("pick", "1.0", tags=(f"{INTERPRETER}-{INTERPRETER}-manylinux_2_17_{ARCH}",),
                modules={"pick/__init__.py": ""}),
        Project("pick", "1.0", tags=(f"{INTERPRETER}-{INTERPRETER}-manylinux_2_28_{ARCH}",),
                modules={"pick/__init__.py": "raise ImportError('the wrong build')\n"}),
    ]


@dataclass
class Checked:
    release: Path
    store: Store
    plan: Plan
    checked: CheckResult
    report: ImportReport
    realiser: Realiser


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Checked:
    directory = tmp_path_factory.mktemp("imports")
    release = write_release(directory, _projects(), supported=[HERE, ELSEWHERE])
    store = Store(directory / "store").open()
    plan = load_plan(release.path)
    checked = check_release(store, plan)
    assert checked.violations == []
    realiser = Realiser(store)
    report = check_imports(store, plan, checked, realiser=realiser, jobs=2)
    return Checked(release.path, store, plan, checked, report, realiser)


def _outcomes(report: ImportReport) -> dict[str, bool]:
    return {o.check.label.removesuffix(f" on {HERE}"): o.ok for o in report.outcomes}


@pytest.mark.slow
@on_glibc_linux
def test_passing_failing_and_closure_imports(first_run: Checked) -> None:
    report = first_run.report
    assert [e.line for e in report.environments] == [HERE]
    assert _outcomes(report) == {
        "boom-1.0-py3-none-any.whl": False,
        "lib-1.0-py3-none-any.whl": True,
        "okpkg-1.0-py3-none-any.whl": True,
        f"pick-1.0-{INTERPRETER}-{INTERPRETER}-manylinux_2_17_{ARCH}.whl": True,
        "speedy-1.0-py3-none-any.whl": True,
        "user-1.0-py3-none-any.whl": True,
        "user-1.0-py3-none-any.whl [fast]": True,
    }
    okpkg = next(o for o in report.outcomes if o.check.declaration.project == "okpkg")
    assert okpkg.check.top_level == ("okpkg", "okpkg_extra")
    assert report.notes == [
        "empty-1.0-py3-none-any.whl has no top-level modules; nothing to import"
    ]
    declaration = first_run.plan.release["boom"][0].path
    assert [str(v) for v in report.violations] == [
        f"{declaration}:1:1: import: boom 1.0 (boom-1.0-py3-none-any.whl) on {HERE}: "
        "import boom failed: RuntimeError: boom (boom/__init__.py, line 1)"
    ]
    boom = next(o for o in report.outcomes if not o.ok)
    assert boom.failures[0].traceback[-2:] == ("    raise RuntimeError('boom')",
                                               "RuntimeError: boom")
    assert first_run.realiser.ran["check-import"] == 7


@pytest.mark.slow
@on_glibc_linux
def test_a_second_run_realises_nothing(first_run: Checked) -> None:
    realiser = Realiser(first_run.store)
    again = check_imports(first_run.store, first_run.plan, first_run.checked, realiser=realiser)
    assert sum(realiser.ran.values()) == 0
    assert realiser.reused["check-import"] == 7
    assert all(o.reused for o in again.outcomes)
    assert again.violations == first_run.report.violations


@pytest.mark.slow
@on_glibc_linux
def test_cli_reports_import_violations_with_exit_4(
    first_run: Checked, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["check", "--import", "--jobs", "3", str(first_run.release),
                 "--store", str(first_run.store.root)])
    err = capsys.readouterr().err
    assert code == 4
    assert ": import: boom 1.0 (boom-1.0-py3-none-any.whl) on " in err
    assert "import boom failed: RuntimeError: boom (boom/__init__.py, line 1)" in err
    assert "ipwhl: note: empty-1.0-py3-none-any.whl has no top-level modules" in err
    assert err.count(": ok (from the store)") == 6
    assert err.count(": FAILED (from the store)") == 1


@pytest.mark.slow
@on_glibc_linux
def test_failed_installs_and_timeouts_are_reported_but_not_recorded(
    first_run: Checked, tmp_path: Path
) -> None:
    store = first_run.store
    # A release without 'user' to install it from, a module that never finishes and one that
    # takes the interpreter down with it.
    other = write_release(tmp_path, [
        Project("sleepy", "1.0", modules={"sleepy/__init__.py": "import time\ntime.sleep(60)\n"}),
        Project("crashy", "1.0", modules={"crashy/__init__.py": "import os\nos._exit(3)\n"}),
    ], supported=[HERE])
    other_plan = load_plan(other.path)
    root = build_release(store, other_plan).root
    user = first_run.plan.release["user"][0]
    sleepy, crashy = other_plan.release["sleepy"][0], other_plan.release["crashy"][0]
    release = {**first_run.plan.release, **other_plan.release}
    checks, _ = plan_import_checks(
        [user, sleepy, crashy], release,
        {user.relpath: ("user",), sleepy.relpath: ("sleepy",), crashy.relpath: ("crashy",)},
        runnable_environments(first_run.plan.spec.supported), python="a python of its own",
    )
    checks = [c for c in checks if c.extra is None]
    with running(store, GatewayConfig(port=0)) as base:
        installing, sleeping, crashing = run_import_checks(
            store, checks, f"{base}/ipfs/{root}/simple/", jobs=3, import_timeout=1.0
        )
    assert installing.install_error is not None and "user==1.0" in installing.install_error
    assert "pip could not install user==1.0 from the release: " in (
        str(installing.violations()[0])
    )
    assert sleeping.failures[0].error == "TimeoutError: importing took more than 1 s"
    assert crashing.failures[0].error == "the interpreter ended with exit status 3 before it " \
        "was done"
    assert not any(store.has_record(c.derivation.key) for c in checks)
