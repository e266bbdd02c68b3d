"""Benchmark gc and verify on a store holding ten releases of a few hundred real wheels.

    python bench/gc.py [--wheels DIR ...] [--limit 400] [--releases 10] [--out bench/out/gc]

Ten releases are random closed subsets (about 85%) of one closed release made from the wheels
(bench/genrelease.py), built into one store. Figures, each beside its floor:
- store size against the sum of distinct wheel bytes (the overhead should stay under 5%);
- gc with everything rooted and after dropping half the roots: its time and the bytes it read,
  against a plain walk of the store (list every file; and list + read every byte);
- store verify: bytes hashed per second against the hash floor (read + sha256, one core).
Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench import genrelease  # noqa: E402
from ipwhl.build import build_release, load_plan  # noqa: E402
from ipwhl.declarations import load_declarations  # noqa: E402
from ipwhl.errors import DeclarationError, NotFound  # noqa: E402
from ipwhl.evaluator import plan_release  # noqa: E402
from ipwhl.gc import GcReport, collect_garbage, format_bytes, unpin  # noqa: E402
from ipwhl.releasefile import load_release  # noqa: E402
from ipwhl.store import Store  # noqa: E402
from ipwhl.verify import verify_store  # noqa: E402

DEFAULT_WHEELS = [Path("/opt/pypi/files"), Path("/opt/pypi-more/files")]
STORE_FOLDERS = ("objects", "layouts", "blocks", "records", "sources", "roots")


def _close(release: Path) -> None:
    """Drop projects whose dependencies are not all in the release until none is left."""
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


def make_releases(full: Path, out: Path, count: int, seed: int) -> list[Path]:
    """`count` closed random subsets of the release `full`, named r0, r1, …"""
    projects = sorted(p.name for p in (full.parent / "pkgs").iterdir())
    rng = random.Random(seed)
    releases = []
    for index in range(count):
        folder = out / f"r{index}"
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "pkgs").mkdir(parents=True)
        for project in rng.sample(projects, k=int(len(projects) * 0.85)):
            shutil.copytree(full.parent / "pkgs" / project, folder / "pkgs" / project)
        text = full.read_text().replace('name = "bench"', f'name = "r{index}"')
        (folder / "release.toml").write_text(text)
        _close(folder / "release.toml")
        releases.append(folder / "release.toml")
    return releases


def distinct_wheels(releases: list[Path]) -> dict[str, int]:
    """sha256 -> size of every wheel the releases name."""
    seen: dict[str, int] = {}
    paths = {p for release in releases for p in genrelease_wheels(release)}
    for path in paths:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        seen[digest] = path.stat().st_size
    return seen


def genrelease_wheels(release: Path) -> list[Path]:
    files = []
    for declaration in sorted((release.parent / "pkgs").glob("*/*.toml")):
        source = declaration.read_text().split('"')[1]
        files.append(Path(source.removeprefix("file://")))
    return files


def store_size(store: Path) -> tuple[int, int, int]:
    """(bytes of file contents, bytes allocated on disk, files) under the store's folders."""
    content = allocated = files = 0
    for folder in STORE_FOLDERS:
        for directory, _, names in os.walk(store / folder):
            for name in names:
                stat = os.stat(os.path.join(directory, name))
                content += stat.st_size
                allocated += stat.st_blocks * 512
                files += 1
    return content, allocated, files


def plain_walk(store: Path, read: bool) -> tuple[float, int]:
    """Time to list (and optionally read) every file of the store: (seconds, bytes read)."""
    started = time.perf_counter()
    total = 0
    for folder in STORE_FOLDERS:
        for directory, _, names in os.walk(store / folder):
            for name in names:
                path = os.path.join(directory, name)
                if read:
                    with open(path, "rb") as handle:
                        while chunk := handle.read(1 << 20):
                            total += len(chunk)
                else:
                    os.stat(path)
    return time.perf_counter() - started, total


