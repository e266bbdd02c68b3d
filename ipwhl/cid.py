"""Content identifiers: CIDv0/CIDv1, multihash, multibase and unsigned varints."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

import blake3

from ipwhl.errors import IpwhlError

__all__ = [
    "BLAKE3",
    "CID",
    "DAG_PB",
    "IDENTITY",
    "RAW",
    "SHA2_256",
    "InvalidCID",
    "decode_prefix",
    "hash_digest",
    "varint_decode",
    "varint_encode",
]

RAW = 0x55
DAG_PB = 0x70
IDENTITY = 0x00
SHA2_256 = 0x12
BLAKE3 = 0x1E

_CODEC_NAMES = {RAW: "raw", DAG_PB: "dag-pb", 0x71: "dag-cbor", 0x0129: "dag-json"}
_HASH_NAMES = {IDENTITY: "identity", SHA2_256: "sha2-256", BLAKE3: "blake3"}
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
# The multiformats unsigned-varint spec caps varints at 9 bytes (63 bits).
_MAX_VARINT_BYTES = 9
# Identity "digests" are the data itself; kubo (boxo verifcid) refuses those over 128 bytes.
_MAX_IDENTITY_DIGEST = 128


class InvalidCID(IpwhlError, ValueError):
    """A string or byte sequence is not a well-formed CID."""


def varint_encode(n: int) -> bytes:
    """Encode a non-negative integer as an unsigned LEB128 varint."""
    if n < 0:
        raise ValueError(f"varint must be non-negative, got {n}")
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def varint_decode(buf: bytes | memoryview, offset: int = 0) -> tuple[int, int]:
    """Decode a minimal unsigned varint at `offset`; return (value, offset after it)."""
    value = 0
    shift = 0
    pos = offset
    end = len(buf)
    while True:
        if pos >= end:
            raise ValueError(f"truncated varint at offset {offset}")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            # A trailing zero group means a longer-than-needed encoding, which would
            # give one value two spellings.
            if byte == 0 and pos - offset > 1:
                raise ValueError(f"non-minimal varint at offset {offset}")
            return value, pos
        shift += 7
        if pos - offset >= _MAX_VARINT_BYTES:
            raise ValueError(f"varint longer than {_MAX_VARINT_BYTES} bytes at offset {offset}")


def hash_digest(hash_code: int, data: bytes | memoryview, length: int | None = None) -> bytes:
    """Return the digest of `data` under multihash function `hash_code`."""
    if hash_code == SHA2_256:
        return hashlib.sha256(data).digest()
    if hash_code == BLAKE3:
        return blake3.blake3(data).digest(length or 32)
    if hash_code == IDENTITY:
        return bytes(data)
    raise InvalidCID(
        f"unsupported multihash function 0x{hash_code:x} (supported: sha2-256, blake3)"
    )


def _b58encode(data: bytes) -> str:
    zeros = len(data) - len(data.lstrip(b"\0"))
    n = int.from_bytes(data, "big")
    chars = []
    while n:
        n, rem = divmod(n, 58)
        chars.append(_B58_ALPHABET[rem])
    return "1" * zeros + "".join(reversed(chars))


def _b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        try:
            n = n * 58 + _B58_INDEX[c]
        except KeyError:
            raise InvalidCID(f"invalid base58btc character {c!r} in {text!r}") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


def _b32decode(text: str) -> bytes:
    # `text` is the whole multibase string; the leading "b"/"B" is dropped here.
    body = text[1:]
    if body.upper() != body and body.lower() != body:
        raise InvalidCID(f"mixed-case base32 in {text!r}")
    padded = body.upper() + "=" * (-len(body) % 8)
    try:
        return base64.b32decode(padded)
    except ValueError as exc:
        raise InvalidCID(f"invalid base32 in {text!r}: {exc}") from None


def _decode_multihash(data: bytes | memoryview, offset: int) -> tuple[int, bytes, int]:
    hash_code, pos = varint_decode(data, offset)
    length, pos = varint_decode(data, pos)
    if pos + length > len(data):
        raise InvalidCID(
            f"multihash digest truncated: needs {length} bytes, {len(data) - pos} left"
        )
    return hash_code, bytes(data[pos : pos + length]), pos + length


def decode_prefix(data: bytes | memoryview) -> tuple[CID, int]:
    """Read a binary CID at the start of `data`; return it and how many bytes it took."""
    try:
        if len(data) >= 2 and data[0] == SHA2_256 and data[1] == 32:
            hash_code, digest, end = _decode_multihash(data, 0)
            return CID(0, DAG_PB, hash_code, digest), end
        version, pos = varint_decode(data, 0)
        if version != 1:
            raise InvalidCID(f"unsupported CID version {version} (expected 0 or 1)")
        codec, pos = varint_decode(data, pos)
        hash_code, digest, end = _decode_multihash(data, pos)
    except InvalidCID:
        raise
    except ValueError as exc:
        raise InvalidCID(f"malformed binary CID: {exc}") from None
    return CID(1, codec, hash_code, digest), end


@dataclass(frozen=True)
class CID:
    """A content identifier; compares and hashes by value, so it can key a dict."""

    version: int
    codec: int
    hash_code: int
    digest: bytes
    _binary: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.version == 0:
            if self.codec != DAG_PB or self.hash_code != SHA2_256 or len(self.digest) != 32:
                raise InvalidCID("CIDv0 is only dag-pb with a 32-byte sha2-256 digest")
        elif self.version != 1:
            raise InvalidCID(f"unsupported CID version {self.version} (expected 0 or 1)")
        if self.hash_code in (SHA2_256, BLAKE3) and len(self.digest) != 32:
            name = _HASH_NAMES[self.hash_code]
            raise InvalidCID(f"{name} digest must be 32 bytes, got {len(self.digest)}")
        if self.hash_code == IDENTITY and len(self.digest) > _MAX_IDENTITY_DIGEST:
            raise InvalidCID(f"identity digest longer than {_MAX_IDENTITY_DIGEST} bytes")
        multihash = varint_encode(self.hash_code) + varint_encode(len(self.digest)) + self.digest
        binary = multihash if self.version == 0 else b"\x01" + varint_encode(self.codec) + multihash
        object.__setattr__(self, "_binary", binary)

    def __str__(self) -> str:
        if self.version == 0:
            return _b58encode(self._binary)
        return "b" + base64.b32encode(self._binary).decode("ascii").rstrip("=").lower()

    def __repr__(self) -> str:
        return f"CID({str(self)!r})"

    def __bytes__(self) -> bytes:
        return self._binary

    @property
    def multihash(self) -> bytes:
        """The multihash: varint hash code, varint digest length, digest."""
        if self.version == 0:
            return self._binary
        return self._binary[1 + len(varint_encode(self.codec)) :]

    @property
    def codec_name(self) -> str:
        """The codec's multicodec name, or its hex code when unknown."""
        return _CODEC_NAMES.get(self.codec, f"0x{self.codec:x}")

    @classmethod
    def parse(cls, text: str) -> CID:
        """Parse a CID string (Qm… base58btc CIDv0, or multibase b/B/z/f/F CIDv1)."""
        text = text.strip()
        if not text:
            raise InvalidCID("empty CID")
        if len(text) == 46 and text.startswith("Qm"):
            cid = cls.from_bytes(_b58decode(text))
            if cid.version != 0:
                raise InvalidCID(f"{text!r} is not a CIDv0")
            return cid
        prefix, body = text[0], text[1:]
        if prefix in "bB":
            binary = _b32decode(text)
        elif prefix == "z":
            binary = _b58decode(body)
        elif prefix in "fF":
            if body != body.lower() and body != body.upper():
                raise InvalidCID(f"mixed-case base16 in {text!r}")
            try:
                binary = bytes.fromhex(body)
            except ValueError:
                raise InvalidCID(f"invalid base16 in {text!r}") from None
        else:
            raise InvalidCID(
                f"{text!r} is not a CID: expected 'Qm…' (CIDv0) or a multibase 'b…' CIDv1"
            )
        cid = cls.from_bytes(binary)
        if cid.version == 0:
            raise InvalidCID(f"{text!r}: a CIDv0 must be written in bare base58btc ('Qm…')")
        if prefix in "bB" and str(cid) != "b" + body.lower():
            # Stray low bits in the last character would give one CID many spellings.
            raise InvalidCID(f"{text!r} is not canonical base32 (non-zero trailing bits)")
        return cid

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> CID:
        """Decode a binary CID that spans all of `data`."""
        cid, consumed = decode_prefix(data)
        if consumed != len(data):
            raise InvalidCID(f"{len(data) - consumed} trailing bytes after binary CID")
        return cid

    @classmethod
    def compute(
        cls,
        data: bytes | memoryview,
        codec: int,
        *,
        version: int = 1,
        hash_code: int = SHA2_256,
    ) -> CID:
        """Return the CID of block `data` under `codec`, `version` and `hash_code`."""
        return cls(version, codec, hash_code, hash_digest(hash_code, data))

    def verify(self, data: bytes | memoryview) -> bool:
        """Tell whether block `data` hashes to this CID."""
        return hash_digest(self.hash_code, data, len(self.digest)) == self.digest

    def to_v1(self) -> CID:
        """The same content as a CIDv1 (a CIDv1 is returned unchanged)."""
        return self if self.version == 1 else CID(1, self.codec, self.hash_code, self.digest)
