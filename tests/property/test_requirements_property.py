"""Hypothesis: ipwhl.requirements agrees with packaging on near-valid PEP 508 text, mutated."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packaging import markers as packaging_markers
from packaging import requirements as packaging_requirements

from ipwhl.requirements import (
    InvalidMarker,
    InvalidRequirement,
    Marker,
    UndefinedComparison,
    UndefinedEnvironmentName,
    parse_marker,
    parse_requirement,
)

# The shared folder beside the repository: packaging's own test strings for PEP 508.
PACKAGING_STRINGS = (
    Path(__file__).resolve().parents[3] / "shared/data/pep508-packaging-strings.json"
)

LINUX = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.9",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_release": "6.5.0",
    "platform_system": "Linux",
    "platform_version": "#1 SMP",
    "python_full_version": "3.11.9",
    "platform_python_implementation": "CPython",
    "python_version": "3.11",
    "sys_platform": "linux",
}
WINDOWS = LINUX | {
    "os_name": "nt",
    "platform_machine": "AMD64",
    "platform_release": "10",
    "platform_system": "Windows",
    "python_full_version": "3.12.0rc1+",
    "python_version": "3.12",
    "sys_platform": "win32",
    "extras": frozenset({"socks", "Test_Suite"}),
    "dependency_groups": frozenset({"dev"}),
}
ENVIRONMENTS = [LINUX, LINUX | {"extra": "Test.Suite"}, WINDOWS, WINDOWS | {"extra": "socks"}]

# packaging decodes "\q" with ast.literal_eval too, which warns about the escape.
pytestmark = pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# What a mutation may insert. No non-ASCII letter here folds to an ASCII one under
# re.IGNORECASE (U+017F long s, U+212A Kelvin ...): that is the one deliberate difference, tested
# on its own in tests/test_requirements.py.
ALPHABET = string.ascii_letters + string.digits + string.punctuation + " \t\n\r\x0c\xa0\u2003éü"

# Spaces and tabs are the blanks of PEP 508; the others must be refused, except
# between a version operator and its version, where packaging takes any \s.
ODD_BLANKS = ["\n", "\r", "\x0b", "\x0c", "\xa0", "\u2003", "\x1c", "\x85"]
blank = st.sampled_from(["", "", "", "", " ", " ", " ", "  ", "\t", " \t "] * 6 + ODD_BLANKS[:2])
operator_blank = st.sampled_from(["", "", " ", "\t", *ODD_BLANKS])
name = st.one_of(
    st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,8}[A-Za-z0-9])?", fullmatch=True),
    st.sampled_from(
        ["requests", "zope.interface", "foo_", "foo-", "-foo", "foo.", "a..b", "in", "extra"]
    ),
)


@st.composite
def versions(draw: st.DrawFn) -> str:
    release = ".".join(
        str(part) for part in draw(st.lists(st.integers(0, 30), min_size=1, max_size=4))
    )
    text = draw(st.sampled_from(["", "", "v", "V"])) + draw(st.sampled_from(["", "", "1!"]))
    text += release
    if draw(st.integers(0, 5)) == 0:
        return text + ".*"
    for choices in (
        ["", "", "a1", "b", "rc2", ".alpha.3", "-beta4", "_pre", "preview1", "c", "RC1"],
        ["", "", ".post1", "-3", "post", "_rev2", ".r", "-post_4", "POST1"],
        ["", "", ".dev0", "dev", "-dev_2", "DEV"],
        ["", "", "", "+abc", "+1.2_x", "+UBUNTU-1", ".*"],
    ):
        text += draw(st.sampled_from(choices))
    return text


operator = st.sampled_from(
    ["==", "!=", "<=", ">=", "<", ">", "~=", "==="] * 3 + ["=", "<>", "~", "=>"]
)
clause = st.one_of(
    st.tuples(operator, operator_blank, versions()).map("".join),
    st.tuples(st.just("==="), operator_blank, st.text(ALPHABET, max_size=8)).map("".join),
)


@st.composite
def specifiers(draw: st.DrawFn) -> str:
    clauses = draw(st.lists(clause, max_size=3))
    text = "".join(
        (draw(blank) + "," + draw(blank) if index else "") + clause
        for index, clause in enumerate(clauses)
    )
    if clauses and draw(st.integers(0, 4)) == 0:
        text += draw(blank) + ","  # packaging takes one trailing comma
    if draw(st.booleans()):
        text = "(" + draw(blank) + text + draw(blank) + ")"
    return text


@st.composite
def extras(draw: st.DrawFn) -> str:
    names = draw(st.lists(name, max_size=3))
    return "[" + draw(blank) + (draw(blank) + "," + draw(blank)).join(names) + draw(blank) + "]"


variable = st.sampled_from(
    [
        "python_version",
        "python_full_version",
        "os_name",
        "os.name",
        "sys_platform",
        "sys.platform",
        "platform_release",
        "platform_system",
        "platform_version",
        "platform.machine",
        "platform_python_implementation",
        "python_implementation",
        "implementation_name",
        "implementation_version",
        "extra",
        "extra",
        "extras",
        "dependency_groups",
    ]
    * 2
    + [
        "python-version",
        "platform.release",
        "Python_version",
        "extra_x",
    ]
)
value = st.one_of(
    st.sampled_from(
        [
            "3.11",
            "3.8",
            "3.12.*",
            "3",
            "posix",
            "nt",
            "linux",
            "win32",
            "x86_64",
            "Test_Suite",
            "socks",
            "dev",
            "",
            "6",
            "10",
            "3.12.0rc1",
            "cpython",
            "CPython",
            "Linux",
            "a b",
        ]
    ),
    st.text(ALPHABET.replace("'", "").replace('"', ""), max_size=6),
)


@st.composite
def quoted(draw: st.DrawFn) -> str:
    quote = draw(st.sampled_from(["'", '"']))
    inner = draw(value)
    if draw(st.integers(0, 6)) == 0:
        inner += draw(st.sampled_from(["\\", "\\x22", "\\n", "\\'", "\\u00e9", "\\q", '"', "'"]))
    return quote + inner + quote


marker_operator = st.sampled_from(
    ["==", "!=", "<", "<=", ">", ">=", "~=", "===", "in", "not in", "not\tin"] * 3
    + ["notin", "=", "not", "<>"]
)
comparison = st.tuples(
    st.one_of(variable, quoted()), blank, marker_operator, blank, st.one_of(quoted(), variable)
).map("".join)
boolean_operator = st.sampled_from([" and ", " or ", "and", "or"] * 3 + [" && ", " AND "])
markers = st.recursive(
    comparison,
    lambda inner: st.one_of(
        st.tuples(inner, blank, boolean_operator, blank, inner).map("".join),
        st.tuples(st.just("("), blank, inner, blank, st.just(")")).map("".join),
    ),
    max_leaves=5,
)
urls = st.sampled_from(
    [
        "https://x.test/a-1.0.whl",
        "file:///tmp/x",
        "git+ssh://git@g.test/r.git@v1#egg=x",
        "http://x;y",
        ";",
        "a(b)",
        "https://x.test/a b",
    ]
)


@st.composite
def requirements(draw: st.DrawFn) -> str:
    text = draw(blank) + draw(name) + draw(blank)
    if draw(st.booleans()):
        text += draw(extras()) + draw(blank)
    if draw(st.integers(0, 4)) == 0:
        text += "@" + draw(blank) + draw(urls) + draw(st.sampled_from([" ", "", "\t"]))
    else:
        text += draw(specifiers()) + draw(blank)
    if draw(st.booleans()):
        text += ";" + draw(blank) + draw(markers)
    return text + draw(blank)


@st.composite
def mutated(draw: st.DrawFn, texts: st.SearchStrategy[str]) -> str:
    """A text from `texts`, then up to three edits: delete, insert, replace, repeat."""
    text = draw(texts)
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 4)))
        edit = draw(st.sampled_from(["delete", "insert", "replace", "repeat"]))
        if edit == "delete":
            text = text[:start] + text[end:]
        elif edit == "insert":
            text = text[:start] + draw(st.sampled_from(ALPHABET)) + text[start:]
        elif edit == "replace":
            text = text[:start] + draw(st.text(ALPHABET, max_size=2)) + text[end:]
        else:
            text = text[:end] + text[start:end] + text[end:]
    return text


def _outcome(evaluate, environment: dict, undefined_comparison, undefined_name) -> object:
    try:
        return evaluate(environment)
    except undefined_comparison:
        return "undefined comparison"
    except undefined_name:
        return "undefined name"


def _our_results(marker: Marker | None) -> tuple[object, ...] | None:
    if marker is None:
        return None
    return tuple(
        _outcome(marker.evaluate, env, UndefinedComparison, UndefinedEnvironmentName)
        for env in ENVIRONMENTS
    )


def _their_results(marker: packaging_markers.Marker | None) -> tuple[object, ...] | None:
    if marker is None:
        return None
    return tuple(
        _outcome(
            marker.evaluate,
            env,
            packaging_markers.UndefinedComparison,
            packaging_markers.UndefinedEnvironmentName,
        )
        for env in ENVIRONMENTS
    )


def ours(text: str) -> tuple[object, ...] | None:
    try:
        parsed = parse_requirement(text)
    except InvalidRequirement as error:
        assert 1 <= error.column <= len(text) + 1
        return None
    specifiers = frozenset(str(clause) for clause in parsed.specifier)
    return (parsed.name, parsed.extras, specifiers, parsed.url, _our_results(parsed.marker))


def theirs(text: str) -> tuple[object, ...] | None:
    try:
        parsed = packaging_requirements.Requirement(text)
    except packaging_requirements.InvalidRequirement:
        return None
    specifiers = frozenset(str(clause) for clause in parsed.specifier)
    extras = frozenset(parsed.extras)
    return (parsed.name, extras, specifiers, parsed.url, _their_results(parsed.marker))


@SETTINGS
@given(mutated(requirements()))
def test_requirements_agree_with_packaging(text: str) -> None:
    assert ours(text) == theirs(text)


@SETTINGS
@given(mutated(markers))
def test_markers_agree_with_packaging(text: str) -> None:
    try:
        mine = _our_results(parse_marker(text))
    except InvalidMarker:
        mine = None
    try:
        reference = _their_results(packaging_markers.Marker(text))
    except packaging_markers.InvalidMarker:
        reference = None
    assert mine == reference


@SETTINGS
@given(st.data())
def test_mutated_packaging_test_strings_agree(data: st.DataObject) -> None:
    if not PACKAGING_STRINGS.exists():
        pytest.skip(f"{PACKAGING_STRINGS} is missing: packaging's test strings are not here")
    texts = json.loads(PACKAGING_STRINGS.read_text(encoding="utf-8"))
    text = data.draw(mutated(st.sampled_from(texts)))
    assert ours(text) == theirs(text)


@SETTINGS
@given(requirements())
def test_normalised_text_means_the_same(text: str) -> None:
    try:
        requirement = parse_requirement(text)
    except InvalidRequirement:
        return
    normalised = str(requirement)
    assert parse_requirement(normalised) == requirement
    assert str(parse_requirement(normalised)) == normalised
    assert theirs(normalised) == theirs(text)
