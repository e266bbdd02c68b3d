"""Shared fixtures: a fresh store, a real HTTP server with fault injection, the UnixFS oracle.

    def test_x(http_server, store, tmp_path):
        served = http_server(tmp_path)              # serves tmp_path on 127.0.0.1
        served.die_after("a.whl", 1000, times=1)    # close the connection mid-body, once
        fetch_into_store(store, f"{served.url}/a.whl", cid)
        assert served.count("a.whl") == 2           # the second request resumed with Range
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ipwhl.store import Store

# ../shared beside the repository (where CI puts it), unless IPWHL_ORACLES says otherwise.
ORACLES = Path(
    os.environ.get("IPWHL_ORACLES")
    or Path(__file__).resolve().parents[2] / "shared" / "oracles"
)


@dataclass(frozen=True)
class Request:
    """One request the server saw: file name (URL path without the leading slash) and Range."""

    name: str
    range: str | None


@dataclass
class Served:
    """A directory served over HTTP; configure faults per file name, read back the requests."""

    url: str = ""
    ignore_range: bool = False
    requests: list[Request] = field(default_factory=list)
    _statuses: dict[str, list[int]] = field(default_factory=dict)  # name -> [status, times]
    _deaths: dict[str, list[int]] = field(default_factory=dict)  # name -> [nbytes, times]
    _corrupt: dict[str, int | None] = field(default_factory=dict)  # name -> times (None: always)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fail(self, name: str, status: int = 503, times: int = 1) -> None:
        """Answer requests for `name` with `status` the first `times` times."""
        self._statuses[name] = [status, times]

    def die_after(self, name: str, nbytes: int, times: int = 1) -> None:
        """Close the connection after `nbytes` of the body of `name`, the first `times` times."""
        self._deaths[name] = [nbytes, times]

    def corrupt(self, name: str, times: int | None = None) -> None:
        """Serve `name` with its middle byte flipped (every time, or the first `times` times)."""
        self._corrupt[name] = times

    def count(self, name: str | None = None) -> int:
        """How many requests reached the server (for `name`, or for anything)."""
        with self._lock:
            return sum(1 for r in self.requests if name is None or r.name == name)

    def _take(self, table: dict[str, list[int]], name: str) -> int | None:
        entry = table.get(name)
        if entry is None or entry[1] <= 0:
            return None
        entry[1] -= 1
        return entry[0]

    def _take_corrupt(self, name: str) -> bool:
        if name not in self._corrupt:
            return False
        times = self._corrupt[name]
        if times is None:
            return True
        if times <= 0:
            return False
        self._corrupt[name] = times - 1
        return True


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with `Range: bytes=N-` and the faults configured on the server's Served."""

    served: Served

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        served = self.served
        name = self.path.split("?", 1)[0].lstrip("/")
        range_header = self.headers.get("Range")
        with served._lock:
            served.requests.append(Request(name, range_header))
            status = served._take(served._statuses, name)
            death = served._take(served._deaths, name)
            corrupt = served._take_corrupt(name)
        if status is not None:
            self.send_error(status)
            return
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        if corrupt and data:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
        start = 0
        if range_header and not served.ignore_range:
            unit, _, spec = range_header.partition("=")
            first, _, last = spec.partition("-")
            if unit.strip() != "bytes" or last or not first.isdigit():
                self.send_error(400, "this test server understands only Range: bytes=N-")
                return
            start = int(first)
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "none" if served.ignore_range else "bytes")
        self.end_headers()
        if not send_body:
            return
        if death is not None:
            # The header promised the whole body; send part of it and hang up.
            self.wfile.write(body[:death])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def http_server() -> Iterator[Callable[..., Served]]:
    """A factory: http_server(directory, ignore_range=False) serves `directory` on 127.0.0.1."""
    running: list[tuple[http.server.ThreadingHTTPServer, threading.Thread]] = []

    def start(directory: Path, *, ignore_range: bool = False) -> Served:
        served = Served(ignore_range=ignore_range)
        handler = type("Handler", (_Handler,), {"served": served})
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(handler, directory=str(directory))
        )
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        served.url = f"http://127.0.0.1:{server.server_port}"
        running.append((server, thread))
        return served

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A fresh, opened store under tmp_path/store."""
    return Store(tmp_path / "store").open()


@pytest.fixture(scope="session")
def unixfs_oracle() -> Callable[..., str]:
    """unixfs_oracle(path, *options) -> the CID `ipfs add` gives (JavaScript importer); skips
    the test where node is missing."""
    if shutil.which("node") is None or not (ORACLES / "unixfs-cid").exists():
        pytest.skip("the unixfs-cid oracle needs node (not found on PATH)")

    def run(path: Path, *options: str) -> str:
        done = subprocess.run(
            [str(ORACLES / "unixfs-cid"), str(path), *options],
            capture_output=True, text=True, timeout=120, check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"the unixfs-cid oracle failed: {done.stderr.strip()[:300]}")
        return done.stdout.split()[0]

    return run
