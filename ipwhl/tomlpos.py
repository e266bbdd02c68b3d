"""Where the top-level values of a TOML document start, for error messages.

tomli parses values but forgets where they were. This scanner walks the same
text once more and remembers, for every top-level key, the position of its key
and value and, when the value is an array, of each element. It assumes the
text is valid TOML (tomli has accepted it) and degrades to fallbacks rather
than failing when it is not.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import tomli

__all__ = [
    "MAX_DOCUMENT_SIZE",
    "InvalidToml",
    "KeyPositions",
    "Position",
    "Positions",
    "parse",
    "read_document",
    "scan",
]

Position = tuple[int, int]
"""A 1-based (line, column); columns count characters."""

_BARE_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_SCALAR_END = frozenset(",]}#\n\r")
# Declarations and release files are a few hundred bytes; a cap keeps /dev/zero out of memory.
MAX_DOCUMENT_SIZE = 1024 * 1024


@dataclass(frozen=True)
class KeyPositions:
    """Where one top-level key, its value and (for arrays) each element start.

    `contents` holds, per element, where a string's characters start (after its
    opening quotes); for other elements it equals the element's position.
    """

    key: Position
    value: Position
    elements: tuple[Position, ...] = ()
    contents: tuple[Position, ...] = ()


@dataclass(frozen=True)
class Positions:
    """Positions of the top-level keys of one document, with fallbacks."""

    keys: Mapping[str, KeyPositions]

    def key(self, key: str) -> Position:
        """Where `key` is written; (1, 1) when it is not found."""
        found = self.keys.get(key)
        return found.key if found else (1, 1)

    def value(self, key: str) -> Position:
        """Where the value of `key` starts; the key's line, column 1, when not found."""
        found = self.keys.get(key)
        return found.value if found else (1, 1)

    def element(self, key: str, index: int) -> Position:
        """Where element `index` of the array `key` starts; the key's line, column 1, if unknown."""
        found = self.keys.get(key)
        if found is None:
            return (1, 1)
        if 0 <= index < len(found.elements):
            return found.elements[index]
        return (found.key[0], 1)

    def content(self, key: str, index: int, column: int = 1) -> Position:
        """Where character `column` (1-based) of string element `index` of `key` is."""
        found = self.keys.get(key)
        if found is None or not 0 <= index < len(found.contents):
            return self.element(key, index)
        line, col = found.contents[index]
        return (line, col + max(column, 1) - 1)


class InvalidToml(ValueError):
    """A document is not UTF-8 TOML; says where (1-based line and column) and what."""

    def __init__(self, message: str, line: int, col: int) -> None:
        self.message = message
        self.line = line
        self.col = col
        super().__init__(f"{line}:{col}: {message}")


