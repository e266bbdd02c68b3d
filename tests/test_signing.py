"""minisign keys and signatures: our files against the format, and against the real `minisign`."""

from __future__ import annotations

import base64
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from ipwhl import signing
from ipwhl.cli import main
from ipwhl.signing import (
    DEFAULT_MEMLIMIT,
    DEFAULT_OPSLIMIT,
    BadSignature,
    InvalidKey,
    PublicKey,
    SecretKey,
    Signature,
)

# Cheap scrypt for tests (libsodium's minimum memory): the format is the same at any cost.
CHEAP = {"opslimit": 1 << 15, "memlimit": 1 << 24}
MINISIGN = shutil.which("minisign")
needs_minisign = pytest.mark.skipif(
    MINISIGN is None, reason="the minisign binary is not installed (apt-get install -y minisign)"
)


def never() -> str:
    raise AssertionError("the passphrase was asked for an unencrypted key")


def run_minisign(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    assert MINISIGN is not None
    return subprocess.run([MINISIGN, *args], input=stdin, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture(scope="module")
def key() -> SecretKey:
    return signing.generate()


# -- the scrypt parameters and key files ---------------------------------------------------------


@pytest.mark.parametrize(
    ("opslimit", "memlimit", "expected"),
    [
        (DEFAULT_OPSLIMIT, DEFAULT_MEMLIMIT, (1 << 20, 8, 1)),  # minisign's default: 1 GiB
        (524288, 16777216, (1 << 14, 8, 1)),  # libsodium's "interactive" limits
        (1 << 15, 1 << 24, (1 << 10, 8, 1)),  # opslimit bounds N
        (1, 1 << 24, (1 << 10, 8, 1)),  # opslimit is raised to 32768
        (1 << 30, 1 << 24, (1 << 14, 8, 2048)),  # lots of ops, little memory: p grows
    ],
)
def test_scrypt_parameters_are_libsodiums(
    opslimit: int, memlimit: int, expected: tuple[int, int, int]
) -> None:
    assert signing._scrypt_parameters(opslimit, memlimit) == expected


def test_an_encrypted_secret_key_round_trips(key: SecretKey) -> None:
    text = key.to_text("correct horse", **CHEAP)
    assert text.startswith("untrusted comment: minisign encrypted secret key\n")
    raw = base64.b64decode(text.splitlines()[1])
    assert (len(raw), raw[:6]) == (158, b"EdScB2")
    assert int.from_bytes(raw[38:46], "little") == CHEAP["opslimit"]
    # The key id, seed and public key are encrypted: none of them shows in the file.
    assert key.key_id not in raw and key.seed not in raw and key.public not in raw
    assert SecretKey.from_text(text, lambda: "correct horse") == key


def test_a_wrong_passphrase_is_refused(key: SecretKey) -> None:
    text = key.to_text("correct horse", **CHEAP)
    with pytest.raises(InvalidKey, match=r"wrong passphrase for release\.key"):
        SecretKey.from_text(text, lambda: "battery staple", "release.key")


def test_an_unencrypted_key_needs_no_passphrase(key: SecretKey) -> None:
    text = key.to_text(None)
    assert base64.b64decode(text.splitlines()[1])[:6] == b"Ed\0\0B2"
    assert SecretKey.from_text(text, never) == key


def test_a_corrupt_secret_key_is_refused(key: SecretKey) -> None:
    raw = bytearray(base64.b64decode(key.to_text(None).splitlines()[1]))
    raw[60] ^= 1  # a byte of the key id
    text = "untrusted comment: x\n" + base64.b64encode(bytes(raw)).decode() + "\n"
    with pytest.raises(InvalidKey, match="checksum does not match"):
        SecretKey.from_text(text, never)
    with pytest.raises(InvalidKey, match="not base64"):
        SecretKey.from_text("untrusted comment: x\nnot base64!\n", never)
    with pytest.raises(InvalidKey, match="expected two lines"):
        SecretKey.from_text("", never)


def test_the_public_key_file_is_minisigns(key: SecretKey) -> None:
    public = key.public_key()
    text = public.to_text()
    comment, line = text.splitlines()
    assert comment == f"untrusted comment: minisign public key {public.key_id_text}"
    assert public.key_id_text == f"{int.from_bytes(key.key_id, 'little'):016X}"
    assert base64.b64decode(line) == b"Ed" + key.key_id + key.public
    assert signing.parse_public_keys(text) == (public,)


def test_several_public_keys_in_one_file(key: SecretKey) -> None:
    other = signing.generate().public_key()
    text = key.public_key().to_text() + "\n" + other.to_text()
    assert signing.parse_public_keys(text) == (key.public_key(), other)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no minisign public key"),
        ("untrusted comment: x\nRWQ=\n", "line 2 holds 2 bytes, expected 42"),
        ("untrusted comment: x\n%%%%\n", "line 2 is not base64"),
        ("untrusted comment: x\n" + base64.b64encode(b"Xx" + bytes(40)).decode(),
         "expected minisign's 'Ed'"),
    ],
)
def test_malformed_public_keys(text: str, message: str) -> None:
    with pytest.raises(InvalidKey, match=message):
        signing.parse_public_keys(text, "release.pub")


