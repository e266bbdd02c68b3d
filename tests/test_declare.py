"""Tests for ipwhl.declare and `ipwhl declare`: IPWHL's formatting byte for byte, choosing wheels
per environment, and whole runs against a simple index served on 127.0.0.1 (HTML and JSON),
whose results must pass `ipwhl check`."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from ipwhl.cli import main
from ipwhl.declare import (
    Candidate,
    InvalidSpec,
    choose_wheels,
    declaration_text,
    parse_spec,
    toml_string,
)
from ipwhl.environments import parse_supported
from ipwhl.unixfs import file_cid
from ipwhl.wheels import CoreMetadata, parse_wheel_filename
from tests.indexserver import IndexServer
from tests.wheelfactory import build_wheel

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "pkgs"
LINUX311 = "cp311 manylinux_2_17_x86_64"
LINUX312 = "cp312 manylinux_2_17_x86_64"
WIN312 = "cp312 win_amd64"
SUPPORTED = (LINUX311, LINUX312, WIN312)


@pytest.fixture(params=["html", "json"])
def index(request: pytest.FixtureRequest) -> Iterator[IndexServer]:
    with IndexServer(mode=request.param) as server:
        yield server


@pytest.fixture
def html_index() -> Iterator[IndexServer]:
    with IndexServer(mode="html") as server:
        yield server


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    directory = tmp_path / "wheels"
    directory.mkdir()
    return directory


def _release(tmp_path: Path, supported: Sequence[str] = SUPPORTED) -> Path:
    (tmp_path / "pkgs").mkdir(exist_ok=True)
    path = tmp_path / "release.toml"
    lines = ", ".join(f'"{line}"' for line in supported)
    path.write_text(f'name = "test"\ndeclarations = "pkgs"\nsupported = [{lines}]\n')
    return path


def _ipwhl(tmp_path: Path, *args: str) -> int:
    return main([*args, "--store", str(tmp_path / "store")])


def _declared(tmp_path: Path) -> list[str]:
    return sorted(p.relative_to(tmp_path / "pkgs").as_posix()
                  for p in (tmp_path / "pkgs").rglob("*.toml"))


def _candidate(filename: str, requires_python: str | None = None) -> Candidate:
    return Candidate(parse_wheel_filename(filename), f"https://files.example/{filename}",
                     requires_python)


# -- formatting -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.toml")), ids=lambda p: p.name)
def test_declarations_read_as_ipwhl_writes_them(path: Path) -> None:
    data = tomllib.loads(path.read_text())
    metadata = CoreMetadata("x", "1", data.get("requires-python"), tuple(data["dependencies"]),
                            tuple(data["extras"]))
    text = declaration_text(data["source"], data["content-id"], metadata)
    assert text.encode() == path.read_bytes()


@pytest.mark.parametrize("text", [
    "plain", "it's", 'say "hi"', "both ' and \"", "back\\slash", "tab\there", "new\nline",
    "bell\x07", "del\x7f", "unicode ü ✓",
])
def test_toml_strings_read_back(text: str) -> None:
    written = toml_string(text)
    assert tomllib.loads(f"v = {written}")["v"] == text
    literal = text == "tab\there" or ("'" not in text and text.isprintable())
    assert written.startswith("'") == literal


def test_spec_forms(wheels: Path) -> None:
    wheel = build_wheel(wheels, "Demo.Pkg", "1.0")
    given = parse_spec(str(wheel))
    assert given.project == "demo-pkg" and given.wheel is not None
    assert given.wheel.path == wheel.resolve() and given.wheel.url == wheel.resolve().as_uri()
    assert parse_spec(wheel.resolve().as_uri()).wheel == given.wheel
    remote = parse_spec("https://files.example/a/demo_pkg-2.0-py3-none-any.whl")
    assert remote.wheel is not None and remote.wheel.path is None and remote.project == "demo-pkg"
    assert str(parse_spec("Demo_Pkg>=1,<2").specifier) == "<2,>=1"
    assert parse_spec("demo").wheel is None
    for bad, message in [("nothing.whl", "no such wheel file"), ("demo; os_name == 'nt'", "marker"),
                         ("demo==", "not a wheel file, a wheel URL or a requirement"),
                         ("https://x.example/not-a-wheel.whl", "not a wheel file name")]:
        with pytest.raises(InvalidSpec, match=message):
            parse_spec(bad)


# -- choosing wheels ------------------------------------------------------------------------


def test_one_wheel_per_environment_the_most_general_first() -> None:
    environments = parse_supported(SUPPORTED)
    per_interpreter = [
        _candidate("fast-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"),
        _candidate("fast-1.0-cp312-cp312-manylinux_2_17_x86_64.whl"),
        _candidate("fast-1.0-cp312-cp312-win_amd64.whl"),
        _candidate("fast-1.0-cp312-cp312-macosx_11_0_arm64.whl"),
    ]
    choice = choose_wheels(per_interpreter, environments)
    assert [c.filename for c in choice.wheels] == [c.filename for c in per_interpreter[:3]]
    assert choice.missing == ()
    abi3 = _candidate("fast-1.0-cp311-abi3-manylinux_2_17_x86_64.whl")
    choice = choose_wheels([*per_interpreter, abi3], environments)
    assert [c.filename for c in choice.wheels] == [
        "fast-1.0-cp311-abi3-manylinux_2_17_x86_64.whl", "fast-1.0-cp312-cp312-win_amd64.whl"]
    pure = _candidate("fast-1.0-py3-none-any.whl")
    choice = choose_wheels([*per_interpreter, abi3, pure], environments)
    assert [c.filename for c in choice.wheels] == ["fast-1.0-py3-none-any.whl"]
    # Requires-Python takes cp311 away from the pure wheel: the cp311 binary covers it.
    narrowed = _candidate("fast-1.0-py3-none-any.whl", ">=3.12")
    choice = choose_wheels([*per_interpreter, narrowed], environments)
    assert [c.filename for c in choice.wheels] == [
        "fast-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", "fast-1.0-py3-none-any.whl"]


def test_never_two_wheels_installable_in_one_environment() -> None:
    environments = parse_supported([LINUX311, LINUX312])
    # manylinux_2_5 and manylinux_2_17 both install on glibc 2.17: only one may be declared.
    older = _candidate("fast-1.0-cp311-abi3-manylinux_2_5_x86_64.whl")
    newer = _candidate("fast-1.0-cp312-abi3-manylinux_2_17_x86_64.whl")
    choice = choose_wheels([older, newer], environments)
    assert [c.filename for c in choice.wheels] == [older.filename]
    assert choice.missing == ()


def test_what_no_wheel_covers_is_missing() -> None:
    environments = parse_supported(SUPPORTED)
    choice = choose_wheels([_candidate("fast-1.0-cp312-cp312-win_amd64.whl")], environments,
                           needed=environments[1:])
    assert [str(e) for e in choice.missing] == [LINUX312]
    assert choose_wheels([], environments) == type(choice)((), tuple(environments))


# -- whole runs against an index ------------------------------------------------------------


def _fast(index: IndexServer, wheels: Path) -> None:
    for tag in ("cp311-abi3-manylinux_2_17_x86_64", "cp311-cp311-manylinux_2_17_x86_64",
                "cp312-cp312-manylinux_2_17_x86_64", "cp312-cp312-win_amd64",
                "cp312-cp312-macosx_11_0_arm64"):
        index.add(build_wheel(wheels, "fast", "1.0", tag=tag, requires_python=">=3.11",
                              provides_extra=["speed"],
                              requires_dist=["never; python_version < '3'"]))
    index.add(build_wheel(wheels, "fast", "0.9", requires_python=">=3.8"))


def test_declare_picks_per_environment_and_passes_check(
    index: IndexServer, wheels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fast(index, wheels)
    release = _release(tmp_path)
    assert _ipwhl(tmp_path, "declare", "fast", "--release", str(release),
                  "--index-url", index.url) == 0
    assert _declared(tmp_path) == [
        "fast/fast-1.0-cp311-abi3-manylinux_2_17_x86_64.toml",
        "fast/fast-1.0-cp312-cp312-win_amd64.toml",
    ]
    out = capsys.readouterr()
    assert out.out.splitlines() == [str(tmp_path / "pkgs" / p) for p in _declared(tmp_path)]
    assert "declared fast 1.0: 2 wheel(s)" in out.err
    name = "fast-1.0-cp312-cp312-win_amd64"
    wheel_bytes = (wheels / f"{name}.whl").read_bytes()
    assert (tmp_path / "pkgs" / "fast" / f"{name}.toml").read_text() == (
        f"source = '{index.url.replace('/simple/', '/files/')}{name}.whl'\n"
        f"content-id = '{file_cid(wheel_bytes)}'\n"
        "requires-python = '>=3.11'\n"
        "extras = ['speed']\n"
        "dependencies = [\n"
        "\t\"never; python_version < '3'\",\n"
        "]\n"
    )
    fetched = index.count(".whl")
    assert fetched == 2  # the two chosen wheels; METADATA came from the .metadata files
    assert _ipwhl(tmp_path, "check", str(release)) == 0
    assert index.count(".whl") == fetched  # declare left the wheels in the store for check


def test_a_project_without_a_wheel_for_an_environment(
    html_index: IndexServer, wheels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html_index.add(build_wheel(wheels, "winonly", "1.0", tag="cp312-cp312-win_amd64"))
    html_index.add(build_wheel(wheels, "winonly", "0.5", tag="cp311-cp311-win_amd64"))
    release = _release(tmp_path)
    assert _ipwhl(tmp_path, "declare", "winonly", "--release", str(release),
                  "--index-url", html_index.url) == 4
    err = capsys.readouterr().err
    assert (f"ipwhl: error: winonly 1.0 has no wheel for {LINUX311}; {LINUX312} "
            "(declared: winonly-1.0-cp312-cp312-win_amd64.whl)") in err
    assert "--allow-missing" in err
    assert _declared(tmp_path) == ["winonly/winonly-1.0-cp312-cp312-win_amd64.toml"]
    assert _ipwhl(tmp_path, "declare", "winonly", "--release", str(release), "--allow-missing",
                  "--index-url", html_index.url) == 0
    assert "ipwhl: note: winonly 1.0 has no wheel for" in capsys.readouterr().err
    assert _ipwhl(tmp_path, "check", str(release)) == 0


def test_the_newest_version_covering_every_environment(
    html_index: IndexServer, wheels: Path, tmp_path: Path
) -> None:
    for version in ("3.0", "2.0"):
        html_index.add(build_wheel(wheels, "legacy", version, tag="cp312-cp312-win_amd64"))
    html_index.add(build_wheel(wheels, "legacy", "1.0"))
    html_index.add(build_wheel(wheels, "legacy", "0.9"))
    release = _release(tmp_path)
    assert _ipwhl(tmp_path, "declare", "legacy", "--release", str(release),
                  "--index-url", html_index.url) == 0
    assert _declared(tmp_path) == ["legacy/legacy-1.0-py3-none-any.toml"]
    # Versions the tags rule out are passed over without reading their METADATA.
    assert html_index.count(".metadata") == 1 and html_index.count(".whl") == 1
    # A wheel URL is declared as it is, whatever else the index has.
    url = html_index.url.replace("/simple/", "/files/") + "legacy-0.9-py3-none-any.whl"
    assert _ipwhl(tmp_path, "declare", url, "--release", str(release)) == 0
    assert _declared(tmp_path) == ["legacy/legacy-0.9-py3-none-any.toml"]
    text = (tmp_path / "pkgs" / "legacy" / "legacy-0.9-py3-none-any.toml").read_text()
    assert text.startswith(f"source = '{url}'\n")
    assert _ipwhl(tmp_path, "check", str(release)) == 0


def test_with_deps_closes_a_graph_with_an_extra_and_a_marker(
    index: IndexServer, wheels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index.add(build_wheel(wheels, "app", "1.0", provides_extra=["speed"], requires_dist=[
        "lib>=1",
        'winhelper; sys_platform == "win32"',
        'ancient; python_version < "3"',
        'accel[fast]>=2; extra == "speed"',
    ]))
    index.add(build_wheel(wheels, "lib", "1.0"))
    index.add(build_wheel(wheels, "lib", "1.5", requires_dist=["six<2"]))
    index.add(build_wheel(wheels, "lib", "2.0", requires_python=">=3.13"))  # fits no target
    index.add(build_wheel(wheels, "lib", "2.1rc1"))  # a prerelease is not taken by default
    index.add(build_wheel(wheels, "lib", "1.9"), yanked=True)
    index.add(build_wheel(wheels, "six", "1.0"))
    index.add(build_wheel(wheels, "six", "2.0"))
    index.add(build_wheel(wheels, "winhelper", "3.0", tag="cp312-cp312-win_amd64"))
    index.add(build_wheel(wheels, "accel", "1.0", provides_extra=["fast"]))
    index.add(build_wheel(wheels, "accel", "2.0", provides_extra=["fast"],
                          requires_dist=['cffi; extra == "fast"']))
    index.add(build_wheel(wheels, "cffi", "1.0"))
    release = _release(tmp_path)
    assert _ipwhl(tmp_path, "declare", "app", "--release", str(release), "--with-deps",
                  "--index-url", index.url) == 0, capsys.readouterr().err
    assert _declared(tmp_path) == [
        "accel/accel-2.0-py3-none-any.toml",
        "app/app-1.0-py3-none-any.toml",
        "cffi/cffi-1.0-py3-none-any.toml",
        "lib/lib-1.5-py3-none-any.toml",
        "six/six-1.0-py3-none-any.toml",
        "winhelper/winhelper-3.0-cp312-cp312-win_amd64.toml",
    ]
    assert _ipwhl(tmp_path, "check", str(release)) == 0


def test_versions_satisfy_every_dependent(
    html_index: IndexServer, wheels: Path, tmp_path: Path
) -> None:
    html_index.add(build_wheel(wheels, "a", "1.0", requires_dist=["c>=1.2"]))
    html_index.add(build_wheel(wheels, "b", "1.0", requires_dist=["c<2"]))
    for version in ("1.0", "1.5", "2.0", "2.1"):
        html_index.add(build_wheel(wheels, "c", version))
    release = _release(tmp_path)
    # a is weighed first and takes c 2.1; b's '<2' then moves c back to 1.5.
    assert _ipwhl(tmp_path, "declare", "a", "b", "--release", str(release), "--with-deps",
                  "--index-url", html_index.url) == 0
    assert _declared(tmp_path) == ["a/a-1.0-py3-none-any.toml", "b/b-1.0-py3-none-any.toml",
                                   "c/c-1.5-py3-none-any.toml"]
    assert html_index.count("c-2.1-py3-none-any.whl") == 0  # weighed by its metadata only
    assert _ipwhl(tmp_path, "check", str(release)) == 0


def test_what_cannot_be_satisfied_is_reported(
    html_index: IndexServer, wheels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html_index.add(build_wheel(wheels, "a", "1.0", requires_dist=["c>=2", "b", "gone"]))
    html_index.add(build_wheel(wheels, "b", "1.0", requires_dist=["c<2"]))
    html_index.add(build_wheel(wheels, "c", "1.0"))
    html_index.add(build_wheel(wheels, "c", "2.0"))
    release = _release(tmp_path)
    assert _ipwhl(tmp_path, "declare", "a", "--release", str(release), "--with-deps",
                  "--index-url", html_index.url) == 4
    err = capsys.readouterr().err
    assert ("cannot satisfy c: a 1.0 requires 'c>=2'; b 1.0 requires 'c<2'; c 2.0 was chosen "
            "(no version of c on the index satisfies '<2,>=2' (newest: 2.0))") in err
    assert (f"cannot declare gone: project 'gone' is not on the index {html_index.url} "
            "(a 1.0 requires 'gone')") in err
    assert ("b-1.0-py3-none-any.toml:5:3: closure: b 1.0 requires 'c<2', "
            "but the release has c 2.0") in err
    # What could be declared was.
    assert _declared(tmp_path) == ["a/a-1.0-py3-none-any.toml", "b/b-1.0-py3-none-any.toml",
                                   "c/c-2.0-py3-none-any.toml"]


def test_wheel_files_and_pins_and_what_is_already_declared(
    html_index: IndexServer, wheels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local = tmp_path / "dist"
    local.mkdir()
    mine = build_wheel(local, "mine", "0.1", requires_dist=["dep<2"])
    for version in ("1.0", "1.1", "2.0"):
        html_index.add(build_wheel(wheels, "dep", version))
    release = _release(tmp_path, [LINUX311])
    assert _ipwhl(tmp_path, "declare", "dep==1.0", "--release", str(release),
                  "--index-url", html_index.url) == 0
    assert _declared(tmp_path) == ["dep/dep-1.0-py3-none-any.toml"]
    # A wheel file is declared by a path relative to its declaration; dep 1.0 stays.
    assert _ipwhl(tmp_path, "declare", str(mine), "--release", str(release), "--with-deps",
                  "--index-url", html_index.url) == 0
    text = (tmp_path / "pkgs" / "mine" / "mine-0.1-py3-none-any.toml").read_text()
    assert text.startswith("source = '../../dist/mine-0.1-py3-none-any.whl'\n")
    assert _declared(tmp_path) == ["dep/dep-1.0-py3-none-any.toml",
                                   "mine/mine-0.1-py3-none-any.toml"]
    # Declaring dep anew replaces its files, with the newest version its dependent admits.
    capsys.readouterr()
    assert _ipwhl(tmp_path, "declare", "dep", "--release", str(release),
                  "--index-url", html_index.url) == 0
    assert _declared(tmp_path) == ["dep/dep-1.1-py3-none-any.toml",
                                   "mine/mine-0.1-py3-none-any.toml"]
    assert f"removed {tmp_path / 'pkgs' / 'dep' / 'dep-1.0-py3-none-any.toml'}" in (
        capsys.readouterr().err)
    # A pin a dependent excludes is reported, and what was declared stays.
    assert _ipwhl(tmp_path, "declare", "dep==2.0", "--release", str(release),
                  "--index-url", html_index.url) == 4
    assert ("cannot declare dep: no version of dep on the index satisfies '<2,==2.0' (newest: "
            "2.0) (asked for 'dep==2.0'; mine 0.1 requires 'dep<2')") in capsys.readouterr().err
    assert _declared(tmp_path) == ["dep/dep-1.1-py3-none-any.toml",
                                   "mine/mine-0.1-py3-none-any.toml"]
    assert _ipwhl(tmp_path, "check", str(release)) == 0


def test_without_with_deps_dependencies_are_named(
    html_index: IndexServer, wheels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html_index.add(build_wheel(wheels, "top", "1.0", requires_dist=["below>=1"]))
    assert _ipwhl(tmp_path, "declare", "top", "-d", str(tmp_path / "pkgs"), "--supported",
                  LINUX311, "--supported", WIN312, "--index-url", html_index.url,
                  "--prefix-layout") == 0
    prefix = f"{sum(map(ord, 'top')) & 0xFF:02x}"
    assert _declared(tmp_path) == [f"{prefix}/top/top-1.0-py3-none-any.toml"]
    assert "not declared yet, but depended on: below" in capsys.readouterr().err


def test_requires_python_from_the_wheel_when_the_index_does_not_say(
    html_index: IndexServer, wheels: Path, tmp_path: Path
) -> None:
    html_index.add(build_wheel(wheels, "late", "2.0", requires_python=">=3.12"),
                   announce_requires_python=False, offer_metadata=False)
    html_index.add(build_wheel(wheels, "late", "1.0", requires_python=">=3.8"),
                   announce_requires_python=False, offer_metadata=False)
    release = _release(tmp_path, [LINUX311, LINUX312])
    assert _ipwhl(tmp_path, "declare", "late", "--release", str(release),
                  "--index-url", html_index.url) == 0
    assert _declared(tmp_path) == ["late/late-1.0-py3-none-any.toml"]
    assert _ipwhl(tmp_path, "check", str(release)) == 0


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _ipwhl(tmp_path, "declare", "x", "-d", str(tmp_path)) == 2
    assert "--release RELEASE.toml, or --supported" in capsys.readouterr().err
    assert _ipwhl(tmp_path, "declare", "x", "--supported", LINUX311) == 2
    assert "-d DIR" in capsys.readouterr().err
    assert _ipwhl(tmp_path, "declare", "x; os_name == 'nt'", "-d", str(tmp_path),
                  "--supported", LINUX311) == 2
    assert "a SPEC has no marker" in capsys.readouterr().err


def test_canonical_directories(html_index: IndexServer, wheels: Path, tmp_path: Path) -> None:
    html_index.add(build_wheel(wheels, "Zope.Interface", "5.0"))
    release = _release(tmp_path, [LINUX311])
    assert _ipwhl(tmp_path, "declare", "zope_interface", "--release", str(release),
                  "--index-url", html_index.url) == 0
    (declared,) = _declared(tmp_path)
    assert declared.split("/")[0] == canonicalize_name("Zope.Interface")
    assert _ipwhl(tmp_path, "check", str(release)) == 0
