"""The release's pages and text files: PEP 503/658/714 pages, the landing page, release.toml.

Every function here is pure and deterministic: the same input gives the same bytes (UTF-8,
``\\n`` line ends) on any machine at any time, because these bytes become part of the
release's CID.
"""

from __future__ import annotations

import html
import itertools
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "LANDING_PAGE_PROJECTS",
    "ProjectRow",
    "ReleaseCounts",
    "ReleaseInfo",
    "WheelLink",
    "landing_page",
    "project_page",
    "release_toml",
    "root_page",
]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# A landing page lists every project up to this many; past it, a table no one reads (a 600k
# release's would be some 200 MB), so it gives the counts and points to simple/.
LANDING_PAGE_PROJECTS = 1000


@dataclass(frozen=True)
class WheelLink:
    """One wheel as its project page lists it."""

    filename: str
    sha256: str  # lowercase hex of the wheel's bytes
    requires_python: str | None  # as in METADATA; None when the wheel declares none
    metadata_sha256: str  # lowercase hex of the .metadata file (the wheel's METADATA)


@dataclass(frozen=True)
class ProjectRow:
    """One project as the landing page lists it."""

    project: str
    version: str
    wheels: tuple[str, ...]
    environments: tuple[str, ...]  # supported lines where one of the wheels is installable


@dataclass(frozen=True)
class ReleaseCounts:
    """How much a release holds, for a landing page that does not list it."""

    projects: int
    wheels: int


@dataclass(frozen=True)
class ReleaseInfo:
    """What a release says about itself."""

    name: str
    sequence: int
    previous: str | None  # CID of the release this one follows
    date: str | None
    supported: tuple[str, ...]


def _text(value: str) -> str:
    return html.escape(value, quote=True)


def _segment(name: str) -> str:
    """Return *name* as one relative URL path segment that resolves to exactly that name."""
    if name in ("", ".", ".."):
        raise ValueError(f"{name!r} cannot be a file or directory name in the index")
    # Keep the characters of real wheel file names readable; percent-encode the rest,
    # including ':' (a relative reference would read "a:b" as a scheme) and '/', '#', '?'.
    return urllib.parse.quote(name, safe="!+")


def _check_sha256(value: str, what: str) -> str:
    if not _SHA256_HEX.fullmatch(value):
        raise ValueError(f"{what} must be 64 lowercase hex digits, got {value!r}")
    return value


def _document(title: str, head_extra: Sequence[str], body: Sequence[str]) -> bytes:
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="pypi:repository-version" content="1.0">',
        *head_extra,
        f"<title>{_text(title)}</title>",
        "</head>",
        "<body>",
        *body,
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(lines).encode("utf-8")


def project_page(project: str, wheels: Sequence[WheelLink]) -> bytes:
    """Return the PEP 503 project page listing *wheels* by file name, with PEP 658/714 hashes."""
    ordered = sorted(wheels, key=lambda wheel: wheel.filename)
    for first, second in itertools.pairwise(ordered):
        if first.filename == second.filename:
            raise ValueError(f"{project}: wheel {first.filename!r} is listed twice")
    title = f"Links for {project}"
    body = [f"<h1>{_text(title)}</h1>"]
    for wheel in ordered:
        href = f"{_segment(wheel.filename)}#sha256={_check_sha256(wheel.sha256, 'sha256')}"
        attributes = [f'href="{_text(href)}"']
        if wheel.requires_python is not None:
            attributes.append(f'data-requires-python="{_text(wheel.requires_python)}"')
        metadata_hash = _check_sha256(wheel.metadata_sha256, "metadata_sha256")
        attributes.append(f'data-core-metadata="sha256={metadata_hash}"')
        body.append(f"<a {' '.join(attributes)}>{_text(wheel.filename)}</a><br>")
    return _document(title, (), body)


def root_page(projects: Iterable[str]) -> bytes:
    """Return the PEP 503 root page: one link "<project>/" per distinct project, sorted."""
    body = ["<h1>Simple index</h1>"]
    for project in sorted(set(projects)):
        href = f"{_segment(project)}/"
        body.append(f'<a href="{_text(href)}">{_text(project)}</a><br>')
    return _document("Simple index", (), body)


_STYLE = """\
<style>
body { font-family: system-ui, sans-serif; line-height: 1.5; max-width: 60rem;
       margin: 2rem auto; padding: 0 1rem; color: #1a1a1a; background: #fff; }
code, pre { font-family: ui-monospace, monospace; }
pre { background: #f3f3f3; padding: 0.75rem; overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 0.3rem 0.6rem;
         border-bottom: 1px solid #ccc; }
ul.plain { list-style: none; margin: 0; padding: 0; }
</style>"""


def _environments_cell(environments: tuple[str, ...], supported: tuple[str, ...]) -> str:
    if supported and set(environments) == set(supported):
        return f"all {len(supported)} supported"
    if not environments:
        return "none"
    items = "".join(f"<li><code>{_text(line)}</code></li>" for line in environments)
    return f'<ul class="plain">{items}</ul>'


