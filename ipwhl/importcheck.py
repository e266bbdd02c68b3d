"""Import checks: install a wheel's closure from the release into a fresh venv and import it.

One check per (wheel, declared extra or none, supported environment this interpreter can stand
in for). Each is a derivation keyed by what decides its outcome — the closure's wheels by
content-id, the environment line, the interpreter and the names imported — so its result is a
store record and it runs once per input, whichever release or root CID it came from.

The closure is installed by pip from the release itself, served from the store on 127.0.0.1:
`pip install --target <venv site-packages>` with the environment's own platforms, ABIs and
Python version, so pip picks the very wheels that environment would get (this machine may
accept more specific ones), never a source distribution, and nothing from another index.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import sysconfig
import tempfile
import threading
import venv
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from packaging.tags import sys_tags
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .checks import installable
from .cid import CID
from .declarations import Declaration
from .derivations import Derivation, Realiser
from .environments import Environment
from .errors import IpwhlError, Location, NotFound, Violation
from .requirements import UndefinedComparison, UndefinedEnvironmentName
from .store import Store

if TYPE_CHECKING:
    from .build import CheckResult
    from .evaluator import Plan

__all__ = [
    "IMPORT",
    "MIN_PIP",
    "ImportCheck",
    "ImportFailure",
    "ImportLines",
    "ImportOutcome",
    "ImportProgress",
    "ImportReport",
    "ImportUnavailable",
    "check_imports",
    "closure",
    "plan_import_checks",
    "require_pip",
    "run_import_checks",
    "runnable_environments",
]

IMPORT = "import"
# Bump whenever the outcome recorded for the same inputs would change.
IMPORT_CHECK_VERSION = 1
MIN_PIP = (22, 3)
INSTALL_TIMEOUT = 600.0
IMPORT_TIMEOUT = 120.0
# Lines of traceback kept in a record: enough to see where, not a whole stack.
TRACEBACK_LINES = 12

_RESULT_MARK = "ipwhl-import-result:"
# Run in the venv with -I: imports each name on its own, even after one fails, and prints what
# failed as one JSON line (a module may print anything before it).
_IMPORT_SCRIPT = f"""
import importlib, json, os, sys, traceback
machinery = os.path.dirname(importlib.__file__)
failures = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as error:
        frames = [f for f in traceback.extract_tb(error.__traceback__)
                  if not f.filename.startswith(("<", machinery))]
        lines = ["Traceback (most recent call last):\\n", *traceback.format_list(frames),
                 *traceback.format_exception_only(error)]
        failures.append({{
            "module": name,
            "error": traceback.format_exception_only(error)[-1].strip(),
            "where": [frames[-1].filename, frames[-1].lineno] if frames else None,
            "traceback": "".join(lines).splitlines(),
        }})
