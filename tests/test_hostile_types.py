"""Valid TOML with values of the wrong type, for every key ipwhl reads: a release's own
`ipwhl/release.toml` and declarations (read from its DAG by overlays, `diff`, `verify`, pinning),
and the user's release file and declarations. Each is a typed error naming the key's place,
never an internal error."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipwhl import cli, unixfs
from ipwhl.build import read_release_info
from ipwhl.declarations import KNOWN_KEYS as DECLARATION_KEYS
from ipwhl.declarations import check_declaration_text, load_declarations
from ipwhl.diff import diff_releases
from ipwhl.errors import DeclarationError, IpwhlError
from ipwhl.overlay import load_previous
from ipwhl.releasefile import KNOWN_KEYS as RELEASE_KEYS
from ipwhl.releasefile import NotARelease, load_release, parse_release_info
from ipwhl.store import Store
from tests.releasefactory import Project, write_release
from tests.test_hostile_dags import GOOD_DECLARATION, crafted_release

INFO_KEYS = ("name", "sequence", "previous", "date", "supported")
PREVIOUS = str(unixfs.file_cid(b"an earlier release"))
GOOD_INFO = {"name": "'demo'", "sequence": "2", "previous": f"'{PREVIOUS}'",
             "date": "'2026-01-01T00:00:00Z'", "supported": "['cp311 manylinux_2_17_x86_64']"}

# One TOML spelling of every kind of value, and the kinds each key takes.
VALUES = {
    "string": "'x'", "integer": "3", "float": "1.5", "boolean": "true", "array": "[1, 'a']",
    "strings": "['a']", "table": "{a = 1}", "nested table": "{a = {b = 'c'}}",
    "date-time": "1979-05-27T07:32:00Z", "date": "1979-05-27", "time": "07:32:00",
    "empty array": "[]", "array of arrays": "[['a']]", "array of tables": "[{a = 1}]",
}
INFO_TAKES = {"name": {"string"}, "sequence": {"integer"}, "previous": set(), "date": {"string"},
              "supported": {"strings", "empty array"}}


def info_document(**values: str | None) -> bytes:
    """A release.toml as ipwhl writes it, with some keys' values replaced (None: left out)."""
    fields = {**GOOD_INFO, **values}
    return "".join(f"{key} = {value}\n" for key, value in fields.items()
                   if value is not None).encode()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store").open()


def wrong_info() -> list[tuple[str, str]]:
    cases = [(key, kind) for key in INFO_KEYS for kind in VALUES if kind not in INFO_TAKES[key]]
    return [*cases, ("sequence", "-1"), ("previous", "'not a cid'"), ("supported", "[1]")]


@pytest.mark.parametrize(("key", "kind"), wrong_info())
def test_a_release_toml_with_a_value_of_the_wrong_type(store, key, kind):
    document = info_document(**{key: VALUES.get(kind, kind)})
    line = list(GOOD_INFO).index(key) + 1
    root = crafted_release(store, document, GOOD_DECLARATION)
    place = re.escape(f"{root} is not an ipwhl release: its ipwhl/release.toml:{line}:")
    for read in (read_release_info, load_previous):
        with pytest.raises(NotARelease, match=f"{place}\\d+: '{key}' is .*, expected"):
            read(store, root)


@pytest.mark.parametrize("key", ["name", "sequence"])
def test_a_release_toml_without_a_name_or_sequence(store, key):
    root = crafted_release(store, info_document(**{key: None}), GOOD_DECLARATION)
    with pytest.raises(NotARelease, match=f"has no '{key}'"):
        read_release_info(store, root)


def test_a_release_toml_over_the_size_limit_is_not_read_whole(store):
    root = crafted_release(store, info_document() + b"#" * (2 << 20), GOOD_DECLARATION)
    with pytest.raises(NotARelease, match="larger than 1048576 bytes"):
        read_release_info(store, root)


def test_the_release_toml_ipwhl_writes_is_read_back():
    assert parse_release_info([info_document()], "x") == {
        "name": "demo", "sequence": 2, "previous": PREVIOUS, "date": "2026-01-01T00:00:00Z",
        "supported": ["cp311 manylinux_2_17_x86_64"],
    }
    # A key a later version might add is left alone.
    assert parse_release_info([info_document() + b"signed-by = 1\n"], "x")["signed-by"] == 1


@pytest.mark.parametrize(
    "declaration",
    [b"dependencies = 3\n", b"dependencies = 'a'\n", b"dependencies = [1, 'a']\n",
     b"extras = 3\n", b"extras = [{a = 1}]\n", b"source = {a = {b = 'c'}}\n",
     b"content-id = 5\n", b"requires-python = []\n"],
    ids=lambda d: d.decode().strip(),
)
def test_diff_of_a_release_whose_declaration_has_a_value_of_the_wrong_type(store, declaration):
    good = crafted_release(store, info_document(sequence="1"), GOOD_DECLARATION)
    key = declaration.split(b" ", 1)[0].decode()
    lines = [line for line in GOOD_DECLARATION.splitlines(keepends=True)
             if not line.startswith(key.encode())]
    bad = crafted_release(store, info_document(), declaration + b"".join(lines))
    where = re.escape("ipwhl/declarations/demo/demo-1.0-py3-none-any.toml:1:")
    for old, new in ((good, bad), (bad, good)):
        with pytest.raises(NotARelease, match=f"{bad} is not an ipwhl release: {where}\\d+: "
                                              f"'{key}'( item)? is "):
            diff_releases(store, old, new)


