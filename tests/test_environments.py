"""Tests for ipwhl.environments: supported lines -> marker environments and accepted tags."""

from __future__ import annotations

import platform
import sys

import pytest
from packaging.markers import Marker
from packaging.tags import Tag, parse_tag, sys_tags
from packaging.version import Version

from ipwhl.environments import (
    Environment,
    InvalidEnvironment,
    parse_environment,
    parse_supported,
)


def tags_of(text: str) -> frozenset[Tag]:
    return frozenset(parse_tag(text))


def rank(environment: Environment, tag: str) -> int:
    return environment.tags.index(Tag(*tag.split("-")))


# What packaging.markers.default_environment() reports on each kind of machine, written by
# hand; platform_release/platform_version are unknowable from a line and left empty.
LINUX_X86_64_311 = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.0",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": "3.11.0",
    "python_version": "3.11",
    "sys_platform": "linux",
}
MARKERS = {
    "cp311 manylinux_2_17_x86_64": LINUX_X86_64_311,
    "cp312 musllinux_1_2_aarch64": {
        "implementation_name": "cpython",
        "implementation_version": "3.12.0",
        "os_name": "posix",
        "platform_machine": "aarch64",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": "3.12.0",
        "python_version": "3.12",
        "sys_platform": "linux",
    },
    "cp312 win_amd64": {
        "implementation_name": "cpython",
        "implementation_version": "3.12.0",
        "os_name": "nt",
        "platform_machine": "AMD64",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Windows",
        "platform_version": "",
        "python_full_version": "3.12.0",
        "python_version": "3.12",
        "sys_platform": "win32",
    },
    "cp310 win32": {
        "implementation_name": "cpython",
        "implementation_version": "3.10.0",
        "os_name": "nt",
        "platform_machine": "x86",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Windows",
        "platform_version": "",
        "python_full_version": "3.10.0",
        "python_version": "3.10",
        "sys_platform": "win32",
    },
    "cp313 win_arm64": {
        "implementation_name": "cpython",
        "implementation_version": "3.13.0",
        "os_name": "nt",
        "platform_machine": "ARM64",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Windows",
        "platform_version": "",
        "python_full_version": "3.13.0",
        "python_version": "3.13",
        "sys_platform": "win32",
    },
    "cp313 macosx_11_0_arm64": {
        "implementation_name": "cpython",
        "implementation_version": "3.13.0",
        "os_name": "posix",
        "platform_machine": "arm64",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Darwin",
        "platform_version": "",
        "python_full_version": "3.13.0",
        "python_version": "3.13",
        "sys_platform": "darwin",
    },
    "cp39 macosx_10_9_x86_64": {
        "implementation_name": "cpython",
        "implementation_version": "3.9.0",
        "os_name": "posix",
        "platform_machine": "x86_64",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Darwin",
        "platform_version": "",
        "python_full_version": "3.9.0",
        "python_version": "3.9",
        "sys_platform": "darwin",
    },
    # A universal2 interpreter is modelled running on Apple silicon.
    "cp311 macosx_10_9_universal2": {
        "implementation_name": "cpython",
        "implementation_version": "3.11.0",
        "os_name": "posix",
        "platform_machine": "arm64",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Darwin",
        "platform_version": "",
        "python_full_version": "3.11.0",
        "python_version": "3.11",
        "sys_platform": "darwin",
    },
}


@pytest.mark.parametrize(("line", "expected"), MARKERS.items())
def test_marker_environment(line: str, expected: dict[str, str]) -> None:
    environment = parse_environment(line)
    assert dict(environment.markers) == expected
    assert "extra" not in environment.markers


@pytest.mark.parametrize("line", MARKERS)
def test_markers_have_the_keys_packaging_evaluates(line: str) -> None:
    from packaging.markers import default_environment

    environment = parse_environment(line)
    assert set(environment.markers) == set(default_environment())
    # packaging evaluates against our mapping without falling back to the host's values.
    for name, value in environment.markers.items():
        if value:
            assert Marker(f'{name} == "{value}"').evaluate(dict(environment.markers))


