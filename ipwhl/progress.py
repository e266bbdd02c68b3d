"""Progress for long steps: a redrawn line on a terminal, a few plain lines when piped."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from .build import Progress

__all__ = ["LineProgress", "TerminalProgress", "progress_for"]


def _megabytes(nbytes: int) -> str:
    return f"{nbytes / 1e6:,.1f} MB"


class TerminalProgress(Progress):
    """One status line, redrawn at most ten times a second."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.total = 0
        self.done = 0
        self.nbytes = 0
        self.started = time.monotonic()
        self.drawn = 0.0
        self.lock = threading.Lock()

    def start(self, total_wheels: int) -> None:
        self.total = total_wheels
        self.started = time.monotonic()
        self._draw(force=True)

    def advance(self, nbytes: int) -> None:
        with self.lock:
            self.nbytes += nbytes
        self._draw()

    def wheel_done(self, filename: str) -> None:
        with self.lock:
            self.done += 1
        self._draw()

    def finish(self) -> None:
        self._draw(force=True)
        self.stream.write("\n")
        self.stream.flush()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.drawn < 0.1:
            return
        self.drawn = now
        elapsed = max(now - self.started, 1e-6)
        line = (
            f"\rwheels {self.done}/{self.total}  fetched {_megabytes(self.nbytes)}"
            f"  {self.nbytes / elapsed / 1e6:,.1f} MB/s"
        )
        self.stream.write(line + "\x1b[K")
        self.stream.flush()


class LineProgress(Progress):
    """When not on a terminal: one line at the end with what was done."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.nbytes = 0
        self.total = 0
        self.lock = threading.Lock()

    def start(self, total_wheels: int) -> None:
        self.total = total_wheels

    def advance(self, nbytes: int) -> None:
        with self.lock:
            self.nbytes += nbytes

    def finish(self) -> None:
        if self.nbytes:
            print(f"ipwhl: fetched {_megabytes(self.nbytes)} for {self.total} wheels",
                  file=self.stream)


def progress_for(stream: TextIO | None = None, quiet: bool = False) -> Progress:
    """The progress display that suits `stream` (default: the current sys.stderr)."""
    stream = sys.stderr if stream is None else stream
    if quiet:
        return Progress()
    if stream.isatty():
        return TerminalProgress(stream)
    return LineProgress(stream)
