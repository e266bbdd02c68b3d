"""Fetching a DAG from trustless gateways: every block verified, in parallel, resumable.

Blocks are asked for one by one (`GET /ipfs/<cid>?format=raw`, `Accept:
application/vnd.ipld.raw`), so any IPFS gateway will do, ours or a public one, and nothing it
sends is trusted: a block enters the store only once it hashes to the CID it was asked for. The
gateways are tried in the order given, each a few times with back-off; a gateway that keeps
failing is dropped for the rest of the run. Leaves are stored as they arrive, a dag-pb node
only once everything under it is in the store, so a node in the store always has its whole DAG
under it. What arrived stays when a run fails, and the next run fetches only what is missing.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TextIO

from . import __version__
from .car import MAX_BLOCK_SIZE
from .cid import CID, DAG_PB, IDENTITY, RAW
from .errors import FetchError, IntegrityError, NotFound
from .store import Store
from .unixfs import InvalidBlock, decode_pbnode

__all__ = [
    "FetchProgress",
    "FetchStats",
    "configured_gateways",
    "ensure_dag",
    "fetch_dag",
    "gateway_base",
    "missing_blocks",
]

GATEWAYS_ENV = "IPWHL_GATEWAYS"
USER_AGENT = f"ipwhl/{__version__}"
_RAW_BLOCK = "application/vnd.ipld.raw"
_RETRYABLE_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
# A gateway that fails this many requests in a row (network errors, 5xx) is given up on.
_GIVE_UP_AFTER = 8
# One block (at most 2 MiB) must arrive whole within this many seconds, however the gateway
# paces its bytes: a socket timeout alone never ends a response that drips a byte at a time.
_BLOCK_DEADLINE = 120.0


@dataclass(frozen=True)
class FetchStats:
    """How a fetch went: blocks and bytes that came over the network, blocks already here."""

    fetched: int = 0
    nbytes: int = 0
    present: int = 0


def gateway_base(url: str) -> str:
    """A gateway URL as given by a user (`https://ipfs.io`, `…/ipfs/`) → its base, no slash."""
    text = url.strip()
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise FetchError(f"{url!r} is not a gateway URL; expected http(s)://HOST[:PORT]")
    path = parts.path.rstrip("/").removesuffix("/ipfs").rstrip("/")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def configured_gateways(explicit: Sequence[str] = ()) -> list[str]:
    """The gateways to fetch from: those given (`--from`), else $IPWHL_GATEWAYS (comma list)."""
    if explicit:
        return list(explicit)
    return [u.strip() for u in os.environ.get(GATEWAYS_ENV, "").split(",") if u.strip()]


def _links(cid: CID, data: bytes) -> list[CID]:
    if cid.codec == RAW:
        return []
    if cid.codec != DAG_PB:
        raise InvalidBlock(f"{cid}: codec {cid.codec_name} is not supported (dag-pb and raw only)")
    try:
        return [link.cid for link in decode_pbnode(data).links]
    except InvalidBlock as exc:
        raise InvalidBlock(f"{cid}: {exc}") from None


def _complete_here(store: Store, cid: CID) -> bool | None:
    """True if the block and all under it are surely here, False if absent, None to look."""
    if cid.hash_code == IDENTITY:
        return None if cid.codec == DAG_PB else True
    if not store.has_block(cid):
        return False
    if cid.codec == RAW or store.get_layout(cid) is not None:
        return True  # a leaf, or a file kept whole as an object
    return None


def missing_blocks(store: Store, root: CID, limit: int = 1) -> list[CID]:
    """Up to `limit` blocks of the DAG under `root` that the store lacks (none: it is whole)."""
    missing: list[CID] = []
    seen: set[CID] = set()
    stack = [root]
    while stack and len(missing) < limit:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        state = _complete_here(store, cid)
        if state is False:
            missing.append(cid)
        elif state is None:
            data = cid.digest if cid.hash_code == IDENTITY else store.get_block(cid)
            stack.extend(reversed(_links(cid, data)))
    return missing


# --- one gateway over HTTP ------------------------------------------------------------------


class _Failed(Exception):
    """One request for a block failed; `retry` says whether the same gateway may do better."""

    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.retry = retry


class _Gateway:
    """A gateway base URL and whether it still seems to work."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.failures_in_a_row = 0
        self.lock = threading.Lock()

    @property
    def given_up(self) -> bool:
        return self.failures_in_a_row >= _GIVE_UP_AFTER

    def outcome(self, ok: bool) -> None:
        with self.lock:
            self.failures_in_a_row = 0 if ok else self.failures_in_a_row + 1


