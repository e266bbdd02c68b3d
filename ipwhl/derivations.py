"""Derivations: a builder, its version and its inputs, keyed by the blake3 of all three."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

import blake3
import msgpack

from .store import Store

__all__ = ["Derivation", "Realiser", "canonical_bytes"]

T = TypeVar("T")


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        # Only str keys: str() of other keys would make {1: x} and {"1": x} one derivation.
        if not all(isinstance(k, str) for k in value):
            raise TypeError("derivation input maps must have str keys")
        return {k: _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if isinstance(value, str | bytes | int | float | bool) or value is None:
        return value
    raise TypeError(f"derivation input of type {type(value).__name__} has no canonical form")


def canonical_bytes(value: Any) -> bytes:
    """msgpack of `value` with map keys sorted, so equal inputs give equal bytes."""
    return msgpack.packb(_canonical(value), use_bin_type=True)


@dataclass(frozen=True)
class Derivation:
    """One step of a release: `builder` at `version` applied to `inputs` (plain data)."""

    builder: str
    version: int
    inputs: Mapping[str, Any]
    label: str = field(default="", compare=False)

    @cached_property
    def key(self) -> str:
        encoded = canonical_bytes([self.builder, self.version, self.inputs])
        return blake3.blake3(encoded).hexdigest()


@dataclass
class Realiser:
    """Realises derivations against a store: a step whose key is already realised is not run."""

    store: Store
    ran: Counter[str] = field(default_factory=Counter)
    reused: Counter[str] = field(default_factory=Counter)
    used: set[str] = field(default_factory=set)  # every key realised or reused: a build's closure
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def is_realised(self, derivation: Derivation) -> bool:
        return self.store.has_record(derivation.key)

    def realise(
        self,
        derivation: Derivation,
        build: Callable[[], T],
        valid: Callable[[T], bool] | None = None,
    ) -> T:
        """The stored output of `derivation`, running `build` and storing it if there is none.

        `valid` says whether a stored output is still whole (its objects or blocks are present);
        when it is not, the step is run again.
        """
        output = self.store.get_record(derivation.key)
        if output is not None and (valid is None or valid(output)):
            with self._lock:
                self.reused[derivation.builder] += 1
                self.used.add(derivation.key)
            return output
        output = build()
        self.store.put_record(derivation.key, output)
        with self._lock:
            self.ran[derivation.builder] += 1
            self.used.add(derivation.key)
        return output
