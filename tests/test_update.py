"""Tests for ipwhl.update and `ipwhl update`: plans against a simple index served on 127.0.0.1
(newer versions taken, held back by a dependent, by a missing wheel or by a dependency the
release lacks; one update unblocking another), the --dry-run diff's exact text, and a rewritten
release that passes `ipwhl check`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ipwhl.cli import main
from ipwhl.unixfs import file_cid
from tests.indexserver import IndexServer
from tests.wheelfactory import build_wheel

LINUX311 = "cp311 manylinux_2_17_x86_64"
WIN312 = "cp312 win_amd64"


@pytest.fixture(params=["html", "json"])
def index(request: pytest.FixtureRequest) -> Iterator[IndexServer]:
    with IndexServer(mode=request.param) as server:
        yield server


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    directory = tmp_path / "wheels"
    directory.mkdir()
    return directory


def _ipwhl(tmp_path: Path, *args: str) -> int:
    return main([*args, "--store", str(tmp_path / "store")])


def _release(tmp_path: Path, index: IndexServer, *pins: str) -> Path:
    """A release of the pinned versions, declared from the index."""
    (tmp_path / "pkgs").mkdir()
    path = tmp_path / "release.toml"
    path.write_text(f'name = "test"\ndeclarations = "pkgs"\nsupported = ["{LINUX311}", '
                    f'"{WIN312}"]\n')
    assert _ipwhl(tmp_path, "declare", *pins, "--release", str(path), "--index-url",
                  index.url) == 0
    return path


def _declared(tmp_path: Path) -> dict[str, str]:
    root = tmp_path / "pkgs"
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*.toml"))}


def test_dry_run_shows_the_plan_as_a_diff(
    index: IndexServer, wheels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for version in ("1.0", "1.5", "2.0"):
        index.add(build_wheel(wheels, "a", version, requires_python=">=3.9"))
    index.add(build_wheel(wheels, "c", "1.0", requires_dist=["a<2"]))
    release = _release(tmp_path, index, "a==1.0", "c")
    before = _declared(tmp_path)
    capsys.readouterr()
    assert _ipwhl(tmp_path, "update", "--release", str(release), "--dry-run",
                  "--index-url", index.url) == 0
    out = capsys.readouterr()
    files = index.url.replace("/simple/", "/files/")
    old_cid = file_cid((wheels / "a-1.0-py3-none-any.whl").read_bytes())
    new_cid = file_cid((wheels / "a-1.5-py3-none-any.whl").read_bytes())
    assert out.out == (
        "--- a/pkgs/a/a-1.0-py3-none-any.toml\n"
        "+++ /dev/null\n"
        "@@ -1,5 +0,0 @@\n"
        f"-source = '{files}a-1.0-py3-none-any.whl'\n"
        f"-content-id = '{old_cid}'\n"
        "-requires-python = '>=3.9'\n"
        "-extras = []\n"
        "-dependencies = []\n"
        "--- /dev/null\n"
        "+++ b/pkgs/a/a-1.5-py3-none-any.toml\n"
        "@@ -0,0 +1,5 @@\n"
        f"+source = '{files}a-1.5-py3-none-any.whl'\n"
        f"+content-id = '{new_cid}'\n"
        "+requires-python = '>=3.9'\n"
        "+extras = []\n"
        "+dependencies = []\n"
    )
    assert out.err == "a 1.0 -> 1.5\n  2.0 held back: c 1.0 requires 'a<2'\nc 1.0 is the newest\n"
    assert _declared(tmp_path) == before  # nothing changed
    # The diff applies: patch -p1 from the release's directory gives what update writes.
    patched = {name: text for name, text in before.items() if name != "a/a-1.0-py3-none-any.toml"}
    assert _ipwhl(tmp_path, "update", "--release", str(release), "--index-url", index.url) == 0
    assert capsys.readouterr().out == (
        "a 1.0 -> 1.5\n  2.0 held back: c 1.0 requires 'a<2'\nc 1.0 is the newest\n"
    )
    after = _declared(tmp_path)
    assert {k: v for k, v in after.items() if k != "a/a-1.5-py3-none-any.toml"} == patched
    assert after["a/a-1.5-py3-none-any.toml"] == "".join(
        line[1:] for line in out.out.splitlines(keepends=True)[-5:]
    )
    fetched = index.count(".whl")
    assert _ipwhl(tmp_path, "check", str(release)) == 0
    assert index.count(".whl") == fetched  # update left the new wheel in the store


def test_plans_weigh_dependents_wheels_and_dependencies(
    wheels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with IndexServer(mode="json") as index:
        for version in ("1.0", "1.1"):
            index.add(build_wheel(wheels, "b", version,
                                  requires_dist=["d>=1"] if version == "1.1" else []))
        for tag in ("cp311-cp311-manylinux_2_17_x86_64", "cp312-cp312-win_amd64"):
            index.add(build_wheel(wheels, "x", "1.0", tag=tag))
        index.add(build_wheel(wheels, "x", "1.1", tag="cp311-cp311-manylinux_2_17_x86_64"))
        index.add(build_wheel(wheels, "x", "1.2", tag="cp312-abi3-win_amd64"))
        index.add(build_wheel(wheels, "w", "1.0"))
        index.add(build_wheel(wheels, "w", "2.0"))
        index.add(build_wheel(wheels, "w", "3.0rc1"))
        index.add(build_wheel(wheels, "z", "1.0", requires_dist=["w<2"]))
        index.add(build_wheel(wheels, "z", "1.1", requires_dist=["w<3"]))
        index.add(build_wheel(wheels, "z", "1.2", requires_dist=["w<3"]), yanked=True)
        index.add(build_wheel(wheels, "d", "1.0"))
        release = _release(tmp_path, index, "b==1.0", "x==1.0", "w==1.0", "z==1.0")
        capsys.readouterr()
        assert _ipwhl(tmp_path, "update", "--release", str(release),
                      "--index-url", index.url) == 0
        # z 1.1 lifts the '<2' that held w back, so w moves in the next round.
        assert capsys.readouterr().out == (
            "b 1.0 stays\n"
            f"  1.1 held back: needs d declared too: b 1.1 requires 'd>=1', but 'd' is not in "
            f"the release on {LINUX311}; {WIN312}\n"
            "w 1.0 -> 2.0\n"
            "x 1.0 stays\n"
            f"  1.2 held back: no wheel for {LINUX311}\n"
            f"  1.1 held back: no wheel for {WIN312}\n"
            "z 1.0 -> 1.1\n"
        )
        assert sorted(_declared(tmp_path)) == [
            "b/b-1.0-py3-none-any.toml",
            "w/w-2.0-py3-none-any.toml",
            "x/x-1.0-cp311-cp311-manylinux_2_17_x86_64.toml",
            "x/x-1.0-cp312-cp312-win_amd64.toml",
            "z/z-1.1-py3-none-any.toml",
        ]
        assert _ipwhl(tmp_path, "check", str(release)) == 0
        # Once d is declared, b can move; naming b limits the update to it.
        assert _ipwhl(tmp_path, "declare", "d", "--release", str(release),
                      "--index-url", index.url) == 0
        capsys.readouterr()
        assert _ipwhl(tmp_path, "update", "b", "--release", str(release),
                      "--index-url", index.url) == 0
        assert capsys.readouterr().out == "b 1.0 -> 1.1\n"
        assert _ipwhl(tmp_path, "check", str(release)) == 0


def test_update_blocked_both_ways_and_unknown_projects(
    wheels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with IndexServer() as index:
        # x 2.0 is held back by y 1.0's '<2'; y 2.0 needs x 2.0: each waits for the other.
        index.add(build_wheel(wheels, "x", "1.0"))
        index.add(build_wheel(wheels, "x", "2.0"))
        index.add(build_wheel(wheels, "y", "1.0", requires_dist=["x<2"]))
        index.add(build_wheel(wheels, "y", "2.0", requires_dist=["x>=2"]))
        release = _release(tmp_path, index, "x==1.0", "y==1.0")
        capsys.readouterr()
        assert _ipwhl(tmp_path, "update", "--release", str(release), "--dry-run",
                      "--index-url", index.url) == 0
        out = capsys.readouterr()
        assert out.out == ""
        assert out.err == (
            "x 1.0 stays\n  2.0 held back: y 1.0 requires 'x<2'\n"
            "y 1.0 stays\n  2.0 held back: needs x updated too: y 2.0 requires 'x>=2', but the "
            f"release has x 1.0 on {LINUX311}; {WIN312}\n"
        )
        assert _ipwhl(tmp_path, "update", "nothing", "--release", str(release),
                      "--index-url", index.url) == 2
        assert "nothing is not declared in" in capsys.readouterr().err
        index.files.pop("y")
        assert _ipwhl(tmp_path, "update", "y", "--release", str(release), "--dry-run",
                      "--index-url", index.url) == 0
        assert capsys.readouterr().err == (
            f"y 1.0 stays: project 'y' is not on the index {index.url}\n"
        )


def test_a_version_whose_metadata_cannot_be_declared_is_held_back(
    wheels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with IndexServer() as index:
        index.add(build_wheel(wheels, "q", "1.0"))
        index.add(build_wheel(wheels, "q", "2.0", provides_extra=["it's"]))
        release = _release(tmp_path, index, "q==1.0")
        capsys.readouterr()
        assert _ipwhl(tmp_path, "update", "--release", str(release), "--dry-run",
                      "--index-url", index.url) == 0
        err = capsys.readouterr().err
        assert err.startswith("q 1.0 stays\n  2.0 held back: cannot be declared: invalid extra "
                              "name \"it's\"")
