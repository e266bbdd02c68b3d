"""A small simple-repository client (PEP 503 HTML, PEP 691 JSON): a project's files and the
core metadata of a wheel (PEP 658/714), read with urllib and html.parser."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.client import HTTPException
from pathlib import Path
from types import MappingProxyType
from typing import Any

from packaging.utils import canonicalize_name

from .errors import FetchError, IntegrityError
from .fetch import USER_AGENT

__all__ = [
    "DEFAULT_INDEX_URL",
    "IndexFile",
    "InvalidIndexPage",
    "ProjectNotFound",
    "SimpleIndex",
    "parse_html_page",
    "parse_json_page",
]

DEFAULT_INDEX_URL = "https://pypi.org/simple/"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
_JSON_TYPES = (JSON_TYPE, "application/vnd.pypi.simple.latest+json")
# JSON first; HTML (the PEP 691 name, then what PEP 503 servers send) as the fallback.
_ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
_SUPPORTED_MAJOR = 1
_MAX_PAGE = 64 * 1024 * 1024
_MAX_METADATA = 16 * 1024 * 1024
_RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}

_NO_HASHES: Mapping[str, str] = MappingProxyType({})


class ProjectNotFound(FetchError):
    """The index has no page for a project."""


class InvalidIndexPage(FetchError):
    """An index page cannot be read as PEP 503 HTML or PEP 691 JSON."""


@dataclass(frozen=True)
class IndexFile:
    """One file a project page lists.

    `url` is absolute and has no fragment; `hashes` maps hash names to lowercase hex;
    `core_metadata` is None when the index offers no METADATA file for it, else that file's
    hashes (empty when offered without one).
    """

    filename: str
    url: str
    hashes: Mapping[str, str] = field(default_factory=lambda: _NO_HASHES)
    requires_python: str | None = None
    yanked: bool = False
    core_metadata: Mapping[str, str] | None = None

    @property
    def metadata_url(self) -> str:
        """Where PEP 658 puts the file's METADATA."""
        return self.url + ".metadata"


def _split_fragment(url: str, base: str) -> tuple[str, dict[str, str]]:
    """The absolute URL without its fragment, and the hash the fragment names (if any)."""
    absolute, fragment = urllib.parse.urldefrag(urllib.parse.urljoin(base, url))
    name, equals, value = fragment.partition("=")
    hashes = {name.lower(): value.lower()} if equals and name and value else {}
    return absolute, hashes


def _check_version(version: str | None, where: str) -> None:
    if version is None:
        return
    major = version.split(".", 1)[0]
    if not major.isdigit():
        raise InvalidIndexPage(f"{where}: repository version {version!r} is not a version")
    if int(major) > _SUPPORTED_MAJOR:
        raise InvalidIndexPage(
            f"{where}: repository version {version} is newer than ipwhl understands "
            f"({_SUPPORTED_MAJOR}.x); use an index that serves API version 1"
        )


def _metadata_hashes(value: Any) -> Mapping[str, str] | None:
    """PEP 658/714: true (offered, no hash), false/absent, or a map of hashes."""
    if value is True:
        return _NO_HASHES
    if isinstance(value, Mapping):
        return MappingProxyType({str(k).lower(): str(v).lower() for k, v in value.items()})
    return None


def parse_json_page(data: bytes, page_url: str) -> tuple[IndexFile, ...]:
    """Read a PEP 691 project page; relative file URLs are resolved against `page_url`."""
    try:
        document = json.loads(data)
        files = document["files"]
        if not isinstance(files, list):
            raise TypeError("'files' is not a list")
        _check_version(document.get("meta", {}).get("api-version"), page_url)
        result = []
        for entry in files:
            url, fragment_hashes = _split_fragment(entry["url"], page_url)
            hashes = {str(k).lower(): str(v).lower() for k, v in entry.get("hashes", {}).items()}
            yanked = entry.get("yanked", False)
            core = entry.get("core-metadata", entry.get("dist-info-metadata"))
            result.append(
                IndexFile(
                    filename=str(entry["filename"]),
                    url=url,
                    hashes=MappingProxyType(hashes or fragment_hashes),
                    requires_python=entry.get("requires-python") or None,
                    yanked=yanked is True or isinstance(yanked, str),
                    core_metadata=_metadata_hashes(core),
                )
            )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InvalidIndexPage(f"{page_url}: not a PEP 691 JSON project page ({error})") from None
    return tuple(result)


