"""Declaration files -> Declaration, with the source location of every value.

A declaration is one TOML file per wheel at
`<declarations>/[<prefix>/]<project>/<wheel-stem>.toml` (SPEC §1). Problems a file
has on its own (TOML syntax, keys, types, values) are reported with check
"syntax"; problems of where it sits or how it agrees with the other files
(layout, project directory, versions) with check "declaration".
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import time as clock
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

import blake3
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from ipwhl import tomlpos, unixfs
from ipwhl.cid import CID, InvalidCID
from ipwhl.errors import DeclarationError, Location, Violation
from ipwhl.requirements import InvalidRequirement, Requirement, parse_requirement
from ipwhl.wheels import InvalidWheelFilename, WheelFilename, parse_wheel_filename

if TYPE_CHECKING:
    from ipwhl.declcache import DeclarationCache

__all__ = [
    "KNOWN_KEYS",
    "Declaration",
    "DeclarationSet",
    "DeclarationSummary",
    "StatKey",
    "check_declaration_text",
    "is_cid",
    "load_declaration",
    "load_declarations",
    "prefix_of",
    "summarize",
    "type_name",
    "unknown_key_message",
]

SYNTAX = "syntax"
DECLARATION = "declaration"

KNOWN_KEYS = ("source", "content-id", "requires-python", "extras", "dependencies")
_REQUIRED_KEYS = {
    "source": "the wheel's https:, http: or file: URL, or a path relative to this file",
    "content-id": "the wheel's CID",
}
_URL_SCHEMES = ("https", "http", "file")
_SDIST_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")
_PREFIX = re.compile(r"[0-9a-f]{2}")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_EXTRA_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
_EXTRA_MARKER = re.compile(
    r"""\bextra\s*==\s*(?P<q1>['"])(?P<a>.*?)(?P=q1)|(?P<q2>['"])(?P<b>.*?)(?P=q2)\s*==\s*extra\b"""
)
_LAYOUT = "<project>/<wheel-stem>.toml or <prefix>/<project>/<wheel-stem>.toml"


@dataclass(frozen=True)
class Declaration:
    """One declared wheel: what its file says, parsed, and where each value was written."""

    path: Path
    relpath: str
    project: str
    filename: str
    wheel: WheelFilename
    source: str
    content_id: str
    requires_python: str | None
    extras: tuple[str, ...]
    dependencies: tuple[Requirement, ...]
    dependency_texts: tuple[str, ...]
    text: bytes = field(repr=False)
    locations: Mapping[str, Location] = field(repr=False, compare=False)
    dependency_locations: tuple[Location, ...] = field(repr=False, compare=False)

    @property
    def version(self) -> Version:
        """The wheel's version, from its file name."""
        version = self.wheel.version
        return version if isinstance(version, Version) else Version(str(version))

    def source_url(self) -> str:
        """The source as an absolute URL; a relative path becomes a file: URL."""
        if _SCHEME.match(self.source):
            return self.source
        return (self.path.parent / self.source).resolve().as_uri()


class DeclarationSummary(NamedTuple):
    """What building a release needs of a declaration without reading it again: its place,
    version and Requires-Python, the projects its dependencies name, and digests of its bytes."""

    relpath: str
    version: str  # the file name's version, normalised
    requires_python: str | None
    needs: tuple[str, ...]  # the normalized names its dependencies name, sorted
    digest: bytes  # blake3 of the relpath, a NUL and the file's bytes: all that it declares
    file_cid: bytes  # the file's binary CID, as `ipfs add --cid-version=1` gives it
    file_tsize: int
    content_id: str  # the wheel's CID as declared, in its canonical spelling

    @property
    def project(self) -> str:
        return self.relpath.rsplit("/", 2)[-2]

    @property
    def filename(self) -> str:
        """The wheel's file name."""
        return self.relpath.rsplit("/", 1)[-1].removesuffix(".toml") + ".whl"


# What says a file is unchanged since it was read: device, inode, size, mtime and ctime (ns).
StatKey = tuple[int, int, int, int, int]


def _digest(declaration: Declaration) -> bytes:
    hasher = blake3.blake3(declaration.relpath.encode())
    hasher.update(b"\0")
    hasher.update(declaration.text)
    return hasher.digest()


def summarize(declaration: Declaration) -> DeclarationSummary:
    """The summary of a parsed declaration."""
    builder = unixfs.FileBuilder()
    builder.update(declaration.text)
    file_cid, _, file_tsize = builder.finish()
    needs = sorted({canonicalize_name(r.name) for r in declaration.dependencies})
    return DeclarationSummary(
        relpath=declaration.relpath,
        version=str(declaration.version),
        requires_python=declaration.requires_python,
        needs=tuple(needs),
        digest=_digest(declaration),
        file_cid=bytes(file_cid),
        file_tsize=file_tsize,
        content_id=_canonical_cid(declaration.content_id),
    )


def _canonical_cid(text: str) -> str:
    # A valid declaration's content-id: base32 CIDs are canonical but for case (CID.parse
    # checks), so only other spellings need parsing again.
    if text[:1] in ("b", "B"):
        return "b" + text[1:].lower()
    if text.startswith("Qm"):
        return text
    return str(CID.parse(text))


class DeclarationSet:
    """All declarations of a release, sorted by project and file name.

    Summaries are at hand; a whole `Declaration` is parsed when first asked for (a cached
    summary spares reading files a build does not need), and checked against its summary.
    """

    def __init__(
        self,
        root: Path,
        summaries: tuple[DeclarationSummary, ...],
        loaded: Mapping[str, Declaration] | None = None,
        linked: frozenset[str] = frozenset(),
        by_project: Mapping[str, tuple[DeclarationSummary, ...]] | None = None,
    ) -> None:
        self.root = root
        self.summaries = summaries
        self._loaded = dict(loaded or {})
        self._linked = linked  # relpaths found through a symlink: checked again when read
        self._by_project = by_project

    @property
    def parsed(self) -> int:
        """How many declarations were read and parsed so far (the rest came from a cache)."""
        return len(self._loaded)

    @property
    def declarations(self) -> tuple[Declaration, ...]:
        """Every declaration, parsed (in summary order)."""
        return tuple(self.load(summary) for summary in self.summaries)

    def load(self, summary: DeclarationSummary) -> Declaration:
        """The whole declaration a summary stands for; DeclarationError if its file changed."""
        declaration = self._loaded.get(summary.relpath)
        if declaration is not None:
            return declaration
        path = self.root.joinpath(*summary.relpath.split("/"))
        violations: list[Violation] = []
        declaration = _load(path, self.root, violations,
                            inside=summary.relpath not in self._linked)
        if declaration is not None and _digest(declaration) != summary.digest:
            violations.append(Violation(
                Location(str(path)), DECLARATION,
                "the file changed while ipwhl was using it, expected it to stay as it was "
                "read; run the command again",
            ))
        if violations or declaration is None:
            raise DeclarationError(violations)
        self._loaded[summary.relpath] = declaration
        return declaration

    def by_project(self) -> Mapping[str, tuple[Declaration, ...]]:
        """The declarations grouped by normalized project name, in sorted order (all parsed)."""
        return MappingProxyType({
            name: tuple(self.load(summary) for summary in group)
            for name, group in self.summaries_by_project().items()
        })

    def summaries_by_project(self) -> Mapping[str, tuple[DeclarationSummary, ...]]:
        """The summaries grouped by normalized project name, in sorted order."""
        if self._by_project is None:
            self._by_project = _group(list(self.summaries))
        return self._by_project


def prefix_of(project: str) -> str:
    """IPWHL's shard directory for a normalized project name: two lowercase hex digits."""
    return f"{sum(map(ord, project)) & 0xFF:02x}"


def load_declaration(path: Path, root: Path) -> Declaration:
    """Read and validate the declaration at `path` under `root`; raise DeclarationError."""
    violations: list[Violation] = []
    declaration = _load(path, root, violations)
    if violations or declaration is None:
        raise DeclarationError(violations)
    return declaration


def load_declarations(root: Path, cache: DeclarationCache | None = None) -> DeclarationSet:
    """Read every declaration under `root`; raise DeclarationError with every problem.

    With a `cache`, a file whose identity on disk (device, inode, size, mtime, ctime) is as
    when it was last read is not read again: its summary comes from the cache.
    """
    violations: list[Violation] = []
    if not root.is_dir():
        violations.append(
            Violation(
                Location(str(root)),
                DECLARATION,
                f"declarations directory not found, expected a directory of {_LAYOUT} files",
            )
        )
        raise DeclarationError(violations)
    started = clock.time_ns()
    summaries: list[DeclarationSummary] = []
    loaded: dict[str, Declaration] = {}
    linked: set[str] = set()
    for found in _declaration_files(root, violations, cache, started):
        if type(found) is list:  # a whole project folder's summaries, from the cache
            summaries += found
            continue
        assert isinstance(found, _Found)
        if found.key is None:
            linked.add(found.relpath)
        summary = None
        if cache is not None and found.key is not None:
            summary = cache.get(found.relpath, found.key)
        if summary is None:
            path = Path(found.path)
            declaration = _load(path, root, violations, inside=found.key is not None)
            if declaration is None:
                continue
            summary = summarize(declaration)
            loaded[declaration.relpath] = declaration
            if cache is not None and found.key is not None:
                cache.put(summary, found.key, started)
        summaries.append(summary)
    summaries.sort(key=_order)
    by_project = _group(summaries)
    violations.extend(_agreement(root, by_project))
    if cache is not None:  # what is valid stays valid, whatever the other files say
        cache.save({summary.relpath for summary in summaries})
    if violations:
        raise DeclarationError(violations)
    return DeclarationSet(root, tuple(summaries), loaded, frozenset(linked), by_project)


def _group(summaries: list[DeclarationSummary]) -> Mapping[str, tuple[DeclarationSummary, ...]]:
    grouped: dict[str, list[DeclarationSummary]] = {}
    for summary in summaries:
        grouped.setdefault(summary.project, []).append(summary)
    return MappingProxyType({name: tuple(group) for name, group in grouped.items()})


def _order(summary: DeclarationSummary) -> tuple[str, str, str]:
    # (project, file name, relpath): "<stem>.toml" sorts as "<stem>.whl" does.
    folder, _, name = summary.relpath.rpartition("/")
    return folder.rpartition("/")[2], name, summary.relpath


class _Found(NamedTuple):
    relpath: str
    path: str
    key: StatKey | None  # None when a symlink is on the way: such files are read every time


def _declaration_files(
    root: Path, violations: list[Violation], cache: DeclarationCache | None = None,
    started: int = 0,
) -> Iterator[_Found | list[DeclarationSummary]]:
    """The candidate declaration files of both layouts; anything else is a violation.

    With a `cache`, a project folder unchanged since it was listed (its mtime and ctime change
    whenever an entry is added, removed or renamed) is not listed again, and when each of its
    files is unchanged too, their cached summaries come instead of the files."""

    def report(path: str, message: str) -> None:
        violations.append(Violation(Location(path), DECLARATION, message))

    real_root = root.resolve()

    def entries(directory: str) -> list[os.DirEntry[str]]:
        found = []
        with os.scandir(directory) as listing:
            candidates = sorted(listing, key=lambda entry: entry.name)
        for entry in candidates:
            if entry.name.startswith("."):
                continue
            if entry.is_symlink():
                inside = _resolves_inside(Path(entry.path), real_root)
                if inside is None:
                    report(entry.path, "symlink loop, expected a file or directory")
                    continue
                if not inside:
                    report(
                        entry.path,
                        "symlink points outside the declarations directory, "
                        "expected a file or directory inside it",
                    )
                    continue
            found.append(entry)
        return found

    def project_files(
        directory: os.DirEntry[str], relpath: str, linked: bool
    ) -> Iterator[_Found | list[DeclarationSummary]]:
        folder_key = None
        if cache is not None and not linked:
            cached = cache.folder_summaries(relpath, root_fd)
            if cached is not None:
                yield cached
                return
            info = directory.stat(follow_symlinks=False)
            folder_key = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_ctime_ns)
        found = []
        clean = True
        for entry in entries(directory.path):
            if entry.is_dir():
                report(entry.path,
                       "unexpected directory, expected only <wheel-stem>.toml files here")
                clean = False
            elif entry.name.endswith(".toml"):
                key = None
                if not linked and not entry.is_symlink():
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(info.st_mode):
                        key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns,
                               info.st_ctime_ns)
                clean = clean and key is not None
                found.append(_Found(f"{relpath}/{entry.name}", entry.path, key))
            else:
                report(entry.path, f"unexpected file, expected {_LAYOUT}")
                clean = False
        if cache is not None and folder_key is not None and clean:
            names = tuple(f.relpath.rsplit("/", 1)[1] for f in found)
            cache.put_listing(relpath, folder_key, names, started)
        yield from found

    # Cached folders and files are stat'ed relative to the root: shorter paths to walk.
    root_fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if cache else -1
    try:
        yield from _walk(root, entries, project_files, report)
    finally:
        if root_fd >= 0:
            os.close(root_fd)


