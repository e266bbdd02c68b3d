"""The four checks, as pure functions from declarations (and wheel metadata) to findings."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag
from packaging.utils import canonicalize_name
from packaging.version import Version

from .declarations import Declaration
from .environments import Environment
from .errors import Location, Violation
from .requirements import (
    InvalidRequirement,
    Requirement,
    UndefinedComparison,
    UndefinedEnvironmentName,
    parse_requirement,
)
from .wheels import CoreMetadata

__all__ = [
    "CLOSURE",
    "MATCHING_METADATA",
    "PLATFORM_UNIQUE",
    "VERIFIABLE_SOURCE",
    "Finding",
    "admits",
    "check_closure",
    "check_metadata",
    "check_platform_unique",
    "installable",
    "to_violations",
]

PLATFORM_UNIQUE = "platform-unique"
VERIFIABLE_SOURCE = "verifiable-source"
MATCHING_METADATA = "matching-metadata"
CLOSURE = "closure"

# A finding about a whole field rather than one of its elements (placed at the field's value).
WHOLE_FIELD = -1


@dataclass(frozen=True, order=True)
class Finding:
    """A violation found by a check, placed by declaration path and field (not by file system path).

    Findings are stored in records, so they hold nothing machine-dependent; `to_violations`
    turns them into `path:line:col` violations against the declarations at hand.
    """

    relpath: str
    field: str
    index: int
    check: str
    message: str

    def to_record(self) -> list[Any]:
        return [self.relpath, self.field, self.index, self.check, self.message]

    @classmethod
    def from_record(cls, record: Sequence[Any]) -> Finding:
        return cls(*record)


def to_violations(
    findings: Iterable[Finding], declarations: Mapping[str, Declaration]
) -> list[Violation]:
    """Place findings at the declaration file, line and column they are about."""
    violations = []
    for finding in findings:
        declaration = declarations[finding.relpath]
        location: Location | None = None
        if finding.field == "dependencies" and 0 <= finding.index < len(
            declaration.dependency_locations
        ):
            location = declaration.dependency_locations[finding.index]
        location = location or declaration.locations.get(finding.field)
        location = location or Location(str(declaration.path), 1, 1)
        violations.append(Violation(location, finding.check, finding.message))
    return sorted(violations)


def _python_full_version(environment: Environment) -> Version:
    return Version(environment.markers["python_full_version"])


def _requires_python(text: str | None) -> SpecifierSet | None:
    if text is None:
        return None
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        return None


def admits(environment: Environment, tags: Iterable[Tag], requires_python: str | None) -> bool:
    """Whether an installer in `environment` could pick a wheel with these tags and
    Requires-Python."""
    if not environment.accepts(tags):
        return False
    specifier = _requires_python(requires_python)
    return specifier is None or specifier.contains(
        _python_full_version(environment), prereleases=True
    )


def installable(declaration: Declaration, environment: Environment) -> bool:
    """Whether an installer in `environment` could pick this wheel: tags and Requires-Python."""
    return admits(environment, declaration.wheel.tags, declaration.requires_python)


def check_platform_unique(
    declarations: Sequence[Declaration], environments: Sequence[Environment]
) -> list[Finding]:
    """Check 1: in every environment at most one wheel of the project is installable."""
    findings = []
    clashes: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for environment in environments:
        chosen = [d for d in declarations if installable(d, environment)]
        if len(chosen) > 1:
            clashes[tuple(sorted(d.relpath for d in chosen))].append(environment.line)
    by_relpath = {d.relpath: d for d in declarations}
    for relpaths, lines in sorted(clashes.items()):
        names = ", ".join(by_relpath[r].filename for r in relpaths)
        for relpath in relpaths:
            findings.append(
                Finding(
                    relpath,
                    "source",
                    0,
                    PLATFORM_UNIQUE,
                    f"{len(relpaths)} wheels of {by_relpath[relpath].project!r} are installable on "
                    f"{_environments(lines)}: {names}; declare at most one wheel per environment",
                )
            )
    return findings


def _environments(lines: Sequence[str]) -> str:
    return "; ".join(lines)


def _requirement_key(requirement: Requirement) -> tuple[Any, ...]:
    return (
        canonicalize_name(requirement.name),
        tuple(sorted(canonicalize_name(e) for e in requirement.extras)),
        requirement.specifier,
        requirement.url,
        str(requirement.marker) if requirement.marker is not None else None,
    )


def _parsed(text: str) -> Requirement | None:
    try:
        return parse_requirement(text)
    except InvalidRequirement:
        return None


def check_metadata(declaration: Declaration, metadata: CoreMetadata) -> list[Finding]:
    """Check 3: the wheel's METADATA has the declared name, version, Requires-Python,
    Provides-Extra and Requires-Dist (requirements compared parsed, not as text)."""
    findings = []

    def found(field: str, message: str, index: int = 0) -> None:
        findings.append(Finding(declaration.relpath, field, index, MATCHING_METADATA, message))

    if canonicalize_name(metadata.name) != declaration.project:
        found("source", f"the wheel's METADATA names {metadata.name!r}, "
              f"but it is declared under {declaration.project!r}")
    try:
        same_version = Version(metadata.version) == declaration.version
    except ValueError:
        same_version = False
    if not same_version:
        found("source", f"the wheel's METADATA has version {metadata.version!r}, "
              f"but its file name says {declaration.version}")
    declared_rp = declaration.requires_python
    if _requires_python(declared_rp) != _requires_python(metadata.requires_python) or (
        (declared_rp is None) != (metadata.requires_python is None)
    ):
        found("requires-python" if declared_rp is not None else "source",
              f"requires-python is declared as {declared_rp!r}, "
              f"but the wheel's METADATA has {metadata.requires_python!r}")
    declared_extras = {canonicalize_name(e) for e in declaration.extras}
    wheel_extras = {canonicalize_name(e) for e in metadata.provides_extra}
    if declared_extras != wheel_extras:
        missing = sorted(wheel_extras - declared_extras)
        extra = sorted(declared_extras - wheel_extras)
        parts = []
        if missing:
            parts.append(f"the wheel provides {', '.join(missing)} which is not declared")
        if extra:
            parts.append(f"{', '.join(extra)} is declared but the wheel does not provide it")
        found("extras", "extras differ from the wheel's Provides-Extra: " + "; ".join(parts))
    wheel_requirements: dict[tuple[Any, ...], str] = {}
    for text in metadata.requires_dist:
        parsed = _parsed(text)
        if parsed is None:
            found("dependencies", f"the wheel's METADATA has an invalid Requires-Dist {text!r}",
                  WHOLE_FIELD)
            continue
        wheel_requirements[_requirement_key(parsed)] = text
    declared_keys = set()
    for index, requirement in enumerate(declaration.dependencies):
        key = _requirement_key(requirement)
        declared_keys.add(key)
        if key not in wheel_requirements:
            found("dependencies",
                  f"dependency {declaration.dependency_texts[index]!r} is not among the wheel's "
                  "Requires-Dist", index)
    for key, text in wheel_requirements.items():
        if key not in declared_keys:
            found("dependencies", f"the wheel's METADATA requires {text!r}, which is not declared",
                  WHOLE_FIELD)
    return findings


def check_closure(
    declarations: Sequence[Declaration],
    release: Mapping[str, Sequence[Declaration]],
    environments: Sequence[Environment],
) -> list[Finding]:
    """Check 4: every dependency of the project's installable wheels, for the base and each
    declared extra, is met in every environment by the one installable wheel it names."""
    problems: dict[tuple[str, int, str], list[str]] = defaultdict(list)
    for environment in environments:
        for declaration in declarations:
            if not installable(declaration, environment):
                continue
            for index, requirement in enumerate(declaration.dependencies):
                try:
                    needed_for = _needed_for(requirement, declaration.extras, environment)
                    messages = [_unmet(requirement, release, environment, e) for e in needed_for]
                except (UndefinedComparison, UndefinedEnvironmentName) as error:
                    messages = [f"has a marker that cannot be evaluated ({error})"]
                for message in messages:
                    if message is not None:
                        message = f"{declaration.project} {declaration.version} {message}"
                        problems[(declaration.relpath, index, message)].append(environment.line)
    findings = []
    for (relpath, index, message), lines in sorted(problems.items()):
        unique_lines = list(dict.fromkeys(lines))
        findings.append(
            Finding(relpath, "dependencies", index, CLOSURE,
                    f"{message} on {_environments(unique_lines)}")
        )
    return findings


def _needed_for(
    requirement: Requirement, extras: Sequence[str], environment: Environment
) -> list[str]:
    """When `requirement` applies here: [""] for the base install, else the declared extras
    that bring it in; a base dependency is checked once, not again under every extra."""
    if requirement.marker is None:
        return [""]
    if requirement.marker.evaluate(dict(environment.markers, extra="")):
        return [""]
    return [
        extra for extra in extras
        if requirement.marker.evaluate(dict(environment.markers, extra=canonicalize_name(extra)))
    ]


def _unmet(
    requirement: Requirement,
    release: Mapping[str, Sequence[Declaration]],
    environment: Environment,
    extra: str,
) -> str | None:
    needed = canonicalize_name(requirement.name)
    via = f" (for extra {extra!r})" if extra else ""
    wanted = f"{requirement.name}{requirement.specifier}"
    candidates = release.get(needed, ())
    if not candidates:
        return f"requires {wanted!r}{via}, but {needed!r} is not in the release"
    chosen = [d for d in candidates if installable(d, environment)]
    if not chosen:
        by_tag = [d for d in candidates if environment.accepts(d.wheel.tags)]
        if by_tag:
            excluding = by_tag[0]
            return (f"requires {wanted!r}{via}, but {needed} {excluding.version} has "
                    f"requires-python {excluding.requires_python!r}, which excludes "
                    f"Python {environment.python_version}")
        return f"requires {wanted!r}{via}, but no wheel of {needed!r} is installable"
    provider = chosen[0]
    if requirement.url is not None:
        return f"requires {needed!r} from a URL{via}; the release can only offer its own wheel"
    if not requirement.specifier.contains(provider.version, prereleases=True):
        return (f"requires {wanted!r}{via}, but the release has "
                f"{needed} {provider.version}")
    missing_extras = {canonicalize_name(e) for e in requirement.extras} - {
        canonicalize_name(e) for e in provider.extras
    }
    if missing_extras:
        return (f"requires {needed!r} with extra {', '.join(sorted(missing_extras))}{via}, "
                f"but {needed} {provider.version} declares no such extra")
    return None
