"""Gateway throughput beside nginx serving the same exported tree, 32 concurrent clients.

    python bench/gateway.py --store STORE --cid CID [--seconds 10] [--connections 32]

Uses `wrk` and `nginx` (Debian: apt-get install wrk nginx-light); prints requests/s for a small
page and MB/s for a wheel from both servers and the ratio. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str) -> None:
    for _ in range(200):
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} never answered")


def wrk(url: str, seconds: int, connections: int) -> tuple[float, float, str]:
    """(requests/s, MB/s, latency line) from wrk."""
    done = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency", url],
        capture_output=True, text=True, check=True,
    )
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout).group(1))
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", done.stdout)
    scale = {"B": 1e-6, "KB": 1e-3, "MB": 1.0, "GB": 1e3}[transfer.group(2)]
    latency = re.search(r"99%\s+(\S+)", done.stdout)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", done.stdout)
    note = f"p99 {latency.group(1) if latency else '?'}"
    if errors:
        note += f"; {errors.group(0)}"
    return rate, float(transfer.group(1)) * scale * 1.048576, note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--cid", required=True)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    if not (shutil.which("wrk") and shutil.which("nginx")):
        print("gateway bench skipped: needs wrk and nginx (apt-get install wrk nginx-light)")
        return 0
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    work = Path(tempfile.mkdtemp(prefix="ipwhl-gw-bench-"))
    work.chmod(0o755)  # nginx's workers run as another user
    tree = work / "tree"
    subprocess.run([sys.executable, "-m", "ipwhl", "get", args.cid, "-o", str(tree),
                    "--store", str(args.store), "-q"], env=env, check=True)
    wheels = sorted(tree.glob("simple/*/*.whl"), key=lambda p: p.stat().st_size)
    # A wheel of a few MB: big enough that bytes, not requests, are what is measured.
    wheel = min(wheels, key=lambda p: abs(p.stat().st_size - 4_000_000)) if wheels else None
    page = next(iter(sorted(tree.glob("simple/*/index.html"))))
    nginx_port, ipwhl_port = free_port(), free_port()
    (work / "nginx.conf").write_text(f"""
worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  keepalive_requests 100000;
  client_body_temp_path {work}/body;
  server {{
    listen 127.0.0.1:{nginx_port};
    location /ipfs/{args.cid}/ {{ alias {tree}/; }}
  }}
}}
""")
    nginx = subprocess.Popen(["nginx", "-c", str(work / "nginx.conf"), "-g", "daemon off;"])
    gateway = subprocess.Popen(
        [sys.executable, "-m", "ipwhl", "serve", "--store", str(args.store),
         "--port", str(ipwhl_port)], env=env, stderr=subprocess.DEVNULL,
    )
    try:
        targets = {"small page": page.relative_to(tree).as_posix()}
        if wheel is not None:
            targets[f"wheel ({wheel.stat().st_size / 1e6:.1f} MB)"] = (
                wheel.relative_to(tree).as_posix()
            )
        print(f"{args.connections} connections, {args.seconds} s each, wrk -t 2")
        for name, path in targets.items():
            figures = {}
            for server, port in (("nginx", nginx_port), ("ipwhl", ipwhl_port)):
                url = f"http://127.0.0.1:{port}/ipfs/{args.cid}/{path}"
                wait_for(url)
                figures[server] = wrk(url, args.seconds, args.connections)
            (n_rate, n_mb, n_note), (i_rate, i_mb, i_note) = figures["nginx"], figures["ipwhl"]
            print(f"  {name:<22} nginx {n_rate:9.0f} req/s {n_mb:8.1f} MB/s ({n_note})")
            print(f"  {'':<22} ipwhl {i_rate:9.0f} req/s {i_mb:8.1f} MB/s ({i_note})"
                  f"  = {i_rate / n_rate:.2f}x nginx")
    finally:
        for process in (nginx, gateway):
            process.terminate()
            process.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