class _AnchorParser(HTMLParser):
    """Collects <a> tags with their attributes, a <base href>, and the repository version."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[dict[str, str | None], list[str]]] = []
        self.base: str | None = None
        self.version: str | None = None
        self._open: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "a":
            self._open = []
            self.anchors.append((attributes, self._open))
        elif tag == "base" and self.base is None and attributes.get("href"):
            self.base = attributes["href"]
        elif tag == "meta" and attributes.get("name") == "pypi:repository-version":
            self.version = attributes.get("content")

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open.append(data)


def parse_html_page(data: bytes, page_url: str) -> tuple[IndexFile, ...]:
    """Read a PEP 503 project page; the file name is the link text, else the URL's last part."""
    parser = _AnchorParser()
    try:
        parser.feed(data.decode("utf-8"))
        parser.close()
    except UnicodeDecodeError as error:
        raise InvalidIndexPage(f"{page_url}: the page is not UTF-8 ({error})") from None
    _check_version(parser.version, page_url)
    base = urllib.parse.urljoin(page_url, parser.base) if parser.base else page_url
    result = []
    for attributes, text in parser.anchors:
        href = attributes.get("href")
        if not href:
            continue
        url, hashes = _split_fragment(href, base)
        filename = "".join(text).strip() or urllib.parse.unquote(
            urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]
        )
        core = attributes.get("data-core-metadata", attributes.get("data-dist-info-metadata"))
        core_hashes: Mapping[str, str] | None = None
        if core is not None and core.lower() != "false":
            name, equals, value = core.partition("=")
            core_hashes = (
                MappingProxyType({name.lower(): value.lower()}) if equals else _NO_HASHES
            )
        result.append(
            IndexFile(
                filename=filename,
                url=url,
                hashes=MappingProxyType(hashes),
                requires_python=attributes.get("data-requires-python") or None,
                yanked="data-yanked" in attributes,
                core_metadata=core_hashes,
            )
        )
    return tuple(result)


def _verify(data: bytes, hashes: Mapping[str, str], what: str) -> None:
    for name, expected in hashes.items():
        if name not in hashlib.algorithms_available:
            continue
        got = hashlib.new(name, data).hexdigest()
        if got != expected:
            raise IntegrityError(f"{what} has {name} {got}, but the index says {expected}")
        return


class SimpleIndex:
    """A simple repository at `url` (default PyPI); pages are read once per instance."""

    def __init__(self, url: str = DEFAULT_INDEX_URL, *, timeout: float = 30.0,
                 retries: int = 2) -> None:
        self.url = url if url.endswith("/") else url + "/"
        self.timeout = timeout
        self.retries = retries
        self._pages: dict[str, tuple[IndexFile, ...]] = {}
        self._lock = threading.Lock()

    def project_url(self, project: str) -> str:
        """The project's page: the index URL plus its normalized name (PEP 503)."""
        return urllib.parse.urljoin(self.url, canonicalize_name(project) + "/")

    def files(self, project: str) -> tuple[IndexFile, ...]:
        """Every file the project's page lists, yanked ones included, in page order."""
        name = canonicalize_name(project)
        with self._lock:
            cached = self._pages.get(name)
        if cached is not None:
            return cached
        url = self.project_url(name)
        try:
            data, final_url, content_type = self._get(url, _ACCEPT, _MAX_PAGE)
        except _Missing:
            raise ProjectNotFound(f"project {name!r} is not on the index {self.url}") from None
        if content_type in _JSON_TYPES:
            files = parse_json_page(data, final_url)
        else:
            files = parse_html_page(data, final_url)
        with self._lock:
            self._pages[name] = files
        return files

    def metadata(self, file: IndexFile) -> bytes:
        """The METADATA file the index offers for `file`, checked against its hash."""
        if file.core_metadata is None:
            raise ValueError(f"the index offers no metadata file for {file.filename}")
        try:
            data, _, _ = self._get(file.metadata_url, "*/*", _MAX_METADATA)
        except _Missing:
            raise FetchError(
                f"the index offers {file.metadata_url} but answers 404 for it"
            ) from None
        _verify(data, file.core_metadata, file.metadata_url)
        return data

    def _get(self, url: str, accept: str, limit: int) -> tuple[bytes, str, str]:
        """(body, final URL, media type); _Missing for 404/410, FetchError for the rest."""
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme == "file":
            return self._get_file(url, parsed, limit)
        if parsed.scheme not in {"http", "https"}:
            raise FetchError(f"cannot read {url}: unsupported URL scheme {parsed.scheme!r}")
        request = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": USER_AGENT})
        attempt = 0
        while True:
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    data = response.read(limit + 1)
                    if len(data) > limit:
                        raise FetchError(f"{url} is larger than {limit} bytes")
                    content_type = response.headers.get_content_type()
                    return data, response.geturl(), content_type
            except urllib.error.HTTPError as error:
                error.close()
                if error.code in (404, 410):
                    raise _Missing from None
                if error.code not in _RETRYABLE_HTTP or attempt >= self.retries:
                    raise FetchError(
                        f"cannot read {url}: HTTP {error.code} {error.reason}"
                    ) from None
            except (urllib.error.URLError, HTTPException, OSError) as error:
                if attempt >= self.retries:
                    reason = getattr(error, "reason", None) or error
                    raise FetchError(f"cannot read {url}: {reason}") from None
            attempt += 1
            time.sleep(min(0.25 * 2**attempt, 4.0))

    @staticmethod
    def _get_file(
        url: str, parsed: urllib.parse.SplitResult, limit: int
    ) -> tuple[bytes, str, str]:
        path = Path(urllib.request.url2pathname(parsed.path))
        if path.is_dir():
            path = path / "index.html"
        try:
            with open(path, "rb") as handle:
                data = handle.read(limit + 1)
        except FileNotFoundError:
            raise _Missing from None
        except OSError as error:
            raise FetchError(f"cannot read {url}: {error.strerror or error}") from None
        if len(data) > limit:
            raise FetchError(f"{url} is larger than {limit} bytes")
        content_type = JSON_TYPE if path.suffix == ".json" else "text/html"
        return data, url, content_type


class _Missing(Exception):
    """The server says the page does not exist."""