def test_read_keys_from_files(tmp_path: Path, key: SecretKey) -> None:
    with pytest.raises(InvalidKey, match="cannot read public key file"):
        signing.read_public_keys(tmp_path / "missing.pub")
    with pytest.raises(InvalidKey, match="cannot read secret key file"):
        signing.read_secret_key(tmp_path / "missing.key", never)


def test_write_key_pair(tmp_path: Path, key: SecretKey) -> None:
    public, secret = tmp_path / "k.pub", tmp_path / "k.key"
    signing.write_key_pair(key, public, secret, "pw", **CHEAP)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert signing.read_public_keys(public) == (key.public_key(),)
    assert signing.read_secret_key(secret, lambda: "pw") == key
    with pytest.raises(InvalidKey, match="already exists; pass --force"):
        signing.write_key_pair(signing.generate(), public, secret, "pw", **CHEAP)
    assert signing.read_public_keys(public) == (key.public_key(),)
    other = signing.generate()
    signing.write_key_pair(other, public, secret, "pw", force=True, **CHEAP)
    assert signing.read_public_keys(public) == (other.public_key(),)


# -- signatures ----------------------------------------------------------------------------------


def test_sign_and_verify(key: SecretKey) -> None:
    signature = signing.sign(key, b"hello\n", "a trusted comment")
    assert signature.algorithm == b"ED"
    text = signature.to_text()
    lines = text.splitlines()
    assert lines[0] == "untrusted comment: signature from minisign secret key"
    assert lines[2] == "trusted comment: a trusted comment"
    assert Signature.from_text(text) == signature
    signing.verify(key.public_key(), b"hello\n", Signature.from_text(text))


def test_each_kind_of_change_is_named(key: SecretKey) -> None:
    signature = signing.sign(key, b"hello\n", "comment")
    public = key.public_key()
    with pytest.raises(BadSignature, match="file was changed") as caught:
        signing.verify(public, b"hello!\n", signature)
    assert caught.value.part == "message"
    with pytest.raises(BadSignature, match="trusted comment was changed") as caught:
        signing.verify(public, b"hello\n", Signature(
            signature.algorithm, signature.key_id, signature.signature, "commenT",
            signature.global_signature))
    assert caught.value.part == "comment"
    altered = bytes([signature.signature[0] ^ 1]) + signature.signature[1:]
    with pytest.raises(BadSignature, match="does not verify with key") as caught:
        signing.verify(public, b"hello\n", Signature(
            signature.algorithm, signature.key_id, altered, "comment",
            signature.global_signature))
    assert caught.value.part == "signature"
    with pytest.raises(BadSignature, match=r"made by key .*, not by key") as caught:
        signing.verify(signing.generate().public_key(), b"hello\n", signature)
    assert caught.value.part == "key"
    assert caught.value.exit_code == 11


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected four lines"),
        ("x\ny\nz\nw\n", "first line does not start"),
        ("untrusted comment: a\nRWQ=\nnot trusted\nRWQ=\n", "third line does not start"),
        ("untrusted comment: a\nRWQ=\ntrusted comment: b\nRWQ=\n", "holds 2 bytes, expected 74"),
        ("untrusted comment: a\nRWQ=\ntrusted comment: \x01\nRWQ=\n", "control characters"),
    ],
)
def test_malformed_signatures(text: str, message: str) -> None:
    with pytest.raises(BadSignature, match=message) as caught:
        Signature.from_text(text, "r.minisig")
    assert caught.value.part == "format"


def test_comments_must_be_one_printable_line(key: SecretKey) -> None:
    with pytest.raises(ValueError, match="one line"):
        signing.sign(key, b"", "two\nlines")
    with pytest.raises(ValueError, match="too long"):
        signing.sign(key, b"", "x" * 9000)


# -- the real minisign ---------------------------------------------------------------------------


@needs_minisign
def test_minisign_verifies_our_signature(tmp_path: Path, key: SecretKey) -> None:
    (tmp_path / "k.pub").write_text(key.public_key().to_text())
    (tmp_path / "m").write_bytes(b"a release record\n")
    signature = signing.sign(key, b"a release record\n", "ipwhl-release name=x")
    (tmp_path / "m.minisig").write_text(signature.to_text())
    done = run_minisign("-V", "-p", str(tmp_path / "k.pub"), "-m", str(tmp_path / "m"))
    assert done.returncode == 0, done.stderr
    assert "Trusted comment: ipwhl-release name=x" in done.stdout
    (tmp_path / "m").write_bytes(b"a release record!\n")
    assert run_minisign("-V", "-p", str(tmp_path / "k.pub"), "-m", str(tmp_path / "m")).returncode


