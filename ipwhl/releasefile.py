"""The release file (SPEC §2) -> ReleaseSpec, with the source location of every value."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ipwhl import tomlpos
from ipwhl.declarations import is_cid, type_name, unknown_key_message
from ipwhl.environments import Environment, InvalidEnvironment, parse_environment
from ipwhl.errors import DeclarationError, Location, NotFound, Violation

__all__ = ["KNOWN_KEYS", "NotARelease", "ReleaseSpec", "load_release", "parse_release_info"]

SYNTAX = "syntax"

KNOWN_KEYS = ("name", "declarations", "supported", "on-top-of", "date", "keys")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_Report = Callable[..., None]
_SUPPORTED_EXPECTED = (
    "an array of '<interpreter> <platform>' lines or the name of a file holding one a line"
)


@dataclass(frozen=True)
class ReleaseSpec:
    """What a release file asks for: a named release of a declarations tree."""

    path: Path
    name: str
    declarations_dir: Path
    supported: tuple[Environment, ...]
    supported_lines: tuple[str, ...]
    on_top_of: str | None
    date: str | None
    text: bytes = field(repr=False)
    locations: Mapping[str, Location] = field(repr=False, compare=False)
    keys: bytes | None = field(default=None, repr=False)  # the line's public keys, verbatim


def load_release(path: Path, environ: Mapping[str, str] | None = None) -> ReleaseSpec:
    """Read and validate the release file at `path`; raise DeclarationError with every problem.

    Without a `date` key the date comes from SOURCE_DATE_EPOCH in `environ`
    (default: the process environment), else there is none.
    """
    environ = os.environ if environ is None else environ
    violations: list[Violation] = []

    def report(position: tuple[int, int], message: str, where: Path = path) -> None:
        violations.append(Violation(Location(str(where), *position), SYNTAX, message))

    try:
        text = tomlpos.read_document(path)
        data, positions = tomlpos.parse(text)
    except OSError as error:
        report((1, 1), f"cannot read the release file ({error.strerror}), expected a TOML file")
        raise DeclarationError(violations) from None
    except tomlpos.InvalidToml as error:
        report((error.line, error.col), error.message)
        raise DeclarationError(violations) from None

    for key in data:
        if key not in KNOWN_KEYS:
            report(positions.key(key), unknown_key_message(key, KNOWN_KEYS))

    def string(key: str, expected: str, required: bool) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                report((1, 1), f"missing key {key!r}, expected {expected}")
            return None
        if not isinstance(value, str):
            report(positions.value(key), f"{key!r} is {type_name(value)}, expected {expected}")
            return None
        return value

    name = string("name", "a string naming the release line, such as 'example'", True)
    if name is not None and not _NAME.fullmatch(name):
        report(
            positions.value("name"),
            f"invalid name {name!r}, expected lowercase letters, digits, '.', '_' and '-', "
            "starting with a letter or digit",
        )

    declarations_dir = None
    declarations = string("declarations", "a path relative to this file", True)
    if declarations is not None:
        declarations_dir = path.parent / declarations
        if not declarations_dir.is_dir():
            report(
                positions.value("declarations"),
                f"declarations directory {declarations!r} not found, "
                "expected a directory relative to this file",
            )

    on_top_of = string("on-top-of", "a string: the CID of the previous release", False)
    if on_top_of is not None and not is_cid(on_top_of):
        report(
            positions.value("on-top-of"),
            f"on-top-of {on_top_of!r} is not a CID, expected the CID of the previous release",
        )

    supported, lines = _supported(path, data, positions, report)
    release_date = _date(data, positions, report, environ)
    keys = _keys(path, string("keys", "a path to a file of minisign public keys", False),
                 positions, report)

    if violations or name is None or declarations_dir is None:
        raise DeclarationError(violations)
    return ReleaseSpec(
        path=path,
        name=name,
        declarations_dir=declarations_dir,
        supported=supported,
        supported_lines=lines,
        on_top_of=on_top_of,
        date=release_date,
        text=text,
        keys=keys,
        locations=MappingProxyType(
            {key: Location(str(path), *positions.value(key)) for key in KNOWN_KEYS if key in data}
        ),
    )


def _supported(
    path: Path, data: dict[str, Any], positions: tomlpos.Positions, report: _Report
) -> tuple[tuple[Environment, ...], tuple[str, ...]]:
    """The supported environments, from an array or a file, each error at its line."""
    value = data.get("supported")
    # (text, where it is written, which file) for every line to parse.
    entries: list[tuple[str, tuple[int, int], Path]] = []
    if value is None:
        report((1, 1), f"missing key 'supported', expected {_SUPPORTED_EXPECTED}")
        return (), ()
    if isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, str):
                entries.append((item, positions.content("supported", index), path))
            else:
                report(
                    positions.element("supported", index),
                    f"'supported' item is {type_name(item)}, "
                    "expected a string '<interpreter> <platform>'",
                )
    elif isinstance(value, str):
        supported_path = path.parent / value
        try:
            content = tomlpos.read_document(supported_path).decode("utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "it is not UTF-8"
            report(
                positions.value("supported"),
                f"cannot read supported file {value!r} ({reason}), "
                "expected a file relative to this one with one '<interpreter> <platform>' a line",
            )
            return (), ()
        for number, raw in enumerate(content.splitlines(), start=1):
            text = raw.split("#", 1)[0]
            if text.strip():
                column = len(text) - len(text.lstrip()) + 1
                entries.append((text, (number, column), supported_path))
    else:
        report(
            positions.value("supported"),
            f"'supported' is {type_name(value)}, expected {_SUPPORTED_EXPECTED}",
        )
        return (), ()

    environments: dict[Environment, None] = {}
    for text, position, where in entries:
        try:
            environments.setdefault(parse_environment(text.strip()))
        except InvalidEnvironment as error:
            report(position, str(error), where)
    if not entries:
        report(
            positions.value("supported"),
            f"no supported environment, expected {_SUPPORTED_EXPECTED}",
        )
    chosen = tuple(environments)
    return chosen, tuple(environment.line for environment in chosen)


def _keys(
    path: Path, value: str | None, positions: tomlpos.Positions, report: _Report
) -> bytes | None:
    """The release line's public keys file (it goes into the DAG as ipwhl/keys), checked."""
    if value is None:
        return None
    from ipwhl.signing import InvalidKey, parse_public_keys

    try:
        keys = tomlpos.read_document(path.parent / value)
        parse_public_keys(keys.decode("utf-8"), value)
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "it is not UTF-8"
        report(positions.value("keys"), f"cannot read keys file {value!r} ({reason}), expected "
               "a file relative to this one holding minisign public keys")
        return None
    except InvalidKey as error:
        report(positions.value("keys"), f"{error}, expected minisign public keys")
        return None
    return keys


