"""A raw HTTP server on 127.0.0.1 whose answers a test scripts byte by byte: lies about
lengths, redirects anywhere, drips bytes, never ends. Used by tests/test_hostile_*.py.

    def answer(request: Request) -> None:
        request.send(b"HTTP/1.1 200 OK\\r\\nContent-Length: 10\\r\\n\\r\\nshort")
    with hostile_server(answer) as server:
        fetch(f"{server.url}/a.whl")
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


@dataclass
class Request:
    """One request: its target, headers (lower-case names) and the socket to answer on."""

    sock: socket.socket
    method: str
    target: str
    headers: dict[str, str]

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def drip(self, data: bytes, every: float, stop: threading.Event) -> None:
        """Send `data` one byte at a time, `every` seconds apart, until sent or `stop`."""
        for byte in data:
            if stop.wait(every):
                return
            try:
                self.sock.sendall(bytes([byte]))
            except OSError:
                return


@dataclass
class HostileServer:
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def targets(self) -> list[str]:
        return [request.target for request in self.requests]


def response(status: str, body: bytes = b"", *headers: str, length: int | None = None) -> bytes:
    """An HTTP/1.1 response; `length` is the Content-Length to claim (default: the truth)."""
    claimed = len(body) if length is None else length
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {claimed}", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@contextlib.contextmanager
def hostile_server(answer: Callable[[Request], None]) -> Iterator[HostileServer]:
    """Serve on a free port; `answer(request)` writes whatever bytes it likes, then the
    connection is closed. The server stops (and stops every drip) when the block exits."""
    server = HostileServer()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    server.url = f"http://127.0.0.1:{listener.getsockname()[1]}"

    def handle(sock: socket.socket) -> None:
        with sock:
            sock.settimeout(30)
            try:
                head = _read_head(sock)
                if not head:
                    return
                lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
                method, target, _ = [*lines[0].split(" "), "", ""][:3]
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                request = Request(sock, method, target, headers)
                server.requests.append(request)
                answer(request)
            except OSError:
                pass

    def accept() -> None:
        while not server.stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=handle, args=(sock,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        thread.join(timeout=5)
        listener.close()
        time.sleep(0)
