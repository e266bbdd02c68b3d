"""The HTTP gateway: real store on disk, real HTTP over 127.0.0.1, no mocks."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import http.client
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ipwhl import unixfs
from ipwhl.cid import CID
from ipwhl.fetch import fetch_into_store
from ipwhl.gateway import Gateway, GatewayConfig, GatewayError, running
from ipwhl.store import Store
from ipwhl.unixfs import Link

WHEEL_SIZE = 600_000  # three raw leaves: 262144 + 262144 + 75712
CHUNK = unixfs.CHUNK_SIZE
ODD_NAME = '<b>&"it\'s".txt'


@dataclass(frozen=True)
class Release:
    """A small release DAG in a store, and what its files hold."""

    store: Store
    root: CID
    wheel: bytes
    wheel_cid: CID
    index_cid: CID
    listing_cid: CID  # the `files/` directory, which has no index.html


def _put(store: Store, blocks: list[unixfs.Block]) -> None:
    for block in blocks:
        store.put_block(block.cid, block.data)


def _file(store: Store, name: str, data: bytes) -> Link:
    cid, tsize, blocks = unixfs.encode_file(data)
    _put(store, blocks)
    return Link(name, cid, tsize)


def _directory(store: Store, name: str, links: list[Link]) -> Link:
    cid, tsize, blocks = unixfs.encode_directory(links)
    _put(store, blocks)
    return Link(name, cid, tsize)


def build_release(where: Path) -> Release:
    """root/{index.html, release.toml, simple/{index.html, demo/{…whl, ….metadata}}, files/…}."""
    store = Store(where / "store").open()
    wheel = random.Random(7).randbytes(WHEEL_SIZE)
    wheel_path = where / "demo-1.0-py3-none-any.whl"
    wheel_path.write_bytes(wheel)
    fetched = fetch_into_store(store, wheel_path.as_uri(), unixfs.file_cid(wheel))
    assert store.get_layout(fetched.cid) is not None  # stored as an object plus a layout
    wheel_link = Link("demo-1.0-py3-none-any.whl", fetched.cid, fetched.tsize)
    demo = _directory(
        store,
        "demo",
        [
            wheel_link,
            _file(store, "demo-1.0-py3-none-any.whl.metadata", b"Metadata-Version: 2.1\n"),
            _file(store, "index.html", b"<a href='demo-1.0-py3-none-any.whl'>demo</a>"),
        ],
    )
    simple = _directory(store, "simple", [demo, _file(store, "index.html", b"<a>demo</a>")])
    files = _directory(
        store,
        "files",
        [
            _file(store, ODD_NAME, b"odd\n"),
            _file(store, "notes", b"no extension\n"),
            _file(store, "empty.txt", b""),
            _directory(store, "deeper", [_file(store, "x.txt", b"x")]),
        ],
    )
    index = _file(store, "index.html", b"<!DOCTYPE html><title>release</title>")
    release_toml = _file(store, "release.toml", b'name = "demo"\n')
    root = _directory(store, "", [index, simple, files, _directory(store, "ipwhl", [release_toml])])
    return Release(store, root.cid, wheel, fetched.cid, index.cid, files.cid)


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    return build_release(tmp_path_factory.mktemp("release"))


@pytest.fixture(scope="module")
def gateway(release: Release) -> Iterator[tuple[str, int]]:
    with running(release.store, GatewayConfig(port=0, idle_timeout=5.0)) as url:
        parts = urllib.parse.urlsplit(url)
        assert parts.hostname == "127.0.0.1"
        yield parts.hostname, parts.port  # type: ignore[misc]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def fetch(address: tuple[str, int], path: str, method: str = "GET", **headers: str) -> Answer:
    connection = http.client.HTTPConnection(*address, timeout=10)
    try:
        connection.request(
            method, path, headers={k.replace("_", "-"): v for k, v in headers.items()}
        )
        response = connection.getresponse()
        body = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        connection.close()


def raw_exchange(address: tuple[str, int], data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data` on a fresh socket and read until the server closes it."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def read_until_closed(sock: socket.socket) -> bytes:
    received = bytearray()
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return bytes(received)


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


# --- paths, directories, pages -------------------------------------------------------------------


def test_landing_page_says_what_this_is(gateway: tuple[str, int]) -> None:
    answer = fetch(gateway, "/")
    assert answer.status == 200
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert b"/ipfs/<cid>/" in answer.body


def test_directory_without_slash_redirects_keeping_the_query(
    gateway: tuple[str, int], release: Release
) -> None:
    answer = fetch(gateway, f"/ipfs/{release.root}/simple?a=1&b=%20")
    assert answer.status == 301
    assert answer.headers["location"] == f"/ipfs/{release.root}/simple/?a=1&b=%20"
    root = fetch(gateway, f"/ipfs/{release.root}")
    assert root.status == 301
    assert root.headers["location"] == f"/ipfs/{release.root}/"


def test_directory_with_slash_serves_its_index_html(
    gateway: tuple[str, int], release: Release
) -> None:
    answer = fetch(gateway, f"/ipfs/{release.root}/")
    assert answer.status == 200
    assert answer.body == b"<!DOCTYPE html><title>release</title>"
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["etag"] == f'"{release.index_cid}"'
    assert answer.headers["cache-control"] == "public, max-age=29030400, immutable"
    assert answer.headers["x-ipfs-path"] == f"/ipfs/{release.root}/"
    assert "last-modified" not in answer.headers


def test_directory_without_index_gets_an_escaped_listing_with_relative_links(
    gateway: tuple[str, int], release: Release
) -> None:
    answer = fetch(gateway, f"/ipfs/{release.root}/files/")
    assert answer.status == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    page = answer.body.decode()
    assert "<b>" not in page  # the odd name is escaped, not markup
    assert "&lt;b&gt;&amp;&quot;it&#x27;s&quot;.txt" in page
    quoted = urllib.parse.quote(ODD_NAME, safe="")
    assert f'href="./{quoted}"' in page
    for name in ("notes", "empty.txt", "deeper"):
        assert f'href="./{name}"' in page
    assert 'href="../"' in page
    assert "http://" not in page and 'href="/' not in page
    # The links work: the odd name round-trips through the URL.
    linked = fetch(gateway, f"/ipfs/{release.root}/files/{quoted}")
    assert (linked.status, linked.body) == (200, b"odd\n")
    # A generated listing is not in the DAG, so its tag is not the bare CID.
    assert answer.headers["etag"] != f'"{release.listing_cid}"'
    assert str(release.listing_cid) in answer.headers["etag"]


def test_listing_of_a_bare_directory_cid_has_no_parent_link(
    gateway: tuple[str, int], release: Release
) -> None:
    answer = fetch(gateway, f"/ipfs/{release.listing_cid}/")
    assert answer.status == 200
    assert 'href="../"' not in answer.body.decode()


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("simple/index.html", "text/html; charset=utf-8", b"<a>demo</a>"),
        ("simple/demo/", "text/html; charset=utf-8", None),
        ("ipwhl/release.toml", "text/plain; charset=utf-8", b'name = "demo"\n'),
        (
            "simple/demo/demo-1.0-py3-none-any.whl.metadata",
            "application/octet-stream",
            b"Metadata-Version: 2.1\n",
        ),
        ("simple/demo/demo-1.0-py3-none-any.whl", "application/octet-stream", None),
        ("files/notes", "application/octet-stream", b"no extension\n"),
        ("files/empty.txt", "text/plain; charset=utf-8", b""),
    ],
)
def test_files_have_content_type_length_and_tags(
    gateway: tuple[str, int], release: Release, path: str, content_type: str, body: bytes | None
) -> None:
    answer = fetch(gateway, f"/ipfs/{release.root}/{path}")
    assert answer.status == 200
    assert answer.headers["content-type"] == content_type
    assert answer.headers["content-length"] == str(len(answer.body))
    assert answer.headers["cache-control"] == "public, max-age=29030400, immutable"
    assert answer.headers["x-ipfs-path"] == f"/ipfs/{release.root}/{path}"
    if body is not None:
        assert answer.body == body
    if not path.endswith("/"):
        assert answer.headers["accept-ranges"] == "bytes"


def test_the_wheel_comes_out_byte_for_byte_by_path_and_by_cid(
    gateway: tuple[str, int], release: Release
) -> None:
    by_path = fetch(gateway, f"/ipfs/{release.root}/simple/demo/demo-1.0-py3-none-any.whl")
    by_cid = fetch(gateway, f"/ipfs/{release.wheel_cid}")
    for answer in (by_path, by_cid):
        assert answer.status == 200
        assert answer.body == release.wheel
        assert answer.headers["content-length"] == str(WHEEL_SIZE)
        assert answer.headers["etag"] == f'"{release.wheel_cid}"'


# --- ranges ------------------------------------------------------------------------------------

WHEEL_PATH = "simple/demo/demo-1.0-py3-none-any.whl"


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("bytes=0-99", 0, 100),
        ("bytes=262100-262200", 262100, 262201),  # across the first leaf boundary
        ("bytes=1000-599000", 1000, 599001),  # across both boundaries
        (f"bytes={CHUNK}-{2 * CHUNK - 1}", CHUNK, 2 * CHUNK),  # exactly the second leaf
        ("bytes=500000-", 500000, WHEEL_SIZE),  # open-ended
        ("bytes=-1000", WHEEL_SIZE - 1000, WHEEL_SIZE),  # suffix
        ("bytes=-700000", 0, WHEEL_SIZE),  # suffix longer than the file
        ("bytes=599990-999999", 599990, WHEEL_SIZE),  # last byte past the end is clamped
        ("bytes=599999-599999", 599999, WHEEL_SIZE),
        ("Bytes = 5 - 9", 5, 10),
    ],
)
def test_single_ranges_get_206_with_exact_bytes(
    gateway: tuple[str, int], release: Release, spec: str, start: int, end: int
) -> None:
    answer = fetch(gateway, f"/ipfs/{release.root}/{WHEEL_PATH}", Range=spec)
    assert answer.status == 206
    assert answer.headers["content-range"] == f"bytes {start}-{end - 1}/{WHEEL_SIZE}"
    assert answer.headers["content-length"] == str(end - start)
    assert answer.body == release.wheel[start:end]


@pytest.mark.parametrize("spec", ["bytes=600000-", "bytes=700000-800000", "bytes=-0"])
def test_unsatisfiable_ranges_get_416(
    gateway: tuple[str, int], release: Release, spec: str
) -> None:
    answer = fetch(gateway, f"/ipfs/{release.root}/{WHEEL_PATH}", Range=spec)
    assert answer.status == 416
    assert answer.headers["content-range"] == f"bytes */{WHEEL_SIZE}"
    assert len(answer.body) < 100


@pytest.mark.parametrize(
    "spec",
    [
        "bytes=0-1,5-6",  # several ranges: the RFC lets us send the whole file
        "bytes=9-3",  # invalid
        "bytes=a-b",
        "items=0-10",
        "bytes=" + "9" * 5000 + "-",  # no int() blow-up
        "bytes=-",
    ],
)
def test_ranges_we_do_not_take_get_the_whole_file(
    gateway: tuple[str, int], release: Release, spec: str
) -> None:
    answer = fetch(gateway, f"/ipfs/{release.root}/{WHEEL_PATH}", Range=spec)
    if spec.startswith("bytes=999"):
        assert answer.status == 416  # a huge first byte is simply past the end
        return
    assert answer.status == 200
    assert answer.body == release.wheel


def test_if_range_honours_the_range_only_for_our_etag(
    gateway: tuple[str, int], release: Release
) -> None:
    path = f"/ipfs/{release.root}/{WHEEL_PATH}"
    etag = f'"{release.wheel_cid}"'
    assert fetch(gateway, path, Range="bytes=0-9", If_Range=etag).status == 206
    stale = fetch(gateway, path, Range="bytes=0-9", If_Range='"something-else"')
    assert (stale.status, stale.body) == (200, release.wheel)


def test_ranges_on_an_empty_file(gateway: tuple[str, int], release: Release) -> None:
    path = f"/ipfs/{release.root}/files/empty.txt"
    assert fetch(gateway, path, Range="bytes=0-").status == 416
    suffix = fetch(gateway, path, Range="bytes=-5")
    assert (suffix.status, suffix.body) == (200, b"")


# --- conditional requests and HEAD -------------------------------------------------------------


@pytest.mark.parametrize(
    "tag", ["{etag}", "W/{etag}", '"other", {etag}', "*"], ids=["exact", "weak", "list", "star"]
)
def test_if_none_match_gets_304_without_a_body(
    gateway: tuple[str, int], release: Release, tag: str
) -> None:
    path = f"/ipfs/{release.root}/{WHEEL_PATH}"
    etag = fetch(gateway, path, "HEAD").headers["etag"]
    answer = fetch(gateway, path, If_None_Match=tag.format(etag=etag), Range="bytes=0-1")
    assert answer.status == 304
    assert answer.body == b""
    assert answer.headers["etag"] == etag
    assert answer.headers["cache-control"] == "public, max-age=29030400, immutable"


def test_if_none_match_with_another_tag_gets_the_file(
    gateway: tuple[str, int], release: Release
) -> None:
    answer = fetch(gateway, f"/ipfs/{release.root}/{WHEEL_PATH}", If_None_Match='"nope"')
    assert answer.status == 200
    assert answer.body == release.wheel


def test_listings_answer_304_to_their_own_tag(gateway: tuple[str, int], release: Release) -> None:
    path = f"/ipfs/{release.root}/files/"
    etag = fetch(gateway, path).headers["etag"]
    assert fetch(gateway, path, If_None_Match=etag).status == 304


@pytest.mark.parametrize("path", ["", "files/", WHEEL_PATH, "simple", "nope"])
def test_head_has_the_headers_of_get_and_no_body(
    gateway: tuple[str, int], release: Release, path: str
) -> None:
    got = fetch(gateway, f"/ipfs/{release.root}/{path}")
    head = fetch(gateway, f"/ipfs/{release.root}/{path}", "HEAD")
    assert head.status == got.status
    assert head.body == b""
    drop = {"date"}
    assert {k: v for k, v in head.headers.items() if k not in drop} == {
        k: v for k, v in got.headers.items() if k not in drop
    }


def test_head_of_a_range(gateway: tuple[str, int], release: Release) -> None:
    head = fetch(gateway, f"/ipfs/{release.root}/{WHEEL_PATH}", "HEAD", Range="bytes=10-19")
    assert head.status == 206
    assert head.headers["content-length"] == "10"
    assert head.body == b""


# --- errors and traversal ------------------------------------------------------------------------


def test_not_found(gateway: tuple[str, int], release: Release) -> None:
    absent = unixfs.file_cid(b"never stored")
    for path in (
        f"/ipfs/{absent}",
        f"/ipfs/{release.root}/nope",
        f"/ipfs/{release.root}/simple/nope/",
        f"/ipfs/{release.root}/{WHEEL_PATH}/inside",
        f"/ipns/{release.root}/",
        "/favicon.ico",
        "/ipfs",
    ):
        answer = fetch(gateway, path)
        assert answer.status == 404, path
        assert answer.headers["content-type"] == "text/plain; charset=utf-8"
        assert 0 < len(answer.body) < 300
        assert "cache-control" not in answer.headers


@pytest.mark.parametrize(
    "tail",
    [
        "../",
        "simple/../ipwhl/release.toml",
        "simple/./index.html",
        "%2e%2e/",
        "%2E%2E/%2e%2e/FORMAT",
        "simple%2Findex.html",
        "simple%2f..%2f..%2fFORMAT",
        "simple/%00",
        "simple/%zz",
        "simple/%e9",  # not UTF-8
        "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    ],
)
def test_malformed_paths_get_400(gateway: tuple[str, int], release: Release, tail: str) -> None:
    answer = fetch(gateway, f"/ipfs/{release.root}/{tail}")
    assert answer.status == 400, answer.body
    assert answer.body.startswith(b"bad path")


@pytest.mark.parametrize(
    "path", ["/ipfs/", "/ipfs/notacid/", "/ipfs/../FORMAT", "/ipfs/%2e%2e/FORMAT", "/ipfs/QmQm"]
)
def test_malformed_cids_get_400(gateway: tuple[str, int], path: str) -> None:
    assert fetch(gateway, path).status == 400


def test_traversal_never_reaches_the_store_files(
    gateway: tuple[str, int], release: Release
) -> None:
    # Whatever a path says, only DAG bytes come out; files beside the store's blocks never do.
    secret = b"SECRET-" + os.urandom(16).hex().encode()
    (release.store.root / "tmp" / "secret").write_bytes(secret)
    layout = release.store.layout_path(release.wheel_cid).read_bytes()
    for path in (
        "/ipfs/../tmp/secret",
        "/ipfs/../../store/tmp/secret",
        f"/ipfs/{release.root}/../../tmp/secret",
        f"/ipfs/{release.root}/%2e%2e%2f%2e%2e%2ftmp%2fsecret",
        f"/ipfs/{release.root}/..\\..\\tmp\\secret",
        f"/ipfs/{release.root}//../tmp/secret",
        f"/ipfs/{release.root}/%252e%252e/tmp/secret",
        f"/ipfs/{release.root}/%2e%2e/%2e%2e/tmp/secret",
        "/store/tmp/secret",
        "/tmp/secret",
        f"/layouts/{str(release.wheel_cid)[-2:]}/{release.wheel_cid}",
    ):
        answer = fetch(gateway, path)
        assert answer.status in {400, 404}, path
        assert secret not in answer.body and layout not in answer.body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_other_methods_get_405(gateway: tuple[str, int], release: Release, method: str) -> None:
    answer = fetch(gateway, f"/ipfs/{release.root}/", method)
    assert answer.status == 405
    assert answer.headers["allow"] == "GET, HEAD"


def test_a_request_body_is_dropped_and_the_connection_reused(
    gateway: tuple[str, int], release: Release
) -> None:
    connection = http.client.HTTPConnection(*gateway, timeout=10)
    try:
        connection.request("POST", "/ipfs/", body=b"x" * 5000)
        response = connection.getresponse()
        assert response.status == 405
        response.read()
        first_socket = connection.sock
        connection.request("GET", f"/ipfs/{release.root}/ipwhl/release.toml")
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b'name = "demo"\n')
        assert connection.sock is first_socket
    finally:
        connection.close()


@pytest.mark.parametrize("size", [17_000, 20_000, 1_000_000])
def test_oversized_headers_get_431(gateway: tuple[str, int], size: int) -> None:
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
    with socket.create_connection(gateway, timeout=10) as sock:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(request)
        status, headers, _ = split_response(read_until_closed(sock))
    assert status == 431
    assert headers["connection"] == "close"


def test_headers_just_under_the_limit_are_fine(gateway: tuple[str, int]) -> None:
    request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"a" * 15_000
    status, _, _ = split_response(raw_exchange(gateway, request + b"\r\n\r\n"))
    assert status == 200


def test_garbage_gets_400_and_a_closed_connection(gateway: tuple[str, int]) -> None:
    status, headers, _ = split_response(raw_exchange(gateway, b"NOT HTTP AT ALL\r\n\r\n"))
    assert status == 400
    assert headers["connection"] == "close"


def test_absolute_form_targets_are_accepted(gateway: tuple[str, int], release: Release) -> None:
    target = f"http://example.org/ipfs/{release.root}/ipwhl/release.toml".encode()
    raw = raw_exchange(
        gateway, b"GET " + target + b" HTTP/1.1\r\nHost: example.org\r\nConnection: close\r\n\r\n"
    )
    status, _, body = split_response(raw)
    assert (status, body) == (200, b'name = "demo"\n')


# --- connections -------------------------------------------------------------------------------


def test_keep_alive_serves_many_requests_on_one_connection(
    gateway: tuple[str, int], release: Release
) -> None:
    connection = http.client.HTTPConnection(*gateway, timeout=10)
    try:
        sockets = set()
        for path in ("", "files/", WHEEL_PATH, "nope", "ipwhl/release.toml", WHEEL_PATH):
            connection.request("GET", f"/ipfs/{release.root}/{path}")
            response = connection.getresponse()
            body = response.read()
            if path == WHEEL_PATH:
                assert body == release.wheel
            sockets.add(id(connection.sock))
        assert len(sockets) == 1
    finally:
        connection.close()


def test_pipelined_requests_are_answered_in_order(
    gateway: tuple[str, int], release: Release
) -> None:
    one = f"GET /ipfs/{release.root}/ipwhl/release.toml HTTP/1.1\r\nHost: x\r\n\r\n"
    two = f"HEAD /ipfs/{release.root}/nope HTTP/1.1\r\nHost: x\r\n\r\n"
    three = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    raw = raw_exchange(gateway, (one + two + three).encode())
    statuses = [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]
    assert statuses == [200, 404, 200]


def test_fifty_clients_at_once(gateway: tuple[str, int], release: Release) -> None:
    expected = hashlib.sha256(release.wheel).hexdigest()

    def client(n: int) -> bool:
        whole = fetch(gateway, f"/ipfs/{release.root}/{WHEEL_PATH}")
        start = n * 10_000
        part = fetch(gateway, f"/ipfs/{release.root}/{WHEEL_PATH}", Range=f"bytes={start}-")
        return (
            hashlib.sha256(whole.body).hexdigest() == expected
            and part.status == 206
            and part.body == release.wheel[start:]
        )

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        assert all(pool.map(client, range(50)))


def test_a_slow_client_is_dropped_after_the_idle_timeout(release: Release) -> None:
    with running(release.store, GatewayConfig(port=0, idle_timeout=1.0)) as url:
        address = ("127.0.0.1", urllib.parse.urlsplit(url).port or 0)
        with socket.create_connection(address, timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /ipfs/")  # half a request line, then nothing
            raw = read_until_closed(sock)
            waited = time.monotonic() - started
        assert 0.8 < waited < 4
        assert split_response(raw)[0] == 408
        # Trickling one byte at a time does not reset the clock.
        with socket.create_connection(address, timeout=10) as sock:
            started = time.monotonic()
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                for byte in b"GET / HTTP/1.1\r\nHost: x\r\n" * 10:
                    sock.sendall(bytes([byte]))
                    time.sleep(0.05)
                    if time.monotonic() - started > 6:
                        break
            assert time.monotonic() - started < 4
        # A quiet keep-alive connection is just closed.
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            raw = read_until_closed(sock)
        assert raw.count(b"HTTP/1.1 ") == 1


def test_a_client_that_stops_reading_is_dropped(tmp_path: Path) -> None:
    store = Store(tmp_path / "store").open()
    big = random.Random(3).randbytes(24 * 1024 * 1024)
    source = tmp_path / "big.whl"
    source.write_bytes(big)
    cid = fetch_into_store(store, source.as_uri(), unixfs.file_cid(big)).cid
    with running(store, GatewayConfig(port=0, idle_timeout=1.0)) as url:
        address = ("127.0.0.1", urllib.parse.urlsplit(url).port or 0)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        with sock:
            sock.connect(address)
            sock.sendall(f"GET /ipfs/{cid} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            time.sleep(3)  # read nothing while the server waits to send more
            raw = read_until_closed(sock)
    _, _, body = split_response(raw)
    assert len(body) < len(big)
    assert big.startswith(body)


def test_connections_over_the_cap_get_503(release: Release) -> None:
    with running(release.store, GatewayConfig(port=0, max_connections=2)) as url:
        address = ("127.0.0.1", urllib.parse.urlsplit(url).port or 0)
        held = [http.client.HTTPConnection(*address, timeout=10) for _ in range(2)]
        try:
            for connection in held:  # a full exchange, so the server counts them as open
                connection.request("GET", "/")
                connection.getresponse().read()
            status, headers, body = split_response(
                raw_exchange(address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            )
            assert status == 503
            assert headers["connection"] == "close"
            assert headers["retry-after"] == "1"
            assert b"too many connections" in body
        finally:
            for connection in held:
                connection.close()
        deadline = time.monotonic() + 5
        while fetch(address, "/").status != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)


# --- corruption --------------------------------------------------------------------------------


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def test_a_corrupt_object_is_never_served(tmp_path: Path) -> None:
    release = build_release(tmp_path)
    sha256 = hashlib.sha256(release.wheel).hexdigest()
    _flip(release.store.object_path(sha256), CHUNK + 1000)  # inside the second leaf
    with running(release.store) as url:
        address = ("127.0.0.1", urllib.parse.urlsplit(url).port or 0)
        path = f"/ipfs/{release.root}/{WHEEL_PATH}"
        # The first leaf is good, so the headers go out; then the connection is cut.
        raw = raw_exchange(address, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, headers, body = split_response(raw)
        assert status == 200
        assert headers["content-length"] == str(WHEEL_SIZE)
        assert len(body) <= CHUNK
        assert release.wheel.startswith(body)
        # A range that starts in the bad leaf gets an honest 500.
        answer = fetch(address, path, Range=f"bytes={CHUNK}-")
        assert answer.status == 500
        assert answer.body == b"corrupt block in store\n"
        # A range in the good leaf is still fine.
        good = fetch(address, path, Range="bytes=0-999")
        assert (good.status, good.body) == (206, release.wheel[:1000])
        # http.client sees the cut as an incomplete body, never as a complete wrong one.
        connection = http.client.HTTPConnection(*address, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
                response.read()
        finally:
            connection.close()


def test_a_corrupt_first_leaf_or_block_gets_500(tmp_path: Path) -> None:
    release = build_release(tmp_path)
    sha256 = hashlib.sha256(release.wheel).hexdigest()
    _flip(release.store.object_path(sha256), 10)
    _flip(release.store.block_path(release.index_cid), 3)
    with running(release.store) as url:
        address = ("127.0.0.1", urllib.parse.urlsplit(url).port or 0)
        for path in (f"/ipfs/{release.root}/{WHEEL_PATH}", f"/ipfs/{release.root}/"):
            answer = fetch(address, path)
            assert answer.status == 500, path
            assert answer.body == b"corrupt block in store\n"
        # The rest of the release is still served.
        assert fetch(address, f"/ipfs/{release.root}/ipwhl/release.toml").status == 200


# --- life cycle --------------------------------------------------------------------------------


def test_a_taken_port_is_a_clear_error(release: Release, gateway: tuple[str, int]) -> None:
    import asyncio

    config = GatewayConfig(host=gateway[0], port=gateway[1])
    with pytest.raises(GatewayError, match=f"cannot listen on 127.0.0.1:{gateway[1]}"):
        asyncio.run(Gateway(release.store, config).start())


def test_serve_prints_its_url_and_exits_cleanly_on_ctrl_c(release: Release) -> None:
    code = (
        "import sys\n"
        "from ipwhl.gateway import GatewayConfig, serve\n"
        "from ipwhl.store import Store\n"
        "serve(Store(sys.argv[1]), GatewayConfig(port=0))\n"
        "print('returned', flush=True)\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(release.store.root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert line.startswith("ipwhl: serving http://127.0.0.1:")
        assert line.rstrip().endswith("/ipfs/")
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        assert fetch(("127.0.0.1", port), "/").status == 200
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert stdout == "returned\n"
