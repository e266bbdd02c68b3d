"""`ipwhl serve` over a store that fails to read: a real EIO from a shrunk loop device (skipped
where not allowed) and an object that became a directory (EISDIR). Each request for the damaged
file gets a short 500, the log says so in one line naming the file and the errno, not once per
request and without a traceback, and everything else is still served."""

from __future__ import annotations

import contextlib
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipwhl.gateway import running
from ipwhl.store import Store
from tests import test_hostile_faults
from tests.test_hostile_faults import WHEEL, Built, eio_store

built = test_hostile_faults.built  # the fixture: a store holding a built release of one wheel
REQUESTS = 20


@contextlib.contextmanager
def damaged(kind: str, built: Built, where: Path) -> Iterator[Store]:
    if kind == "EIO":
        with eio_store(where, built) as copy:
            yield Store(copy)
        return
    built.object_path.unlink()
    built.object_path.mkdir()  # open() of the object now fails with EISDIR
    yield built.store


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.parametrize("kind", ["EISDIR", "EIO"])
def test_a_store_read_error_is_one_log_line_and_a_short_500(built, tmp_path, caplog, kind):
    caplog.set_level(logging.INFO, logger="ipwhl.gateway")
    sha256 = built.object_path.name
    with damaged(kind, built, tmp_path) as store, running(store) as url:
        release = f"{url}/ipfs/{built.root}"
        for _ in range(REQUESTS):
            status, body = get(f"{release}/simple/demo/{WHEEL}")
            assert status == 500 and len(body) < 80 and b"Traceback" not in body, body
            # The gateway keeps serving what it can read.
            status, body = get(f"{release}/simple/demo/")
            assert status == 200 and WHEEL.encode() in body
    reports = [r for r in caplog.records if r.name == "ipwhl.gateway"]
    assert len(reports) == 1, [r.getMessage() for r in reports]  # rate-limited, not per request
    report = reports[0]
    line = report.getMessage()
    assert report.exc_info is None and "\n" not in line, line
    assert sha256 in line, line  # names the object's file
    # ... and the error: the errno, or the store's own word for a directory where a file was.
    assert f"{kind} (" in line or (kind == "EISDIR" and "is a directory" in line), line
    served = [r.getMessage() for r in caplog.records if r.name == "ipwhl.gateway.access"]
    assert len(served) == 2 * REQUESTS
