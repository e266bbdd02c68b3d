"""PEP 508 dependency specifiers: parsing with grammar/pep508.lark, and marker evaluation.

The grammar owns the syntax and this module the meaning of markers; versions and
specifiers are pypa/packaging's (`SpecifierSet`, `Specifier`). Every string is
accepted or rejected as `packaging.requirements.Requirement` does, and markers
evaluate as `packaging.markers.Marker.evaluate` does, which tests/test_requirements.py
checks string by string. The one deliberate difference: a `~=` version must spell
its pre/post/dev words in ASCII (packaging also lets Unicode case folding through
there, e.g. U+017F long s for 's'), as PEP 440 and packaging's other operators have it.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.resources
import re
import warnings
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Literal as TypingLiteral

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from packaging.specifiers import InvalidSpecifier, Specifier, SpecifierSet
from packaging.utils import canonicalize_name

__all__ = [
    "InvalidMarker",
    "InvalidRequirement",
    "Marker",
    "Requirement",
    "UndefinedComparison",
    "UndefinedEnvironmentName",
    "parse_marker",
    "parse_requirement",
]


class InvalidRequirement(ValueError):
    """A requirement string does not follow PEP 508; says where and what was expected."""

    def __init__(self, text: str, column: int, expected: str, found: str) -> None:
        self.text = text
        self.column = column
        self.expected = expected
        self.found = found
        super().__init__(f"column {column}: expected {expected}, found {found}")

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuilt from its parts, so that it survives pickling (e.g. across processes).
        return (type(self), (self.text, self.column, self.expected, self.found))


class InvalidMarker(InvalidRequirement):
    """A marker expression does not follow PEP 508."""


class UndefinedComparison(ValueError):
    """A marker compares values that the operator is not defined for."""


class UndefinedEnvironmentName(KeyError):
    """A marker names a variable that the environment does not hold."""

    def __str__(self) -> str:
        # KeyError shows its argument's repr; this one is a sentence.
        return str(self.args[0])


# Markers -----------------------------------------------------------------------------

# Variables whose values are sets; a literal is tested for membership in them.
_SET_VALUED = frozenset({"extras", "dependency_groups"})
# Variables compared as PEP 440 versions whenever `<op><value>` is a valid specifier.
_VERSION_VALUED = frozenset(
    {"implementation_version", "platform_release", "python_full_version", "python_version"}
)
_NAMES_BY_SPELLING = {
    "os.name": "os_name",
    "sys.platform": "sys_platform",
    "platform.version": "platform_version",
    "platform.machine": "platform_machine",
    "platform.python_implementation": "platform_python_implementation",
    "python_implementation": "platform_python_implementation",
}


@dataclass(frozen=True)
class _Variable:
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class _Literal:
    value: str

    def __str__(self) -> str:
        return _quote(self.value)


_Operand = _Variable | _Literal


@dataclass(frozen=True)
class _Comparison:
    left: _Operand
    op: str
    right: _Operand

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"


@dataclass(frozen=True)
class _BoolOp:
    op: TypingLiteral["and", "or"]
    operands: tuple[_Comparison | _BoolOp, ...]

    def __str__(self) -> str:
        # Only an `or` inside an `and` needs parentheses: `and` binds tighter.
        return f" {self.op} ".join(
            f"({operand})" if isinstance(operand, _BoolOp) and operand.op == "or" else str(operand)
            for operand in self.operands
        )


@dataclass(frozen=True)
class Marker:
    """A parsed environment marker; equal markers have equal normalised text."""

    _expression: _Comparison | _BoolOp

    def __post_init__(self) -> None:
        if not isinstance(self._expression, _Comparison | _BoolOp):
            raise TypeError("Marker holds a parsed expression: use parse_marker(text)")

    def __str__(self) -> str:
        return str(self._expression)

    def __repr__(self) -> str:
        return f"<Marker({str(self)!r})>"

    def evaluate(self, environment: Mapping[str, str | AbstractSet[str]]) -> bool:
        """Whether the marker holds in `environment` (PEP 508 variable names to values).

        `extra` defaults to "" (no extra requested); any other variable the marker
        uses must be present, else UndefinedEnvironmentName. Comparisons that have no
        meaning (e.g. `===` between non-versions) raise UndefinedComparison.
        """
        env = dict(environment)
        extra = env.get("extra")
        env["extra"] = canonicalize_name(extra) if isinstance(extra, str) and extra else ""
        full_version = env.get("python_full_version")
        if isinstance(full_version, str) and full_version.endswith("+"):
            # A Python built from an untagged checkout reports "3.x.y+", not PEP 440.
            env["python_full_version"] = full_version + "local"
        return _evaluate(self._expression, env)


def _evaluate(expression: _Comparison | _BoolOp, env: dict[str, str | AbstractSet[str]]) -> bool:
    if isinstance(expression, _Comparison):
        return _compare(expression, env)
    # Every operand is evaluated, no short cut, so that an undefined comparison or a
    # missing variable is reported wherever it stands, as packaging reports it.
    results = [_evaluate(operand, env) for operand in expression.operands]
    return all(results) if expression.op == "and" else any(results)


def _compare(comparison: _Comparison, env: dict[str, str | AbstractSet[str]]) -> bool:
    left, op, right = comparison.left, comparison.op, comparison.right
    # As in packaging, the variable is the left operand if that is one, and otherwise
    # the right operand names it; the other operand is taken as text. So a literal
    # on both sides looks the right one up, and `os_name == extra` compares os_name
    # with the word "extra". Odd, but it keeps both tools agreeing on every marker.
    if isinstance(left, _Variable):
        key = left.name
        lhs = _lookup(env, key)
        rhs: str | AbstractSet[str] = _operand_text(right)
    else:
        key = _operand_text(right)
        lhs = left.value
        rhs = _lookup(env, key)
    if not isinstance(lhs, str):
        raise UndefinedComparison(
            f"set-valued marker variable {key!r} can only be tested with "
            f"'\"name\" in {key}', not with {op!r} on its left"
        )
    if key in _SET_VALUED:
        # PEP 685 / PEP 735: extra and group names compare normalised.
        lhs = canonicalize_name(lhs)
        rhs = (
            canonicalize_name(rhs)
            if isinstance(rhs, str)
            else frozenset(canonicalize_name(item) for item in rhs)
        )
    if key in _VERSION_VALUED and isinstance(rhs, str):
        specifier = _version_specifier(op + rhs)
        if specifier is not None:
            return specifier.contains(lhs, prereleases=True)
    if op == "in":
        return lhs in rhs
    if op == "not in":
        return lhs not in rhs
    if op in ("==", "<=", ">="):
        return lhs == rhs
    if op == "!=":
        return lhs != rhs
    if op in ("<", ">"):
        # Strings have no order in PEP 508; packaging answers False.
        return False
    raise UndefinedComparison(f"{op!r} is undefined between {lhs!r} and {rhs!r}")


def _operand_text(operand: _Operand) -> str:
    return operand.name if isinstance(operand, _Variable) else operand.value


def _lookup(env: dict[str, str | AbstractSet[str]], key: str) -> str | AbstractSet[str]:
    try:
        return env[key]
    except KeyError:
        raise UndefinedEnvironmentName(
            f"marker variable {key!r} is not in the environment"
        ) from None


@functools.lru_cache(maxsize=4096)
def _version_specifier(text: str) -> Specifier | None:
    try:
        return Specifier(text)
    except InvalidSpecifier:
        return None


def _quote(value: str) -> str:
    """`value` as a marker string literal that parses back to `value`."""
    if _PLAIN_STRING.fullmatch(value):
        if '"' not in value:
            return f'"{value}"'
        if "'" not in value:
            return f"'{value}'"
    # Both quotes, or what only an escape can say: a Python literal, as we decode it.
    escaped = _SURROGATE.sub(lambda match: f"\\u{ord(match[0]):04x}", value.translate(_ESCAPES))
    return f'"{escaped}"'


_ESCAPES = {
    ord("\\"): "\\\\",
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\0"): "\\x00",
    ord('"'): "\\x22",
}
_SURROGATE = re.compile(r"[\ud800-\udfff]")


# The text between quotes is the value unless it holds what a Python string literal
# treats specially (escapes, line breaks, NUL, lone surrogates): packaging decodes
# quoted strings with ast.literal_eval, and so do we for those.
_PLAIN_STRING = re.compile(r"[^\\\n\r\x00\ud800-\udfff]*")


# Requirements ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Requirement:
    """A parsed PEP 508 requirement; compares by normalised name and extras, like packaging."""

    name: str
    extras: frozenset[str]
    specifier: SpecifierSet
    url: str | None
    marker: Marker | None

    @property
    def normalized_name(self) -> str:
        """The PEP 503 normalised project name."""
        return canonicalize_name(self.name)

    def _key(self) -> tuple[object, ...]:
        return (
            self.normalized_name,
            frozenset(canonicalize_name(extra) for extra in self.extras),
            self.specifier,
            self.url,
            self.marker,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Requirement):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        parts = [self.name]
        if self.extras:
            parts.append("[" + ",".join(sorted(self.extras)) + "]")
        parts.append(str(self.specifier))
        if self.url:
            parts.append(f" @ {self.url}")
            if self.marker:
                parts.append(" ")
        if self.marker:
            parts.append(f"; {self.marker}")
        return "".join(parts)


@functools.lru_cache(maxsize=1 << 16)
def parse_requirement(text: str) -> Requirement:
    """Parse a PEP 508 requirement, or raise InvalidRequirement saying where it is wrong.

    Results are cached and shared: treat them, specifier included, as immutable.
    """
    # Markers recur far more than whole requirements (`extra == "test"`), so parse the
    # marker on its own, cached. Unless a URL comes first, the first ';' is the one
    # before the marker: names, extras and versions cannot hold one. So the text is a
    # requirement exactly when the part before is one without a marker and the part
    # after is a marker. Invalid text takes the whole parse, which says where it failed.
    head, semicolon, marker_text = text.partition(";")
    if semicolon and "@" not in head:
        marker = _marker_or_none(marker_text)
        requirement = _requirement_or_none(head) if marker is not None else None
        if requirement is not None:
            return dataclasses.replace(requirement, marker=marker)
    return _parse(text, "requirement", InvalidRequirement)


def parse_marker(text: str) -> Marker:
    """Parse a PEP 508 marker expression, or raise InvalidMarker saying where it is wrong."""
    marker = _marker_or_none(text)
    if marker is None:
        _parse(text, "marker", InvalidMarker)
        raise AssertionError("the marker parsed the second time")  # pragma: no cover
    return marker


@functools.lru_cache(maxsize=1 << 14)
def _marker_or_none(text: str) -> Marker | None:
    try:
        return Marker(_parser().parse(text, start="marker"))
    except (UnexpectedInput, _SemanticError):
        return None


def _requirement_or_none(text: str) -> Requirement | None:
    try:
        return _parser().parse(text, start="requirement")
    except (UnexpectedInput, _SemanticError):
        return None


class _SemanticError(Exception):
    """A token lexed and parsed but means nothing: at `position`, `expected` was."""

    def __init__(self, position: int, expected: str) -> None:
        self.position = position
        self.expected = expected


class _Builder(Transformer):
    """Turns the LALR parser's reductions straight into our objects, no tree kept."""

    def requirement(self, children: list) -> Requirement:
        name = str(children[0])
        extras: frozenset[str] = frozenset()
        specifier = _NO_SPECIFIER
        url = None
        marker = None
        for child in children[1:]:
            if isinstance(child, frozenset):
                extras = child
            elif isinstance(child, SpecifierSet):
                specifier = child
            elif isinstance(child, Token):
                url = str(child)
            else:
                marker = Marker(child)
        return Requirement(name, extras, specifier, url, marker)

    def extras(self, children: list[Token]) -> frozenset[str]:
        return frozenset(str(child) for child in children)

    def specifier(self, children: list[Token]) -> SpecifierSet:
        return _specifier_set(children)

    def or_test(self, children: list) -> _BoolOp:
        return _bool_op("or", children)

    def and_test(self, children: list) -> _BoolOp:
        return _bool_op("and", children)

    def comparison(self, children: list) -> _Comparison:
        left, op, right = children
        return _comparison(left, str(op), right)

    def negated_comparison(self, children: list) -> _Comparison:
        left, _not, _in, right = children
        return _comparison(left, "not in", right)

    def variable(self, children: list[Token]) -> _Variable:
        spelling = str(children[0])
        return _Variable(_NAMES_BY_SPELLING.get(spelling, spelling))

    def literal(self, children: list[Token]) -> _Literal:
        return _Literal(_decode_string(children[0]))


