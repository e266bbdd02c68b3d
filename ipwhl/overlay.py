"""Releases on top of releases: what changed since a previous release, and what must be redone.

A previous release is read only from its DAG (its `ipwhl/release.toml`, its declarations and its
project directories), never from its wheels' sources, so an overlay builds even when those are gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import tomli
from packaging.utils import canonicalize_name

from . import dag, unixfs
from .cid import CID
from .declarations import Declaration
from .errors import NotFound
from .evaluator import Plan
from .store import Store

__all__ = ["Overlay", "PreviousRelease", "load_previous", "plan_overlay"]


@dataclass(frozen=True)
class PreviousRelease:
    """The parts of an earlier release an overlay reuses."""

    cid: CID
    info: Mapping[str, object]  # its ipwhl/release.toml
    declaration_cids: Mapping[str, CID]  # relpath → CID of the declaration file
    projects: Mapping[str, unixfs.Link]  # project → its simple/<project> directory link

    @property
    def sequence(self) -> int:
        return int(self.info.get("sequence", 0))  # type: ignore[call-overload]

    @property
    def supported(self) -> tuple[str, ...]:
        return tuple(self.info.get("supported", ()))  # type: ignore[arg-type]


def load_previous(store: Store, cid: CID) -> PreviousRelease:
    """Read a release's metadata from the store; NotFound when it is not (wholly) there."""
    get = store.get_block
    ipwhl_dir = unixfs.lookup(cid, "ipwhl", get)
    simple_dir = unixfs.lookup(cid, "simple", get)
    if ipwhl_dir is None or simple_dir is None:
        raise NotFound(f"{cid} is not an ipwhl release: it has no ipwhl/ or simple/")
    release_link = unixfs.lookup(ipwhl_dir.cid, "release.toml", get)
    declarations_link = unixfs.lookup(ipwhl_dir.cid, "declarations", get)
    if release_link is None or declarations_link is None:
        raise NotFound(f"{cid} is not an ipwhl release: no ipwhl/release.toml or declarations/")
    try:
        info = tomli.loads(b"".join(dag.iter_bytes(store, release_link.cid)).decode())
    except (UnicodeDecodeError, tomli.TOMLDecodeError, RecursionError) as exc:
        raise NotFound(
            f"{cid} is not an ipwhl release: its ipwhl/release.toml is not TOML ({exc})"
        ) from None
    declaration_cids = dag.walk_files(store, declarations_link.cid)
    projects = {
        link.name: link for link in dag.list_dir(store, simple_dir.cid) if link.name != "index.html"
    }
    return PreviousRelease(cid, info, declaration_cids, projects)


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
        return project not in self.rebuilt and project in self.previous.projects


def _declaration_cids(declarations: Iterable[Declaration]) -> dict[str, CID]:
    return {d.relpath: unixfs.file_cid(d.text) for d in declarations}


def plan_overlay(plan: Plan, previous: PreviousRelease) -> Overlay:
    """Compare a release's declarations with a previous release's; name what must be redone."""
    reasons: dict[str, str] = {}
    release = plan.release
    old_by_project: dict[str, dict[str, CID]] = {}
    for relpath, cid in previous.declaration_cids.items():
        project = relpath.split("/")[-2]
        old_by_project.setdefault(project, {})[relpath] = cid
    added, changed = set(), set()
    for project, declarations in release.items():
        now = _declaration_cids(declarations)
        before = old_by_project.get(project)
        if before is None or project not in previous.projects:
            added.add(project)
            reasons[project] = "added"
        elif now != before:
            changed.add(project)
            differing = sorted(set(now) ^ set(before) | {p for p in now if now[p] != before.get(p)})
            reasons[project] = "declarations changed: " + ", ".join(
                p.rsplit("/", 1)[-1] for p in differing
            )
    removed = {p for p in previous.projects if p not in release}
    for project in removed:
        reasons[project] = "removed"
    touched = added | changed | removed
    recheck = set(added | changed)
    if tuple(plan.spec.supported_lines) != previous.supported:
        recheck = set(release)
        for project in release:
            reasons.setdefault(project, "supported environments changed: checks run again")
    else:
        for project, declarations in release.items():
            if project in recheck:
                continue
            needs = {canonicalize_name(r.name) for d in declarations for r in d.dependencies}
            hit = sorted(needs & touched)
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
