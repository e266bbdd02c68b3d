"""CAR export and import, trustless CAR and fetch, each beside its floor from the same run.

    python bench/car.py [--wheels DIR ...] [--limit 300] [--out bench/out/car]

Builds (once, then reuses) a release of real wheels, then times `ipwhl export`, `ipwhl import`
into an empty store, a `?format=car` download from `ipwhl serve` and `ipwhl fetch` from it into
an empty store. Floors: reading + sha256 of the CAR's bytes (hash floor: export, the gateway's
CAR), and reading, sha256, write, fsync, rename of the same bytes as one file per block (persist
floor: import and fetch put every block into the store as its own file). Not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
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
from bench.run import DEFAULT_WHEELS, persist_floor, startup, wheel_files  # noqa: E402


def ipwhl(*args: str) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    os.sync()  # earlier writes still being flushed would slow this step down
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ipwhl", *args, "-q"], env=env,
                          capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"ipwhl {' '.join(args)} failed:\n{done.stderr}")
    return elapsed, done.stdout.strip()


def hash_floor(path: Path) -> float:
    os.sync()
    started = time.perf_counter()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return time.perf_counter() - started


def block_persist_floor(car_path: Path, scratch: Path) -> float:
    """Each block of the CAR read, hashed, written to its own file, fsynced, renamed."""
    from ipwhl.car import CarReader

    with open(car_path, "rb") as handle:
        blocks = [(cid, data) for cid, data, _ in CarReader(handle).sections()]
    scratch.mkdir(parents=True, exist_ok=True)
    os.sync()
    started = time.perf_counter()
    for index, (_, data) in enumerate(blocks):
        temp = scratch / f"tmp-{index}"
        name = hashlib.sha256(data).hexdigest()
        with open(temp, "wb") as target:
            target.write(data)
            target.flush()
            os.fsync(target.fileno())
        os.replace(temp, scratch / name)
    elapsed = time.perf_counter() - started
    shutil.rmtree(scratch)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wheels", type=Path, action="append")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "car")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    wheel_dirs = [d for d in (args.wheels or DEFAULT_WHEELS) if d.is_dir()]
    release, count, nbytes = genrelease.from_wheels(wheel_dirs, out / "release", args.limit)
    store = out / "store"
    _, root = ipwhl("build", str(release), "--store", str(store))
    start = startup()
    print(f"release: {count} wheels, {nbytes / 1e6:,.0f} MB; start-up {start:.2f} s")

    car_path = out / "release.car"
    car_path.unlink(missing_ok=True)
    export, _ = ipwhl("export", root, "-o", str(car_path), "--store", str(store))
    size = car_path.stat().st_size
    hashed = hash_floor(car_path)
    rows = [("export", export - start, "hash floor", hashed)]

    fresh = out / "store-import"
    shutil.rmtree(fresh, ignore_errors=True)
    imported, _ = ipwhl("import", str(car_path), "--store", str(fresh))
    persist = block_persist_floor(car_path, out / "scratch")
    rows.append(("import into an empty store", imported - start, "persist floor", persist))

    server = subprocess.Popen(
        [sys.executable, "-m", "ipwhl", "serve", "--store", str(store), "--port", "18765"],
        env=dict(os.environ, PYTHONPATH=str(ROOT)), stderr=subprocess.PIPE,
    )
    try:
        assert server.stderr is not None
        server.stderr.readline()  # "serving …": bound
        os.sync()
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", 18765)
        connection.request("GET", f"/ipfs/{root}?format=car")
        response = connection.getresponse()
        got = 0
        while chunk := response.read(1 << 20):
            got += len(chunk)
        streamed = time.perf_counter() - started
        assert got == size, (got, size)
        rows.append(("gateway ?format=car, one client", streamed, "hash floor", hashed))
        fetched_store = out / "store-fetch"
        shutil.rmtree(fetched_store, ignore_errors=True)
        fetched, _ = ipwhl("fetch", root, "--from", "http://127.0.0.1:18765",
                           "--store", str(fetched_store))
        rows.append(("fetch from ipwhl serve, 8 at once", fetched - start, "persist floor",
                     persist))
    finally:
        server.terminate()
        server.wait()
    os.sync()
    per_wheel = persist_floor(wheel_files(release.parent), out / "scratch-wheels")
    print(f"CAR: {size / 1e6:,.1f} MB; persist floor with one file per wheel instead of one "
          f"per block: {per_wheel:.2f} s")
    for what, seconds, floor_name, floor in rows:
        print(f"{what:<36} {seconds:6.2f} s  {size / seconds / 1e6:7.1f} MB/s   "
              f"{floor_name} {floor:5.2f} s  ratio {seconds / floor:4.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