class _Connections(threading.local):
    """Each worker thread keeps one keep-alive connection per host."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str], http.client.HTTPConnection] = {}


class _Watchdog:
    """Shuts down the socket of a request that runs past its deadline, wherever it is blocked."""

    def __init__(self) -> None:
        self.armed: dict[int, tuple[float, socket.socket]] = {}
        self.tokens = itertools.count()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def arm(self, sock: socket.socket, ends: float) -> int:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._run, name="ipwhl-fetch-deadline", daemon=True
                )
                self.thread.start()
            token = next(self.tokens)
            self.armed[token] = (ends, sock)
        return token

    def disarm(self, token: int) -> None:
        with self.lock:
            self.armed.pop(token, None)

    def _run(self) -> None:
        while not self.stopped.wait(0.1):
            now = time.monotonic()
            with self.lock:
                for token in [t for t, (ends, _) in self.armed.items() if ends <= now]:
                    _, sock = self.armed.pop(token)
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.stopped.set()


class _Client:
    """GET requests over per-thread keep-alive connections; `close` ends all of them."""

    def __init__(self, timeout: float, deadline: float = _BLOCK_DEADLINE) -> None:
        self.timeout = timeout
        self.deadline = deadline
        self.watchdog = _Watchdog()
        self.connections = _Connections()
        self.every: list[http.client.HTTPConnection] = []
        self.lock = threading.Lock()

    def _connection(self, parts: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        key = (parts.scheme, parts.netloc)
        connection = self.connections.open.get(key)
        if connection is None:
            if parts.scheme == "https":
                connection = http.client.HTTPSConnection(parts.netloc, timeout=self.timeout)
            else:
                connection = http.client.HTTPConnection(parts.netloc, timeout=self.timeout)
            self.connections.open[key] = connection
            with self.lock:
                self.every.append(connection)
        return connection

    def _drop(self, parts: urllib.parse.SplitResult) -> None:
        connection = self.connections.open.pop((parts.scheme, parts.netloc), None)
        if connection is not None:
            connection.close()

    def close(self) -> None:
        self.watchdog.close()
        with self.lock:
            for connection in self.every:
                connection.close()
            self.every.clear()

    def get_block(self, base: str, cid: CID) -> bytes:
        """The bytes a gateway sends for block `cid`, not yet checked; _Failed otherwise."""
        url = f"{base}/ipfs/{cid}?format=raw"
        ends = time.monotonic() + self.deadline
        for _ in range(_MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in {"http", "https"}:
                raise _Failed(f"redirects to {url}, which is not an http(s) URL", retry=False)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            connection = self._connection(parts)
            token = None
            try:
                if connection.sock is None:
                    connection.connect()
                token = self.watchdog.arm(connection.sock, ends)
                connection.request(
                    "GET", target, headers={"Accept": _RAW_BLOCK, "User-Agent": USER_AGENT}
                )
                response = connection.getresponse()
                if response.status in _REDIRECTS and response.getheader("Location"):
                    url = urllib.parse.urljoin(url, response.getheader("Location", ""))
                    self._drop(parts)
                    continue
                if response.status != 200:
                    self._drop(parts)
                    reason = f"HTTP {response.status} {response.reason}".rstrip()
                    raise _Failed(reason, retry=response.status in _RETRYABLE_HTTP)
                declared = response.getheader("Content-Length")
                if declared and declared.isdigit() and int(declared) > MAX_BLOCK_SIZE:
                    self._drop(parts)
                    raise _Failed(f"sends {declared} bytes, over the block limit", retry=False)
                data = response.read(MAX_BLOCK_SIZE + 1)
                if len(data) > MAX_BLOCK_SIZE:
                    self._drop(parts)
                    raise _Failed("sends more than 2 MiB for one block", retry=False)
                if response.length:  # http.client returns a body cut short without complaint
                    self._drop(parts)
                    raise _Failed(self._cut_short(ends, len(data)), retry=True)
                if response.will_close:
                    self._drop(parts)
                return data
            except (OSError, http.client.HTTPException) as exc:
                self._drop(parts)
                raise _Failed(self._cut_short(ends, exc), retry=True) from None
            finally:
                if token is not None:
                    self.watchdog.disarm(token)
        raise _Failed(f"more than {_MAX_REDIRECTS} redirects", retry=False)

    def _cut_short(self, ends: float, what: int | BaseException) -> str:
        """Why a request ended early: the deadline (the watchdog cut it), else what happened."""
        if time.monotonic() >= ends:
            return f"no whole block within {self.deadline:g} s"
        if isinstance(what, int):
            return f"connection closed after {what} bytes"
        return _describe(what)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed after {len(exc.partial)} bytes"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "connection closed without a response"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


# --- the walk ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Visited:
    """A block looked at: bytes to store once its children are in (None: nothing to store),
    its links, how many bytes came over the network, and whether it was here already."""

    data: bytes | None
    children: list[CID]
    nbytes: int
    present: bool


class _Fetcher:
    def __init__(
        self,
        store: Store,
        gateways: list[_Gateway],
        timeout: float,
        retries: int,
        deadline: float = _BLOCK_DEADLINE,
    ) -> None:
        self.store = store
        self.gateways = gateways
        self.retries = retries
        self.client = _Client(timeout, deadline)

    def visit(self, cid: CID) -> _Visited:
        state = _complete_here(self.store, cid)
        if state is True:
            return _Visited(None, [], 0, True)
        if state is None:
            data = cid.digest if cid.hash_code == IDENTITY else self.store.get_block(cid)
            return _Visited(None, _links(cid, data), 0, True)
        data = self.download(cid)
        children = _links(cid, data)
        if not children:
            self.store.put_block(cid, data)
            return _Visited(None, [], len(data), False)
        return _Visited(data, children, len(data), False)

    def download(self, cid: CID) -> bytes:
        """Block `cid` from the first gateway that sends the right bytes; _Failed otherwise."""
        reasons = []
        for gateway in self.gateways:
            if gateway.given_up:
                reasons.append(f"{gateway.base}: given up after {_GIVE_UP_AFTER} failures in a row")
                continue
            for attempt in range(self.retries):
                try:
                    data = self.client.get_block(gateway.base, cid)
                except _Failed as failed:
                    gateway.outcome(ok=not failed.retry)
                    reason = str(failed)
                    retry = failed.retry
                else:
                    if cid.verify(data):
                        gateway.outcome(ok=True)
                        return data
                    reason, retry = f"sent {len(data)} bytes that do not hash to {cid}", True
                    gateway.outcome(ok=False)
                if not retry or gateway.given_up or attempt + 1 == self.retries:
                    reasons.append(f"{gateway.base}: {reason}")
                    break
                time.sleep(min(0.1 * 2**attempt, 2.0))
        raise _Failed("; ".join(reasons), retry=False)


class _Pending:
    """A fetched dag-pb node waiting for its children before it may be stored."""

    __slots__ = ("data", "remaining")

    def __init__(self, data: bytes | None, remaining: int) -> None:
        self.data = data
        self.remaining = remaining


def fetch_dag(
    store: Store,
    cid: CID,
    urls: Sequence[str],
    *,
    progress: Callable[[FetchStats], None] | None = None,
    workers: int = 8,
    timeout: float = 30.0,
    retries: int = 3,
    deadline: float = _BLOCK_DEADLINE,
) -> FetchStats:
    """Bring the whole DAG under `cid` into the store from trustless gateways `urls` (tried in
    order), verifying every block; FetchError naming what is missing if it cannot.

    Blocks already in the store are not fetched again, so after a failure the same call
    resumes where the last one stopped. Each block must arrive within `deadline` seconds.
    """
    gateways = [_Gateway(gateway_base(url)) for url in urls]
    if not gateways:
        raise FetchError(f"no gateway to fetch {cid} from: pass --from URL or set {GATEWAYS_ENV}")
    workers = max(1, workers)
    fetcher = _Fetcher(store, gateways, timeout, retries, deadline)
    stats = FetchStats()
    scheduled = {cid}
    todo = [cid]  # a stack: depth first, so subtrees finish (and are stored) early
    done: set[CID] = set()
    waiting: dict[CID, _Pending] = {}
    parents: dict[CID, list[CID]] = {}
    failed: dict[CID, str] = {}
    running: dict[Future[_Visited], CID] = {}

    def complete(block: CID, data: bytes | None) -> None:
        # Store the block, then any parent whose last missing child it was, and so on up.
        ready = [(block, data)]
        while ready:
            block, data = ready.pop()
            if data is not None:
                store.put_block(block, data)
            done.add(block)
            for parent in parents.pop(block, []):
                pending = waiting[parent]
                pending.remaining -= 1
                if pending.remaining == 0:
                    del waiting[parent]
                    ready.append((parent, pending.data))

    def record(block: CID, visited: _Visited) -> None:
        nonlocal stats
        if visited.present:
            stats = FetchStats(stats.fetched, stats.nbytes, stats.present + 1)
        else:
            stats = FetchStats(stats.fetched + 1, stats.nbytes + visited.nbytes, stats.present)
        remaining = 0
        fresh = []
        for child in dict.fromkeys(visited.children):
            if child in done:
                continue
            parents.setdefault(child, []).append(block)
            remaining += 1
            if child not in scheduled:
                scheduled.add(child)
                fresh.append(child)
        todo.extend(reversed(fresh))
        if remaining:
            waiting[block] = _Pending(visited.data, remaining)
        else:
            complete(block, visited.data)

    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="ipwhl-fetch") as pool:
            while todo or running:
                while todo and len(running) < 2 * workers:
                    block = todo.pop()
                    running[pool.submit(fetcher.visit, block)] = block
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    block = running.pop(future)
                    try:
                        record(block, future.result())
                    except (_Failed, InvalidBlock, IntegrityError) as exc:
                        failed[block] = str(exc)
                        continue
                    if progress is not None:
                        progress(stats)
    finally:
        fetcher.client.close()
    if failed:
        shown = "; ".join(f"{block}: {reason}" for block, reason in list(failed.items())[:3])
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        raise FetchError(
            f"cannot fetch all of {cid}: {len(failed)} block(s) failed: {shown}{more}. "
            f"{stats.fetched} block(s) ({stats.nbytes / 1e6:,.1f} MB) arrived and stay in the "
            "store; run the same command again to resume"
        )
    return stats


def ensure_dag(
    store: Store,
    cid: CID,
    urls: Sequence[str] = (),
    *,
    progress: Callable[[FetchStats], None] | None = None,
) -> FetchStats | None:
    """Make sure the whole DAG under `cid` is in the store, fetching what is missing from
    `urls`; None if nothing was needed, NotFound if something is missing and no URL is given."""
    if store.known_whole(cid):
        return None
    if not missing_blocks(store, cid):
        store.mark_whole(cid)
        return None
    if not urls:
        raise NotFound(
            f"{cid} is not (wholly) in the store {store.root}; fetch it with --from URL "
            f"(a trustless gateway, such as https://ipfs.io) or set {GATEWAYS_ENV}"
        )
    stats = fetch_dag(store, cid, urls, progress=progress)
    store.mark_whole(cid)
    return stats


class FetchProgress:
    """Shows a fetch's progress: a redrawn line on a terminal, nothing when piped."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.live = self.stream.isatty()
        self.drawn = 0.0
        self.started = time.monotonic()
        self.last = FetchStats()

    def __call__(self, stats: FetchStats) -> None:
        self.last = stats
        now = time.monotonic()
        if self.live and now - self.drawn >= 0.1:
            self.drawn = now
            self.stream.write("\r" + self.summary() + "\x1b[K")
            self.stream.flush()

    def summary(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        stats = self.last
        return (
            f"fetched {stats.fetched} blocks ({stats.nbytes / 1e6:,.1f} MB, "
            f"{stats.nbytes / elapsed / 1e6:,.1f} MB/s), {stats.present} already here"
        )

    def close(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