_NO_SPECIFIER = SpecifierSet()


def _specifier_set(tokens: list[Token]) -> SpecifierSet:
    try:
        return SpecifierSet(",".join(tokens))
    except InvalidSpecifier:
        pass
    # Only `===` clauses reach here: their text runs on over commas, and SpecifierSet
    # splits it there. Find the clause that failed, for the column.
    for token in tokens:
        offset = 0
        for clause in token.split(","):
            if clause.strip():
                try:
                    Specifier(clause)
                except InvalidSpecifier:
                    start = token.start_pos + offset + len(clause) - len(clause.lstrip())
                    raise _SemanticError(start, _EXPECTED["VERSION"]) from None
            offset += len(clause) + 1
    raise AssertionError("SpecifierSet rejected what each Specifier accepts")


def _bool_op(op: TypingLiteral["and", "or"], children: list) -> _BoolOp:
    operands: list[_Comparison | _BoolOp] = []
    for child in children:
        # `a and (b and c)` is `a and b and c`: flatten, so equal markers compare equal.
        if isinstance(child, _BoolOp) and child.op == op:
            operands.extend(child.operands)
        else:
            operands.append(child)
    return _BoolOp(op, tuple(operands))


def _comparison(left: _Operand, op: str, right: _Operand) -> _Comparison:
    # PEP 685: an extra named in a marker compares normalised; packaging normalises
    # the literal when parsing, so `extra == "Foo_Bar"` prints as "foo-bar".
    if isinstance(left, _Variable) and left.name == "extra" and isinstance(right, _Literal):
        right = _Literal(canonicalize_name(right.value))
    elif (
        isinstance(right, _Variable)
        and isinstance(left, _Literal)
        and (right.name == "extra" or right.name in _SET_VALUED)
    ):
        left = _Literal(canonicalize_name(left.value))
    return _Comparison(left, op, right)