def _walk(
    root: Path,
    entries: Callable[[str], list[os.DirEntry[str]]],
    project_files: Callable[[os.DirEntry[str], str, bool],
                            Iterator[_Found | list[DeclarationSummary]]],
    report: Callable[[str, str], None],
) -> Iterator[_Found | list[DeclarationSummary]]:
    for entry in entries(str(root)):
        if not entry.is_dir():
            report(entry.path, f"unexpected file, expected {_LAYOUT}")
            continue
        linked = entry.is_symlink()
        # A two-hex-digit directory holding directories is a shard prefix; one
        # holding only files is a project whose name happens to look like one.
        if _PREFIX.fullmatch(entry.name) and _holds_directories(entry.path):
            for child in entries(entry.path):
                if child.is_dir():
                    yield from project_files(child, f"{entry.name}/{child.name}",
                                             linked or child.is_symlink())
                else:
                    report(child.path, f"unexpected file, expected {_LAYOUT}")
        else:
            yield from project_files(entry, entry.name, linked)


def _holds_directories(path: str) -> bool:
    with os.scandir(path) as listing:
        return any(entry.is_dir() for entry in listing if not entry.name.startswith("."))


def _resolves_inside(path: Path, real_root: Path) -> bool | None:
    """Whether `path`, symlinks followed, lies under `real_root`; None for a symlink loop."""
    try:
        return path.resolve().is_relative_to(real_root)
    except (RuntimeError, OSError):  # a loop: RuntimeError on Python 3.11, OSError later
        return None


