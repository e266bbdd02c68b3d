"""`ipwhl declare`: choose the wheels that cover a release's environments, fetch them, and write
their declarations (SPEC §1) in IPWHL's formatting; with `--with-deps`, until the release is
closed.

Data flows: specs -> a resolver that picks one version per project (the newest that every
dependent's specifier admits and whose wheels cover the environments it is needed in) -> the
chosen wheels fetched and hashed -> declaration files -> checks 1 and 4 on the result.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from .build import Progress
from .checks import (
    CLOSURE,
    admits,
    check_closure,
    check_platform_unique,
    installable,
    to_violations,
)
from .cid import CID, SHA2_256
from .declarations import Declaration, load_declarations, prefix_of
from .environments import Environment
from .errors import IntegrityError, IpwhlError, Violation
from .fetch import FetchedFile, fetch_into_store, open_source
from .pypi import IndexFile, ProjectNotFound, SimpleIndex
from .requirements import (
    InvalidRequirement,
    Requirement,
    UndefinedComparison,
    UndefinedEnvironmentName,
    parse_requirement,
)
from .store import Store
from .unixfs import FileBuilder
from .wheels import (
    CoreMetadata,
    InvalidWheelFilename,
    WheelFilename,
    WheelInfo,
    inspect_wheel,
    parse_metadata,
    parse_wheel_filename,
)

__all__ = [
    "Candidate",
    "Choice",
    "DeclareIncomplete",
    "DeclareResult",
    "FetchedWheel",
    "InvalidSpec",
    "Pick",
    "Spec",
    "WheelFetcher",
    "choose_wheels",
    "declaration_path",
    "declaration_text",
    "declare",
    "index_candidates",
    "installable_in",
    "parse_spec",
    "pick_wheels",
    "remember_fetches",
    "requirement_applies",
    "store_wheel",
    "toml_string",
    "write_declarations",
]

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# TOML literal strings cannot hold a quote or control characters other than tab.
_NOT_LITERAL = re.compile(r"['\x00-\x08\x0a-\x1f\x7f]")
_BASIC_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
_COMMAND_LINE = "the command line"
_CHUNK = 1 << 20


class InvalidSpec(IpwhlError):
    """A SPEC on the command line is neither a wheel file, a wheel URL nor a requirement."""

    exit_code = 2


class DeclareIncomplete(IpwhlError):
    """Something asked for could not be declared; what could be was written."""

    exit_code = 4


# -- formatting -----------------------------------------------------------------------------


def toml_string(text: str) -> str:
    """`text` as a TOML string: single-quoted (literal) unless it holds a quote or a control
    character, then double-quoted with escapes."""
    if not _NOT_LITERAL.search(text):
        return f"'{text}'"
    escaped = "".join(
        _BASIC_ESCAPES.get(char)
        or (f"\\u{ord(char):04x}" if (ord(char) < 0x20 and char != "\t") or char == "\x7f"
            else char)
        for char in text
    )
    return f'"{escaped}"'


def declaration_text(source: str, content_id: str, metadata: CoreMetadata) -> str:
    """A declaration as IPWHL writes it: METADATA's fields verbatim, in METADATA's order."""
    lines = [f"source = {toml_string(source)}", f"content-id = {toml_string(content_id)}"]
    if metadata.requires_python is not None:
        lines.append(f"requires-python = {toml_string(metadata.requires_python)}")
    lines.append("extras = [" + ", ".join(toml_string(e) for e in metadata.provides_extra) + "]")
    if metadata.requires_dist:
        lines.append("dependencies = [")
        lines += [f"\t{toml_string(text)}," for text in metadata.requires_dist]
        lines.append("]")
    else:
        lines.append("dependencies = []")
    return "\n".join(lines) + "\n"


def declaration_path(root: Path, wheel: WheelFilename, *, prefix_layout: bool = False) -> Path:
    """Where a wheel's declaration goes: <root>/[<prefix>/]<project>/<wheel-stem>.toml."""
    project = canonicalize_name(wheel.project)
    stem = wheel.filename.removesuffix(".whl")
    base = root / prefix_of(project) if prefix_layout else root
    return base / project / f"{stem}.toml"