def _decode_string(token: Token) -> str:
    inner = token[1:-1]
    if _PLAIN_STRING.fullmatch(inner):
        return inner
    try:
        with warnings.catch_warnings():
            # Unknown escapes such as "\d" warn, and mean a backslash and the letter.
            warnings.simplefilter("ignore")
            return str(ast.literal_eval(token))
    except (SyntaxError, ValueError):
        raise _SemanticError(
            token.start_pos, "a quoted string with valid escapes and no line break"
        ) from None


# Parsing -----------------------------------------------------------------------------

_EXPECTED = {
    "NAME": "a project name such as 'requests'",
    "_LSQB": "'['",
    "EXTRA": "an extra name such as 'socks'",
    "_COMMA": "','",
    "_RSQB": "']'",
    "_AT": "'@' and a URL",
    "URL": "a URL",
    "_LPAR": "'('",
    "VERSION": "a version specifier such as '>=1.0'",
    "_RPAR": "')'",
    "_SEMICOLON": "';' and a marker",
    "VARIABLE": "a marker variable such as 'python_version'",
    "QUOTED": "a quoted string such as '\"3.11\"'",
    "OPERATOR": "a marker operator such as '==', '<' or 'in'",
    "IN": "'in'",
    "NOT": "'not in'",
    "_AND": "'and'",
    "_OR": "'or'",
    "$END": "the end of the text",
}
# Words for what went wrong right after a version, where a suffix was not allowed.
_SUFFIX_EXPECTED = (
    "the end of the version: '.*' and '+local' go only after '==' or '!=', "
    "and '.*' only after a plain release such as '1.0'"
)


