"""Tests for ipwhl.pypi: PEP 503 HTML and PEP 691 JSON pages parsed alike, content negotiation
against a real server on 127.0.0.1, PEP 658 metadata checked against its hash, local trees."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipwhl.errors import FetchError, IntegrityError
from ipwhl.pypi import (
    IndexFile,
    InvalidIndexPage,
    ProjectNotFound,
    SimpleIndex,
    parse_html_page,
    parse_json_page,
)
from ipwhl.wheels import inspect_wheel
from tests.indexserver import JSON_TYPE, IndexServer
from tests.wheelfactory import build_wheel

PAGE = "https://example.org/simple/demo/"


@pytest.fixture(params=["html", "json"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IndexServer]:
    with IndexServer(mode=request.param) as server:
        wheels = tmp_path / "wheels"
        wheels.mkdir()
        server.add(build_wheel(wheels, "demo", "1.0", requires_python=">=3.8,<4"))
        server.add(build_wheel(wheels, "demo", "1.1"), yanked=True)
        server.add(build_wheel(wheels, "demo", "2.0", tag="cp312-cp312-win_amd64"),
                   offer_metadata=False)
        yield server


def test_html_page_fields() -> None:
    page = b"""<!DOCTYPE html><html><head>
    <meta name="pypi:repository-version" content="1.0"></head><body>
    <a href="../../files/demo-1.0-py3-none-any.whl#sha256=ABCD"
       data-requires-python="&gt;=3.8,&lt;4"
       data-core-metadata="sha256=EF01">demo-1.0-py3-none-any.whl</a>
    <a href="https://cdn.example/x/demo-1.1-py3-none-any.whl"
       data-yanked="">demo-1.1-py3-none-any.whl</a>
    <a href="/f/demo-2.0.tar.gz" data-dist-info-metadata="true"></a>
    <a href="demo-3.0-py3-none-any.whl" data-core-metadata="false">demo-3.0-py3-none-any.whl</a>
    <a name="no-href">nothing</a>
    </body></html>"""
    files = parse_html_page(page, PAGE)
    assert [f.filename for f in files] == [
        "demo-1.0-py3-none-any.whl", "demo-1.1-py3-none-any.whl", "demo-2.0.tar.gz",
        "demo-3.0-py3-none-any.whl",
    ]
    first, yanked, sdist, third = files
    assert first.url == "https://example.org/files/demo-1.0-py3-none-any.whl"
    assert dict(first.hashes) == {"sha256": "abcd"}
    assert first.requires_python == ">=3.8,<4"  # unescaped
    assert dict(first.core_metadata or {}) == {"sha256": "ef01"}
    assert first.metadata_url == "https://example.org/files/demo-1.0-py3-none-any.whl.metadata"
    assert not first.yanked and yanked.yanked
    assert yanked.url == "https://cdn.example/x/demo-1.1-py3-none-any.whl"
    assert yanked.core_metadata is None and not yanked.hashes
    assert sdist.url == "https://example.org/f/demo-2.0.tar.gz"  # name from the URL
    assert sdist.core_metadata is not None and not sdist.core_metadata  # offered, no hash
    assert third.url == PAGE + "demo-3.0-py3-none-any.whl"
    assert third.core_metadata is None


def test_html_base_href_moves_relative_links() -> None:
    page = b'<html><head><base href="https://mirror.example/pkgs/"></head>' \
           b'<a href="demo-1.0-py3-none-any.whl">demo-1.0-py3-none-any.whl</a></html>'
    (file,) = parse_html_page(page, PAGE)
    assert file.url == "https://mirror.example/pkgs/demo-1.0-py3-none-any.whl"


def test_json_page_fields() -> None:
    document = {
        "meta": {"api-version": "1.3"},
        "name": "demo",
        "files": [
            {"filename": "demo-1.0-py3-none-any.whl",
             "url": "../../files/demo-1.0-py3-none-any.whl", "hashes": {"sha256": "ABCD"},
             "requires-python": ">=3.8", "yanked": False,
             "core-metadata": {"sha256": "EF01"}},
            {"filename": "demo-1.1-py3-none-any.whl", "url": "https://cdn.example/demo-1.1.whl",
             "hashes": {}, "yanked": "broken on Windows", "dist-info-metadata": True},
            {"filename": "demo-1.2-py3-none-any.whl", "url": "demo-1.2-py3-none-any.whl#sha256=99",
             "hashes": {}, "requires-python": ""},
        ],
    }
    first, second, third = parse_json_page(json.dumps(document).encode(), PAGE)
    assert first == IndexFile("demo-1.0-py3-none-any.whl",
                              "https://example.org/files/demo-1.0-py3-none-any.whl",
                              {"sha256": "abcd"}, ">=3.8", False, {"sha256": "ef01"})
    assert second.yanked and second.core_metadata == {}
    assert second.url == "https://cdn.example/demo-1.1.whl"
    assert third.requires_python is None and not third.yanked and third.core_metadata is None
    assert third.url == PAGE + "demo-1.2-py3-none-any.whl" and third.hashes == {"sha256": "99"}


@pytest.mark.parametrize("page, parse", [
    (b'{"meta": {"api-version": "2.0"}, "files": []}', parse_json_page),
    (b'<meta name="pypi:repository-version" content="2.0"><a href="x.whl">x.whl</a>',
     parse_html_page),
    (b'{"files": {}}', parse_json_page),
    (b"not json", parse_json_page),
    (b"\xff\xfe<a>", parse_html_page),
])
def test_pages_that_cannot_be_read(page: bytes, parse: object) -> None:
    with pytest.raises(InvalidIndexPage, match=r"example\.org"):
        parse(page, PAGE)  # type: ignore[operator]


def test_served_pages_read_alike_in_both_formats(index: IndexServer) -> None:
    files = SimpleIndex(index.url).files("Demo")  # the name is normalized for the URL
    assert [(f.filename, f.requires_python, f.yanked, f.core_metadata is not None)
            for f in files] == [
        ("demo-1.0-py3-none-any.whl", ">=3.8,<4", False, True),
        ("demo-1.1-py3-none-any.whl", None, True, True),
        ("demo-2.0-cp312-cp312-win_amd64.whl", None, False, False),
    ]
    for file in files:
        assert file.url == index.url.replace("/simple/", f"/files/{file.filename}")
        assert file.hashes["sha256"] == hashlib.sha256(
            next(f.data for f in index.files["demo"] if f.filename == file.filename)
        ).hexdigest()
    page_type = dict(index.served)["/simple/demo/"]
    assert page_type == (JSON_TYPE if index.mode == "json" else "text/html; charset=utf-8")


def test_pages_are_read_once_per_index(index: IndexServer) -> None:
    simple = SimpleIndex(index.url)
    assert simple.files("demo") == simple.files("DEMO")
    assert index.count("/simple/demo/") == 1


def test_metadata_is_the_wheels_and_checked(index: IndexServer, tmp_path: Path) -> None:
    simple = SimpleIndex(index.url)
    first = simple.files("demo")[0]
    wheel = tmp_path / "wheels" / first.filename
    assert simple.metadata(first) == inspect_wheel(wheel).metadata_bytes
    tampered = IndexFile(first.filename, first.url, first.hashes, None, False, {"sha256": "00"})
    with pytest.raises(IntegrityError, match="sha256"):
        simple.metadata(tampered)
    with pytest.raises(ValueError, match="no metadata file"):
        simple.metadata(simple.files("demo")[2])


def test_unknown_project_and_unreachable_index(index: IndexServer) -> None:
    with pytest.raises(ProjectNotFound, match="'nothing-here' is not on the index"):
        SimpleIndex(index.url).files("nothing_here")
    with pytest.raises(FetchError, match="cannot read"):
        SimpleIndex("http://127.0.0.1:9/simple/", retries=0).files("demo")
    with pytest.raises(FetchError, match="unsupported URL scheme"):
        SimpleIndex("ftp://example.org/simple/").files("demo")


def test_a_local_tree_is_an_index(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, "demo", "1.0")
    page = tmp_path / "simple" / "demo"
    page.mkdir(parents=True)
    (page / "index.html").write_text(
        f'<a href="../../{wheel.name}" data-requires-python="&gt;=3">{wheel.name}</a>'
    )
    simple = SimpleIndex((tmp_path / "simple").as_uri())
    (file,) = simple.files("demo")
    assert file.url == wheel.as_uri() and file.requires_python == ">=3"
    with pytest.raises(ProjectNotFound):
        simple.files("other")