# -- candidates and choosing wheels ----------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A wheel that could be declared: its name's parts, where it is, and its Requires-Python
    (as the index says, or the wheel's own once its METADATA has been read)."""

    wheel: WheelFilename
    url: str
    requires_python: str | None = None
    sha256: str | None = None
    index_file: IndexFile | None = field(default=None, compare=False)
    path: Path | None = None  # a local wheel file, declared by a path relative to its declaration

    @property
    def filename(self) -> str:
        return self.wheel.filename


def installable_in(candidate: Candidate, environment: Environment) -> bool:
    """Whether an installer in `environment` could pick the wheel (tags and Requires-Python)."""
    return admits(environment, candidate.wheel.tags, candidate.requires_python)


@dataclass(frozen=True)
class Choice:
    """The wheels chosen for one version, and the needed environments none of them covers."""

    wheels: tuple[Candidate, ...]
    missing: tuple[Environment, ...]


def _generality(candidate: Candidate) -> int:
    """0 for a pure wheel, 1 for abi3 or interpreter-neutral binaries, 2 for the rest."""
    tags = candidate.wheel.tags
    if all(t.abi == "none" and t.platform == "any" for t in tags):
        return 0
    if any(t.abi in ("abi3", "none") for t in tags):
        return 1
    return 2


def choose_wheels(
    candidates: Iterable[Candidate],
    environments: Sequence[Environment],
    needed: Iterable[Environment] | None = None,
) -> Choice:
    """Wheels of one version covering the `needed` environments (default: all), at most one
    installable in any environment (check 1), the most general first: a wheel covering more
    environments wins, then a pure or abi3 wheel, then the one installers would prefer."""
    needed_set = frozenset(environments if needed is None else needed)
    unique = list({c.filename: c for c in candidates}.values())
    covers = {c.filename: frozenset(e for e in environments if installable_in(c, e))
              for c in unique}
    rank = {e: {tag: i for i, tag in enumerate(e.tags)} for e in environments}

    def preference(candidate: Candidate) -> int:
        return sum(min(rank[e].get(t, len(e.tags)) for t in candidate.wheel.tags)
                   for e in covers[candidate.filename])

    def order(candidate: Candidate) -> tuple[int, int, int, int, str]:
        build = candidate.wheel.build[0] if candidate.wheel.build else 0
        return (-len(covers[candidate.filename] & needed_set), _generality(candidate),
                preference(candidate), -build, candidate.filename)

    taken: set[Environment] = set()
    chosen = []
    for candidate in sorted(unique, key=order):
        covered = covers[candidate.filename]
        if not covered & needed_set - taken or covered & taken:
            continue
        chosen.append(candidate)
        taken |= covered
    missing = tuple(e for e in environments if e in needed_set and e not in taken)
    return Choice(tuple(sorted(chosen, key=lambda c: c.filename)), missing)


def index_candidates(index: SimpleIndex, project: str) -> dict[Version, list[Candidate]]:
    """The project's wheels on the index by version: yanked files, sdists and files whose
    name is not a wheel of this project left out."""
    name = canonicalize_name(project)
    versions: dict[Version, list[Candidate]] = {}
    for file in index.files(name):
        if file.yanked or not file.filename.endswith(".whl"):
            continue
        try:
            wheel = parse_wheel_filename(file.filename)
        except InvalidWheelFilename:
            continue
        if canonicalize_name(wheel.project) != name:
            continue
        candidate = Candidate(wheel, file.url, file.requires_python, file.hashes.get("sha256"),
                              index_file=file)
        versions.setdefault(wheel.version, []).append(candidate)
    return versions


# -- fetching -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchedWheel:
    """A wheel downloaded for this run: its bytes on disk, content-id and what it says."""

    candidate: Candidate
    path: Path
    content_id: CID
    sha256: str
    info: WheelInfo


class WheelFetcher:
    """Downloads each wheel and METADATA file once per run, into `workdir`.

    METADATA comes from the index's metadata file when it offers one (PEP 658), else from
    the wheel; every wheel is hashed as it arrives, to its release content-id (CIDv1, raw
    leaves, sha2-256) and sha256, which must match the index's hash.
    """

    def __init__(self, workdir: Path, index: SimpleIndex | None = None,
                 on_bytes: Callable[[int], None] | None = None) -> None:
        self.workdir = workdir
        self.index = index
        self.on_bytes = on_bytes
        self._wheels: dict[str, FetchedWheel] = {}
        self._metadata: dict[str, CoreMetadata] = {}
        self._lock = threading.Lock()
        self._count = 0

    def metadata(self, candidate: Candidate) -> CoreMetadata:
        """The wheel's core metadata, without downloading it when the index offers it."""
        with self._lock:
            known = self._metadata.get(candidate.url)
        if known is not None:
            return known
        file = candidate.index_file
        if self.index is not None and file is not None and file.core_metadata is not None:
            metadata = parse_metadata(self.index.metadata(file), file.metadata_url)
        else:
            metadata = self.fetch(candidate).info.metadata
        with self._lock:
            self._metadata[candidate.url] = metadata
        return metadata

    def fetch(self, candidate: Candidate) -> FetchedWheel:
        """The wheel on disk, hashed and inspected (downloaded at most once per run)."""
        with self._lock:
            known = self._wheels.get(candidate.url)
            self._count += 1
            number = self._count
        if known is not None:
            return known
        builder = FileBuilder(cid_version=1, hash_code=SHA2_256)
        digest = hashlib.sha256()
        if candidate.path is not None:
            path = candidate.path
            chunks: Iterator[bytes | memoryview] = _read_chunks(path)
            handle = None
        else:
            path = self.workdir / f"{number}-{candidate.filename}"
            chunks = open_source(candidate.url)
            handle = open(path, "wb")
        try:
            for chunk in chunks:
                builder.update(chunk)
                digest.update(chunk)
                if handle is not None:
                    handle.write(chunk)
                if self.on_bytes is not None and handle is not None:
                    self.on_bytes(len(chunk))
        finally:
            if handle is not None:
                handle.close()
        sha256 = digest.hexdigest()
        if candidate.sha256 is not None and sha256 != candidate.sha256.lower():
            raise IntegrityError(
                f"{candidate.url} has sha256 {sha256}, but the index says {candidate.sha256}"
            )
        content_id, _, _ = builder.finish()
        info = inspect_wheel(path, candidate.filename)
        fetched = FetchedWheel(candidate, path, content_id, sha256, info)
        with self._lock:
            self._wheels[candidate.url] = fetched
            self._metadata.setdefault(candidate.url, info.metadata)
        return fetched


def _read_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


def store_wheel(store: Store, fetched: FetchedWheel) -> FetchedFile:
    """Add a downloaded wheel to the store, through the same verified path builds use."""
    stored = fetch_into_store(store, fetched.path.resolve().as_uri(), fetched.content_id)
    store.add_source(stored.sha256, fetched.candidate.url)  # so `store verify --repair` works
    return stored


def remember_fetches(store: Store, release_path: Path, fetched: Mapping[str, FetchedFile]) -> int:
    """Record the release's fetch steps for wheels fetched here, so a following check or build
    does not download them again; returns how many were recorded."""
    from .build import load_plan
    from .derivations import Realiser

    plan = load_plan(release_path)
    realiser = Realiser(store)
    recorded = 0
    for project in plan.projects:
        for wheel in project.wheels:
            done = fetched.get(str(wheel.content_id))
            if done is not None and not realiser.is_realised(wheel.fetch):
                realiser.realise(wheel.fetch, lambda d=done: d.to_record())
                recorded += 1
    return recorded


# -- writing --------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_declarations(root: Path, added: Mapping[Path, str], removed: Iterable[Path]) -> None:
    """Write every new declaration (each atomically), then remove the old ones it replaces,
    and project directories left empty; a crash leaves the old and new side by side."""
    for path, text in sorted(added.items()):
        _write_atomic(path, text)
    for path in sorted(set(removed) - set(added)):
        path.unlink(missing_ok=True)
        directory = path.parent
        while directory != root and directory.is_relative_to(root):
            try:
                directory.rmdir()
            except OSError:
                break
            directory = directory.parent


# -- specs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One SPEC: a project with a specifier, or a given wheel (file or URL)."""

    text: str
    project: str
    specifier: SpecifierSet
    wheel: Candidate | None = None


def _wheel_spec(text: str, url: str, path: Path | None) -> Spec:
    filename = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    try:
        wheel = parse_wheel_filename(filename)
    except InvalidWheelFilename as error:
        raise InvalidSpec(f"{text!r}: {'; '.join(error.problems)}") from None
    candidate = Candidate(wheel, url, path=path)
    return Spec(text, canonicalize_name(wheel.project), SpecifierSet(), candidate)


def parse_spec(text: str) -> Spec:
    """Read a SPEC: a wheel file, a wheel URL, `name==version`, `name` or any requirement
    without a marker."""
    if _URL.match(text):
        if urllib.parse.urlsplit(text).scheme == "file":
            path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(text).path))
            return parse_spec(str(path))
        return _wheel_spec(text, text, None)
    if text.endswith(".whl"):
        path = Path(text).resolve()
        if not path.is_file():
            raise InvalidSpec(f"{text!r}: no such wheel file")
        return _wheel_spec(text, path.as_uri(), path)
    try:
        requirement = parse_requirement(text)
    except InvalidRequirement as error:
        raise InvalidSpec(
            f"{text!r} is not a wheel file, a wheel URL or a requirement: {error}"
        ) from None
    if requirement.marker is not None:
        raise InvalidSpec(f"{text!r}: a SPEC has no marker; declare it for every environment")
    if requirement.url is not None:
        return _wheel_spec(text, requirement.url, None)
    return Spec(text, requirement.normalized_name, requirement.specifier)


