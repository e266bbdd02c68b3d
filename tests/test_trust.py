"""Release records and a client's trust: sign, verify, tamper, rollback, fork, freeze, rotate."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ipwhl import signing
from ipwhl.build import build_release, load_plan
from ipwhl.cid import CID
from ipwhl.cli import main
from ipwhl.dag import iter_bytes, resolve
from ipwhl.errors import IpwhlError, NotFound
from ipwhl.signing import BadSignature, InvalidKey, SecretKey
from ipwhl.store import Store
from ipwhl.trust import (
    Expired,
    InvalidRecord,
    ReleaseRecord,
    Rollback,
    Unavailable,
    Verified,
    default_state_path,
    load_state,
    make_record,
    parse_duration,
    parse_time,
    record_times,
    save_in_store,
    sign_record,
    stored_record,
    verify_release,
    write_signed,
)
from tests.releasefactory import Project, write_release

NOW = datetime.now(UTC).replace(microsecond=0)
CREATED = NOW - timedelta(days=1)
EXPIRES = NOW + timedelta(days=30)
CHEAP = {"opslimit": 1 << 15, "memlimit": 1 << 24}
MINISIGN = shutil.which("minisign")


@dataclass
class Line:
    """Releases of one line built on top of each other, each signed right after its build."""

    store: Store
    cids: list[str] = field(default_factory=list)  # cids[0] is release #1
    signed: list[tuple[bytes, str]] = field(default_factory=list)  # (record, .minisig text)


def build_line(
    root: Path, store: Store, name: str, versions: Sequence[str], signers: Sequence[SecretKey],
    keys_files: Sequence[Sequence[SecretKey] | None] = (),
) -> Line:
    line = Line(store)
    for number, (version, signer) in enumerate(zip(versions, signers, strict=True)):
        folder = root / f"{name}-{number + 1}"
        extra = []
        listed = keys_files[number] if number < len(keys_files) else None
        if listed is not None:
            folder.mkdir(parents=True)
            (folder / "keys.pub").write_text("".join(k.public_key().to_text() for k in listed))
            extra.append('keys = "keys.pub"')
        release = write_release(folder, [Project("demo", version)], name=name,
                                extra_release_lines=extra)
        previous = line.cids[-1] if line.cids else None
        cid = str(build_release(store, load_plan(release.path), on_top_of=previous).root)
        data, signature = sign_record(
            make_record(store, cid, created=CREATED, expires=EXPIRES), signer
        )
        save_in_store(store, data, signature)
        line.cids.append(cid)
        line.signed.append((data, signature.to_text()))
    return line


@pytest.fixture(scope="module")
def keys() -> dict[str, SecretKey]:
    return {name: signing.generate() for name in ("a", "b", "c")}


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, SecretKey]) -> Line:
    """Releases #1, #2, #3 of 'demo', all signed by key a."""
    root = tmp_path_factory.mktemp("line")
    store = Store(root / "store").open()
    return build_line(root, store, "demo", ["1.0", "2.0", "3.0"], [keys["a"]] * 3)


def check(
    line: Line, tmp_path: Path, number: int, pubkeys: Sequence[SecretKey] = (), *,
    data: bytes | None = None, signature: str | None = None, now: datetime | None = None,
    store: Store | None = None,
) -> Verified:
    """Verify release `number`'s record (or the given bytes) with the state in tmp_path."""
    record, text = line.signed[number - 1]
    return verify_release(
        store or line.store, record if data is None else data,
        text if signature is None else signature,
        pubkeys=[key.public_key() for key in pubkeys], state_path=tmp_path / "trust.json",
        now=now, record_label="demo.record",
    )


# -- the record ----------------------------------------------------------------------------------


