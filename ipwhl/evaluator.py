"""The evaluator: a release file and its declarations to a plan of derivations, without fetching.

Planning reads only the declarations' summaries. A project's derivations, and the whole
declarations its checks read, are made when first asked for: a warm build or an overlay of a
large release touches few of them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import blake3

from .checks import CLOSURE, PLATFORM_UNIQUE, Finding, check_closure, check_platform_unique
from .cid import CID
from .declarations import Declaration, DeclarationSet, DeclarationSummary
from .derivations import Derivation
from .releasefile import ReleaseSpec
from .store import Store

__all__ = [
    "Plan",
    "ProjectPlan",
    "WheelPlan",
    "declaration_digest",
    "plan_release",
    "project_digest",
]

# Bump a builder's version whenever its output for the same inputs would change.
FETCH_VERSION = 1
INSPECT_VERSION = 1
CHECK_VERSION = 2


def declaration_digest(declaration: Declaration | DeclarationSummary) -> str:
    """blake3 of a declaration's place in the tree and its bytes: all that it declares."""
    if isinstance(declaration, DeclarationSummary):
        return declaration.digest.hex()
    hasher = blake3.blake3(declaration.relpath.encode())
    hasher.update(b"\0")
    hasher.update(declaration.text)
    return hasher.hexdigest()


def project_digest(summaries: Sequence[DeclarationSummary]) -> bytes:
    """A digest of a project's declarations (places and bytes): equal digests, equal projects.

    The declaration's own digest when there is one, else blake3 of them all in relpath order
    (each covers its relpath, so none can stand for another)."""
    if len(summaries) == 1:
        return summaries[0].digest
    return blake3.blake3(
        b"".join(s.digest for s in sorted(summaries, key=lambda s: s.relpath))
    ).digest()


@dataclass(frozen=True)
class WheelPlan:
    """The derivations of one declared wheel."""

    summary: DeclarationSummary
    fetch: Derivation
    inspect: Derivation
    check_metadata: Derivation
    declarations: DeclarationSet = field(repr=False, compare=False)

    @property
    def declaration(self) -> Declaration:
        return self.declarations.load(self.summary)

    @property
    def content_id(self) -> CID:
        return CID.parse(self.summary.content_id)


@dataclass(frozen=True)
class ProjectPlan:
    """The derivations of one project: its wheels and its two release-wide checks."""

    project: str
    summaries: tuple[DeclarationSummary, ...]
    # What the derivations are made from: every declaration, and the supported lines.
    all_declarations: DeclarationSet = field(repr=False, compare=False)
    supported: tuple[str, ...] = field(repr=False, compare=False)

    @property
    def version(self) -> str:
        return self.summaries[0].version

    @property
    def declarations(self) -> tuple[Declaration, ...]:
        return tuple(self.all_declarations.load(s) for s in self.summaries)

    @cached_property
    def wheels(self) -> tuple[WheelPlan, ...]:
        return tuple(_wheel_plan(s, self.all_declarations) for s in self.summaries)

    @cached_property
    def check_platform(self) -> Derivation:
        return Derivation(
            "check-platform", CHECK_VERSION,
            {"project": self.project, "declarations": [s.digest.hex() for s in self.summaries],
             "supported": list(self.supported)},
            label=self.project,
        )

    @cached_property
    def check_closure(self) -> Derivation:
        release = self.all_declarations.summaries_by_project()
        needs = sorted({name for s in self.summaries for name in s.needs})
        return Derivation(
            "check-closure", CHECK_VERSION,
            {"project": self.project, "declarations": [s.digest.hex() for s in self.summaries],
             "dependencies": {name: [s.digest.hex() for s in release.get(name, ())]
                              for name in needs},
             "supported": list(self.supported)},
            label=self.project,
        )

    def derivations(self) -> list[Derivation]:
        steps: list[Derivation] = []
        for wheel in self.wheels:
            steps += [wheel.fetch, wheel.inspect, wheel.check_metadata]
        return [*steps, self.check_platform, self.check_closure]


class _Loaded(Mapping[str, Sequence[Declaration]]):
    """Project → its whole declarations, each project parsed when first looked up."""

    def __init__(self, declarations: DeclarationSet,
                 summaries: Mapping[str, Sequence[DeclarationSummary]]) -> None:
        self._declarations = declarations
        self._summaries = summaries
        self._loaded: dict[str, tuple[Declaration, ...]] = {}

    def __getitem__(self, project: str) -> tuple[Declaration, ...]:
        loaded = self._loaded.get(project)
        if loaded is None:
            summaries = self._summaries[project]
            loaded = tuple(self._declarations.load(s) for s in summaries)
            self._loaded[project] = loaded
        return loaded

    def __iter__(self) -> Iterator[str]:
        return iter(self._summaries)

    def __len__(self) -> int:
        return len(self._summaries)


