"""Hostile wheel sources: servers that lie about lengths, redirect anywhere, drip bytes or never
stop; local paths that are FIFOs, directories or devices. A fetch ends with a FetchError or an
IntegrityError in bounded time, and nothing enters the store unless its CID matches."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from ipwhl.errors import FetchError, IntegrityError
from ipwhl.fetch import fetch_into_store, open_source
from ipwhl.store import Store
from ipwhl.unixfs import file_cid
from tests.hostileserver import Request, hostile_server, response
from tests.wheelfactory import build_wheel


@pytest.fixture
def wheel(tmp_path: Path) -> tuple[bytes, str]:
    (tmp_path / "built").mkdir()
    modules = {"demo/__init__.py": "x = 1\n" * 5000}
    path = build_wheel(tmp_path / "built", "demo", "1.0", modules=modules)
    data = path.read_bytes()
    return data, str(file_cid(data))


def objects(store: Store) -> list[str]:
    return list(store.names("objects"))


def fetch(store: Store, url: str, cid: str, **options: float) -> None:
    from ipwhl.cid import CID

    fetch_into_store(store, url, CID.parse(cid), **options)  # type: ignore[arg-type]


# --- redirects ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "location", ["file:///etc/passwd", "ftp://127.0.0.1/demo.whl", "gopher://127.0.0.1/x"]
)
def test_a_redirect_to_another_scheme_is_never_followed(store, wheel, location):
    cid = wheel[1]

    def answer(request: Request) -> None:
        request.send(response("302 Found", b"", f"Location: {location}"))

    with hostile_server(answer) as server, pytest.raises(FetchError, match=r"(?i)redirect"):
        fetch(store, f"{server.url}/demo.whl", cid, retries=0)
    assert objects(store) == []


def test_redirect_loops_and_long_chains_end_quickly(store, wheel):
    cid = wheel[1]

    def answer(request: Request) -> None:
        hop = int(request.target.strip("/").split(".")[0] or 0)
        request.send(response("302 Found", b"", f"Location: /{hop + 1}.whl"))

    with hostile_server(answer) as server:
        started = time.monotonic()
        with pytest.raises(FetchError, match=r"(?i)redirect"):
            fetch(store, f"{server.url}/0.whl", cid, retries=0)
        assert time.monotonic() - started < 5
        assert len(server.requests) <= 6  # the first request and at most five redirects


def test_a_redirect_to_another_http_host_is_followed_and_the_bytes_still_checked(store, wheel):
    data, cid = wheel

    def mirror(request: Request) -> None:
        request.send(response("200 OK", data))

    with hostile_server(mirror) as other:

        def answer(request: Request) -> None:
            request.send(response("301 Moved", b"", f"Location: {other.url}/demo.whl"))

        with hostile_server(answer) as server:
            fetch(store, f"{server.url}/demo.whl", cid)
    assert len(objects(store)) == 1


# --- servers that lie about lengths ----------------------------------------------------------


def test_fewer_bytes_than_content_length_is_an_error_not_a_short_wheel(store, wheel):
    data, cid = wheel

    def answer(request: Request) -> None:
        # Claims the whole wheel, sends half, hangs up; ignores Range so it never completes.
        request.send(response("200 OK", data[: len(data) // 2], length=len(data)))

    with hostile_server(answer) as server, pytest.raises(FetchError, match="attempts"):
        fetch(store, f"{server.url}/demo.whl", cid, retries=1)
    assert objects(store) == []


def test_more_bytes_than_content_length_never_passes_for_the_wheel(store, wheel):
    data, cid = wheel

    def answer(request: Request) -> None:
        # Claims fewer bytes than it sends: the claim is a prefix, which is not the wheel.
        request.send(response("200 OK", data, length=len(data) - 100))

    with hostile_server(answer) as server, pytest.raises(IntegrityError, match="hashes to"):
        fetch(store, f"{server.url}/demo.whl", cid, retries=0)
    assert objects(store) == []


def test_a_resumed_range_that_starts_elsewhere_restarts_the_transfer(store, wheel):
    data, cid = wheel
    half = len(data) // 2

    def answer(request: Request) -> None:
        if "range" not in request.headers:
            request.send(response("200 OK", data[:half], length=len(data)))
            return
        # A 206 that ignores the offset asked for: appending it would corrupt the wheel.
        request.send(response(
            "206 Partial Content", data, f"Content-Range: bytes 0-{len(data) - 1}/{len(data)}"
        ))

    with hostile_server(answer) as server:
        fetch(store, f"{server.url}/demo.whl", cid, retries=2)
    assert len(objects(store)) == 1


def test_wrong_bytes_with_an_honest_length_are_refused(store, wheel):
    data, cid = wheel
    evil = bytes(reversed(data))

    def answer(request: Request) -> None:
        request.send(response("200 OK", evil))

    with hostile_server(answer) as server, pytest.raises(IntegrityError):
        fetch(store, f"{server.url}/demo.whl", cid)
    assert objects(store) == []
    assert list(store.root.joinpath("tmp").iterdir()) == []


# --- size caps -----------------------------------------------------------------------------


def test_a_body_that_never_ends_is_cut_off_at_the_cap(store, wheel):
    cid = wheel[1]

    def answer(request: Request) -> None:
        request.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b"\0" * 65536)
        while not server.stop.is_set():
            request.send(chunk)

    with (
        hostile_server(answer) as server,
        pytest.raises(FetchError, match="larger than 1048576 bytes"),
    ):
        fetch(store, f"{server.url}/demo.whl", cid, max_bytes=1 << 20)
    assert objects(store) == []


def test_a_content_length_over_the_cap_is_refused_before_the_body(store, wheel, monkeypatch):
    data, cid = wheel
    monkeypatch.setenv("IPWHL_MAX_WHEEL_BYTES", str(len(data) - 1))

    def answer(request: Request) -> None:
        request.send(response("200 OK", data))

    with (
        hostile_server(answer) as server,
        pytest.raises(FetchError, match="IPWHL_MAX_WHEEL_BYTES"),
    ):
        fetch(store, f"{server.url}/demo.whl", cid)
    assert objects(store) == []


def test_a_bad_limit_in_the_environment_is_a_clear_error(store, wheel, monkeypatch):
    cid = wheel[1]
    monkeypatch.setenv("IPWHL_MAX_WHEEL_BYTES", "lots")
    with pytest.raises(FetchError, match="IPWHL_MAX_WHEEL_BYTES='lots' is not a number"):
        fetch(store, "http://127.0.0.1:9/demo.whl", cid)


# --- slow servers: the deadline ------------------------------------------------------------


def test_a_body_dripped_a_byte_at_a_time_ends_at_the_deadline(store, wheel):
    data, cid = wheel

    def answer(request: Request) -> None:
        request.send(response("200 OK", b"", length=len(data)))
        request.drip(data, 0.05, server.stop)  # each byte well inside the socket timeout

    with hostile_server(answer) as server:
        started = time.monotonic()
        with pytest.raises(FetchError, match=r"not done within 1\.5 s"):
            fetch(store, f"{server.url}/demo.whl", cid, timeout=1.0, deadline=1.5)
        assert time.monotonic() - started < 4
    assert objects(store) == []


def test_headers_dripped_a_byte_at_a_time_end_at_the_deadline(store, wheel):
    cid = wheel[1]

    def answer(request: Request) -> None:
        request.drip(b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 10_000, 0.05, server.stop)

    with hostile_server(answer) as server:
        started = time.monotonic()
        with pytest.raises(FetchError, match="not done within"):
            fetch(store, f"{server.url}/demo.whl", cid, timeout=1.0, deadline=1.5)
        assert time.monotonic() - started < 4


def test_a_server_that_accepts_and_says_nothing_times_out(store, wheel):
    cid = wheel[1]

    def answer(request: Request) -> None:
        server.stop.wait(30)

    with hostile_server(answer) as server:
        started = time.monotonic()
        with pytest.raises(FetchError):
            fetch(store, f"{server.url}/demo.whl", cid, timeout=0.5, retries=1, deadline=10)
        assert time.monotonic() - started < 5


def test_the_deadline_comes_from_the_environment(store, wheel, monkeypatch):
    data, cid = wheel
    monkeypatch.setenv("IPWHL_FETCH_DEADLINE", "1")

    def answer(request: Request) -> None:
        request.drip(response("200 OK", data), 0.05, server.stop)

    with (
        hostile_server(answer) as server,
        pytest.raises(FetchError, match="IPWHL_FETCH_DEADLINE"),
    ):
        fetch(store, f"{server.url}/demo.whl", cid, timeout=1.0)


def test_open_source_has_the_same_limits(wheel):
    data = wheel[0]

    def answer(request: Request) -> None:
        request.send(response("200 OK", data))

    with hostile_server(answer) as server, pytest.raises(FetchError, match="larger than"):
        b"".join(open_source(f"{server.url}/demo.whl", max_bytes=100))


# --- local sources ---------------------------------------------------------------------------


def run_briefly(function, seconds: float = 5.0) -> BaseException | None:
    """Run `function` on a thread; the exception it raised, failing the test if it hangs."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            function()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still running after {seconds} s"
    return outcome[0]