def _agreement(
    root: Path, by_project: Mapping[str, tuple[DeclarationSummary, ...]]
) -> list[Violation]:
    """Violations between files: a wheel declared twice, a project with two versions."""

    def where(summary: DeclarationSummary) -> Location:
        return Location(str(root.joinpath(*summary.relpath.split("/"))))

    # A wheel file name names its project, and a declaration sits under its project's folder,
    # so a wheel declared twice is declared twice in one project: one file alone agrees.
    violations = []
    kept: dict[str, list[DeclarationSummary]] = {}
    for project, group in by_project.items():
        if len(group) == 1:
            continue
        first_by_filename: dict[str, DeclarationSummary] = {}
        for summary in group:
            first = first_by_filename.setdefault(summary.filename, summary)
            if first is not summary:
                violations.append(
                    Violation(
                        where(summary),
                        DECLARATION,
                        f"wheel {summary.filename!r} is declared twice, also in "
                        f"{first.relpath}; expected one declaration per wheel",
                    )
                )
                continue
            kept.setdefault(project, []).append(summary)
    for project, wheels in kept.items():
        # The version most wheels have is the project's; ties go to the first file.
        versions = [Version(summary.version) for summary in wheels]
        counts: dict[Version, int] = {}
        for found in versions:
            counts[found] = counts.get(found, 0) + 1
        version = max(counts, key=lambda v: counts[v])
        witness = wheels[versions.index(version)]
        for summary, found in zip(wheels, versions, strict=True):
            if found != version:
                violations.append(
                    Violation(
                        where(summary),
                        DECLARATION,
                        f"{project} {found} differs from {project} {version} "
                        f"declared in {witness.relpath}, expected one version per project",
                    )
                )
    return violations