def test_markers_are_read_only() -> None:
    environment = parse_environment("cp311 manylinux_2_17_x86_64")
    with pytest.raises(TypeError):
        environment.markers["os_name"] = "nt"  # type: ignore[index]


def test_fields() -> None:
    environment = parse_environment("  cp311\t manylinux_2_17_x86_64 ")
    assert environment.line == "cp311 manylinux_2_17_x86_64"
    assert str(environment) == "cp311 manylinux_2_17_x86_64"
    assert environment.interpreter == "cp311"
    assert environment.platform == "manylinux_2_17_x86_64"
    assert environment.python_version == Version("3.11")
    assert environment.tag_set == frozenset(environment.tags)
    assert len(environment.tags) == len(environment.tag_set)


def test_equal_lines_give_equal_hashable_environments() -> None:
    first = parse_environment("cp311 manylinux_2_17_x86_64")
    assert parse_environment("cp311   manylinux_2_17_x86_64") == first
    assert parse_environment("cp311 manylinux_2_17_x86_64") is first  # cached
    assert len({first, parse_environment("cp311 manylinux_2_17_x86_64")}) == 1
    assert first != parse_environment("cp312 manylinux_2_17_x86_64")


MANYLINUX_311 = "cp311 manylinux_2_17_x86_64"


@pytest.mark.parametrize(
    "wheel_tag",
    [
        "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64",
        "cp311-cp311-manylinux2014_x86_64",
        "cp311-cp311-manylinux_2_12_x86_64.manylinux2010_x86_64",
        "cp311-cp311-manylinux_2_5_x86_64.manylinux1_x86_64",
        "cp311-cp311-manylinux1_x86_64",
        "cp38-abi3-manylinux1_x86_64",
        "cp32-abi3-manylinux_2_17_x86_64",
        "cp311-none-manylinux_2_17_x86_64",
        "py3-none-manylinux1_x86_64",
        "py3-none-any",
        "py2.py3-none-any",
        "py311-none-any",
        "py30-none-any",
        "cp311-none-any",
        # One matching tag in a compressed set is enough.
        "cp311-cp311-manylinux_2_28_x86_64.manylinux_2_17_x86_64",
    ],
)
def test_manylinux_accepts(wheel_tag: str) -> None:
    assert parse_environment(MANYLINUX_311).accepts(tags_of(wheel_tag))


@pytest.mark.parametrize(
    "wheel_tag",
    [
        "cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64",
        "cp310-cp310-manylinux_2_17_x86_64",
        "cp312-abi3-manylinux_2_17_x86_64",
        "cp311-cp311-manylinux_2_28_x86_64",
        "cp311-cp311-manylinux_2_18_x86_64",
        "cp311-cp311-musllinux_1_1_x86_64",
        "cp311-cp311-linux_x86_64",
        "cp311-cp311-manylinux_2_17_i686",
        "cp311-cp311-manylinux_2_17_aarch64",
        "cp311-cp311-win_amd64",
        "cp311-cp311-macosx_10_9_x86_64",
        "cp311-cp311d-manylinux_2_17_x86_64",
        "pp310-pypy310_pp73-manylinux_2_17_x86_64",
        "py2-none-any",
        "py312-none-any",
        "cp312-none-any",
    ],
)
def test_manylinux_rejects(wheel_tag: str) -> None:
    assert not parse_environment(MANYLINUX_311).accepts(tags_of(wheel_tag))