def test_a_fifo_source_is_refused_without_waiting_for_a_writer(store, wheel, tmp_path):
    cid = wheel[1]
    fifo = tmp_path / "demo-1.0-py3-none-any.whl"
    os.mkfifo(fifo)
    error = run_briefly(lambda: fetch(store, fifo.as_uri(), cid))
    assert isinstance(error, FetchError) and "not a regular file" in str(error)


@pytest.mark.parametrize("kind", ["directory", "device", "dangling symlink"])
def test_local_sources_that_are_not_files(store, wheel, tmp_path, kind):
    cid = wheel[1]
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    if kind == "directory":
        path.mkdir()
    elif kind == "device":
        path = Path("/dev/zero")
    else:
        path.symlink_to(tmp_path / "nowhere")
    error = run_briefly(lambda: fetch(store, path.as_uri(), cid))
    assert isinstance(error, FetchError), error
    assert objects(store) == []


def test_a_huge_local_file_stops_at_the_cap(store, wheel, tmp_path):
    cid = wheel[1]
    sparse = tmp_path / "big.whl"
    with open(sparse, "wb") as handle:
        handle.truncate(64 << 20)  # sparse: no disk used
    error = run_briefly(lambda: fetch(store, sparse.as_uri(), cid, max_bytes=1 << 20))
    assert isinstance(error, FetchError) and "larger than" in str(error)
    assert objects(store) == []
