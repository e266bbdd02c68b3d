"""A read-only IPFS path gateway over the store: `GET /ipfs/<cid>/<path>`; with `?format=raw`
or `?format=car` (or the matching Accept) a trustless gateway: blocks and CARs a client verifies.

One asyncio event loop serves every connection; h11 parses and frames HTTP/1.1. Store reads
(path resolution, about 1 MiB of verified leaves at a time) run on a few worker threads, so a
cold disk or a slow first look-up never stalls the other clients. Content under a CID never
changes, so resolved paths, directory blocks and small files (pages, METADATA) are kept in
bounded LRU caches once read and verified; a request the caches answer whole is answered on
the event loop, with no trip to a thread. Every resource a client
can hold is bounded: header bytes, time to send a request or take a response, the number of
connections, and memory (bodies are streamed leaf by leaf and wait for the socket to drain).
Bytes leave only after their block has been checked against its CID; if a block turns out
corrupt after the headers went out, the connection is aborted rather than finished wrongly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.utils
import errno
import functools
import hashlib
import html
import logging
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Generic, TypeVar

import h11

from . import __version__, car, dag, unixfs
from .cid import CID, IDENTITY
from .errors import IntegrityError, IpwhlError, NotFound, StoreError
from .store import Layout, Store
from .unixfs import Link

__all__ = ["Gateway", "GatewayConfig", "GatewayError", "running", "serve"]

logger = logging.getLogger(__name__)
# One line per request, "METHOD PATH STATUS"; off unless a handler is attached.
access_log = logging.getLogger(f"{__name__}.access")
_T = TypeVar("_T")

_IMMUTABLE = "public, max-age=29030400, immutable"
_SERVER = f"ipwhl/{__version__}"

# Reads are small so h11's limit on an incomplete head bites before much is buffered.
_READ_SIZE = 8 * 1024
_MAX_HEADER_BYTES = 16 * 1024
# A request body (GET has none in practice) is read and dropped up to this size, else we hang up.
_MAX_DISCARDED_BODY = 64 * 1024
_WORKERS = 8
# Caches (see _Lru). Immutable content makes every entry correct for as long as it is kept.
_NODE_ENTRIES = 16384  # resolved (root CID, path) -> node
_BLOCK_CACHE_BYTES = 32 << 20  # verified blocks read while resolving (directories, HAMT shards)
_CACHED_BLOCK = 1 << 20  # the largest block the block cache keeps
_SMALL_FILE = 256 * 1024  # files up to this size are kept whole once read (pages, METADATA)
_SMALL_CACHE_BYTES = 64 << 20
_LEAF_CACHE_BYTES = 64 << 20  # verified raw leaves of larger files (popular wheels)
_LAYOUT_ENTRIES = 4096
_DIRECTORY_LINKS = 1 << 20  # entries of decoded plain directories kept, name -> link
# A large body is read this much per trip to a worker thread.
_BODY_PIECE = 1 << 20
# Over the connection cap a client gets its 503 and this long to read it before we hang up.
_REFUSAL_GRACE = 1.0
# A failing disk fails every request that touches it: one log line per kind of failure this
# often, not one (with a traceback) per request.
_REPORT_INTERVAL = 10.0

# Deterministic, small and enough for a release DAG; the platform's mimetypes table is neither.
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".toml": "text/plain; charset=utf-8",
    ".json": "application/json",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_DEFAULT_CONTENT_TYPE = "application/octet-stream"
_TEXT = "text/plain; charset=utf-8"
_HTML = "text/html; charset=utf-8"
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DIGITS = re.compile(r"[0-9]+")
# Far beyond any file, and small enough that int() never meets Python's digit limit.
_HUGE = 1 << 62

_LANDING = (
    "ipwhl gateway: a read-only IPFS path gateway over a local ipwhl store.\n"
    "Fetch a release with GET /ipfs/<cid>/ (pip: --index-url http://HOST:PORT/ipfs/<cid>/simple/).\n"
)


class GatewayError(IpwhlError):
    """The gateway cannot run (for example, its address is taken)."""


@dataclass(frozen=True)
class GatewayConfig:
    """Where to listen and how much any one client may hold."""

    host: str = "127.0.0.1"
    port: int = 8080  # 0 binds a free port; `Gateway.start` says which
    max_connections: int = 1024  # served at once; more are accepted only to be told 503
    idle_timeout: float = 30.0  # seconds to send a whole request head, or to take more bytes


@dataclass(frozen=True)
class _Request:
    method: str
    path: str  # percent-encoded, as received
    query: str  # without the "?", "" when absent
    headers: dict[str, list[str]]

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return ", ".join(values) if values else None


@dataclass
class _Reply:
    """A response: status, headers, and a body that is `first` followed by what `rest` yields."""

    status: int
    headers: list[tuple[str, str]]
    first: bytes = b""
    rest: Iterator[bytes] | None = None
    length: int | None = 0  # None: length unknown up front, sent chunked (a CAR stream)
    keep_alive: bool = True


class _Unsatisfiable(Exception):
    pass


class _NeedsStore(Exception):
    """An answer asked for on the event loop needs a store read: ask again on a worker thread."""


_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class _Lru(Generic[_K, _V]):
    """A thread-safe least-recently-used map, bounded by the summed weight of its values."""

    def __init__(self, capacity: int, weight: Callable[[_V], int] = lambda _: 1) -> None:
        self._capacity = capacity
        self._weight = weight
        self._total = 0
        self._items: OrderedDict[_K, _V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: _K) -> _V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: _K, value: _V) -> None:
        size = self._weight(value)
        if size > self._capacity:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._total -= self._weight(old)
            self._items[key] = value
            self._total += size
            while self._total > self._capacity:
                _, dropped = self._items.popitem(last=False)
                self._total -= self._weight(dropped)


class _Reports:
    """Rate-limited error lines: the first of a kind at once, then at most one per interval,
    saying how many went unreported in between. Thread-safe (workers and the loop report)."""

    def __init__(self, interval: float = _REPORT_INTERVAL) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._unreported: dict[str, int] = {}
        self._lock = threading.Lock()

    def error(self, kind: str, message: str, *args: object) -> None:
        self._report(logging.ERROR, kind, message, *args)

    def warning(self, kind: str, message: str, *args: object) -> None:
        self._report(logging.WARNING, kind, message, *args)

    def _report(self, level: int, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._interval:
                self._unreported[kind] = self._unreported.get(kind, 0) + 1
                return
            self._last[kind] = now
            unreported = self._unreported.pop(kind, 0)
        if unreported:
            message += f" (and {unreported} more like it since the last report)"
        logger.log(level, message, *args)


def _read_failure(exc: OSError | StoreError) -> tuple[str, str]:
    """(kind, one line) for a store file that could not be read: its name and the errno."""
    if not isinstance(exc, OSError):
        return "store", str(exc)
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return f"read {code}", f"{exc.filename or 'a store file'}: {code} ({exc.strerror or exc})"


@contextlib.contextmanager
def _naming(what: object) -> Iterator[None]:
    """Let an OSError raised inside name `what` when it names no file (a failed read() does
    not: only open() knows the path)."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(what)
        raise


