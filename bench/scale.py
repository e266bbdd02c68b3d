"""Scale benchmark: generated releases of 1k … 600k tiny projects, built and overlaid.

    python bench/scale.py [--sizes 1000 10000 100000 600000] [--out bench/out/scale]
                          [--profile 100000] [--variants 3] [--no-eval]

For each size it generates (or reuses) a release of tiny projects with real wheels
(`bench/genrelease.py tiny`), then times, each as its own `python -m ipwhl … -q` process with
its peak RSS (os.wait4): `eval` in a fresh store, a cold build, a warm build (the same release
again, twice), builds on top of the cold build's release with one project upgraded (a new
wheel), a different project each time (the median is shown), and `eval` in the built store.
The last table sets these beside `ipwhl --version` (start-up). With --profile N the warm
build and one more overlay of the N-project release run under cProfile (files beside the
store; the top functions are printed).
Issue 9's targets: memory flat; an overlay under a few seconds at 600k, growing about
logarithmically with the number of projects. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench import genrelease  # noqa: E402
from bench.run import startup  # noqa: E402
from ipwhl.unixfs import file_cid  # noqa: E402
from tests.wheelfactory import build_wheel  # noqa: E402

GENERATOR = "tiny-1"  # bump when genrelease.tiny changes what it writes


@dataclass
class Run:
    """One `ipwhl` process: wall time, peak RSS (MiB) and its stdout."""

    seconds: float
    rss_mib: float
    stdout: str


def ipwhl(*args: str, store: Path, profile: Path | None = None) -> Run:
    """Run `python -m ipwhl ARGS --store STORE -q`; its own peak RSS comes from wait4."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable]
    if profile is not None:
        command += ["-m", "cProfile", "-o", str(profile)]
    command += ["-m", "ipwhl", *args, "--store", str(store), "-q"]
    with open(store.parent / "stdout.txt", "w+b") as out, \
            open(store.parent / "stderr.txt", "w+b") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        raise SystemExit(f"ipwhl {' '.join(args)} failed ({process.returncode}):\n{stderr[-4000:]}")
    return Run(elapsed, usage.ru_maxrss / 1024, stdout)


def generate(out: Path, size: int) -> tuple[Path, float | None]:
    """The release of `size` tiny projects under `out`, reused when already generated."""
    release = out / "release" / "release.toml"
    marker = out / "release" / ".generated"
    wanted = f"{GENERATOR} {size}\n"
    if marker.is_file() and marker.read_text() == wanted:
        return release, None
    began = time.perf_counter()
    genrelease.tiny(out / "release", size, wheels_dir=out / "wheels")
    elapsed = time.perf_counter() - began
    marker.write_text(wanted)
    return release, elapsed


def bump(release: Path, project: str, wheels: Path) -> tuple[Path, Path, str]:
    """Upgrade `project` in place (1.0 → 1.0.post1, the same fields, a new wheel).

    Returns (old declaration, new declaration, old text) so that `restore` can undo it."""
    folder = release.parent / "pkgs" / project
    (old,) = folder.glob("*.toml")
    text = old.read_text()
    dependencies = [line.strip().strip(",").strip('"') for line in text.splitlines()
                    if line.startswith("\t")]
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = build_wheel(wheels, project, "1.0.post1", requires_dist=dependencies)
    new = folder / (wheel.name[: -len(".whl")] + ".toml")
    new.write_text(genrelease._declaration(
        wheel.resolve().as_uri(), str(file_cid(wheel.read_bytes())), None, [], dependencies
    ))
    old.unlink()
    return old, new, text


def restore(old: Path, new: Path, text: str) -> None:
    new.unlink()
    old.write_text(text)


def pick(size: int, count: int) -> list[str]:
    """Projects to upgrade: spread over the release, none needed at exactly 1.0 by anyone
    (dependents ask for >=1.0), each with dependents so their closures are checked again."""
    step = max(1, size // (count + 1))
    return [f"p{min(size - 1, step * (i + 1)) // 2:06d}" for i in range(count)]


def print_profile(path: Path, limit: int = 25) -> None:
    stats = pstats.Stats(str(path)).strip_dirs()
    stats.sort_stats("cumulative").print_stats(limit)
    stats.sort_stats("tottime").print_stats(limit)


def disk_usage(path: Path) -> str:
    done = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=False)
    kib = int(done.stdout.split()[0]) if done.returncode == 0 else 0
    return f"{kib / 1024 / 1024:.2f} GiB"


