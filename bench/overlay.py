"""Overlay benchmark: one upgraded project on top of a previous release, against a cold build.

    python bench/overlay.py [--sizes 1000 10000 100000] [--wheels DIR ...] [--limit 300]
                            [--profile 10000] [--out bench/out/overlay]

For a release of real wheels and for generated releases of tiny projects it times, each as its own
`python -m ipwhl … -q` process: start-up (`ipwhl --version`), a cold build, and builds on top of it
of declarations with one project's version bumped (a new wheel), a different project each time.
Issue 4's targets: an overlay costs at most 2% of a cold build beyond start-up, and its time grows
no more than logarithmically with the number of projects. With --profile N it runs one more
overlay of the N-project release under cProfile and prints the top 15 functions by cumulative
and by own time. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import tomli
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench import genrelease  # noqa: E402
from bench.run import DEFAULT_WHEELS, ipwhl, startup  # noqa: E402
from ipwhl.unixfs import file_cid  # noqa: E402
from tests.wheelfactory import build_wheel  # noqa: E402

VARIANTS = 3  # overlays timed per release, each bumping a different project


def _declarations(release: Path) -> dict[str, list[tuple[Path, dict]]]:
    by_project: dict[str, list[tuple[Path, dict]]] = {}
    for path in sorted((release.parent / "pkgs").glob("*/*.toml")):
        by_project.setdefault(path.parent.name, []).append((path, tomli.loads(path.read_text())))
    return by_project


def _version(path: Path) -> Version:
    return Version(path.stem.split("-")[1])


def pick_projects(release: Path, count: int) -> list[str]:
    """Projects whose version can be bumped without breaking a dependent; those with the most
    dependents first, so that an overlay also rechecks some closures."""
    declarations = _declarations(release)
    needed_by: dict[str, list[Requirement]] = {}
    for entries in declarations.values():
        for _path, fields in entries:
            for text in fields.get("dependencies", []):
                requirement = Requirement(text)
                needed_by.setdefault(canonicalize_name(requirement.name), []).append(requirement)
    fits = []
    for project, entries in declarations.items():
        bumped = _bumped(_version(entries[0][0]))
        requirements = needed_by.get(project, [])
        if all(r.specifier.contains(bumped, prereleases=True) for r in requirements):
            fits.append((-len(requirements), project))
    return [project for _, project in sorted(fits)[:count]]


def _bumped(version: Version) -> Version:
    return Version(f"{version.base_version}.post{(version.post or 0) + 1}")


def bump(release: Path, project: str, out: Path) -> Path:
    """A copy of `release` with `project` at a higher version: one new pure wheel, same fields."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(release.parent / "pkgs", out / "pkgs", symlinks=True)
    shutil.copy2(release, out / "release.toml")
    (path, fields), *_ = _declarations(release)[project]
    _replace(out / "pkgs" / project, project, path, fields, out / "wheels")
    return out / "release.toml"


def bump_in_place(release: Path, project: str, wheels: Path) -> Callable[[], None]:
    """Upgrade `project` in `release` itself, as a curator edits one declaration; returns the
    function that puts the old declarations back."""
    entries = _declarations(release)[project]
    folder = entries[0][0].parent
    saved = {path: path.read_bytes() for path, _ in entries}
    new = _replace(folder, project, entries[0][0], entries[0][1], wheels)

    def undo() -> None:
        new.unlink()
        for path, data in saved.items():
            path.write_bytes(data)

    return undo


def _replace(folder: Path, project: str, path: Path, fields: dict, wheels: Path) -> Path:
    # Every declaration of the project goes; one new pure wheel, one version up, comes instead.
    for old in folder.glob("*.toml"):
        old.unlink()
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = build_wheel(
        wheels, project, str(_bumped(_version(path))),
        requires_python=fields.get("requires-python"),
        requires_dist=fields.get("dependencies", []),
        provides_extra=fields.get("extras", []),
    )
    new = folder / (wheel.name[: -len(".whl")] + ".toml")
    new.write_text(genrelease._declaration(
        wheel.resolve().as_uri(), str(file_cid(wheel.read_bytes())),
        fields.get("requires-python"), fields.get("extras", []), fields.get("dependencies", []),
    ))
    return new


