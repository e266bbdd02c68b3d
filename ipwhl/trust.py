"""Release records and the client's trust in them: sign a release, verify it, remember it.

A release record names one release of a line — name, sequence, root CID, previous CID, when it
was signed and until when it holds — in a small canonical TOML file signed with minisign. Its
trusted comment repeats every field, so `minisign -V` shows what was signed and a changed field
can be named. A client keeps, per release line, the last release it accepted (the state file) and
refuses a record that goes back (rollback), branches off (fork) or has expired (freeze).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import tomli

from .cid import CID, InvalidCID
from .errors import IpwhlError, NotFound
from .signing import (
    BadSignature,
    InvalidKey,
    PublicKey,
    SecretKey,
    Signature,
    parse_public_keys,
    sign,
    verify,
)
from .store import Store

__all__ = [
    "DEFAULT_SKEW",
    "Accepted",
    "Expired",
    "InvalidRecord",
    "ReleaseRecord",
    "Rollback",
    "Unavailable",
    "Verified",
    "default_state_path",
    "format_time",
    "index_url",
    "load_state",
    "make_record",
    "parse_duration",
    "parse_time",
    "pip_config_command",
    "record_times",
    "save_in_store",
    "sign_record",
    "signature_path",
    "stored_record",
    "verify_release",
    "write_signed",
]

DEFAULT_SKEW = timedelta(minutes=5)
STATE_FORMAT = 1
_COMMENT_TAG = "ipwhl-release"
_FIELDS = ("name", "sequence", "cid", "previous", "created", "expires")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class InvalidRecord(BadSignature):
    """A signed record is not a release record, or disagrees with its signature or its release."""


class Rollback(IpwhlError):
    """A record older than, or branching off, the release this client last accepted."""

    exit_code = 12


class Expired(IpwhlError):
    """A record past its expiry: the publisher stopped vouching for it (a frozen mirror?)."""

    exit_code = 13


class Unavailable(NotFound):
    """A release a record names, or one it must chain through, is not in the store."""

    exit_code = 14


# -- times ------------------------------------------------------------------------------------


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC to the second, as records write times."""
    return moment.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def parse_time(text: str) -> datetime:
    """An RFC 3339 date-time with an offset (or a date, meaning midnight UTC); ValueError else."""
    moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    if moment.tzinfo is None:
        if "T" in text or " " in text.strip():
            raise ValueError(f"{text!r} has no UTC offset; write it as 2026-11-25T00:00:00Z")
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def parse_duration(text: str) -> timedelta:
    """'30d', '12h', '2w', '1d12h' (s, m, h, d, w) as a timedelta; ValueError otherwise."""
    parts = _DURATION.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"{text!r} is not a duration such as 30d, 12h or 2w")
    seconds = sum(int(number) * _UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return timedelta(seconds=seconds)


# -- the record -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseRecord:
    """What a publisher signs: release `sequence` of line `name` is `cid`, following `previous`,
    vouched for from `created` until `expires`."""

    name: str
    sequence: int
    cid: str
    previous: str | None
    created: datetime
    expires: datetime

    def fields(self) -> dict[str, str]:
        """Every field as text, in record order ('-' for no previous)."""
        return {
            "name": self.name,
            "sequence": str(self.sequence),
            "cid": self.cid,
            "previous": self.previous or "-",
            "created": format_time(self.created),
            "expires": format_time(self.expires),
        }

    def to_bytes(self) -> bytes:
        """The canonical record file: TOML, fixed order, one key a line."""
        lines = [
            f'name = "{self.name}"',
            f"sequence = {self.sequence}",
            f'cid = "{self.cid}"',
        ]
        if self.previous is not None:
            lines.append(f'previous = "{self.previous}"')
        lines.append(f"created = {format_time(self.created)}")
        lines.append(f"expires = {format_time(self.expires)}")
        return ("\n".join(lines) + "\n").encode("ascii")

    def trusted_comment(self) -> str:
        """The minisign trusted comment: every field again, so `minisign -V` shows them."""
        return " ".join([_COMMENT_TAG, *(f"{k}={v}" for k, v in self.fields().items())])

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "record") -> ReleaseRecord:
        """Parse a record file; InvalidRecord unless it is a canonical, well-formed record."""
        try:
            values = tomli.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, tomli.TOMLDecodeError, RecursionError) as error:
            raise InvalidRecord(f"{source} is not a release record: {error}", "record") from None

        def bad(problem: str) -> InvalidRecord:
            return InvalidRecord(f"{source} is not a release record: {problem}", "record")

        unknown = sorted(set(values) - set(_FIELDS))
        if unknown:
            raise bad(f"unknown key {unknown[0]!r}, expected only {', '.join(_FIELDS)}")
        for key in ("name", "sequence", "cid", "created", "expires"):
            if key not in values:
                raise bad(f"missing key {key!r}")
        name, sequence = values["name"], values["sequence"]
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise bad(f"name {name!r} is not a release line name")
        if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 1:
            raise bad(f"sequence {sequence!r} is not a positive integer")
        cids = {}
        for key in ("cid", "previous"):
            if key in values:
                try:
                    cids[key] = str(CID.parse(values[key]))
                except (InvalidCID, TypeError, AttributeError):
                    raise bad(f"{key} {values[key]!r} is not a CID") from None
        times = {}
        for key in ("created", "expires"):
            value = values[key]
            if not isinstance(value, datetime) or value.tzinfo is None:
                raise bad(f"{key} {value!r} is not a date-time with an offset")
            times[key] = value.astimezone(UTC)
        if times["expires"] <= times["created"]:
            raise bad("it expires before it was created")
        record = cls(name, sequence, cids["cid"], cids.get("previous"), times["created"],
                     times["expires"])
        if record.to_bytes() != data:
            raise bad("it is not in canonical form (as `ipwhl sign` writes it)")
        return record