def measure(size: int, out: Path, args: argparse.Namespace) -> dict[str, object]:
    release, generated = generate(out, size)
    if generated is not None:
        print(f"{size} projects: generated in {generated:.1f} s", flush=True)
    store = out / "run" / "store"
    shutil.rmtree(store.parent, ignore_errors=True)
    store.parent.mkdir(parents=True)
    row: dict[str, object] = {"size": size, "generated": generated}
    if not args.no_eval:
        evaluated = ipwhl("eval", str(release), store=store)
        row["eval"] = evaluated
        print(f"  eval        {evaluated.seconds:9.3f} s  {evaluated.rss_mib:8.0f} MiB  "
              "(no store: every declaration read)", flush=True)
    cold = ipwhl("build", str(release), store=store)
    root = cold.stdout.strip()
    row["cold"] = cold
    print(f"  cold build  {cold.seconds:9.3f} s  {cold.rss_mib:8.0f} MiB  {root}", flush=True)
    profiling = size in args.profile
    # The first build after a cold one may find the declarations' inodes evicted by it (the
    # kernel's cache, not ipwhl's): both are shown, the second goes in the table.
    for again in (False, True):
        warm = ipwhl("build", str(release), store=store,
                     profile=store.parent / "warm.prof" if profiling and again else None)
        if warm.stdout.strip() != root:
            raise SystemExit(f"a warm build gave {warm.stdout.strip()}, the cold one {root}")
        print(f"  warm build  {warm.seconds:9.3f} s  {warm.rss_mib:8.0f} MiB"
              f"{'  (again)' if again else ''}", flush=True)
    row["warm"] = warm
    overlays = []
    for project in pick(size, args.variants + int(profiling)):
        undo = bump(release, project, store.parent / "bumped")
        try:
            profile = None
            if profiling and len(overlays) == args.variants:
                profile = store.parent / "overlay.prof"
            run = ipwhl("build", str(release), "--on-top-of", root, store=store, profile=profile)
        finally:
            restore(*undo)
        if profile is None:
            overlays.append(run)
            print(f"  overlay     {run.seconds:9.3f} s  {run.rss_mib:8.0f} MiB  ({project})",
                  flush=True)
    row["overlay"] = Run(statistics.median(r.seconds for r in overlays),
                         max(r.rss_mib for r in overlays), "")
    if not args.no_eval:
        evaluated = ipwhl("eval", str(release), store=store)
        row["eval-built"] = evaluated
        print(f"  eval        {evaluated.seconds:9.3f} s  {evaluated.rss_mib:8.0f} MiB  "
              "(the built store: summaries and checks from it)", flush=True)
    row["disk"] = "" if args.no_du else disk_usage(store)
    print(f"  store       {row['disk']}", flush=True)
    if profiling:
        print(f"  cProfile of the warm build ({size} projects):", flush=True)
        print_profile(store.parent / "warm.prof")
        print(f"  cProfile of an overlay ({size} projects):", flush=True)
        print_profile(store.parent / "overlay.prof")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 100000, 600000])
    parser.add_argument("--out", type=Path, default=HERE / "out" / "scale")
    parser.add_argument("--profile", type=int, nargs="*", default=[],
                        help="profile the warm build and an overlay of these sizes")
    parser.add_argument("--variants", type=int, default=3, help="overlays timed per size")
    parser.add_argument("--no-eval", action="store_true", help="skip `ipwhl eval`")
    parser.add_argument("--no-du", action="store_true", help="skip the store's size (du)")
    args = parser.parse_args(argv)
    start = startup()
    print(f"start-up (ipwhl --version, best of 5): {start:.3f} s", flush=True)
    rows = []
    for size in args.sizes:
        print(f"{size} tiny projects", flush=True)
        rows.append(measure(size, args.out / f"tiny{size}", args))

    def cell(row: dict[str, object], key: str) -> str:
        run = row.get(key)
        return f"{run.seconds:8.2f} s {run.rss_mib:6.0f} M" if isinstance(run, Run) else " " * 19

    print(f"\nstart-up {start:.3f} s; each cell: wall time and the process's peak RSS (MiB)")
    print(f"{'projects':>9} | {'eval, no store':^19} | {'cold build':^19} | "
          f"{'warm build':^19} | {'overlay (median)':^19} | {'eval, built store':^19} | store")
    for row in rows:
        print(f"{row['size']:>9} | {cell(row, 'eval')} | {cell(row, 'cold')} | "
              f"{cell(row, 'warm')} | {cell(row, 'overlay')} | {cell(row, 'eval-built')} | "
              f"{row['disk']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
