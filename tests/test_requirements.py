"""ipwhl.requirements against hand-picked cases, packaging's own test strings and real wheels."""

from __future__ import annotations

import email.parser
import json
import logging
import pickle
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from lark import Lark
from packaging import markers as packaging_markers
from packaging import requirements as packaging_requirements

from ipwhl.requirements import (
    InvalidMarker,
    InvalidRequirement,
    Marker,
    Requirement,
    UndefinedComparison,
    UndefinedEnvironmentName,
    _grammar_text,
    parse_marker,
    parse_requirement,
)

# The shared folder beside the repository: packaging's own test strings for PEP 508.
PACKAGING_STRINGS = (
    Path(__file__).resolve().parents[2] / "shared/data/pep508-packaging-strings.json"
)
WHEEL_FOLDERS = (Path("/opt/pypi/files"), Path("/opt/pypi-more"))

LINUX_311 = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.9",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_release": "6.5.0-44-generic",
    "platform_system": "Linux",
    "platform_version": "#44-Ubuntu SMP PREEMPT_DYNAMIC",
    "python_full_version": "3.11.9",
    "platform_python_implementation": "CPython",
    "python_version": "3.11",
    "sys_platform": "linux",
}
WINDOWS_312 = {
    "implementation_name": "cpython",
    "implementation_version": "3.12.4",
    "os_name": "nt",
    "platform_machine": "AMD64",
    "platform_release": "10",
    "platform_system": "Windows",
    "platform_version": "10.0.22631",
    "python_full_version": "3.12.4",
    "platform_python_implementation": "CPython",
    "python_version": "3.12",
    "sys_platform": "win32",
}
MACOS_313 = {
    "implementation_name": "cpython",
    "implementation_version": "3.13.0rc1",
    "os_name": "posix",
    "platform_machine": "arm64",
    "platform_release": "23.4.0",
    "platform_system": "Darwin",
    "platform_version": "Darwin Kernel Version 23.4.0",
    "python_full_version": "3.13.0rc1+",
    "platform_python_implementation": "CPython",
    "python_version": "3.13",
    "sys_platform": "darwin",
    "extras": frozenset({"socks", "Test_Suite"}),
    "dependency_groups": frozenset(),
}
# Each with no extra requested and with one (spelled unnormalised on purpose).
ENVIRONMENTS = [
    environment | extra
    for environment in (LINUX_311, WINDOWS_312, MACOS_313)
    for extra in ({}, {"extra": "Test_Suite"}, {"extra": "socks"})
]


# Agreement with packaging ------------------------------------------------------------


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
    except InvalidRequirement:
        return None
    specifiers = frozenset(str(clause) for clause in parsed.specifier)
    results = _our_results(parsed.marker)
    return (parsed.name, parsed.extras, specifiers, parsed.url, results)


def theirs(text: str) -> tuple[object, ...] | None:
    try:
        parsed = packaging_requirements.Requirement(text)
    except packaging_requirements.InvalidRequirement:
        return None
    specifiers = frozenset(str(clause) for clause in parsed.specifier)
    results = _their_results(parsed.marker)
    return (parsed.name, frozenset(parsed.extras), specifiers, parsed.url, results)


def our_marker(text: str) -> tuple[object, ...] | None:
    try:
        return _our_results(parse_marker(text))
    except InvalidMarker:
        return None


def their_marker(text: str) -> tuple[object, ...] | None:
    try:
        return _their_results(packaging_markers.Marker(text))
    except packaging_markers.InvalidMarker:
        return None


def packaging_strings() -> list[str]:
    if not PACKAGING_STRINGS.exists():
        pytest.skip(f"{PACKAGING_STRINGS} is missing: packaging's test strings are not here")
    return json.loads(PACKAGING_STRINGS.read_text(encoding="utf-8"))


def requires_dist_lines() -> Iterator[str]:
    """Every Requires-Dist of every wheel in WHEEL_FOLDERS, read from METADATA only."""
    for folder in WHEEL_FOLDERS:
        for wheel_path in sorted(folder.rglob("*.whl")):
            with zipfile.ZipFile(wheel_path) as wheel:
                metadata_name = next(
                    name
                    for name in wheel.namelist()
                    if name.count("/") == 1 and name.endswith(".dist-info/METADATA")
                )
                metadata = wheel.read(metadata_name).decode("utf-8")
            headers = email.parser.HeaderParser().parsestr(metadata, headersonly=True)
            yield from headers.get_all("Requires-Dist") or []