class _Reporter:
    """Collects the violations of one file, placing them with the file's positions."""

    def __init__(self, path: Path, violations: list[Violation]) -> None:
        self.path = path
        self.where = str(path)  # one string for every location in the file
        self.violations = violations
        self.positions = tomlpos.Positions(keys={})
        self.count = 0

    def at(self, position: tuple[int, int], message: str, check: str = SYNTAX) -> None:
        self.count += 1
        self.violations.append(Violation(Location(str(self.path), *position), check, message))

    def file(self, message: str) -> None:
        self.at((1, 1), message, DECLARATION)

    def value(self, key: str, message: str) -> None:
        self.at(self.positions.value(key), message)

    def element(self, key: str, index: int, message: str) -> None:
        self.at(self.positions.element(key, index), message)

    def location(self, position: tuple[int, int]) -> Location:
        return Location(self.where, *position)


def _load(
    path: Path, root: Path, violations: list[Violation], *, inside: bool = False
) -> Declaration | None:
    """Validate one declaration, appending its violations; None when it has any.

    `inside`: the file was found under `root` with no symlink on the way."""
    report = _Reporter(path, violations)
    placed = _place(path, root, report, inside=inside)
    parsed = _parse(path, report)
    if parsed is None:
        return None
    data, raw = parsed
    values = _values(data, report)
    if placed is None or values is None or report.count:
        return None
    relpath, project, wheel = placed
    source, content_id, requires_python, extras, dependencies, texts = values
    positions = report.positions
    return Declaration(
        path=path,
        relpath=relpath,
        project=project,
        filename=wheel.filename,
        wheel=wheel,
        source=source,
        content_id=content_id,
        requires_python=requires_python,
        extras=extras,
        dependencies=dependencies,
        dependency_texts=texts,
        text=raw,
        locations=MappingProxyType(
            {key: report.location(positions.value(key)) for key in KNOWN_KEYS if key in data}
        ),
        dependency_locations=tuple(
            report.location(positions.content("dependencies", index)) for index in range(len(texts))
        ),
    )


