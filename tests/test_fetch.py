"""Tests for ipwhl.fetch: file, relative and HTTP sources, every content-id form, and a flaky
network (resume with Range, restart, retry, give up) — over a real server on 127.0.0.1."""

from __future__ import annotations

import base64
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ipwhl.build import check_release, load_plan
from ipwhl.cid import BLAKE3, CID, DAG_PB, RAW, SHA2_256
from ipwhl.errors import FetchError, IntegrityError
from ipwhl.fetch import FetchedFile, fetch_into_store, open_source
from ipwhl.store import Store
from ipwhl.unixfs import CHUNK_SIZE, file_cid
from tests.releasefactory import Project, write_release
from tests.wheelfactory import build_wheel

MAIN = Path(__file__).resolve().parents[1]


def _contents(store: Store, *folders: str) -> list[str]:
    """Every file under the given store folders, as relative paths."""
    return sorted(
        str(path.relative_to(store.root))
        for folder in folders
        for path in (store.root / folder).rglob("*")
        if path.is_file()
    )


def _untouched(store: Store) -> bool:
    return not _contents(store, "objects", "layouts", "blocks", "tmp")


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    directory = tmp_path / "wheels"
    directory.mkdir(exist_ok=True)
    return build_wheel(directory, "example", "1.0")


@pytest.fixture
def big_wheel(tmp_path: Path) -> Path:
    """A wheel of three 262144-byte chunks or so (an incompressible module inside)."""
    directory = tmp_path / "wheels"
    directory.mkdir(exist_ok=True)
    noise = base64.b64encode(random.Random(0).randbytes(560_000)).decode()
    path = build_wheel(
        directory, "big", "1.0", modules={"big/__init__.py": f"DATA = {noise!r}\n"}
    )
    assert 2 * CHUNK_SIZE < path.stat().st_size < 3 * CHUNK_SIZE
    return path


# -- sources -----------------------------------------------------------------------------------


def test_file_url(store: Store, wheel: Path) -> None:
    data = wheel.read_bytes()
    seen: list[int] = []
    fetched = fetch_into_store(store, wheel.as_uri(), file_cid(data), progress=seen.append)
    assert fetched.cid == file_cid(data)
    assert fetched.size == len(data) == sum(seen)
    assert fetched.tsize == len(data)  # one chunk: the root is the raw leaf
    assert store.read_object(fetched.sha256) == data
    assert store.get_block(fetched.cid) == data
    assert FetchedFile.from_record(fetched.to_record()) == fetched
    assert not _contents(store, "tmp")


def test_missing_file_and_unknown_scheme_are_fetch_errors(store: Store, tmp_path: Path) -> None:
    cid = file_cid(b"x")
    with pytest.raises(FetchError, match="cannot read"):
        fetch_into_store(store, (tmp_path / "absent.whl").as_uri(), cid)
    with pytest.raises(FetchError, match="unsupported URL scheme 'ftp'"):
        fetch_into_store(store, "ftp://example.org/a.whl", cid)
    assert _untouched(store)


def test_relative_declaration_sources(store: Store, tmp_path: Path) -> None:
    release = write_release(tmp_path, [Project("a", "1.0", requires_dist=["b>=1"]),
                                       Project("b", "1.0")])
    declaration = next(iter(release.declaration_files.values()))
    assert "source = '../../wheels/" in declaration.read_text()
    result = check_release(store, load_plan(release.path), workers=2)
    assert result.violations == []
    for wheel in release.wheels.values():
        realised = next(r for r in result.wheels.values()
                        if r.plan.declaration.filename == wheel.name)
        assert store.read_object(realised.fetched.sha256) == wheel.read_bytes()


def test_http(store: Store, http_server, wheel: Path) -> None:
    served = http_server(wheel.parent)
    data = wheel.read_bytes()
    fetched = fetch_into_store(store, f"{served.url}/{wheel.name}", file_cid(data))
    assert store.read_object(fetched.sha256) == data
    assert [(r.name, r.range) for r in served.requests] == [(wheel.name, None)]


def test_open_source_streams_bytes(http_server, wheel: Path) -> None:
    served = http_server(wheel.parent)
    assert b"".join(open_source(f"{served.url}/{wheel.name}")) == wheel.read_bytes()
    assert b"".join(open_source(wheel.as_uri())) == wheel.read_bytes()