sys.stdout.flush()
print({_RESULT_MARK!r} + json.dumps(failures))
"""


class ImportUnavailable(IpwhlError):
    """Import checks cannot run here: no usable pip, or a venv cannot be made."""

    exit_code = 1


# -- which checks ------------------------------------------------------------------------------


def _machine_platforms() -> frozenset[str]:
    return frozenset(tag.platform for tag in sys_tags())


def _running_interpreter() -> str | None:
    """cpXY of this interpreter, or None when no supported line can describe it."""
    if sys.implementation.name != "cpython" or sysconfig.get_config_var("Py_GIL_DISABLED"):
        return None  # supported lines name GIL CPython only
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


def runnable_environments(
    environments: Iterable[Environment],
    *,
    interpreter: str | None = None,
    platforms: Iterable[str] | None = None,
) -> tuple[Environment, ...]:
    """The environments this interpreter can stand in for: the same cpXY, and every platform
    the environment accepts is one this machine runs (default: the running interpreter's)."""
    interpreter = _running_interpreter() if interpreter is None else interpreter
    here = _machine_platforms() if platforms is None else frozenset(platforms)
    # Every platform, not just one: the environment would pick a wheel for any of them, and a
    # wheel this machine cannot load would fail for a reason that is not the release's.
    return tuple(
        e for e in environments
        if e.interpreter == interpreter and _platforms(e) <= here
    )


def _platforms(environment: Environment) -> frozenset[str]:
    return frozenset(t.platform for t in environment.tags) - {"any"}


def _applies(requirement: Any, environment: Environment, extras: Iterable[str]) -> bool:
    if requirement.marker is None:
        return True
    try:
        return any(
            requirement.marker.evaluate(dict(environment.markers, extra=extra))
            for extra in ("", *extras)
        )
    except (UndefinedComparison, UndefinedEnvironmentName):
        return False  # the closure check reports it


def closure(
    declaration: Declaration,
    extras: Iterable[str],
    release: Mapping[str, Sequence[Declaration]],
    environment: Environment,
) -> tuple[Declaration, ...]:
    """The wheels installing `declaration` with `extras` brings in, in `environment`: the wheel
    and, transitively, the one installable wheel of each dependency whose marker holds.

    A dependency the release cannot meet is left out; the closure check reports it.
    """
    wanted: dict[str, set[str]] = {declaration.project: {canonicalize_name(e) for e in extras}}
    chosen = {declaration.project: declaration}
    todo = [declaration.project]
    while todo:
        current = chosen[todo.pop()]
        for requirement in current.dependencies:
            if not _applies(requirement, environment, wanted[current.project]):
                continue
            project = canonicalize_name(requirement.name)
            candidates = [d for d in release.get(project, ()) if installable(d, environment)]
            if not candidates:
                continue
            requested = {canonicalize_name(e) for e in requirement.extras}
            if project in chosen and requested <= wanted[project]:
                continue
            chosen[project] = candidates[0]
            wanted.setdefault(project, set()).update(requested)
            todo.append(project)
    return tuple(sorted(chosen.values(), key=lambda d: d.relpath))


@dataclass(frozen=True)
class ImportCheck:
    """One import check: a wheel, with one declared extra or none, in one environment."""

    declaration: Declaration
    extra: str | None
    environment: Environment
    closure: tuple[Declaration, ...]
    top_level: tuple[str, ...]
    python: str
    derivation: Derivation = field(compare=False)

    @property
    def requirement(self) -> str:
        extra = f"[{self.extra}]" if self.extra else ""
        return f"{self.declaration.project}{extra}=={self.declaration.version}"

    @property
    def label(self) -> str:
        extra = f" [{self.extra}]" if self.extra else ""
        return f"{self.declaration.filename}{extra} on {self.environment.line}"


def _python_identity() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}"


def _check(
    declaration: Declaration,
    extra: str | None,
    environment: Environment,
    wheels: tuple[Declaration, ...],
    top_level: tuple[str, ...],
    python: str,
) -> ImportCheck:
    inputs = {
        "wheel": [declaration.filename, str(CID.parse(declaration.content_id))],
        "extra": extra or "",
        "environment": environment.line,
        "python": python,
        "closure": [[d.filename, str(CID.parse(d.content_id))] for d in wheels],
        "top-level": list(top_level),
    }
    derivation = Derivation("check-import", IMPORT_CHECK_VERSION, inputs,
                            label=f"{declaration.filename} {extra or ''}".strip())
    return ImportCheck(declaration, extra, environment, wheels, top_level, python, derivation)


def plan_import_checks(
    declarations: Sequence[Declaration],
    release: Mapping[str, Sequence[Declaration]],
    top_levels: Mapping[str, Sequence[str]],
    environments: Sequence[Environment],
    *,
    python: str | None = None,
) -> tuple[list[ImportCheck], list[str]]:
    """The import checks of a release on `environments`, and a note for each wheel skipped.

    `top_levels` maps a declaration's relpath to its wheel's top-level names. Each wheel gets
    a check for its base install and one per declared extra whose closure differs from it (an
    extra that brings nothing here would install, and import, the very same files).
    """
    python = _python_identity() if python is None else python
    checks: list[ImportCheck] = []
    notes: list[str] = []
    for declaration in declarations:
        names = tuple(n for n in top_levels.get(declaration.relpath, ()) if n.isidentifier())
        usable = [e for e in environments if installable(declaration, e)]
        if usable and not names:
            notes.append(f"{declaration.filename} has no top-level modules; nothing to import")
            continue
        for environment in usable:
            base = closure(declaration, (), release, environment)
            checks.append(_check(declaration, None, environment, base, names, python))
            for extra in sorted({canonicalize_name(e) for e in declaration.extras}):
                wheels = closure(declaration, (extra,), release, environment)
                if wheels != base:
                    checks.append(_check(declaration, extra, environment, wheels, names, python))
    return checks, notes


