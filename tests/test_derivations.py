"""Tests for ipwhl.derivations: stable, canonical keys and realising against a real store."""

from __future__ import annotations

import blake3
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipwhl.derivations import Derivation, Realiser, canonical_bytes
from ipwhl.store import Store

FETCH_INPUTS = {
    "url": "https://example.org/a-1.0-py3-none-any.whl",
    "content-id": "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4",
    "extras": ["x", "y"],
    "size": None,
    "pure": True,
}
# Keys are names in every store ever written: this value must never change by accident.
FETCH_KEY = "70c2a6b8f9d38d34bc6d1758a750c9bca48a8eb9f5d8f8422ecb5cb8dba3d8e4"


# -- keys --------------------------------------------------------------------------------------


def test_golden_key() -> None:
    assert Derivation("fetch", 1, FETCH_INPUTS).key == FETCH_KEY
    # The key is blake3 over msgpack of [builder, version, inputs with sorted keys].
    by_hand = msgpack.packb(["fetch", 1, dict(sorted(FETCH_INPUTS.items()))], use_bin_type=True)
    assert blake3.blake3(by_hand).hexdigest() == FETCH_KEY


def test_canonical_bytes_golden() -> None:
    value = {"b": [1, (2,)], "a": {"y": b"\x00", "x": 1.5}}
    assert canonical_bytes(value).hex() == "82a16182a178cb3ff8000000000000a179c40100a16292019102"


def test_key_ignores_dict_order_and_label() -> None:
    forward = Derivation("check", 2, {"a": 1, "b": {"c": [1, 2], "d": "x"}}, label="one")
    backward = Derivation("check", 2, {"b": {"d": "x", "c": [1, 2]}, "a": 1}, label="two")
    assert forward.key == backward.key
    assert forward == backward
    assert Derivation("check", 2, {"l": (1, 2)}).key == Derivation("check", 2, {"l": [1, 2]}).key


@pytest.mark.parametrize(
    "changed",
    [
        Derivation("fetch", 2, FETCH_INPUTS),
        Derivation("inspect", 1, FETCH_INPUTS),
        Derivation("fetch", 1, {**FETCH_INPUTS, "url": FETCH_INPUTS["url"] + "#"}),
        Derivation("fetch", 1, {**FETCH_INPUTS, "extras": ["y", "x"]}),  # lists keep order
        Derivation("fetch", 1, {**FETCH_INPUTS, "pure": 1}),  # a bool is not an int
        Derivation("fetch", 1, {**FETCH_INPUTS, "size": 0}),
        Derivation("fetch", 1, {**FETCH_INPUTS, "size": 0.0}),
        Derivation("fetch", 1, {**FETCH_INPUTS, "url": FETCH_INPUTS["url"].encode()}),
        Derivation("fetch", 1, {**FETCH_INPUTS, "more": None}),
        Derivation("fetch", 1, {k: v for k, v in FETCH_INPUTS.items() if k != "size"}),
    ],
    ids=["version", "builder", "input", "order", "bool", "none-zero", "int-float", "str-bytes",
         "added", "removed"],
)
def test_any_change_changes_the_key(changed: Derivation) -> None:
    assert changed.key != FETCH_KEY


def test_values_without_a_canonical_form_are_refused() -> None:
    with pytest.raises(TypeError, match="set"):
        canonical_bytes({"tags": {"py3-none-any"}})
    with pytest.raises(TypeError, match="str keys"):
        canonical_bytes({1: "one"})  # else it would collide with {"1": "one"}


keys = st.text(max_size=8)
leaves = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)  # msgpack's integer range
    | st.text(max_size=8) | st.binary(max_size=8)
)
values = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(keys, values, max_size=6), st.randoms())
def test_key_is_canonical_for_any_order(inputs: dict, rng) -> None:
    items = list(inputs.items())
    rng.shuffle(items)
    assert Derivation("b", 1, dict(items)).key == Derivation("b", 1, inputs).key


# -- realising ---------------------------------------------------------------------------------


def test_realise_runs_once_then_reuses(store: Store) -> None:
    derivation = Derivation("page", 1, {"text": "hello"})
    calls: list[int] = []

    def build() -> dict:
        calls.append(1)
        return {"cid": "bafy", "tsize": 5}

    realiser = Realiser(store)
    assert not realiser.is_realised(derivation)
    assert realiser.realise(derivation, build) == {"cid": "bafy", "tsize": 5}
    assert realiser.is_realised(derivation)
    assert realiser.realise(derivation, build) == {"cid": "bafy", "tsize": 5}
    assert len(calls) == 1
    assert (realiser.ran["page"], realiser.reused["page"]) == (1, 1)
    # The output is in the store, so another realiser (another process) reuses it too.
    other = Realiser(Store(store.root).open())
    assert other.realise(derivation, build) == {"cid": "bafy", "tsize": 5}
    assert len(calls) == 1
    assert other.reused["page"] == 1


def test_an_empty_output_is_realised(store: Store) -> None:
    calls: list[int] = []
    derivation = Derivation("check", 1, {"project": "a"})
    realiser = Realiser(store)
    for _ in range(2):
        assert realiser.realise(derivation, lambda: calls.append(1) or []) == []
    assert len(calls) == 1


def test_invalid_output_is_built_again(store: Store) -> None:
    derivation = Derivation("fetch", 1, {"content-id": "bafk"})
    outputs = iter([{"n": 1}, {"n": 2}])
    realiser = Realiser(store)
    assert realiser.realise(derivation, lambda: next(outputs)) == {"n": 1}
    again = realiser.realise(derivation, lambda: next(outputs), valid=lambda r: r["n"] == 2)
    assert again == {"n": 2}
    assert store.get_record(derivation.key) == {"n": 2}
    assert realiser.ran["fetch"] == 2
    kept = realiser.realise(derivation, lambda: pytest.fail("ran"), valid=lambda r: r["n"] == 2)
    assert kept == {"n": 2}


def test_a_failing_build_stores_nothing(store: Store) -> None:
    derivation = Derivation("fetch", 1, {"content-id": "bafk"})

    def build() -> dict:
        raise RuntimeError("network down")

    with pytest.raises(RuntimeError):
        Realiser(store).realise(derivation, build)
    assert not store.has_record(derivation.key)
