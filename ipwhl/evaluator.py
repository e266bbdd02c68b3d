"""The evaluator: a release file and its declarations to a plan of derivations, without fetching."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import blake3
from packaging.utils import canonicalize_name

from .checks import Finding, check_closure, check_platform_unique
from .cid import CID
from .declarations import Declaration, DeclarationSet
from .derivations import Derivation
from .releasefile import ReleaseSpec

__all__ = ["Plan", "ProjectPlan", "WheelPlan", "declaration_digest", "plan_release"]

# Bump a builder's version whenever its output for the same inputs would change.
FETCH_VERSION = 1
INSPECT_VERSION = 1
CHECK_VERSION = 2


def declaration_digest(declaration: Declaration) -> str:
    """blake3 of a declaration's place in the tree and its bytes: all that it declares."""
    hasher = blake3.blake3(declaration.relpath.encode())
    hasher.update(b"\0")
    hasher.update(declaration.text)
    return hasher.hexdigest()


@dataclass(frozen=True)
class WheelPlan:
    """The derivations of one declared wheel."""

    declaration: Declaration
    content_id: CID
    fetch: Derivation
    inspect: Derivation
    check_metadata: Derivation


@dataclass(frozen=True)
class ProjectPlan:
    """The derivations of one project: its wheels and its two release-wide checks."""

    project: str
    wheels: tuple[WheelPlan, ...]
    check_platform: Derivation
    check_closure: Derivation

    @property
    def version(self) -> str:
        return str(self.wheels[0].declaration.version)

    @property
    def declarations(self) -> tuple[Declaration, ...]:
        return tuple(w.declaration for w in self.wheels)

    def derivations(self) -> list[Derivation]:
        steps: list[Derivation] = []
        for wheel in self.wheels:
            steps += [wheel.fetch, wheel.inspect, wheel.check_metadata]
        return [*steps, self.check_platform, self.check_closure]


@dataclass(frozen=True)
class Plan:
    """Everything a release is made of, as derivations, before anything is realised."""

    spec: ReleaseSpec
    declarations: DeclarationSet
    projects: tuple[ProjectPlan, ...]
    digests: Mapping[str, str]  # relpath → declaration_digest

    @cached_property
    def check(self) -> Derivation:
        """All four checks over the whole release: realised means every one of them ran on
        exactly these declarations and environments, so a warm `check` reads one record."""
        return Derivation(
            "check-release",
            CHECK_VERSION,
            {"declarations": sorted(self.digests.items()),
             "supported": list(self.spec.supported_lines),
             "builders": [FETCH_VERSION, INSPECT_VERSION]},
            label=self.spec.name,
        )

    @cached_property
    def by_relpath(self) -> Mapping[str, Declaration]:
        return {d.relpath: d for d in self.declarations.declarations}

    @cached_property
    def release(self) -> Mapping[str, Sequence[Declaration]]:
        return self.declarations.by_project()

    def declared_findings(self, project: ProjectPlan) -> list[Finding]:
        """Checks 1 and 4 on the declared metadata of one project (pure; nothing is fetched)."""
        environments = self.spec.supported
        return [
            *check_platform_unique(project.declarations, environments),
            *check_closure(project.declarations, self.release, environments),
        ]


def _wheel_plan(declaration: Declaration) -> WheelPlan:
    content_id = CID.parse(declaration.content_id)
    fetch = Derivation("fetch", FETCH_VERSION, {"content-id": str(content_id)},
                       label=declaration.filename)
    inspect = Derivation(
        "inspect",
        INSPECT_VERSION,
        {"content-id": str(content_id), "filename": declaration.filename},
        label=declaration.filename,
    )
    check_metadata = Derivation(
        "check-metadata",
        CHECK_VERSION,
        {"declaration": declaration_digest(declaration), "inspect": inspect.key},
        label=declaration.filename,
    )
    return WheelPlan(declaration, content_id, fetch, inspect, check_metadata)


def _dependency_projects(declarations: Sequence[Declaration]) -> list[str]:
    names = {canonicalize_name(r.name) for d in declarations for r in d.dependencies}
    return sorted(names)


def plan_release(spec: ReleaseSpec, declarations: DeclarationSet) -> Plan:
    """Turn a release into derivations; each key hashes exactly the inputs its step reads."""
    release = declarations.by_project()
    digests = {d.relpath: declaration_digest(d) for d in declarations.declarations}
    supported = list(spec.supported_lines)
    projects = []
    for project, project_declarations in sorted(release.items()):
        own = [digests[d.relpath] for d in project_declarations]
        check_platform = Derivation(
            "check-platform", CHECK_VERSION,
            {"project": project, "declarations": own, "supported": supported}, label=project,
        )
        dependencies = {
            name: [digests[d.relpath] for d in release.get(name, ())]
            for name in _dependency_projects(project_declarations)
        }
        check_closure_drv = Derivation(
            "check-closure", CHECK_VERSION,
            {"project": project, "declarations": own, "dependencies": dependencies,
             "supported": supported},
            label=project,
        )
        projects.append(
            ProjectPlan(
                project=project,
                wheels=tuple(_wheel_plan(d) for d in project_declarations),
                check_platform=check_platform,
                check_closure=check_closure_drv,
            )
        )
    return Plan(spec, declarations, tuple(projects), digests)
