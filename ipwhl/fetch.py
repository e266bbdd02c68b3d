"""Sources to verified bytes in the store: nothing enters the store before its CID matches."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import stat
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.client import HTTPException, IncompleteRead
from pathlib import Path
from typing import Any

from . import __version__
from .cid import CID, SHA2_256
from .errors import FetchError, IntegrityError
from .store import Layout, Store
from .unixfs import Block, FileBuilder

__all__ = ["FetchedFile", "fetch_into_store", "open_source"]

_CHUNK = 1 << 18  # one UnixFS leaf: FileBuilder hashes a whole-leaf bytes without copying it
_RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}
USER_AGENT = f"ipwhl/{__version__}"
# Wheels declare no size, so a source sending more than this is cut off (IPWHL_MAX_WHEEL_BYTES);
# the largest wheels on PyPI and download.pytorch.org are a little over 2 GiB.
MAX_BYTES_ENV = "IPWHL_MAX_WHEEL_BYTES"
_DEFAULT_MAX_BYTES = 4 << 30
# One fetch, retries included, ends after this many seconds, however the server paces its bytes
# (a socket timeout alone never ends a transfer that drips a byte now and then).
DEADLINE_ENV = "IPWHL_FETCH_DEADLINE"
_DEFAULT_DEADLINE = 3600.0
_MAX_REDIRECTS = 5

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class FetchedFile:
    """A file now in the store: its sha256, size, and release CID (CIDv1, raw leaves)."""

    sha256: str
    size: int
    cid: CID
    tsize: int

    def to_record(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "cid": str(self.cid), "tsize": self.tsize}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> FetchedFile:
        return cls(record["sha256"], record["size"], CID.parse(record["cid"]), record["tsize"])


def _limit_from_env(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise FetchError(f"{name}={text!r} is not a number") from None
    if not value > 0:
        raise FetchError(f"{name}={text!r} must be positive")
    return value


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows a few redirects, to http: and https: only, and never from https: down to http:."""

    max_redirections = _MAX_REDIRECTS

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        old_scheme = urllib.parse.urlsplit(req.full_url).scheme
        new_scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if new_scheme not in {"http", "https"} or (old_scheme == "https" and new_scheme == "http"):
            fp.close()
            raise FetchError(
                f"cannot fetch {req.full_url}: it redirects to {newurl}; "
                "only redirects to http: or https: URLs are followed, never https: to http:"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Deadline:
    """At the deadline, shuts down every socket of one download, wherever a read is blocked
    (a status line, a header or the body dripping a byte at a time)."""

    def __init__(self, seconds: float) -> None:
        self.sockets: list[socket.socket] = []
        self.expired = False
        self.lock = threading.Lock()
        self.timer = threading.Timer(seconds, self._expire)
        self.timer.daemon = True
        self.timer.start()

    def _expire(self) -> None:
        with self.lock:
            self.expired = True
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def watch(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.append(sock)
            if self.expired:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self.timer.cancel()


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    """urllib with our redirect policy, whose connections the deadline can cut."""

    class Watched(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    class WatchedTLS(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    class Plain(urllib.request.HTTPHandler):
        def http_open(self, req):  # type: ignore[no-untyped-def]
            return self.do_open(Watched, req)

    class TLS(urllib.request.HTTPSHandler):
        def https_open(self, req):  # type: ignore[no-untyped-def]
            return self.do_open(WatchedTLS, req, context=self._context)

    return urllib.request.build_opener(Plain, TLS, _Redirects)


class _Download:
    """Streams a source, resuming an HTTP transfer where the server allows byte ranges."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        retries: int,
        deadline: float | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.retries = retries
        if deadline is None:
            deadline = _limit_from_env(DEADLINE_ENV, _DEFAULT_DEADLINE)
        if max_bytes is None:
            max_bytes = int(_limit_from_env(MAX_BYTES_ENV, _DEFAULT_MAX_BYTES))
        self.deadline = deadline
        self.max_bytes = max_bytes
        self.ends = time.monotonic() + self.deadline

    def _remaining(self) -> float:
        """Seconds left before the deadline; FetchError once it has passed."""
        left = self.ends - time.monotonic()
        if left <= 0:
            raise self._too_slow()
        return left

    def _too_slow(self) -> FetchError:
        return FetchError(
            f"cannot fetch {self.url}: not done within {self.deadline:g} s "
            f"(the server is too slow; {DEADLINE_ENV} sets the limit)"
        )

    def _check_size(self, size: int) -> None:
        if size > self.max_bytes:
            raise FetchError(
                f"cannot fetch {self.url}: it is larger than {self.max_bytes} bytes "
                f"({MAX_BYTES_ENV} sets the limit)"
            )

    def chunks(self, restart: Callable[[], None]) -> Iterator[bytes | memoryview]:
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme == "file":
            yield from self._file_chunks(Path(urllib.request.url2pathname(parsed.path)))
        elif parsed.scheme in {"http", "https"}:
            yield from self._http_chunks(restart)
        else:
            raise FetchError(f"cannot fetch {self.url}: unsupported URL scheme {parsed.scheme!r}")

    def _file_chunks(self, path: Path) -> Iterator[memoryview]:
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
            descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise FetchError(f"cannot read {path}: not a regular file")
        # One buffer for the whole file: a fresh 256 KiB object per read costs the kernel more
        # than the copy itself (perf: _copy_to_iter was 30% of a cold check's CPU time).
        buffer = bytearray(_CHUNK)
        view = memoryview(buffer)
        with open(descriptor, "rb", buffering=0) as handle:
            received = 0
            while count := handle.readinto(buffer):
                received += count
                self._check_size(received)
                yield view[:count]

    def _http_chunks(self, restart: Callable[[], None]) -> Iterator[bytes]:
        deadline = _Deadline(self._remaining())
        try:
            yield from self._http_attempts(restart, deadline)
        finally:
            deadline.cancel()

    def _http_attempts(self, restart: Callable[[], None], deadline: _Deadline) -> Iterator[bytes]:
        opener = _opener(deadline)
        received = 0
        attempt = 0
        while True:
            headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
            if received:
                headers["Range"] = f"bytes={received}-"
            request = urllib.request.Request(self.url, headers=headers)
            try:
                timeout = min(self.timeout, self._remaining())
                with opener.open(request, timeout=timeout) as response:
                    if received and not _resumes_at(response, received):
                        # The server ignored the range (or sent another): start over.
                        restart()
                        received = 0
                    self._check_size(received + (response.length or 0))
                    while chunk := response.read(_CHUNK):
                        received += len(chunk)
                        self._check_size(received)
                        yield chunk
                    if deadline.expired:
                        # Cut at the deadline, a body without a length looks complete.
                        raise self._too_slow()
                    if response.length:
                        # http.client ends a body cut short by a closed connection without an
                        # error; treat it as the failure it is, so the rest is fetched by Range.
                        raise IncompleteRead(b"", response.length)
                    return
            except urllib.error.HTTPError as exc:
                exc.close()
                if deadline.expired:
                    raise self._too_slow() from None
                if exc.code not in _RETRYABLE_HTTP or attempt >= self.retries:
                    raise FetchError(
                        f"cannot fetch {self.url}: HTTP {exc.code} {exc.reason}"
                    ) from exc
            except (urllib.error.URLError, HTTPException, OSError) as exc:
                if deadline.expired:
                    raise self._too_slow() from None
                if attempt >= self.retries:
                    reason = getattr(exc, "reason", None) or exc
                    raise FetchError(
                        f"cannot fetch {self.url}: {reason} (after {attempt + 1} attempts)"
                    ) from exc
            attempt += 1
            time.sleep(min(0.25 * 2**attempt, 4.0, self._remaining()))


def _resumes_at(response: Any, offset: int) -> bool:
    """Whether a response to `Range: bytes=offset-` is a 206 starting at `offset`."""
    if response.status != 206:
        return False
    content_range = response.headers.get("Content-Range", "")
    unit, _, spec = content_range.partition(" ")
    return unit.strip().lower() == "bytes" and spec.split("-", 1)[0].strip() == str(offset)


class _Hashers:
    """Every digest a fetch needs, fed in one pass over the bytes."""

    def __init__(self, content_id: CID) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.interior: list[Block] = []
        self.leaves: list[tuple[CID, int, int]] = []
        self.release = FileBuilder(
            cid_version=1, hash_code=SHA2_256, on_block=self._on_block, on_leaf=self._on_leaf
        )
        release_like = content_id.version == 1 and content_id.hash_code == SHA2_256
        self.declared: FileBuilder | None = None
        if not release_like:
            self.declared = FileBuilder(
                cid_version=content_id.version, hash_code=content_id.hash_code
            )

    def _on_block(self, block: Block, offset: int | None) -> None:
        self.interior.append(block)

    def _on_leaf(self, cid: CID, offset: int, size: int) -> None:
        self.leaves.append((cid, offset, size))

    def update(self, chunk: bytes | memoryview) -> None:
        self.sha256.update(chunk)
        self.release.update(chunk)
        if self.declared is not None:
            self.declared.update(chunk)
        self.size += len(chunk)


def open_source(
    url: str,
    *,
    timeout: float = 60.0,
    retries: int = 3,
    deadline: float | None = None,
    max_bytes: int | None = None,
) -> Iterator[bytes | memoryview]:
    """The bytes of a file, http or https URL, streamed in chunks; FetchError on failure.

    A chunk is valid until the next one is asked for (it may be a view of a reused buffer)."""

    def cannot_restart() -> None:  # pragma: no cover - only reached by a misbehaving server
        raise FetchError(f"cannot fetch {url}: the server restarted the transfer")

    download = _Download(
        url, timeout=timeout, retries=retries, deadline=deadline, max_bytes=max_bytes
    )
    return download.chunks(cannot_restart)


def fetch_into_store(
    store: Store,
    url: str,
    content_id: CID,
    *,
    timeout: float = 60.0,
    retries: int = 3,
    progress: ProgressCallback | None = None,
    deadline: float | None = None,
    max_bytes: int | None = None,
) -> FetchedFile:
    """Fetch `url`, check it hashes to `content_id`, then (and only then) add it to the store."""
    hashers = _Hashers(content_id)
    with store.temporary(".part") as (temp, handle):

        def restart() -> None:
            nonlocal hashers
            hashers = _Hashers(content_id)
            handle.seek(0)
            handle.truncate()

        download = _Download(
            url, timeout=timeout, retries=retries, deadline=deadline, max_bytes=max_bytes
        )
        for chunk in download.chunks(restart):
            handle.write(chunk)
            hashers.update(chunk)
            if progress is not None:
                progress(len(chunk))
        root, size, tsize = hashers.release.finish()
        got = root
        if hashers.declared is not None:
            got, _, _ = hashers.declared.finish()
        if got != content_id:
            raise IntegrityError(
                f"{url} hashes to {got}, but its declared content-id is {content_id}"
            )
        sha256_hex = hashers.sha256.hexdigest()
        store.commit_object(temp, handle, sha256_hex)
    for block in hashers.interior:
        store.put_block(block.cid, block.data)
    store.put_layout(root, Layout(sha256_hex, size, tuple(hashers.leaves)))
    return FetchedFile(sha256=sha256_hex, size=size, cid=root, tsize=tsize)