# -- resolving ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pick:
    """The version chosen for a project, its wheels, and their METADATA."""

    project: str
    version: Version
    wheels: tuple[Candidate, ...]
    missing: tuple[Environment, ...]
    metadata: Mapping[str, CoreMetadata]
    needed: frozenset[Environment] = frozenset()  # the environments it was chosen to cover

    @property
    def extras(self) -> frozenset[str]:
        return frozenset(canonicalize_name(e) for m in self.metadata.values()
                         for e in m.provides_extra)


def pick_wheels(
    fetcher: WheelFetcher,
    project: str,
    version: Version,
    candidates: Sequence[Candidate],
    environments: Sequence[Environment],
    needed: Iterable[Environment],
) -> Pick | None:
    """The wheels of one version chosen for the `needed` environments, with their METADATA;
    None if no wheel of it is installable in any of them."""
    needed = frozenset(needed)
    candidates = list(candidates)
    metadata: dict[str, CoreMetadata] = {}
    for _ in range(3):
        choice = choose_wheels(candidates, environments, needed)
        if not choice.wheels:
            return None
        refined = False
        for wheel in choice.wheels:
            metadata[wheel.url] = fetcher.metadata(wheel)
            said = metadata[wheel.url].requires_python
            if wheel.requires_python is None and said is not None:
                # The index did not say; the wheel's own Requires-Python decides.
                candidates = [replace(c, requires_python=said) if c.url == wheel.url else c
                              for c in candidates]
                refined = True
        if not refined:
            return Pick(project, version, choice.wheels, choice.missing,
                        {w.url: metadata[w.url] for w in choice.wheels}, needed)
    return None


