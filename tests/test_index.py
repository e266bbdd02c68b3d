"""Tests for ipwhl.index: exact bytes, escaping, pip's parser, release.toml round trips."""

from __future__ import annotations

import hashlib
import importlib
import urllib.parse
from html.parser import HTMLParser

import pytest
import tomli
from hypothesis import given
from hypothesis import strategies as st

from ipwhl.index import (
    LANDING_PAGE_PROJECTS,
    ProjectRow,
    ReleaseCounts,
    ReleaseInfo,
    WheelLink,
    landing_page,
    project_page,
    release_toml,
    root_page,
)

SHA_A = hashlib.sha256(b"wheel a").hexdigest()
SHA_B = hashlib.sha256(b"wheel b").hexdigest()
META_A = hashlib.sha256(b"metadata a").hexdigest()
META_B = hashlib.sha256(b"metadata b").hexdigest()


class _Collector(HTMLParser):
    """Record every start tag with its attributes and the text inside each element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self.texts: dict[str, list[str]] = {}
        self._open: list[str] = []
        self._anchor_text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "a":
            self._anchor_text = []
            self.anchors.append((dict(attrs), ""))
        if tag not in ("meta", "br"):
            self._open.append(tag)
            self.texts.setdefault(tag, []).append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._anchor_text is not None:
            attrs, _ = self.anchors[-1]
            self.anchors[-1] = (attrs, "".join(self._anchor_text))
            self._anchor_text = None
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._anchor_text is not None:
            self._anchor_text.append(data)
        if self._open:
            self.texts[self._open[-1]][-1] += data


def _parse(page: bytes) -> _Collector:
    collector = _Collector()
    collector.feed(page.decode("utf-8"))
    collector.close()
    return collector


# --- project_page ---------------------------------------------------------------------------


def test_project_page_exact_bytes() -> None:
    wheels = [
        WheelLink("demo-1.0-py3-none-any.whl", SHA_B, None, META_B),
        WheelLink("demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", SHA_A, ">=3.8", META_A),
    ]
    expected = (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n'
        "<head>\n"
        '<meta charset="utf-8">\n'
        '<meta name="pypi:repository-version" content="1.0">\n'
        "<title>Links for demo</title>\n"
        "</head>\n"
        "<body>\n"
        "<h1>Links for demo</h1>\n"
        f'<a href="demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl#sha256={SHA_A}" '
        f'data-requires-python="&gt;=3.8" data-core-metadata="sha256={META_A}">'
        "demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl</a><br>\n"
        f'<a href="demo-1.0-py3-none-any.whl#sha256={SHA_B}" '
        f'data-core-metadata="sha256={META_B}">demo-1.0-py3-none-any.whl</a><br>\n'
        "</body>\n"
        "</html>\n"
    )
    assert project_page("demo", wheels) == expected.encode("utf-8")


def test_project_page_is_independent_of_input_order() -> None:
    first = WheelLink("b-1-py3-none-any.whl", SHA_A, "<4,>=3.9", META_A)
    second = WheelLink("b-1-cp312-abi3-win_amd64.whl", SHA_B, None, META_B)
    assert project_page("b", [first, second]) == project_page("b", (second, first))


def test_project_page_escapes_hostile_values() -> None:
    wheel = WheelLink('<script>x"&\'-1-py3-none-any.whl', SHA_A, '>=3.8"><script>', META_A)
    page = project_page("<b>&\"'", [wheel]).decode("utf-8")
    assert "<script>" not in page
    assert "<b>" not in page
    assert 'data-requires-python="&gt;=3.8&quot;&gt;&lt;script&gt;"' in page
    parsed = _parse(page.encode("utf-8"))
    attrs, text = parsed.anchors[0]
    assert text == wheel.filename
    assert attrs["data-requires-python"] == wheel.requires_python
    assert parsed.texts["title"] == ["Links for <b>&\"'"]


def test_project_page_href_is_one_relative_segment() -> None:
    wheel = WheelLink("a:b/c#d?e%f-1.0+local-py3-none-any.whl", SHA_A, None, META_A)
    (attrs, _), = _parse(project_page("a", [wheel])).anchors
    path, _, fragment = attrs["href"].partition("#")
    assert ":" not in path and "/" not in path and "?" not in path
    assert "+local" in path  # real wheel names stay readable
    assert urllib.parse.unquote(path) == wheel.filename
    assert fragment == f"sha256={SHA_A}"
    resolved = urllib.parse.urljoin("https://gw/ipfs/cid/simple/a/", attrs["href"])
    assert resolved.startswith("https://gw/ipfs/cid/simple/a/")


@pytest.mark.parametrize("bad", ["", ".", ".."])
def test_project_page_refuses_names_that_are_not_files(bad: str) -> None:
    with pytest.raises(ValueError, match="cannot be a file"):
        project_page("p", [WheelLink(bad, SHA_A, None, META_A)])


@pytest.mark.parametrize("bad", ["", "ABCDEF" * 10 + "0000", "sha256=" + SHA_A, SHA_A[:-1]])
def test_project_page_refuses_malformed_hashes(bad: str) -> None:
    with pytest.raises(ValueError, match="64 lowercase hex"):
        project_page("p", [WheelLink("p-1-py3-none-any.whl", bad, None, META_A)])
    with pytest.raises(ValueError, match="64 lowercase hex"):
        project_page("p", [WheelLink("p-1-py3-none-any.whl", SHA_A, None, bad)])


def test_project_page_refuses_a_wheel_listed_twice() -> None:
    wheel = WheelLink("p-1-py3-none-any.whl", SHA_A, None, META_A)
    with pytest.raises(ValueError, match="listed twice"):
        project_page("p", [wheel, wheel])


_hex = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
_names = st.text(min_size=1).filter(lambda name: name not in (".", ".."))


@given(
    project=st.text(),
    wheels=st.lists(
        st.builds(WheelLink, _names, _hex, st.none() | st.text(), _hex),
        unique_by=lambda wheel: wheel.filename,
        max_size=5,
    ),
)
def test_project_page_parses_back_to_its_input(project: str, wheels: list[WheelLink]) -> None:
    page = project_page(project, wheels)
    assert page == project_page(project, list(reversed(wheels)))
    parsed = _parse(page)
    assert parsed.texts["title"] == [f"Links for {project}"]
    assert ("meta", {"name": "pypi:repository-version", "content": "1.0"}) in parsed.tags
    expected = sorted(wheels, key=lambda wheel: wheel.filename)
    assert len(parsed.anchors) == len(expected)
    for (attrs, text), wheel in zip(parsed.anchors, expected, strict=True):
        assert text == wheel.filename
        path, _, fragment = attrs["href"].partition("#")
        assert urllib.parse.unquote(path) == wheel.filename
        assert fragment == f"sha256={wheel.sha256}"
        assert attrs.get("data-requires-python") == wheel.requires_python
        assert attrs["data-core-metadata"] == f"sha256={wheel.metadata_sha256}"


# --- pip's own parser -----------------------------------------------------------------------


def _pip_links(page: bytes, url: str) -> list:
    try:
        collector = importlib.import_module("pip._internal.index.collector")
    except ImportError as error:  # pip's internals move between releases
        pytest.skip(f"pip's internal link parser is not importable here: {error}")
    if not hasattr(collector, "IndexContent") or not hasattr(collector, "parse_links"):
        pytest.skip("this pip has no IndexContent/parse_links to check pages with")
    content = collector.IndexContent(page, "text/html", None, url)
    return list(collector.parse_links(content))


def test_pip_reads_hrefs_requires_python_and_metadata_hashes() -> None:
    wheels = [
        WheelLink("demo-1.0+local-py3-none-any.whl", SHA_A, ">=3.8,<4", META_A),
        WheelLink("demo-1.0-cp311-cp311-win_amd64.whl", SHA_B, None, META_B),
    ]
    url = "https://gateway.example/ipfs/bafyexample/simple/demo/"
    links = _pip_links(project_page("demo", wheels), url)
    by_name = {link.filename: link for link in links}
    assert set(by_name) == {wheel.filename for wheel in wheels}
    for wheel in wheels:
        link = by_name[wheel.filename]
        assert link.url_without_fragment == url + urllib.parse.quote(wheel.filename)
        assert link.hash_name == "sha256"
        assert link.hash == wheel.sha256
        assert link.requires_python == wheel.requires_python
        metadata = link.metadata_link()
        assert metadata is not None
        assert metadata.url_without_fragment == link.url_without_fragment + ".metadata"
        assert (metadata.hash_name, metadata.hash) == ("sha256", wheel.metadata_sha256)


def test_pip_reads_the_root_page() -> None:
    url = "https://gateway.example/ipfs/bafyexample/simple/"
    links = _pip_links(root_page(["zope-interface", "attrs"]), url)
    assert [link.url for link in links] == [url + "attrs/", url + "zope-interface/"]


# --- root_page ------------------------------------------------------------------------------


def test_root_page_exact_bytes() -> None:
    expected = (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n'
        "<head>\n"
        '<meta charset="utf-8">\n'
        '<meta name="pypi:repository-version" content="1.0">\n'
        "<title>Simple index</title>\n"
        "</head>\n"
        "<body>\n"
        "<h1>Simple index</h1>\n"
        '<a href="attrs/">attrs</a><br>\n'
        '<a href="zope-interface/">zope-interface</a><br>\n'
        "</body>\n"
        "</html>\n"
    )
    assert root_page(iter(["zope-interface", "attrs", "attrs"])) == expected.encode()


@given(st.lists(_names, max_size=6))
def test_root_page_parses_back_to_its_input(projects: list[str]) -> None:
    parsed = _parse(root_page(projects))
    expected = sorted(set(projects))
    assert [text for _, text in parsed.anchors] == expected
    hrefs = [attrs["href"] for attrs, _ in parsed.anchors]
    assert [urllib.parse.unquote(href.removesuffix("/")) for href in hrefs] == expected
    assert all(href.endswith("/") and "/" not in href[:-1] for href in hrefs)


# --- landing_page ---------------------------------------------------------------------------

SUPPORTED = ("cp311 manylinux_2_17_x86_64", "cp312 win_amd64")
RELEASE = ReleaseInfo(
    name="example",
    sequence=7,
    previous="bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354",
    date="2026-11-25T00:00:00Z",
    supported=SUPPORTED,
)
ROWS = [
    ProjectRow("six", "1.16.0", ("six-1.16.0-py2.py3-none-any.whl",), SUPPORTED),
    ProjectRow(
        "numpy",
        "2.1.0",
        ("numpy-2.1.0-cp311-cp311-manylinux_2_17_x86_64.whl",),
        ("cp311 manylinux_2_17_x86_64",),
    ),
]


def test_landing_page_tells_people_what_and_how() -> None:
    page = landing_page(RELEASE, ROWS)
    assert page == landing_page(RELEASE, list(reversed(ROWS)))
    text = page.decode("utf-8")
    assert "\r" not in text and text.endswith("</html>\n")
    assert "pip install --index-url https://GATEWAY/ipfs/CID/simple/ PROJECT" in text
    assert "pip config --site set global.index-url https://GATEWAY/ipfs/CID/simple/" in text
    assert "--user" in text
    assert "site.index-url" not in text  # pip ignores a [site] section
    assert "this page's address" in text.replace("&#x27;", "'")
    assert "2026-11-25T00:00:00Z" in text
    parsed = _parse(page)
    assert parsed.texts["h1"] == ["example"]
    hrefs = [attrs["href"] for attrs, _ in parsed.anchors]
    assert f"/ipfs/{RELEASE.previous}/" in hrefs
    assert "simple/" in hrefs
    assert "simple/numpy/" in hrefs and "simple/six/" in hrefs
    assert "simple/numpy/numpy-2.1.0-cp311-cp311-manylinux_2_17_x86_64.whl" in hrefs
    assert hrefs.index("simple/numpy/") < hrefs.index("simple/six/")
    assert "7" in "".join(parsed.texts["dd"])
    assert "all 2 supported" in text
    assert "<code>cp311 manylinux_2_17_x86_64</code>" in text


def test_landing_page_is_self_contained() -> None:
    parsed = _parse(landing_page(RELEASE, ROWS))
    tags = {tag for tag, _ in parsed.tags}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed"}
    for _, attrs in parsed.tags:
        assert "src" not in attrs
        assert not any(name.startswith("on") for name in attrs)
        href = attrs.get("href")
        if href is not None:
            assert "://" not in href and not href.startswith("//")


def test_landing_page_of_a_large_release_gives_counts_not_a_table() -> None:
    counts = ReleaseCounts(projects=600000, wheels=612345)
    page = landing_page(RELEASE, counts)
    assert page == landing_page(RELEASE, ReleaseCounts(600000, 612345))
    assert len(page) < 5000 and counts.projects > LANDING_PAGE_PROJECTS
    text = page.decode("utf-8")
    assert "Projects (600000)" in text and "600000 projects, 612345 wheels" in text
    assert "<table>" not in text
    parsed = _parse(page)
    hrefs = [attrs["href"] for attrs, _ in parsed.anchors]
    assert hrefs.count("simple/") == 2 and "ipwhl/declarations/" in hrefs
    assert "pip install --index-url https://GATEWAY/ipfs/CID/simple/ PROJECT" in text
    # Everything above the project list is as a small release's page has it.
    head = landing_page(RELEASE, ROWS).decode("utf-8").split("<h2>Projects")[0]
    assert text.startswith(head)


def test_landing_page_without_date_or_previous() -> None:
    release = ReleaseInfo("first", 1, None, None, ())
    text = landing_page(release, []).decode("utf-8")
    assert "Date" not in text
    assert "/ipfs/" not in text.replace("https://GATEWAY/ipfs/CID/", "")
    assert "Projects (0)" in text


@given(
    name=st.text(),
    previous=st.none() | _names,
    date=st.none() | st.text(),
    project=_names,
    version=st.text(),
    wheel=_names,
)
def test_landing_page_escapes_everything(
    name: str, previous: str | None, date: str | None, project: str, version: str, wheel: str
) -> None:
    release = ReleaseInfo(name, 3, previous, date, ("cp311 linux_x86_64",))
    row = ProjectRow(project, version, (wheel,), ())
    parsed = _parse(landing_page(release, [row]))
    assert parsed.texts["h1"] == [name]
    assert parsed.texts["title"] == [f"{name} — release 3"]
    assert parsed.texts["td"][0] == version
    *_, (project_attrs, project_text), (wheel_attrs, wheel_text) = parsed.anchors
    assert project_text == project
    assert urllib.parse.unquote(project_attrs["href"]) == f"simple/{project}/"
    assert wheel_text == wheel
    assert urllib.parse.unquote(wheel_attrs["href"]) == f"simple/{project}/{wheel}"
    if previous is not None:
        previous_attrs, previous_text = parsed.anchors[0]
        assert previous_text == previous
        assert urllib.parse.unquote(previous_attrs["href"]) == f"/ipfs/{previous}/"
    tags = {tag for tag, _ in parsed.tags}
    assert "script" not in tags


# --- release_toml ---------------------------------------------------------------------------


def test_release_toml_exact_bytes() -> None:
    expected = (
        'name = "example"\n'
        "sequence = 7\n"
        'previous = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"\n'
        'date = "2026-11-25T00:00:00Z"\n'
        "supported = [\n"
        '    "cp311 manylinux_2_17_x86_64",\n'
        '    "cp312 win_amd64",\n'
        "]\n"
    )
    assert release_toml(RELEASE) == expected.encode()


def test_release_toml_omits_absent_fields() -> None:
    document = release_toml(ReleaseInfo("first", 0, None, None, ()))
    assert document == b'name = "first"\nsequence = 0\nsupported = []\n'


def test_release_toml_refuses_a_non_integer_sequence() -> None:
    with pytest.raises(TypeError, match="sequence"):
        release_toml(ReleaseInfo("x", True, None, None, ()))


@given(
    name=st.text(),
    sequence=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    previous=st.none() | st.text(),
    date=st.none() | st.text(),
    supported=st.lists(st.text(), max_size=4).map(tuple),
)
def test_release_toml_round_trips_through_tomli(
    name: str, sequence: int, previous: str | None, date: str | None, supported: tuple[str, ...]
) -> None:
    release = ReleaseInfo(name, sequence, previous, date, supported)
    document = release_toml(release)
    assert b"\r" not in document
    values = tomli.loads(document.decode("utf-8"))
    expected = {"name": name, "sequence": sequence, "supported": list(supported)}
    if previous is not None:
        expected["previous"] = previous
    if date is not None:
        expected["date"] = date
    assert values == expected
