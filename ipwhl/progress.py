"""Progress for long steps: a redrawn bar on a terminal, a few plain lines when piped.

Every display has three modes, chosen from the stream when it is made: `live` (a terminal
that can redraw a line: the bar is redrawn at most ten times a second and erased when the
step ends, so the command's own summary line takes its place), `lines` (a pipe or a file: a
plain line at most every `line_interval` seconds, so logs show a long step moving without
filling up) and `off` (`-q`). Nothing here colours text: progress is not output.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TextIO

from .terminal import is_live, palette_for

__all__ = [
    "Activity",
    "Bar",
    "GatewayProgress",
    "ImportChecksProgress",
    "Steps",
    "WheelProgress",
    "format_amount",
    "progress_for",
]

LIVE, LINES, OFF = "live", "lines", "off"
_BAR_WIDTH = 24
_RATE_AFTER = 0.5  # seconds: a rate over less time than this says nothing


def format_amount(amount: float, unit: str) -> str:
    """`amount` for people: bytes as kB/MB/GB (decimal, like download tools), items as is."""
    if unit != "B":
        return f"{int(amount):,}"
    for size, suffix in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if amount >= size:
            return f"{amount / size:,.1f} {suffix}"
    return f"{int(amount)} B"


def _byte_pair(done: float, total: float) -> str:
    """`1.2/40.0 MB`: both in the unit that suits the total."""
    for size, suffix in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if total >= size:
            return f"{done / size:,.1f}/{total / size:,.1f} {suffix}"
    return f"{int(done)}/{int(total)} B"


def _mode(stream: TextIO, quiet: bool) -> str:
    if quiet:
        return OFF
    return LIVE if is_live(stream) else LINES


class Bar:
    """One long step: `label`, `done` out of `total` (0: unknown) `unit`s ("B" for bytes).

    Thread-safe: workers may call `advance` at once. `note(elapsed)`, if given, adds text
    after the figures (such as bytes fetched while the bar counts wheels).
    """

    def __init__(
        self,
        label: str,
        *,
        total: int = 0,
        unit: str = "",
        stream: TextIO | None = None,
        quiet: bool = False,
        note: Callable[[float], str] | None = None,
        interval: float = 0.1,
        line_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.mode = _mode(self.stream, quiet)
        self.label = label
        self.total = total
        self.done = 0
        self.unit = unit
        self.note = note
        self.interval = interval
        self.line_interval = line_interval
        self.clock = clock
        self.started = clock()
        self.drawn = float("-inf")
        self.lined = self.started
        self.visible = False
        self.closed = False
        self.lock = threading.RLock()

    # -- reporting -----------------------------------------------------------------------------

    def advance(self, amount: int = 1) -> None:
        """`amount` more units done."""
        with self.lock:
            self.done += amount
            self._show()

    def update(self, done: int | None = None, total: int | None = None) -> None:
        """Set how much is done, and the total when it becomes known."""
        with self.lock:
            if done is not None:
                self.done = done
            if total is not None:
                self.total = total
            self._show()

    def message(self, text: str) -> None:
        """Print `text` as a line of its own (above the bar, which is redrawn under it)."""
        if self.mode == OFF:
            return
        with self.lock:
            if self.visible:
                self.stream.write("\r\x1b[K")
                self.visible = False
            self.stream.write(text + "\n")
            self.stream.flush()
            self._show(force=True)

    def close(self) -> None:
        """End the step: erase the bar (the command's summary line follows)."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            if self.visible:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self.visible = False

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -- drawing -------------------------------------------------------------------------------

    def figures(self) -> str:
        """What is done, out of what, how fast: `12.3/40.0 MB  31%  5.2 MB/s`."""
        elapsed = self.clock() - self.started
        if self.total and self.unit == "B":
            text = _byte_pair(self.done, self.total)
        elif self.total:
            text = f"{self.done:,}/{self.total:,}"
        else:
            text = format_amount(self.done, self.unit)
        if self.unit not in ("", "B"):
            text += f" {self.unit}"
        if self.unit == "B" and elapsed >= _RATE_AFTER:
            text += f"  {format_amount(self.done / elapsed, 'B')}/s"
        if self.note is not None:
            extra = self.note(elapsed)
            if extra:
                text += f"  {extra}"
        return text

    def percent(self) -> int | None:
        if not self.total:
            return None
        return max(0, min(100, int(100 * self.done / self.total)))

    def render(self, width: int) -> str:
        """The live line for a terminal `width` columns wide (never longer than width - 1)."""
        elapsed = int(self.clock() - self.started)
        clock = f"{elapsed // 60}:{elapsed % 60:02d}"
        percent = self.percent()
        if percent is None:
            # No total: a block sweeping back and forth says it is alive.
            step = int((self.clock() - self.started) * 8) % (2 * (_BAR_WIDTH - 3))
            left = step if step < _BAR_WIDTH - 3 else 2 * (_BAR_WIDTH - 3) - step
            bar = "." * left + "###" + "." * (_BAR_WIDTH - 3 - left)
            text = f"{self.label} [{bar}] {self.figures()}  {clock}"
        else:
            filled = percent * _BAR_WIDTH // 100
            bar = "#" * filled + "." * (_BAR_WIDTH - filled)
            text = f"{self.label} [{bar}] {percent:3d}%  {self.figures()}  {clock}"
        return text[: max(width - 1, 10)]

    def line(self) -> str:
        """The plain line for a pipe: `ipwhl: LABEL: FIGURES (P%)`."""
        percent = self.percent()
        share = f" ({percent}%)" if percent is not None else ""
        return f"ipwhl: {self.label}: {self.figures()}{share}"

    def _show(self, force: bool = False) -> None:
        if self.closed or self.mode == OFF:
            return
        now = self.clock()
        if self.mode == LIVE:
            if force or now - self.drawn >= self.interval:
                self.drawn = now
                width = shutil.get_terminal_size((80, 24)).columns
                self.stream.write("\r" + self.render(width) + "\x1b[K")
                self.stream.flush()
                self.visible = True
        elif now - self.lined >= self.line_interval:
            self.lined = now
            self.stream.write(self.line() + "\n")
            self.stream.flush()


class Activity(Bar):
    """A step whose progress cannot be counted from outside (gc's marking, a resolver): the
    bar is redrawn by a thread so a terminal shows it is alive; use it as a context manager."""

    def __enter__(self) -> Activity:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.mode == LIVE:
            self._thread = threading.Thread(target=self._tick, name="ipwhl-activity", daemon=True)
            self._thread.start()
        return self

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            with self.lock:
                self._show(force=True)

    def close(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
            if self._thread is not None:
                self._thread.join()
        super().close()


class Steps:
    """A callback `(step, done, total)` for library functions with several long steps (a CAR
    import checks, then writes): one bar per step, labelled from `labels`."""

    def __init__(self, labels: Mapping[str, str], *, unit: str = "",
                 stream: TextIO | None = None, quiet: bool = False, **options: Any) -> None:
        self.labels = labels
        self.unit = unit
        self.stream = stream
        self.quiet = quiet
        self.options = options
        self.step: str | None = None
        self.bar: Bar | None = None

    def __call__(self, step: str, done: int, total: int) -> None:
        if step != self.step:
            self.close()
            self.step = step
            self.bar = Bar(self.labels.get(step, step), total=total, unit=self.unit,
                           stream=self.stream, quiet=self.quiet, **self.options)
        assert self.bar is not None
        self.bar.update(done, total or None)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class WheelProgress:
    """Fetching and hashing a release's wheels (the shape of `ipwhl.build.Progress`, which is
    not imported here to keep `ipwhl fetch` and friends quick to start)."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False,
                 label: str = "wheels", **options: Any) -> None:
        self.nbytes = 0
        self.bar = Bar(label, stream=stream, quiet=quiet, note=self._note, **options)

    def _note(self, elapsed: float) -> str:
        if not self.nbytes:
            return ""
        rate = (f", {format_amount(self.nbytes / elapsed, 'B')}/s"
                if elapsed >= _RATE_AFTER else "")
        return f"fetched {format_amount(self.nbytes, 'B')}{rate}"

    def start(self, total_wheels: int) -> None:
        self.bar.update(0, total_wheels)

    def advance(self, nbytes: int) -> None:
        with self.bar.lock:
            self.nbytes += nbytes
            self.bar.update()

    def wheel_done(self, filename: str) -> None:
        self.bar.advance()

    def finish(self) -> None:
        self.bar.close()
        if self.bar.mode == LINES and self.nbytes:
            self.bar.stream.write(f"ipwhl: fetched {format_amount(self.nbytes, 'B')} for "
                                  f"{self.bar.total} wheels\n")
            self.bar.stream.flush()


class GatewayProgress:
    """A fetch from trustless gateways: a callback taking `ipwhl.remote.FetchStats`."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False,
                 label: str = "fetch", **options: Any) -> None:
        self.stats: Any = None
        self.bar = Bar(label, unit="blocks", stream=stream, quiet=quiet, note=self._note,
                       **options)

    def _note(self, elapsed: float) -> str:
        if self.stats is None:
            return ""
        rate = (f", {format_amount(self.stats.nbytes / elapsed, 'B')}/s"
                if elapsed >= _RATE_AFTER else "")
        return (f"{format_amount(self.stats.nbytes, 'B')}{rate}, "
                f"{self.stats.present} already here")

    def __call__(self, stats: Any) -> None:
        with self.bar.lock:
            self.stats = stats
            self.bar.update(stats.fetched)

    def summary(self) -> str:
        """`fetched N blocks (X MB, Y MB/s), M already here`."""
        elapsed = max(self.bar.clock() - self.bar.started, 1e-6)
        fetched = self.stats.fetched if self.stats else 0
        nbytes = self.stats.nbytes if self.stats else 0
        present = self.stats.present if self.stats else 0
        return (f"fetched {fetched} blocks ({format_amount(nbytes, 'B')}, "
                f"{format_amount(nbytes / elapsed, 'B')}/s), {present} already here")

    def close(self) -> None:
        self.bar.close()


class ImportChecksProgress:
    """Import checks (the shape of `ipwhl.importcheck.ImportProgress`): a bar with the count
    of failures on a terminal, a failed check's label printed above it; one plain line per
    finished check when piped."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False,
                 **options: Any) -> None:
        self.failed = 0
        self.bar = Bar("import checks", stream=stream, quiet=quiet, note=self._note, **options)
        self.palette = palette_for(self.bar.stream)

    def _note(self, elapsed: float) -> str:
        return f"{self.failed} failed" if self.failed else ""

    def start(self, total: int) -> None:
        self.bar.update(0, total)

    def done(self, outcome: Any) -> None:
        with self.bar.lock:
            self.failed += not outcome.ok
            self.bar.done += 1
            if self.bar.mode == LINES:
                state = "ok" if outcome.ok else "FAILED"
                reused = " (from the store)" if outcome.reused else ""
                self.bar.stream.write(f"ipwhl: import {self.bar.done}/{self.bar.total} "
                                      f"{outcome.check.label}: {state}{reused}\n")
                self.bar.stream.flush()
            elif not outcome.ok:
                self.bar.message(f"{self.palette.paint('FAILED', 'failed')} "
                                 f"{outcome.check.label}")
            else:
                self.bar.update()

    def finish(self) -> None:
        self.bar.close()


def progress_for(stream: TextIO | None = None, quiet: bool = False) -> WheelProgress:
    """The wheel progress display that suits `stream` (default: the current sys.stderr)."""
    return WheelProgress(sys.stderr if stream is None else stream, quiet=quiet)