def _place(
    path: Path, root: Path, report: _Reporter, *, inside: bool = False
) -> tuple[str, str, WheelFilename] | None:
    """Check where the file sits; return its relative path, project and wheel."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        report.file(f"declaration is not under {root}, expected {_LAYOUT} inside it")
        return None
    inside = inside or _resolves_inside(path, root.resolve())
    if inside is None:
        report.file("symlink loop, expected a file")
        return None
    if not inside:
        report.file("symlink points outside the declarations directory, expected a file inside it")
        return None
    if len(parts) not in (2, 3) or not parts[-1].endswith(".toml"):
        report.file(f"unexpected file, expected {_LAYOUT}")
        return None
    project, name = parts[-2], parts[-1]
    stem = name.removesuffix(".toml")
    ok = True
    if len(parts) == 3:
        expected = prefix_of(canonicalize_name(project))
        if parts[0] != expected:
            report.file(
                f"prefix directory {parts[0]!r} does not match project {project!r}, "
                f"expected {expected!r}"
            )
            ok = False
    if canonicalize_name(project) != project:
        report.file(
            f"directory {project!r} is not a normalized project name, "
            f"expected {canonicalize_name(project)!r}"
        )
        ok = False
    if stem.lower().endswith(_SDIST_SUFFIXES):
        report.file(
            f"{stem!r} is an sdist, expected a wheel: ipwhl takes wheels only "
            "(<wheel-stem>.toml, the wheel's file name without '.whl')"
        )
        return None
    if stem.endswith(".whl"):
        report.file(
            f"file name {name!r} keeps '.whl', expected the wheel's name without it: "
            f"{stem.removesuffix('.whl')}.toml"
        )
        return None
    try:
        wheel = parse_wheel_filename(f"{stem}.whl")
    except InvalidWheelFilename as error:
        report.file(f"invalid wheel file name {stem}.whl: {'; '.join(error.problems)}")
        return None
    wheel_project = canonicalize_name(wheel.project)
    if ok and wheel_project != project:
        report.file(
            f"wheel {wheel.filename!r} is of project {wheel_project!r} but sits in "
            f"directory {project!r}, expected it under {wheel_project}/"
        )
        ok = False
    return (path.relative_to(root).as_posix(), project, wheel) if ok else None


def _parse(path: Path, report: _Reporter) -> tuple[dict[str, Any], bytes] | None:
    """Read and parse the file; on success the reporter knows the value positions."""
    try:
        raw = tomlpos.read_document(path)
        data, report.positions = tomlpos.parse(raw)
    except OSError as error:
        report.file(f"cannot read the declaration ({error.strerror}), expected a readable file")
        return None
    except tomlpos.InvalidToml as error:
        report.at((error.line, error.col), error.message)
        return None
    return data, raw


def check_declaration_text(raw: bytes, where: str) -> dict[str, Any]:
    """A declaration's bytes (from a release's DAG, say) parsed and checked as a declaration
    file's content is (keys, types, values); DeclarationError at `where:line:col` otherwise."""
    violations: list[Violation] = []
    report = _Reporter(Path(where), violations)
    try:
        data, report.positions = tomlpos.parse(raw)
    except tomlpos.InvalidToml as error:
        report.at((error.line, error.col), error.message)
        raise DeclarationError(violations) from None
    _values(data, report)
    if violations:
        raise DeclarationError(violations)
    return data