@dataclass(frozen=True)
class _Constraint:
    """`by` needs `project` to satisfy `requirement` in `environments`."""

    project: str
    requirement: Requirement
    text: str
    by: str
    environments: frozenset[Environment]

    def admits(self, version: Version) -> bool:
        return self.requirement.specifier.contains(version, prereleases=True)

    def describe(self) -> str:
        if self.by == _COMMAND_LINE:
            return f"asked for {self.text!r}"
        return f"{self.by} requires {self.text!r}"


def requirement_applies(
    requirement: Requirement, extras: Iterable[str], environment: Environment
) -> bool:
    """Whether a dependency's marker holds in `environment` for the base install or any of
    the declared `extras` (as check 4 asks); raises the marker's evaluation errors."""
    if requirement.marker is None:
        return True
    for extra in ("", *extras):
        if requirement.marker.evaluate(dict(environment.markers, extra=canonicalize_name(extra))):
            return True
    return False


def _needs(
    requirements: Iterable[tuple[str, Requirement | None]],
    extras: Sequence[str],
    environments: Iterable[Environment],
    by: str,
    problems: list[str],
) -> list[_Constraint]:
    """The constraints a wheel's dependencies put on other projects, per environment."""
    where: dict[tuple[str, str], set[Environment]] = {}
    parsed: dict[str, Requirement] = {}
    for environment in environments:
        for text, requirement in requirements:
            if requirement is None:
                problems.append(f"{by} has an invalid dependency {text!r}")
                continue
            try:
                applies = requirement_applies(requirement, extras, environment)
            except (UndefinedComparison, UndefinedEnvironmentName) as error:
                problems.append(f"{by}: cannot evaluate the marker of {text!r} ({error})")
                continue
            if applies:
                where.setdefault((requirement.normalized_name, text), set()).add(environment)
                parsed[text] = requirement
    return [
        _Constraint(project, parsed[text], text, by, frozenset(envs))
        for (project, text), envs in where.items()
    ]


