"""What changed between two releases, read from their DAGs; equal subtrees are skipped by CID."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import Version

from . import dag, unixfs
from .cid import CID
from .declarations import check_declaration_text, prefix_of
from .errors import DeclarationError, NotFound
from .releasefile import NotARelease
from .store import Store
from .tomlpos import MAX_DOCUMENT_SIZE
from .wheels import InvalidWheel, parse_wheel_filename

__all__ = ["ProjectChange", "ReleaseDiff", "diff_directories", "diff_releases"]

_HAMT_WIDTH = 2  # fanout 256: two hex digits name a slot


@dataclass(frozen=True)
class ProjectChange:
    """One project that differs between two releases."""

    project: str
    kind: str  # added, removed, upgraded, downgraded, changed
    old_version: str | None
    new_version: str | None
    wheels_added: tuple[str, ...]
    wheels_removed: tuple[str, ...]
    dependencies_added: tuple[str, ...]
    dependencies_removed: tuple[str, ...]


@dataclass(frozen=True)
class ReleaseDiff:
    """Two releases compared: environments and projects that differ."""

    old: str
    new: str
    old_sequence: int | None
    new_sequence: int | None
    environments_gained: tuple[str, ...]
    environments_lost: tuple[str, ...]
    changes: tuple[ProjectChange, ...]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _node(store: Store, cid: CID) -> tuple[unixfs.PBNode, unixfs.UnixFSData]:
    node = unixfs.decode_pbnode(store.get_block(cid))
    return node, unixfs.decode_unixfs(node.data or b"")


def _slot_entries(store: Store, link: unixfs.PBLink) -> dict[str, unixfs.Link]:
    name = link.name or ""
    if len(name) > _HAMT_WIDTH:
        return {name[_HAMT_WIDTH:]: unixfs.Link(name[_HAMT_WIDTH:], link.cid, link.tsize or 0)}
    return {entry.name: entry for entry in dag.list_dir(store, link.cid)}


def _diff_entries(
    old: Mapping[str, unixfs.Link], new: Mapping[str, unixfs.Link]
) -> dict[str, tuple[unixfs.Link | None, unixfs.Link | None]]:
    return {
        name: (old.get(name), new.get(name))
        for name in old.keys() | new.keys()
        if (old.get(name) and old[name].cid) != (new.get(name) and new[name].cid)
    }


def diff_directories(
    store: Store, old: CID, new: CID
) -> dict[str, tuple[unixfs.Link | None, unixfs.Link | None]]:
    """Entries that differ between two directories; HAMT shards with equal CIDs are not read."""
    if old == new:
        return {}
    old_node, old_meta = _node(store, old)
    new_node, new_meta = _node(store, new)
    shard = unixfs.DataType.HAMT_SHARD
    if old_meta.type != shard or new_meta.type != shard or old_meta.fanout != new_meta.fanout:
        old_entries = {e.name: e for e in dag.list_dir(store, old)}
        new_entries = {e.name: e for e in dag.list_dir(store, new)}
        return _diff_entries(old_entries, new_entries)
    old_slots = {(link.name or "")[:_HAMT_WIDTH]: link for link in old_node.links}
    new_slots = {(link.name or "")[:_HAMT_WIDTH]: link for link in new_node.links}
    changes: dict[str, tuple[unixfs.Link | None, unixfs.Link | None]] = {}
    for slot in sorted(old_slots.keys() | new_slots.keys()):
        before, after = old_slots.get(slot), new_slots.get(slot)
        if before is not None and after is not None:
            if before.cid == after.cid and before.name == after.name:
                continue
            if len(before.name or "") == len(after.name or "") == _HAMT_WIDTH:
                changes.update(diff_directories(store, before.cid, after.cid))
                continue
        changes.update(_diff_entries(
            _slot_entries(store, before) if before is not None else {},
            _slot_entries(store, after) if after is not None else {},
        ))
    return changes


def _release_info(store: Store, root: CID) -> Mapping[str, Any]:
    from .build import read_release_info

    return read_release_info(store, root)


def _declarations_of(store: Store, root: CID, project: str) -> list[Mapping[str, Any]]:
    get = store.get_block
    ipwhl_dir = unixfs.lookup(root, "ipwhl", get)
    declarations = ipwhl_dir and unixfs.lookup(ipwhl_dir.cid, "declarations", get)
    if declarations is None:
        raise NotFound(f"{root} has no ipwhl/declarations/")
    for path in (project, f"{prefix_of(project)}/{project}"):
        try:
            folder = dag.resolve(store, declarations.cid, path.split("/"))
        except NotFound:
            continue
        files = dag.walk_files(store, folder.cid)
        return [
            _declaration(store, root, f"ipwhl/declarations/{path}/{name}", cid)
            for name, cid in sorted(files.items())
        ]
    return []


def _declaration(store: Store, root: CID, where: str, cid: CID) -> Mapping[str, Any]:
    """A declaration of a release, checked as `check` checks one; NotFound when it is not one."""
    refused = f"{root} is not an ipwhl release: {where}"
    name = where.rsplit("/", 1)[-1]
    try:
        filename = parse_wheel_filename(name.removesuffix(".toml") + ".whl").filename
    except InvalidWheel:
        filename = None
    if filename is None or not name.endswith(".toml"):
        raise NotARelease(f"{refused} is not named <wheel-stem>.toml")
    data = bytearray()
    for chunk in dag.iter_bytes(store, cid):
        data += chunk
        if len(data) > MAX_DOCUMENT_SIZE:
            raise NotARelease(f"{refused} is larger than {MAX_DOCUMENT_SIZE} bytes")
    try:
        declaration = check_declaration_text(bytes(data), where)
    except DeclarationError as error:
        problems = "; ".join(f"{v.location}: {v.message}" for v in error.violations)
        raise NotARelease(f"{root} is not an ipwhl release: {problems}") from None
    return {"filename": filename, **declaration}


def _version(declarations: list[Mapping[str, Any]]) -> Version | None:
    for declaration in declarations:
        return parse_wheel_filename(declaration["filename"]).version
    return None


def _dependencies(declarations: list[Mapping[str, Any]]) -> set[str]:
    return {d for declaration in declarations for d in declaration.get("dependencies", [])}


def _project_change(store: Store, old: CID, new: CID, project: str) -> ProjectChange:
    before = _declarations_of(store, old, project)
    after = _declarations_of(store, new, project)
    old_version, new_version = _version(before), _version(after)
    if old_version is None:
        kind = "added"
    elif new_version is None:
        kind = "removed"
    elif new_version > old_version:
        kind = "upgraded"
    elif new_version < old_version:
        kind = "downgraded"
    else:
        kind = "changed"
    old_wheels = {d["filename"] for d in before}
    new_wheels = {d["filename"] for d in after}
    old_deps, new_deps = _dependencies(before), _dependencies(after)
    return ProjectChange(
        project=project,
        kind=kind,
        old_version=str(old_version) if old_version is not None else None,
        new_version=str(new_version) if new_version is not None else None,
        wheels_added=tuple(sorted(new_wheels - old_wheels)),
        wheels_removed=tuple(sorted(old_wheels - new_wheels)),
        dependencies_added=tuple(sorted(new_deps - old_deps)),
        dependencies_removed=tuple(sorted(old_deps - new_deps)),
    )


def diff_releases(store: Store, old: CID, new: CID) -> ReleaseDiff:
    """Compare two releases in the store, reading only the projects whose subtrees differ."""
    old_info, new_info = _release_info(store, old), _release_info(store, new)
    old_simple = dag.resolve(store, old, ["simple"]).cid
    new_simple = dag.resolve(store, new, ["simple"]).cid
    projects = sorted(
        canonicalize_name(name)
        for name in diff_directories(store, old_simple, new_simple)
        if name != "index.html"
    )
    old_supported = list(old_info.get("supported", []))
    new_supported = list(new_info.get("supported", []))
    return ReleaseDiff(
        old=str(old),
        new=str(new),
        old_sequence=old_info.get("sequence"),
        new_sequence=new_info.get("sequence"),
        environments_gained=tuple(e for e in new_supported if e not in old_supported),
        environments_lost=tuple(e for e in old_supported if e not in new_supported),
        changes=tuple(_project_change(store, old, new, p) for p in projects),
    )