def test_the_record_is_canonical_toml_with_every_field_in_the_comment(line: Line) -> None:
    data, text = line.signed[1]
    record = ReleaseRecord.from_bytes(data)
    assert data.decode().splitlines() == [
        'name = "demo"',
        "sequence = 2",
        f'cid = "{line.cids[1]}"',
        f'previous = "{line.cids[0]}"',
        f"created = {CREATED.strftime('%Y-%m-%dT%H:%M:%SZ')}",
        f"expires = {EXPIRES.strftime('%Y-%m-%dT%H:%M:%SZ')}",
    ]
    assert text.splitlines()[2] == (
        f"trusted comment: ipwhl-release name=demo sequence=2 cid={line.cids[1]} "
        f"previous={line.cids[0]} created={record.fields()['created']} "
        f"expires={record.fields()['expires']}"
    )
    first = ReleaseRecord.from_bytes(line.signed[0][0])
    assert first.previous is None
    assert "previous" not in line.signed[0][0].decode()


VALID = (
    'name = "demo"\nsequence = 1\ncid = "{cid}"\ncreated = 2026-01-01T00:00:00Z\n'
    "expires = 2026-02-01T00:00:00Z\n"
)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('name = "demo"\n', "", "missing key 'name'"),
        ('name = "demo"', "name = 1", "name 1 is not a release line name"),
        ('name = "demo"', 'name = "Demo"', "not a release line name"),
        ("sequence = 1", "sequence = 0", "not a positive integer"),
        ("sequence = 1", "sequence = true", "not a positive integer"),
        ('cid = "{cid}"', 'cid = "x"', "cid 'x' is not a CID"),
        ('cid = "{cid}"', "cid = 1", "cid 1 is not a CID"),
        ("created = 2026-01-01", "created = 2026-03-01", "expires before it was created"),
        ("created = 2026-01-01T00:00:00Z", "created = 2026-01-01T00:00:00",
         "not a date-time with an offset"),
        ("expires = 2026-02-01T00:00:00Z", 'expires = "2026-02-01T00:00:00Z"',
         "not a date-time with an offset"),
        ('name = "demo"\nsequence = 1', 'sequence = 1\nname = "demo"', "not in canonical form"),
        ("sequence = 1", "sequence = +1", "not in canonical form"),
        ("\nexpires", "\nextra = 1\nexpires", "unknown key 'extra'"),
        ('name = "demo"', "= broken", "not a release record"),
    ],
)
def test_malformed_records(line: Line, old: str, new: str, message: str) -> None:
    valid = VALID.replace("{cid}", line.cids[0])
    assert ReleaseRecord.from_bytes(valid.encode()).sequence == 1
    text = valid.replace(old.replace("{cid}", line.cids[0]), new, 1)
    assert text != valid
    with pytest.raises(InvalidRecord, match=message):
        ReleaseRecord.from_bytes(text.encode(), "r")