def test_order_is_most_preferred_first() -> None:
    environment = parse_environment(MANYLINUX_311)
    assert environment.tags[0] == Tag("cp311", "cp311", "manylinux_2_17_x86_64")
    ordered = [
        "cp311-cp311-manylinux_2_17_x86_64",
        "cp311-cp311-manylinux2014_x86_64",
        "cp311-cp311-manylinux_2_16_x86_64",
        "cp311-cp311-manylinux1_x86_64",
        "cp311-abi3-manylinux_2_17_x86_64",
        "cp311-none-manylinux_2_17_x86_64",
        "cp310-abi3-manylinux_2_17_x86_64",
        "cp38-abi3-manylinux1_x86_64",
        "py311-none-manylinux_2_17_x86_64",
        "py3-none-manylinux1_x86_64",
        "cp311-none-any",
        "py311-none-any",
        "py3-none-any",
        "py30-none-any",
    ]
    ranks = [rank(environment, tag) for tag in ordered]
    assert ranks == sorted(ranks)
    assert environment.tags[-1] == Tag("py30", "none", "any")


@pytest.mark.skipif(
    sys.version_info[:2] != (3, 11)
    or sys.implementation.name != "cpython"
    or platform.machine() != "x86_64"
    or platform.libc_ver()[0] != "glibc"
    or tuple(map(int, platform.libc_ver()[1].split(".")[:2])) < (2, 17),
    reason="needs CPython 3.11 on x86_64 glibc >= 2.17 to compare with its own tags",
)
def test_manylinux_matches_what_this_interpreter_accepts() -> None:
    # On a real cp311 glibc machine, packaging's own tag list restricted to what a
    # manylinux_2_17 baseline allows must be our list, in the same order.
    environment = parse_environment(MANYLINUX_311)
    allowed = {tag.platform for tag in environment.tags}
    host = [
        tag
        for tag in sys_tags()
        if tag.platform in allowed and tag.abi in {"cp311", "abi3", "none"}
    ]
    assert tuple(host) == environment.tags


def test_legacy_manylinux_lines_equal_their_glibc_version() -> None:
    assert (
        parse_environment("cp311 manylinux2014_x86_64").tags
        == parse_environment("cp311 manylinux_2_17_x86_64").tags
    )
    assert (
        parse_environment("cp39 manylinux2010_i686").tag_set
        == parse_environment("cp39 manylinux_2_12_i686").tag_set
    )
    assert parse_environment("cp39 manylinux1_x86_64").accepts(
        tags_of("cp39-cp39-manylinux1_x86_64")
    )


def test_manylinux_aarch64() -> None:
    environment = parse_environment("cp312 manylinux_2_28_aarch64")
    assert environment.accepts(tags_of("cp312-cp312-manylinux_2_28_aarch64"))
    assert environment.accepts(tags_of("cp312-cp312-manylinux2014_aarch64"))
    assert environment.accepts(tags_of("cp312-cp312-manylinux_2_17_aarch64"))
    assert not environment.accepts(tags_of("cp312-cp312-manylinux_2_16_aarch64"))
    assert not environment.accepts(tags_of("cp312-cp312-manylinux2010_aarch64"))
    assert not environment.accepts(tags_of("cp312-cp312-manylinux1_aarch64"))
    assert not environment.accepts(tags_of("cp312-cp312-manylinux_2_28_x86_64"))
    assert environment.markers["platform_machine"] == "aarch64"


def test_musllinux() -> None:
    environment = parse_environment("cp312 musllinux_1_2_aarch64")
    for accepted in (
        "cp312-cp312-musllinux_1_2_aarch64",
        "cp312-cp312-musllinux_1_1_aarch64",
        "cp39-abi3-musllinux_1_0_aarch64",
        "py3-none-any",
    ):
        assert environment.accepts(tags_of(accepted)), accepted
    for rejected in (
        "cp312-cp312-musllinux_1_3_aarch64",
        "cp312-cp312-manylinux_2_17_aarch64",
        "cp312-cp312-musllinux_1_2_x86_64",
    ):
        assert not environment.accepts(tags_of(rejected)), rejected
    assert rank(environment, "cp312-cp312-musllinux_1_2_aarch64") < rank(
        environment, "cp312-cp312-musllinux_1_0_aarch64"
    )


