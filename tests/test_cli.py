"""The `ipwhl` command line: help with examples on every command, -q/-v/--json everywhere,
errors a user can act on (one line and a hint), colour only where wanted, completion."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ipwhl import __version__, cli
from ipwhl.cli import main
from ipwhl.completion import describe
from tests.clirun import run_ipwhl

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


def test_a_build_that_signs_nothing_does_not_load_the_signing_code(tmp_path: Path) -> None:
    # Start-up is part of every warm build and overlay: cryptography costs 16 ms to import.
    from tests.releasefactory import Project, write_release

    release = write_release(tmp_path / "r", [Project("a", "1.0")])
    probe = (
        "import sys\n"
        "from ipwhl.cli import main\n"
        "try:\n"
        f"    main(['build', {str(release.path)!r}, '--store', {str(tmp_path / 's')!r}, '-q'])\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "print(sorted(m for m in sys.modules if m in ('ipwhl.trust', 'ipwhl.signing')))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True, check=True)
    assert done.stdout.splitlines()[-1] == "[]"


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
        # argparse puts a long name's summary on the next line
        assert f"\n    {command} " in out or f"\n    {command}\n" in out
    assert "examples:\n  ipwhl declare" in out


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


# -- every command and subcommand: help, -q/-v, --json -----------------------------------------


def command_paths() -> list[tuple[str, ...]]:
    """Every command and subcommand, as the words after `ipwhl` (`("roots", "add")`)."""
    return [c.path[1:] for c in describe(cli._parser()).walk() if len(c.path) > 1]


def flags(path: tuple[str, ...]) -> set[str]:
    command = next(c for c in describe(cli._parser()).walk() if c.path[1:] == path)
    return {flag for option in command.options for flag in option.flags}


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_and_subcommand_has_help_with_an_example(
    capsys: pytest.CaptureFixture[str], path: tuple[str, ...]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    words = " ".join(path)
    assert out.startswith(f"usage: ipwhl {words}")
    assert "examples:" in out
    assert f"\n  ipwhl {words} " in out or f"\n  ipwhl {words}\n" in out


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_takes_quiet_and_verbose(path: tuple[str, ...]) -> None:
    assert {"-q", "--quiet", "-v", "--verbose", "--store"} <= flags(path)


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_that_reports_takes_json(path: tuple[str, ...]) -> None:
    assert ("--json" in flags(path)) == (path[0] not in cli.NO_JSON)


# -- errors: one line, a hint where there is a next step, a traceback only with -v -------------

MISSING = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"


def test_no_store_yet_hints_at_building_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IPWHL_STORE", raising=False)
    assert main(["ls", MISSING]) == 7
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"ipwhl: error: block {MISSING} is not in the store store\n"
        "hint: there is no store at ./store: run `ipwhl build RELEASE.toml` first, or pass "
        "--store DIR (or set IPWHL_STORE)\n"
    )


def test_a_cid_the_store_lacks_hints_at_fetching_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    assert main(["gc", "-q", "--store", str(store)]) == 0  # makes the store
    capsys.readouterr()
    for argv in (["ls", MISSING], ["export", MISSING, "-o", str(tmp_path / "x.car")],
                 ["diff", MISSING, MISSING]):
        assert main([*argv, "--store", str(store)]) == 7
        err = capsys.readouterr().err.splitlines()
        assert err == [
            f"ipwhl: error: block {MISSING} is not in the store {store}",
            f"hint: `ipwhl fetch {MISSING} --from URL` fetches it from a gateway (such as "
            "https://ipfs.io), or build it with `ipwhl build`",
        ]
    assert not (tmp_path / "x.car").exists()


def test_a_missing_secret_key_hints_at_keygen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["sign", MISSING, "--key", str(tmp_path / "none.key"), "-o", "r.record",
                 "--store", str(tmp_path / "s")])
    err = capsys.readouterr().err.splitlines()
    assert code == 10
    assert err[0].startswith(f"ipwhl: error: cannot read secret key file {tmp_path}")
    assert err[1] == ("hint: `ipwhl keygen --public release.pub --secret release.key` makes a "
                      "key pair")


def test_a_missing_file_is_named_without_errno(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["verify", "nothing.record", "--state", "trust.json"]) == 1
    assert capsys.readouterr().err == "ipwhl: error: nothing.record: No such file or directory\n"


def test_a_bug_is_one_line_with_a_hint_and_a_traceback_only_with_v(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(args: argparse.Namespace) -> int:
        return {}["no such key"]  # type: ignore[return-value]

    monkeypatch.setattr(cli, "cmd_ls", broken)  # the parser binds commands when it is built
    assert main(["ls", MISSING]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err == (
        "ipwhl: error: internal error: KeyError: 'no such key'\n"
        "hint: this is a bug in ipwhl: run the command again with -v for the traceback, and "
        "report it\n"
    )
    assert main(["ls", MISSING, "-v"]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "in broken" in err and err.endswith("and report it\n")


def test_under_json_an_error_is_also_a_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ls", MISSING, "--json", "--store", str(tmp_path / "s")]) == 7
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert document == {
        "error": f"block {MISSING} is not in the store {tmp_path / 's'}",
        "exit_code": 7,
        "hint": "there is no store at " + str(tmp_path / "s") + ": run `ipwhl build "
        "RELEASE.toml` first, or pass --store DIR (or set IPWHL_STORE)",
        "violations": [],
    }
    assert err.startswith("ipwhl: error: block")
    _assert_documented("error", document)


def test_under_json_a_malformed_release_lists_its_violations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = tmp_path / "release.toml"
    release.write_text('name = "x"\ndeclarations = "pkgs"\nsupported = ["cp311 nowhere"]\n')
    (tmp_path / "pkgs").mkdir()
    assert main(["check", str(release), "--json", "--store", str(tmp_path / "s")]) == 3
    document = json.loads(capsys.readouterr().out)
    assert document["exit_code"] == 3 and document["error"] == "1 violation(s)"
    assert document["violations"][0].startswith(f"{release}:3:15: syntax: ")


# -- colour: only on a terminal, never with NO_COLOR -------------------------------------------


@pytest.fixture
def broken_release(tmp_path: Path) -> Path:
    from tests.releasefactory import Project, write_release

    return write_release(tmp_path / "r", [Project("a", "1.0", requires_dist=["b>=2"])]).path


def test_violations_and_errors_are_coloured_on_a_terminal(
    tmp_path: Path, broken_release: Path
) -> None:
    code, out, err = run_ipwhl(["eval", str(broken_release), "--store", str(tmp_path / "s")],
                               on_terminal=True, cwd=tmp_path)
    assert code == 4
    declaration = broken_release.parent / "pkgs" / "a" / "a-1.0-py3-none-any.toml"
    assert f"\x1b[1m{declaration}:" in err  # path:line:col in bold
    assert "\x1b[33mclosure\x1b[0m: " in err  # the check's name in yellow
    assert "\x1b" not in out  # results are never coloured
    code, _, err = run_ipwhl(["ls", MISSING, "--store", str(tmp_path / "s")], on_terminal=True,
                             cwd=tmp_path)
    assert code == 7
    assert err.startswith("ipwhl: \x1b[1;31merror:\x1b[0m block")
    assert "\r\n\x1b[36mhint:\x1b[0m " in err


@pytest.mark.parametrize("no_color", ["1", "yes", "0"])
def test_no_color_turns_colour_off_whatever_its_value(
    tmp_path: Path, broken_release: Path, no_color: str
) -> None:
    code, _, err = run_ipwhl(["eval", str(broken_release), "--store", str(tmp_path / "s")],
                             on_terminal=True, cwd=tmp_path, env={"NO_COLOR": no_color})
    assert code == 4
    assert "\x1b" not in err
    assert ": closure: " in err


def test_an_empty_no_color_does_not_count(tmp_path: Path, broken_release: Path) -> None:
    _, _, err = run_ipwhl(["eval", str(broken_release), "--store", str(tmp_path / "s")],
                          on_terminal=True, cwd=tmp_path, env={"NO_COLOR": ""})
    assert "\x1b[33mclosure" in err  # https://no-color.org: "present and not empty"


def test_no_colour_when_piped(tmp_path: Path, broken_release: Path) -> None:
    for argv in (["eval", str(broken_release)], ["ls", MISSING]):
        code, _, err = run_ipwhl([*argv, "--store", str(tmp_path / "s")], on_terminal=False,
                                 cwd=tmp_path)
        assert code in (4, 7)
        assert "\x1b" not in err and "\r" not in err


# -- completion ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_mention_every_command_and_option(
    capsys: pytest.CaptureFixture[str], shell: str
) -> None:
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for path in command_paths():
        assert path[-1] in script
        for flag in flags(path):
            assert flag.lstrip("-") in script, f"{flag} of {' '.join(path)}"
    if shutil.which(shell):
        checked = subprocess.run([shell, "-n"], input=script, text=True, capture_output=True,
                                 check=False)
        assert checked.returncode == 0, checked.stderr


def _bash_complete(script: str, line: str) -> list[str]:
    """What bash would offer after typing `line` (words split on spaces, the last one being
    completed), using the generated script."""
    words = line.split(" ")
    program = f"""{script}
COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})
COMP_CWORD={len(words) - 1}
_ipwhl
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return sorted(filter(None, done.stdout.splitlines()))


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_the_bash_script_completes_commands_options_and_values(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert _bash_complete(script, "ipwhl ro") == ["roots"]
    assert _bash_complete(script, "ipwhl roots ") == ["add", "rm"]
    assert "--older-than" in _bash_complete(script, "ipwhl gc --")
    assert _bash_complete(script, "ipwhl use r.record --scope ") == ["global", "site", "user"]
    assert _bash_complete(script, "ipwhl completion ") == ["bash", "fish", "zsh"]
    assert _bash_complete(script, "ipwhl roots --store x add --") == sorted(
        f for f in flags(("roots", "add")) if f.startswith("--"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "release.toml").write_text("")
    assert _bash_complete(script, "ipwhl check rel") == ["release.toml"]
    assert _bash_complete(script, "ipwhl build --sign rel") == ["release.toml"]


_ZSH_HARNESS = """
compdef() { : }
source %s
# Stand-ins for the completion system: print what would be offered.
_describe() { local -a items; items=("${(@P)${@[-1]}}"); print -l -- ${items%%%%:*} }
compadd() { [[ $1 == -a ]] && print -l -- "${(@P)2}" }
_files() { print -- "<files>" }
words=(${=LINE}); [[ $LINE == *" " ]] && words+=("")
CURRENT=${#words}
_ipwhl
"""


@pytest.mark.skipif(shutil.which("zsh") is None, reason="no zsh")
def test_the_zsh_script_completes_commands_options_and_values(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["completion", "zsh"]) == 0
    script = tmp_path / "_ipwhl"
    script.write_text(capsys.readouterr().out)
    harness = tmp_path / "harness.zsh"
    harness.write_text(_ZSH_HARNESS % script)

    def offered(line: str) -> list[str]:
        done = subprocess.run(["zsh", "-f", str(harness)], env=dict(os.environ, LINE=line),
                              capture_output=True, text=True, check=True)
        return sorted(done.stdout.split())

    assert offered("ipwhl ro") == sorted(commands())  # _describe narrows to the prefix
    assert offered("ipwhl roots ") == ["add", "rm"]
    assert offered("ipwhl roots --store x add --") == sorted(flags(("roots", "add")))
    assert offered("ipwhl use r --scope ") == ["global", "site", "user"]
    assert offered("ipwhl completion ") == ["bash", "fish", "zsh"]
    assert offered("ipwhl build --sign ") == ["<files>"]


@pytest.mark.skipif(shutil.which("fish") is None, reason="no fish")
def test_the_fish_script_completes_commands_options_and_values(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["completion", "fish"]) == 0
    script = tmp_path / "ipwhl.fish"
    script.write_text(capsys.readouterr().out)

    def offered(line: str) -> list[str]:
        done = subprocess.run(["fish", "--no-config", "-c",
                               f"source {script}; complete -C {shlex.quote(line)}"],
                              capture_output=True, text=True, check=True)
        return sorted(entry.split("\t")[0] for entry in done.stdout.splitlines())

    assert offered("ipwhl ro") == ["roots"]
    assert offered("ipwhl roots ") == ["add", "rm"]
    assert offered("ipwhl use r --scope ") == ["global", "site", "user"]
    assert offered("ipwhl completion ") == ["bash", "fish", "zsh"]
    assert offered("ipwhl gc --dr") == ["--dry-run"]
    assert "--repair" in offered("ipwhl store verify --")


# -- --json: every document parses and has the keys its reference page documents ----------------


def _documented(marker: str) -> object:
    """The JSON example the reference marks `<!-- json: MARKER -->`."""
    command = marker.split()[0]
    page = REPO / "docs" / "reference" / ("README.md" if command == "error" else
                                          f"{command}.md")
    text = page.read_text(encoding="utf-8")
    tag = f"<!-- json: {marker} -->\n```json\n"
    assert tag in text, f"{page.name} has no JSON example marked {marker!r}"
    start = text.index(tag) + len(tag)
    return json.loads(text[start:text.index("```", start)])


def _assert_shape(actual: object, documented: object, where: str) -> None:
    if isinstance(actual, dict):
        assert isinstance(documented, dict), f"{where}: documented as {documented!r}"
        assert set(actual) == set(documented), (
            f"{where}: keys {sorted(actual)} but documented {sorted(documented)}")
        for key, value in actual.items():
            _assert_shape(value, documented[key], f"{where}.{key}")
    elif isinstance(actual, list) and actual:
        assert isinstance(documented, list) and documented, f"{where}: documented empty"
        for item in actual:
            _assert_shape(item, documented[0], f"{where}[]")


def _assert_documented(marker: str, document: object) -> None:
    _assert_shape(document, _documented(marker), marker)


class Run:
    """ipwhl commands run in-process against one store, their stdout parsed as JSON."""

    def __init__(self, store: Path) -> None:
        self.store = store

    def __call__(self, *argv: str, code: int = 0, store: Path | None = None) -> Any:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            got = main([*argv, "--json", "--store", str(store or self.store)])
        assert got == code, err.getvalue()
        return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One JSON document of every kind, from a small but complete life of a release."""
    from ipwhl.gateway import GatewayConfig, running
    from ipwhl.store import Store
    from tests.indexserver import IndexServer
    from tests.releasefactory import Project, write_release
    from tests.test_publish import KuboRPC, PinningService, serve
    from tests.wheelfactory import build_wheel

    tmp = tmp_path_factory.mktemp("json")
    run = Run(tmp / "store")
    found: dict[str, Any] = {}
    os.environ["IPWHL_KEY_PASSPHRASE"] = "secret"
    try:
        first = write_release(tmp / "v1", [Project("a", "1.0", requires_dist=["b"]),
                                           Project("b", "1.0")], name="line")
        found["eval"] = run("eval", str(first.path))
        found["check"] = run("check", str(first.path))
        found["keygen"] = run("keygen", "--public", str(tmp / "k.pub"),
                              "--secret", str(tmp / "k.key"))
        found["build"] = run("build", str(first.path), "--sign", str(tmp / "k.key"),
                             "--record", str(tmp / "line-1.record"))
        old = found["build"]["root"]
        found["ls directory"] = run("ls", f"{old}/simple")
        found["ls file"] = run("ls", f"{old}/index.html")
        found["get"] = run("get", old, "-o", str(tmp / "out"))
        found["export"] = run("export", old, "-o", str(tmp / "r.car"))
        found["import"] = run("import", str(tmp / "r.car"), "--root-name", "copy",
                              store=tmp / "other")
        found["sign"] = run("sign", old, "--key", str(tmp / "k.key"), "-o",
                            str(tmp / "again.record"))
        state = str(tmp / "trust.json")
        found["verify"] = run("verify", str(tmp / "line-1.record"), "--pubkey",
                              str(tmp / "k.pub"), "--state", state)
        found["use"] = run("use", str(tmp / "line-1.record"), "--gateway",
                           "http://127.0.0.1:8080", "--print", "--state", state)
        second = write_release(tmp / "v2", [Project("a", "1.1", requires_dist=["b"]),
                                            Project("b", "1.0")], name="line")
        found["eval --on-top-of"] = run("eval", str(second.path), "--on-top-of", old)
        new = run("build", str(second.path), "--on-top-of", old)["root"]
        found["build failed"] = run("build", str(write_release(
            tmp / "bad", [Project("c", "1.0", requires_dist=["d"])]).path), code=4)
        found["diff"] = run("diff", old, new)
        found["roots"] = run("roots")
        found["roots add"] = run("roots", "add", "pinned", old)
        found["roots rm"] = run("roots", "rm", "pinned")
        found["gc"] = run("gc", "--dry-run")
        found["store verify"] = run("store", "verify")
        with running(Store(tmp / "store").open(), GatewayConfig(port=0)) as gateway:
            found["fetch"] = run("fetch", new, "--from", gateway, "--root-name", "mirror",
                                 store=tmp / "fetched")
        kubo, pinning = serve(KuboRPC)(), serve(PinningService)(token="t", pins={})
        found["publish"] = run("publish", old, "--to", kubo.url, "--pinning-service",
                               pinning.url, "--token", "t")
        with IndexServer(mode="json") as index:
            wheels = tmp / "index"
            wheels.mkdir()
            for version in ("1.0", "2.0"):
                index.add(build_wheel(wheels, "lib", version))
            (tmp / "d" / "pkgs").mkdir(parents=True)
            release = tmp / "d" / "release.toml"
            release.write_text('name = "d"\ndeclarations = "pkgs"\n'
                               'supported = ["cp312 manylinux_2_17_x86_64"]\n')
            found["declare"] = run("declare", "lib==1.0", "--release", str(release),
                                   "--index-url", index.url)
            found["update"] = run("update", "--release", str(release), "--index-url",
                                  index.url, "--dry-run")
    finally:
        del os.environ["IPWHL_KEY_PASSPHRASE"]
    return found


MARKERS = ["eval", "eval --on-top-of", "check", "keygen", "build", "build failed",
           "ls directory", "ls file", "get", "export", "import", "sign", "verify", "use", "diff",
           "roots", "roots add", "roots rm", "gc", "store verify", "fetch", "publish", "declare",
           "update"]


@pytest.mark.parametrize("marker", MARKERS)
def test_json_documents_have_the_documented_keys(
    documents: dict[str, Any], marker: str
) -> None:
    _assert_documented(marker, documents[marker])


def test_every_json_command_has_a_documented_document() -> None:
    covered = {marker.split(" --")[0] for marker in MARKERS}
    for path in command_paths():
        words = " ".join(path)
        if path[0] in cli.NO_JSON or words in ("store",):
            continue
        assert any(m == words or m.startswith(f"{words} ") for m in covered | set(MARKERS)), words


def test_json_documents_say_what_happened(documents: dict[str, Any]) -> None:
    assert documents["check"]["ok"] is True and documents["check"]["imports"] is None
    assert documents["build"]["sequence"] == 1 and documents["build"]["signed"]["sequence"] == 1
    assert documents["build failed"]["root"] is None
    assert ": closure: c 1.0 requires 'd', but 'd' is not in the release" in (
        documents["build failed"]["violations"][0])
    assert [e["name"] for e in documents["ls directory"]["entries"]] == ["a", "b", "index.html"]
    assert documents["import"]["roots"] == [documents["build"]["root"]]
    assert documents["import"]["pinned"] == {"name": "copy", "sequence": 1}
    assert documents["verify"]["status"] == "first use"
    assert documents["diff"]["changes"][0]["kind"] == "upgraded"
    assert documents["roots rm"]["unrooted"] == [1]
    assert documents["fetch"]["pinned"] == {"name": "mirror", "sequence": 2}
    assert documents["publish"]["pinning_service"]["status"] == "queued"  # no --wait
    assert documents["publish"]["kubo"][0]["car_size"] == documents["export"]["size"]
    assert documents["declare"]["declared"] == [
        {"project": "lib", "version": "1.0", "wheels": ["lib-1.0-py3-none-any.whl"],
         "missing": []}]
    assert documents["update"]["changes"] == [{"project": "lib", "from": "1.0", "to": "2.0"}]
    assert documents["update"]["diff"].startswith("--- a/pkgs/lib/lib-1.0-py3-none-any.toml")


@pytest.mark.slow
def test_the_import_check_document_has_the_documented_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import platform

    from tests.releasefactory import Project, write_release

    here = f"cp{sys.version_info.major}{sys.version_info.minor} manylinux_2_17_{platform.machine()}"
    release = write_release(tmp_path / "r", [
        Project("boom", "1.0", modules={"boom/__init__.py": "raise RuntimeError('boom')\n"}),
    ], supported=[here])
    code = main(["check", str(release.path), "--import", "--json", "--store",
                 str(tmp_path / "s")])
    document = json.loads(capsys.readouterr().out)
    if not document["imports"]["checks"]:
        pytest.skip(f"this machine cannot run {here}")
    assert code == 4 and document["ok"] is False
    assert document["imports"]["checks"][0]["failures"][0]["error"] == "RuntimeError: boom"
    _assert_documented("check --import", document)