@needs_minisign
def test_minisign_signs_with_our_encrypted_key(tmp_path: Path, key: SecretKey) -> None:
    (tmp_path / "k.key").write_text(key.to_text("pass phrase", **CHEAP))
    (tmp_path / "m").write_bytes(b"data\n")
    done = run_minisign("-S", "-s", str(tmp_path / "k.key"), "-m", str(tmp_path / "m"),
                        "-t", "made by minisign", stdin="pass phrase\n")
    assert done.returncode == 0, done.stdout + done.stderr
    signature = Signature.from_text((tmp_path / "m.minisig").read_text())
    assert signature.trusted_comment == "made by minisign"
    signing.verify(key.public_key(), b"data\n", signature)
    # And minisign recreates our public key from our secret key.
    done = run_minisign("-R", "-s", str(tmp_path / "k.key"), "-p", str(tmp_path / "re.pub"),
                        stdin="pass phrase\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert signing.read_public_keys(tmp_path / "re.pub") == (key.public_key(),)


@needs_minisign
def test_we_read_minisigns_unencrypted_keys(tmp_path: Path) -> None:
    pub, sec = tmp_path / "m.pub", tmp_path / "m.key"
    done = run_minisign("-G", "-W", "-p", str(pub), "-s", str(sec))
    assert done.returncode == 0, done.stdout + done.stderr
    secret = signing.read_secret_key(sec, never)
    assert signing.read_public_keys(pub) == (secret.public_key(),)
    comment, line = pub.read_text().splitlines()
    assert line == secret.public_key().to_base64()
    # minisign 0.11 prints the key id without leading zeros; later versions pad it to 16 digits.
    assert int(comment.rsplit(" ", 1)[1], 16) == int(secret.public_key().key_id_text, 16)
    (tmp_path / "m").write_bytes(b"x")
    (tmp_path / "m.minisig").write_text(signing.sign(secret, b"x", "ours").to_text())
    assert run_minisign("-V", "-p", str(pub), "-m", str(tmp_path / "m")).returncode == 0


@needs_minisign
@pytest.mark.slow
def test_we_read_minisigns_encrypted_keys(tmp_path: Path) -> None:
    # minisign encrypts with its full scrypt cost (1 GiB): a few seconds each way.
    pub, sec = tmp_path / "m.pub", tmp_path / "m.key"
    done = run_minisign("-G", "-p", str(pub), "-s", str(sec), stdin="s3cret\ns3cret\n")
    assert done.returncode == 0, done.stdout + done.stderr
    secret = signing.read_secret_key(sec, lambda: "s3cret")
    assert signing.read_public_keys(pub) == (secret.public_key(),)


# -- ipwhl keygen --------------------------------------------------------------------------------


@pytest.mark.slow
def test_keygen_writes_an_encrypted_pair_at_minisigns_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IPWHL_KEY_PASSPHRASE", "from the environment")
    pub, sec = tmp_path / "r.pub", tmp_path / "r.key"
    assert main(["keygen", "--public", str(pub), "--secret", str(sec)]) == 0
    public = signing.read_public_keys(pub)[0]
    assert capsys.readouterr().out == public.to_base64() + "\n"
    raw = base64.b64decode(sec.read_text().splitlines()[1])
    assert raw[2:4] == b"Sc"
    assert int.from_bytes(raw[38:46], "little") == DEFAULT_OPSLIMIT
    assert int.from_bytes(raw[46:54], "little") == DEFAULT_MEMLIMIT
    assert signing.read_secret_key(sec, lambda: "from the environment").public_key() == public
    assert main(["keygen", "--public", str(pub), "--secret", str(sec)]) == 10
    assert "already exists; pass --force" in capsys.readouterr().err


def test_keygen_without_a_passphrase_fails_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("IPWHL_KEY_PASSPHRASE", raising=False)
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "")
    assert main(["keygen", "--public", str(tmp_path / "p"), "--secret", str(tmp_path / "s")]) == 10
    assert "empty passphrase" in capsys.readouterr().err
    answers = iter(["one", "two"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert main(["keygen", "--public", str(tmp_path / "p"), "--secret", str(tmp_path / "s")]) == 10
    assert "passphrases differ" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_public_key_type_is_frozen(key: SecretKey) -> None:
    public = key.public_key()
    assert isinstance(public, PublicKey)
    with pytest.raises(AttributeError):
        public.key = b""  # type: ignore[misc]
    assert "seed" not in repr(key)
