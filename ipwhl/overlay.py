"""Releases on top of releases: what changed since a previous release, and what must be redone.

A previous release is read only from its DAG (its `ipwhl/release.toml`, its declarations and its
`simple/` directory), never from its wheels' sources, so an overlay builds even when those are
gone. What an overlay compares is one digest per project (`evaluator.project_digest`); a
release's digests are kept in a record keyed by its CID (a "release-index" derivation), written
when it is built, or worked out once from its declarations when it came from elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import blake3

from . import dag, unixfs
from .cid import CID
from .declarations import DeclarationSummary, prefix_of
from .derivations import Derivation
from .errors import NotFound
from .evaluator import Plan
from .releasefile import parse_release_info
from .store import Store

__all__ = [
    "Overlay",
    "PreviousRelease",
    "index_derivation",
    "load_previous",
    "plan_overlay",
    "save_index",
]

INDEX_VERSION = 1


def index_derivation(release: CID) -> Derivation:
    """The record of a release's project digests, keyed by the release's CID alone."""
    return Derivation("release-index", INDEX_VERSION, {"release": str(release)})


def save_index(store: Store, release: CID, project_digests: Mapping[str, bytes]) -> str:
    """Keep the project digests of a release just built; returns the record's key."""
    key = index_derivation(release).key
    store.put_record(key, {"projects": dict(project_digests)})
    return key


@dataclass(frozen=True)
class PreviousRelease:
    """The parts of an earlier release an overlay reuses."""

    cid: CID
    info: Mapping[str, object]  # its ipwhl/release.toml
    project_digests: Mapping[str, bytes]  # project → evaluator.project_digest
    simple: unixfs.Link  # its simple/ directory
    declarations: unixfs.Link  # its ipwhl/declarations/ directory
    index_key: str  # the record the digests came from (a build's closure keeps it)
    store: Store = field(repr=False, compare=False)

    @property
    def sequence(self) -> int:
        return int(self.info["sequence"])  # type: ignore[call-overload]

    @property
    def supported(self) -> tuple[str, ...]:
        return tuple(self.info.get("supported", ()))  # type: ignore[arg-type]

    def declaration_files(self, project: str) -> dict[str, CID]:
        """A project's declaration files in this release: relpath → CID (empty if none)."""
        for folder in (project, f"{prefix_of(project)}/{project}"):
            try:
                found = dag.resolve(self.store, self.declarations.cid, folder.split("/"))
            except NotFound:
                continue
            if found.is_dir:
                files = dag.walk_files(self.store, found.cid)
                return {f"{folder}/{name}": cid for name, cid in files.items()}
        return {}


def load_previous(store: Store, cid: CID, *, remember: bool = False) -> PreviousRelease:
    """Read a release's metadata from the store; NotFound when it is not (wholly) there.

    Its project digests come from its index record; without one they are worked out from its
    declarations (each read once), and kept as its record when `remember` (a build, not eval).
    """
    get = store.get_block
    ipwhl_dir = unixfs.lookup(cid, "ipwhl", get)
    simple_dir = unixfs.lookup(cid, "simple", get)
    if ipwhl_dir is None or simple_dir is None:
        raise NotFound(f"{cid} is not an ipwhl release: it has no ipwhl/ or simple/")
    release_link = unixfs.lookup(ipwhl_dir.cid, "release.toml", get)
    declarations_link = unixfs.lookup(ipwhl_dir.cid, "declarations", get)
    if release_link is None or declarations_link is None:
        raise NotFound(f"{cid} is not an ipwhl release: no ipwhl/release.toml or declarations/")
    info = parse_release_info(dag.iter_bytes(store, release_link.cid), cid)
    key = index_derivation(cid).key
    record = store.get_record(key)
    if record is not None:
        digests = record["projects"]
    else:
        digests = _digests_from_dag(store, declarations_link.cid)
        if remember:
            store.put_record(key, {"projects": digests})
    return PreviousRelease(cid, info, digests, simple_dir, declarations_link, key, store)


def _digests_from_dag(store: Store, declarations: CID) -> dict[str, bytes]:
    # Reads every declaration of the release once: what project_digest hashes.
    by_project: dict[str, list[bytes]] = {}
    for relpath, file in sorted(dag.walk_files(store, declarations).items()):
        parts = relpath.split("/")
        if len(parts) < 2:
            continue
        hasher = blake3.blake3(relpath.encode())
        hasher.update(b"\0")
        for chunk in dag.iter_bytes(store, file):
            hasher.update(chunk)
        by_project.setdefault(parts[-2], []).append(hasher.digest())
    return {project: _combine(digests) for project, digests in by_project.items()}


def _combine(digests: list[bytes]) -> bytes:
    # evaluator.project_digest, from the file digests in relpath order.
    return digests[0] if len(digests) == 1 else blake3.blake3(b"".join(digests)).digest()


@dataclass(frozen=True)
class Overlay:
    """What a build on top of `previous` redoes, and why, project by project."""

    previous: PreviousRelease
    added: frozenset[str]
    changed: frozenset[str]
    removed: frozenset[str]
    recheck: frozenset[str]  # projects whose platform and closure checks run again
    reasons: Mapping[str, str] = field(default_factory=dict)

    @property
    def rebuilt(self) -> frozenset[str]:
        """Projects whose wheels are fetched and inspected and whose pages are written anew."""
        return self.added | self.changed

    def reuses(self, project: str) -> bool:
        return project not in self.rebuilt and project in self.previous.project_digests


def _changed_files(
    previous: PreviousRelease, project: str, now: Iterable[DeclarationSummary]
) -> str:
    before = {relpath: bytes(cid) for relpath, cid in previous.declaration_files(project).items()}
    after = {summary.relpath: summary.file_cid for summary in now}
    differing = sorted(set(after) ^ set(before) | {p for p in after if after[p] != before.get(p)})
    return ", ".join(p.rsplit("/", 1)[-1] for p in differing)


def plan_overlay(plan: Plan, previous: PreviousRelease) -> Overlay:
    """Compare a release's declarations with a previous release's; name what must be redone."""
    reasons: dict[str, str] = {}
    before = previous.project_digests
    added, changed = set(), set()
    for project, digest in plan.project_digests.items():
        old = before.get(project)
        if old is None:
            added.add(project)
            reasons[project] = "added"
        elif old != digest:
            changed.add(project)
            files = _changed_files(previous, project, plan.summaries[project])
            reasons[project] = f"declarations changed: {files}"
    removed = {p for p in before if p not in plan.summaries}
    for project in removed:
        reasons[project] = "removed"
    touched = added | changed | removed
    recheck = set(added | changed)
    if tuple(plan.spec.supported_lines) != previous.supported:
        recheck = set(plan.summaries)
        for project in plan.summaries:
            reasons.setdefault(project, "supported environments changed: checks run again")
    elif touched:
        for project, summaries in plan.summaries.items():
            if project in recheck or all(touched.isdisjoint(s.needs) for s in summaries):
                continue
            hit = sorted({name for s in summaries for name in s.needs if name in touched})
            if hit:
                recheck.add(project)
                reasons[project] = "depends on " + ", ".join(
                    f"{name} ({reasons[name].split(':')[0]})" for name in hit
                ) + ": closure checked again"
    return Overlay(
        previous=previous,
        added=frozenset(added),
        changed=frozenset(changed),
        removed=frozenset(removed),
        recheck=frozenset(recheck),
        reasons=reasons,
    )
