"""Hostile declaration trees and release files: symlink loops and escapes, FIFOs and devices,
huge and deeply nested documents, names that are not UTF-8. Each is a DeclarationError with a
location, at once: nothing blocks, nothing is read without bound, nothing outside the tree."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ipwhl.declarations import load_declarations
from ipwhl.errors import DeclarationError
from ipwhl.releasefile import load_release
from ipwhl.tomlpos import MAX_DOCUMENT_SIZE
from tests.releasefactory import Project, Release, write_release


@pytest.fixture
def release(tmp_path: Path) -> Release:
    return write_release(tmp_path, [Project("demo", "1.0")])


def violations_of(load: Callable[[], object], seconds: float = 5.0) -> str:
    """The violations `load` raises, as text; fails the test if it hangs or raises another."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            load()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still reading after {seconds} s"
    assert isinstance(outcome[0], DeclarationError), repr(outcome[0])
    return str(outcome[0])


def the_declaration(release: Release) -> Path:
    return next(iter(release.declaration_files.values()))


# --- the declarations tree ---------------------------------------------------------------------


def test_a_symlink_loop_among_the_declarations(release):
    (release.declarations / "demo" / "demo-2.0-py3-none-any.toml").symlink_to(
        "demo-2.0-py3-none-any.toml"
    )
    (release.declarations / "loop").symlink_to("loop")
    text = violations_of(lambda: load_declarations(release.declarations))
    assert "demo-2.0-py3-none-any.toml:1:1: declaration: symlink loop" in text
    assert "loop:1:1: declaration: symlink loop" in text


def test_symlinks_out_of_the_tree_are_refused(release, tmp_path):
    outside = tmp_path / "outside.toml"
    outside.write_text(the_declaration(release).read_text())
    (release.declarations / "demo" / "demo-1.0-py2-none-any.toml").symlink_to(outside)
    (release.declarations / "etc").symlink_to("/etc")
    text = violations_of(lambda: load_declarations(release.declarations))
    assert text.count("symlink points outside the declarations directory") == 2


def test_a_fifo_declaration_does_not_block(release):
    os.mkfifo(release.declarations / "demo" / "demo-1.0-py2-none-any.toml")
    text = violations_of(lambda: load_declarations(release.declarations))
    assert "cannot read the declaration (not a regular file)" in text


def test_a_huge_declaration_is_not_read_whole(release):
    path = the_declaration(release)
    with open(path, "ab") as handle:
        handle.truncate(8 * MAX_DOCUMENT_SIZE)  # sparse; NULs after the real text
    text = violations_of(lambda: load_declarations(release.declarations))
    assert f"larger than {MAX_DOCUMENT_SIZE} bytes" in text


@pytest.mark.parametrize(
    "document",
    [
        b"extras = " + b"[" * 1000 + b"]" * 1000 + b"\n",
        b"x = " + b"{a=" * 1000 + b"1" + b"}" * 1000 + b"\n",
        b"a" + b".a" * 2000 + b" = 1\n",
    ],
    ids=["arrays", "inline-tables", "dotted-key"],
)
def test_deeply_nested_toml_is_a_syntax_error(release, document):
    the_declaration(release).write_bytes(document)
    text = violations_of(lambda: load_declarations(release.declarations))
    assert ":1:1: syntax: invalid TOML: " in text


def test_bytes_that_are_not_utf8_are_located(release):
    the_declaration(release).write_bytes(b"source = 'x'\nextras = ['\xff']\n")
    assert ":2:12: syntax: byte 0xff is not UTF-8" in violations_of(
        lambda: load_declarations(release.declarations)
    )


def test_a_file_name_that_is_not_utf8(release):
    name = os.fsdecode(b"demo-1.0-py3-none-\xff.toml")
    (release.declarations / "demo" / name).write_bytes(the_declaration(release).read_bytes())
    text = violations_of(lambda: load_declarations(release.declarations))
    assert "\udcff" in text
    # printed the way the CLI prints (stderr uses backslashreplace), it cannot fail
    assert "\\udcff" in text.encode("utf-8", "backslashreplace").decode()


def test_unknown_keys_wrong_types_and_a_nul_in_a_string(release):
    the_declaration(release).write_text(
        "sorce = 'x'\ncontent-id = 5\nextras = 'a'\ndependencies = ['a\\u0000b']\n"
    )
    text = violations_of(lambda: load_declarations(release.declarations))
    assert "unknown key 'sorce'; did you mean 'source'?" in text
    assert "'content-id' is an integer" in text
    assert "'extras' is a string" in text
    assert "invalid dependency" in text


# --- the release file and the files it names ---------------------------------------------------


def rewrite(release: Release, old: str, new: str) -> None:
    text = release.path.read_text()
    assert old in text
    release.path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("target", ["fifo", "/dev/zero", "directory", "huge"])
@pytest.mark.parametrize("key", ["supported", "keys"])
def test_files_named_by_the_release_file_must_be_small_regular_files(release, key, target):
    folder = release.path.parent
    if target == "fifo":
        os.mkfifo(folder / "named")
        value = "named"
    elif target == "directory":
        (folder / "named").mkdir()
        value = "named"
    elif target == "huge":
        with open(folder / "named", "wb") as handle:
            handle.truncate(4 * MAX_DOCUMENT_SIZE)
        value = "named"
    else:
        value = target
    if key == "supported":
        rewrite(release, "supported = [", f"supported = '{value}'\nold-supported = [")
    else:
        release.path.write_text(release.path.read_text() + f"keys = '{value}'\n")
    text = violations_of(lambda: load_release(release.path, environ={}))
    assert f"cannot read {key if key == 'keys' else 'supported'} file" in text


def test_a_release_file_that_is_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "release.toml")
    text = violations_of(lambda: load_release(tmp_path / "release.toml", environ={}))
    assert "cannot read the release file (not a regular file)" in text


def test_a_deeply_nested_release_file(release):
    release.path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    assert ":1:1: syntax: invalid TOML" in violations_of(
        lambda: load_release(release.path, environ={})
    )


def test_a_source_date_epoch_out_of_range(release):
    rewrite(release, "date = 2026-11-25T00:00:00Z\n", "")
    text = violations_of(
        lambda: load_release(release.path, environ={"SOURCE_DATE_EPOCH": "9" * 30})
    )
    assert "SOURCE_DATE_EPOCH is" in text