def _comment_fields(comment: str) -> dict[str, str] | None:
    tag, _, rest = comment.partition(" ")
    if tag != _COMMENT_TAG:
        return None
    fields = dict(item.partition("=")[::2] for item in rest.split(" ") if item)
    return fields if set(fields) == set(_FIELDS) else None


def _loose_fields(data: bytes) -> dict[str, str] | None:
    """The fields of a (perhaps changed) record as text, without validating them."""
    try:
        values = tomli.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomli.TOMLDecodeError, RecursionError):
        return None
    fields = {}
    for key in _FIELDS:
        value = values.get(key)
        if isinstance(value, datetime) and value.tzinfo is not None:
            fields[key] = format_time(value)
        elif value is None:
            fields[key] = "-" if key == "previous" else "(missing)"
        else:
            fields[key] = str(value)
    return fields


# -- signing ----------------------------------------------------------------------------------


def make_record(
    store: Store, cid: str, *, created: datetime, expires: datetime
) -> ReleaseRecord:
    """The record for the release `cid` in the store: name, sequence and previous from its
    ipwhl/release.toml."""
    from .build import read_release_info  # the pipeline, only when signing

    root = CID.parse(cid)
    info = read_release_info(store, root)
    if expires <= created:
        raise ValueError("a record must expire after it is created")
    return ReleaseRecord(
        name=str(info["name"]),
        sequence=int(info["sequence"]),
        cid=str(root),
        previous=info.get("previous"),
        created=created.astimezone(UTC).replace(microsecond=0),
        expires=expires.astimezone(UTC).replace(microsecond=0),
    )


def sign_record(record: ReleaseRecord, key: SecretKey) -> tuple[bytes, Signature]:
    """The record's bytes and their minisign signature."""
    data = record.to_bytes()
    untrusted = f"ipwhl release record {record.name} #{record.sequence}"
    return data, sign(key, data, record.trusted_comment(), untrusted)


def signature_path(path: Path) -> Path:
    """Where the signature of the record at `path` lies: RECORD.minisig, as minisign expects."""
    return path.with_name(path.name + ".minisig")


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False)
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise


def write_signed(path: Path, data: bytes, signature: Signature) -> None:
    """Write RECORD and RECORD.minisig, each atomically."""
    _atomic_write(path, data)
    _atomic_write(signature_path(path), signature.to_text().encode("utf-8"))


def save_in_store(store: Store, data: bytes, signature: Signature) -> None:
    """Keep a signed record in the store (signatures/<cid>.record[.minisig]), so the next release
    of the line carries it in its ipwhl/ folder."""
    record = ReleaseRecord.from_bytes(data)
    for final, content in zip(
        store.signature_files(record.cid), (data, signature.to_text().encode("utf-8")), strict=True
    ):
        with store.temporary() as (temp, handle):
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, final)


def stored_record(store: Store, cid: str) -> tuple[bytes, bytes] | None:
    """The signed record of release `cid` kept in the store (record, signature), or None."""
    return store.signed_record(cid)


