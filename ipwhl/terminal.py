"""The terminal: colour only where it is wanted, and error lines a user can act on."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TextIO

__all__ = ["Palette", "error_text", "is_live", "palette_for", "violation_text", "wants_colour"]

# SGR parameters by meaning, so callers say what a piece of text is, not how it looks.
_STYLES = {
    "error": "1;31",     # bold red: `error:`
    "hint": "36",        # cyan: `hint:`
    "note": "36",        # cyan: `note:`
    "location": "1",     # bold: path:line:col
    "check": "33",       # yellow: which check a violation is of
    "ok": "32",          # green
    "failed": "1;31",    # bold red
    "dim": "2",
}

_VIOLATION = re.compile(r"^(?P<location>[^\s:][^:]*:\d+:\d+): (?P<check>[a-z0-9-]+): ")


def is_live(stream: TextIO) -> bool:
    """True when `stream` is a terminal that can redraw a line (not one with TERM=dumb)."""
    isatty = getattr(stream, "isatty", None)
    try:
        terminal = bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False
    return terminal and os.environ.get("TERM") != "dumb"


def wants_colour(stream: TextIO) -> bool:
    """True when text for `stream` may be coloured: a live terminal and no $NO_COLOR.

    Per https://no-color.org, NO_COLOR set to any non-empty value turns colour off.
    """
    return not os.environ.get("NO_COLOR") and is_live(stream)


@dataclass(frozen=True)
class Palette:
    """Paints text with ANSI colours when enabled, and leaves it alone otherwise."""

    enabled: bool

    def paint(self, text: str, style: str) -> str:
        """`text` in the colour for `style` (a key of the style table), or `text` itself."""
        if not self.enabled or not text:
            return text
        return f"\x1b[{_STYLES[style]}m{text}\x1b[0m"


def palette_for(stream: TextIO) -> Palette:
    """The palette for writing to `stream` now (the environment is read at every call)."""
    return Palette(wants_colour(stream))


def violation_text(line: str, palette: Palette) -> str:
    """A `path:line:col: check: message` line with its location and check painted."""
    match = _VIOLATION.match(line)
    if match is None or not palette.enabled:
        return line
    return (f"{palette.paint(match['location'], 'location')}: "
            f"{palette.paint(match['check'], 'check')}: {line[match.end():]}")


def error_text(message: str, hint: str | None, palette: Palette) -> str:
    """`ipwhl: error: MESSAGE`, then `hint: HINT` on its own line when there is a next step."""
    text = f"ipwhl: {palette.paint('error:', 'error')} {message}"
    if hint:
        text += f"\n{palette.paint('hint:', 'hint')} {hint}"
    return text