def profile(release: Path, on_top_of: str, store: Path, out: Path) -> None:
    """Run one overlay under cProfile; print its top 15 functions by cumulative and own time."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "ipwhl", "build", str(release),
         "--on-top-of", on_top_of, "--store", str(store), "-q"],
        env=env, check=True, capture_output=True,
    )
    stats = pstats.Stats(str(out)).strip_dirs()
    stats.sort_stats("cumulative").print_stats(15)
    stats.sort_stats("tottime").print_stats(15)


def measure(label: str, release: Path, out: Path, start: float,
            profile_it: bool = False) -> float:
    """Cold build, then VARIANTS overlays; print them; return the median overlay time."""
    store = out / "store"
    shutil.rmtree(store, ignore_errors=True)
    cold, done = ipwhl("build", str(release), store=store)
    root = done.stdout.strip()
    projects = pick_projects(release, VARIANTS + 1)
    overlays = []
    for index, project in enumerate(projects[:VARIANTS]):
        bumped = bump(release, project, out / f"bump{index}")
        elapsed, done = ipwhl("build", str(bumped), "--on-top-of", root, store=store)
        overlays.append(elapsed)
    median = statistics.median(overlays)
    share = (median - start) / (cold - start) * 100
    print(f"  {label}")
    print(f"    cold build                       {cold:9.3f} s")
    print(f"    overlay, one project upgraded    {median:9.3f} s  (median of "
          f"{len(overlays)}: {', '.join(f'{t:.3f}' for t in overlays)}; bumped "
          f"{', '.join(projects[:VARIANTS])})")
    print(f"    overlay beyond start-up          {share:8.2f} % of the cold build beyond "
          f"start-up  (target <= 2%)", flush=True)
    if profile_it and len(projects) > VARIANTS:
        bumped = bump(release, projects[VARIANTS], out / "bump-profiled")
        print(f"    cProfile of one more overlay ({projects[VARIANTS]} bumped), "
              "top 15 by cumulative time, then by own time:", flush=True)
        profile(bumped, root, store, out / "overlay.prof")
    return median


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 100000])
    parser.add_argument("--wheels", type=Path, nargs="*", default=DEFAULT_WHEELS)
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--profile", type=int, default=10000,
                        help="profile an overlay of the release of this size (0: none)")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "overlay")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    start = startup()
    print(f"start-up (ipwhl --version, best of 5): {start:.3f} s", flush=True)

    wheel_dirs = [d for d in args.wheels if d.is_dir()]
    if wheel_dirs:
        began = time.perf_counter()
        release, count, nbytes = genrelease.from_wheels(wheel_dirs, out / "real", args.limit)
        print(f"real wheels: {count} wheels, {nbytes / 1e6:,.0f} MB "
              f"(generated in {time.perf_counter() - began:.0f} s)", flush=True)
        measure(f"{count} real wheels", release, out / "real-run", start)
    else:
        print("no wheel folders found; skipping real wheels (pass --wheels DIR)")

    medians: dict[int, float] = {}
    for size in args.sizes:
        began = time.perf_counter()
        release = genrelease.tiny(out / f"tiny{size}", size, wheels_dir=out / f"tiny{size}-wheels")
        print(f"{size} tiny projects (generated in {time.perf_counter() - began:.0f} s)",
              flush=True)
        medians[size] = measure(f"{size} tiny projects", release, out / f"tiny{size}-run", start,
                                profile_it=size == args.profile)

    if len(medians) > 1:
        print("overlay time beyond start-up by release size (target: logarithmic growth)")
        sizes = sorted(medians)
        for size in sizes:
            print(f"  {size:>7} projects  {medians[size] - start:8.3f} s")
        for small, large in itertools.pairwise(sizes):
            grow = (medians[large] - start) / (medians[small] - start)
            print(f"  x{large / small:g} projects -> x{grow:.2f} time "
                  f"(log growth would be about x{math.log(large) / math.log(small):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