def _values(
    data: dict[str, Any], report: _Reporter
) -> tuple[str, str, str | None, tuple[str, ...], tuple[Requirement, ...], tuple[str, ...]] | None:
    """Check keys, types and values; return them typed, or None if one is unusable."""
    for key in data:
        if key not in KNOWN_KEYS:
            report.at(report.positions.key(key), unknown_key_message(key, KNOWN_KEYS))
    for key, expected in _REQUIRED_KEYS.items():
        if key not in data:
            report.at((1, 1), f"missing key {key!r}, expected {expected}")
    source = _string(data, "source", report, _REQUIRED_KEYS["source"])
    if source is not None:
        _check_source(source, report)
    content_id = _string(data, "content-id", report, _REQUIRED_KEYS["content-id"])
    if content_id is not None and not is_cid(content_id):
        report.value(
            "content-id",
            f"content-id {content_id!r} is not a CID, expected a CIDv0 ('Qm…') "
            "or a CIDv1 ('b…'): the wheel's 'ipfs add' CID",
        )
    requires_python = _string(data, "requires-python", report, "a version specifier")
    if requires_python is not None:
        try:
            SpecifierSet(requires_python)
        except InvalidSpecifier:
            report.value(
                "requires-python",
                f"invalid requires-python {requires_python!r}, "
                "expected a version specifier such as '>=3.8'",
            )
    extras = _strings(data, "extras", report, "extra names")
    dependency_texts = _strings(data, "dependencies", report, "PEP 508 requirements")
    if extras is not None:
        _check_extras(extras, report)
    dependencies = None
    if dependency_texts is not None:
        dependencies = _dependencies(dependency_texts, extras or (), report)
    if source is None or content_id is None or extras is None or dependencies is None:
        return None
    return (
        source,
        content_id,
        requires_python,
        extras,
        dependencies,
        tuple(dependency_texts or ()),
    )


def unknown_key_message(key: str, known: tuple[str, ...]) -> str:
    """The message for an unknown key, suggesting the nearest known one."""
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    return f"unknown key {key!r}, expected one of: {', '.join(known)}"