# -- running one -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportFailure:
    """A top-level module whose import raised: the exception line, where, the last lines."""

    module: str
    error: str
    where: tuple[str, int] | None
    traceback: tuple[str, ...]


@dataclass(frozen=True)
class ImportOutcome:
    """What one check found: nothing (ok), pip's complaint, or the modules that failed."""

    check: ImportCheck
    install_error: str | None = None
    failures: tuple[ImportFailure, ...] = ()
    reused: bool = False

    @property
    def ok(self) -> bool:
        return self.install_error is None and not self.failures

    def violations(self) -> list[Violation]:
        """One `path:1:1: import: …` violation per problem, against the wheel's declaration."""
        check = self.check
        declaration = check.declaration
        extra = f" with extra {check.extra!r}" if check.extra else ""
        subject = (f"{declaration.project} {declaration.version} ({declaration.filename}){extra}"
                   f" on {check.environment.line}")
        location = Location(str(declaration.path), 1, 1)
        if self.install_error is not None:
            return [Violation(location, IMPORT, f"{subject}: pip could not install "
                              f"{check.requirement} from the release: {self.install_error}")]
        violations = []
        for failure in self.failures:
            where = f" ({failure.where[0]}, line {failure.where[1]})" if failure.where else ""
            violations.append(Violation(
                location, IMPORT,
                f"{subject}: import {failure.module} failed: {failure.error}{where}",
            ))
        return violations

    @classmethod
    def from_record(cls, check: ImportCheck, record: Mapping[str, Any], *,
                    reused: bool) -> ImportOutcome:
        failures = tuple(
            ImportFailure(f["module"], f["error"],
                          (f["where"][0], f["where"][1]) if f["where"] else None,
                          tuple(f["traceback"]))
            for f in record["failures"]
        )
        return cls(check, record["install_error"], failures, reused)


class _NotRecorded(Exception):
    """An outcome that says more about this machine than the inputs (a timeout, pip failing):
    reported, never stored, so the next run tries again."""

    def __init__(self, outcome: dict[str, Any]) -> None:
        super().__init__()
        self.outcome = outcome


def _subprocess_environ() -> dict[str, str]:
    """os.environ without what would point pip or Python elsewhere: no config, no proxy."""
    drop = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "virtual_env"}
    environ = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("PIP_", "PYTHON")) and k.lower() not in drop
    }
    environ.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
                   PIP_NO_INPUT="1", PYTHONIOENCODING="utf-8",
                   NO_PROXY="127.0.0.1,localhost,::1", no_proxy="127.0.0.1,localhost,::1")
    return environ