# -- the client's state -----------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """The last release of a line this client accepted, and the keys allowed to sign the next."""

    sequence: int
    cid: str
    expires: str
    signer: str  # base64 public key that signed it
    keys: tuple[str, ...]  # base64 public keys allowed to sign the next release

    def to_json(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "cid": self.cid, "expires": self.expires,
                "signer": self.signer, "keys": list(self.keys)}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Accepted:
        return cls(int(value["sequence"]), str(value["cid"]), str(value["expires"]),
                   str(value["signer"]), tuple(str(k) for k in value["keys"]))


def default_state_path(environ: Mapping[str, str] | None = None) -> Path:
    """$IPWHL_STATE, else $XDG_STATE_HOME/ipwhl/trust.json, else ~/.local/state/ipwhl/trust.json."""
    environ = os.environ if environ is None else environ
    if environ.get("IPWHL_STATE"):
        return Path(environ["IPWHL_STATE"])
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ipwhl" / "trust.json"


def load_state(path: Path) -> dict[str, Accepted]:
    """The accepted release of every line in the state file (none if there is no file yet)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise IpwhlError(f"cannot read the trust state {path}: {error.strerror}") from None
    try:
        data = json.loads(raw)
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {STATE_FORMAT}")
        return {name: Accepted.from_json(value) for name, value in data["releases"].items()}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise IpwhlError(
            f"the trust state {path} is unreadable ({error}); move it aside to start again, "
            "which forgets every release accepted so far"
        ) from None


def _save_state(path: Path, lines: Mapping[str, Accepted]) -> None:
    data = {"format": STATE_FORMAT,
            "releases": {name: lines[name].to_json() for name in sorted(lines)}}
    _atomic_write(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the state's lock file, so two verifications cannot lose each other's update."""
    try:
        import fcntl
    except ImportError:  # Windows: the atomic rename still keeps the file whole
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


# -- verification -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    """A record that passed every check, the key that signed it and what changed."""

    record: ReleaseRecord
    signer: PublicKey
    status: str  # "first use", "new release", "same release"
    previous: Accepted | None


def _release_file(store: Store, cid: str, name: str) -> bytes | None:
    from .dag import iter_bytes, resolve

    try:
        node = resolve(store, CID.parse(cid), ["ipwhl", name])
    except NotFound:
        return None
    return b"".join(iter_bytes(store, node.cid))


def _release_info(store: Store, cid: str) -> Mapping[str, Any]:
    from .build import read_release_info
    from .releasefile import NotARelease

    try:
        return read_release_info(store, CID.parse(cid))
    except NotARelease:
        raise  # all there, and not a release: fetching more would not help
    except NotFound as error:
        raise Unavailable(f"release {cid} is only partly in the store: {error}") from None


def _available(
    store: Store, cid: str, fetch: Callable[[str], None] | None, missing: str
) -> None:
    """Make sure release `cid` is in the store, fetching it if a `fetch` is given."""
    if fetch is not None:
        fetch(cid)
    if not store.has_block(CID.parse(cid)):
        hint = "" if fetch is not None else " (or pass --from GATEWAY to fetch it)"
        raise Unavailable(f"{missing}{hint}")


def _choose_key(
    signature: Signature, name: str, pubkeys: Sequence[PublicKey], accepted: Accepted | None,
    label: str,
) -> list[PublicKey]:
    trusted: list[tuple[PublicKey, str]] = [(key, "given") for key in pubkeys]
    if accepted is not None:
        for text in accepted.keys:
            trusted.append(
                (PublicKey.from_base64(text), f"allowed by release #{accepted.sequence}")
            )
    matching = [key for key, _ in trusted if key.key_id == signature.key_id]
    if matching:
        return matching
    if not trusted:
        raise InvalidKey(
            f"no key to check {label} with: pass --pubkey with the release line's public key"
        )
    known = ", ".join(f"{key.key_id_text} ({why})" for key, why in trusted)
    raise BadSignature(
        f"{label} is signed by key {signature.key_id_text}, which is not trusted for "
        f"release line {name!r} (trusted: {known})", "key",
    )


def _explain(
    error: BadSignature, data: bytes, signed: Mapping[str, str], record_label: str,
    signature_label: str, key: PublicKey,
) -> BadSignature:
    """Turn a failed minisign check into what a user can act on: which part was changed."""
    if error.part == "comment":
        return BadSignature(
            f"the trusted comment of {signature_label} was changed after signing", "comment"
        )
    if error.part != "message":
        return BadSignature(
            f"the signature in {signature_label} does not verify with key {key.key_id_text}: "
            "it was altered, or made by another key with the same id", error.part,
        )
    found = _loose_fields(data)
    if found is None:
        return BadSignature(
            f"{record_label} was changed after signing: it is no longer a TOML record", "message"
        )
    for field_name in _FIELDS:
        if found[field_name] != signed[field_name]:
            return BadSignature(
                f"{record_label} was changed after signing: its {field_name} is "
                f"{found[field_name]!r}, the signature says {signed[field_name]!r}", "message",
            )
    return BadSignature(
        f"{record_label} was changed after signing: its fields read as signed, but its bytes "
        "differ", "message",
    )


