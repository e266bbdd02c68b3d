"""Generate benchmark releases: from a folder of real wheels, or of N tiny generated projects."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

from ipwhl.declarations import load_declarations
from ipwhl.environments import parse_environment
from ipwhl.errors import DeclarationError
from ipwhl.evaluator import plan_release
from ipwhl.releasefile import load_release
from ipwhl.unixfs import file_cid
from ipwhl.wheels import InvalidWheel, inspect_wheel

SUPPORTED = "cp311 manylinux_2_17_x86_64"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _declaration(source: str, cid: str, rp: str | None, extras, deps) -> str:
    lines = [f"source = {_quote(source)}", f"content-id = {_quote(cid)}"]
    if rp is not None:
        lines.append(f"requires-python = {_quote(rp)}")
    lines.append("extras = [" + ", ".join(_quote(e) for e in extras) + "]")
    lines.append("dependencies = [" + "".join(f"\n\t{_quote(d)}," for d in deps) + "\n]")
    return "\n".join(lines) + "\n"


def _write_release(out: Path, name: str) -> Path:
    release = out / "release.toml"
    release.write_text(
        f'name = "{name}"\ndeclarations = "pkgs"\nsupported = ["{SUPPORTED}"]\n'
        "date = 2026-11-25T00:00:00Z\n"
    )
    return release


def from_wheels(folders: list[Path], out: Path, limit: int) -> tuple[Path, int, int]:
    """A closed release of real wheels installable on SUPPORTED: (path, wheels, bytes)."""
    environment = parse_environment(SUPPORTED)
    newest: dict[str, tuple] = {}
    for folder in folders:
        for wheel in sorted(folder.glob("*.whl")):
            try:
                name, version, _build, tags = parse_wheel_filename(wheel.name)
            except ValueError:
                continue
            if not environment.accepts(tags):
                continue
            if name not in newest or newest[name][0] < version:
                newest[name] = (version, wheel)
    pkgs = out / "pkgs"
    shutil.rmtree(out, ignore_errors=True)
    pkgs.mkdir(parents=True)
    written: dict[str, Path] = {}
    for project, (_version, wheel) in sorted(newest.items()):
        try:
            info = inspect_wheel(wheel)
        except InvalidWheel:
            continue
        meta = info.metadata
        declaration = pkgs / canonicalize_name(project) / (wheel.name[:-4] + ".toml")
        declaration.parent.mkdir(parents=True, exist_ok=True)
        cid = str(file_cid(wheel.read_bytes()))
        declaration.write_text(_declaration(
            wheel.resolve().as_uri(), cid, meta.requires_python, meta.provides_extra,
            meta.requires_dist,
        ))
        written[canonicalize_name(project)] = declaration
    release = _write_release(out, "bench")
    _close(release, written)
    keep = sorted(written)[:limit] if len(written) > limit else sorted(written)
    for project in set(written) - set(keep):
        shutil.rmtree(pkgs / project)
        written.pop(project)
    _close(release, written)  # the cut may have taken a dependency away
    keep = sorted(written)
    total = 0
    for project in keep:
        for declaration in (pkgs / project).glob("*.toml"):
            source = declaration.read_text().split('"')[1]
            total += Path(source.removeprefix("file://")).stat().st_size
    return release, len(keep), total


def _close(release: Path, written: dict[str, Path]) -> None:
    """Drop what is not closed (missing dependencies, extras' needs) until all that is left is."""
    pkgs = release.parent / "pkgs"
    while True:
        try:
            spec = load_release(release)
            plan = plan_release(spec, load_declarations(spec.declarations_dir))
        except DeclarationError as error:
            bad = {Path(v.location.path).parent.name for v in error.violations}
        else:
            bad = {p.project for p in plan.projects if plan.declared_findings(p)}
        if not bad:
            return
        for project in bad:
            shutil.rmtree(pkgs / project, ignore_errors=True)
            written.pop(project, None)


def tiny(out: Path, count: int, wheels_dir: Path | None = None) -> Path:
    """A release of `count` tiny projects, each depending on up to two earlier ones."""
    shutil.rmtree(out, ignore_errors=True)
    pkgs = out / "pkgs"
    pkgs.mkdir(parents=True)
    if wheels_dir is not None:
        wheels_dir.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        project = f"p{i:06d}"
        deps = [f"p{j:06d}>=1.0" for j in (i // 2, i // 3) if j < i]
        filename = f"{project}-1.0-py3-none-any"
        if wheels_dir is not None:
            from tests.wheelfactory import build_wheel

            wheel = build_wheel(wheels_dir, project, "1.0", requires_dist=deps)
            source, cid = wheel.resolve().as_uri(), str(file_cid(wheel.read_bytes()))
        else:
            source, cid = f"https://example.invalid/{filename}.whl", str(file_cid(project.encode()))
        folder = pkgs / project
        folder.mkdir()
        (folder / f"{filename}.toml").write_text(_declaration(source, cid, None, [], deps))
    return _write_release(out, f"tiny{count}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--wheels", type=Path, nargs="*", default=[])
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--tiny", type=int)
    args = parser.parse_args(argv)
    if args.tiny:
        print(tiny(args.out, args.tiny))
    else:
        release, count, nbytes = from_wheels(args.wheels, args.out, args.limit)
        print(f"{release} {count} wheels {nbytes} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