# -- content-ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["wheel", "big_wheel"])
@pytest.mark.parametrize(
    ("options", "prefix", "version", "hash_code"),
    [
        (("--cid-version", "1"), "bafk", 1, SHA2_256),
        (("--cid-version", "0"), "Qm", 0, SHA2_256),
        (("--cid-version", "1", "--hash", "blake3"), "bafk", 1, BLAKE3),
    ],
    ids=["cidv1", "cidv0", "blake3"],
)
def test_content_id_forms(
    request, store: Store, unixfs_oracle, which, options, prefix, version, hash_code
) -> None:
    wheel = request.getfixturevalue(which)
    declared = unixfs_oracle(wheel, *options)
    if which == "big_wheel" and version == 1:
        prefix = "bafy"  # a file of several chunks has a dag-pb root
    assert declared.startswith(prefix)
    content_id = CID.parse(declared)
    assert (content_id.version, content_id.hash_code) == (version, hash_code)
    fetched = fetch_into_store(store, wheel.as_uri(), content_id)
    # Whatever the declared form, the release holds the file as CIDv1, sha2-256, raw leaves.
    assert fetched.cid == CID.parse(unixfs_oracle(wheel, "--cid-version", "1"))
    assert fetched.cid.codec == (DAG_PB if which == "big_wheel" else RAW)
    assert store.read_object(fetched.sha256) == wheel.read_bytes()


@pytest.mark.parametrize("cid_version, hash_code", [(1, SHA2_256), (0, SHA2_256), (1, BLAKE3)])
def test_hash_mismatch_leaves_nothing(
    store: Store, big_wheel: Path, cid_version: int, hash_code: int
) -> None:
    wrong = file_cid(big_wheel.read_bytes() + b"\0", cid_version=cid_version, hash_code=hash_code)
    with pytest.raises(IntegrityError, match="declared content-id is " + str(wrong)):
        fetch_into_store(store, big_wheel.as_uri(), wrong)
    assert _untouched(store)


def test_wrong_bytes_over_http_leave_nothing(store: Store, http_server, wheel: Path) -> None:
    served = http_server(wheel.parent)
    served.corrupt(wheel.name)
    with pytest.raises(IntegrityError, match="hashes to"):
        fetch_into_store(store, f"{served.url}/{wheel.name}", file_cid(wheel.read_bytes()))
    assert _untouched(store)


# -- a flaky network ---------------------------------------------------------------------------


def test_resume_after_the_connection_dies(store: Store, http_server, big_wheel: Path) -> None:
    served = http_server(big_wheel.parent)
    served.die_after(big_wheel.name, 300_000, times=1)
    data = big_wheel.read_bytes()
    fetched = fetch_into_store(store, f"{served.url}/{big_wheel.name}", file_cid(data))
    assert store.read_object(fetched.sha256) == data
    assert [r.range for r in served.requests] == [None, "bytes=300000-"]
    assert not _contents(store, "tmp")


def test_restart_when_the_server_ignores_range(
    store: Store, http_server, big_wheel: Path
) -> None:
    served = http_server(big_wheel.parent, ignore_range=True)
    served.die_after(big_wheel.name, 300_000, times=1)
    data = big_wheel.read_bytes()
    seen: list[int] = []
    fetched = fetch_into_store(
        store, f"{served.url}/{big_wheel.name}", file_cid(data), progress=seen.append
    )
    assert store.read_object(fetched.sha256) == data
    assert fetched.cid == file_cid(data)
    assert [r.range for r in served.requests] == [None, "bytes=300000-"]
    assert sum(seen) == 300_000 + len(data)
    assert len(_contents(store, "objects")) == 1
    assert not _contents(store, "tmp")


def test_retry_after_503(store: Store, http_server, wheel: Path) -> None:
    served = http_server(wheel.parent)
    served.fail(wheel.name, 503, times=1)
    fetched = fetch_into_store(store, f"{served.url}/{wheel.name}", file_cid(wheel.read_bytes()))
    assert store.read_object(fetched.sha256) == wheel.read_bytes()
    assert served.count(wheel.name) == 2


def test_404_fails_fast(store: Store, http_server, tmp_path: Path) -> None:
    served = http_server(tmp_path)
    started = time.monotonic()
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_into_store(store, f"{served.url}/absent.whl", file_cid(b"x"))
    assert time.monotonic() - started < 1.0
    assert served.count() == 1
    assert _untouched(store)