def test_diff_of_a_declaration_that_is_not_named_for_a_wheel(store):
    good = crafted_release(store, info_document(sequence="1"), GOOD_DECLARATION)
    bad = crafted_release(store, info_document(), GOOD_DECLARATION + b"# another page\n")
    # The same shape, with the declaration under a name that is not a wheel's.
    from tests.test_hostile_dags import PBLink, put_file, raw_directory

    folder = raw_directory(store, [("readme.txt", put_file(store, GOOD_DECLARATION))])
    declarations = raw_directory(store, [("demo", PBLink("", folder, 1))])
    ipwhl_dir = raw_directory(store, [("declarations", PBLink("", declarations, 1)),
                                      ("release.toml", put_file(store, info_document()))])
    simple = unixfs.lookup(bad, "simple", store.get_block)
    assert simple is not None
    bad = raw_directory(store, [("ipwhl", PBLink("", ipwhl_dir, 1)),
                                ("simple", PBLink("", simple.cid, 1))])
    with pytest.raises(NotARelease, match=r"readme\.txt is not named <wheel-stem>\.toml"):
        diff_releases(store, good, bad)


# --- through the command line --------------------------------------------------------------------


def ipwhl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    return code, err


@pytest.mark.parametrize("command", ["diff", "eval", "build", "roots add"])
def test_commands_that_read_a_release_refuse_a_type_confused_one(tmp_path, capsys, command):
    release = write_release(tmp_path, [Project("demo", "1.0")])
    store = Store(tmp_path / "store").open()
    good = crafted_release(store, info_document(sequence="1"), GOOD_DECLARATION)
    bad = crafted_release(store, info_document(sequence="'x'"), GOOD_DECLARATION)
    where = ["--store", str(store.root)]
    argv = {
        "diff": ["diff", str(good), str(bad)],
        "eval": ["eval", str(release.path), "--on-top-of", str(bad)],
        "build": ["build", str(release.path), "--on-top-of", str(bad)],
        "roots add": ["roots", "add", "mine", str(bad)],
    }[command]
    code, err = ipwhl(capsys, *argv, *where)
    if command == "roots add":  # no usable release.toml: pinned as the next of its line
        assert code == 0, err
        return
    assert code == NotARelease.exit_code == 7, err
    assert f"{bad} is not an ipwhl release: its ipwhl/release.toml:2:12: 'sequence' is a " \
           "string, expected a non-negative integer" in err
    assert "hint: the CID names a DAG whose ipwhl/ files are not what ipwhl writes" in err


# --- the user's own release file and declarations -------------------------------------------------


def replace_key(path: Path, key: str, value: str) -> None:
    """Set `key` to `value` (TOML) on the file's first line, dropping its old line."""
    lines = [line for line in path.read_text().splitlines() if not line.startswith(f"{key} ")]
    path.write_text("\n".join([f"{key} = {value}", *lines]) + "\n")


RELEASE_TAKES = {"name": {"string"}, "declarations": {"string"},
                 "supported": {"string", "strings", "empty array"},
                 "on-top-of": {"string"}, "date": {"string", "date-time", "date"},
                 "keys": {"string"}}
DECLARATION_TAKES = {"source": {"string"}, "content-id": {"string"},
                     "requires-python": {"string"}, "extras": {"strings", "empty array"},
                     "dependencies": {"strings", "empty array"}}


def test_the_tables_cover_every_known_key():
    assert set(RELEASE_TAKES) == set(RELEASE_KEYS)
    assert set(DECLARATION_TAKES) == set(DECLARATION_KEYS)
    assert set(INFO_TAKES) == set(INFO_KEYS)


@pytest.mark.parametrize(("key", "kind"), [
    (key, kind) for key, takes in RELEASE_TAKES.items() for kind in VALUES if kind not in takes])
def test_a_release_file_value_of_the_wrong_type_is_located(tmp_path, key, kind):
    release = write_release(tmp_path, [Project("demo", "1.0")])
    replace_key(release.path, key, VALUES[kind])
    with pytest.raises(DeclarationError) as caught:
        load_release(release.path, environ={})
    assert any(v.location.path == str(release.path) and v.location.line == 1
               and f"{key!r}" in v.message for v in caught.value.violations), caught.value


@pytest.mark.parametrize(("key", "kind"), [
    (key, kind) for key, takes in DECLARATION_TAKES.items() for kind in VALUES
    if kind not in takes])