def test_macos_arm64() -> None:
    environment = parse_environment("cp313 macosx_11_0_arm64")
    for accepted in (
        "cp313-cp313-macosx_11_0_arm64",
        "cp313-cp313-macosx_11_0_universal2",
        "cp313-cp313-macosx_10_9_universal2",
        "cp313-cp313-macosx_10_13_universal2",
        "cp38-abi3-macosx_10_9_universal2",
        "cp313-abi3-macosx_11_0_arm64",
        "py3-none-macosx_11_0_arm64",
        "py3-none-any",
    ):
        assert environment.accepts(tags_of(accepted)), accepted
    for rejected in (
        "cp313-cp313-macosx_12_0_arm64",
        "cp313-cp313-macosx_10_9_x86_64",
        "cp313-cp313-macosx_11_0_x86_64",
        "cp313-cp313-macosx_10_9_intel",
        "cp313-cp313-manylinux_2_17_aarch64",
    ):
        assert not environment.accepts(tags_of(rejected)), rejected
    assert rank(environment, "cp313-cp313-macosx_11_0_arm64") < rank(
        environment, "cp313-cp313-macosx_11_0_universal2"
    )


def test_macos_newer_arm64_accepts_older_majors() -> None:
    environment = parse_environment("cp312 macosx_14_0_arm64")
    assert environment.accepts(tags_of("cp312-cp312-macosx_14_0_arm64"))
    assert environment.accepts(tags_of("cp312-cp312-macosx_11_0_arm64"))
    assert not environment.accepts(tags_of("cp312-cp312-macosx_15_0_arm64"))


def test_macos_minor_releases_from_11_on() -> None:
    environment = parse_environment("cp312 macosx_14_2_arm64")
    assert environment.tags[0] == Tag("cp312", "cp312", "macosx_14_2_arm64")
    assert environment.accepts(tags_of("cp312-cp312-macosx_14_1_arm64"))
    assert environment.accepts(tags_of("cp312-cp312-macosx_14_0_arm64"))
    assert not environment.accepts(tags_of("cp312-cp312-macosx_14_3_arm64"))


def test_macos_x86_64() -> None:
    environment = parse_environment("cp39 macosx_10_9_x86_64")
    for accepted in (
        "cp39-cp39-macosx_10_9_x86_64",
        "cp39-cp39-macosx_10_6_intel",
        "cp39-cp39-macosx_10_9_universal2",
        "cp39-cp39-macosx_10_4_fat64",
        "cp39-cp39-macosx_10_5_universal",
        "cp36-abi3-macosx_10_9_x86_64",
    ):
        assert environment.accepts(tags_of(accepted)), accepted
    for rejected in (
        "cp39-cp39-macosx_10_10_x86_64",
        "cp39-cp39-macosx_11_0_arm64",
        "cp39-cp39-macosx_10_9_arm64",
    ):
        assert not environment.accepts(tags_of(rejected)), rejected


def test_macos_universal2_accepts_universal2_wheels_only() -> None:
    environment = parse_environment("cp311 macosx_10_9_universal2")
    assert environment.accepts(tags_of("cp311-cp311-macosx_10_9_universal2"))
    assert environment.accepts(tags_of("cp311-cp311-macosx_10_6_universal2"))
    assert not environment.accepts(tags_of("cp311-cp311-macosx_10_9_x86_64"))
    assert not environment.accepts(tags_of("cp311-cp311-macosx_11_0_arm64"))
    assert not environment.accepts(tags_of("cp311-cp311-macosx_10_12_universal2"))


@pytest.mark.parametrize(
    ("line", "accepted", "rejected"),
    [
        ("cp312 win_amd64", "cp312-cp312-win_amd64", "cp312-cp312-win32"),
        ("cp310 win32", "cp310-cp310-win32", "cp310-cp310-win_amd64"),
        ("cp313 win_arm64", "cp313-cp313-win_arm64", "cp313-cp313-win_amd64"),
    ],
)
def test_windows(line: str, accepted: str, rejected: str) -> None:
    environment = parse_environment(line)
    assert environment.accepts(tags_of(accepted))
    assert environment.accepts(tags_of("py3-none-any"))
    assert not environment.accepts(tags_of(rejected))
    assert {tag.platform for tag in environment.tags} == {line.split()[1], "any"}


