"""Progress displays: a redrawn bar on a real terminal (a pty), plain lines when piped, nothing
with -q; and the long commands drawing them."""

from __future__ import annotations

import io
import os
import pty
import select
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import pytest

from ipwhl.progress import (
    Activity,
    Bar,
    GatewayProgress,
    ImportChecksProgress,
    Steps,
    WheelProgress,
    format_amount,
)
from ipwhl.remote import FetchStats
from tests.clirun import run_ipwhl
from tests.releasefactory import Project, write_release

REPO = Path(__file__).resolve().parents[1]


class Clock:
    """A clock the test moves by hand, so redraw and line intervals are exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def terminal() -> Iterator[tuple[TextIO, int]]:
    """A writable text stream on the slave side of a pty (isatty() is True), and the master fd
    to read what was written from."""
    master, slave = pty.openpty()
    stream = open(slave, "w", buffering=1, encoding="utf-8", closefd=True)
    try:
        yield stream, master
    finally:
        stream.close()
        os.close(master)


def drain(master: int) -> str:
    chunks = []
    while select.select([master], [], [], 0.05)[0]:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")


# -- the bar itself ----------------------------------------------------------------------------


def test_format_amount() -> None:
    assert format_amount(999, "B") == "999 B"
    assert format_amount(1500, "B") == "1.5 kB"
    assert format_amount(12_345_678, "B") == "12.3 MB"
    assert format_amount(3_000_000_000, "B") == "3.0 GB"
    assert format_amount(12345, "") == "12,345"


def test_on_a_terminal_the_bar_is_redrawn_in_place_and_erased_at_the_end() -> None:
    clock = Clock()
    with terminal() as (stream, master):
        bar = Bar("export", total=4_000_000, unit="B", stream=stream, clock=clock)
        assert bar.mode == "live"
        bar.update(1_000_000)
        clock.now += 1
        bar.update(2_000_000)
        bar.close()
        shown = drain(master)
    frames = [frame for frame in shown.split("\r") if frame]
    assert frames[0].startswith("export [")
    assert " 25%  1.0/4.0 MB" in frames[0]
    assert " 50%  2.0/4.0 MB  2.0 MB/s  0:01" in frames[1]
    assert all(frame.endswith("\x1b[K") for frame in frames)
    assert shown.endswith("\r\x1b[K")  # erased: the command's summary takes its place
    assert "\n" not in shown.replace("\r\n", "")


def test_redraws_are_limited_to_ten_a_second() -> None:
    clock = Clock()
    with terminal() as (stream, master):
        bar = Bar("wheels", total=1000, stream=stream, clock=clock)
        for _ in range(500):
            bar.advance()
        clock.now += 0.1
        bar.advance()
        bar.close()
        shown = drain(master)
    assert shown.count("\x1b[K") == 3  # the first update, one after 0.1 s, the erase


def test_a_bar_never_overflows_the_terminal_width() -> None:
    bar = Bar("a-rather-long-label " * 5, total=10, stream=io.StringIO())
    bar.update(3)
    assert len(bar.render(60)) == 59
    assert len(bar.render(200)) < 199


def test_without_a_total_the_bar_sweeps() -> None:
    clock = Clock()
    bar = Bar("gc", stream=io.StringIO(), clock=clock)
    first = bar.render(80)
    clock.now += 0.5
    assert first != bar.render(80)
    assert "%" not in first


def test_piped_there_are_plain_lines_at_most_every_interval() -> None:
    clock = Clock()
    out = io.StringIO()
    bar = Bar("import: checking", total=2_000_000, unit="B", stream=out, clock=clock,
              line_interval=10)
    assert bar.mode == "lines"
    bar.update(500_000)
    assert out.getvalue() == ""  # a short step says nothing; its summary line is enough
    clock.now += 10
    bar.update(1_000_000)
    clock.now += 1
    bar.update(1_500_000)
    bar.close()
    assert out.getvalue() == (
        "ipwhl: import: checking: 1.0/2.0 MB  100.0 kB/s (50%)\n"
    )
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_quiet_shows_nothing_even_on_a_terminal() -> None:
    with terminal() as (stream, master):
        bar = Bar("x", total=3, stream=stream, quiet=True)
        bar.advance()
        bar.message("a line")
        bar.close()
        assert drain(master) == ""


def test_dumb_terminals_get_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "dumb")
    with terminal() as (stream, _):
        assert Bar("x", stream=stream).mode == "lines"


def test_a_message_goes_above_the_bar() -> None:
    clock = Clock()
    with terminal() as (stream, master):
        bar = Bar("import checks", total=2, stream=stream, clock=clock)
        bar.advance()
        bar.message("FAILED boom-1.0-py3-none-any.whl on cp311 manylinux_2_17_x86_64")
        bar.close()
        shown = drain(master)
    before, after = shown.split("FAILED", 1)
    assert before.endswith("\r\x1b[K")  # the bar erased first
    assert after.split("\n", 1)[1].startswith("\rimport checks [")  # then redrawn below


def test_steps_draw_one_bar_per_step() -> None:
    clock = Clock()
    out = io.StringIO()
    steps = Steps({"check": "import: checking", "write": "import: writing"}, unit="B",
                  stream=out, clock=clock, line_interval=0)
    steps("check", 10, 20)
    clock.now += 1
    steps("check", 20, 20)
    clock.now += 1
    steps("write", 5, 10)
    steps.close()
    assert out.getvalue().splitlines() == [
        "ipwhl: import: checking: 10/20 B (50%)",  # no rate over no time
        "ipwhl: import: checking: 20/20 B  20 B/s (100%)",
        "ipwhl: import: writing: 5/10 B (50%)",
    ]


def test_an_activity_redraws_itself_on_a_terminal() -> None:
    with terminal() as (stream, master):
        with Activity("gc: marking and sweeping", stream=stream, interval=0.02):
            time.sleep(0.2)
        shown = drain(master)
    assert shown.count("gc: marking and sweeping [") >= 3
    assert shown.endswith("\r\x1b[K")


def test_an_activity_says_nothing_when_piped() -> None:
    out = io.StringIO()
    with Activity("gc", stream=out, interval=0.01):
        time.sleep(0.05)
    assert out.getvalue() == ""


def test_wheel_progress_counts_wheels_and_bytes() -> None:
    clock = Clock()
    with terminal() as (stream, master):
        progress = WheelProgress(stream, clock=clock)
        progress.start(4)
        progress.advance(3_000_000)
        progress.wheel_done("a-1.0-py3-none-any.whl")
        clock.now += 1
        progress.wheel_done("b-1.0-py3-none-any.whl")
        progress.finish()
        shown = drain(master)
    assert "wheels [" in shown and " 50%  2/4  fetched 3.0 MB, 3.0 MB/s" in shown


def test_wheel_progress_when_piped_ends_with_one_line() -> None:
    out = io.StringIO()
    progress = WheelProgress(out)
    progress.start(2)
    progress.advance(1_500_000)
    progress.wheel_done("a")
    progress.wheel_done("b")
    progress.finish()
    assert out.getvalue() == "ipwhl: fetched 1.5 MB for 2 wheels\n"


def test_gateway_progress_and_its_summary() -> None:
    out = io.StringIO()
    progress = GatewayProgress(out, line_interval=0)
    progress(FetchStats(fetched=3, nbytes=2_000_000, present=1))
    progress.close()
    assert out.getvalue() == "ipwhl: fetch: 3 blocks  2.0 MB, 1 already here\n"
    assert progress.summary().startswith("fetched 3 blocks (2.0 MB, ")
    assert progress.summary().endswith("), 1 already here")


class _Check:
    label = "a-1.0-py3-none-any.whl on cp311 manylinux_2_17_x86_64"


class _Outcome:
    check = _Check()

    def __init__(self, ok: bool, reused: bool) -> None:
        self.ok, self.reused = ok, reused


def test_import_checks_piped_print_one_line_per_check() -> None:
    out = io.StringIO()
    progress = ImportChecksProgress(out)
    progress.start(2)
    progress.done(_Outcome(ok=True, reused=True))
    progress.done(_Outcome(ok=False, reused=False))
    progress.finish()
    assert out.getvalue().splitlines() == [
        f"ipwhl: import 1/2 {_Check.label}: ok (from the store)",
        f"ipwhl: import 2/2 {_Check.label}: FAILED",
    ]


def test_import_checks_on_a_terminal_print_failures_above_the_bar() -> None:
    with terminal() as (stream, master):
        progress = ImportChecksProgress(stream)
        progress.start(2)
        progress.done(_Outcome(ok=True, reused=False))
        progress.done(_Outcome(ok=False, reused=False))
        progress.finish()
        shown = drain(master)
    assert f"FAILED\x1b[0m {_Check.label}\r\n" in shown  # coloured: a terminal, no NO_COLOR
    assert "import checks [" in shown and "1 failed" in shown


# -- the commands ------------------------------------------------------------------------------


@pytest.fixture
def release(tmp_path: Path) -> Path:
    return write_release(tmp_path / "r", [Project("a", "1.0", requires_dist=["b"]),
                                         Project("b", "1.0")]).path


def test_check_draws_a_bar_on_a_terminal(tmp_path: Path, release: Path) -> None:
    code, _, err = run_ipwhl(["check", str(release), "--store", str(tmp_path / "s")],
                        on_terminal=True, cwd=tmp_path)
    assert code == 0, err
    assert "\rwheels [" in err and "\x1b[K" in err
    assert "pass all four checks" in err


def test_check_writes_plain_lines_when_piped(tmp_path: Path, release: Path) -> None:
    code, _, err = run_ipwhl(["check", str(release), "--store", str(tmp_path / "s")],
                        on_terminal=False, cwd=tmp_path)
    assert code == 0
    assert "\r" not in err and "\x1b" not in err
    assert err.splitlines()[-1].endswith("pass all four checks")


def test_export_and_import_draw_bars_on_a_terminal(tmp_path: Path, release: Path) -> None:
    store = str(tmp_path / "s")
    code, cid, err = run_ipwhl(["build", str(release), "--store", store], on_terminal=False,
                          cwd=tmp_path)
    assert code == 0, err
    cid = cid.strip()
    code, _, err = run_ipwhl(["export", cid, "-o", "r.car", "--store", store], on_terminal=True,
                        cwd=tmp_path)
    assert code == 0, err
    assert "\rexport [" in err and "ipwhl: wrote" in err
    code, out, err = run_ipwhl(["import", "r.car", "--store", str(tmp_path / "other")],
                          on_terminal=True, cwd=tmp_path)
    assert code == 0, err
    assert out.strip() == cid
    assert "\rimport: checking [" in err and "\rimport: writing [" in err


def test_quiet_commands_draw_nothing_on_a_terminal(tmp_path: Path, release: Path) -> None:
    code, out, err = run_ipwhl(["build", str(release), "--store", str(tmp_path / "s"), "-q"],
                          on_terminal=True, cwd=tmp_path)
    assert code == 0
    assert out.startswith("bafy")
    assert err == ""
