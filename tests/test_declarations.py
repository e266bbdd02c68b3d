"""Declaration files: both layouts, every kind of mistake with its exact message and place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import tomli

from ipwhl import tomlpos
from ipwhl.declarations import (
    Declaration,
    load_declaration,
    load_declarations,
    prefix_of,
)
from ipwhl.errors import DeclarationError
from ipwhl.requirements import InvalidRequirement, parse_requirement

CID0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
CID1 = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"

MYPY = f"""\
source = 'https://files.pythonhosted.org/packages/mypy-0.910-py3-none-any.whl'
content-id = '{CID0}'  # the wheel's CID
requires-python = '>=3.5'
extras = ['dmypy', 'python2']
dependencies = [
\t'typing-extensions>=3.7.4',
\t'psutil>=4.0; extra == "dmypy"',
]
"""

IDNA = f"""\
source = "../../wheels/idna-3.7-py3-none-any.whl"
content-id = "{CID1}"
"""


def minimal(source: str = "https://example.org/w.whl") -> str:
    return f"source = '{source}'\ncontent-id = '{CID0}'\n"


def write(root: Path, relpath: str, text: str) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems(root: Path) -> list[str]:
    """Every violation load_declarations reports, with paths relative to `root`."""
    with pytest.raises(DeclarationError) as caught:
        load_declarations(root)
    return [str(v).removeprefix(f"{root}{os.sep}") for v in caught.value.violations]


def only_problem(root: Path, relpath: str, text: str) -> str:
    write(root, relpath, text)
    [problem] = problems(root)
    return problem


# -- the scanner ------------------------------------------------------------


def test_tomlpos_finds_values_and_elements_of_every_string_form() -> None:
    text = (
        "# comment\n"
        "source = 'a'   # c\n"
        '"content-id" = "Q\\"x"\n'
        'requires-python = """>=3.5"""\n'
        "extras = ['a',\n"
        '  "b", # comment ]\n'
        "  '''c''',\n"
        "]\n"
        "when = 1979-05-27 07:32:00Z\n"
        'nested = [[1, 2], {a = "]"}, 3.5]\n'
        "a.b = 1\n"
        "[table]\n"
        "x = 1\n"
    )
    tomli.loads(text)  # the scanner's input is valid TOML
    positions = tomlpos.scan(text)
    assert positions.value("source") == (2, 10)
    assert positions.value("content-id") == (3, 16)
    assert positions.key("content-id") == (3, 1)
    assert positions.value("requires-python") == (4, 19)
    assert [positions.element("extras", i) for i in range(3)] == [(5, 11), (6, 3), (7, 3)]
    assert positions.content("extras", 2, 1) == (7, 6)
    assert positions.content("extras", 0, 3) == (5, 14)
    assert positions.value("when") == (9, 8)
    assert [positions.element("nested", i) for i in range(3)] == [(10, 11), (10, 19), (10, 30)]
    assert positions.value("a") == (11, 7)
    assert positions.key("table") == (12, 1)
    assert "x" not in positions.keys  # in a table, not top-level


def test_tomlpos_with_crlf_and_multiline_strings() -> None:
    text = "a = 1\r\ndeps = [\r\n  '''\r\nx>=1''', \"y\\\\\"\r\n]\r\n"
    assert tomli.loads(text)["deps"] == ["x>=1", "y\\"]
    positions = tomlpos.scan(text)
    assert positions.element("deps", 0) == (3, 3)
    assert positions.content("deps", 0, 2) == (4, 2)  # after the trimmed first newline
    assert positions.element("deps", 1) == (4, 10)


def test_tomlpos_falls_back_to_the_key_line() -> None:
    positions = tomlpos.scan("\n\nextras = []\n")
    assert positions.element("extras", 4) == (3, 1)
    assert positions.value("missing") == (1, 1)
    assert tomlpos.scan("a = [1,\n").value("b") == (1, 1)  # invalid TOML: no crash


# -- valid trees -------------------------------------------------------------


def test_both_layouts_in_one_tree(tmp_path: Path) -> None:
    root = tmp_path / "pkgs"
    mypy = write(root, f"{prefix_of('mypy')}/mypy/mypy-0.910-py3-none-any.toml", MYPY)
    write(root, f"{prefix_of('mypy')}/mypy/mypy-0.910-cp39-cp39-win_amd64.toml", minimal())
    idna = write(root, "idna/idna-3.7-py3-none-any.toml", IDNA)
    write(root, ".git/config", "not a declaration")
    write(root, "idna/.DS_Store", "")

    found = load_declarations(root)

    assert [d.relpath for d in found.declarations] == [
        "idna/idna-3.7-py3-none-any.toml",
        "cf/mypy/mypy-0.910-cp39-cp39-win_amd64.toml",
        "cf/mypy/mypy-0.910-py3-none-any.toml",
    ]
    assert list(found.by_project()) == ["idna", "mypy"]
    assert len(found.by_project()["mypy"]) == 2
    declaration = found.declarations[2]
    assert declaration.path == mypy
    assert declaration.project == "mypy"
    assert declaration.filename == "mypy-0.910-py3-none-any.whl"
    assert str(declaration.version) == "0.910"
    assert declaration.content_id == CID0
    assert declaration.requires_python == ">=3.5"
    assert declaration.extras == ("dmypy", "python2")
    assert declaration.dependency_texts == (
        "typing-extensions>=3.7.4",
        'psutil>=4.0; extra == "dmypy"',
    )
    assert [d.name for d in declaration.dependencies] == ["typing-extensions", "psutil"]
    assert declaration.text == mypy.read_bytes()
    assert declaration.source_url() == declaration.source
    assert str(declaration.locations["source"]) == f"{mypy}:1:10"
    assert str(declaration.locations["extras"]) == f"{mypy}:4:10"
    assert [str(loc) for loc in declaration.dependency_locations] == [
        f"{mypy}:6:3",
        f"{mypy}:7:3",
    ]

    plain = found.declarations[0]
    assert plain.path == idna
    assert plain.extras == () and plain.dependencies == () and plain.requires_python is None
    assert plain.source_url() == (tmp_path / "wheels/idna-3.7-py3-none-any.whl").as_uri()


def test_prefix_is_the_byte_sum_of_the_name() -> None:
    assert prefix_of("requests") == "7c"
    assert prefix_of("mypy") == "cf"
    assert prefix_of("a") == "61"


def test_load_declaration_reads_one_file(tmp_path: Path) -> None:
    path = write(tmp_path, "mypy/mypy-0.910-py3-none-any.toml", MYPY)
    declaration = load_declaration(path, tmp_path)
    assert isinstance(declaration, Declaration)
    assert declaration.relpath == "mypy/mypy-0.910-py3-none-any.toml"


def test_project_named_like_a_prefix(tmp_path: Path) -> None:
    # A two-hex-digit directory holding only files is a project, not a shard.
    write(tmp_path, "42/42-1.0-py3-none-any.toml", minimal())
    assert [d.project for d in load_declarations(tmp_path).declarations] == ["42"]


def test_symlink_inside_the_root_is_followed(tmp_path: Path) -> None:
    target = write(tmp_path, "idna/idna-3.7-py3-none-any.toml", IDNA)
    (tmp_path / "idna" / "idna-3.7-py2.py3-none-any.toml").symlink_to(target)
    assert len(load_declarations(tmp_path).declarations) == 2


# -- one file per kind of mistake ---------------------------------------------

WHEEL = "idna/idna-3.7-py3-none-any.toml"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "source = 'x.whl'\ncontent-id = \n",
            "2:14: syntax: invalid TOML: invalid value",
            id="toml-syntax",
        ),
        pytest.param(
            minimal() + "dependecies = []\n",
            "3:1: syntax: unknown key 'dependecies'; did you mean 'dependencies'?",
            id="unknown-key-suggestion",
        ),
        pytest.param(
            minimal() + "homepage = 'x'\n",
            "3:1: syntax: unknown key 'homepage', expected one of: source, content-id, "
            "requires-python, extras, dependencies",
            id="unknown-key",
        ),
        pytest.param(
            f"content-id = '{CID0}'\n",
            "1:1: syntax: missing key 'source', expected the wheel's https:, http: or file: "
            "URL, or a path relative to this file",
            id="missing-source",
        ),
        pytest.param(
            "source = 'w.whl'\n",
            "1:1: syntax: missing key 'content-id', expected the wheel's CID",
            id="missing-content-id",
        ),
        pytest.param(
            f"source = 12\ncontent-id = '{CID0}'\n",
            "1:10: syntax: 'source' is an integer, expected a string: the wheel's https:, "
            "http: or file: URL, or a path relative to this file",
            id="source-type",
        ),
        pytest.param(
            minimal() + "extras = 'dmypy'\n",
            "3:10: syntax: 'extras' is a string, expected an array of strings: extra names",
            id="extras-type",
        ),
        pytest.param(
            minimal() + "dependencies = [\n  'a',\n  true,\n]\n",
            "5:3: syntax: 'dependencies' item is a boolean, expected a string",
            id="dependency-type",
        ),
        pytest.param(
            minimal() + "requires-python = 3.8\n",
            "3:19: syntax: 'requires-python' is a float, expected a string: a version specifier",
            id="requires-python-type",
        ),
        pytest.param(
            "source = 'w.whl'\ncontent-id = 'QmNotACid'\n",
            "2:14: syntax: content-id 'QmNotACid' is not a CID, expected a CIDv0 ('Qm…') "
            "or a CIDv1 ('b…'): the wheel's 'ipfs add' CID",
            id="content-id",
        ),
        pytest.param(
            minimal() + "requires-python = '>=3.x'\n",
            "3:19: syntax: invalid requires-python '>=3.x', expected a version specifier "
            "such as '>=3.8'",
            id="requires-python",
        ),
        pytest.param(
            minimal("ftp://example.org/w.whl"),
            "1:10: syntax: source has scheme 'ftp:', expected an https:, http: or file: URL "
            "or a path relative to this file",
            id="source-scheme",
        ),
        pytest.param(
            minimal("/srv/w.whl"),
            "1:10: syntax: source '/srv/w.whl' is an absolute path, expected an https:, "
            "http: or file: URL or a path relative to this file",
            id="source-absolute",
        ),
        pytest.param(
            minimal("https:/w.whl"),
            "1:10: syntax: source 'https:/w.whl' has no host, expected https://host/path",
            id="source-no-host",
        ),
        pytest.param(
            minimal("https://example.org/idna-3.7.tar.gz"),
            "1:10: syntax: source 'idna-3.7.tar.gz' is an sdist, expected a wheel (.whl): "
            "ipwhl takes wheels only",
            id="source-sdist",
        ),
        pytest.param(
            minimal(""),
            "1:10: syntax: 'source' is empty, expected an https:, http: or file: URL "
            "or a path relative to this file",
            id="source-empty",
        ),
        pytest.param(
            minimal() + "extras = ['ok', 'no good']\n",
            "3:17: syntax: invalid extra name 'no good', expected letters, digits, '.', '_' "
            "or '-', starting and ending with a letter or digit",
            id="extra-name",
        ),
        pytest.param(
            minimal() + "extras = ['Dmypy', 'dmypy']\n",
            "3:20: syntax: extra 'dmypy' is declared twice (also at 3:11), "
            "expected each extra once",
            id="extra-twice",
        ),
        pytest.param(
            minimal() + "extras = ['dmypy']\ndependencies = [\n"
            "  \"psutil>=4.0; extra == 'dmpy'\",\n]\n",
            "5:17: syntax: marker names extra 'dmpy', which 'extras' does not declare; "
            "expected one of the declared extras (dmypy)",
            id="undeclared-extra",
        ),
        pytest.param(
            minimal() + "dependencies = ['''psutil ; 'docs' == extra''']\n",
            "3:29: syntax: marker names extra 'docs', which 'extras' does not declare; "
            "expected one of the declared extras (none are declared)",
            id="undeclared-extra-reversed",
        ),
    ],
)
def test_each_kind_of_mistake_in_a_file(tmp_path: Path, text: str, expected: str) -> None:
    assert only_problem(tmp_path, WHEEL, text) == f"{WHEEL}:{expected}"


def test_invalid_dependency_points_into_the_string(tmp_path: Path) -> None:
    bad = "requests >= 2.0 ; python_version >"
    with pytest.raises(InvalidRequirement) as caught:
        parse_requirement(bad)
    error = caught.value
    text = minimal() + f"dependencies = [\n    'idna',  '{bad}',\n]\n"
    problem = only_problem(tmp_path, WHEEL, text)
    # The string's first character is at column 15 of line 4.
    assert problem == (
        f"{WHEEL}:4:{15 + error.column - 1}: syntax: invalid dependency {bad!r}: "
        f"found {error.found}, expected {error.expected}"
    )


@pytest.mark.parametrize(
    ("relpath", "text", "expected"),
    [
        pytest.param(
            "7d/requests/requests-2.32.3-py3-none-any.toml",
            minimal(),
            "1:1: declaration: prefix directory '7d' does not match project 'requests', "
            "expected '7c'",
            id="prefix",
        ),
        pytest.param(
            "Requests/requests-2.32.3-py3-none-any.toml",
            minimal(),
            "1:1: declaration: directory 'Requests' is not a normalized project name, "
            "expected 'requests'",
            id="not-normalized",
        ),
        pytest.param(
            "requests/idna-3.7-py3-none-any.toml",
            minimal(),
            "1:1: declaration: wheel 'idna-3.7-py3-none-any.whl' is of project 'idna' but "
            "sits in directory 'requests', expected it under idna/",
            id="wrong-project",
        ),
        pytest.param(
            "idna/idna-3.7.tar.gz.toml",
            minimal(),
            "1:1: declaration: 'idna-3.7.tar.gz' is an sdist, expected a wheel: ipwhl takes "
            "wheels only (<wheel-stem>.toml, the wheel's file name without '.whl')",
            id="sdist-file",
        ),
        pytest.param(
            "idna/idna-3.7-py3-none-any.whl.toml",
            minimal(),
            "1:1: declaration: file name 'idna-3.7-py3-none-any.whl.toml' keeps '.whl', "
            "expected the wheel's name without it: idna-3.7-py3-none-any.toml",
            id="whl-toml",
        ),
        pytest.param(
            "idna/README.md",
            "hello",
            "1:1: declaration: unexpected file, expected <project>/<wheel-stem>.toml or "
            "<prefix>/<project>/<wheel-stem>.toml",
            id="stray-file",
        ),
        pytest.param(
            "README.md",
            "hello",
            "1:1: declaration: unexpected file, expected <project>/<wheel-stem>.toml or "
            "<prefix>/<project>/<wheel-stem>.toml",
            id="top-level-file",
        ),
        pytest.param(
            "cf/README.md",
            "hello",
            "1:1: declaration: unexpected file, expected <project>/<wheel-stem>.toml or "
            "<prefix>/<project>/<wheel-stem>.toml",
            id="file-in-prefix",
        ),
    ],
)
def test_each_kind_of_misplaced_file(
    tmp_path: Path, relpath: str, text: str, expected: str
) -> None:
    if relpath.startswith("cf/"):
        write(tmp_path, "cf/mypy/mypy-0.910-py3-none-any.toml", minimal())
    assert only_problem(tmp_path, relpath, text) == f"{relpath}:{expected}"


def test_invalid_wheel_file_name(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "idna/idna.toml", minimal())
    assert problem.startswith(
        "idna/idna.toml:1:1: declaration: invalid wheel file name idna.whl: not a wheel file name"
    )
    assert problem.endswith("e.g. 'example-1.0-py3-none-any.whl'")


def test_directory_inside_a_project(tmp_path: Path) -> None:
    write(tmp_path, WHEEL, minimal())
    (tmp_path / "idna" / "old").mkdir()
    assert problems(tmp_path) == [
        "idna/old:1:1: declaration: unexpected directory, expected only <wheel-stem>.toml "
        "files here"
    ]


def test_symlink_outside_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "pkgs"
    outside = write(tmp_path, "elsewhere/idna-3.7-py3-none-any.toml", IDNA)
    (root / "idna").mkdir(parents=True)
    (root / "idna" / "idna-3.7-py3-none-any.toml").symlink_to(outside)
    (root / "mypy").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    message = (
        "1:1: declaration: symlink points outside the declarations directory, "
        "expected a file or directory inside it"
    )
    assert problems(root) == [f"idna/idna-3.7-py3-none-any.toml:{message}", f"mypy:{message}"]
    with pytest.raises(DeclarationError, match="symlink points outside"):
        load_declaration(root / "idna" / "idna-3.7-py3-none-any.toml", root)


def test_two_versions_of_a_project(tmp_path: Path) -> None:
    for stem in ("idna-3.7-py3-none-any", "idna-3.7-py2.py3-none-any", "idna-3.6-py3-none-any"):
        write(tmp_path, f"idna/{stem}.toml", minimal())
    assert problems(tmp_path) == [
        "idna/idna-3.6-py3-none-any.toml:1:1: declaration: idna 3.6 differs from idna 3.7 "
        "declared in idna/idna-3.7-py2.py3-none-any.toml, expected one version per project"
    ]


def test_wheel_declared_in_both_layouts(tmp_path: Path) -> None:
    write(tmp_path, WHEEL, minimal())
    write(tmp_path, f"{prefix_of('idna')}/{WHEEL}", minimal())
    assert problems(tmp_path) == [
        f"{WHEEL}:1:1: declaration: wheel 'idna-3.7-py3-none-any.whl' is declared twice, "
        f"also in {prefix_of('idna')}/{WHEEL}; expected one declaration per wheel"
    ]


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DeclarationError) as caught:
        load_declarations(tmp_path / "nowhere")
    assert str(caught.value) == (
        f"{tmp_path / 'nowhere'}:1:1: declaration: declarations directory not found, expected "
        "a directory of <project>/<wheel-stem>.toml or <prefix>/<project>/<wheel-stem>.toml files"
    )


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / WHEEL
    path.parent.mkdir()
    path.write_bytes(b"source = 'w.whl'\ncontent-id = '\xc3\xa9\xff'\n")
    assert problems(tmp_path) == [
        f"{WHEEL}:2:16: syntax: byte 0xff is not UTF-8, expected UTF-8 text"
    ]


def test_every_mistake_of_every_file_in_one_run(tmp_path: Path) -> None:
    write(
        tmp_path,
        WHEEL,
        "source = 'ftp://x/idna.whl'\ncontent-id = 'nope'\nextra = []\n"
        "dependencies = ['requests >=', 'six; extra == \"x\"']\n",
    )
    write(tmp_path, "7d/requests/requests-2.32.3-py3-none-any.toml", "source = \n")
    write(tmp_path, "mypy/mypy-0.910-py3-none-any.toml", MYPY)
    write(tmp_path, "mypy/mypy-0.920-py3-none-any.toml", MYPY)
    write(tmp_path, "notes.txt", "")
    found = problems(tmp_path)
    assert [p.split(": ", 2)[:2] for p in found] == [
        ["7d/requests/requests-2.32.3-py3-none-any.toml:1:1", "declaration"],
        ["7d/requests/requests-2.32.3-py3-none-any.toml:1:10", "syntax"],
        [f"{WHEEL}:1:10", "syntax"],
        [f"{WHEEL}:2:14", "syntax"],
        [f"{WHEEL}:3:1", "syntax"],
        [f"{WHEEL}:4:27", "syntax"],
        [f"{WHEEL}:4:38", "syntax"],
        ["mypy/mypy-0.920-py3-none-any.toml:1:1", "declaration"],
        ["notes.txt:1:1", "declaration"],
    ]
    assert "prefix directory '7d'" in found[0]
    assert "invalid TOML" in found[1]
    assert "scheme 'ftp:'" in found[2]
    assert "'nope' is not a CID" in found[3]
    assert "unknown key 'extra'; did you mean 'extras'?" in found[4]
    assert "invalid dependency 'requests >='" in found[5]
    assert "marker names extra 'x'" in found[6]
    assert "mypy 0.920 differs from mypy 0.910" in found[7]
    assert "unexpected file" in found[8]
