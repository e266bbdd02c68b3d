"""Release files: supported lists inline and in a file, dates, every mistake with its place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ipwhl.environments import InvalidEnvironment, parse_environment
from ipwhl.errors import DeclarationError
from ipwhl.releasefile import ReleaseSpec, load_release

CID1 = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"

RELEASE = f"""\
name = "example"                       # names the release line
declarations = "pkgs"
supported = [
    "cp311 manylinux_2_17_x86_64",
    'cp312 win_amd64',  # Windows
    "cp313 macosx_11_0_arm64",
]
on-top-of = "{CID1}"
date = 2026-11-25T01:02:03+01:00
"""

NO_EPOCH: dict[str, str] = {}


def release(tmp_path: Path, text: str, *, pkgs: bool = True) -> Path:
    if pkgs:
        (tmp_path / "pkgs").mkdir(exist_ok=True)
    path = tmp_path / "release.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    """Every violation load_release reports, with paths relative to the release's folder."""
    with pytest.raises(DeclarationError) as caught:
        load_release(path, NO_EPOCH if environ is None else environ)
    return [str(v).removeprefix(f"{path.parent}{os.sep}") for v in caught.value.violations]


def environment_error(line: str) -> str:
    with pytest.raises(InvalidEnvironment) as caught:
        parse_environment(line)
    return str(caught.value)


def test_a_valid_release(tmp_path: Path) -> None:
    path = release(tmp_path, RELEASE)
    spec = load_release(path, NO_EPOCH)
    assert isinstance(spec, ReleaseSpec)
    assert spec.path == path
    assert spec.name == "example"
    assert spec.declarations_dir == tmp_path / "pkgs"
    assert spec.supported_lines == (
        "cp311 manylinux_2_17_x86_64",
        "cp312 win_amd64",
        "cp313 macosx_11_0_arm64",
    )
    assert [environment.line for environment in spec.supported] == list(spec.supported_lines)
    assert spec.on_top_of == CID1
    assert spec.date == "2026-11-25T00:02:03Z"  # converted to UTC
    assert spec.text == path.read_bytes()
    assert str(spec.locations["supported"]) == f"{path}:3:13"
    assert str(spec.locations["date"]) == f"{path}:9:8"


def test_minimal_release_has_no_date_without_source_date_epoch(tmp_path: Path) -> None:
    path = release(tmp_path, 'name = "x"\ndeclarations = "pkgs"\nsupported = ["cp312 win_amd64"]\n')
    spec = load_release(path, NO_EPOCH)
    assert spec.date is None
    assert spec.on_top_of is None


def test_supported_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "SUPPORTED").write_text(
        "# targets\ncp311 manylinux_2_17_x86_64\n\n  cp312   win_amd64  # tabs and spaces\n"
        "cp311 manylinux_2_17_x86_64\n"
    )
    path = release(tmp_path, 'name = "x"\ndeclarations = "pkgs"\nsupported = "SUPPORTED"\n')
    spec = load_release(path, NO_EPOCH)
    # Repeats are dropped, as environments.parse_supported does.
    assert spec.supported_lines == ("cp311 manylinux_2_17_x86_64", "cp312 win_amd64")


def test_errors_in_the_supported_file_point_into_it(tmp_path: Path) -> None:
    (tmp_path / "SUPPORTED").write_text("cp311 manylinux_2_17_x86_64\n\n   cp27 win_amd64\n")
    path = release(tmp_path, 'name = "x"\ndeclarations = "pkgs"\nsupported = "SUPPORTED"\n')
    assert problems(path) == [f"SUPPORTED:3:4: syntax: {environment_error('cp27 win_amd64')}"]


def test_date_forms(tmp_path: Path) -> None:
    head = 'name = "x"\ndeclarations = "pkgs"\nsupported = ["cp312 win_amd64"]\n'
    path = release(tmp_path, head + "date = 2026-11-25\n")
    assert load_release(path, NO_EPOCH).date == "2026-11-25T00:00:00Z"
    path = release(tmp_path, head + "date = 2026-11-25T23:59:59.999Z\n")
    assert load_release(path, {"SOURCE_DATE_EPOCH": "0"}).date == "2026-11-25T23:59:59Z"