def test_a_fetch_that_dies_for_good_leaves_nothing(
    store: Store, http_server, big_wheel: Path
) -> None:
    served = http_server(big_wheel.parent)
    served.die_after(big_wheel.name, 1000, times=100)
    with pytest.raises(FetchError, match="after 2 attempts"):
        fetch_into_store(
            store, f"{served.url}/{big_wheel.name}", file_cid(big_wheel.read_bytes()), retries=1
        )
    assert served.count() == 2
    assert _untouched(store)


def test_503_for_good_is_a_fetch_error(store: Store, http_server, wheel: Path) -> None:
    served = http_server(wheel.parent)
    served.fail(wheel.name, 503, times=100)
    with pytest.raises(FetchError, match="HTTP 503"):
        fetch_into_store(
            store, f"{served.url}/{wheel.name}", file_cid(wheel.read_bytes()), retries=1
        )
    assert served.count() == 2
    assert _untouched(store)


# -- what lands in the store -------------------------------------------------------------------


def test_multi_chunk_wheel_is_one_object_and_a_layout(
    store: Store, big_wheel: Path, unixfs_oracle
) -> None:
    data = big_wheel.read_bytes()
    fetched = fetch_into_store(store, big_wheel.as_uri(), file_cid(data))
    assert str(fetched.cid) == unixfs_oracle(big_wheel, "--cid-version", "1")
    assert _contents(store, "objects") == [f"objects/{fetched.sha256[:2]}/{fetched.sha256}"]
    assert len(_contents(store, "layouts")) == 1
    layout = store.get_layout(fetched.cid)
    assert layout is not None
    assert layout.object_sha256 == fetched.sha256
    assert layout.size == len(data)
    assert [(offset, length) for _, offset, length in layout.leaves] == [
        (0, CHUNK_SIZE), (CHUNK_SIZE, CHUNK_SIZE), (2 * CHUNK_SIZE, len(data) - 2 * CHUNK_SIZE)
    ]
    # Leaves are slices of the object, not copies; only the root node is a block of its own.
    root_path = store.block_path(fetched.cid).relative_to(store.root)
    assert _contents(store, "blocks") == [str(root_path)]
    root_block = store.get_block(fetched.cid)
    assert fetched.tsize == len(root_block) + len(data)
    for cid, offset, length in layout.leaves:
        assert store.get_block(cid) == data[offset : offset + length]
    assert b"".join(store.iter_layout(layout)) == data
    # A new Store on the same folder finds the leaves from the layouts on disk.
    reopened = Store(store.root).open()
    assert reopened.get_block(layout.leaves[1][0]) == data[CHUNK_SIZE : 2 * CHUNK_SIZE]


def test_refetching_is_harmless(store: Store, big_wheel: Path) -> None:
    data = big_wheel.read_bytes()
    first = fetch_into_store(store, big_wheel.as_uri(), file_cid(data))
    before = _contents(store, "objects", "layouts", "blocks")
    again = fetch_into_store(store, big_wheel.as_uri(), file_cid(data, cid_version=0))
    assert again == first
    assert _contents(store, "objects", "layouts", "blocks") == before
    assert not _contents(store, "tmp")


# -- the CLI over HTTP -------------------------------------------------------------------------


def _ipwhl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(MAIN)}
    env.pop("IPWHL_STORE", None)
    return subprocess.run(
        [sys.executable, "-m", "ipwhl", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_check_over_http_then_again_without_fetching(http_server, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    served = http_server(wheels)
    release = write_release(
        tmp_path,
        [Project("a", "1.0", requires_dist=["b>=1"]),
         Project("b", "2.0", tags=("cp311-cp311-manylinux_2_17_x86_64", "cp312-cp312-win_amd64"))],
        base_url=served.url,
    )
    declaration = next(iter(release.declaration_files.values()))
    assert "source = 'http://127.0.0.1:" in declaration.read_text()
    store = tmp_path / "store"
    first = _ipwhl("check", str(release.path), "--store", str(store), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert sorted(r.name for r in served.requests) == sorted(release.wheels)
    second = _ipwhl("check", str(release.path), "--store", str(store), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert served.count() == len(release.wheels)  # nothing was fetched the second time