class _BadRequest(ValueError):
    pass


class _NotAcceptable(ValueError):
    pass


# --- answering a request (blocking; runs on a worker thread) ---------------------------------


def _text_reply(
    status: int, message: str, *headers: tuple[str, str], keep_alive: bool = True
) -> _Reply:
    body = (message.rstrip("\n") + "\n").encode()
    return _Reply(
        status,
        [("Content-Type", _TEXT), ("Content-Length", str(len(body))), *headers],
        first=body,
        length=len(body),
        keep_alive=keep_alive,
    )


def _content_type(name: str) -> str:
    _, dot, extension = name.rpartition(".")
    if not dot:
        return _DEFAULT_CONTENT_TYPE
    return _CONTENT_TYPES.get(f".{extension.lower()}", _DEFAULT_CONTENT_TYPE)


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """The one byte range [start, end) a Range header asks for; None to send the whole file."""
    unit, equals, spec = value.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    ranges = [part.strip() for part in spec.split(",") if part.strip()]
    if len(ranges) != 1:
        # RFC 9110 lets a server ignore Range; one full body beats multipart/byteranges here.
        return None
    first, dash, last = ranges[0].partition("-")
    first, last = first.strip(), last.strip()
    if (
        not dash
        or (first and not _DIGITS.fullmatch(first))
        or (last and not _DIGITS.fullmatch(last))
    ):
        return None
    if not first:
        if not last:
            return None
        suffix = int(last) if len(last) < 19 else _HUGE
        if suffix == 0:
            raise _Unsatisfiable
        if size == 0:
            return None
        return max(size - suffix, 0), size
    start = int(first) if len(first) < 19 else _HUGE
    stop = (int(last) if len(last) < 19 else _HUGE) if last else None
    if stop is not None and stop < start:
        return None
    if start >= size:
        raise _Unsatisfiable
    return start, size if stop is None else min(stop + 1, size)


def _etag_matches(header: str, etag: str) -> bool:
    # If-None-Match uses the weak comparison: W/"x" matches "x".
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag.removeprefix("W/"):
            return True
    return False


def _listing(path: str, entries: list[Link]) -> bytes:
    title = html.escape(urllib.parse.unquote(path))
    rows = []
    if path.count("/") > 3:  # /ipfs/<cid>/ has three slashes; deeper folders get a parent link
        rows.append('<li><a href="../">../</a></li>')
    for link in entries:
        href = "./" + urllib.parse.quote(link.name, safe="")
        rows.append(
            f'<li><a href="{html.escape(href)}">{html.escape(link.name)}</a>'
            f" <small>{html.escape(str(link.cid))}</small></li>"
        )
    page = (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        f"<title>Index of {title}</title>\n</head>\n<body>\n<h1>Index of {title}</h1>\n"
        "<ul>\n" + "\n".join(rows) + "\n</ul>\n</body>\n</html>\n"
    )
    return page.encode("utf-8", "surrogateescape")


def _parse_path(path: str) -> tuple[CID, tuple[str, ...]]:
    """`/ipfs/CID/PATH` checked and split (remembered: clients ask for the same paths again)."""
    return _parse_short_path(path) if len(path) <= 1024 else _split_path(path)


def _split_path(path: str) -> tuple[CID, tuple[str, ...]]:
    if _BAD_PERCENT.search(path):
        raise _BadRequest("malformed percent-encoding")
    for segment in path.split("/"):
        try:
            urllib.parse.unquote_to_bytes(segment).decode("utf-8")
        except UnicodeDecodeError:
            raise _BadRequest("percent-encoded bytes are not UTF-8") from None
    root, segments = dag.split_path(path[len("/ipfs/") :])
    return root, tuple(segments)


_parse_short_path = functools.lru_cache(maxsize=4096)(_split_path)


# A CID's text is base32 work each time: the same few are named in every ETag.
_cid_text = functools.lru_cache(maxsize=16384)(str)