def test_source_date_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = release(tmp_path, 'name = "x"\ndeclarations = "pkgs"\nsupported = ["cp312 win_amd64"]\n')
    assert load_release(path, {"SOURCE_DATE_EPOCH": "1764028800"}).date == "2025-11-25T00:00:00Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86399")
    assert load_release(path).date == "1970-01-01T23:59:59Z"
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert load_release(path).date is None
    assert problems(path, {"SOURCE_DATE_EPOCH": "yesterday"}) == [
        "release.toml:1:1: syntax: SOURCE_DATE_EPOCH is 'yesterday', expected whole seconds "
        "since 1970-01-01 UTC"
    ]


HEAD = 'declarations = "pkgs"\nsupported = ["cp312 win_amd64"]\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            'name = "x"\nsupported = [\n',
            "3:1: syntax: invalid TOML: invalid value",
            id="toml-syntax",
        ),
        pytest.param(
            HEAD,
            "1:1: syntax: missing key 'name', expected a string naming the release line, "
            "such as 'example'",
            id="missing-name",
        ),
        pytest.param(
            HEAD + 'name = "Example Release"\n',
            "3:8: syntax: invalid name 'Example Release', expected lowercase letters, digits, "
            "'.', '_' and '-', starting with a letter or digit",
            id="bad-name",
        ),
        pytest.param(
            HEAD + "name = 7\n",
            "3:8: syntax: 'name' is an integer, expected a string naming the release line, "
            "such as 'example'",
            id="name-type",
        ),
        pytest.param(
            'name = "x"\ndeclarations = "missing"\nsupported = ["cp312 win_amd64"]\n',
            "2:16: syntax: declarations directory 'missing' not found, expected a directory "
            "relative to this file",
            id="declarations-missing",
        ),
        pytest.param(
            'name = "x"\nsupported = ["cp312 win_amd64"]\n',
            "1:1: syntax: missing key 'declarations', expected a path relative to this file",
            id="declarations-absent",
        ),
        pytest.param(
            HEAD + 'name = "x"\nsuported = []\n',
            "4:1: syntax: unknown key 'suported'; did you mean 'supported'?",
            id="unknown-key-suggestion",
        ),
        pytest.param(
            HEAD + 'name = "x"\n[extra]\n',
            "4:1: syntax: unknown key 'extra', expected one of: name, declarations, supported, "
            "on-top-of, date, keys",
            id="unknown-table",
        ),
        pytest.param(
            'name = "x"\ndeclarations = "pkgs"\n',
            "1:1: syntax: missing key 'supported', expected an array of '<interpreter> "
            "<platform>' lines or the name of a file holding one a line",
            id="supported-missing",
        ),
        pytest.param(
            'name = "x"\ndeclarations = "pkgs"\nsupported = []\n',
            "3:13: syntax: no supported environment, expected an array of '<interpreter> "
            "<platform>' lines or the name of a file holding one a line",
            id="supported-empty",
        ),
        pytest.param(
            'name = "x"\ndeclarations = "pkgs"\nsupported = 311\n',
            "3:13: syntax: 'supported' is an integer, expected an array of '<interpreter> "
            "<platform>' lines or the name of a file holding one a line",
            id="supported-type",
        ),
        pytest.param(
            'name = "x"\ndeclarations = "pkgs"\nsupported = ["cp312 win_amd64", 3]\n',
            "3:33: syntax: 'supported' item is an integer, expected a string "
            "'<interpreter> <platform>'",
            id="supported-item-type",
        ),
        pytest.param(
            'name = "x"\ndeclarations = "pkgs"\nsupported = "NOPE"\n',
            "3:13: syntax: cannot read supported file 'NOPE' (No such file or directory), "
            "expected a file relative to this one with one '<interpreter> <platform>' a line",
            id="supported-file-missing",
        ),
        pytest.param(
            HEAD + 'name = "x"\non-top-of = "Qm123"\n',
            "4:13: syntax: on-top-of 'Qm123' is not a CID, expected the CID of the "
            "previous release",
            id="on-top-of",
        ),
        pytest.param(
            HEAD + 'name = "x"\ndate = 2026-11-25T00:00:00\n',
            "4:8: syntax: date 2026-11-25T00:00:00 has no offset, expected a TOML date-time "
            "with an offset (2026-11-25T00:00:00Z) or a date",
            id="date-naive",
        ),
        pytest.param(
            HEAD + 'name = "x"\ndate = "2026-11-25T00:00:00Z"\n',
            "4:8: syntax: 'date' is a string, expected a TOML date-time with an offset "
            "(2026-11-25T00:00:00Z) or a date (unquoted)",
            id="date-string",
        ),
        pytest.param(
            HEAD + 'name = "x"\ndate = 00:00:00\n',
            "4:8: syntax: 'date' is a time, expected a TOML date-time with an offset "
            "(2026-11-25T00:00:00Z) or a date",
            id="date-time-only",
        ),
    ],
)
def test_each_kind_of_mistake(tmp_path: Path, text: str, expected: str) -> None:
    [problem] = problems(release(tmp_path, text))
    assert problem == f"release.toml:{expected}"