def landing_page(release: ReleaseInfo, rows: Sequence[ProjectRow] | ReleaseCounts) -> bytes:
    """Return the release's index.html for people: what it is, what it holds, how to use it.

    Given `ReleaseCounts` instead of rows (a release of more than LANDING_PAGE_PROJECTS
    projects), it says how many projects and wheels there are and points to simple/."""
    title = f"{release.name} — release {release.sequence}"
    body = [f"<h1>{_text(release.name)}</h1>", "<dl>"]
    body.append(f"<dt>Release</dt><dd>{release.sequence}</dd>")
    if release.date is not None:
        body.append(f"<dt>Date</dt><dd>{_text(release.date)}</dd>")
    if release.previous is not None:
        # A relative link cannot cross releases (each is its own DAG), but a gateway-root
        # link can: every path gateway serves /ipfs/<cid>/.
        previous_href = f"/ipfs/{_segment(release.previous)}/"
        body.append(
            f'<dt>Previous release</dt><dd><a href="{_text(previous_href)}">'
            f"<code>{_text(release.previous)}</code></a></dd>"
        )
    else:
        body.append("<dt>Previous release</dt><dd>none: this is the first</dd>")
    body.append(
        '<dt>Files</dt><dd><a href="simple/">simple/</a> (the package index), '
        '<a href="ipwhl/release.toml">ipwhl/release.toml</a>, '
        '<a href="ipwhl/declarations/">ipwhl/declarations/</a></dd>'
    )
    body.append("</dl>")

    body.append("<h2>How to use it</h2>")
    body.append(
        "<p>The package index is the folder <code>simple/</code> next to this page. "
        "If this page's address is <code>https://GATEWAY/ipfs/CID/</code>, "
        "install from it with:</p>"
    )
    body.append(
        "<pre><code>pip install --index-url https://GATEWAY/ipfs/CID/simple/ PROJECT</code></pre>"
    )
    body.append(
        "<p>To make it the index of a virtual environment for good, run inside that "
        "environment (use <code>--user</code> instead of <code>--site</code> for your "
        "user's configuration):</p>"
    )
    body.append(
        "<pre><code>pip config --site set global.index-url https://GATEWAY/ipfs/CID/simple/"
        "</code></pre>"
    )
    body.append(
        "<p>The address names this release by its content identifier (CID), so the "
        "files behind it cannot change; a new release has a new address.</p>"
    )

    body.append("<h2>Supported environments</h2>")
    if release.supported:
        body.append("<ul>")
        body.extend(f"<li><code>{_text(line)}</code></li>" for line in release.supported)
        body.append("</ul>")
    else:
        body.append("<p>None declared.</p>")

    if isinstance(rows, ReleaseCounts):
        body.append(f"<h2>Projects ({rows.projects})</h2>")
        body.append(
            f"<p>{rows.projects} projects, {rows.wheels} wheels: too many to list here. "
            '<a href="simple/">simple/</a> lists every project, and '
            '<a href="ipwhl/declarations/">ipwhl/declarations/</a> declares every wheel.</p>'
        )
        return _document(title, (_STYLE,), body)
    body.append(f"<h2>Projects ({len(rows)})</h2>")
    body.append("<table>")
    body.append(
        '<thead><tr><th scope="col">Project</th><th scope="col">Version</th>'
        '<th scope="col">Wheels</th><th scope="col">Environments</th></tr></thead>'
    )
    body.append("<tbody>")
    for row in sorted(rows, key=lambda row: (row.project, row.version)):
        project_href = f"simple/{_segment(row.project)}/"
        wheels = "".join(
            f'<li><a href="{_text(project_href + _segment(wheel))}">{_text(wheel)}</a></li>'
            for wheel in sorted(row.wheels)
        )
        body.append(
            f'<tr><th scope="row"><a href="{_text(project_href)}">{_text(row.project)}</a></th>'
            f"<td>{_text(row.version)}</td>"
            f'<td><ul class="plain">{wheels}</ul></td>'
            f"<td>{_environments_cell(row.environments, release.supported)}</td></tr>"
        )
    body.append("</tbody>")
    body.append("</table>")
    return _document(title, (_STYLE,), body)


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n",
                 "\f": "\\f", "\r": "\\r"}


def _toml_string(value: str) -> str:
    escaped = []
    for char in value:
        if char in _TOML_ESCAPES:
            escaped.append(_TOML_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04X}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def release_toml(release: ReleaseInfo) -> bytes:
    """Return ipwhl/release.toml: the release's name, sequence, previous CID, date, supported."""
    if isinstance(release.sequence, bool) or not isinstance(release.sequence, int):
        raise TypeError(f"sequence must be an int, got {release.sequence!r}")
    lines = [
        f"name = {_toml_string(release.name)}",
        f"sequence = {release.sequence}",
    ]
    if release.previous is not None:
        lines.append(f"previous = {_toml_string(release.previous)}")
    if release.date is not None:
        lines.append(f"date = {_toml_string(release.date)}")
    if release.supported:
        lines.append("supported = [")
        lines.extend(f"    {_toml_string(line)}," for line in release.supported)
        lines.append("]")
    else:
        lines.append("supported = []")
    lines.append("")
    return "\n".join(lines).encode("utf-8")