def type_name(value: object) -> str:
    """How a TOML value's type is called in messages: 'a string', 'an array', …"""
    if isinstance(value, bool):
        return "a boolean"
    for kind, name in (
        (str, "a string"),
        (int, "an integer"),
        (float, "a float"),
        (list, "an array"),
        (dict, "a table"),
        (datetime, "a date-time"),
        (date, "a date"),
        (time, "a time"),
    ):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _string(data: dict[str, Any], key: str, report: _Reporter, expected: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        report.value(key, f"{key!r} is {type_name(value)}, expected a string: {expected}")
        return None
    return value


def _strings(
    data: dict[str, Any], key: str, report: _Reporter, expected: str
) -> tuple[str, ...] | None:
    value = data.get(key, [])
    if not isinstance(value, list):
        report.value(
            key, f"{key!r} is {type_name(value)}, expected an array of strings: {expected}"
        )
        return None
    ok = True
    for index, item in enumerate(value):
        if not isinstance(item, str):
            report.element(key, index, f"{key!r} item is {type_name(item)}, expected a string")
            ok = False
    return tuple(value) if ok else None


def _check_source(source: str, report: _Reporter) -> None:
    expected = "expected an https:, http: or file: URL or a path relative to this file"
    if not source:
        report.value("source", f"'source' is empty, {expected}")
        return
    scheme = _SCHEME.match(source)
    if scheme:
        name = scheme.group(1).lower()
        if name not in _URL_SCHEMES:
            report.value("source", f"source has scheme '{name}:', {expected}")
            return
        if name != "file" and not urlsplit(source).netloc:
            report.value("source", f"source {source!r} has no host, expected {name}://host/path")
            return
    elif source.startswith(("/", "\\")):
        report.value("source", f"source {source!r} is an absolute path, {expected}")
        return
    path = urlsplit(source).path if scheme else source
    if path.lower().endswith(_SDIST_SUFFIXES):
        report.value(
            "source",
            f"source {path.rsplit('/', 1)[-1]!r} is an sdist, expected a wheel (.whl): "
            "ipwhl takes wheels only",
        )


def _check_extras(extras: tuple[str, ...], report: _Reporter) -> None:
    seen: dict[str, int] = {}
    for index, extra in enumerate(extras):
        if not _EXTRA_NAME.fullmatch(extra):
            report.element(
                "extras",
                index,
                f"invalid extra name {extra!r}, expected letters, digits, '.', '_' or '-', "
                "starting and ending with a letter or digit",
            )
            continue
        normalized = canonicalize_name(extra)
        if normalized in seen:
            line, col = report.positions.element("extras", seen[normalized])
            report.element(
                "extras",
                index,
                f"extra {extra!r} is declared twice (also at {line}:{col}), "
                "expected each extra once",
            )
        else:
            seen[normalized] = index


def _dependencies(
    texts: tuple[str, ...], extras: tuple[str, ...], report: _Reporter
) -> tuple[Requirement, ...] | None:
    declared = {canonicalize_name(extra) for extra in extras}
    listed = ", ".join(extras) if extras else "none are declared"
    requirements = []
    for index, text in enumerate(texts):
        try:
            requirements.append(parse_requirement(text))
        except InvalidRequirement as error:
            report.at(
                report.positions.content("dependencies", index, error.column),
                f"invalid dependency {text!r}: {_reason(error)}",
            )
            continue
        for match in _EXTRA_MARKER.finditer(text):
            extra = match.group("a") if match.group("a") is not None else match.group("b")
            if canonicalize_name(extra) not in declared:
                report.at(
                    report.positions.content("dependencies", index, match.start() + 1),
                    f"marker names extra {extra!r}, which 'extras' does not declare; "
                    f"expected one of the declared extras ({listed})",
                )
    return tuple(requirements) if len(requirements) == len(texts) else None


def _reason(error: InvalidRequirement) -> str:
    return f"found {error.found}, expected {error.expected}"


def is_cid(text: str) -> bool:
    """Whether `text` is a CID, written without surrounding blanks."""
    try:
        CID.parse(text)
    except InvalidCID:
        return False
    return text == text.strip()