def _pip_problem(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    chosen = errors[0] if errors else (lines[-1] if lines else "pip failed and said nothing")
    return chosen


def _tail(text: str, limit: int = TRACEBACK_LINES) -> tuple[str, ...]:
    return tuple(text.splitlines()[-limit:])


def _pip_command(check: ImportCheck, index_url: str, target: Path) -> list[str]:
    environment = check.environment
    ordered_platforms = dict.fromkeys(t.platform for t in environment.tags if t.platform != "any")
    abis = dict.fromkeys(t.abi for t in environment.tags)
    version = f"{environment.python_version.major}.{environment.python_version.minor}"
    command = [
        sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir",
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
        "--index-url", index_url, "--only-binary", ":all:",
        "--implementation", "cp", "--python-version", version,
    ]
    for abi in abis:
        command += ["--abi", abi]
    for name in ordered_platforms:
        command += ["--platform", name]
    return [*command, "--target", str(target), check.requirement]


def _make_venv(directory: Path) -> tuple[Path, Path]:
    """A venv without pip at `directory`; returns (its python, its site-packages)."""
    try:
        venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt", clear=True).create(directory)
    except (OSError, subprocess.CalledProcessError) as error:
        raise ImportUnavailable(f"cannot make a venv in {directory}: {error}") from error
    scripts = "Scripts" if os.name == "nt" else "bin"
    python = directory / scripts / ("python.exe" if os.name == "nt" else "python")
    done = subprocess.run(
        [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, timeout=60, check=False, env=_subprocess_environ(),
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise ImportUnavailable(f"the venv at {directory} does not run: {done.stderr.strip()}")
    return python, Path(done.stdout.strip())


def _scrub(text: str, *paths: Path) -> str:
    """Tracebacks name temporary directories; records must not."""
    for path in paths:
        text = text.replace(f"{path}{os.sep}", "")
    return text


def _run_check(
    check: ImportCheck, index_url: str, *, install_timeout: float, import_timeout: float
) -> dict[str, Any]:
    """Install and import in a fresh venv; the outcome as a record, or _NotRecorded."""
    environ = _subprocess_environ()
    with tempfile.TemporaryDirectory(prefix="ipwhl-import-") as temporary:
        workdir = Path(temporary)
        python, site_packages = _make_venv(workdir / "venv")
        try:
            installed = subprocess.run(
                _pip_command(check, index_url, site_packages), capture_output=True, text=True,
                timeout=install_timeout, check=False, env=environ, cwd=workdir,
            )
        except subprocess.TimeoutExpired:
            raise _NotRecorded({"install_error": f"pip took more than {install_timeout:g} s",
                                "failures": []}) from None
        if installed.returncode != 0:
            # pip failing says as much about this machine and its network as about the release.
            raise _NotRecorded({"install_error": _pip_problem(installed.stderr + installed.stdout),
                                "failures": []})
        try:
            imported = subprocess.run(
                [str(python), "-I", "-c", _IMPORT_SCRIPT, *check.top_level],
                capture_output=True, text=True, timeout=import_timeout, check=False,
                env=environ, cwd=workdir,
            )
        except subprocess.TimeoutExpired:
            raise _NotRecorded({"install_error": None, "failures": [
                {"module": ", ".join(check.top_level),
                 "error": f"TimeoutError: importing took more than {import_timeout:g} s",
                 "where": None, "traceback": []},
            ]}) from None
        return _import_outcome(check, imported, site_packages, workdir)


def _import_outcome(
    check: ImportCheck, done: subprocess.CompletedProcess[str], site_packages: Path, workdir: Path
) -> dict[str, Any]:
    marked = [line for line in done.stdout.splitlines() if line.startswith(_RESULT_MARK)]
    if not marked:
        # The interpreter died under an import (a crash, os._exit) or before it: no module to
        # name for sure, and no telling it from trouble here, so it is tried again next time.
        how = (f"signal {-done.returncode}" if done.returncode < 0
               else f"exit status {done.returncode}")
        raise _NotRecorded({"install_error": None, "failures": [
            {"module": ", ".join(check.top_level),
             "error": f"the interpreter ended with {how} before it was done", "where": None,
             "traceback": list(_tail(_scrub(done.stderr, site_packages, workdir)))},
        ]})
    failures = json.loads(marked[-1][len(_RESULT_MARK):])
    for failure in failures:
        if failure["where"]:
            failure["where"][0] = _scrub(failure["where"][0], site_packages, workdir)
        failure["traceback"] = [
            _scrub(line, site_packages, workdir) for line in failure["traceback"]
        ][-TRACEBACK_LINES:]
    return {"install_error": None, "failures": failures}


# -- running many ------------------------------------------------------------------------------


class ImportProgress:
    """What running import checks reports as it goes; the CLI draws it, tests ignore it."""

    def start(self, total: int) -> None: ...
    def done(self, outcome: ImportOutcome) -> None: ...
    def finish(self) -> None: ...


class ImportLines(ImportProgress):
    """A redrawn count on a terminal; one plain line per finished check otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.terminal = stream.isatty()
        self.total = 0
        self.finished = 0
        self.failed = 0
        self.lock = threading.Lock()

    def start(self, total: int) -> None:
        self.total = total
        if self.terminal:
            self._draw()

    def done(self, outcome: ImportOutcome) -> None:
        with self.lock:
            self.finished += 1
            self.failed += not outcome.ok
            if self.terminal:
                self._draw()
            else:
                state = "ok" if outcome.ok else "FAILED"
                reused = " (from the store)" if outcome.reused else ""
                print(f"ipwhl: import {self.finished}/{self.total} {outcome.check.label}: "
                      f"{state}{reused}", file=self.stream, flush=True)

    def finish(self) -> None:
        if self.terminal:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self) -> None:
        failed = f", {self.failed} failed" if self.failed else ""
        self.stream.write(f"\rimport checks {self.finished}/{self.total}{failed}\x1b[K")
        self.stream.flush()


def _pip_version() -> tuple[int, ...] | None:
    done = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True,
                          text=True, timeout=60, check=False, env=_subprocess_environ())
    match = re.match(r"pip (\S+)", done.stdout)
    if done.returncode != 0 or match is None:
        return None
    try:
        return Version(match[1]).release
    except InvalidVersion:
        return None


def require_pip() -> None:
    """Raise ImportUnavailable unless this Python has pip ≥ MIN_PIP to install with."""
    found = _pip_version()
    wanted = ".".join(map(str, MIN_PIP))
    if found is None or found < MIN_PIP:
        have = "no pip" if found is None else f"pip {'.'.join(map(str, found))}"
        raise ImportUnavailable(
            f"import checks need pip >= {wanted} in the Python that runs ipwhl "
            f"({sys.executable}), which has {have}; install it with "
            f"`{sys.executable} -m ensurepip --upgrade` or `… -m pip install -U pip`"
        )


def run_import_checks(
    store: Store,
    checks: Sequence[ImportCheck],
    index_url: str,
    *,
    jobs: int = 2,
    realiser: Realiser | None = None,
    progress: ImportProgress | None = None,
    install_timeout: float = INSTALL_TIMEOUT,
    import_timeout: float = IMPORT_TIMEOUT,
) -> list[ImportOutcome]:
    """Run the checks against the release at `index_url` (…/simple/), `jobs` at a time; a
    check with a record in the store is not run again. Outcomes come in the checks' order."""
    realiser = realiser or Realiser(store)
    progress = progress or ImportProgress()
    if any(not realiser.is_realised(c.derivation) for c in checks):
        require_pip()

    def one(check: ImportCheck) -> ImportOutcome:
        ran = False

        def build() -> dict[str, Any]:
            nonlocal ran
            ran = True
            return _run_check(check, index_url, install_timeout=install_timeout,
                              import_timeout=import_timeout)

        try:
            record = realiser.realise(check.derivation, build)
            outcome = ImportOutcome.from_record(check, record, reused=not ran)
        except _NotRecorded as unrecorded:
            outcome = ImportOutcome.from_record(check, unrecorded.outcome, reused=False)
        progress.done(outcome)
        return outcome

    progress.start(len(checks))
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            return list(pool.map(one, checks))
    finally:
        progress.finish()


@dataclass
class ImportReport:
    """The outcome of `check_imports`: what ran, what was skipped and why, what failed."""

    environments: tuple[Environment, ...]
    outcomes: list[ImportOutcome]
    notes: list[str]

    @property
    def violations(self) -> list[Violation]:
        return sorted(v for outcome in self.outcomes for v in outcome.violations())


def check_imports(
    store: Store,
    plan: Plan,
    checked: CheckResult,
    *,
    root: CID | None = None,
    jobs: int = 2,
    realiser: Realiser | None = None,
    progress: ImportProgress | None = None,
    environments: Sequence[Environment] | None = None,
    install_timeout: float = INSTALL_TIMEOUT,
    import_timeout: float = IMPORT_TIMEOUT,
) -> ImportReport:
    """Import-check a release that passed the four checks (`checked`, from `check_release`).

    The release is served from the store: `root` if given, else its DAG is written (each page
    and directory a derivation, as a build does, but no GC root is added).
    """
    from .build import write_dag
    from .gateway import GatewayConfig, running

    realiser = realiser or Realiser(store)
    supported = plan.spec.supported
    runnable = runnable_environments(supported) if environments is None else tuple(environments)
    notes: list[str] = []
    if not runnable:
        here = _running_interpreter() or sys.implementation.name
        notes.append(f"no supported environment can be run by this Python ({here} on "
                     f"{sysconfig.get_platform()}); no import checks ran")
        return ImportReport(runnable, [], notes)
    top_levels = {relpath: tuple(w.inspected["top_level"]) for relpath, w in checked.wheels.items()}
    checks, skipped = plan_import_checks(
        plan.declarations.declarations, plan.release, top_levels, runnable
    )
    notes += skipped
    if not checks:
        return ImportReport(runnable, [], notes)
    if root is None:
        try:
            root = write_dag(store, plan, checked, realiser).root
        except NotFound:
            # The previous release is not here to number this one; simple/ does not depend on
            # the number, so any will do.
            root = write_dag(store, plan, checked, realiser, sequence=1).root
    with running(store, GatewayConfig(port=0)) as base:
        outcomes = run_import_checks(
            store, checks, f"{base}/ipfs/{root}/simple/", jobs=jobs, realiser=realiser,
            progress=progress, install_timeout=install_timeout, import_timeout=import_timeout,
        )
    return ImportReport(runnable, outcomes, notes)