def _parse_or_none(text: str) -> Requirement | None:
    try:
        return parse_requirement(text)
    except InvalidRequirement:
        return None


class _Resolver:
    """Picks one version per project until every constraint seen is met (or reported)."""

    def __init__(self, index: SimpleIndex, fetcher: WheelFetcher,
                 environments: Sequence[Environment], existing: Mapping[str, Sequence[Declaration]],
                 with_deps: bool) -> None:
        self.index = index
        self.fetcher = fetcher
        self.environments = tuple(environments)
        self.existing = existing
        self.with_deps = with_deps
        self.chosen: dict[str, Pick] = {}
        self.fixed: set[str] = set()
        self.requested: set[str] = set()
        self.by_source: dict[str, list[_Constraint]] = {}
        self.on_target: dict[str, dict[str, list[_Constraint]]] = {}
        self.problems: list[str] = []
        self.failed: dict[str, str] = {}  # project -> why no version could be picked
        self.queue: deque[str] = deque()

    # constraints

    def _set_constraints(self, source: str, constraints: list[_Constraint]) -> None:
        for old in self.by_source.pop(source, []):
            self.on_target.get(old.project, {}).pop(source, None)
        self.by_source[source] = constraints
        for constraint in constraints:
            if constraint.project == source:
                continue  # a project's extras asking for its own other extras
            self.on_target.setdefault(constraint.project, {}).setdefault(source, []).append(
                constraint
            )
            self.queue.append(constraint.project)

    def constraints(self, project: str) -> list[_Constraint]:
        return [c for group in self.on_target.get(project, {}).values() for c in group]

    def _pick_constraints(self, pick: Pick) -> list[_Constraint]:
        constraints: list[_Constraint] = []
        by = f"{pick.project} {pick.version}"
        for wheel in pick.wheels:
            metadata = pick.metadata[wheel.url]
            candidate = replace(wheel, requires_python=metadata.requires_python)
            environments = [e for e in self.environments if installable_in(candidate, e)]
            requirements = [(t, _parse_or_none(t)) for t in metadata.requires_dist]
            constraints += _needs(requirements, metadata.provides_extra, environments, by,
                                  self.problems)
        return constraints

    # picking

    def add_wheels(self, project: str, candidates: Sequence[Candidate]) -> None:
        """Fix a project to the given wheels (SPECs that are wheel files or URLs)."""
        versions = {c.wheel.version for c in candidates}
        if len(versions) > 1:
            raise InvalidSpec(f"wheels of {project} in {len(versions)} versions "
                              f"({', '.join(map(str, sorted(versions)))}); "
                              "a release has one version of each project")
        metadata = {c.url: self.fetcher.metadata(c) for c in candidates}
        wheels = tuple(replace(c, requires_python=metadata[c.url].requires_python)
                       for c in candidates)
        for wheel in wheels:
            if not any(installable_in(wheel, e) for e in self.environments):
                raise InvalidSpec(f"{wheel.filename} is installable in none of the supported "
                                  f"environments ({'; '.join(map(str, self.environments))})")
        for environment in self.environments:
            clash = [w.filename for w in wheels if installable_in(w, environment)]
            if len(clash) > 1:
                raise InvalidSpec(f"{' and '.join(clash)} are both installable on {environment}; "
                                  "give one wheel per environment (check 1)")
        covered = {e for w in wheels for e in self.environments if installable_in(w, e)}
        missing = tuple(e for e in self.environments if e not in covered)
        pick = Pick(project, versions.pop(), tuple(sorted(wheels, key=lambda c: c.filename)),
                    missing, metadata, frozenset(self.environments))
        self.fixed.add(project)
        self._choose(pick)

    def request(self, spec: Spec) -> None:
        """Ask for a project by name, with the SPEC's specifier, in every environment."""
        requirement = parse_requirement(f"{spec.project}{spec.specifier}")
        self.requested.add(spec.project)
        constraint = _Constraint(spec.project, requirement, spec.text, _COMMAND_LINE,
                                 frozenset(self.environments))
        self.on_target.setdefault(spec.project, {}).setdefault(_COMMAND_LINE, []).append(
            constraint
        )
        self.queue.append(spec.project)

    def add_existing(self) -> None:
        """Declared projects stay as they are, but what they depend on constrains the rest."""
        for project, declarations in self.existing.items():
            constraints: list[_Constraint] = []
            for declaration in declarations:
                environments = [e for e in self.environments if installable(declaration, e)]
                requirements = list(zip(declaration.dependency_texts, declaration.dependencies,
                                        strict=True))
                constraints += _needs(requirements, declaration.extras, environments,
                                      f"{project} {declaration.version}", self.problems)
            self._set_constraints(project, constraints)

    def _choose(self, pick: Pick) -> None:
        self.chosen[pick.project] = pick
        self.failed.pop(pick.project, None)
        self._set_constraints(pick.project, self._pick_constraints(pick))

    def resolve(self) -> None:
        limit = 50 * (len(self.on_target) + 10)
        steps = 0
        while self.queue:
            project = self.queue.popleft()
            if project in self.existing or project in self.fixed:
                continue
            if project not in self.requested and not self.with_deps:
                continue
            constraints = self.constraints(project)
            needed = frozenset(e for c in constraints for e in c.environments)
            current = self.chosen.get(project)
            if (current is not None and needed <= current.needed
                    and all(c.admits(current.version) for c in constraints)):
                continue
            steps += 1
            if steps > limit:
                self.problems.append(f"gave up after {limit} choices without settling "
                                     f"(last: {project}); declare some versions by hand")
                return
            pick = self._pick(project, constraints, needed)
            if pick is not None:
                self._choose(pick)

    def _pick(self, project: str, constraints: Sequence[_Constraint],
              needed: frozenset[Environment]) -> Pick | None:
        specifier = SpecifierSet()
        for constraint in constraints:
            specifier &= constraint.requirement.specifier
        try:
            by_version = index_candidates(self.index, project)
        except ProjectNotFound as error:
            self.failed[project] = str(error)
            return None
        if not by_version:
            self.failed[project] = f"{project} has no wheels on the index {self.index.url}"
            return None
        versions = sorted(specifier.filter(by_version), reverse=True)
        if not versions:
            newest = max(by_version)
            self.failed[project] = (f"no version of {project} on the index satisfies "
                                    f"{str(specifier) or 'any version'!r} (newest: {newest})")
            return None
        # Tags and the index's Requires-Python rule most versions out before any METADATA
        # is read; the wheels' own Requires-Python can still narrow a choice (pick_wheels).
        fallback: tuple[int, Version] | None = None
        for version in versions:
            choice = choose_wheels(by_version[version], self.environments, needed)
            if not choice.wheels:
                continue
            if not choice.missing:
                pick = pick_wheels(self.fetcher, project, version, by_version[version],
                                   self.environments, needed)
                if pick is not None and not pick.missing:
                    return pick
            missing = len(choice.missing)
            if fallback is None or missing < fallback[0]:
                fallback = (missing, version)
        if fallback is None:
            self.failed[project] = (
                f"no version of {project} satisfying {str(specifier) or 'any version'!r} has a "
                f"wheel for {'; '.join(str(e) for e in self.environments if e in needed)}"
            )
            return None
        version = fallback[1]
        return pick_wheels(self.fetcher, project, version, by_version[version],
                           self.environments, needed)

    # the outcome

    def reachable(self) -> list[Pick]:
        """The picks some root still leads to (a re-pick may have orphaned a dependency)."""
        roots = [*self.requested, *self.fixed, *self.existing]
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            project = stack.pop()
            if project in seen:
                continue
            seen.add(project)
            stack += [c.project for c in self.by_source.get(project, ())]
        return [pick for name, pick in sorted(self.chosen.items()) if name in seen]

    def unsatisfied(self, picks: Sequence[Pick]) -> list[str]:
        """Every constraint the outcome breaks, one line per project."""
        versions: dict[str, tuple[Version, frozenset[str]]] = {
            p.project: (p.version, p.extras) for p in picks
        }
        for project, declarations in self.existing.items():
            versions[project] = (declarations[0].version,
                                 frozenset(canonicalize_name(e) for e in declarations[0].extras))
        sources = {p.project for p in picks} | set(self.existing) | {_COMMAND_LINE}
        messages = []
        for project in sorted(self.on_target):
            constraints = sorted(
                (c for c in self.constraints(project)
                 if c.by == _COMMAND_LINE or c.by.split(" ")[0] in sources),
                key=lambda c: c.by != _COMMAND_LINE,
            )
            if not constraints:
                continue
            if project not in versions:
                if not self.with_deps and project not in self.requested:
                    continue
                why = self.failed.get(project, f"{project} could not be chosen")
                wanted = "; ".join(c.describe() for c in constraints)
                messages.append(f"cannot declare {project}: {why} ({wanted})")
                continue
            version, extras = versions[project]
            broken = [c for c in constraints if not c.admits(version)]
            if broken:
                state = "is declared" if project in self.existing else "was chosen"
                why = self.failed.get(project)
                messages.append(
                    f"cannot satisfy {project}: {'; '.join(c.describe() for c in constraints)}; "
                    f"{project} {version} {state}" + (f" ({why})" if why else "")
                )
            for constraint in constraints:
                lacking = {canonicalize_name(e) for e in constraint.requirement.extras} - extras
                if lacking:
                    messages.append(f"{constraint.describe()}, but {project} {version} has no "
                                    f"extra {', '.join(sorted(lacking))}")
        return messages


