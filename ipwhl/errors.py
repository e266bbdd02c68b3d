"""The exception hierarchy, source locations and check violations."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CheckFailed",
    "DeclarationError",
    "FetchError",
    "IntegrityError",
    "IpwhlError",
    "Location",
    "NotFound",
    "StoreCorrupt",
    "StoreError",
    "StoreIncomplete",
    "Violation",
]


@dataclass(frozen=True, order=True)
class Location:
    """A place in a file, 1-based line and column."""

    path: str
    line: int = 1
    col: int = 1

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


@dataclass(frozen=True, order=True)
class Violation:
    """One problem found in the input: where, which check (or 'syntax'), and what."""

    location: Location
    check: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.check}: {self.message}"


class IpwhlError(Exception):
    """Base of every error ipwhl reports to a user; `exit_code` is stable per class."""

    exit_code = 1


class DeclarationError(IpwhlError):
    """Declarations or a release file are malformed; carries every violation found."""

    exit_code = 3

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = sorted(violations)
        super().__init__("\n".join(str(v) for v in self.violations))


class CheckFailed(IpwhlError):
    """One or more of the four checks failed; carries every violation found."""

    exit_code = 4

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = sorted(set(violations))
        super().__init__("\n".join(str(v) for v in self.violations))


class FetchError(IpwhlError):
    """A source could not be fetched (network, missing file, HTTP error)."""

    exit_code = 5


class IntegrityError(IpwhlError):
    """Bytes do not hash to what they were declared or stored as."""

    exit_code = 6


class NotFound(IpwhlError):
    """A CID, path or record is not in the store."""

    exit_code = 7


class StoreError(IpwhlError):
    """The store cannot be used (permissions, disk full, corrupt layout)."""

    exit_code = 8


class StoreCorrupt(IntegrityError):
    """Files in the store do not match their keys (`ipwhl store verify` reports them)."""

    exit_code = 9


class StoreIncomplete(NotFound):
    """A rooted DAG has blocks or objects that are not in the store."""

    # 10-14 belong to signing and trust.
    exit_code = 15
