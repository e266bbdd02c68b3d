"""A wheel file -> its file name parts, core metadata, tags and top-level names."""

from __future__ import annotations

import base64
import csv
import email.parser
import email.policy
import errno
import hashlib
import io
import lzma
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import packaging.utils
from packaging.tags import Tag, parse_tag
from packaging.version import InvalidVersion, Version

from .errors import IpwhlError

__all__ = [
    "MAX_METADATA_SIZE",
    "CoreMetadata",
    "InvalidWheel",
    "InvalidWheelFilename",
    "WheelFilename",
    "WheelInfo",
    "inspect_wheel",
    "parse_metadata",
    "parse_wheel_filename",
    "verify_record",
]

MAX_METADATA_SIZE = 16 * 1024 * 1024
# WHEEL and top_level.txt are a few lines; RECORD grows with the file count (large wheels
# list tens of thousands of files at ~100 bytes a line).
_MAX_SMALL_FILE = 1024 * 1024
_MAX_RECORD_SIZE = 64 * 1024 * 1024
_CHUNK = 1024 * 1024

_FILENAME_FORM = (
    "expected '{name}-{version}[-{build}]-{python}-{abi}-{platform}.whl', "
    "e.g. 'example-1.0-py3-none-any.whl'"
)
_MODULE_SUFFIXES = (".py", ".pyc", ".so", ".pyd")
_INSTALLED_DATA_DIRS = frozenset({"purelib", "platlib"})
# The wheel spec refuses md5 and sha1; shake_* need a length RECORD cannot carry.
_RECORD_ALGORITHMS = frozenset(
    name for name in hashlib.algorithms_guaranteed if not name.startswith("shake_")
) - {"md5", "sha1"}
_FOLD = re.compile(r"\r?\n(?=[ \t])")
# What zipfile raises for a malformed or unsupported archive: encrypted entries (RuntimeError),
# bad bz2 streams (OSError without errno), seeks before the start (EINVAL), unknown versions.
_ZIP_ERRORS = (
    zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, RuntimeError,
    ValueError, OSError,
)


def _malformed(exc: BaseException) -> bool:
    """Whether `exc`, raised while reading an archive, is the archive's fault (not the disk's)."""
    if isinstance(exc, OSError) and not isinstance(exc, zipfile.BadZipFile):
        return exc.errno in {None, errno.EINVAL}
    return True


class InvalidWheel(IpwhlError):
    """A wheel is malformed or unsafe; carries every problem found in it."""

    exit_code = 3

    def __init__(self, wheel: str, problems: Sequence[str]) -> None:
        self.wheel = wheel
        self.problems = tuple(problems)
        super().__init__(wheel, self.problems)

    def __str__(self) -> str:
        return "\n".join(f"{self.wheel}: {problem}" for problem in self.problems)


class InvalidWheelFilename(InvalidWheel, ValueError):
    """A file name is not a wheel file name (PEP 427)."""


@dataclass(frozen=True)
class CoreMetadata:
    """The fields of a METADATA file that releases declare, as written (unfolded, stripped)."""

    name: str
    version: str
    requires_python: str | None
    requires_dist: tuple[str, ...]
    provides_extra: tuple[str, ...]


@dataclass(frozen=True)
class WheelFilename:
    """The parts of a wheel file name; `name` as written, `project` PEP 503 normalized."""

    filename: str
    name: str
    project: str
    version: Version
    build: tuple[()] | tuple[int, str]
    tags: frozenset[Tag]


@dataclass(frozen=True)
class WheelInfo:
    """What ipwhl needs to know of one wheel file."""

    filename: WheelFilename
    dist_info: str
    metadata_bytes: bytes = field(repr=False)
    metadata: CoreMetadata
    wheel_tags: frozenset[Tag]
    root_is_purelib: bool
    top_level: tuple[str, ...]


