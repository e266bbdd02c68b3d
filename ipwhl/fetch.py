"""Sources to verified bytes in the store: nothing enters the store before its CID matches."""

from __future__ import annotations

import hashlib
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


class _Download:
    """Streams a source, resuming an HTTP transfer where the server allows byte ranges."""

    def __init__(self, url: str, *, timeout: float, retries: int) -> None:
        self.url = url
        self.timeout = timeout
        self.retries = retries

    def chunks(self, restart: Callable[[], None]) -> Iterator[bytes]:
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme == "file":
            yield from self._file_chunks(Path(urllib.request.url2pathname(parsed.path)))
        elif parsed.scheme in {"http", "https"}:
            yield from self._http_chunks(restart)
        else:
            raise FetchError(f"cannot fetch {self.url}: unsupported URL scheme {parsed.scheme!r}")

    def _file_chunks(self, path: Path) -> Iterator[bytes]:
        try:
            handle = open(path, "rb")
        except OSError as exc:
            raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from exc
        with handle:
            while chunk := handle.read(_CHUNK):
                yield chunk

    def _http_chunks(self, restart: Callable[[], None]) -> Iterator[bytes]:
        received = 0
        attempt = 0
        while True:
            headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
            if received:
                headers["Range"] = f"bytes={received}-"
            request = urllib.request.Request(self.url, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    if received and response.status != 206:
                        # The server ignored the range: start over from the first byte.
                        restart()
                        received = 0
                    while chunk := response.read(_CHUNK):
                        received += len(chunk)
                        yield chunk
                    if response.length:
                        # http.client ends a body cut short by a closed connection without an
                        # error; treat it as the failure it is, so the rest is fetched by Range.
                        raise IncompleteRead(b"", response.length)
                    return
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code not in _RETRYABLE_HTTP or attempt >= self.retries:
                    raise FetchError(
                        f"cannot fetch {self.url}: HTTP {exc.code} {exc.reason}"
                    ) from exc
            except (urllib.error.URLError, HTTPException, OSError) as exc:
                if attempt >= self.retries:
                    reason = getattr(exc, "reason", None) or exc
                    raise FetchError(
                        f"cannot fetch {self.url}: {reason} (after {attempt + 1} attempts)"
                    ) from exc
            attempt += 1
            time.sleep(min(0.25 * 2**attempt, 4.0))


class _Hashers:
    """Every digest a fetch needs, fed in one pass over the bytes."""

    def __init__(self, content_id: CID) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.interior: list[Block] = []
        self.leaves: list[tuple[CID, int, int]] = []
        self.release = FileBuilder(cid_version=1, hash_code=SHA2_256, on_block=self._on_block)
        release_like = content_id.version == 1 and content_id.hash_code == SHA2_256
        self.declared: FileBuilder | None = None
        if not release_like:
            self.declared = FileBuilder(
                cid_version=content_id.version, hash_code=content_id.hash_code
            )

    def _on_block(self, block: Block, offset: int | None) -> None:
        if offset is None:
            self.interior.append(block)
        else:
            self.leaves.append((block.cid, offset, len(block.data)))

    def update(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        self.release.update(chunk)
        if self.declared is not None:
            self.declared.update(chunk)
        self.size += len(chunk)


def open_source(url: str, *, timeout: float = 60.0, retries: int = 3) -> Iterator[bytes]:
    """The bytes of a file, http or https URL, streamed in chunks; FetchError on failure."""

    def cannot_restart() -> None:  # pragma: no cover - only reached by a misbehaving server
        raise FetchError(f"cannot fetch {url}: the server restarted the transfer")

    return _Download(url, timeout=timeout, retries=retries).chunks(cannot_restart)


def fetch_into_store(
    store: Store,
    url: str,
    content_id: CID,
    *,
    timeout: float = 60.0,
    retries: int = 3,
    progress: ProgressCallback | None = None,
) -> FetchedFile:
    """Fetch `url`, check it hashes to `content_id`, then (and only then) add it to the store."""
    hashers = _Hashers(content_id)
    with store.temporary(".part") as (temp, handle):

        def restart() -> None:
            nonlocal hashers
            hashers = _Hashers(content_id)
            handle.seek(0)
            handle.truncate()

        download = _Download(url, timeout=timeout, retries=retries)
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