def _date(
    data: dict[str, Any], positions: tomlpos.Positions, report: _Report, environ: Mapping[str, str]
) -> str | None:
    """The release date as RFC 3339 UTC, from the file or SOURCE_DATE_EPOCH; never the clock."""
    expected = "expected a TOML date-time with an offset (2026-11-25T00:00:00Z) or a date"
    if "date" in data:
        value = data["date"]
        if isinstance(value, datetime):
            if value.tzinfo is None:
                report(
                    positions.value("date"), f"date {value.isoformat()} has no offset, {expected}"
                )
                return None
            return _format(value)
        if isinstance(value, date):
            return _format(datetime(value.year, value.month, value.day, tzinfo=UTC))
        unquoted = " (unquoted)" if isinstance(value, str) else ""
        report(positions.value("date"), f"'date' is {type_name(value)}, {expected}{unquoted}")
        return None
    epoch = environ.get("SOURCE_DATE_EPOCH")
    if epoch is None or epoch == "":
        return None
    try:
        seconds = int(epoch)
        return _format(datetime.fromtimestamp(seconds, tz=UTC))
    except (ValueError, OverflowError, OSError):
        report(
            (1, 1),
            f"SOURCE_DATE_EPOCH is {epoch!r}, expected whole seconds since 1970-01-01 UTC",
        )
        return None


def _format(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


class NotARelease(NotFound):
    """A DAG in the store is not a release ipwhl wrote: its ipwhl/ files are malformed."""

    hint = ("the CID names a DAG whose ipwhl/ files are not what ipwhl writes: check where the "
            "CID came from; whoever made it, ipwhl will not build on it or compare it")


# What ipwhl writes as a release's ipwhl/release.toml (index.release_toml): key -> expected type.
_INFO_KEYS: dict[str, tuple[bool, str]] = {
    "name": (True, "a string"),
    "sequence": (True, "a non-negative integer"),
    "previous": (False, "a CID as a string"),
    "date": (False, "a string"),
    "supported": (False, "an array of strings"),
}


def parse_release_info(chunks: Iterable[bytes], release: object) -> dict[str, Any]:
    """The `ipwhl/release.toml` of release `release` (its CID), from its bytes, checked.

    Raise NotARelease ("… is not an ipwhl release") when it is larger than a release file may be,
    not UTF-8 TOML, or a key ipwhl writes is missing or of the wrong type, naming line:column.
    Keys ipwhl does not write are left alone (a later version may add some).
    """
    where = f"{release} is not an ipwhl release: its ipwhl/release.toml"
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > tomlpos.MAX_DOCUMENT_SIZE:
            raise NotARelease(f"{where} is larger than {tomlpos.MAX_DOCUMENT_SIZE} bytes")
    try:
        info, positions = tomlpos.parse(bytes(data))
    except tomlpos.InvalidToml as error:
        raise NotARelease(f"{where} is not TOML ({error})") from None
    for key, (required, expected) in _INFO_KEYS.items():
        if key not in info:
            if required:
                raise NotARelease(f"{where} has no {key!r}, expected {expected}")
            continue
        found = _misfit(key, info[key])
        if found is not None:
            line, col = positions.value(key)
            raise NotARelease(f"{where}:{line}:{col}: {key!r} is {found}, expected {expected}")
    return info


def _misfit(key: str, value: object) -> str | None:
    """What is wrong with the value of a release.toml key, said as what it is; None if fine."""
    if key == "sequence":
        if isinstance(value, int) and not isinstance(value, bool):
            return None if value >= 0 else str(value)
    elif key == "supported":
        if isinstance(value, list):
            odd = next((item for item in value if not isinstance(item, str)), None)
            return None if odd is None else f"an array holding {type_name(odd)}"
    elif isinstance(value, str):
        return None if key != "previous" or is_cid(value) else f"{value!r}, not a CID"
    return type_name(value)
