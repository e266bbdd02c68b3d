"""`ipwhl update`: newer versions from the index, proposed only where every dependent's
specifier still holds in every environment and the new wheels' own dependencies are met by
the release; the plan is a set of declaration files to remove and add, shown as a diff."""

from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from .checks import check_closure, check_platform_unique, installable
from .declarations import Declaration, load_declaration, load_declarations
from .declare import (
    Candidate,
    FetchedWheel,
    Pick,
    WheelFetcher,
    choose_wheels,
    declaration_path,
    declaration_text,
    index_candidates,
    pick_wheels,
    requirement_applies,
    store_wheel,
    write_declarations,
)
from .environments import Environment
from .errors import DeclarationError, IpwhlError
from .fetch import FetchedFile
from .pypi import ProjectNotFound, SimpleIndex
from .releasefile import ReleaseSpec
from .requirements import UndefinedComparison, UndefinedEnvironmentName
from .store import Store
from .unixfs import file_cid

__all__ = ["NotDeclared", "Proposal", "UpdatePlan", "apply_update", "plan_update"]

# Stands in for content-ids while versions are only being weighed: nothing is fetched for
# a version that is not taken.
_PLACEHOLDER_CID = str(file_cid(b""))


class NotDeclared(IpwhlError):
    """A project named on the command line is not in the release."""

    exit_code = 2


@dataclass(frozen=True)
class Proposal:
    """What update proposes for one project: a newer version, or why it stays."""

    project: str
    current: Version
    version: Version | None
    held_back: tuple[tuple[Version, str], ...]
    wheels: tuple[Candidate, ...] = ()
    note: str | None = None  # why no version could be weighed at all

    def lines(self) -> list[str]:
        """The proposal for people: one headline, then one line per newer version not taken."""
        if self.version is not None:
            head = f"{self.project} {self.current} -> {self.version}"
        elif self.note is not None:
            head = f"{self.project} {self.current} stays: {self.note}"
        elif self.held_back:
            head = f"{self.project} {self.current} stays"
        else:
            head = f"{self.project} {self.current} is the newest"
        return [head, *(f"  {version} held back: {why}" for version, why in self.held_back)]


@dataclass(frozen=True)
class UpdatePlan:
    """Declaration files to remove (with their text) and to add, and why."""

    root: Path
    label_root: Path
    proposals: tuple[Proposal, ...]
    added: Mapping[Path, str]
    removed: Mapping[Path, str]
    fetched: Mapping[str, FetchedFile]

    @property
    def changes(self) -> tuple[Proposal, ...]:
        return tuple(p for p in self.proposals if p.version is not None)

    def diff(self) -> str:
        """The plan as a unified diff of the declaration files (`patch -p1` applies it)."""
        out: list[str] = []
        for path in sorted(set(self.added) | set(self.removed)):
            name = Path(os.path.relpath(path, self.label_root)).as_posix()
            old, new = self.removed.get(path), self.added.get(path)
            out += difflib.unified_diff(
                (old or "").splitlines(keepends=True),
                (new or "").splitlines(keepends=True),
                fromfile=f"a/{name}" if old is not None else "/dev/null",
                tofile=f"b/{name}" if new is not None else "/dev/null",
            )
        return "".join(out)

    def summary(self) -> list[str]:
        return [line for proposal in self.proposals for line in proposal.lines()]


def apply_update(plan: UpdatePlan) -> None:
    """Rewrite the declarations: the new files first (each atomically), then the old removed."""
    write_declarations(plan.root, plan.added, plan.removed)


def _dependents(
    release: Mapping[str, Sequence[Declaration]],
    project: str,
    environments: Sequence[Environment],
) -> list[tuple[Declaration, str, SpecifierSet]]:
    """Every (dependent declaration, requirement text, specifier) asking for `project` in an
    environment where the dependent is installable and the requirement's marker holds."""
    found = []
    for other, declarations in release.items():
        if other == project:
            continue
        for declaration in declarations:
            for text, requirement in zip(declaration.dependency_texts, declaration.dependencies,
                                         strict=True):
                if requirement.normalized_name != project:
                    continue
                for environment in environments:
                    if not installable(declaration, environment):
                        continue
                    try:
                        applies = requirement_applies(requirement, declaration.extras,
                                                      environment)
                    except (UndefinedComparison, UndefinedEnvironmentName):
                        applies = True  # check 4 reports it; do not let it pass silently here
                    if applies:
                        found.append((declaration, text, requirement.specifier))
                        break
    return found