def test_times_and_durations() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("1w2d3h4m5s") == timedelta(days=9, hours=3, minutes=4, seconds=5)
    for bad in ("", "30", "d", "0d", "30x", "-1d"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_time("2026-11-25T01:00:00+01:00") == datetime(2026, 11, 25, tzinfo=UTC)
    assert parse_time("2026-11-25") == datetime(2026, 11, 25, tzinfo=UTC)
    with pytest.raises(ValueError, match="no UTC offset"):
        parse_time("2026-11-25T00:00:00")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert record_times(None, timedelta(days=2), {}, now) == (now, now + timedelta(days=2))
    epoch = {"SOURCE_DATE_EPOCH": str(int((now - timedelta(days=1)).timestamp()))}
    assert record_times(None, timedelta(days=2), epoch, now)[0] == now - timedelta(days=1)
    with pytest.raises(ValueError, match="expired already"):
        record_times(None, timedelta(hours=1), epoch, now)
    with pytest.raises(ValueError, match="before it is created"):
        record_times(now, now - timedelta(days=1), {}, now)


# -- verifying -----------------------------------------------------------------------------------


def test_verify_remembers_the_release(line: Line, tmp_path: Path, keys: dict) -> None:
    verified = check(line, tmp_path, 1, [keys["a"]])
    assert (verified.status, verified.record.cid) == ("first use", line.cids[0])
    assert verified.signer == keys["a"].public_key()
    state = load_state(tmp_path / "trust.json")
    assert state["demo"].cid == line.cids[0] and state["demo"].sequence == 1
    assert check(line, tmp_path, 1, [keys["a"]]).status == "same release"
    assert check(line, tmp_path, 2, [keys["a"]]).status == "new release"
    # Once a release is accepted, its signer is trusted for the next without --pubkey.
    assert check(line, tmp_path, 3).status == "new release"
    assert load_state(tmp_path / "trust.json")["demo"].sequence == 3


def test_no_key_at_all(line: Line, tmp_path: Path) -> None:
    with pytest.raises(InvalidKey, match="pass --pubkey"):
        check(line, tmp_path, 1)


def _replace(data: bytes, old: str, new: str) -> bytes:
    assert old.encode() in data
    return data.replace(old.encode(), new.encode(), 1)


@pytest.mark.parametrize(
    ("field_name", "old", "new"),
    [
        ("name", 'name = "demo"', 'name = "evil"'),
        ("sequence", "sequence = 2", "sequence = 5"),
        ("cid", "cid = \"{2}", "cid = \"{1}"),
        ("previous", "previous = \"{1}", "previous = \"{3}"),
        ("created", "created = 20", "created = 19"),
        ("expires", "expires = 20", "expires = 21"),
    ],
)
def test_each_changed_field_is_named(
    line: Line, tmp_path: Path, keys: dict, field_name: str, old: str, new: str
) -> None:
    def fill(text: str) -> str:
        for number in (1, 2, 3):
            text = text.replace(f"{{{number}}}", line.cids[number - 1])
        return text

    tampered = _replace(line.signed[1][0], fill(old), fill(new))
    with pytest.raises(BadSignature) as caught:
        check(line, tmp_path, 2, [keys["a"]], data=tampered)
    message = str(caught.value)
    assert message.startswith(f"demo.record was changed after signing: its {field_name} is ")
    assert caught.value.exit_code == 11
    assert not (tmp_path / "trust.json").exists()


def test_a_changed_layout_is_refused(line: Line, tmp_path: Path, keys: dict) -> None:
    tampered = _replace(line.signed[1][0], "sequence = 2", "sequence =  2")
    with pytest.raises(BadSignature, match="its fields read as signed, but its bytes differ"):
        check(line, tmp_path, 2, [keys["a"]], data=tampered)


def _signature_bytes(text: str, index: int) -> str:
    lines = text.splitlines()
    raw = bytearray(base64.b64decode(lines[1]))
    raw[index] ^= 0x01
    lines[1] = base64.b64encode(bytes(raw)).decode()
    return "\n".join(lines) + "\n"


def test_a_changed_trusted_comment_is_refused(line: Line, tmp_path: Path, keys: dict) -> None:
    text = line.signed[1][1].replace(" sequence=2 ", " sequence=5 ")
    with pytest.raises(BadSignature, match=r"trusted comment of demo\.record\.minisig was changed"):
        check(line, tmp_path, 2, [keys["a"]], signature=text)


def test_a_changed_signature_is_refused(line: Line, tmp_path: Path, keys: dict) -> None:
    with pytest.raises(BadSignature, match=r"does not verify with key .*: it was altered"):
        check(line, tmp_path, 2, [keys["a"]], signature=_signature_bytes(line.signed[1][1], 20))
    # A changed key id names a key nobody trusts.
    with pytest.raises(BadSignature, match="which is not trusted for release line 'demo'"):
        check(line, tmp_path, 2, [keys["a"]], signature=_signature_bytes(line.signed[1][1], 3))
    with pytest.raises(BadSignature, match="not a minisign signature"):
        check(line, tmp_path, 2, [keys["a"]], signature="garbage\n")


def test_a_wrong_key_is_refused(line: Line, tmp_path: Path, keys: dict) -> None:
    with pytest.raises(BadSignature) as caught:
        check(line, tmp_path, 1, [keys["b"]])
    assert str(caught.value) == (
        f"demo.record is signed by key {keys['a'].public_key().key_id_text}, which is not "
        f"trusted for release line 'demo' (trusted: {keys['b'].public_key().key_id_text} (given))"
    )


def test_a_record_signed_by_a_plain_minisign_comment_is_refused(
    line: Line, tmp_path: Path, keys: dict
) -> None:
    signature = signing.sign(keys["a"], line.signed[0][0], "timestamp:1 file:demo.record")
    with pytest.raises(InvalidRecord, match="not the signature of an ipwhl release record"):
        check(line, tmp_path, 1, [keys["a"]], signature=signature.to_text())


def test_rollback_is_refused(line: Line, tmp_path: Path, keys: dict) -> None:
    check(line, tmp_path, 3, [keys["a"]])
    for older in (1, 2):
        with pytest.raises(Rollback, match=f"rollback refused: .* release #{older} of") as caught:
            check(line, tmp_path, older, [keys["a"]])
        assert caught.value.exit_code == 12
    assert load_state(tmp_path / "trust.json")["demo"].sequence == 3


@pytest.fixture(scope="module")
def other_line(
    tmp_path_factory: pytest.TempPathFactory, line: Line, keys: dict[str, SecretKey]
) -> Line:
    """Another history of 'demo' (different releases #1 and #2) in the same store."""
    root = tmp_path_factory.mktemp("other")
    return build_line(root, line.store, "demo", ["1.1", "2.1"], [keys["a"]] * 2)


def test_a_fork_is_refused(line: Line, other_line: Line, tmp_path: Path, keys: dict) -> None:
    check(line, tmp_path, 1, [keys["a"]])
    # Release #2 of the other history follows the other #1, not the accepted one.
    with pytest.raises(Rollback, match=r"fork refused: release #2 of .* not release #1"):
        check(other_line, tmp_path, 2, [keys["a"]])
    check(line, tmp_path, 2, [keys["a"]])
    with pytest.raises(Rollback, match=r"fork refused: the record names .* as release #2"):
        check(other_line, tmp_path, 2, [keys["a"]])


def test_skipped_releases_are_walked(
    line: Line, other_line: Line, tmp_path: Path, keys: dict
) -> None:
    check(line, tmp_path, 1, [keys["a"]])
    assert check(line, tmp_path, 3, [keys["a"]]).status == "new release"
    state = tmp_path / "other"
    state.mkdir()
    check(other_line, state, 1, [keys["a"]])
    with pytest.raises(Rollback, match="does not descend from release #1"):
        check(line, state, 3, [keys["a"]])


def test_a_skipped_release_missing_from_the_store(
    line: Line, tmp_path: Path, keys: dict
) -> None:
    copy = Store(tmp_path / "store")
    shutil.copytree(line.store.root, copy.root)
    copy.block_path(CID.parse(line.cids[1])).unlink()
    check(line, tmp_path, 1, [keys["a"]], store=copy)
    with pytest.raises(Unavailable, match=r"release #2 \(.*\) on the way is not in the store"):
        check(line, tmp_path, 3, [keys["a"]], store=copy)


def test_a_release_not_in_the_store(line: Line, tmp_path: Path, keys: dict) -> None:
    empty = Store(tmp_path / "empty").open()
    with pytest.raises(Unavailable, match="is not in the store") as caught:
        check(line, tmp_path, 1, [keys["a"]], store=empty)
    assert caught.value.exit_code == 14
    assert not (tmp_path / "trust.json").exists()


def test_expired_records_are_refused(line: Line, tmp_path: Path, keys: dict) -> None:
    later = EXPIRES + timedelta(days=2)
    with pytest.raises(Expired, match=r"expired at .* \(2 day\(s\) ago\)") as caught:
        check(line, tmp_path, 1, [keys["a"]], now=later)
    assert caught.value.exit_code == 13
    # A little clock skew is allowed.
    check(line, tmp_path, 1, [keys["a"]], now=EXPIRES + timedelta(minutes=4))
    with pytest.raises(Expired):
        check(line, tmp_path, 1, [keys["a"]], now=EXPIRES + timedelta(minutes=6))


def test_a_record_that_lies_about_its_release(line: Line, tmp_path: Path, keys: dict) -> None:
    lie = ReleaseRecord("demo", 7, line.cids[0], None, CREATED, EXPIRES)
    data, signature = sign_record(lie, keys["a"])
    with pytest.raises(InvalidRecord, match=r"but its ipwhl/release\.toml says 'demo' #1"):
        check(line, tmp_path, 1, [keys["a"]], data=data, signature=signature.to_text())


def test_the_state_file(tmp_path: Path, line: Line, keys: dict) -> None:
    assert default_state_path({"IPWHL_STATE": "/x/s.json"}) == Path("/x/s.json")
    assert default_state_path({"XDG_STATE_HOME": "/st"}) == Path("/st/ipwhl/trust.json")
    assert default_state_path({}).parts[-4:] == (".local", "state", "ipwhl", "trust.json")
    (tmp_path / "trust.json").write_text("{not json")
    with pytest.raises(IpwhlError, match=r"unreadable .* move it aside"):
        check(line, tmp_path, 1, [keys["a"]])
    (tmp_path / "trust.json").unlink()
    check(line, tmp_path, 1, [keys["a"]])
    data = json.loads((tmp_path / "trust.json").read_text())
    assert data["format"] == 1 and set(data["releases"]) == {"demo"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- the chain in the DAG, and key rotation ------------------------------------------------------


def _release_file(store: Store, cid: str, name: str) -> bytes | None:
    try:
        node = resolve(store, CID.parse(cid), ["ipwhl", name])
    except NotFound:
        return None
    return b"".join(iter_bytes(store, node.cid))


def test_each_release_carries_the_previous_signed_record(line: Line) -> None:
    assert _release_file(line.store, line.cids[0], "previous.record") is None
    for number in (2, 3):
        cid, (data, text) = line.cids[number - 1], line.signed[number - 2]
        assert _release_file(line.store, cid, "previous.record") == data
        assert _release_file(line.store, cid, "previous.record.minisig") == text.encode()
    assert stored_record(line.store, line.cids[0]) == (line.signed[0][0],
                                                       line.signed[0][1].encode())


@pytest.fixture(scope="module")
def rotating(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, SecretKey]) -> Line:
    """'rot' #1 signed by a, allowing a and b; #2 signed by b, allowing only b; #3 signed by a."""
    root = tmp_path_factory.mktemp("rot")
    store = Store(root / "store").open()
    return build_line(root, store, "rot", ["1", "2", "3"], [keys["a"], keys["b"], keys["a"]],
                      [[keys["a"], keys["b"]], [keys["b"]], None])


def test_key_rotation(rotating: Line, tmp_path: Path, keys: dict) -> None:
    listed = _release_file(rotating.store, rotating.cids[0], "keys")
    assert listed is not None and signing.parse_public_keys(listed.decode()) == (
        keys["a"].public_key(), keys["b"].public_key())
    check(rotating, tmp_path, 1, [keys["a"]])
    # #2 is signed by b, which #1's ipwhl/keys allows: no --pubkey needed.
    verified = check(rotating, tmp_path, 2)
    assert verified.signer == keys["b"].public_key()
    assert load_state(tmp_path / "trust.json")["rot"].keys == (keys["b"].public_key().to_base64(),)
    # #2 allows only b: a record signed by a, the retired key, is refused...
    with pytest.raises(BadSignature, match=r"not trusted for release line 'rot' \(trusted: "
                       f"{keys['b'].public_key().key_id_text} \\(allowed by release #2\\)"):
        check(rotating, tmp_path, 3)
    # ...unless the user trusts a again explicitly.
    assert check(rotating, tmp_path, 3, [keys["a"]]).status == "new release"


def test_rotation_to_an_unlisted_key_is_refused(
    rotating: Line, tmp_path: Path, keys: dict
) -> None:
    check(rotating, tmp_path, 1, [keys["a"]])
    data, signature = sign_record(ReleaseRecord.from_bytes(rotating.signed[1][0]), keys["c"])
    with pytest.raises(BadSignature, match="which is not trusted"):
        check(rotating, tmp_path, 2, data=data, signature=signature.to_text())


# -- the command line ----------------------------------------------------------------------------


@pytest.fixture
def key_files(tmp_path: Path, keys: dict, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("IPWHL_KEY_PASSPHRASE", "test passphrase")
    monkeypatch.setenv("IPWHL_STATE", str(tmp_path / "state.json"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    public, secret = tmp_path / "a.pub", tmp_path / "a.key"
    signing.write_key_pair(keys["a"], public, secret, "test passphrase", **CHEAP)
    return public, secret


def test_cli_sign_then_verify(
    line: Line, tmp_path: Path, key_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    public, secret = key_files
    store = ["--store", str(line.store.root)]
    record = tmp_path / "demo-1.record"
    assert main(["sign", line.cids[0], "--key", str(secret), "-o", str(record),
                 "--created", "2026-01-01T00:00:00Z", "--expires", "2100-01-01", *store]) == 0
    assert "signed demo #1" in capsys.readouterr().err
    assert ReleaseRecord.from_bytes(record.read_bytes()).expires.year == 2100
    assert main(["verify", str(record), "--pubkey", str(public), *store]) == 0
    captured = capsys.readouterr()
    assert captured.out == line.cids[0] + "\n"
    assert "demo #1 signed by key" in captured.err and "(first use)" in captured.err
    if MINISIGN is not None:
        done = subprocess.run([MINISIGN, "-V", "-p", str(public), "-m", str(record)],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert f"ipwhl-release name=demo sequence=1 cid={line.cids[0]}" in done.stdout


def test_cli_exit_codes(
    line: Line, tmp_path: Path, keys: dict, key_files: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    public, _ = key_files
    store = ["--store", str(line.store.root)]

    def record(number: int, data: bytes | None = None, signature: str | None = None) -> str:
        path = tmp_path / f"r{number}.record"
        path.write_bytes(data or line.signed[number - 1][0])
        path.with_name(path.name + ".minisig").write_text(signature or line.signed[number - 1][1])
        return str(path)

    def run(*args: str) -> tuple[int, str]:
        code = main([*args, *store])
        return code, capsys.readouterr().err

    tampered = _replace(line.signed[0][0], "sequence = 1", "sequence = 9")
    assert run("verify", record(1, tampered), "--pubkey", str(public))[0] == 11
    assert run("verify", record(3), "--pubkey", str(public))[0] == 0
    code, err = run("verify", record(2), "--pubkey", str(public))
    assert code == 12 and "rollback refused" in err
    expired = ReleaseRecord.from_bytes(line.signed[2][0])
    old = ReleaseRecord(expired.name, expired.sequence, expired.cid, expired.previous,
                        NOW - timedelta(days=40), NOW - timedelta(days=10))
    data, signature = sign_record(old, keys["a"])
    code, err = run("verify", record(3, data, signature.to_text()), "--pubkey", str(public))
    assert code == 13 and "expired at" in err
    code = main(["verify", record(1), "--pubkey", str(public), "--state",
                 str(tmp_path / "fresh.json"), "--store", str(tmp_path / "nothing")])
    assert code == 14 and "is not in the store" in capsys.readouterr().err
    (tmp_path / "r1.record.minisig").unlink()
    code, err = run("verify", str(tmp_path / "r1.record"), "--pubkey", str(public))
    assert code == 11 and "is not signed: " in err
    code, err = run("verify", record(1), "--pubkey", str(tmp_path / "missing.pub"))
    assert code == 10 and "cannot read public key file" in err


def test_cli_build_sign_and_the_next_build_carries_the_record(
    tmp_path: Path, key_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    public, secret = key_files
    store = ["--store", str(tmp_path / "store")]
    monkeypatch.chdir(tmp_path)
    first = write_release(tmp_path / "r1", [Project("demo", "1.0")], name="cli")
    assert main(["build", str(first.path), "--sign", str(secret), *store]) == 0
    cid1 = capsys.readouterr().out.strip()
    assert (tmp_path / "cli-1.record").exists() and (tmp_path / "cli-1.record.minisig").exists()
    second = write_release(tmp_path / "r2", [Project("demo", "2.0")], name="cli")
    assert main(["build", str(second.path), "--on-top-of", cid1, "--sign", str(secret),
                 "--record", "two.record", "--expires", "7d", *store]) == 0
    cid2 = capsys.readouterr().out.strip()
    assert CID.parse(cid2)
    carried = _release_file(Store(tmp_path / "store"), cid2, "previous.record")
    assert carried == (tmp_path / "cli-1.record").read_bytes()
    assert main(["verify", "cli-1.record", "--pubkey", str(public), *store]) == 0
    assert main(["verify", "two.record", *store]) == 0
    assert capsys.readouterr().out.split() == [cid1, cid2]


def test_cli_sign_refuses_a_record_born_expired(
    line: Line, tmp_path: Path, key_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    _, secret = key_files
    code = main(["sign", line.cids[0], "--key", str(secret), "-o", str(tmp_path / "r"),
                 "--created", "2000-01-01T00:00:00Z", "--store", str(line.store.root)])
    assert code == 2 and "would be expired already" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sign", line.cids[0], "--key", str(secret), "-o", "r", "--expires", "soon"])


def test_cli_use_prints_the_settings(
    line: Line, tmp_path: Path, key_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    public, _ = key_files
    record = tmp_path / "demo.record"
    write_signed(record, line.signed[0][0], signing.Signature.from_text(line.signed[0][1]))
    assert main(["use", str(record), "--gateway", "http://127.0.0.1:8080/", "--pubkey",
                 str(public), "--print", "--scope", "user", "--store",
                 str(line.store.root)]) == 0
    url = f"http://127.0.0.1:8080/ipfs/{line.cids[0]}/simple/"
    assert capsys.readouterr().out.splitlines() == [
        f"pip config --user set global.index-url {url}",
        f"export UV_INDEX_URL={url}",
    ]


def test_cli_use_sets_pips_index_in_a_venv(
    line: Line, tmp_path: Path, key_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pip = pytest.importorskip("pip")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # The new venv borrows this interpreter's pip; its config is still the venv's own.
    monkeypatch.setenv("PYTHONPATH", str(Path(pip.__file__).parents[1]))
    monkeypatch.delenv("PIP_CONFIG_FILE", raising=False)
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.setenv("VIRTUAL_ENV", str(venv))
    public, _ = key_files
    record = tmp_path / "demo.record"
    write_signed(record, line.signed[0][0], signing.Signature.from_text(line.signed[0][1]))
    assert main(["use", str(record), "--gateway", "http://gw.test", "--pubkey", str(public),
                 "--store", str(line.store.root)]) == 0
    url = f"http://gw.test/ipfs/{line.cids[0]}/simple/"
    out = capsys.readouterr().out
    assert f"pip: global.index-url = {url}" in out and f"UV_INDEX_URL={url}" in out
    config = (venv / "pip.conf").read_text()
    assert "[global]" in config and f"index-url = {url}" in config


def test_cli_verify_fetches_a_missing_release_from_a_gateway(
    line: Line, tmp_path: Path, keys: dict, key_files: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ipwhl.gateway import running
    from ipwhl.remote import missing_blocks

    monkeypatch.delenv("IPWHL_GATEWAYS", raising=False)
    public, _ = key_files
    record = tmp_path / "demo.record"
    empty = tmp_path / "client-store"
    with running(line.store) as url:
        # A record that fails its checks fetches nothing.
        tampered = _replace(line.signed[1][0], "sequence = 2", "sequence = 9")
        write_signed(record, tampered, signing.Signature.from_text(line.signed[1][1]))
        assert main(["verify", str(record), "--pubkey", str(public), "--store", str(empty),
                     "--from", url]) == 11
        assert not empty.exists()
        write_signed(record, line.signed[1][0], signing.Signature.from_text(line.signed[1][1]))
        assert main(["verify", str(record), "--pubkey", str(public), "--store", str(empty)]) == 14
        assert "pass --from GATEWAY" in capsys.readouterr().err
        assert main(["verify", str(record), "--pubkey", str(public), "--store", str(empty),
                     "--from", url]) == 0
    assert capsys.readouterr().out == line.cids[1] + "\n"
    assert missing_blocks(Store(empty), CID.parse(line.cids[1])) == []
