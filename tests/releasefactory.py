"""Build real releases for tests: wheels, declarations and a release file on disk.

    from tests.releasefactory import Project, write_release
    release = write_release(tmp_path, [Project("a", "1.0", requires_dist=["b>=1"]),
                                       Project("b", "1.0")])
    # release.path is tmp_path/"release.toml"; release.wheels maps file names to wheel paths

Declarations point at the wheels by relative path (or by `base_url` + file name, to fetch them
over HTTP), with content-ids computed by ipwhl's own UnixFS encoder (checked against the oracle in
test_unixfs).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ipwhl.unixfs import file_cid
from tests.wheelfactory import build_wheel

__all__ = ["DEFAULT_SUPPORTED", "Project", "Release", "declaration_text", "write_release"]

DEFAULT_SUPPORTED = ("cp311 manylinux_2_17_x86_64", "cp312 win_amd64")


@dataclass(frozen=True)
class Project:
    """A project to put in a test release: one wheel per tag."""

    name: str
    version: str
    tags: Sequence[str] = ("py3-none-any",)
    requires_python: str | None = None
    requires_dist: Sequence[str] = ()
    provides_extra: Sequence[str] = ()
    modules: dict[str, str] | None = None


@dataclass
class Release:
    """A release written to disk."""

    path: Path
    declarations: Path
    wheels: dict[str, Path] = field(default_factory=dict)
    declaration_files: dict[str, Path] = field(default_factory=dict)


def _toml_string(value: str) -> str:
    return "'" + value + "'" if "'" not in value else '"' + value.replace('"', '\\"') + '"'


def declaration_text(
    source: str,
    content_id: str,
    requires_python: str | None,
    extras: Sequence[str],
    dependencies: Sequence[str],
) -> str:
    """A declaration in SPEC §1's formatting."""
    lines = [f"source = {_toml_string(source)}", f"content-id = {_toml_string(content_id)}"]
    if requires_python is not None:
        lines.append(f"requires-python = {_toml_string(requires_python)}")
    lines.append("extras = [" + ", ".join(_toml_string(e) for e in extras) + "]")
    if dependencies:
        lines.append("dependencies = [")
        lines += [f"\t{_toml_string(d)}," for d in dependencies]
        lines.append("]")
    else:
        lines.append("dependencies = []")
    return "\n".join(lines) + "\n"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def write_release(
    directory: Path,
    projects: Sequence[Project],
    *,
    name: str = "test",
    supported: Sequence[str] = DEFAULT_SUPPORTED,
    base_url: str | None = None,
    extra_release_lines: Sequence[str] = (),
) -> Release:
    """Build the projects' wheels into directory/wheels and declare them in directory/pkgs."""
    wheel_dir = directory / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    pkgs = directory / "pkgs"
    release_path = directory / "release.toml"
    release = Release(release_path, pkgs)
    for project in projects:
        for tag in project.tags:
            wheel = build_wheel(
                wheel_dir,
                project.name,
                project.version,
                tag=tag,
                requires_python=project.requires_python,
                requires_dist=project.requires_dist,
                provides_extra=project.provides_extra,
                modules=project.modules,
            )
            release.wheels[wheel.name] = wheel
            declaration = pkgs / _normalize(project.name) / (wheel.name[: -len(".whl")] + ".toml")
            declaration.parent.mkdir(parents=True, exist_ok=True)
            source = f"{base_url}/{wheel.name}" if base_url else f"../../wheels/{wheel.name}"
            declaration.write_text(
                declaration_text(
                    source,
                    str(file_cid(wheel.read_bytes())),
                    project.requires_python,
                    project.provides_extra,
                    project.requires_dist,
                )
            )
            release.declaration_files[wheel.name] = declaration
    lines = [
        f"name = {_toml_string(name)}",
        'declarations = "pkgs"',
        "supported = [" + ", ".join(_toml_string(s) for s in supported) + "]",
        "date = 2026-11-25T00:00:00Z",
        *extra_release_lines,
    ]
    release_path.write_text("\n".join(lines) + "\n")
    return release