def _check_chain(record: ReleaseRecord, accepted: Accepted | None) -> str:
    """Compare a record with the last accepted release of its line; Rollback if it goes back
    or forks. Returns the status, or "gap" when releases in between must be walked."""
    if accepted is None:
        return "first use"
    line = f"release line {record.name!r}"
    if record.sequence < accepted.sequence:
        raise Rollback(
            f"rollback refused: the record names release #{record.sequence} of {line} "
            f"({record.cid}), older than release #{accepted.sequence} ({accepted.cid}) "
            "this client already accepted"
        )
    if record.sequence == accepted.sequence:
        if record.cid != accepted.cid:
            raise Rollback(
                f"fork refused: the record names {record.cid} as release #{record.sequence} of "
                f"{line}, but this client accepted {accepted.cid} as #{accepted.sequence}"
            )
        return "same release"
    if record.sequence == accepted.sequence + 1:
        if record.previous != accepted.cid:
            raise Rollback(
                f"fork refused: release #{record.sequence} of {line} follows "
                f"{record.previous or 'nothing'}, not release #{accepted.sequence} "
                f"({accepted.cid}) this client accepted"
            )
        return "new release"
    return "gap"


def _walk_to(
    store: Store, record: ReleaseRecord, accepted: Accepted, fetch: Callable[[str], None] | None
) -> None:
    """Follow `previous` links from the record's release back to the accepted one."""
    cid, sequence = record.previous, record.sequence - 1
    while sequence > accepted.sequence:
        if cid is None:
            break
        _available(
            store, cid, fetch,
            f"cannot check that release #{record.sequence} of {record.name!r} descends from "
            f"release #{accepted.sequence} ({accepted.cid}): release #{sequence} ({cid}) "
            "on the way is not in the store",
        )
        info = _release_info(store, cid)
        if int(info.get("sequence", 0)) != sequence or info.get("name") != record.name:
            raise InvalidRecord(
                f"release {cid} on the way back from #{record.sequence} is not release "
                f"#{sequence} of {record.name!r}", "chain",
            )
        cid, sequence = info.get("previous"), sequence - 1
    if cid != accepted.cid:
        raise Rollback(
            f"fork refused: release #{record.sequence} of {record.name!r} does not descend from "
            f"release #{accepted.sequence} ({accepted.cid}) this client accepted"
        )


