"""The docs say what is true: the tutorial's commands run, in order, against a package index and
a gateway on 127.0.0.1; every command and option has its reference page; the README links both."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ipwhl import cli
from ipwhl.completion import describe
from tests.indexserver import IndexServer
from tests.wheelfactory import build_wheel

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
TUTORIAL = DOCS / "tutorial.md"
REFERENCE = DOCS / "reference"

_BLOCK = re.compile(r"^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```\n", re.MULTILINE | re.DOTALL)
NOT_RUN = "<!-- not run"


def blocks(text: str, language: str) -> list[tuple[str, bool]]:
    """The `language` code blocks of a markdown text, each with whether it is to be run (not
    when the line before it says `<!-- not run: why -->`)."""
    found = []
    for match in _BLOCK.finditer(text):
        if match["lang"] != language:
            continue
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        found.append((match["body"], not before.startswith(NOT_RUN)))
    return found


def command_paths() -> list[tuple[str, ...]]:
    """Every command and subcommand, as the words after `ipwhl`."""
    return [c.path[1:] for c in describe(cli._parser()).walk() if len(c.path) > 1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- the tutorial ------------------------------------------------------------------------------


def _tutorial_index(directory: Path, index: IndexServer) -> None:
    """What the tutorial declares, as test wheels: python-dateutil (an old and a new version)
    and six, pure-Python like the real ones."""
    directory.mkdir()
    requires_python = "!=3.0.*,!=3.1.*,!=3.2.*,>=2.7"
    for version in ("2.8.2", "2.9.0.post0"):
        index.add(build_wheel(directory, "python-dateutil", version, tag="py2.py3-none-any",
                              requires_python=requires_python, requires_dist=["six>=1.5"],
                              modules={"dateutil/__init__.py": f"__version__ = '{version}'\n"}))
    for version in ("1.16.0", "1.17.0"):
        index.add(build_wheel(directory, "six", version, tag="py2.py3-none-any",
                              requires_python=requires_python,
                              modules={"six.py": f"__version__ = '{version}'\n"}))


def _tutorial_script(index_url: str, port: int) -> str:
    text = TUTORIAL.read_text(encoding="utf-8")
    assert "https://pypi.org/simple/" in text and "127.0.0.1:8080" in text
    body = "\n".join(block for block, run in blocks(text, "sh") if run)
    body = body.replace("https://pypi.org/simple/", index_url)
    body = body.replace("127.0.0.1:8080", f"127.0.0.1:{port}").replace("--port 8080",
                                                                        f"--port {port}")
    # Stop the gateway if the script fails half-way (at the end, the tutorial stops it and
    # the script waits for it); echo each command, as a reader would type it.
    return ("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\nset -x\n"
            + body + "\nwait\n")


@pytest.mark.slow
def test_the_tutorial_runs_from_start_to_finish(tmp_path: Path) -> None:
    shims = tmp_path / "bin"
    shims.mkdir()
    ipwhl = shims / "ipwhl"
    ipwhl.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m ipwhl "$@"\n')
    ipwhl.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("IPWHL_", "PIP_", "UV_", "PYTHON", "VIRTUAL_ENV", "NO_COLOR"))
    }
    env.update(PATH=f"{shims}:{env['PATH']}", HOME=str(home), IPWHL_KEY_PASSPHRASE="tutorial",
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", LC_ALL="C.UTF-8")
    with IndexServer(mode="json") as index:
        _tutorial_index(tmp_path / "wheels", index)
        script = _tutorial_script(index.url, _free_port())
        (tmp_path / "tutorial.sh").write_text(script)
        done = subprocess.run(["bash", str(tmp_path / "tutorial.sh")], cwd=tmp_path / "home",
                              env=env, capture_output=True, text=True, timeout=600, check=False)
    said = [line for line in done.stderr.splitlines() if not line.startswith(("++", "    "))]
    shown = "--- stdout\n" + done.stdout[-3000:] + "\n--- stderr\n" + "\n".join(said[-40:])
    assert done.returncode == 0, shown
    # What the tutorial's output blocks promise, in substance.
    assert "python-dateutil 2.8.2 -> 2.9.0.post0" in done.stdout, shown
    assert "upgraded   python-dateutil 2.8.2 -> 2.9.0.post0" in done.stdout, shown
    assert "dateutil dateutil ok" in done.stdout, shown
    assert "Version: 2.9.0.post0" in done.stdout, shown
    assert "Traceback" not in done.stderr, shown
    release = home / "tutorial"
    assert (release / "tutorial-1.record.minisig").is_file()
    assert (home / "friend" / "tutorial-2.record").is_file()


def test_the_tutorial_has_blocks_to_run_and_one_not_to() -> None:
    found = blocks(TUTORIAL.read_text(encoding="utf-8"), "sh")
    assert len([b for b, run in found if run]) >= 10
    assert [b for b, run in found if not run] == [found[0][0]]  # only the install


# -- the reference -----------------------------------------------------------------------------


def page(path: tuple[str, ...]) -> Path:
    """The reference page of a command: subcommands are on their command's page."""
    return REFERENCE / f"{path[0]}.md"


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_has_a_reference_page_naming_every_option(path: tuple[str, ...]) -> None:
    text = page(path).read_text(encoding="utf-8")
    heading = f"ipwhl {' '.join(path)}"
    assert f"# `{heading}" in text or f"## `{heading}" in text, f"no heading for {heading}"
    command = next(c for c in describe(cli._parser()).walk() if c.path[1:] == path)
    for option in command.options:
        for flag in option.flags:
            assert re.search(rf"`{re.escape(flag)}[` =\[]", text), \
                f"{page(path).name} does not document {flag} of {heading}"
    assert "## Exit codes" in text
    assert "## Examples" in text


def test_every_page_is_a_command_and_linked_from_the_index() -> None:
    index = (REFERENCE / "README.md").read_text(encoding="utf-8")
    top = {path[0] for path in command_paths()}
    pages = {p.stem for p in REFERENCE.glob("*.md")} - {"README"}
    assert pages == top
    for name in top:
        assert f"({name}.md)" in index, f"the reference index does not link {name}.md"


@pytest.mark.parametrize("name", sorted({path[0] for path in command_paths()} - cli.NO_JSON))
def test_json_documents_in_the_reference_parse(name: str) -> None:
    text = (REFERENCE / f"{name}.md").read_text(encoding="utf-8")
    assert "## JSON" in text, f"{name}.md has no JSON section"
    documents = [block for block, _ in blocks(text, "json")]
    assert documents, f"{name}.md shows no JSON document"
    for document in documents:
        json.loads(document)


def test_the_readme_links_the_tutorial_and_the_reference() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "(docs/tutorial.md)" in readme
    assert "(docs/reference/README.md)" in readme
