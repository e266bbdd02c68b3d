"""The `ipwhl` command line: version, help with examples, and errors a user can act on."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ipwhl import __version__, cli
from ipwhl.cli import main

REPO = Path(__file__).resolve().parents[1]
RELEASE_COMMANDS = ["eval", "check", "build"]


def commands() -> list[str]:
    """Every subcommand the parser knows, so a new one without an example fails here."""
    parser = cli._parser()
    subparsers = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    return sorted(subparsers.choices)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"ipwhl {__version__}\n"


def test_python_dash_m_runs_the_cli() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "ipwhl", "--version"],
        env=env, capture_output=True, text=True, check=False,
    )
    assert (done.returncode, done.stdout) == (0, f"ipwhl {__version__}\n")


def test_the_commands_of_the_spec_exist() -> None:
    assert {"eval", "check", "build", "get", "serve"} <= set(commands())


@pytest.mark.parametrize("command", commands())
def test_every_command_has_help_with_an_example(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ipwhl {command}")
    assert "examples:" in out
    assert f"\n  ipwhl {command} " in out or f"\n  ipwhl {command}\n" in out


def test_top_level_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in commands():
        assert f"\n    {command} " in out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["eval"], ["no-such-command"], ["eval", "r.toml", "--no-such-option"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert "usage: ipwhl" in capsys.readouterr().err


@pytest.mark.parametrize("command", RELEASE_COMMANDS)
def test_a_missing_release_file_is_one_line_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    missing = tmp_path / "nope.toml"
    code = main([command, str(missing), "--store", str(tmp_path / "store")])
    out, err = capsys.readouterr()
    assert code == 3
    assert out == ""
    assert err == (
        f"ipwhl: error: cannot read release file {missing} (no such file); "
        "expected a release.toml, such as examples/release.toml\n"
    )


def test_a_directory_for_a_release_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["eval", str(tmp_path), "--store", str(tmp_path / "store")])
    err = capsys.readouterr().err
    assert code == 3
    assert err.startswith(f"ipwhl: error: cannot read release file {tmp_path} (it is a directory)")
    assert err.count("\n") == 1


def test_verbose_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    code = main(["eval", str(missing), "-v"])
    err = capsys.readouterr().err
    assert code == 3
    assert err.startswith("Traceback (most recent call last):")
    assert err.endswith(f"ipwhl: error: cannot read release file {missing} (no such file); "
                        "expected a release.toml, such as examples/release.toml\n")


def test_a_malformed_release_file_is_reported_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = tmp_path / "release.toml"
    release.write_text('name = "x"\ndeclarations = "pkgs"\nsupported = ["cp311 nowhere"]\n')
    (tmp_path / "pkgs").mkdir()
    code = main(["eval", str(release)])
    err = capsys.readouterr().err.splitlines()
    assert code == 3
    assert err[0].startswith(f"{release}:3:15: syntax: invalid supported environment")
    assert err[-1] == "ipwhl: 1 violation(s)"
    assert "Traceback" not in "\n".join(err)


def test_an_unusable_store_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    release = REPO / "examples" / "release.toml"
    not_a_store = tmp_path / "full"
    not_a_store.mkdir()
    (not_a_store / "my-file").write_text("mine")
    code = main(["check", str(release), "--store", str(not_a_store)])
    err = capsys.readouterr().err
    assert code == 8
    assert err.startswith(f"ipwhl: error: {not_a_store} is not empty and is not an ipwhl store")
    assert err.count("\n") == 1
    assert (not_a_store / "my-file").read_text() == "mine"


def test_the_store_comes_from_ipwhl_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.releasefactory import Project, write_release

    release = write_release(tmp_path / "r", [Project("a", "1.0")])
    monkeypatch.setenv("IPWHL_STORE", str(tmp_path / "from-env"))
    monkeypatch.chdir(tmp_path)
    assert main(["check", str(release.path), "-q"]) == 0
    assert (tmp_path / "from-env" / "FORMAT").is_file()
    assert not (tmp_path / "store").exists()
    capsys.readouterr()
