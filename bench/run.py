"""ipwhl's benchmarks: each figure beside its floor, measured in the same run, as a ratio.

    python bench/run.py [--wheels DIR ...] [--limit 300] [--tiny 10000] [--out bench/out]

Floors (see ../shared/README.md): the hash floor reads every byte once and sha256es it on one
core; the persist floor also writes each file into a temporary file on the store's file system,
fsyncs and renames it; start-up is `ipwhl --version`. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench import genrelease  # noqa: E402

DEFAULT_WHEELS = [Path("/opt/pypi/files"), Path("/opt/pypi-more/files")]


def ipwhl(*args: str, store: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "ipwhl", *args, "--store", str(store), "-q"],
        env=env, capture_output=True, text=True, check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"ipwhl {' '.join(args)} failed:\n{done.stderr}")
    return elapsed, done


def startup() -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ipwhl", "--version"], env=env,
                       capture_output=True, check=True)
        best = min(best, time.perf_counter() - started)
    return best


def wheel_files(release_dir: Path) -> list[Path]:
    files = []
    for declaration in sorted((release_dir / "pkgs").glob("*/*.toml")):
        source = declaration.read_text().split('"')[1]
        files.append(Path(source.removeprefix("file://")))
    return files


def hash_floor(files: list[Path]) -> float:
    started = time.perf_counter()
    for path in files:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return time.perf_counter() - started


def persist_floor(files: list[Path], scratch: Path) -> float:
    scratch.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for index, path in enumerate(files):
        digest = hashlib.sha256()
        temp = scratch / f"tmp-{index}"
        with open(path, "rb") as source, open(temp, "wb") as target:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
                target.write(chunk)
            target.flush()
            os.fsync(target.fileno())
        os.replace(temp, scratch / digest.hexdigest())
    elapsed = time.perf_counter() - started
    shutil.rmtree(scratch)
    return elapsed


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, what: str, seconds: float, floor_name: str = "", floor: float | None = None,
            target: str = "") -> None:
        ratio = f"{seconds / floor:.2f}x {floor_name}" if floor else ""
        self.rows.append((what, f"{seconds:8.3f} s", ratio, target))
        print(f"  {what:<44} {seconds:8.3f} s  {ratio:<28} {target}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheels", type=Path, nargs="*", default=DEFAULT_WHEELS)
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--tiny", type=int, default=10000)
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    table = Table()

    wheel_dirs = [d for d in args.wheels if d.is_dir()]
    if wheel_dirs:
        release, count, nbytes = genrelease.from_wheels(wheel_dirs, out / "real", args.limit)
        print(f"real wheels: {count} wheels, {nbytes / 1e6:,.0f} MB from "
              f"{', '.join(map(str, wheel_dirs))}")
        files = wheel_files(out / "real")
        store = out / "store-real"
        for path in files:  # warm the page cache, as the floors assume
            path.read_bytes()
        start = startup()
        floor = hash_floor(files)
        persist = persist_floor(files, out / "persist-scratch")
        table.add("start-up (ipwhl --version)", start)
        table.add("hash floor (read + sha256, one core)", floor)
        table.add("persist floor (read, sha256, write, fsync)", persist)
        shutil.rmtree(store, ignore_errors=True)
        cold_check, _ = ipwhl("check", str(release), store=store)
        table.add("check, cold", cold_check, "hash floor", floor, "<= 1.5x (issue 2)")
        table.add("check, cold", cold_check, "persist floor", persist)
        warm_check, _ = ipwhl("check", str(release), store=store)
        table.add("check, warm", warm_check, "cold check", cold_check, "<= 0.05x (issue 2)")
        shutil.rmtree(store)
        cold_build, done = ipwhl("build", str(release), store=store)
        root = done.stdout.strip()
        table.add("build, cold", cold_build, "hash floor", floor, "<= 1.5x (issue 3)")
        table.add("build, cold", cold_build, "persist floor", persist)
        warm_build, done = ipwhl("build", str(release), store=store)
        assert done.stdout.strip() == root
        table.add("build, warm", warm_build, "cold build", cold_build, "<= 0.05x (issue 3)")
        table.add("build, warm beyond start-up", warm_build - start, "cold build beyond start-up",
                  cold_build - start)
    else:
        print("no wheel folders found; skipping the real-wheel figures (pass --wheels DIR)")

    tiny_release = genrelease.tiny(out / f"tiny{args.tiny}", args.tiny,
                                   wheels_dir=out / f"tiny{args.tiny}-wheels")
    tiny_store = out / f"store-tiny{args.tiny}"
    shutil.rmtree(tiny_store, ignore_errors=True)
    elapsed, _ = ipwhl("eval", str(tiny_release), store=tiny_store)
    table.add(f"eval, {args.tiny} projects, cold store", elapsed, target="< 10 s (issue 2)")
    cold, _ = ipwhl("build", str(tiny_release), store=tiny_store)
    table.add(f"build, {args.tiny} tiny projects, cold", cold)
    elapsed, _ = ipwhl("eval", str(tiny_release), store=tiny_store)
    table.add(f"eval, {args.tiny} projects, warm", elapsed, target="< 10 s (issue 2)")
    elapsed, _ = ipwhl("build", str(tiny_release), store=tiny_store)
    table.add(f"build, {args.tiny} tiny projects, warm", elapsed)
    dag_seconds = _dag_only(tiny_release, tiny_store)
    table.add(f"root CID from the store, {args.tiny} projects", dag_seconds,
              target="< 1 s (issue 3)")
    return 0


def _dag_only(release: Path, store_path: Path) -> float:
    """Time the DAG phase alone (pages, directories, root) with everything realised."""
    from ipwhl import build
    from ipwhl.derivations import Realiser
    from ipwhl.store import Store

    store = Store(store_path).open()
    plan = build.load_plan(release)
    realiser = Realiser(store)
    checked = build.check_release(store, plan, realiser=realiser)
    started = time.perf_counter()
    build.write_dag(store, plan, checked, realiser)
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
