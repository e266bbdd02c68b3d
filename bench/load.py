"""Load test of `ipwhl serve`: 256 connections for 60 s on 127.0.0.1, zero errors expected.

    python bench/load.py [--seconds 60] [--connections 256] [--store STORE --cid CID]

Without --store/--cid it builds a small release (pages, small wheels, METADATA files and a
4 MB wheel) in a temporary store. The gateway runs as a real `python -m ipwhl serve` process.
The requests mix what pip and uv send (index pages, .metadata files, whole wheels, 64 KiB
Range reads of a large wheel) with trustless raw blocks. The client is `wrk -t2 -c256 -d60s
--latency` with a Lua script rotating over the paths, or, where wrk is missing, an asyncio
client with keep-alive connections. Prints requests/s, MB/s, latency percentiles, errors, and
the server's peak memory and thread count; exits 1 on any error. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Target:
    path: str
    headers: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def build_demo_release(work: Path) -> tuple[Path, str]:
    """A release of 20 small projects and one 4 MB wheel, built into work/store."""
    from ipwhl.build import build_release, load_plan
    from ipwhl.store import Store
    from tests.releasefactory import Project, write_release

    rng = random.Random(256)
    big = "".join(f"b{i} = {rng.getrandbits(64)!r}\n" for i in range(160_000))
    projects = [Project(f"small{i:02d}", "1.0", requires_dist=[] if i == 0 else ["small00"])
                for i in range(20)]
    projects.append(Project("big", "2.0", modules={"big/__init__.py": big}))
    spec = write_release(work / "release", projects, supported=("cp311 manylinux_2_17_x86_64",))
    store = Store(work / "store").open()
    return work / "store", str(build_release(store, load_plan(spec.path)).root)


def targets_of(store: Path, cid: str) -> list[Target]:
    """What pip and uv ask a release for, plus trustless raw blocks, in a fixed mix."""
    from ipwhl import dag
    from ipwhl.cid import CID
    from ipwhl.store import Store

    opened = Store(store)
    root = CID.parse(cid)
    simple = dag.resolve(opened, root, ["simple"]).cid
    base = f"/ipfs/{cid}/simple"
    raw_block = Target(f"/ipfs/{cid}?format=raw", {"Accept": "application/vnd.ipld.raw"})
    targets = [Target(f"/ipfs/{cid}/"), Target(f"{base}/"), raw_block]
    largest: tuple[int, str] = (0, "")
    for project in dag.list_dir(opened, simple):
        if project.name == "index.html":
            continue
        targets.append(Target(f"{base}/{project.name}/"))
        for entry in dag.list_dir(opened, project.cid):
            path = f"{base}/{project.name}/{entry.name}"
            if entry.name.endswith(".metadata"):
                targets.append(Target(path))
            elif entry.name.endswith(".whl"):
                size = dag.node(opened, entry.cid).size
                largest = max(largest, (size, path))
                if size < 1_000_000:
                    targets.append(Target(path))
    size, big = largest
    for start in range(0, size, size // 8):  # uv reads the central directory with Range
        targets.append(Target(big, {"Range": f"bytes={start}-{min(start + 65535, size - 1)}"}))
    targets.append(Target(big, {"Range": f"bytes=-{65536}"}))
    return targets


def lua_script(targets: list[Target]) -> str:
    def quote(text: str) -> str:
        return json.dumps(text)  # a JSON string is a valid Lua string literal here

    rows = []
    for target in targets:
        headers = ", ".join(f"[{quote(k)}] = {quote(v)}" for k, v in target.headers.items())
        rows.append(f"  {{path = {quote(target.path)}, headers = {{{headers}}}}},")
    return (
        "local targets = {\n" + "\n".join(rows) + "\n}\n"
        "local counter = 0\n"
        "function setup(thread) thread:set('offset', math.random(1, #targets)) end\n"
        "request = function()\n"
        "  counter = counter + 1\n"
        "  local t = targets[((counter + (offset or 0)) % #targets) + 1]\n"
        "  return wrk.format('GET', t.path, t.headers)\n"
        "end\n"
    )


class ServerWatch:
    """Samples the server's resident memory and thread count once a second."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss_kib = 0
        self.peak_threads = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            rss = re.search(r"VmRSS:\s+(\d+)", status)
            threads = re.search(r"Threads:\s+(\d+)", status)
            if rss:
                self.peak_rss_kib = max(self.peak_rss_kib, int(rss[1]))
            if threads:
                self.peak_threads = max(self.peak_threads, int(threads[1]))

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def run_wrk(url: str, targets: list[Target], seconds: int, connections: int,
            work: Path) -> dict[str, object]:
    script = work / "mix.lua"
    script.write_text(lua_script(targets))
    done = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
         "-s", str(script), url],
        capture_output=True, text=True, check=False,
    )
    out = done.stdout
    if done.returncode != 0:
        raise SystemExit(f"wrk failed: {done.stderr.strip() or out}")
    percentiles = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, flags=re.MULTILINE))
    requests = int(re.search(r"(\d+) requests in", out)[1])
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    scale = {"B": 1e-6, "KB": 1e-3, "MB": 1.0, "GB": 1e3}[transfer[2]] * 1.048576
    latency_max = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out)
    return {
        "client": "wrk -t2",
        "requests": requests,
        "rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
        "mb_per_s": float(transfer[1]) * scale,
        "percentiles": {f"p{k}": v for k, v in percentiles.items()},
        "max": latency_max[1] if latency_max else "?",
        "errors": {
            **({name: int(value) for name, value in zip(
                ("connect", "read", "write", "timeout"), socket_errors.groups(), strict=True
            )} if socket_errors else {}),
            "non-2xx/3xx": int(non_2xx[1]) if non_2xx else 0,
        },
    }


