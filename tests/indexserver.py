"""A simple repository for tests on 127.0.0.1: PEP 503 HTML or PEP 691 JSON project pages,
wheels and PEP 658 metadata files, with a log of the paths requested.

    with IndexServer(mode="json") as index:
        index.add(build_wheel(tmp_path, "example", "1.0"))
        SimpleIndex(index.url)              # index.url ends in /simple/

mode "html" serves HTML whatever is asked for (a PEP 503 server); mode "json" serves JSON to
clients that accept it and HTML to the rest (PEP 691 content negotiation). Links are relative
(`../../files/<wheel>#sha256=…`), as real indexes often write them.
"""

from __future__ import annotations

import hashlib
import html
import http.server
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from packaging.utils import canonicalize_name

from ipwhl.wheels import inspect_wheel, parse_wheel_filename

__all__ = ["JSON_TYPE", "IndexServer"]

JSON_TYPE = "application/vnd.pypi.simple.v1+json"


@dataclass(frozen=True)
class _File:
    filename: str
    data: bytes
    metadata: bytes
    requires_python: str | None
    yanked: bool
    offer_metadata: bool


class IndexServer:
    """A simple index of the wheels added to it."""

    def __init__(self, mode: str = "html") -> None:
        if mode not in ("html", "json"):
            raise ValueError(mode)
        self.mode = mode
        self.files: dict[str, list[_File]] = {}
        self.requests: list[str] = []
        self.served: list[tuple[str, str]] = []  # (path, Content-Type) of every answer
        self.url = ""
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add(self, wheel: Path, *, yanked: bool = False, offer_metadata: bool = True,
            announce_requires_python: bool = True) -> None:
        """List `wheel` on its project's page (with its Requires-Python unless told not to)."""
        info = inspect_wheel(wheel)
        project = canonicalize_name(parse_wheel_filename(wheel.name).project)
        requires_python = info.metadata.requires_python if announce_requires_python else None
        self.files.setdefault(project, []).append(
            _File(wheel.name, wheel.read_bytes(), info.metadata_bytes, requires_python, yanked,
                  offer_metadata)
        )

    def count(self, suffix: str) -> int:
        """How many requests asked for a path ending in `suffix`."""
        with self._lock:
            return sum(1 for path in self.requests if path.endswith(suffix))

    # pages

    def html_page(self, project: str) -> bytes:
        lines = ["<!DOCTYPE html>", "<html><head>",
                 '<meta name="pypi:repository-version" content="1.1">',
                 f"<title>Links for {project}</title></head><body>"]
        for file in self.files[project]:
            attributes = [f'href="../../files/{file.filename}#sha256='
                          f'{hashlib.sha256(file.data).hexdigest()}"']
            if file.requires_python is not None:
                attributes.append(f'data-requires-python="{html.escape(file.requires_python)}"')
            if file.offer_metadata:
                digest = hashlib.sha256(file.metadata).hexdigest()
                attributes.append(f'data-core-metadata="sha256={digest}"')
                attributes.append(f'data-dist-info-metadata="sha256={digest}"')
            if file.yanked:
                attributes.append('data-yanked=""')
            lines.append(f"<a {' '.join(attributes)}>{file.filename}</a><br>")
        lines.append("</body></html>")
        return "\n".join(lines).encode()

    def json_page(self, project: str) -> bytes:
        files = []
        for file in self.files[project]:
            entry: dict[str, object] = {
                "filename": file.filename,
                "url": f"../../files/{file.filename}",
                "hashes": {"sha256": hashlib.sha256(file.data).hexdigest()},
                "requires-python": file.requires_python,
                "yanked": file.yanked,
            }
            if file.offer_metadata:
                entry["core-metadata"] = {"sha256": hashlib.sha256(file.metadata).hexdigest()}
            files.append(entry)
        return json.dumps({"meta": {"api-version": "1.1"}, "name": project,
                           "files": files}).encode()

    def answer(self, path: str, accept: str) -> tuple[int, str, bytes]:
        parts = path.split("?", 1)[0].strip("/").split("/")
        if len(parts) == 2 and parts[0] == "simple" and parts[1] in self.files:
            if self.mode == "json" and JSON_TYPE in accept:
                return 200, JSON_TYPE, self.json_page(parts[1])
            return 200, "text/html; charset=utf-8", self.html_page(parts[1])
        if len(parts) == 2 and parts[0] == "files":
            for files in self.files.values():
                for file in files:
                    if parts[1] == file.filename:
                        return 200, "application/octet-stream", file.data
                    if parts[1] == f"{file.filename}.metadata" and file.offer_metadata:
                        return 200, "application/octet-stream", file.metadata
        return 404, "text/plain", b"not found\n"

    # serving

    def __enter__(self) -> IndexServer:
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                status, content_type, body = index.answer(self.path, self.headers["Accept"] or "")
                with index._lock:
                    index.requests.append(self.path)
                    index.served.append((self.path, content_type))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_port}/simple/"
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
