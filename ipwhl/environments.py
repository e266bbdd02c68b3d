"""A supported line ("<interpreter> <platform>") -> marker environment and accepted wheel tags."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from packaging.tags import Tag, compatible_tags, cpython_tags, mac_platforms
from packaging.version import Version

from .errors import IpwhlError

__all__ = [
    "Environment",
    "InvalidEnvironment",
    "parse_environment",
    "parse_supported",
]

_EXAMPLES = (
    "expected '<interpreter> <platform>', e.g. 'cp311 manylinux_2_17_x86_64', "
    "'cp312 musllinux_1_2_aarch64', 'cp312 win_amd64' or 'cp313 macosx_11_0_arm64'"
)

_INTERPRETER = re.compile(r"cp(?P<major>\d)(?P<minor>\d+)(?P<flags>[a-z]*)")
_MANYLINUX = re.compile(r"manylinux_(?P<major>\d+)_(?P<minor>\d+)_(?P<arch>\w+)")
_LEGACY_MANYLINUX = re.compile(r"(?P<alias>manylinux(?:1|2010|2014))_(?P<arch>\w+)")
_MUSLLINUX = re.compile(r"musllinux_(?P<major>\d+)_(?P<minor>\d+)_(?P<arch>\w+)")
_MACOSX = re.compile(r"macosx_(?P<major>\d+)_(?P<minor>\d+)_(?P<arch>\w+)")

_LINUX_ARCHS = frozenset(
    {"x86_64", "i686", "aarch64", "armv7l", "ppc64", "ppc64le", "s390x", "riscv64", "loongarch64"}
)
# PEP 599: manylinux2014 names glibc 2.17 on these architectures only.
_MANYLINUX2014_ARCHS = frozenset(
    {"x86_64", "i686", "aarch64", "armv7l", "ppc64", "ppc64le", "s390x"}
)
# PEP 513 and PEP 571 were defined for x86 only, which is why glibc below 2.17 is x86 only too.
_X86_ARCHS = frozenset({"x86_64", "i686"})
_LEGACY_GLIBC = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_GLIBC_ALIASES = {glibc: alias for alias, glibc in _LEGACY_GLIBC.items()}

_MAC_ARCHS = frozenset({"x86_64", "arm64", "universal2"})
# A universal2 interpreter reports the machine it runs on; arm64 is chosen because Apple
# silicon is where python.org's universal2 builds mostly run now.
_MAC_MACHINE = {"x86_64": "x86_64", "arm64": "arm64", "universal2": "arm64"}

# platform.machine() of a native interpreter; win32 is modelled as 32-bit Windows.
_WINDOWS_MACHINE = {"win32": "x86", "win_amd64": "AMD64", "win_arm64": "ARM64"}

_OS_MARKERS = {
    "linux": {"os_name": "posix", "sys_platform": "linux", "platform_system": "Linux"},
    "darwin": {"os_name": "posix", "sys_platform": "darwin", "platform_system": "Darwin"},
    "windows": {"os_name": "nt", "sys_platform": "win32", "platform_system": "Windows"},
}


class InvalidEnvironment(IpwhlError, ValueError):
    """A supported line does not name a CPython interpreter and a platform ipwhl can model."""

    exit_code = 3


@dataclass(frozen=True)
class Environment:
    """One target environment: its marker environment and every wheel tag it accepts."""

    line: str
    interpreter: str
    platform: str
    python_version: Version
    markers: Mapping[str, str] = field(compare=False, repr=False)
    tags: tuple[Tag, ...] = field(compare=False, repr=False)
    tag_set: frozenset[Tag] = field(compare=False, repr=False)

    def accepts(self, wheel_tags: Iterable[Tag]) -> bool:
        """Whether a wheel carrying `wheel_tags` is installable here (any one tag suffices)."""
        return not self.tag_set.isdisjoint(wheel_tags)

    def __str__(self) -> str:
        return self.line


def _invalid(line: str, problem: str) -> InvalidEnvironment:
    return InvalidEnvironment(f"invalid supported environment {line!r}: {problem}; {_EXAMPLES}")


def _python_version(line: str, interpreter: str) -> tuple[int, int]:
    match = _INTERPRETER.fullmatch(interpreter)
    if match is None:
        raise _invalid(
            line,
            f"{interpreter!r} is not a CPython interpreter tag (cpXY, e.g. cp311); "
            "releases model CPython targets only",
        )
    if match["flags"]:
        raise _invalid(line, f"{interpreter!r}: ABI flags ({match['flags']!r}) are not supported")
    major, minor = int(match["major"]), int(match["minor"])
    if f"{major}{minor}" != f"{match['major']}{match['minor']}":
        raise _invalid(line, f"{interpreter!r} has a leading zero in its minor version")
    if major != 3 or minor < 3:
        raise _invalid(line, f"{interpreter!r}: only CPython 3.3 and later are supported")
    return major, minor


def _manylinux_platforms(line: str, glibc: tuple[int, int], arch: str) -> list[str]:
    """manylinux_2_Y_arch down to the oldest glibc its architecture has, with legacy aliases."""
    if glibc[0] != 2:
        raise _invalid(line, f"glibc {glibc[0]}.{glibc[1]} is not a glibc 2 baseline")
    oldest = 5 if arch in _X86_ARCHS else 17
    if glibc[1] < oldest:
        raise _invalid(line, f"manylinux on {arch} starts at glibc 2.{oldest}")
    platforms = []
    for minor in range(glibc[1], oldest - 1, -1):
        platforms.append(f"manylinux_2_{minor}_{arch}")
        alias = _GLIBC_ALIASES.get((2, minor))
        if alias is not None and (arch in _X86_ARCHS or alias == "manylinux2014"):
            platforms.append(f"{alias}_{arch}")
    return platforms


def _linux_arch(line: str, arch: str) -> str:
    if arch not in _LINUX_ARCHS:
        raise _invalid(
            line, f"unknown Linux architecture {arch!r} (one of {', '.join(sorted(_LINUX_ARCHS))})"
        )
    return arch


def _mac_platform_list(line: str, version: tuple[int, int], arch: str) -> list[str]:
    if arch not in _MAC_ARCHS:
        raise _invalid(
            line, f"unknown macOS architecture {arch!r} (one of {', '.join(sorted(_MAC_ARCHS))})"
        )
    if version < (10, 0):
        raise _invalid(line, f"macOS {version[0]}.{version[1]} does not exist")
    if arch == "arm64" and version < (11, 0):
        raise _invalid(line, "arm64 macOS starts at 11.0 (macosx_11_0_arm64)")
    platforms = list(mac_platforms(version, arch))
    if version >= (11, 0) and version[1] > 0:
        # packaging names only X_0 from macOS 11 on, but a wheel built for X_2 runs on X_3.
        formats = [p.split("_", 3)[3] for p in platforms if p.startswith(f"macosx_{version[0]}_0_")]
        minors = [
            f"macosx_{version[0]}_{minor}_{fmt}"
            for minor in range(version[1], 0, -1)
            for fmt in formats
        ]
        platforms = minors + platforms
    return platforms


def _platform(line: str, platform: str) -> tuple[list[str], str, str]:
    """The accepted platform tags, the OS family and platform_machine of `platform`."""
    if platform in _WINDOWS_MACHINE:
        return [platform], "windows", _WINDOWS_MACHINE[platform]
    if match := _MANYLINUX.fullmatch(platform):
        arch = _linux_arch(line, match["arch"])
        glibc = (int(match["major"]), int(match["minor"]))
        return _manylinux_platforms(line, glibc, arch), "linux", arch
    if match := _LEGACY_MANYLINUX.fullmatch(platform):
        arch = _linux_arch(line, match["arch"])
        alias = match["alias"]
        if alias != "manylinux2014" and arch not in _X86_ARCHS:
            raise _invalid(line, f"{alias} is defined for x86_64 and i686 only")
        if alias == "manylinux2014" and arch not in _MANYLINUX2014_ARCHS:
            raise _invalid(line, f"manylinux2014 is not defined for {arch}")
        return _manylinux_platforms(line, _LEGACY_GLIBC[alias], arch), "linux", arch
    if match := _MUSLLINUX.fullmatch(platform):
        arch = _linux_arch(line, match["arch"])
        if match["major"] != "1":
            raise _invalid(line, f"musl {match['major']}.{match['minor']} is not a musl 1 baseline")
        platforms = [f"musllinux_1_{minor}_{arch}" for minor in range(int(match["minor"]), -1, -1)]
        return platforms, "linux", arch
    if match := _MACOSX.fullmatch(platform):
        version = (int(match["major"]), int(match["minor"]))
        arch = match["arch"]
        return _mac_platform_list(line, version, arch), "darwin", _MAC_MACHINE.get(arch, arch)
    if platform.startswith("linux_"):
        raise _invalid(
            line,
            f"{platform!r} names no C library baseline; use manylinux_2_Y_<arch> "
            "or musllinux_1_Y_<arch>",
        )
    raise _invalid(
        line,
        f"unknown platform {platform!r} (manylinux_2_Y_<arch>, musllinux_1_Y_<arch>, "
        "macosx_X_Y_<arch>, win32, win_amd64 or win_arm64)",
    )


@functools.lru_cache(maxsize=256)
def parse_environment(line: str) -> Environment:
    """Parse one "<interpreter> <platform>" line; raise InvalidEnvironment if it is not one."""
    tokens = line.split()
    normalised = " ".join(tokens)
    if len(tokens) != 2:
        raise _invalid(normalised, f"found {len(tokens)} token(s), need exactly two")
    interpreter, platform = tokens
    major, minor = _python_version(normalised, interpreter)
    platforms, family, machine = _platform(normalised, platform)

    # Before 3.8 every CPython ABI carried the pymalloc flag "m".
    abi = interpreter if minor >= 8 else f"{interpreter}m"
    ordered = dict.fromkeys(cpython_tags((major, minor), [abi], platforms))
    ordered.update(dict.fromkeys(compatible_tags((major, minor), interpreter, platforms)))
    tags = tuple(ordered)

    # python_full_version assumes the first release of the minor series: the line names no patch.
    full_version = f"{major}.{minor}.0"
    markers = {
        "implementation_name": "cpython",
        "implementation_version": full_version,
        "os_name": _OS_MARKERS[family]["os_name"],
        "platform_machine": machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": _OS_MARKERS[family]["platform_system"],
        "platform_version": "",
        "python_full_version": full_version,
        "python_version": f"{major}.{minor}",
        "sys_platform": _OS_MARKERS[family]["sys_platform"],
    }
    return Environment(
        line=normalised,
        interpreter=interpreter,
        platform=platform,
        python_version=Version(f"{major}.{minor}"),
        markers=MappingProxyType(markers),
        tags=tags,
        tag_set=frozenset(tags),
    )


def parse_supported(lines: Iterable[str]) -> tuple[Environment, ...]:
    """Parse supported lines in order, skipping blanks, '#' comments and repeats.

    Every bad line is reported in one InvalidEnvironment, one line of message each.
    """
    environments: dict[Environment, None] = {}
    problems = []
    for number, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            environments.setdefault(parse_environment(text))
        except InvalidEnvironment as exc:
            problems.append(f"line {number}: {exc}")
    if problems:
        raise InvalidEnvironment("\n".join(problems))
    return tuple(environments)