def test_old_cpython_abis_carry_the_pymalloc_flag() -> None:
    environment = parse_environment("cp37 manylinux2014_aarch64")
    assert environment.tags[0] == Tag("cp37", "cp37m", "manylinux_2_17_aarch64")
    assert not environment.accepts(tags_of("cp37-cp37-manylinux2014_aarch64"))


def test_markers_evaluate_as_expected() -> None:
    linux = dict(parse_environment(MANYLINUX_311).markers)
    windows = dict(parse_environment("cp312 win_amd64").markers)
    marker = Marker('sys_platform == "win32" and python_version >= "3.12"')
    assert marker.evaluate(windows)
    assert not marker.evaluate(linux)
    assert Marker('platform_machine == "x86_64" and os_name == "posix"').evaluate(linux)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("", "found 0 token(s)"),
        ("cp311", "found 1 token(s)"),
        ("cp311 manylinux_2_17_x86_64 extra", "found 3 token(s)"),
        ("pp310 manylinux_2_17_x86_64", "not a CPython interpreter tag"),
        ("py3 win_amd64", "not a CPython interpreter tag"),
        ("cp313t win_amd64", "ABI flags"),
        ("cp27 win_amd64", "CPython 3.3 and later"),
        ("cp307 win_amd64", "leading zero"),
        ("cp311 linux_x86_64", "names no C library baseline"),
        ("cp311 manylinux_2_17_sparc", "unknown Linux architecture 'sparc'"),
        ("cp311 manylinux_2_12_aarch64", "starts at glibc 2.17"),
        ("cp311 manylinux_3_1_x86_64", "not a glibc 2 baseline"),
        ("cp311 manylinux2010_aarch64", "x86_64 and i686 only"),
        ("cp311 manylinux2014_riscv64", "not defined for riscv64"),
        ("cp311 musllinux_2_0_x86_64", "not a musl 1 baseline"),
        ("cp311 macosx_10_9_arm64", "arm64 macOS starts at 11.0"),
        ("cp311 macosx_11_0_ppc", "unknown macOS architecture 'ppc'"),
        ("cp311 win_x86", "unknown platform 'win_x86'"),
        ("cp311 any", "unknown platform 'any'"),
    ],
)
def test_invalid_lines(line: str, fragment: str) -> None:
    with pytest.raises(InvalidEnvironment) as caught:
        parse_environment(line)
    message = str(caught.value)
    assert fragment in message
    assert "e.g. 'cp311 manylinux_2_17_x86_64'" in message
    assert isinstance(caught.value, ValueError)
    assert caught.value.exit_code == 3


def test_parse_supported() -> None:
    environments = parse_supported(
        [
            "# targets",
            "cp311 manylinux_2_17_x86_64",
            "",
            "cp312 win_amd64  # the Windows one",
            "cp311  manylinux_2_17_x86_64",
            "cp313 macosx_11_0_arm64\n",
        ]
    )
    assert [environment.line for environment in environments] == [
        "cp311 manylinux_2_17_x86_64",
        "cp312 win_amd64",
        "cp313 macosx_11_0_arm64",
    ]


def test_parse_supported_reports_every_bad_line() -> None:
    with pytest.raises(InvalidEnvironment) as caught:
        parse_supported(["cp311 win_amd64", "pp310 win_amd64", "cp312 solaris", "cp312 win32"])
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("line 2: ") and "'pp310 win_amd64'" in lines[0]
    assert lines[1].startswith("line 3: ") and "'solaris'" in lines[1]


def test_parse_supported_empty() -> None:
    assert parse_supported([]) == ()