# -- the command ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeclareResult:
    """What `declare` wrote and what it could not do."""

    written: tuple[Path, ...]
    removed: tuple[Path, ...]
    declared: tuple[Pick, ...]
    missing: tuple[str, ...]
    unsatisfied: tuple[str, ...]
    violations: tuple[Violation, ...]
    undeclared: tuple[str, ...]
    fetched: Mapping[str, FetchedFile]

    def raise_for_problems(self, *, allow_missing: bool = False) -> None:
        """DeclareIncomplete listing what went wrong, if anything did."""
        problems = [*self.unsatisfied, *(str(v) for v in self.violations)]
        if not allow_missing:
            problems = [*self.missing, *problems]
        if problems:
            hint = "" if allow_missing or not self.missing else (
                "\n(--allow-missing declares a project without the wheels it lacks)"
            )
            raise DeclareIncomplete("\n".join(problems) + hint)


def _missing_message(pick: Pick) -> str:
    wheels = ", ".join(w.filename for w in pick.wheels)
    return (f"{pick.project} {pick.version} has no wheel for "
            f"{'; '.join(map(str, pick.missing))} (declared: {wheels})")


def _existing(root: Path) -> dict[str, tuple[Declaration, ...]]:
    if not root.is_dir() or not any(p for p in root.iterdir() if not p.name.startswith(".")):
        return {}
    return dict(load_declarations(root).by_project())