def parse_wheel_filename(filename: str) -> WheelFilename:
    """Split a wheel file name into its parts; raise InvalidWheelFilename if it is not one."""
    if "/" in filename or "\\" in filename:
        raise InvalidWheelFilename(filename, [f"a file name has no directories; {_FILENAME_FORM}"])
    if not (filename.isascii() and filename.isprintable()):
        # Surrogates (file names that are not UTF-8) and controls have no place in a URL or
        # a page; PEP 427 names are ASCII.
        raise InvalidWheelFilename(
            filename, [f"a wheel file name is printable ASCII; {_FILENAME_FORM}"]
        )
    try:
        project, version, build, tags = packaging.utils.parse_wheel_filename(filename)
    except ValueError as exc:
        raise InvalidWheelFilename(
            filename, [f"not a wheel file name ({exc}); {_FILENAME_FORM}"]
        ) from exc
    return WheelFilename(
        filename=filename,
        name=filename.split("-", 1)[0],
        project=str(project),
        version=version,
        build=build,
        tags=tags,
    )


def _unfold(value: str) -> str:
    return _FOLD.sub("", str(value)).strip()


def parse_metadata(data: bytes, source: str = "METADATA") -> CoreMetadata:
    """Read the core metadata fields of a METADATA file (versions 1.0 to 2.x).

    Raise InvalidWheel, naming `source`, if the bytes are not UTF-8, Name or Version is
    missing, or a single-use field is repeated.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidWheel(
            source,
            [
                f"not UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}); "
                "core metadata must be UTF-8 encoded"
            ],
        ) from exc
    message = email.parser.Parser(policy=email.policy.compat32).parsestr(
        text.removeprefix("\ufeff"), headersonly=True
    )
    problems: list[str] = []

    def single(name: str, *, required: bool) -> str | None:
        values = [_unfold(value) for value in message.get_all(name) or ()]
        if len(values) > 1:
            problems.append(f"{len(values)} {name} fields where at most one is allowed")
        if not values or not values[0]:
            if required:
                problems.append(f"no {name} field; it is required")
            return None
        return values[0]

    def multiple(name: str) -> tuple[str, ...]:
        values = (_unfold(value) for value in message.get_all(name) or ())
        return tuple(value for value in values if value)

    name = single("Name", required=True)
    version = single("Version", required=True)
    requires_python = single("Requires-Python", required=False)
    if problems or name is None or version is None:
        raise InvalidWheel(source, problems)
    return CoreMetadata(
        name=name,
        version=version,
        requires_python=requires_python,
        requires_dist=multiple("Requires-Dist"),
        provides_extra=multiple("Provides-Extra"),
    )


def _entry_problems(names: Sequence[str]) -> list[str]:
    problems = [
        f"{name!r} appears {count} times in the archive"
        for name, count in Counter(names).items()
        if count > 1
    ]
    for name in dict.fromkeys(names):
        if not name:
            problems.append("an entry has an empty name")
        elif name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
            problems.append(f"{name!r} is an absolute path; entries must be relative")
        elif ".." in re.split(r"[/\\]", name):
            problems.append(f"{name!r} has a '..' component; entries must stay inside the wheel")
    return problems


def _find_dist_info(names: Sequence[str], expected: str) -> tuple[str | None, str | None]:
    """The one root .dist-info directory, or a problem saying why there is not exactly one."""
    roots = {name.split("/", 1)[0] for name in names if "/" in name}
    found = sorted(root for root in roots if root.endswith(".dist-info"))
    if len(found) == 1:
        return found[0], None
    if not found:
        return None, f"no .dist-info directory at the root; expected {expected}"
    return (
        None,
        f"{len(found)} .dist-info directories ({', '.join(found)}); expected only {expected}",
    )


def _expected_dist_info(wheel: WheelFilename) -> str:
    return f"{wheel.name}-{wheel.filename.split('-')[1]}.dist-info"


def _dist_info_matches(dist_info: str, wheel: WheelFilename) -> bool:
    name, _, version = dist_info.removesuffix(".dist-info").rpartition("-")
    try:
        return (
            packaging.utils.canonicalize_name(name) == wheel.project
            and Version(version) == wheel.version
        )
    except InvalidVersion:
        return False


def _read_member(
    archive: zipfile.ZipFile, name: str, limit: int, problems: list[str], *, required: bool = True
) -> bytes | None:
    """Read one entry, never more than `limit` bytes; note a problem and return None if not."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        if required:
            problems.append(f"{name} is missing")
        return None
    if info.file_size > limit:
        problems.append(f"{name} is {info.file_size} bytes, more than the {limit} allowed")
        return None
    try:
        with archive.open(info) as member:
            data = member.read(limit + 1)
    except _ZIP_ERRORS as exc:
        if not _malformed(exc):
            raise
        problems.append(f"{name} cannot be read: {exc}")
        return None
    if len(data) > limit:
        problems.append(f"{name} is more than the {limit} bytes allowed")
        return None
    return data