def test_agrees_with_packaging_on_its_own_test_strings() -> None:
    texts = packaging_strings()
    disagreements = [text for text in texts if ours(text) != theirs(text)]
    assert disagreements == []
    assert sum(ours(text) is not None for text in texts) > 250


def test_agrees_with_packaging_on_markers_in_its_test_strings() -> None:
    texts = packaging_strings()
    disagreements = [text for text in texts if our_marker(text) != their_marker(text)]
    assert disagreements == []
    assert sum(our_marker(text) is not None for text in texts) > 50


def test_agrees_with_packaging_on_every_requires_dist_of_real_wheels() -> None:
    if not any(folder.is_dir() for folder in WHEEL_FOLDERS):
        pytest.skip("no wheel corpus: neither /opt/pypi/files nor /opt/pypi-more exists")
    texts = sorted(set(requires_dist_lines()))
    if not texts:
        pytest.skip("the wheel corpus has no Requires-Dist lines")
    disagreements = [(text, ours(text), theirs(text)) for text in texts]
    assert [case for case in disagreements if case[1] != case[2]] == []


def test_a_compatible_release_takes_only_ascii_letters() -> None:
    # The one deliberate difference (see the module docstring): packaging lets
    # Unicode case folding into `~=` versions alone, so U+017F long s stands for 's'.
    assert theirs("foo~=1.0po\u017ft1") is not None
    assert ours("foo~=1.0po\u017ft1") is None
    assert ours("foo~=1.0POST1") == theirs("foo~=1.0POST1")


# Parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "extras", "specifier", "url", "marker"),
    [
        ("requests", "requests", set(), "", None, None),
        ("  A.b-C_  ", "A.b-C_", set(), "", None, None),
        ("foo[ Sec , Tests ]>=1.0,<2", "foo", {"Sec", "Tests"}, "<2,>=1.0", None, None),
        ("foo []", "foo", set(), "", None, None),
        ("foo (>=1.0, ==1.2.*)", "foo", set(), "==1.2.*,>=1.0", None, None),
        ("foo ( )", "foo", set(), "", None, None),
        # packaging takes one comma after the last clause, so we do too.
        ("foo >=1,", "foo", set(), ">=1", None, None),
        ("foo (>=1 , )", "foo", set(), ">=1", None, None),
        ("foo >= \t1.0", "foo", set(), ">=1.0", None, None),
        ("foo~=1.4.5a4.post2.dev3", "foo", set(), "~=1.4.5a4.post2.dev3", None, None),
        ("foo==1!2.0+local.7", "foo", set(), "==1!2.0+local.7", None, None),
        ("foo===1.0-x,>=2", "foo", set(), "===1.0-x,>=2", None, None),
        ("foo @ https://x.test/f.whl", "foo", set(), "", "https://x.test/f.whl", None),
        ("foo@file:///a;b", "foo", set(), "", "file:///a;b", None),
        (
            "foo[x] @ git+https://g.test/r.git@v1 ; os_name == 'nt'",
            "foo",
            {"x"},
            "",
            "git+https://g.test/r.git@v1",
            'os_name == "nt"',
        ),
        (
            'foo; python_version<"3.8"and(os.name=="nt"or extra=="Test_Suite")',
            "foo",
            set(),
            "",
            None,
            'python_version < "3.8" and (os_name == "nt" or extra == "test-suite")',
        ),
    ],
)
def test_parse_requirement(
    text: str,
    name: str,
    extras: set[str],
    specifier: str,
    url: str | None,
    marker: str | None,
) -> None:
    requirement = parse_requirement(text)
    assert requirement.name == name
    assert requirement.extras == extras
    assert str(requirement.specifier) == specifier
    assert requirement.url == url
    assert (str(requirement.marker) if requirement.marker else None) == marker


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("Foo [b, a] ( < 2 , >= 1 )", "Foo[a,b]<2,>=1"),
        ("foo@ http://x ;extra=='A'", 'foo @ http://x ; extra == "a"'),
        (
            "foo ; (os_name == 'a' and sys.platform=='b') or (os_name=='c')",
            'foo; os_name == "a" and sys_platform == "b" or os_name == "c"',
        ),
        (
            "foo ; os_name == 'a' and (sys_platform=='b' or os_name=='c')",
            'foo; os_name == "a" and (sys_platform == "b" or os_name == "c")',
        ),
        (
            "foo ; (os_name == 'a' and (sys_platform=='b' and (os_name=='c')))",
            'foo; os_name == "a" and sys_platform == "b" and os_name == "c"',
        ),
        ("foo ; os_name == 'say \"hi\"'", "foo; os_name == 'say \"hi\"'"),
        ('foo ; os_name == "\\x27\'\\x22\\\\"', "foo; os_name == \"''\\x22\\\\\""),
        ("foo ; '3.8' <= python_implementation", 'foo; "3.8" <= platform_python_implementation'),
    ],
)
def test_str_is_normalised_and_parses_back(text: str, normalised: str) -> None:
    requirement = parse_requirement(text)
    assert str(requirement) == normalised
    assert parse_requirement(normalised) == requirement
    assert theirs(normalised) == theirs(text)


