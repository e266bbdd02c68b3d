"""CIDs, multihash, multibase and varints against well-known values."""

from __future__ import annotations

import hashlib
import pickle

import blake3
import pytest

from ipwhl.cid import (
    BLAKE3,
    CID,
    DAG_PB,
    IDENTITY,
    RAW,
    SHA2_256,
    InvalidCID,
    decode_prefix,
    varint_decode,
    varint_encode,
)
from ipwhl.errors import IpwhlError

EMPTY_DIR_V0 = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
EMPTY_DIR_V1 = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
HELLO_V0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
HELLO_V1 = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
HELLO = b"hello world\n"
EMPTY_DIR_BLOCK = b"\x0a\x02\x08\x01"


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (16384, b"\x80\x80\x01"),
        (2**63 - 1, b"\xff" * 8 + b"\x7f"),
    ],
)
def test_varint_round_trip(value: int, encoded: bytes) -> None:
    assert varint_encode(value) == encoded
    assert varint_decode(encoded) == (value, len(encoded))
    assert varint_decode(b"junk" + encoded + b"tail", 4) == (value, 4 + len(encoded))


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x80", b"\xff\xff", b"\x80\x00", b"\x81\x80\x00", b"\xff" * 9 + b"\x01"],
)
def test_varint_rejects_truncated_non_minimal_and_overlong(bad: bytes) -> None:
    with pytest.raises(ValueError):
        varint_decode(bad)


def test_varint_rejects_negative() -> None:
    with pytest.raises(ValueError):
        varint_encode(-1)


def test_empty_directory_cids() -> None:
    v1 = CID.compute(EMPTY_DIR_BLOCK, DAG_PB)
    v0 = CID.compute(EMPTY_DIR_BLOCK, DAG_PB, version=0)
    assert str(v1) == EMPTY_DIR_V1
    assert str(v0) == EMPTY_DIR_V0
    assert v0.digest == v1.digest
    assert v0.to_v1() == v1
    assert v0 != v1


def test_hello_world_raw_leaf() -> None:
    cid = CID.compute(HELLO, RAW)
    assert str(cid) == HELLO_V1
    assert cid.digest == hashlib.sha256(HELLO).digest()
    assert cid.verify(HELLO)
    assert not cid.verify(HELLO + b"!")


@pytest.mark.parametrize("text", [EMPTY_DIR_V0, EMPTY_DIR_V1, HELLO_V0, HELLO_V1])
def test_parse_round_trips(text: str) -> None:
    cid = CID.parse(text)
    assert str(cid) == text
    assert CID.from_bytes(bytes(cid)) == cid
    assert CID.parse(f"  {text}\n") == cid


def test_parse_fields() -> None:
    v0 = CID.parse(HELLO_V0)
    assert (v0.version, v0.codec, v0.hash_code) == (0, DAG_PB, SHA2_256)
    assert bytes(v0) == v0.multihash
    assert bytes(v0)[:2] == b"\x12\x20"
    v1 = CID.parse(HELLO_V1)
    assert (v1.version, v1.codec, v1.hash_code) == (1, RAW, SHA2_256)
    assert bytes(v1) == b"\x01\x55" + v1.multihash
    assert v1.multihash == b"\x12\x20" + v1.digest
    assert v1.codec_name == "raw"


def test_other_multibases_parse_to_the_same_cid() -> None:
    cid = CID.parse(EMPTY_DIR_V1)
    binary = bytes(cid)
    assert CID.parse(EMPTY_DIR_V1.upper()) == cid
    assert CID.parse("f" + binary.hex()) == cid
    assert CID.parse("F" + binary.hex().upper()) == cid
    # base58btc-multibase of the binary CIDv1
    n = int.from_bytes(binary, "big")
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    digits = ""
    while n:
        n, r = divmod(n, 58)
        digits = alphabet[r] + digits
    assert CID.parse("z" + digits) == cid


def test_cid_is_hashable_and_usable_as_key() -> None:
    a = CID.parse(HELLO_V1)
    b = CID.compute(HELLO, RAW)
    assert a == b and hash(a) == hash(b)
    assert {a: 1}[b] == 1
    assert repr(a) == f"CID('{HELLO_V1}')"
    with pytest.raises(AttributeError):
        a.version = 0  # type: ignore[misc]


def test_blake3_cid() -> None:
    cid = CID.compute(HELLO, RAW, hash_code=BLAKE3)
    assert cid.digest == blake3.blake3(HELLO).digest()
    assert cid.multihash == b"\x1e\x20" + cid.digest
    assert str(cid).startswith("bafkr4i")
    assert len(bytes(cid)) == 36
    assert CID.parse(str(cid)) == cid
    assert cid.verify(HELLO)
    assert not cid.verify(b"hello world")


def test_identity_cid_verifies_inline_data() -> None:
    cid = CID(1, RAW, IDENTITY, b"tiny")
    assert cid.verify(b"tiny")
    assert not cid.verify(b"tinx")
    assert CID.from_bytes(bytes(cid)) == cid


def test_decode_prefix_reads_cid_followed_by_data() -> None:
    for text in (HELLO_V0, HELLO_V1):
        cid = CID.parse(text)
        found, used = decode_prefix(bytes(cid) + b"block bytes")
        assert found == cid and used == len(bytes(cid))
        found, used = decode_prefix(memoryview(bytes(cid) + b"\x00"))
        assert found == cid


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("hello", "not a CID"),
        ("Qm" + "0" * 44, "base58btc"),
        ("bafy!!", "base32"),
        ("bAfYbeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354", "mixed-case"),
        ("bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47", "truncated"),
        ("bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf35", "invalid base32"),
        ("f0170", "truncated"),
        ("f02701220" + "00" * 32, "version 2"),
        ("f01701220" + "00" * 33, "trailing"),
        ("f01701221" + "00" * 33, "32 bytes"),
        ("zQmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o", "bare base58btc"),
        ("mAXASIA", "not a CID"),
        (HELLO_V1[:-1] + "5", "canonical"),
    ],
)
def test_parse_rejects_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(InvalidCID, match=message):
        CID.parse(text)


def test_invalid_cid_is_a_value_error_and_an_ipwhl_error() -> None:
    with pytest.raises(ValueError):
        CID.parse("nope")
    with pytest.raises(IpwhlError):
        CID.parse("nope")


def test_constructor_validates() -> None:
    with pytest.raises(InvalidCID, match="CIDv0"):
        CID(0, RAW, SHA2_256, bytes(32))
    with pytest.raises(InvalidCID, match="32 bytes"):
        CID(1, RAW, SHA2_256, bytes(20))
    with pytest.raises(InvalidCID, match="version"):
        CID(2, RAW, SHA2_256, bytes(32))


def test_unsupported_hash_cannot_compute_or_verify() -> None:
    with pytest.raises(InvalidCID, match="unsupported multihash"):
        CID.compute(b"x", RAW, hash_code=0x13)
    sha512_cid = CID(1, RAW, 0x13, hashlib.sha512(b"x").digest())
    assert CID.parse(str(sha512_cid)) == sha512_cid
    with pytest.raises(InvalidCID, match="unsupported multihash"):
        sha512_cid.verify(b"x")


def test_cidv0_needs_dag_pb_and_sha256() -> None:
    with pytest.raises(InvalidCID):
        CID.compute(b"x", RAW, version=0)


def test_cid_pickles() -> None:
    for text in (HELLO_V0, HELLO_V1):
        cid = CID.parse(text)
        again = pickle.loads(pickle.dumps(cid))
        assert again == cid and bytes(again) == bytes(cid) and str(again) == text