def _parse_wheel_file(data: bytes, name: str, problems: list[str]) -> tuple[frozenset[Tag], bool]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        problems.append(f"{name} is not UTF-8")
        return frozenset(), False
    message = email.parser.Parser(policy=email.policy.compat32).parsestr(text, headersonly=True)
    wheel_version = _unfold(message.get("Wheel-Version") or "")
    if not wheel_version:
        problems.append(f"{name} has no Wheel-Version; expected 'Wheel-Version: 1.0'")
    elif wheel_version.split(".")[0] != "1":
        problems.append(f"{name}: Wheel-Version {wheel_version} is not supported; expected 1.x")
    tags: set[Tag] = set()
    for value in message.get_all("Tag") or ():
        try:
            tags.update(parse_tag(_unfold(value)))
        except ValueError as exc:
            problems.append(f"{name}: invalid Tag {_unfold(value)!r} ({exc})")
    purelib = _unfold(message.get("Root-Is-Purelib") or "").lower() == "true"
    return frozenset(tags), purelib


def _top_level_from_names(names: Sequence[str]) -> tuple[str, ...]:
    """Packages and modules an installer puts into site-packages, read from entry paths."""
    found = set()
    for name in names:
        parts = name.split("/")
        if parts[0].endswith(".dist-info"):
            continue
        if parts[0].endswith(".data"):
            if len(parts) < 3 or parts[1] not in _INSTALLED_DATA_DIRS:
                continue
            parts = parts[2:]
        if len(parts) > 1:
            candidate = parts[0]
        elif parts[0].endswith(_MODULE_SUFFIXES):
            candidate = parts[0].split(".", 1)[0]
        else:
            continue
        # Not importable: auditwheel's "numpy.libs", stray data files.
        if candidate.isidentifier():
            found.add(candidate)
    return tuple(sorted(found))


def _top_level_from_file(data: bytes, name: str, problems: list[str]) -> tuple[str, ...]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        problems.append(f"{name} is not UTF-8")
        return ()
    # setuptools lists extension modules by path ("pkg/_ext"); only the first part is top-level.
    names = {line.strip().split("/", 1)[0] for line in text.splitlines()}
    return tuple(sorted(names - {""}))


def inspect_wheel(path: Path, filename: str | None = None) -> WheelInfo:
    """Read a wheel's METADATA, WHEEL tags and top-level names, checking that it is safe.

    `filename` is the wheel's file name when `path` is not named after it (a store object).
    Every problem found is raised at once as one InvalidWheel.
    """
    wheel = parse_wheel_filename(path.name if filename is None else filename)
    try:
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS as exc:
        if not _malformed(exc):
            raise
        raise InvalidWheel(wheel.filename, [f"not a zip archive ({exc})"]) from exc
    with archive:
        return _inspect(archive, wheel)