async def _client(host: str, port: int, targets: list[Target], ends: float, offset: int,
                  latencies: list[float], errors: dict[str, int], counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    index = offset
    try:
        while time.monotonic() < ends:
            target = targets[index % len(targets)]
            index += 1
            head = f"GET {target.path} HTTP/1.1\r\nHost: {host}:{port}\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in target.headers.items()
            ) + "\r\n"
            started = time.perf_counter()
            writer.write(head.encode())
            status_line = await reader.readline()
            status = int(status_line.split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            counts[0] += 1
            counts[1] += len(body)
            if status >= 400:
                errors["non-2xx/3xx"] = errors.get("non-2xx/3xx", 0) + 1
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
    finally:
        writer.close()


def run_asyncio(url: str, targets: list[Target], seconds: int,
                connections: int) -> dict[str, object]:
    port = int(url.rsplit(":", 1)[1])
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counts = [0, 0]

    async def main() -> None:
        ends = time.monotonic() + seconds
        await asyncio.gather(*(
            _client("127.0.0.1", port, targets, ends, i, latencies, errors, counts)
            for i in range(connections)
        ))

    started = time.monotonic()
    asyncio.run(main())
    elapsed = time.monotonic() - started
    ordered = sorted(latencies) or [0.0]

    def at(share: float) -> str:
        return f"{ordered[min(int(share * len(ordered)), len(ordered) - 1)] * 1000:.2f}ms"

    return {
        "client": "asyncio",
        "requests": counts[0],
        "rate": counts[0] / elapsed,
        "mb_per_s": counts[1] / elapsed / 1e6,
        "percentiles": {f"p{int(s * 100)}": at(s) for s in (0.5, 0.75, 0.9, 0.99)},
        "max": f"{ordered[-1] * 1000:.2f}ms",
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--store", type=Path)
    parser.add_argument("--cid")
    parser.add_argument("--client", choices=["auto", "wrk", "asyncio"], default="auto")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ipwhl-load-"))
    try:
        if args.store and args.cid:
            store, cid = args.store, args.cid
        else:
            print("building a demo release …", file=sys.stderr)
            store, cid = build_demo_release(work)
        targets = targets_of(store, cid)
        port = free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        server = subprocess.Popen(
            [sys.executable, "-m", "ipwhl", "serve", "--port", str(port), "--store", str(store)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    urllib.request.urlopen(url + "/", timeout=2).read()
                    break
                except OSError:
                    time.sleep(0.05)
            watch = ServerWatch(server.pid)
            use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
            print(f"{len(targets)} paths, {args.connections} connections, {args.seconds} s, "
                  f"client {'wrk' if use_wrk else 'asyncio'} …", file=sys.stderr)
            if use_wrk:
                result = run_wrk(url, targets, args.seconds, args.connections, work)
            else:
                result = run_asyncio(url, targets, args.seconds, args.connections)
            watch.close()
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    errors = {name: count for name, count in result["errors"].items() if count}  # type: ignore[union-attr]
    print(f"ipwhl serve under load: {args.connections} connections for {args.seconds} s on "
          f"127.0.0.1 ({result['client']}), {len(targets)} paths")
    print(f"  requests   {result['requests']:,} ({result['rate']:,.0f}/s, "
          f"{result['mb_per_s']:,.1f} MB/s)")
    percentiles = result["percentiles"]
    print("  latency    " + "  ".join(f"{k} {v}" for k, v in percentiles.items())  # type: ignore[union-attr]
          + f"  max {result['max']}")
    print(f"  errors     {errors or 'none'}")
    print(f"  server     peak RSS {watch.peak_rss_kib / 1024:,.0f} MiB, "
          f"peak threads {watch.peak_threads}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
