"""Build real, valid wheel files offline for tests, and broken ones on request.

    from tests.wheelfactory import build_wheel
    path = build_wheel(tmp_path, "example", "1.0", requires_dist=["attrs>=20"])

The same arguments give the same bytes: entries are written in a fixed order with a fixed
timestamp and mode, so CIDs and hashes of built wheels are stable across runs and machines.
"""

from __future__ import annotations

import base64
import hashlib
import re
import warnings
import zipfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from packaging.tags import parse_tag

__all__ = ["build_wheel", "record_hash"]

_EPOCH = (1980, 1, 1, 0, 0, 0)


def record_hash(data: bytes) -> str:
    """The RECORD hash field of `data`: sha256=<urlsafe base64, no padding>."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode('ascii')}"


def _escape(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name)


def _metadata(
    name: str,
    version: str,
    requires_python: str | None,
    requires_dist: Sequence[str],
    provides_extra: Sequence[str],
) -> bytes:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python is not None:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"Provides-Extra: {extra}" for extra in provides_extra]
    lines += [f"Requires-Dist: {requirement}" for requirement in requires_dist]
    return ("\n".join(lines) + "\n\n" + f"{name} {version}, built by tests.\n").encode()


def _wheel_file(tag: str) -> bytes:
    purelib = all(t.platform == "any" for t in parse_tag(tag))
    lines = [
        "Wheel-Version: 1.0",
        "Generator: tests.wheelfactory",
        f"Root-Is-Purelib: {'true' if purelib else 'false'}",
    ]
    lines += [f"Tag: {t}" for t in sorted(str(t) for t in parse_tag(tag))]
    return ("\n".join(lines) + "\n").encode()


def _write(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def build_wheel(
    directory: Path,
    name: str,
    version: str,
    *,
    tag: str = "py3-none-any",
    requires_python: str | None = None,
    requires_dist: Sequence[str] = (),
    provides_extra: Sequence[str] = (),
    modules: Mapping[str, str] | None = None,
    top_level: Sequence[str] | None = None,
    metadata: bytes | None = None,
    dist_info: str | None = None,
    omit: Collection[str] = (),
    wrong_hashes: Collection[str] = (),
    extra_entries: Sequence[tuple[str, bytes]] = (),
) -> Path:
    """Write `<name>-<version>-<tag>.whl` into `directory` and return its path.

    modules: archive path -> text, e.g. {"example/__init__.py": ""} (the default, from `name`).
    top_level: lines of a top_level.txt to include (none by default, as modern backends do).
    To break the wheel on purpose:
    metadata: the exact METADATA bytes instead of the ones generated from the fields;
    dist_info: the .dist-info directory's name instead of `<name>-<version>.dist-info`;
    omit: dist-info files to leave out ("METADATA", "WHEEL", "RECORD");
    wrong_hashes: archive paths whose RECORD line gets the hash of other bytes;
    extra_entries: (archive path, bytes) written after RECORD and not listed in it, in order
    (repeats, absolute paths and '..' are written as given).
    """
    escaped = _escape(name)
    if modules is None:
        modules = {f"{escaped.lower()}/__init__.py": f'"""{name}."""\n'}
    dist_info = dist_info or f"{escaped}-{version}.dist-info"
    files: list[tuple[str, bytes]] = [(path, text.encode()) for path, text in modules.items()]
    generated = {
        "METADATA": metadata
        if metadata is not None
        else _metadata(name, version, requires_python, requires_dist, provides_extra),
        "WHEEL": _wheel_file(tag),
    }
    if top_level is not None:
        generated["top_level.txt"] = "".join(f"{line}\n" for line in top_level).encode()
    files += [(f"{dist_info}/{base}", data) for base, data in generated.items() if base not in omit]

    record_lines = [
        f"{path},{record_hash(b'not these bytes' if path in wrong_hashes else data)},{len(data)}"
        for path, data in files
    ]
    record_name = f"{dist_info}/RECORD"
    record_lines.append(f"{record_name},,")
    if "RECORD" not in omit:
        files.append((record_name, ("\n".join(record_lines) + "\n").encode()))

    wheel_path = Path(directory) / f"{escaped}-{version}-{tag}.whl"
    with zipfile.ZipFile(wheel_path, "w") as archive:
        for path, data in files:
            _write(archive, path, data)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Duplicate name", UserWarning)
            for path, data in extra_entries:
                _write(archive, path, data)
    return wheel_path