def _inspect(archive: zipfile.ZipFile, wheel: WheelFilename) -> WheelInfo:
    names = archive.namelist()
    problems = _entry_problems(names)
    dist_info, problem = _find_dist_info(names, _expected_dist_info(wheel))
    if dist_info is None:
        raise InvalidWheel(wheel.filename, [*problems, problem])
    if not _dist_info_matches(dist_info, wheel):
        problems.append(
            f"{dist_info} does not match the file name; expected {_expected_dist_info(wheel)}"
        )

    metadata_name = f"{dist_info}/METADATA"
    metadata_bytes = _read_member(archive, metadata_name, MAX_METADATA_SIZE, problems)
    metadata = None
    if metadata_bytes is not None:
        try:
            metadata = parse_metadata(metadata_bytes, metadata_name)
        except InvalidWheel as exc:
            problems.extend(f"{metadata_name}: {problem}" for problem in exc.problems)

    wheel_tags: frozenset[Tag] = frozenset()
    root_is_purelib = False
    wheel_file = f"{dist_info}/WHEEL"
    wheel_bytes = _read_member(archive, wheel_file, _MAX_SMALL_FILE, problems)
    if wheel_bytes is not None:
        wheel_tags, root_is_purelib = _parse_wheel_file(wheel_bytes, wheel_file, problems)

    top_level_name = f"{dist_info}/top_level.txt"
    top_level_bytes = _read_member(
        archive, top_level_name, _MAX_SMALL_FILE, problems, required=False
    )
    top_level: tuple[str, ...] = ()
    if top_level_bytes is not None:
        top_level = _top_level_from_file(top_level_bytes, top_level_name, problems)
    # An empty top_level.txt (setuptools with only data or scripts) says nothing either.
    if not top_level:
        top_level = _top_level_from_names(names)

    if problems or metadata is None or metadata_bytes is None:
        raise InvalidWheel(wheel.filename, problems)
    return WheelInfo(
        filename=wheel,
        dist_info=dist_info,
        metadata_bytes=metadata_bytes,
        metadata=metadata,
        wheel_tags=wheel_tags,
        root_is_purelib=root_is_purelib,
        top_level=top_level,
    )


def _record_digest(archive: zipfile.ZipFile, info: zipfile.ZipInfo, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with archive.open(info) as member:
        while chunk := member.read(_CHUNK):
            digest.update(chunk)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")


def verify_record(path: Path) -> list[str]:
    """Every way the wheel's RECORD disagrees with its entries (hash, size, listing); [] if none."""
    try:
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS as exc:
        if not _malformed(exc):
            raise
        return [f"not a zip archive ({exc})"]
    with archive:
        return _verify_record(archive)


def _verify_record(archive: zipfile.ZipFile) -> list[str]:
    names = archive.namelist()
    dist_info, problem = _find_dist_info(names, "one '<name>-<version>.dist-info'")
    if dist_info is None:
        return [problem or ""]
    problems: list[str] = []
    record_name = f"{dist_info}/RECORD"
    data = _read_member(archive, record_name, _MAX_RECORD_SIZE, problems)
    if data is None:
        return problems
    try:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error) as exc:
        return [f"{record_name} cannot be parsed: {exc}"]

    unhashed = {record_name, f"{record_name}.jws", f"{record_name}.p7s"}
    recorded: dict[str, tuple[str, str]] = {}
    for number, row in enumerate(rows, start=1):
        if not row:
            continue
        if len(row) != 3:
            problems.append(f"{record_name} line {number}: expected 'path,hash,size', got {row!r}")
            continue
        entry, hash_value, size = row
        if entry in recorded:
            problems.append(f"{record_name} lists {entry!r} more than once")
        recorded[entry] = (hash_value, size)

    # An empty name is no directory (ZipInfo.is_dir would fail on it); it is simply unlisted.
    infos = {
        info.filename: info for info in archive.infolist() if not info.filename.endswith("/")
    }
    for entry in infos.keys() - recorded.keys() - unhashed:
        problems.append(f"{entry!r} is in the archive but not in {record_name}")
    for entry in recorded.keys() - infos.keys():
        problems.append(f"{record_name} lists {entry!r}, which is not in the archive")
    for entry in sorted(recorded.keys() & infos.keys()):
        hash_value, size = recorded[entry]
        info = infos[entry]
        if not hash_value:
            if entry not in unhashed:
                problems.append(f"{record_name} has no hash for {entry!r}")
            continue
        algorithm, _, expected = hash_value.partition("=")
        if algorithm not in _RECORD_ALGORITHMS:
            problems.append(
                f"{record_name}: {entry!r} is hashed with {algorithm!r}; "
                "expected sha256 or stronger"
            )
            continue
        if size and size != str(info.file_size):
            problems.append(
                f"{record_name} says {entry!r} is {size} bytes; it is {info.file_size} bytes"
            )
        try:
            actual = _record_digest(archive, info, algorithm)
        except _ZIP_ERRORS as exc:
            if not _malformed(exc):
                raise
            problems.append(f"{entry!r} cannot be read: {exc}")
            continue
        if actual != expected:
            problems.append(
                f"{entry!r} does not match {record_name}: {algorithm}={actual}, "
                f"recorded {hash_value}"
            )
    return sorted(problems)