class _Planner:
    """Weighs newer versions against a release that changes as proposals are taken."""

    def __init__(self, spec: ReleaseSpec, index: SimpleIndex, fetcher: WheelFetcher,
                 scratch: Path) -> None:
        self.environments = spec.supported
        self.index = index
        self.fetcher = fetcher
        self.scratch = scratch
        self.release: dict[str, tuple[Declaration, ...]] = dict(
            load_declarations(spec.declarations_dir).by_project()
        )
        self.original = dict(self.release)

    def _hypothetical(self, pick: Pick) -> tuple[Declaration, ...]:
        """The declarations the pick would have, content-ids aside, read as the loader does."""
        root = self.scratch / f"{pick.project}-{pick.version}"
        declarations = []
        for wheel in pick.wheels:
            path = declaration_path(root, wheel.wheel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(declaration_text(wheel.url, _PLACEHOLDER_CID,
                                             pick.metadata[wheel.url]), encoding="utf-8")
            declarations.append(load_declaration(path, root))
        return tuple(declarations)

    def weigh(self, project: str) -> tuple[Proposal, Pick | None]:
        """The newest version the release can take for `project` now, or why none can; a
        version taken replaces the project in the release weighed next."""
        current = self.release[project]
        version = current[0].version
        # A new version must cover what the old one did (all environments, if it covered none).
        covered = [e for e in self.environments if any(installable(d, e) for d in current)]
        covered = covered or list(self.environments)
        held_back: list[tuple[Version, str]] = []
        try:
            by_version = index_candidates(self.index, project)
        except ProjectNotFound as error:
            return Proposal(project, version, None, (), note=str(error)), None
        newer = SpecifierSet(f">{version}", prereleases=version.is_prerelease)
        dependents = _dependents(self.release, project, self.environments)
        for candidate_version in sorted(newer.filter(by_version), reverse=True):
            blockers = [
                f"{d.project} {d.version} requires {text!r}" for d, text, specifier in dependents
                if not specifier.contains(candidate_version, prereleases=True)
            ]
            if blockers:
                held_back.append((candidate_version, "; ".join(dict.fromkeys(blockers))))
                continue
            candidates = by_version[candidate_version]
            # Tags first: a version without the wheels is held back without reading METADATA.
            choice = choose_wheels(candidates, self.environments, covered)
            pick = None if choice.missing else pick_wheels(
                self.fetcher, project, candidate_version, candidates, self.environments, covered)
            if pick is None or pick.missing:
                lacking = choice.missing or (covered if pick is None else pick.missing)
                held_back.append((candidate_version,
                                  f"no wheel for {'; '.join(map(str, lacking))}"))
                continue
            try:
                declarations = self._hypothetical(pick)
            except DeclarationError as error:
                problems = "; ".join(v.message for v in error.violations)
                held_back.append((candidate_version, f"cannot be declared: {problems}"))
                continue
            reasons = self._closure(project, declarations, dependents)
            if reasons:
                held_back.append((candidate_version, "; ".join(reasons)))
                continue
            self.release[project] = declarations
            return Proposal(project, version, candidate_version, tuple(held_back)), pick
        return Proposal(project, version, None, tuple(held_back)), None

    def _closure(self, project: str, declarations: tuple[Declaration, ...],
                 dependents: Iterable[tuple[Declaration, str, SpecifierSet]]) -> list[str]:
        """Checks 1 and 4 for the project and its dependents, were it replaced."""
        release = dict(self.release, **{project: declarations})
        by_relpath = {d.relpath: d for d in declarations}
        reasons = [f.message for f in check_platform_unique(declarations, self.environments)]
        for finding in check_closure(declarations, release, self.environments):
            needed = by_relpath[finding.relpath].dependencies[finding.index].normalized_name
            what = "updated" if needed in release else "declared"
            reasons.append(f"needs {needed} {what} too: {finding.message}")
        for name in sorted({d.project for d, _, _ in dependents}):
            reasons += [f.message for f in check_closure(release[name], release,
                                                         self.environments)]
        return list(dict.fromkeys(reasons))


def plan_update(
    spec: ReleaseSpec,
    index: SimpleIndex,
    *,
    projects: Sequence[str] = (),
    store: Store | None = None,
    workers: int = 4,
) -> UpdatePlan:
    """Propose the newest acceptable version of each project (default: all), each weighed
    against the release with the versions already taken, until nothing changes; fetch the new
    wheels (into `store` when given) for their content-ids."""
    root = spec.declarations_dir
    wanted = [canonicalize_name(p) for p in projects]
    with tempfile.TemporaryDirectory(prefix="ipwhl-update-") as directory:
        scratch = Path(directory)
        (scratch / "wheels").mkdir()
        fetcher = WheelFetcher(scratch / "wheels", index)
        planner = _Planner(spec, index, fetcher, scratch / "declarations")
        unknown = [p for p in wanted if p not in planner.release]
        if unknown:
            raise NotDeclared(f"{', '.join(unknown)} is not declared in {spec.path}; "
                              "`ipwhl declare` adds a project")
        scope = sorted(set(wanted) or planner.release)
        taken: dict[str, Pick] = {}
        weighed: dict[str, Proposal] = {}
        # A version taken for one project can unblock another (its dependent's specifier
        # changed), so weigh again until a round takes nothing.
        for _ in range(len(scope) + 1):
            changed = False
            for project in scope:
                proposal, pick = planner.weigh(project)
                weighed[project] = proposal
                if pick is not None:
                    taken[project] = pick
                    changed = True
            if not changed:
                break
        wheels = [w for project in scope if project in taken for w in taken[project].wheels]

        def fetch(candidate: Candidate) -> tuple[FetchedWheel, FetchedFile | None]:
            fetched = fetcher.fetch(candidate)
            return fetched, (store_wheel(store, fetched) if store is not None else None)

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            outcomes = list(pool.map(fetch, wheels))
    added: dict[Path, str] = {}
    fetched_files: dict[str, FetchedFile] = {}
    for fetched, stored in outcomes:
        project = canonicalize_name(fetched.candidate.wheel.project)
        prefix = any(d.relpath.count("/") == 2 for d in planner.original[project])
        path = declaration_path(root, fetched.candidate.wheel, prefix_layout=prefix)
        added[path] = declaration_text(fetched.candidate.url, str(fetched.content_id),
                                       fetched.info.metadata)
        if stored is not None:
            fetched_files[str(fetched.content_id)] = stored
    removed = {d.path: d.text.decode("utf-8") for p in taken for d in planner.original[p]}
    proposals = tuple(
        Proposal(p, planner.original[p][0].version, taken[p].version if p in taken else None,
                 weighed[p].held_back, taken[p].wheels if p in taken else (), weighed[p].note)
        for p in scope
    )
    inside = root.resolve().is_relative_to(spec.path.parent.resolve())
    return UpdatePlan(root, spec.path.parent if inside else root, proposals, added, removed,
                      fetched_files)
