"""minisign keys and signatures: the files `minisign` reads and writes, over Ed25519.

The Ed25519 primitives come from `cryptography`; scrypt (minisign's KDF) and BLAKE2b (its
checksum and prehash) from `hashlib`. The formats follow minisign's source (src/minisign.h):

    public key   "Ed" + key id (8) + public key (32)
    secret key   "Ed" + "Sc"|"\\0\\0" (KDF) + "B2" + salt (32) + opslimit (8, LE) + memlimit (8, LE)
                 + [key id (8) + secret key (64: seed + public) + BLAKE2b-256 checksum (32)],
                 the bracket XORed with scrypt(passphrase, salt) when the KDF is "Sc"
    signature    "ED" + key id (8) + Ed25519 over BLAKE2b-512 of the file (64);
                 then "trusted comment: …" and Ed25519 over signature + trusted comment

each base64 under an "untrusted comment: " line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import IpwhlError

if TYPE_CHECKING:  # cryptography is imported when a key is used, for start-up time
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "DEFAULT_MEMLIMIT",
    "DEFAULT_OPSLIMIT",
    "BadSignature",
    "InvalidKey",
    "PublicKey",
    "SecretKey",
    "Signature",
    "generate",
    "parse_public_keys",
    "read_public_keys",
    "read_secret_key",
    "sign",
    "verify",
    "write_key_pair",
]

# libsodium's crypto_pwhash_scryptsalsa208sha256_{OPS,MEM}LIMIT_SENSITIVE, minisign's defaults.
DEFAULT_OPSLIMIT = 1 << 25
DEFAULT_MEMLIMIT = 1 << 30
_OPSLIMIT_MIN = 1 << 15
_MEMLIMIT_MIN = 1 << 24

_SIG_ALG = b"Ed"
_SIG_ALG_HASHED = b"ED"
_KDF_SCRYPT = b"Sc"
_KDF_NONE = b"\0\0"
_CHK_ALG = b"B2"
_KEY_ID_BYTES = 8
_KEYNUM_SK_BYTES = 8 + 64 + 32
_SECRET_KEY_BYTES = 2 + 2 + 2 + 32 + 8 + 8 + _KEYNUM_SK_BYTES
_COMMENT = "untrusted comment: "
_TRUSTED = "trusted comment: "
_TRUSTED_COMMENT_MAX = 8192 - len(_TRUSTED) - 1
DEFAULT_SIGNATURE_COMMENT = "signature from minisign secret key"

Passphrase = Callable[[], str]


class InvalidKey(IpwhlError):
    """A key cannot be used: missing, malformed, of another algorithm, or the wrong passphrase."""

    exit_code = 10


class BadSignature(IpwhlError):
    """A signature does not verify; `part` says what failed.

    "format": not a minisign signature; "key": made by another key (key ids differ);
    "signature": the signature itself was altered or made by another key with the same id;
    "comment": the trusted comment was changed; "message": the signed file was changed.
    """

    exit_code = 11

    def __init__(self, message: str, part: str = "signature") -> None:
        super().__init__(message)
        self.part = part


def _key_id_text(key_id: bytes) -> str:
    # minisign prints the 8 bytes as one little-endian integer in upper-case hex.
    return f"{int.from_bytes(key_id, 'little'):016X}"


def _b64decode(text: str, size: int, what: str, error: type[IpwhlError]) -> bytes:
    try:
        raw = base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise error(f"{what} is not base64") from None
    if len(raw) != size:
        raise error(f"{what} holds {len(raw)} bytes, expected {size}")
    return raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class PublicKey:
    """A minisign public key: an 8-byte key id and a 32-byte Ed25519 public key."""

    key_id: bytes
    key: bytes

    @property
    def key_id_text(self) -> str:
        """The key id as minisign prints it (16 upper-case hex digits)."""
        return _key_id_text(self.key_id)

    def to_base64(self) -> str:
        """The key as `minisign -P` takes it."""
        return _b64(_SIG_ALG + self.key_id + self.key)

    def to_text(self) -> str:
        """The contents of a minisign public key file."""
        return f"{_COMMENT}minisign public key {self.key_id_text}\n{self.to_base64()}\n"

    @classmethod
    def from_base64(cls, text: str, source: str = "public key") -> PublicKey:
        """Parse the base64 line of a public key file; InvalidKey if it is not an Ed25519 key."""
        raw = _b64decode(text, 2 + _KEY_ID_BYTES + 32, source, InvalidKey)
        if raw[:2] != _SIG_ALG:
            raise InvalidKey(f"{source} is for algorithm {raw[:2]!r}, expected minisign's 'Ed'")
        return cls(raw[2:10], raw[10:])


def parse_public_keys(text: str, source: str = "public key file") -> tuple[PublicKey, ...]:
    """Every key in a minisign public key file, or in several such files concatenated."""
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(_COMMENT.rstrip()):
            continue
        keys.append(PublicKey.from_base64(line, f"{source}, line {number}"))
    if not keys:
        raise InvalidKey(f"{source} holds no minisign public key (expected a base64 line)")
    return tuple(keys)


def read_public_keys(path: str | os.PathLike[str]) -> tuple[PublicKey, ...]:
    """The keys in the public key file at `path`; InvalidKey if it cannot be read or parsed."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "it is not text"
        raise InvalidKey(f"cannot read public key file {path} ({reason})") from None
    return parse_public_keys(text, str(path))