class _Answerer:
    """Turns one parsed request into a reply, reading the store; never raises for bad input."""

    def __init__(self, store: Store, reports: _Reports) -> None:
        self.store = store
        self.reports = reports
        self._nodes: _Lru[tuple[CID, tuple[str, ...]], dag.Node] = _Lru(_NODE_ENTRIES)
        self._blocks: _Lru[CID, bytes] = _Lru(_BLOCK_CACHE_BYTES, len)
        self._small: _Lru[CID, bytes] = _Lru(_SMALL_CACHE_BYTES, len)
        self._leaves: _Lru[CID, bytes] = _Lru(_LEAF_CACHE_BYTES, len)
        # A file's layout, or False for a file that has none (its blocks are read instead).
        self._layouts: _Lru[CID, Layout | bool] = _Lru(_LAYOUT_ENTRIES)
        # A plain directory's entries by name (decoded once: `simple/` lists every project),
        # or False for a node looked up the usual way (a HAMT, a file).
        self._directories: _Lru[CID, dict[str, Link] | bool] = _Lru(
            _DIRECTORY_LINKS, lambda entries: len(entries) if isinstance(entries, dict) else 1
        )

    def answer(self, request: _Request, *, inline: bool = False) -> _Reply:
        """The reply to `request`. With `inline` (on the event loop) it is made from the caches
        alone, and _NeedsStore is raised the moment a store read would be needed."""
        if request.method not in {"GET", "HEAD"}:
            return _text_reply(
                405, f"method {request.method} is not allowed", ("Allow", "GET, HEAD")
            )
        if request.path == "/":
            return _text_reply(200, _LANDING)
        if not request.path.startswith("/ipfs/"):
            return _text_reply(404, f"{request.path} is not served here; paths start /ipfs/<cid>/")
        try:
            return self._ipfs(request, inline)
        except _NeedsStore:
            raise
        except (dag.InvalidPath, _BadRequest) as exc:
            return _text_reply(400, f"bad path: {exc}")
        except _NotAcceptable as exc:
            return _text_reply(406, f"not acceptable: {exc}")
        except IntegrityError as exc:
            self.reports.error("corrupt", "refusing %s: %s", request.path, exc)
            return _text_reply(500, "corrupt block in store")
        except NotFound as exc:
            return _text_reply(404, f"not found: {exc}")
        except (OSError, StoreError) as exc:
            # EIO, a file that became a directory, a vanished mount: this request fails, the
            # gateway goes on serving everything else.
            kind, line = _read_failure(exc)
            self.reports.error(kind, "cannot read the store for %s: %s", request.path, line)
            return _text_reply(500, "cannot read the store")
        except Exception:
            logger.exception("internal error answering %s", request.path)
            return _text_reply(500, "internal error")

    def _ipfs(self, request: _Request, inline: bool) -> _Reply:
        path = request.path
        root, parsed = _parse_path(path)
        segments = list(parsed)
        cache_control = (request.header("cache-control") or "").lower()
        if "only-if-cached" in cache_control:
            if inline:
                raise _NeedsStore
            if not _have_block(self.store, root):
                return _text_reply(412, f"{root} is not in this gateway's store")
        trustless = _trustless_format(request)
        if trustless is not None:
            if inline:
                raise _NeedsStore
            return self._trustless(request, root, segments, trustless)
        target = self._resolve(root, segments, inline)
        common = [("X-Ipfs-Path", path), ("Cache-Control", _IMMUTABLE), ("Vary", "Accept")]
        if target.is_dir:
            if not path.endswith("/"):
                location = path + "/" + (f"?{request.query}" if request.query else "")
                return _text_reply(301, f"moved to {location}", ("Location", location), *common)
            try:
                index = self._resolve(target.cid, ["index.html"], inline)
            except NotFound:
                index = None
            if index is None or index.is_dir:
                if inline:
                    raise _NeedsStore
                return self._listing(request, target.cid, common)
            return self._file(request, index, "index.html", common, inline)
        return self._file(request, target, segments[-1] if segments else "", common, inline)

    def _resolve(self, root: CID, segments: list[str], inline: bool) -> dag.Node:
        key = (root, tuple(segments))
        found = self._nodes.get(key)
        if found is None:
            if inline:
                raise _NeedsStore
            found = dag.resolve(self.store, root, segments, self._get_block, self._lookup)
            self._nodes.put(key, found)
        return found

    def _lookup(self, cid: CID, name: str) -> Link | None:
        entries = self._directories.get(cid)
        if entries is None:
            entries = False
            if unixfs.node_kind(cid, self._get_block) == "directory":
                entries = {}
                for link in unixfs.list_directory(cid, self._get_block):
                    entries.setdefault(link.name, link)  # as unixfs.lookup: the first of a name
            self._directories.put(cid, entries)
        if entries is False:
            return unixfs.lookup(cid, name, self._get_block)
        assert isinstance(entries, dict)
        return entries.get(name)

    def _chunks(
        self, cid: CID, start: int, end: int, *, keep_leaves: bool = True
    ) -> Iterator[bytes]:
        """Bytes [start, end) of a file, leaf by leaf, each verified once (and then kept)."""
        layout = self._layouts.get(cid)
        if layout is None:
            with _naming(self.store.layout_path(cid)):
                layout = self.store.get_layout(cid) or False
            self._layouts.put(cid, layout)
        if layout is False:
            yield from unixfs.iter_file(cid, self._read_block, start, end)
            return
        assert isinstance(layout, Layout)
        for leaf, offset, length in layout.leaves:
            if offset + length <= start or offset >= end:
                continue
            data = self._leaves.get(leaf)
            if data is None:
                with _naming(self.store.object_path(layout.object_sha256)):
                    data = b"".join(self.store.iter_layout(layout, offset, offset + length))
                if keep_leaves:
                    self._leaves.put(leaf, data)
            yield data[max(start - offset, 0) : min(end - offset, length)]

    def _read_block(self, cid: CID) -> bytes:
        """The block from the store, verified against its CID; an OSError names its file."""
        try:
            return self.store.get_block(cid)
        except OSError as exc:
            if exc.filename is None:
                path = self.store.block_path(cid)
                # A leaf of a laid-out file has no file of its own: it is read from the object.
                exc.filename = str(path) if path.exists() else f"the object holding block {cid}"
            raise

    def _get_block(self, cid: CID) -> bytes:
        data = self._blocks.get(cid)
        if data is None:
            data = self._read_block(cid)
            if len(data) <= _CACHED_BLOCK:
                self._blocks.put(cid, data)
        return data

    def _listing(self, request: _Request, cid: CID, common: list[tuple[str, str]]) -> _Reply:
        # A generated page is not in the DAG and may change with ipwhl, so its tag names both.
        etag = f'"DirIndex-{_SERVER}_CID-{cid}"'
        headers = [("ETag", etag), *common]
        conditional = request.header("if-none-match")
        if conditional is not None and _etag_matches(conditional, etag):
            return _Reply(304, headers)
        body = _listing(request.path, dag.list_dir(self.store, cid))
        return _Reply(
            200,
            [("Content-Type", _HTML), ("Content-Length", str(len(body))), *headers],
            first=body,
            length=len(body),
        )

    def _file(
        self,
        request: _Request,
        node: dag.Node,
        name: str,
        common: list[tuple[str, str]],
        inline: bool = False,
    ) -> _Reply:
        etag = f'"{_cid_text(node.cid)}"'
        headers = [("ETag", etag), *common]
        conditional = request.header("if-none-match")
        if conditional is not None and _etag_matches(conditional, etag):
            return _Reply(304, headers)
        headers = [
            ("Content-Type", _content_type(name)),
            ("Accept-Ranges", "bytes"),
            ("X-Content-Type-Options", "nosniff"),
            *headers,
        ]
        size = node.size
        span: tuple[int, int] | None = None
        range_header = request.headers.get("range")
        if_range = request.header("if-range")
        if range_header and len(range_header) == 1 and (if_range is None or if_range == etag):
            try:
                span = _parse_range(range_header[0], size)
            except _Unsatisfiable:
                return _text_reply(
                    416, "range not satisfiable", ("Content-Range", f"bytes */{size}")
                )
        status, start, end = (200, 0, size) if span is None else (206, *span)
        if status == 206:
            headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
        headers.append(("Content-Length", str(end - start)))
        reply = _Reply(status, headers, length=end - start)
        if request.method == "HEAD" or end == start:
            return reply
        if size <= _SMALL_FILE:
            data = self._small.get(node.cid)
            if data is None:
                if inline:
                    raise _NeedsStore
                # Verified leaf by leaf; the whole file is kept below, not its leaves too.
                data = b"".join(self._chunks(node.cid, 0, size, keep_leaves=False))
                self._small.put(node.cid, data)
            reply.first = data[start:end]
            return reply
        if inline:
            raise _NeedsStore
        # Read the first leaf now: a missing or corrupt one still gets an honest status line.
        chunks = self._chunks(node.cid, start, end)
        reply.first = _next_chunk(chunks)
        reply.rest = chunks
        return reply

    def _trustless(
        self, request: _Request, root: CID, segments: list[str], wanted: _Trustless
    ) -> _Reply:
        # A block or a CAR, which the client verifies itself (trustless gateway spec).
        get_block = self._read_block
        terminal, path_blocks, steps = car.resolve_path(get_block, root, segments)
        headers = [
            ("Cache-Control", _IMMUTABLE),
            ("X-Ipfs-Path", request.path),
            ("X-Ipfs-Roots", ",".join(str(cid) for cid in steps)),
            ("X-Content-Type-Options", "nosniff"),
            ("Vary", "Accept"),
        ]
        if wanted.from_accept:
            # Caches key on the URL: name the URL that gives this representation by itself.
            query = f"&{request.query}" if request.query else ""
            headers.append(("Content-Location", f"{request.path}?format={wanted.kind}{query}"))
        if wanted.kind == "raw":
            etag = f'"{terminal}.raw"'
            headers += [
                ("Content-Type", _RAW_BLOCK),
                ("Content-Disposition", f'attachment; filename="{terminal}.bin"'),
                ("ETag", etag),
            ]
            conditional = request.header("if-none-match")
            if conditional is not None and _etag_matches(conditional, etag):
                return _Reply(304, headers)
            block = car.block_bytes(get_block, terminal)
            headers.append(("Content-Length", str(len(block))))
            body = b"" if request.method == "HEAD" else block
            return _Reply(200, headers, first=body, length=len(block))
        scope, byte_range = _car_scope(request, self.store, terminal)
        variant = f"{'/'.join(segments)}\0{scope}\0{byte_range}\0{wanted.dups}"
        digest = hashlib.sha256(variant.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        etag = f'W/"{root}.car.{digest}"'
        dups = "y" if wanted.dups else "n"
        headers += [
            ("Content-Type", f"{_CAR_STREAM}; version=1; order=dfs; dups={dups}"),
            ("Content-Disposition", f'attachment; filename="{terminal}.car"'),
            ("Accept-Ranges", "none"),
            ("ETag", etag),
        ]
        conditional = request.header("if-none-match")
        if conditional is not None and _etag_matches(conditional, etag):
            return _Reply(304, headers)
        reply = _Reply(200, headers, length=None)
        if request.method == "HEAD":
            car.block_bytes(get_block, terminal)  # 404 now if the DAG is not here
            return reply

        def blocks() -> Iterator[tuple[CID, bytes]]:
            seen: set[CID] = set()
            for cid in path_blocks:
                seen.add(cid)
                yield cid, car.block_bytes(get_block, cid)
            yield from car.walk_dag(
                get_block, terminal, scope=scope, byte_range=byte_range, dups=wanted.dups,
                seen=seen,
            )

        # The first piece holds the terminal's block: a missing one is still an honest 404.
        chunks = _batched(car.car_stream([root], blocks()))
        reply.first = _next_chunk(chunks)
        reply.rest = chunks
        return reply


def _next_chunk(chunks: Iterator[bytes]) -> bytes:
    """The next non-empty piece of a body, b"" at its end."""
    return next((chunk for chunk in chunks if chunk), b"")


def _next_pieces(chunks: Iterator[bytes]) -> list[bytes]:
    """The next pieces of a body, about _BODY_PIECE bytes together; [] at its end."""
    pieces: list[bytes] = []
    size = 0
    for chunk in chunks:
        if chunk:
            pieces.append(chunk)
            size += len(chunk)
            if size >= _BODY_PIECE:
                break
    return pieces


# --- trustless responses (application/vnd.ipld.raw and application/vnd.ipld.car) ---------------

_RAW_BLOCK = "application/vnd.ipld.raw"
_CAR_STREAM = "application/vnd.ipld.car"
_SCOPES = ("all", "entity", "block")
_ENTITY_BYTES = re.compile(r"(-?[0-9]{1,18}):(\*|-?[0-9]{1,18})")
# A CAR goes out in pieces of about this size: fewer trips to the worker threads.
_CAR_PIECE = 256 * 1024


@dataclass(frozen=True)
class _Trustless:
    """A negotiated trustless response: a raw block or a CAR, and how it was asked for."""

    kind: str  # "raw" or "car"
    from_accept: bool  # chosen by the Accept header rather than ?format=
    dups: bool = False


def _media_ranges(accept: str) -> Iterator[tuple[str, dict[str, str]]]:
    for entry in accept.split(","):
        media, *parameters = (part.strip() for part in entry.split(";"))
        values = {}
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            values[key.strip().lower()] = value.strip().strip('"')
        yield media.lower(), values


def _car_variant(values: dict[str, str]) -> bool | None:
    """dups wanted for a CAR with these parameters; None if we cannot produce that variant."""
    if values.get("version", "1") != "1" or values.get("order", "dfs") not in {"dfs", "unk"}:
        return None
    dups = values.get("dups", "n")
    return None if dups not in {"y", "n"} else dups == "y"


def _trustless_format(request: _Request) -> _Trustless | None:
    """The trustless response a request asks for (?format= first, then Accept), else None."""
    accept = request.header("accept") or ""
    if not request.query and "vnd.ipld." not in accept.lower():
        return None  # what pip, uv and browsers send: no need to parse it
    query = urllib.parse.parse_qs(request.query, keep_blank_values=True)
    explicit = (query.get("format") or [""])[-1]
    accepted = list(_media_ranges(request.header("accept") or ""))
    accepted = [(media, values) for media, values in accepted if values.get("q") not in _ZERO_Q]
    car_values = {
        key.removeprefix("car-"): value[-1]
        for key, value in query.items()
        if key in {"car-version", "car-order", "car-dups"}
    }
    if explicit:
        if explicit == "raw":
            return _Trustless("raw", False)
        if explicit != "car":
            raise _BadRequest(f"format={explicit} is not served here (raw or car)")
        values = next((v for media, v in accepted if media == _CAR_STREAM), {})
        dups = _car_variant({**values, **car_values})
        if dups is None:
            raise _NotAcceptable("this gateway sends CARs as version=1, order=dfs, dups=y or n")
        return _Trustless("car", False, dups)
    refused = False
    for media, values in accepted:
        if media == _RAW_BLOCK:
            return _Trustless("raw", True)
        if media == _CAR_STREAM:
            dups = _car_variant({**values, **car_values})
            if dups is not None:
                return _Trustless("car", True, dups)
            refused = True
    if refused:
        raise _NotAcceptable("this gateway sends CARs as version=1, order=dfs, dups=y or n")
    return None


_ZERO_Q = frozenset({"0", "0.", "0.0", "0.00", "0.000"})


def _car_scope(
    request: _Request, store: Store, terminal: CID
) -> tuple[car.Scope, tuple[int, int] | None]:
    """dag-scope and entity-bytes of a CAR request, the byte range resolved against the file."""
    query = urllib.parse.parse_qs(request.query, keep_blank_values=True)
    scope = (query.get("dag-scope") or ["all"])[-1]
    if scope not in _SCOPES:
        raise _BadRequest(f"dag-scope={scope} is not one of block, entity, all")
    entity_bytes = (query.get("entity-bytes") or [None])[-1]
    if entity_bytes is None:
        return scope, None  # type: ignore[return-value]
    match = _ENTITY_BYTES.fullmatch(entity_bytes)
    if match is None:
        raise _BadRequest(f"entity-bytes={entity_bytes} is not FROM:TO (integers, TO may be *)")
    def get_block(cid: CID) -> bytes:
        return car.block_bytes(store.get_block, cid)

    if unixfs.node_kind(terminal, get_block) in {"directory", "hamt"}:
        return "entity", None  # not a byte array: the parameter is ignored
    size = unixfs.file_size(terminal, get_block)
    first = int(match[1])
    last = size - 1 if match[2] == "*" else int(match[2])
    first = max(size + first, 0) if first < 0 else first
    last = size + last if last < 0 else min(last, size - 1)
    if size and first >= size:
        raise _BadRequest(f"entity-bytes={entity_bytes} lies outside the file's {size} bytes")
    if not size or last < first:
        return "block", None  # an empty range: the root block tells the client why
    return "entity", (first, last)


def _batched(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Join small pieces of a stream into ones of about _CAR_PIECE bytes."""
    pending: list[bytes] = []
    size = 0
    for piece in pieces:
        pending.append(piece)
        size += len(piece)
        if size >= _CAR_PIECE:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


def _have_block(store: Store, cid: CID) -> bool:
    return cid.hash_code == IDENTITY or store.has_block(cid)


# --- the connection loop -----------------------------------------------------------------------


class _Connection:
    """One client: read a request, answer it, repeat while both sides keep the connection."""

    def __init__(
        self, gateway: Gateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.gateway = gateway
        self.reader = reader
        self.writer = writer
        self.http = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEADER_BYTES)
        self.timeout = gateway.config.idle_timeout

    async def run(self) -> None:
        while True:
            try:
                event = self.http.next_event()  # a request already read needs no timer
                if event is h11.NEED_DATA:
                    async with asyncio.timeout(self.timeout):
                        event = await self._next_event()
            except TimeoutError:
                if self.http.trailing_data[0] and self.http.our_state is h11.IDLE:
                    await self._send_final(408, "request timeout")
                return
            except h11.RemoteProtocolError as exc:
                if self.http.our_state in {h11.IDLE, h11.SEND_RESPONSE}:
                    await self._send_final(exc.error_status_hint, f"bad request: {exc}")
                return
            if not isinstance(event, h11.Request):
                return
            if _head_size(event) > _MAX_HEADER_BYTES:
                # h11 only limits heads that arrive in pieces; one that arrived whole counts too.
                await self._send_final(431, "request header fields too large")
                return
            request = _request(event)
            if request is None:
                await self._send_final(400, "bad request target")
                return
            if "content-length" in request.headers and "transfer-encoding" in request.headers:
                # Two framings: a proxy in front may have read another body (request smuggling).
                await self._send_final(400, "both Content-Length and Transfer-Encoding")
                return
            reply = self.gateway._answer_inline(request)
            if reply is None:
                reply = await self.gateway._run(self.gateway._answerer.answer, request)
            access_log.info("%s %s %d", request.method, request.path, reply.status)
            if not await self._send_reply(reply, head=request.method == "HEAD"):
                return
            if not await self._finish_cycle():
                return

    async def _send_final(self, status: int, message: str) -> None:
        await self._send_reply(_text_reply(status, message, keep_alive=False), head=False)

    async def _next_event(self) -> h11.Event:
        while True:
            event = self.http.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            self.http.receive_data(await self.reader.read(_READ_SIZE))

    async def _write(self, data: bytes | list[bytes]) -> None:
        if isinstance(data, list):
            self.writer.writelines(data)
        else:
            self.writer.write(data)
        if not self.writer.transport.get_write_buffer_size():
            await self.writer.drain()  # nothing buffered: it cannot wait, only raise if closed
            return
        # A client that stops reading is dropped like one that stops sending.
        async with asyncio.timeout(self.timeout):
            await self.writer.drain()

    async def _send_reply(self, reply: _Reply, *, head: bool) -> bool:
        """Send `reply`; True if the body went out whole, False if the connection must end."""
        # Head, body and end go out in one write when the body is in hand (a small file).
        out = [self.http.send(_response(reply))]
        sent = 0
        if not head and reply.status not in {204, 304}:
            pieces = [reply.first] if reply.first else []
            while pieces:
                size = sum(len(piece) for piece in pieces)
                if reply.length is not None and sent + size > reply.length:
                    return self._abort(f"body longer than its Content-Length {reply.length}")
                sent += size
                for piece in pieces:
                    out += self.http.send_with_data_passthrough(h11.Data(data=piece))
                if reply.rest is None:
                    break
                await self._write(out)  # type: ignore[arg-type]
                out = []
                try:
                    pieces = await self.gateway._run(_next_pieces, reply.rest)
                except IntegrityError as exc:
                    return self._abort(f"corrupt block while streaming: {exc}", "corrupt")
                except (OSError, StoreError) as exc:
                    kind, line = _read_failure(exc)
                    return self._abort(f"cannot read the store: {line}", kind)
                except Exception as exc:
                    logger.exception("error while streaming")
                    return self._abort(str(exc))
            if reply.length is not None and sent != reply.length:
                return self._abort(f"body of {sent} bytes, Content-Length said {reply.length}")
        out.append(self.http.send(h11.EndOfMessage()))  # type: ignore[arg-type]
        await self._write(out)  # type: ignore[arg-type]
        return True

    def _abort(self, why: str, kind: str = "abort") -> bool:
        # Headers promised bytes we cannot send correctly: a reset is the honest answer.
        self.gateway._reports.error(kind, "aborting a response: %s", why)
        self.writer.transport.abort()
        return False

    async def _finish_cycle(self) -> bool:
        """Read the rest of the request (dropping any body); True if the next one may follow."""
        discarded = 0
        while self.http.their_state is h11.SEND_BODY:
            try:
                event = self.http.next_event()  # usually read with the request: no timer
                if event is h11.NEED_DATA:
                    async with asyncio.timeout(self.timeout):
                        event = await self._next_event()
            except (TimeoutError, h11.RemoteProtocolError):
                return False
            if isinstance(event, h11.Data):
                discarded += len(event.data)
                if discarded > _MAX_DISCARDED_BODY:
                    return False
            elif not isinstance(event, h11.EndOfMessage):
                return False
        if self.http.our_state is h11.DONE and self.http.their_state is h11.DONE:
            self.http.start_next_cycle()
            return True
        return False


_date: tuple[int, str] = (0, "")


def _http_date() -> str:
    # Formatting the date costs more than the rest of a small reply's head: once a second.
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True))
    return _date[1]


def _response(reply: _Reply) -> h11.Response:
    headers = [("Date", _http_date()), ("Server", _SERVER), *reply.headers]
    if not reply.keep_alive:
        headers.append(("Connection", "close"))
    return h11.Response(
        status_code=reply.status, headers=headers, reason=HTTPStatus(reply.status).phrase.encode()
    )


def _head_size(event: h11.Request) -> int:
    return len(event.target) + sum(len(name) + len(value) + 4 for name, value in event.headers)


def _request(event: h11.Request) -> _Request | None:
    try:
        target = event.target.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not target.startswith("/"):
        # Absolute-form ("http://host/path") is what proxies send; HTTP/1.1 servers accept it.
        try:
            parts = urllib.parse.urlsplit(target)
        except ValueError:  # "http://[::1" and the like
            return None
        if parts.scheme not in {"http", "https"}:
            return None if target != "*" else _Request(event.method.decode(), "*", "", {})
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    path, _, query = target.partition("?")
    headers: dict[str, list[str]] = {}
    for name, value in event.headers:
        headers.setdefault(name.decode("ascii").lower(), []).append(value.decode("latin-1"))
    return _Request(event.method.decode("ascii"), path, query, headers)


# --- the server --------------------------------------------------------------------------------


class Gateway:
    """The HTTP gateway over `store`; `start` binds, `serve_forever` serves, `close` stops."""

    def __init__(self, store: Store, config: GatewayConfig = GatewayConfig()) -> None:
        self.store = store
        self.config = config
        self._reports = _Reports()
        self._answerer = _Answerer(store, self._reports)
        self._listeners: list[socket.socket] = []
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._active = 0  # connections being served (at most _cap)
        self._cap = config.max_connections
        self._open = 0  # accepted sockets not yet closed: served, refused, or starting
        self._starting: set[socket.socket] = set()  # accepted, their task not yet running
        self._most_open = config.max_connections
        self._files_limit = 0
        self._accepting = False
        self._closing = False
        self._retry: asyncio.TimerHandle | None = None
        self._backoff = _MIN_BACKOFF

    async def start(self) -> int:
        """Bind the listening socket; return the port actually bound (port 0 picks a free one)."""
        if self._listeners:
            raise GatewayError("the gateway is already started")
        # Each connection is a file descriptor: serve no more than the process may open, less
        # a margin for store reads and refusals, and accept no more than it may open at all;
        # the rest wait in the kernel's queue, so accept() seldom meets EMFILE.
        self._files_limit = _open_files_limit()
        self._cap = min(self.config.max_connections, max(16, self._files_limit - _FD_MARGIN))
        self._most_open = max(self._cap, self._files_limit - _FD_RESERVE)
        try:
            self._listeners = _listen(self.config.host, self.config.port)
        except OSError as exc:
            raise GatewayError(
                f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror or exc}"
            ) from exc
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=_WORKERS, thread_name_prefix="ipwhl-gateway"
        )
        self._closing = False
        self._start_accepting()
        return int(self._listeners[0].getsockname()[1])

    async def serve_forever(self) -> None:
        """Serve until cancelled (binding first if `start` was not called)."""
        if not self._listeners:
            await self.start()
        await asyncio.get_running_loop().create_future()  # connections are served by tasks

    async def close(self) -> None:
        """Stop listening, end every open connection, and release the worker threads."""
        self._closing = True
        self._stop_accepting()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for listener in self._listeners:
            listener.close()
        self._listeners = []
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for sock in self._starting:  # their tasks were cancelled before they began
            sock.close()
        self._starting.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # -- accepting ------------------------------------------------------------------------------
    # asyncio's own accept loop (3.11) meets EMFILE by trying accept() again up to `backlog`
    # times, each scheduling another retry a second later; under a sustained shortage the
    # retries multiply and the loop's CPU grows second by second. Here accepting pauses instead:
    # at the open-files budget until a connection closes, on EMFILE for a backoff.

    def _start_accepting(self) -> None:
        if self._accepting or self._closing or self._retry is not None:
            return
        if self._open >= self._most_open:
            return  # resumed when a connection closes
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            loop.add_reader(listener.fileno(), self._accept, listener)
        self._accepting = True

    def _stop_accepting(self) -> None:
        if not self._accepting:
            return
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            loop.remove_reader(listener.fileno())
        self._accepting = False

    def _retry_accepting(self) -> None:
        self._retry = None
        self._start_accepting()

    def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(_ACCEPT_BATCH):
            if self._open >= self._most_open:
                self._stop_accepting()
                self._reports.warning(
                    "files", "out of file descriptors: %d connections open, all that the "
                    "open-files limit of %d allows; new connections wait; raise `ulimit -n`",
                    self._open, self._files_limit,
                )
                return
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._stop_accepting()
                if exc.errno in _OUT_OF_RESOURCES:
                    self._reports.warning(
                        "files", "out of file descriptors (%s): new connections wait; raise "
                        "`ulimit -n`", exc,
                    )
                else:
                    self._reports.error(f"accept {exc.errno}", "accept() failed: %s", exc)
                self._retry = loop.call_later(self._backoff, self._retry_accepting)
                self._backoff = min(self._backoff * 2, _MAX_BACKOFF)
                return
            self._backoff = _MIN_BACKOFF
            self._open += 1
            self._starting.add(sock)
            task = loop.create_task(self._accepted(sock))
            self._tasks.add(task)

    async def _accepted(self, sock: socket.socket) -> None:
        task = asyncio.current_task()
        self._starting.discard(sock)
        try:
            try:
                sock.setblocking(False)
                reader, writer = await asyncio.open_connection(sock=sock)
            except BaseException:
                sock.close()
                raise
            await self._on_connection(reader, writer)
            # Counted off once the socket is really closed (and its error, if any, retrieved).
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            self._open -= 1
            self._start_accepting()

    # -- serving --------------------------------------------------------------------------------

    def _answer_inline(self, request: _Request) -> _Reply | None:
        """The reply, if the caches hold all it needs (no store read on the event loop)."""
        try:
            return self._answerer.answer(request, inline=True)
        except _NeedsStore:
            return None

    async def _run(self, function: Callable[..., _T], *args: object) -> _T:
        # Measured: hashing a 256 KiB leaf off the loop (sha256 drops the GIL) serves large
        # files ~1.7x faster with 50 clients than doing it inline, at ~0.4 ms per small request.
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        over_cap = self._active >= self._cap
        if not over_cap:
            self._active += 1
        finished = False
        try:
            if over_cap:
                await self._refuse(reader, writer)
            else:
                await _Connection(self, reader, writer).run()
            finished = True
        except (ConnectionError, TimeoutError, asyncio.CancelledError):
            pass
        except Exception:
            logger.exception("connection failed")
        finally:
            if not over_cap:
                self._active -= 1
            if finished:
                writer.close()
                if writer.transport.get_write_buffer_size():
                    # The last bytes wait for a client that may never read them: not forever.
                    asyncio.get_running_loop().call_later(
                        self.config.idle_timeout, writer.transport.abort
                    )
            else:
                # close() would wait to flush to a client that may never read; drop it now.
                writer.transport.abort()

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        http = h11.Connection(h11.SERVER)
        reply = _text_reply(
            503, "too many connections; try again", ("Retry-After", "1"), keep_alive=False
        )
        writer.write(http.send(_response(reply)))  # type: ignore[arg-type]
        writer.write(http.send(h11.Data(data=reply.first)))  # type: ignore[arg-type]
        writer.write(http.send(h11.EndOfMessage()))  # type: ignore[arg-type]
        # Closing with the request unread would reset the socket and lose the 503; linger a bit.
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(_REFUSAL_GRACE):
                await writer.drain()
                if writer.can_write_eof():
                    writer.write_eof()
                while await reader.read(_READ_SIZE):
                    pass



# File descriptors kept free for worker threads reading the store, the listening socket, logs,
# and connections accepted only to be refused.
_FD_MARGIN = 128
# Of those, kept free even of refusals: workers' store files, listeners, logs, the loop's own.
_FD_RESERVE = 32
_ACCEPT_BATCH = 256  # accept() calls per wake-up of a listener, so the loop stays fair
_MIN_BACKOFF = 0.05  # seconds before accept() is tried again after EMFILE, doubling to the max
_MAX_BACKOFF = 1.0
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _open_files_limit() -> int:
    """Raise the soft limit on open files to the hard one, as servers do; the limit in force."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows has no such limit
        return 1 << 20
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def _listen(host: str, port: int) -> list[socket.socket]:
    """Non-blocking listening sockets on every address `host` names ("" for all), one port."""
    infos = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            listener = socket.socket(family, kind, proto)
            listeners.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # One socket per family, as asyncio does: "::" must not take IPv4 too.
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(listeners) > 1:
                # Port 0 picks a free port once; every address serves on that one.
                address = (address[0], listeners[0].getsockname()[1], *address[2:])
            listener.bind(address)
            listener.listen(1024)
            listener.setblocking(False)
    except OSError:
        for listener in listeners:
            listener.close()
        raise
    return listeners


# --- entry points ------------------------------------------------------------------------------


def _url_host(host: str) -> str:
    if host in {"", "0.0.0.0"}:
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def serve(store: Store, config: GatewayConfig) -> None:
    """Serve until Ctrl-C or SIGTERM; GatewayError if the address cannot be bound."""

    async def main() -> None:
        gateway = Gateway(store, config)
        port = await gateway.start()
        print(f"ipwhl: serving http://{_url_host(config.host)}:{port}/ipfs/", file=sys.stderr)
        loop = asyncio.get_running_loop()
        serving = asyncio.ensure_future(gateway.serve_forever())
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, serving.cancel)
        try:
            await serving
        except asyncio.CancelledError:
            pass
        finally:
            await gateway.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


@contextlib.contextmanager
def running(store: Store, config: GatewayConfig = GatewayConfig(port=0)) -> Iterator[str]:
    """Run a gateway on a background thread with its own loop; yield its base URL."""
    loop = asyncio.new_event_loop()
    gateway = Gateway(store, config)
    bound: concurrent.futures.Future[int] = concurrent.futures.Future()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                bound.set_result(loop.run_until_complete(gateway.start()))
            except BaseException as exc:
                bound.set_exception(exc)
                return
            loop.run_forever()
            loop.run_until_complete(gateway.close())
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="ipwhl-gateway", daemon=True)
    thread.start()
    port = bound.result()
    try:
        yield f"http://{_url_host(config.host)}:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