def test_equality_normalises_names_and_extras_like_packaging() -> None:
    assert parse_requirement("Foo.Bar[A_B]>=1") == parse_requirement("foo-bar [a-b] >= 1")
    assert hash(parse_requirement("Foo.Bar[A_B]")) == hash(parse_requirement("foo_bar[a.b]"))
    assert parse_requirement("foo>=1") != parse_requirement("foo>=2")
    assert parse_requirement("foo; os_name=='a'") != parse_requirement("foo")
    assert parse_requirement("Foo.Bar").normalized_name == "foo-bar"
    assert isinstance(parse_requirement("x"), Requirement)


def test_parse_requirement_is_cached() -> None:
    assert parse_requirement("cached-thing>=1") is parse_requirement("cached-thing>=1")


@pytest.mark.parametrize(
    ("text", "column", "expected"),
    [
        ("", 1, "a project name such as 'requests'"),
        ("foo >= bar", 5, "a version specifier such as '>=1.0'"),
        ("requests >= ; os_name == 'nt'", 10, "a version specifier such as '>=1.0'"),
        ("foo [a b]", 8, "',' or ']'"),
        ("foo [a,]", 8, "an extra name such as 'socks'"),
        ("foo >=1,,", 9, "a version specifier such as '>=1.0', ';' and a marker or the end"),
        ("foo ,>=1", 5, "'[', '@' and a URL, '(', a version specifier"),
        ("foo (>=1", 9, "',' or ')'"),
        ("foo>=1.0.*", 9, "the end of the version"),
        ("foo>=1.0+local", 9, "the end of the version"),
        ("foo==1.0a1.*", 11, "the end of the version"),
        ("foo @ ", 7, "a URL"),
        ("foo @ http://x os_name", 16, "';' and a marker or the end of the text"),
        ("foo;", 5, "'(', a marker variable such as 'python_version' or a quoted string"),
        ("foo; os_name", 13, "a marker operator such as '==', '<' or 'in'"),
        ("foo; os_name notin 'x'", 14, "a marker operator such as '==', '<' or 'in'"),
        ("foo; os_name == 'x' &&", 21, "'and', 'or' or the end of the text"),
        ("foo; (os_name == 'x'", 21, "')', 'and' or 'or'"),
        ("foo; os_name == '\\'", 17, "a quoted string with valid escapes and no line break"),
        ("foo===1.0,bad", 11, "a version specifier such as '>=1.0'"),
        ("foo\n", 4, "'[', '@' and a URL, '(', a version specifier"),
    ],
)
def test_invalid_requirement_says_where_and_what(text: str, column: int, expected: str) -> None:
    with pytest.raises(InvalidRequirement) as caught:
        parse_requirement(text)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.column == column
    assert error.expected.startswith(expected)
    assert str(error).startswith(f"column {column}: expected {error.expected}, found ")
    assert theirs(text) is None
    copied = pickle.loads(pickle.dumps(error))
    assert (copied.column, copied.expected, str(copied)) == (column, error.expected, str(error))


def test_invalid_marker_is_an_invalid_requirement() -> None:
    with pytest.raises(InvalidMarker) as caught:
        parse_marker("os_name == 'a' or")
    assert caught.value.column == 18
    assert isinstance(caught.value, InvalidRequirement)


# Markers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marker", "linux", "windows"),
    [
        ('os_name == "posix"', True, False),
        ('sys_platform == "win32" or os_name == "posix" and python_version >= "3.12"', False, True),
        (
            '(sys_platform == "win32" or os_name == "posix") and python_version >= "3.12"',
            False,
            True,
        ),
        ('python_version > "3.9"', True, True),
        ('python_version < "3.12"', True, False),
        ('"3.12" <= python_version', False, True),
        ('python_full_version == "3.11.*"', True, False),
        ('python_version === "3.11"', True, False),
        ('python_version ~= "3.11"', True, True),
        # "6.5.0-44-generic" is no PEP 440 version, so no version comparison holds.
        ('platform_release >= "6"', False, True),
        ('platform_machine == "x86_64" and os_name != "nt"', True, False),
        ('"86" in platform_machine', True, False),
        ('"Ubuntu" not in platform_version', False, True),
        ('platform_system < "Z"', False, False),
        ('platform_system <= "Linux"', True, False),
        ('extra == "socks"', False, False),
    ],
)
def test_marker_evaluation(marker: str, linux: bool, windows: bool) -> None:
    parsed = parse_marker(marker)
    assert parsed.evaluate(LINUX_311) is linux
    assert parsed.evaluate(WINDOWS_312) is windows
    assert their_marker(marker) == our_marker(marker)