def hash_floor(store: Path) -> tuple[float, int]:
    """Read + sha256 every object once on one core: (seconds, bytes)."""
    started = time.perf_counter()
    total = 0
    for directory, _, names in os.walk(store / "objects"):
        for name in names:
            digest = hashlib.sha256()
            with open(os.path.join(directory, name), "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
                    total += len(chunk)
    return time.perf_counter() - started, total


def rate(nbytes: int, seconds: float) -> str:
    return f"{format_bytes(int(nbytes / seconds))}/s" if seconds > 0 else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheels", type=Path, nargs="*",
                        default=[d for d in DEFAULT_WHEELS if d.is_dir()])
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--releases", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "gc")
    args = parser.parse_args(argv)

    full, count, nbytes = genrelease.from_wheels(args.wheels, args.out / "full", args.limit)
    _close(full)
    releases = make_releases(full, args.out, args.releases, args.seed)
    sizes = [len(genrelease_wheels(r)) for r in releases]
    print(f"pool: {count} wheels ({format_bytes(nbytes)}); {len(releases)} releases of "
          f"{min(sizes)}-{max(sizes)} wheels")

    store_dir = args.out / "store"
    shutil.rmtree(store_dir, ignore_errors=True)
    store = Store(store_dir).open()
    started = time.perf_counter()
    for release in releases:
        build_release(store, load_plan(release), workers=4)
    print(f"built {len(releases)} releases in {time.perf_counter() - started:.1f} s")

    distinct = distinct_wheels(releases)
    wheel_bytes = sum(distinct.values())
    content, allocated, files = store_size(store_dir)
    print(f"store: {files} files, {format_bytes(content)} of contents "
          f"({format_bytes(allocated)} allocated); distinct wheels: {len(distinct)}, "
          f"{format_bytes(wheel_bytes)}")
    print(f"  overhead: {100 * (content / wheel_bytes - 1):.2f}% of contents "
          f"(target < 5%), {100 * (allocated / wheel_bytes - 1):.2f}% allocated")

    walk_list = min(plain_walk(store_dir, read=False)[0] for _ in range(3))
    walk_read, read_bytes = min(plain_walk(store_dir, read=True) for _ in range(3))
    print(f"plain walk (best of 3): list {files} files {walk_list:.3f} s; list + open + read "
          f"every byte {walk_read:.3f} s ({rate(read_bytes, walk_read)}, "
          f"{1e6 * walk_read / files:.0f} us/file)")

    def timed_gc(dry_run: bool) -> tuple[float, GcReport]:
        started = time.perf_counter()
        report = collect_garbage(store, dry_run=dry_run)
        return time.perf_counter() - started, report

    took, report = min((timed_gc(True) for _ in range(3)), key=lambda t: t[0])
    print(f"gc, everything rooted (best of 3): {took:.3f} s; read {report.files_read} files, "
          f"{format_bytes(report.bytes_read)} ({1e6 * took / report.files_read:.0f} us/file "
          f"read); {took / walk_list:.1f}x the listing walk, {100 * took / walk_read:.0f}% of "
          "the read-everything walk")
    for label, keep in (("half the roots dropped", len(releases) - len(releases) // 2),
                        ("all roots but one dropped", 1)):
        for release in releases[: len(releases) - keep]:
            with contextlib.suppress(NotFound):
                unpin(store, load_release(release).name)
        took, report = timed_gc(False)
        print(f"gc, {label}: {took:.3f} s, read {report.files_read} files; {report}")
    content, allocated, files = store_size(store_dir)
    left = sum(distinct[sha] for sha in distinct if store.has_object(sha))
    print(f"  left: {files} files, {format_bytes(content)}; its wheels: {format_bytes(left)} "
          f"(overhead {100 * (content / left - 1):.2f}%)")

    floor_time, floor_bytes = hash_floor(store_dir)
    started = time.perf_counter()
    verified = verify_store(store)
    took = time.perf_counter() - started
    print(f"verify: {took:.2f} s, {format_bytes(verified.bytes_hashed)} hashed "
          f"({rate(verified.bytes_hashed, took)}), exit {verified.exit_code}; hash floor "
          f"{floor_time:.2f} s ({rate(floor_bytes, floor_time)}, one core): "
          f"{took / floor_time:.2f}x the floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