def _parse(text: str, start: str, error: type[InvalidRequirement]) -> object:
    try:
        return _parser().parse(text, start=start)
    except UnexpectedInput as failure:
        position = _position(text, failure)
        expected = _describe(text, position, _expected_terminals(text, start) or set())
    except _SemanticError as failure:
        position, expected = failure.position, failure.expected
    found = repr(text[position : position + 10]) if position < len(text) else "the end"
    raise error(text, position + 1, expected, found) from None


def _position(text: str, failure: UnexpectedInput) -> int:
    if isinstance(failure, UnexpectedToken):
        # The end of the text comes as "$END", which borrows the last token's place.
        return len(text) if failure.token.type == "$END" else failure.token.start_pos
    if isinstance(failure, UnexpectedCharacters):
        return failure.pos_in_stream
    return len(text)  # pragma: no cover - LALR raises only the two above


def _expected_terminals(text: str, start: str) -> set[str] | None:
    """The terminals that could have come where parsing `text` failed.

    LALR reduces on a lookahead before it finds the lookahead wrong, and its states
    merge contexts, so the failure's own expected set can be too small or too big.
    Parse again step by step, keep the state before each token, and ask that state.
    """
    interactive = _parser().parse_interactive(text, start=start)
    before, last = interactive.copy(deepcopy_values=False), None
    try:
        for token in interactive.iter_parse():
            before, last = interactive.copy(deepcopy_values=False), token
        before, last = interactive.copy(deepcopy_values=False), None
        interactive.feed_eof()
    except UnexpectedToken as failure:
        # Feeding a token failed (ask the state before it), or the lexer found one
        # the state cannot take (ask the state as it is).
        fed = failure.token is last or (last is None and failure.token.type == "$END")
        return (before if fed else interactive).accepts()
    except UnexpectedCharacters:
        return interactive.accepts()
    except _SemanticError:  # pragma: no cover - the first parse met the syntax error first
        return None
    return None  # pragma: no cover - the first parse failed, so this one does


def _describe(text: str, position: int, names: set[str]) -> str:
    if "VERSION" in names and text.startswith(("<", ">", "=", "!", "~"), position):
        return _EXPECTED["VERSION"]
    if "_COMMA" in names and text.startswith((".*", "+"), position):
        return _SUFFIX_EXPECTED
    if "OPERATOR" in names:
        names = names - {"IN", "NOT"}
    words = list(dict.fromkeys(_EXPECTED[name] for name in _EXPECTED if name in names))
    if not words:  # pragma: no cover - every terminal has words
        return "valid PEP 508 text"
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _grammar_text() -> str:
    try:
        grammar = importlib.resources.files("ipwhl.grammar").joinpath("pep508.lark")
        return grammar.read_text(encoding="utf-8")
    except ModuleNotFoundError:
        # Running from a source tree, where grammar/ is not yet the ipwhl.grammar package.
        return (Path(__file__).parent.parent / "grammar" / "pep508.lark").read_text(
            encoding="utf-8"
        )


@functools.cache
def _parser() -> Lark:
    return Lark(
        _grammar_text(),
        parser="lalr",
        lexer="contextual",
        start=["requirement", "marker"],
        transformer=_Builder(),
        maybe_placeholders=False,
    )