def test_a_declaration_value_of_the_wrong_type_is_located(tmp_path, key, kind):
    release = write_release(tmp_path, [Project("demo", "1.0")])
    declaration = next(release.declarations.rglob("*.toml"))
    replace_key(declaration, key, VALUES[kind])
    with pytest.raises(DeclarationError) as caught:
        load_declarations(release.declarations)
    assert any(v.location.path == str(declaration) and v.location.line == 1
               and f"{key!r}" in v.message for v in caught.value.violations), caught.value


def test_check_reports_a_wrong_type_with_exit_3_and_its_place(tmp_path, capsys):
    release = write_release(tmp_path, [Project("demo", "1.0")])
    declaration = next(release.declarations.rglob("*.toml"))
    replace_key(declaration, "extras", "{a = {b = 'c'}}")
    argv = ("check", str(release.path), "--store", str(tmp_path / "store"))
    code, err = ipwhl(capsys, *argv)
    assert code == 3
    assert f"{declaration}:1:10: syntax: 'extras' is a table" in err
    replace_key(release.path, "date", "[1]")
    code, err = ipwhl(capsys, *argv)
    assert code == 3
    assert f"{release.path}:1:8: syntax: 'date' is an array" in err


# --- Hypothesis: type-confused documents ------------------------------------------------------


def toml_value(value: Any) -> str:
    """`value` written as TOML (inline)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return json.dumps(value) if isinstance(value, str) else str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


scalars = (
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False).filter(math.isfinite)
    | st.booleans()
    | st.datetimes(timezones=st.just(dt.UTC)) | st.dates() | st.times()
    | st.sampled_from([PREVIOUS, "cp311 manylinux_2_17_x86_64", "a>=1", ">=3.8", "a.whl"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["a", "b", "name", "sequence"]), inner, max_size=2),
    max_leaves=6,
)


def documents(keys: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    """Documents of the known keys (and a stray one) with values of any type."""
    return st.dictionaries(st.sampled_from([*keys, "extra"]), values, max_size=len(keys) + 1).map(
        lambda fields: "".join(f"{json.dumps(k)} = {toml_value(v)}\n"
                               for k, v in fields.items()).encode())


HYPOTHESIS = settings(max_examples=300, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture,
                                             HealthCheck.too_slow])


@HYPOTHESIS
@given(documents(INFO_KEYS))
def test_release_info_raises_only_not_a_release(document: bytes) -> None:
    try:
        info = parse_release_info([document], "bafy")
    except NotARelease:
        return
    assert isinstance(info["name"], str) and isinstance(info["sequence"], int)
    assert all(isinstance(line, str) for line in info.get("supported", []))


@HYPOTHESIS
@given(documents(DECLARATION_KEYS))
def test_declaration_text_raises_only_declaration_error(document: bytes) -> None:
    try:
        check_declaration_text(document, "ipwhl/declarations/demo/demo-1.0-py3-none-any.toml")
    except DeclarationError as error:
        assert error.violations


@settings(HYPOTHESIS, max_examples=100)
@given(documents(INFO_KEYS), documents(DECLARATION_KEYS))
def test_overlays_and_diff_of_type_confused_releases_raise_only_ipwhl_errors(
    tmp_path_factory: pytest.TempPathFactory, info: bytes, declaration: bytes
) -> None:
    store = Store(tmp_path_factory.mktemp("store")).open()
    good = crafted_release(store, info_document(sequence="1"), GOOD_DECLARATION)
    bad = crafted_release(store, info, declaration)
    for read in (
        lambda: read_release_info(store, bad),
        lambda: load_previous(store, bad),
        lambda: diff_releases(store, good, bad),
        lambda: diff_releases(store, bad, good),
    ):
        with contextlib.suppress(IpwhlError):
            read()


@HYPOTHESIS
@given(documents(RELEASE_KEYS), documents(DECLARATION_KEYS))
def test_the_users_files_raise_only_declaration_error(
    tmp_path_factory: pytest.TempPathFactory, release_text: bytes, declaration: bytes
) -> None:
    folder = tmp_path_factory.mktemp("release")
    (folder / "pkgs" / "demo").mkdir(parents=True)
    (folder / "pkgs" / "demo" / "demo-1.0-py3-none-any.toml").write_bytes(declaration)
    (folder / "release.toml").write_bytes(release_text)
    for load in (lambda: load_release(folder / "release.toml", environ={}),
                 lambda: load_declarations(folder / "pkgs")):
        try:
            load()
        except DeclarationError as error:
            assert error.violations


def test_verify_says_a_type_confused_release_is_not_one_rather_than_partly_here(tmp_path):
    # verify and use read the signed release's ipwhl/release.toml: all there, just not valid.
    from ipwhl import trust

    store = Store(tmp_path / "store").open()
    bad = crafted_release(store, info_document(sequence="'x'"), GOOD_DECLARATION)
    with pytest.raises(NotARelease, match="'sequence' is a string"):
        trust._release_info(store, str(bad))