def test_extra_compares_normalised() -> None:
    marker = parse_marker("extra == 'Test.Suite'")
    assert marker.evaluate(LINUX_311 | {"extra": "test_suite"})
    assert marker.evaluate(LINUX_311 | {"extra": "TEST-SUITE"})
    assert not marker.evaluate(LINUX_311 | {"extra": "docs"})
    assert not marker.evaluate(LINUX_311 | {"extra": ""})
    assert not marker.evaluate(LINUX_311)


def test_set_valued_variables() -> None:
    assert parse_marker("'Test-Suite' in extras").evaluate(MACOS_313)
    assert parse_marker("'docs' not in extras").evaluate(MACOS_313)
    with pytest.raises(UndefinedComparison):
        parse_marker("extras == 'socks'").evaluate(MACOS_313)


def test_missing_variable_and_undefined_comparison() -> None:
    with pytest.raises(UndefinedEnvironmentName, match=r"^marker variable 'os_name' is not in"):
        parse_marker("os_name == 'nt'").evaluate({"python_version": "3.11"})
    with pytest.raises(KeyError):
        parse_marker("os_name == 'nt'").evaluate({})
    with pytest.raises(UndefinedComparison):
        parse_marker("os_name ~= 'nt'").evaluate(LINUX_311)
    # Every operand is evaluated, as packaging does, even when the answer is known.
    with pytest.raises(UndefinedComparison):
        parse_marker("os_name == 'posix' or os_name === 'nt'").evaluate(LINUX_311)


def test_marker_equality_and_text() -> None:
    assert repr(parse_marker("os.name=='a'")) == """<Marker('os_name == "a"')>"""
    with pytest.raises(TypeError, match="parse_marker"):
        Marker("os_name == 'a'")  # type: ignore[arg-type]
    assert parse_marker("os.name=='a'") == parse_marker('os_name == "a"')
    assert parse_marker("((os_name == 'x'))") == parse_marker("os_name=='x'")
    assert str(parse_marker("extra == 'A_B'")) == 'extra == "a-b"'
    assert parse_marker("os_name=='a'") != parse_marker("os_name=='b'")


# Speed -------------------------------------------------------------------------------


def test_grammar_is_lalr1_without_conflicts(caplog: pytest.LogCaptureFixture) -> None:
    # lark settles a conflict silently (shift wins), which once lost `foo >=1,`.
    with caplog.at_level(logging.DEBUG, logger="lark"):
        Lark(_grammar_text(), parser="lalr", start=["requirement", "marker"], debug=True)
    assert [r.message for r in caplog.records if "conflict" in r.message.lower()] == []


def test_grammar_ships_beside_the_package() -> None:
    shipped = Path(__file__).parents[1] / "grammar" / "pep508.lark"
    assert _grammar_text() == shipped.read_text(encoding="utf-8")


def test_parsing_100k_requirements_takes_a_few_seconds() -> None:
    # As in real metadata: 60k distinct strings, whose markers recur (the wheels under
    # /opt/pypi hold 7.5k distinct Requires-Dist with only 1.4k distinct markers).
    markers = [
        *(f'python_version < "3.{minor}"' for minor in range(14)),
        *(f'extra == "feature{index}"' for index in range(200)),
        *(f'sys_platform == "win32" and extra == "x{index}"' for index in range(86)),
    ]
    specifiers = [">=1.{}", "<{}", "~=2.{}.0", "==3.{}.*", ""]
    texts = [
        f"project-{index % 20_000}[extra{index % 3}] {specifiers[index % 5].format(index % 50)}"
        + (f" ; {markers[index % len(markers)]}" if index % 4 else "")
        for index in range(100_000)
    ]
    parse_requirement.cache_clear()
    started = time.process_time()
    for text in texts:
        parse_requirement(text)
    elapsed = time.process_time() - started
    parse_requirement.cache_clear()
    # About 2 s of CPU where this was written; the bound leaves room for slower machines.
    assert elapsed < 6.0