def _scrypt_parameters(opslimit: int, memlimit: int) -> tuple[int, int, int]:
    """(N, r, p) as libsodium's crypto_pwhash_scryptsalsa208sha256 derives them from the limits,
    so that a key minisign encrypted decrypts here and the other way round."""

    def log2_above(bound: int) -> int:
        n_log2 = 1
        while n_log2 < 63 and (1 << n_log2) <= bound:
            n_log2 += 1
        return n_log2

    opslimit = max(opslimit, 32768)
    r = 8
    if opslimit < memlimit // 32:
        p = 1
        n_log2 = log2_above(opslimit // (r * 4) // 2)
    else:
        n_log2 = log2_above(memlimit // (r * 128) // 2)
        p = min((opslimit // 4) // (1 << n_log2), 0x3FFFFFFF) // r
    return 1 << n_log2, r, p


def _keystream(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    n, r, p = _scrypt_parameters(opslimit, memlimit)
    # OpenSSL refuses to work in more than `maxmem` bytes: its V array plus p blocks of B.
    needed = 128 * r * (n + 2 + p) + (1 << 20)
    if needed > 2**31 - 1:
        raise InvalidKey(f"the key's scrypt parameters need {needed >> 20} MiB, more than 2 GiB")
    try:
        return hashlib.scrypt(
            passphrase.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=needed,
            dklen=_KEYNUM_SK_BYTES,
        )
    except (MemoryError, ValueError) as error:
        raise InvalidKey(f"cannot derive the key from the passphrase: {error}") from None


def _checksum(key_id: bytes, secret: bytes) -> bytes:
    return hashlib.blake2b(_SIG_ALG + key_id + secret, digest_size=32).digest()


def _xor(data: bytes, stream: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, stream, strict=True))


@dataclass(frozen=True)
class SecretKey:
    """A minisign secret key: key id, Ed25519 seed and the public key it gives."""

    key_id: bytes
    seed: bytes = field(repr=False)
    public: bytes

    def public_key(self) -> PublicKey:
        return PublicKey(self.key_id, self.public)

    def to_text(
        self,
        passphrase: str | None,
        *,
        opslimit: int = DEFAULT_OPSLIMIT,
        memlimit: int = DEFAULT_MEMLIMIT,
        salt: bytes | None = None,
    ) -> str:
        """The contents of a minisign secret key file, encrypted unless `passphrase` is None."""
        secret = self.seed + self.public
        keynum_sk = self.key_id + secret + _checksum(self.key_id, secret)
        if passphrase is None:
            header = _SIG_ALG + _KDF_NONE + _CHK_ALG + bytes(32 + 8 + 8)
            comment = "minisign secret key (unencrypted)"
        else:
            salt = os.urandom(32) if salt is None else salt
            while True:
                try:
                    stream = _keystream(passphrase, salt, opslimit, memlimit)
                    break
                except InvalidKey:
                    # As minisign does on a small machine: halve the cost until it fits.
                    opslimit //= 2
                    memlimit //= 2
                    if opslimit < _OPSLIMIT_MIN or memlimit < _MEMLIMIT_MIN:
                        raise
            keynum_sk = _xor(keynum_sk, stream)
            header = (
                _SIG_ALG + _KDF_SCRYPT + _CHK_ALG + salt
                + opslimit.to_bytes(8, "little") + memlimit.to_bytes(8, "little")
            )
            comment = "minisign encrypted secret key"
        return f"{_COMMENT}{comment}\n{_b64(header + keynum_sk)}\n"

    @classmethod
    def from_text(
        cls, text: str, passphrase: Passphrase, source: str = "secret key file"
    ) -> SecretKey:
        """Parse (and, if encrypted, decrypt) a minisign secret key file.

        `passphrase` is called only for an encrypted key. Raises InvalidKey on a malformed key,
        another algorithm, or a wrong passphrase.
        """
        lines = text.splitlines()
        if len(lines) < 2:
            raise InvalidKey(f"{source} is not a minisign secret key (expected two lines)")
        raw = _b64decode(lines[1], _SECRET_KEY_BYTES, source, InvalidKey)
        sig_alg, kdf_alg, chk_alg = raw[0:2], raw[2:4], raw[4:6]
        if sig_alg != _SIG_ALG:
            raise InvalidKey(f"{source} is for algorithm {sig_alg!r}, expected minisign's 'Ed'")
        if chk_alg != _CHK_ALG:
            raise InvalidKey(f"{source} uses checksum {chk_alg!r}, expected minisign's 'B2'")
        salt = raw[6:38]
        opslimit = int.from_bytes(raw[38:46], "little")
        memlimit = int.from_bytes(raw[46:54], "little")
        keynum_sk = raw[54:]
        if kdf_alg == _KDF_SCRYPT:
            keynum_sk = _xor(keynum_sk, _keystream(passphrase(), salt, opslimit, memlimit))
        elif kdf_alg != _KDF_NONE:
            raise InvalidKey(f"{source} uses key derivation {kdf_alg!r}, expected 'Sc' or none")
        key_id, secret, checksum = keynum_sk[:8], keynum_sk[8:72], keynum_sk[72:]
        # `minisign -G -W` leaves the checksum of an unencrypted key zero.
        unchecked = kdf_alg == _KDF_NONE and checksum == bytes(32)
        if not unchecked and checksum != _checksum(key_id, secret):
            if kdf_alg == _KDF_SCRYPT:
                raise InvalidKey(f"wrong passphrase for {source}")
            raise InvalidKey(f"{source} is corrupt: its checksum does not match")
        key = cls(key_id, secret[:32], secret[32:])
        if _private(key).public_key().public_bytes_raw() != key.public:
            raise InvalidKey(f"{source} is corrupt: its public half does not match its seed")
        return key


def read_secret_key(path: str | os.PathLike[str], passphrase: Passphrase) -> SecretKey:
    """The secret key in the file at `path`, decrypted with `passphrase()` if it is encrypted."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "it is not text"
        raise InvalidKey(f"cannot read secret key file {path} ({reason})") from None
    return SecretKey.from_text(text, passphrase, str(path))


def _private(key: SecretKey) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(key.seed)


def generate() -> SecretKey:
    """A new key pair with a random key id."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    return SecretKey(
        os.urandom(_KEY_ID_BYTES),
        private.private_bytes_raw(),
        private.public_key().public_bytes_raw(),
    )


@dataclass(frozen=True)
class Signature:
    """A parsed .minisig file."""

    algorithm: bytes  # b"ED" (BLAKE2b-512 prehashed, minisign's default) or b"Ed" (legacy)
    key_id: bytes
    signature: bytes
    trusted_comment: str
    global_signature: bytes
    untrusted_comment: str = DEFAULT_SIGNATURE_COMMENT

    @property
    def key_id_text(self) -> str:
        return _key_id_text(self.key_id)

    def to_text(self) -> str:
        """The contents of the .minisig file."""
        return (
            f"{_COMMENT}{self.untrusted_comment}\n"
            f"{_b64(self.algorithm + self.key_id + self.signature)}\n"
            f"{_TRUSTED}{self.trusted_comment}\n"
            f"{_b64(self.global_signature)}\n"
        )

    @classmethod
    def from_text(cls, text: str, source: str = "signature") -> Signature:
        """Parse a .minisig file as `minisign -V` does; BadSignature(part="format") if it is not
        one."""

        def bad(problem: str) -> BadSignature:
            return BadSignature(f"{source} is not a minisign signature: {problem}", "format")

        lines = [line.removesuffix("\r") for line in text.split("\n")]
        if len(lines) < 4:
            raise bad("expected four lines")
        untrusted, sig_line, trusted, global_line = lines[:4]
        if not untrusted.startswith(_COMMENT):
            raise bad(f"the first line does not start with {_COMMENT!r}")
        if not trusted.startswith(_TRUSTED):
            raise bad(f"the third line does not start with {_TRUSTED!r}")
        comment = trusted[len(_TRUSTED):]
        if not _printable(comment):
            raise bad("the trusted comment holds control characters")
        try:
            raw = _b64decode(sig_line, 2 + _KEY_ID_BYTES + 64, "the signature line", IpwhlError)
            global_signature = _b64decode(global_line, 64, "the last line", IpwhlError)
        except IpwhlError as error:
            raise bad(str(error)) from None
        if raw[:2] not in (_SIG_ALG, _SIG_ALG_HASHED):
            raise bad(f"unsupported signature algorithm {raw[:2]!r}")
        return cls(raw[:2], raw[2:10], raw[10:], comment, global_signature,
                   untrusted[len(_COMMENT):])


def _printable(text: str) -> bool:
    return all(c == "\t" or (c >= " " and not "\x7f" <= c <= "\x9f") for c in text)


def _signed_message(algorithm: bytes, message: bytes) -> bytes:
    if algorithm == _SIG_ALG_HASHED:
        return hashlib.blake2b(message, digest_size=64).digest()
    return message


def sign(
    key: SecretKey,
    message: bytes,
    trusted_comment: str,
    untrusted_comment: str = DEFAULT_SIGNATURE_COMMENT,
) -> Signature:
    """Sign `message` as `minisign -S -t trusted_comment` does (prehashed)."""
    for what, comment in (("trusted", trusted_comment), ("untrusted", untrusted_comment)):
        if "\n" in comment or "\r" in comment or not _printable(comment):
            raise ValueError(f"the {what} comment must be one line of printable text")
    if len(trusted_comment.encode("utf-8")) >= _TRUSTED_COMMENT_MAX:
        raise ValueError("the trusted comment is too long for minisign")
    private = _private(key)
    signature = private.sign(_signed_message(_SIG_ALG_HASHED, message))
    global_signature = private.sign(signature + trusted_comment.encode("utf-8"))
    return Signature(_SIG_ALG_HASHED, key.key_id, signature, trusted_comment, global_signature,
                     untrusted_comment)


def verify(key: PublicKey, message: bytes, signature: Signature) -> None:
    """Check `signature` over `message` as `minisign -V` does; BadSignature says what failed."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if signature.key_id != key.key_id:
        raise BadSignature(
            f"the signature was made by key {signature.key_id_text}, "
            f"not by key {key.key_id_text}", "key",
        )
    try:
        public = Ed25519PublicKey.from_public_bytes(key.key)
    except ValueError:
        raise InvalidKey(f"public key {key.key_id_text} is not a valid Ed25519 key") from None

    def holds(sig: bytes, data: bytes) -> bool:
        try:
            public.verify(sig, data)
        except InvalidSignature:
            return False
        return True

    message_ok = holds(signature.signature, _signed_message(signature.algorithm, message))
    comment = signature.signature + signature.trusted_comment.encode("utf-8")
    comment_ok = holds(signature.global_signature, comment)
    if message_ok and comment_ok:
        return
    if comment_ok:
        raise BadSignature("the file was changed after it was signed", "message")
    if message_ok:
        raise BadSignature("the trusted comment was changed after it was signed", "comment")
    raise BadSignature(
        f"the signature does not verify with key {key.key_id_text}: it was altered, "
        "or made by another key with the same id", "signature",
    )


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # Written beside its final name, then renamed: never a half-written key.
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)  # a crash's leftover would keep its own permissions
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()


def write_key_pair(
    key: SecretKey,
    public_path: Path,
    secret_path: Path,
    passphrase: str,
    *,
    force: bool = False,
    opslimit: int = DEFAULT_OPSLIMIT,
    memlimit: int = DEFAULT_MEMLIMIT,
) -> None:
    """Write minisign public and (encrypted, owner-only) secret key files; refuse to replace
    existing files unless `force`."""
    if not force:
        for path in (public_path, secret_path):
            if path.exists():
                raise InvalidKey(f"{path} already exists; pass --force to replace it")
    secret = key.to_text(passphrase, opslimit=opslimit, memlimit=memlimit)
    _write_new(secret_path, secret.encode("ascii"), 0o600)
    _write_new(public_path, key.public_key().to_text().encode("ascii"), 0o644)