def verify_release(
    store: Store,
    data: bytes,
    signature_text: str,
    *,
    pubkeys: Sequence[PublicKey],
    state_path: Path,
    now: datetime | None = None,
    skew: timedelta = DEFAULT_SKEW,
    record_label: str = "the record",
    update_state: bool = True,
    fetch: Callable[[str], None] | None = None,
) -> Verified:
    """Check a signed record against the keys, the store and the state; then remember it.

    In order: the signature (by a given key, or one the last accepted release allows), the
    record's fields against its trusted comment, no rollback or fork, not expired (with `skew`
    of slack), its release in the store and agreeing with the record, and a chain of `previous`
    links back to the last accepted release. Each failure has its own error and exit code.
    `fetch(cid)`, if given, brings a release into the store (or raises), only once the
    signature, chain and expiry checks have passed.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    signature_label = f"{record_label}.minisig"
    signature = Signature.from_text(signature_text, signature_label)
    signed = _comment_fields(signature.trusted_comment)
    if signed is None:
        raise InvalidRecord(
            f"{signature_label} is not the signature of an ipwhl release record: its trusted "
            f"comment does not start with {_COMMENT_TAG!r} and list {', '.join(_FIELDS)}",
            "comment",
        )
    with _locked(state_path):
        lines = load_state(state_path)
        accepted = lines.get(signed["name"])
        candidates = _choose_key(signature, signed["name"], pubkeys, accepted, record_label)
        failure: BadSignature | None = None
        for key in candidates:
            try:
                verify(key, data, signature)
            except BadSignature as error:
                failure = failure or _explain(
                    error, data, signed, record_label, signature_label, key
                )
                continue
            signer = key
            break
        else:
            assert failure is not None
            raise failure
        record = ReleaseRecord.from_bytes(data, record_label)
        if record.fields() != signed:
            raise InvalidRecord(
                f"{record_label} and the trusted comment of {signature_label} disagree: "
                "the signer made a mistake", "comment",
            )

        status = _check_chain(record, accepted)
        if now > record.expires + skew:
            raise Expired(
                f"{record_label} expired at {format_time(record.expires)} "
                f"({_ago(now - record.expires)} ago): release #{record.sequence} of "
                f"{record.name!r} is no longer vouched for; a mirror may be frozen. Ask for a "
                "fresh record (the publisher runs `ipwhl sign` again)"
            )
        _available(
            store, record.cid, fetch,
            f"release {record.cid} ({record.name!r} #{record.sequence}) is not in the store "
            f"{store.root}; build it or import it, then verify again",
        )
        info = _release_info(store, record.cid)
        found = (info.get("name"), int(info.get("sequence", 0)), info.get("previous"))
        if found != (record.name, record.sequence, record.previous):
            raise InvalidRecord(
                f"{record_label} says {record.cid} is {record.name!r} #{record.sequence} after "
                f"{record.previous or 'nothing'}, but its ipwhl/release.toml says {found[0]!r} "
                f"#{found[1]} after {found[2] or 'nothing'}", "release",
            )
        if status == "gap":
            assert accepted is not None
            _walk_to(store, record, accepted, fetch)
            status = "new release"

        keys_file = _release_file(store, record.cid, "keys")
        if keys_file is None:
            allowed: tuple[str, ...] = (signer.to_base64(),)
        else:
            try:
                listed = parse_public_keys(keys_file.decode("utf-8"), f"{record.cid}/ipwhl/keys")
            except (InvalidKey, UnicodeDecodeError) as error:
                raise InvalidRecord(f"release {record.cid} has unusable keys: {error}",
                                    "release") from None
            allowed = tuple(dict.fromkeys(key.to_base64() for key in listed))
        if update_state:
            lines[record.name] = Accepted(
                record.sequence, record.cid, format_time(record.expires), signer.to_base64(),
                allowed,
            )
            _save_state(state_path, lines)
    return Verified(record, signer, status, accepted)


def _ago(elapsed: timedelta) -> str:
    if elapsed.days:
        return f"{elapsed.days} day(s)"
    hours, seconds = divmod(int(elapsed.total_seconds()), 3600)
    return f"{hours} hour(s)" if hours else f"{max(seconds // 60, 1)} minute(s)"


# -- pointing installers at a verified release -------------------------------------------------


def index_url(gateway: str, cid: str) -> str:
    """The release's PEP 503 index behind a path gateway: GATEWAY/ipfs/CID/simple/."""
    return f"{gateway.rstrip('/')}/ipfs/{cid}/simple/"


def pip_config_command(scope: str, url: str, python: str | None = None) -> list[str]:
    """The command that makes `url` pip's index for good in config `scope` (site, user or
    global); `pip` itself when `python` is None, else that interpreter's pip."""
    if scope not in ("site", "user", "global"):
        raise ValueError(f"unknown pip config scope {scope!r}, expected site, user or global")
    pip = ["pip"] if python is None else [python, "-m", "pip"]
    return [*pip, "config", f"--{scope}", "set", "global.index-url", url]


def record_times(
    created: datetime | None,
    expires: datetime | timedelta,
    environ: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> tuple[datetime, datetime]:
    """(created, expires) of a new record: `created`, else SOURCE_DATE_EPOCH, else now; `expires`
    a date-time or a duration after `created`. ValueError if the record would be born expired."""
    environ = os.environ if environ is None else environ
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    if created is None:
        epoch = environ.get("SOURCE_DATE_EPOCH")
        if epoch:
            try:
                created = datetime.fromtimestamp(int(epoch), tz=UTC)
            except (ValueError, OverflowError, OSError):
                raise ValueError(f"SOURCE_DATE_EPOCH is {epoch!r}, expected whole seconds "
                                 "since 1970-01-01 UTC") from None
        else:
            created = now
    until = created + expires if isinstance(expires, timedelta) else expires
    if until <= created:
        raise ValueError(f"the record would expire ({format_time(until)}) before it is created "
                         f"({format_time(created)})")
    if until <= now:
        raise ValueError(f"the record would be expired already ({format_time(until)}): pass a "
                         "later --expires, or --created (SOURCE_DATE_EPOCH may be old)")
    return created, until