def parse(data: bytes) -> tuple[dict[str, Any], Positions]:
    """Decode and parse a TOML document and find its positions; raise InvalidToml."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[: error.start]
        line_start = before.rfind(b"\n") + 1
        raise InvalidToml(
            f"byte 0x{data[error.start]:02x} is not UTF-8, expected UTF-8 text",
            before.count(b"\n") + 1,
            len(before[line_start:].decode("utf-8")) + 1,
        ) from None
    try:
        parsed = tomli.loads(text)
    except RecursionError as error:
        # tomli refuses deep nesting with a RecursionError of its own; so does Python's stack.
        raise InvalidToml(f"invalid TOML: {error}", 1, 1) from None
    except tomli.TOMLDecodeError as error:
        # lineno and colno exist since tomli 2.1; older ones only say it in the message.
        raise InvalidToml(
            f"invalid TOML: {error.msg[:1].lower()}{error.msg[1:]}",
            getattr(error, "lineno", None) or 1,
            getattr(error, "colno", None) or 1,
        ) from None
    return parsed, scan(text)


def read_document(path: os.PathLike[str] | str, limit: int = MAX_DOCUMENT_SIZE) -> bytes:
    """The bytes of a small regular file; OSError (with a strerror that says why) otherwise.

    A FIFO, device or directory is refused without blocking, and so is a file over `limit`.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
    with open(descriptor, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", os.fspath(path))
    return data


def scan(text: str) -> Positions:
    """Find the positions of the top-level keys of the TOML document `text`."""
    scanner = _Scanner(text)
    # On invalid TOML keep what was found before the problem.
    with contextlib.suppress(IndexError, ValueError):
        scanner.document()
    return Positions(keys=dict(scanner.found))


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.offset = 0
        self.found: dict[str, KeyPositions] = {}
        self.line_starts = [0]
        for index, char in enumerate(text):
            if char == "\n":
                self.line_starts.append(index + 1)

    def position(self, offset: int) -> Position:
        line = bisect.bisect_right(self.line_starts, offset)
        return (line, offset - self.line_starts[line - 1] + 1)

    def peek(self, length: int = 1) -> str:
        return self.text[self.offset : self.offset + length]

    def document(self) -> None:
        in_table = False
        while True:
            self.skip_blank(newlines=True)
            if self.offset >= len(self.text):
                return
            start = self.offset
            if self.peek() == "[":
                # A table header: later keys are not top-level. The header's first
                # name is a top-level key though, and reported at its bracket.
                self.offset += 2 if self.peek(2) == "[[" else 1
                self.skip_blank()
                name = self.key_part()
                position = self.position(start)
                self.found.setdefault(name, KeyPositions(key=position, value=position))
                in_table = True
                self.skip_line()
                continue
            name = self.key_part()
            self.skip_blank()
            while self.peek() == ".":
                # Dotted keys: the first part is the top-level key.
                self.offset += 1
                self.skip_blank()
                self.key_part()
                self.skip_blank()
            if self.peek() != "=":
                raise ValueError("expected '='")
            self.offset += 1
            self.skip_blank()
            value_start = self.offset
            elements, contents = self.value()
            if not in_table and name not in self.found:
                self.found[name] = KeyPositions(
                    key=self.position(start),
                    value=self.position(value_start),
                    elements=tuple(self.position(o) for o in elements),
                    contents=tuple(self.position(o) for o in contents),
                )
            self.skip_line()

    def skip_blank(self, newlines: bool = False) -> None:
        while self.offset < len(self.text):
            char = self.text[self.offset]
            if char in " \t" or (newlines and char in "\r\n"):
                self.offset += 1
            elif char == "#" and newlines:
                self.skip_comment()
            else:
                return

    def skip_comment(self) -> None:
        end = self.text.find("\n", self.offset)
        self.offset = len(self.text) if end < 0 else end

    def skip_line(self) -> None:
        # After a value only blanks and a comment may follow on its line.
        self.skip_blank()
        if self.peek() == "#":
            self.skip_comment()

    def key_part(self) -> str:
        char = self.peek()
        if char in "\"'":
            start = self.offset
            self.string()
            return _unquote_key(self.text[start : self.offset])
        start = self.offset
        while self.offset < len(self.text) and self.text[self.offset] in _BARE_KEY_CHARS:
            self.offset += 1
        if self.offset == start:
            raise ValueError("expected a key")
        return self.text[start : self.offset]

    def value(self) -> tuple[list[int], list[int]]:
        """Skip one value; for an array, return where each element and its content start."""
        char = self.peek()
        if char == "[":
            return self.array()
        if char == "{":
            self.inline_table()
        elif char in "\"'":
            self.string()
        else:
            self.scalar()
        return [], []

    def array(self) -> tuple[list[int], list[int]]:
        elements: list[int] = []
        contents: list[int] = []
        self.offset += 1
        while True:
            self.skip_blank(newlines=True)
            char = self.peek()
            if char == "]":
                self.offset += 1
                return elements, contents
            if char == ",":
                self.offset += 1
                continue
            if not char:
                raise ValueError("unterminated array")
            elements.append(self.offset)
            if char in "\"'":
                contents.append(self.string())
            else:
                contents.append(self.offset)
                self.value()

    def inline_table(self) -> None:
        self.offset += 1
        while True:
            self.skip_blank(newlines=True)
            char = self.peek()
            if char == "}":
                self.offset += 1
                return
            if not char:
                raise ValueError("unterminated inline table")
            if char in ",.=":
                self.offset += 1
            elif char in "\"'":
                self.string()
            elif char in "[{":
                self.value()
            else:
                self.scalar(stop="=.,}")

    def scalar(self, stop: str = "") -> None:
        start = self.offset
        while self.offset < len(self.text):
            char = self.text[self.offset]
            if char in _SCALAR_END or char in stop:
                break
            self.offset += 1
        if self.offset == start:
            raise ValueError("expected a value")

    def string(self) -> int:
        """Skip one string of any of the four kinds; return where its content starts."""
        quote = self.peek()
        if self.peek(3) == quote * 3:
            self.offset += 3
            # A newline right after the opening quotes is not part of the string.
            if self.peek() == "\n":
                self.offset += 1
            elif self.peek(2) == "\r\n":
                self.offset += 2
            content = self.offset
            while True:
                end = self.text.index(quote * 3, self.offset)
                if quote == '"' and _escaped(self.text, end):
                    self.offset = end + 1
                    continue
                # Up to two quotes may directly precede the closing delimiter.
                self.offset = end + 3
                while self.peek() == quote and self.offset - end < 5:
                    self.offset += 1
                return content
        self.offset += 1
        content = self.offset
        while True:
            end = self.text.index(quote, self.offset)
            if "\n" in self.text[self.offset : end]:
                raise ValueError("newline in a one-line string")
            if quote == '"' and _escaped(self.text, end):
                self.offset = end + 1
                continue
            self.offset = end + 1
            return content


def _escaped(text: str, offset: int) -> bool:
    """Whether the character at `offset` follows an odd number of backslashes."""
    count = 0
    while offset - count - 1 >= 0 and text[offset - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def _unquote_key(quoted: str) -> str:
    if quoted.startswith("'"):
        return quoted[1:-1]
    try:
        return str(tomli.loads(f"k = {quoted}")["k"])
    except tomli.TOMLDecodeError:
        return quoted[1:-1]