@contextmanager
def _workdir(store: Store | None) -> Iterator[Path]:
    if store is not None:
        (store.root / "tmp").mkdir(parents=True, exist_ok=True)
    # Under the store's tmp/ so the copy into objects/ is on one file system.
    with tempfile.TemporaryDirectory(
        prefix="declare-", dir=None if store is None else store.root / "tmp"
    ) as directory:
        yield Path(directory)


def _source(candidate: Candidate, declaration: Path) -> str:
    if candidate.path is None:
        return candidate.url
    return Path(os.path.relpath(candidate.path, declaration.parent)).as_posix()


def _prefix_layout(declarations: Iterable[Declaration]) -> bool:
    return any(d.relpath.count("/") == 2 for d in declarations)


def declare(
    specs: Sequence[str],
    root: Path,
    environments: Sequence[Environment],
    *,
    store: Store | None,
    index: SimpleIndex,
    with_deps: bool = False,
    prefix_layout: bool = False,
    workers: int = 4,
    progress: Progress | None = None,
) -> DeclareResult:
    """Declare the SPECs (and with `with_deps` what they need) under `root`; fetch the chosen
    wheels into `store`; check the outcome (checks 1 and 4 on the declared metadata)."""
    parsed = [parse_spec(text) for text in specs]
    existing = _existing(root)
    replaced = {s.project for s in parsed}
    old_declarations = [d for p in replaced for d in existing.get(p, ())]
    kept = {p: ds for p, ds in existing.items() if p not in replaced}
    prefix_layout = prefix_layout or _prefix_layout(d for ds in existing.values() for d in ds)
    progress = progress or Progress()
    with _workdir(store) as workdir:
        fetcher = WheelFetcher(workdir, index, on_bytes=progress.advance)
        resolver = _Resolver(index, fetcher, environments, kept, with_deps)
        resolver.add_existing()
        given: dict[str, list[Candidate]] = {}
        for spec in parsed:
            if spec.wheel is not None:
                given.setdefault(spec.project, []).append(spec.wheel)
        for project, candidates in given.items():
            resolver.add_wheels(project, candidates)
        for spec in parsed:
            if spec.wheel is None:
                if spec.project in given:
                    raise InvalidSpec(f"{spec.text!r}: {spec.project} is also given as a wheel")
                resolver.request(spec)
        resolver.resolve()
        picks = resolver.reachable()
        unsatisfied = [*dict.fromkeys(resolver.problems), *resolver.unsatisfied(picks)]
        wheels = [w for pick in picks for w in pick.wheels]
        progress.start(len(wheels))

        def fetch(candidate: Candidate) -> tuple[FetchedWheel, FetchedFile | None]:
            fetched = fetcher.fetch(candidate)
            stored = store_wheel(store, fetched) if store is not None else None
            progress.wheel_done(candidate.filename)
            return fetched, stored

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            outcomes = list(pool.map(fetch, wheels))
        progress.finish()
    added: dict[Path, str] = {}
    stored_files: dict[str, FetchedFile] = {}
    for fetched, stored in outcomes:
        path = declaration_path(root, fetched.candidate.wheel, prefix_layout=prefix_layout)
        source = _source(fetched.candidate, path)
        added[path] = declaration_text(source, str(fetched.content_id), fetched.info.metadata)
        if stored is not None:
            stored_files[str(fetched.content_id)] = stored
    # A project asked for again loses its old files only to a new version.
    declared = {pick.project for pick in picks}
    removed = [d.path for d in old_declarations if d.project in declared]
    write_declarations(root, added, removed)
    violations, undeclared = _check(root, environments, with_deps)
    return DeclareResult(
        written=tuple(sorted(added)),
        removed=tuple(sorted(set(removed) - set(added))),
        declared=tuple(picks),
        missing=tuple(_missing_message(p) for p in picks if p.missing),
        unsatisfied=tuple(unsatisfied),
        violations=tuple(violations),
        undeclared=tuple(undeclared),
        fetched=stored_files,
    )


def _check(root: Path, environments: Sequence[Environment],
           with_deps: bool) -> tuple[list[Violation], list[str]]:
    """Checks 1 and 4 on what is declared now; without `with_deps`, unmet dependencies are
    only named (the user declares them next), not reported as violations."""
    declarations = load_declarations(root)
    release = declarations.by_project()
    findings = []
    for project_declarations in release.values():
        findings += check_platform_unique(project_declarations, environments)
        findings += check_closure(project_declarations, release, environments)
    undeclared: list[str] = []
    if not with_deps:
        names = {r.normalized_name for d in declarations.declarations for r in d.dependencies}
        undeclared = sorted(n for n in names if n not in release)
        findings = [f for f in findings
                    if f.check != CLOSURE or "is not in the release" not in f.message]
    by_relpath = {d.relpath: d for d in declarations.declarations}
    return to_violations(findings, by_relpath), undeclared