def test_bad_supported_line_points_at_its_string(tmp_path: Path) -> None:
    text = (
        'name = "x"\ndeclarations = "pkgs"\nsupported = [\n  "cp312 win_amd64",\n  "py3 any",\n]\n'
    )
    assert problems(release(tmp_path, text)) == [
        f"release.toml:5:4: syntax: {environment_error('py3 any')}"
    ]


def test_every_mistake_in_one_run(tmp_path: Path) -> None:
    (tmp_path / "SUPPORTED").write_text("cp312 win_amd64\ncp311 nowhere\n")
    text = (
        'name = "Bad Name"\n'
        'declarations = "nowhere"\n'
        'supported = "SUPPORTED"\n'
        "on-top-of = 5\n"
        "date = 2026-11-25T00:00:00\n"
        "signed = true\n"
    )
    found = problems(release(tmp_path, text, pkgs=False))
    assert [problem.split(": ", 2)[0] for problem in found] == [
        "SUPPORTED:2:1",
        "release.toml:1:8",
        "release.toml:2:16",
        "release.toml:4:13",
        "release.toml:5:8",
        "release.toml:6:1",
    ]
    assert "invalid name 'Bad Name'" in found[1]
    assert "declarations directory 'nowhere' not found" in found[2]
    assert "'on-top-of' is an integer" in found[3]
    assert "has no offset" in found[4]
    assert "unknown key 'signed'" in found[5]


KEYS_RELEASE = 'name = "x"\ndeclarations = "pkgs"\nsupported = ["cp312 win_amd64"]\nkeys = "K"\n'


def test_keys_file_is_kept_verbatim(tmp_path: Path) -> None:
    from ipwhl.signing import generate, parse_public_keys

    keys = [generate().public_key() for _ in range(2)]
    text = "".join(key.to_text() for key in keys)
    (tmp_path / "K").write_text(text)
    spec = load_release(release(tmp_path, KEYS_RELEASE), NO_EPOCH)
    assert spec.keys == text.encode()
    assert parse_public_keys(spec.keys.decode()) == tuple(keys)
    assert str(spec.locations["keys"]).endswith("release.toml:4:8")
    assert load_release(release(tmp_path, KEYS_RELEASE.replace('keys = "K"\n', "")),
                        NO_EPOCH).keys is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "release.toml:4:8: syntax: cannot read keys file 'K' (No such file or directory)"),
        ("untrusted comment: x\nnot a key\n", "release.toml:4:8: syntax: K, line 2 is not base64"),
        ("", "release.toml:4:8: syntax: K holds no minisign public key"),
    ],
)
def test_bad_keys_files(tmp_path: Path, content: str | None, expected: str) -> None:
    if content is not None:
        (tmp_path / "K").write_text(content)
    [problem] = problems(release(tmp_path, KEYS_RELEASE))
    assert problem.startswith(expected)