class _ByRelpath(Mapping[str, Declaration]):
    """Relpath → its whole declaration, parsed when first looked up."""

    def __init__(self, declarations: DeclarationSet) -> None:
        self._declarations = declarations
        self._summaries = {s.relpath: s for s in declarations.summaries}

    def __getitem__(self, relpath: str) -> Declaration:
        return self._declarations.load(self._summaries[relpath])

    def __iter__(self) -> Iterator[str]:
        return iter(self._summaries)

    def __len__(self) -> int:
        return len(self._summaries)


@dataclass(frozen=True)
class Plan:
    """Everything a release is made of, as derivations, before anything is realised."""

    spec: ReleaseSpec
    declarations: DeclarationSet
    projects: tuple[ProjectPlan, ...]
    summaries: Mapping[str, Sequence[DeclarationSummary]]  # project → its summaries

    @cached_property
    def digests(self) -> Mapping[str, str]:
        """relpath → declaration_digest, for every declaration."""
        return {s.relpath: s.digest.hex() for s in self.declarations.summaries}

    @cached_property
    def check(self) -> Derivation:
        """All four checks over the whole release: realised means every one of them ran on
        exactly these declarations and environments, so a warm `check` reads one record."""
        # The summaries come in one order for one set of files (project, file name, relpath);
        # each relpath is NUL-free, each digest 32 bytes.
        digest = blake3.blake3(b"".join(
            [s.relpath.encode() + b"\0" + s.digest for s in self.declarations.summaries]
        )).hexdigest()
        return Derivation(
            "check-release",
            CHECK_VERSION,
            {"declarations-digest": digest,
             "supported": list(self.spec.supported_lines),
             "builders": [FETCH_VERSION, INSPECT_VERSION]},
            label=self.spec.name,
        )

    @cached_property
    def by_relpath(self) -> Mapping[str, Declaration]:
        return _ByRelpath(self.declarations)

    @cached_property
    def release(self) -> Mapping[str, Sequence[Declaration]]:
        return _Loaded(self.declarations, self.summaries)

    @cached_property
    def project_digests(self) -> Mapping[str, bytes]:
        """project → project_digest, for every project."""
        return {project: project_digest(group) for project, group in self.summaries.items()}

    def declared_findings(self, project: ProjectPlan, store: Store | None = None) -> list[Finding]:
        """Checks 1 and 4 on the declared metadata of one project (nothing is fetched).

        With a `store`, a check realised there (by a build or check) is read, not run again."""
        environments = self.spec.supported
        platform = _realised(store, project.check_platform)
        if platform is None:
            platform = check_platform_unique(project.declarations, environments)
        closure = _realised(store, project.check_closure)
        if closure is None:
            closure = check_closure(project.declarations, self.release, environments)
        return [*platform, *closure]


    def all_declared_findings(
        self, store: Store | None = None, only: Collection[str] | None = None
    ) -> list[Finding]:
        """Checks 1 and 4 of every project (or of the projects `only` names).

        With a `store` where the whole release was checked (a build or check), they are read
        from that one record; else each project's checks realised there are read, the rest run.
        """
        record = None if store is None else store.get_record(self.check.key)
        if record is not None:
            found = (Finding.from_record(r) for r in record["findings"])
            return [
                f for f in found if f.check in (PLATFORM_UNIQUE, CLOSURE)
                and (only is None or f.relpath.rsplit("/", 2)[-2] in only)
            ]
        return [
            f for project in self.projects if only is None or project.project in only
            for f in self.declared_findings(project, store)
        ]


def _realised(store: Store | None, derivation: Derivation) -> list[Finding] | None:
    record = None if store is None else store.get_record(derivation.key)
    return None if record is None else [Finding.from_record(r) for r in record]


def _wheel_plan(summary: DeclarationSummary, declarations: DeclarationSet) -> WheelPlan:
    content_id = summary.content_id
    fetch = Derivation("fetch", FETCH_VERSION, {"content-id": content_id},
                       label=summary.filename)
    inspect = Derivation(
        "inspect",
        INSPECT_VERSION,
        {"content-id": content_id, "filename": summary.filename},
        label=summary.filename,
    )
    check_metadata = Derivation(
        "check-metadata",
        CHECK_VERSION,
        {"declaration": summary.digest.hex(), "inspect": inspect.key},
        label=summary.filename,
    )
    return WheelPlan(summary, fetch, inspect, check_metadata, declarations)


def plan_release(spec: ReleaseSpec, declarations: DeclarationSet) -> Plan:
    """Turn a release into derivations; each key hashes exactly the inputs its step reads."""
    summaries = declarations.summaries_by_project()
    supported = tuple(spec.supported_lines)
    projects = tuple(
        ProjectPlan(project, group, declarations, supported)
        for project, group in sorted(summaries.items())
    )
    return Plan(spec, declarations, projects, summaries)
