"""Publishing a release onto IPFS nodes: a kubo node's RPC, or an IPFS Pinning Service.

`publish_to_kubo` streams the release as a CAR to `POST /api/v0/dag/import?pin-roots=true`
(multipart/form-data, one part named "file"), the RPC call behind `ipfs dag import`, and checks
that the node reports the root pinned. `pin_remotely` asks a service speaking the IPFS Pinning
Service API (`POST /pins`, `GET /pins/{requestid}`, `Authorization: Bearer …`) to pin the CID;
the service fetches the blocks from the IPFS network, so they must be provided by some node
first (a kubo node published to with `publish_to_kubo`, passed as an origin, is the usual way).
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import __version__, car
from .cid import CID, InvalidCID
from .errors import IpwhlError
from .store import Store

__all__ = [
    "KuboImport",
    "PinStatus",
    "PublishError",
    "pin_remotely",
    "publish_to_kubo",
    "rpc_base",
]

USER_AGENT = f"ipwhl/{__version__}"
_SEND_SIZE = 1 << 20
_MAX_ANSWER = 1 << 20
_PIN_STATES = ("queued", "pinning", "pinned", "failed")


class PublishError(IpwhlError):
    """A kubo node or a pinning service refused, failed, or could not be reached."""

    exit_code = 5


# --- kubo RPC ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KuboImport:
    """What a kubo node said about an import: the root it pinned, blocks and bytes it took."""

    root: CID
    car_size: int
    blocks: int | None = None
    nbytes: int | None = None


def rpc_base(address: str) -> str:
    """A kubo RPC address, as a URL (`http://127.0.0.1:5001`) or the node's API multiaddr
    (`/ip4/127.0.0.1/tcp/5001`), → its base URL without /api/v0."""
    text = address.strip()
    if text.startswith("/"):
        parts = text.strip("/").split("/")
        known = {"ip4", "ip6", "dns", "dns4", "dns6"}
        if len(parts) < 4 or parts[0] not in known or parts[2] != "tcp":
            raise PublishError(f"{address!r} is not an RPC multiaddr like /ip4/127.0.0.1/tcp/5001")
        host = f"[{parts[1]}]" if parts[0] == "ip6" else parts[1]
        scheme = "https" if parts[4:5] == ["https"] or parts[4:6] == ["tls", "http"] else "http"
        return f"{scheme}://{host}:{parts[3]}"
    split = urllib.parse.urlsplit(text)
    if split.scheme not in {"http", "https"} or not split.netloc:
        raise PublishError(f"{address!r} is not a kubo RPC address; expected http://HOST:5001")
    path = split.path.rstrip("/").removesuffix("/api/v0").rstrip("/")
    return urllib.parse.urlunsplit((split.scheme, split.netloc, path, "", ""))


def _kubo_authorization(base: str, auth: str | None) -> str | None:
    # kubo's API.Authorizations secrets read "basic:USER:PASSWORD" or "bearer:TOKEN".
    if auth:
        kind, _, secret = auth.partition(":")
        if kind == "bearer" and secret:
            return f"Bearer {secret}"
        if kind == "basic" and ":" in secret:
            return "Basic " + base64.b64encode(secret.encode()).decode("ascii")
        raise PublishError("--rpc-auth takes kubo's form: bearer:TOKEN or basic:USER:PASSWORD")
    split = urllib.parse.urlsplit(base)
    if split.username is not None:
        user = urllib.parse.unquote(split.username)
        password = urllib.parse.unquote(split.password or "")
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return None


def publish_to_kubo(
    store: Store,
    root: CID,
    rpc_url: str,
    *,
    auth: str | None = None,
    timeout: float = 600.0,
) -> KuboImport:
    """Import the DAG under `root` into a kubo node and pin it there (`ipfs dag import`);
    PublishError unless the node reports the root pinned."""
    base = rpc_base(rpc_url)
    authorization = _kubo_authorization(base, auth)
    split = urllib.parse.urlsplit(base)
    boundary = secrets.token_hex(16)
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{root}.car"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    with store.temporary(".car") as (car_path, handle):
        exported = car.write_car(store, root, handle)
        handle.flush()
        host = split.hostname or ""
        port = split.port
        address = f"[{host}]" if ":" in host else host
        if split.scheme == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                address, port, timeout=timeout
            )
        else:
            connection = http.client.HTTPConnection(address, port, timeout=timeout)
        target = f"{split.path}/api/v0/dag/import?pin-roots=true&stats=true"
        try:
            connection.putrequest("POST", target)
            connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
            connection.putheader("Content-Length", str(len(head) + exported.size + len(tail)))
            connection.putheader("User-Agent", USER_AGENT)
            if authorization:
                connection.putheader("Authorization", authorization)
            connection.endheaders()
            try:
                connection.send(head)
                with open(car_path, "rb") as stream:
                    while chunk := stream.read(_SEND_SIZE):
                        connection.send(chunk)
                connection.send(tail)
            except (BrokenPipeError, ConnectionResetError):
                pass  # a server may answer (401, 413) before taking the whole body: read it
            response = connection.getresponse()
            status, reason = response.status, response.reason
            body = response.read(_MAX_ANSWER)
        except (OSError, http.client.HTTPException) as exc:
            raise PublishError(
                f"cannot talk to the kubo RPC at {_shown(base)}: {exc}; is `ipfs daemon` "
                "running, and is this its API address (port 5001, not the gateway's)?"
            ) from None
        finally:
            connection.close()
    if status != 200:
        raise PublishError(_kubo_refusal(base, status, reason, body))
    return _kubo_answer(base, root, exported.size, body)


def _shown(base: str) -> str:
    # Never echo a password given in the URL.
    split = urllib.parse.urlsplit(base)
    netloc = split.hostname or ""
    if split.port:
        netloc += f":{split.port}"
    return urllib.parse.urlunsplit((split.scheme, netloc, split.path, "", ""))


def _kubo_refusal(base: str, status: int, reason: str, body: bytes) -> str:
    message = body.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(message)
        if isinstance(parsed, dict) and parsed.get("Message"):
            message = str(parsed["Message"])
    except ValueError:
        pass
    hint = ""
    if status in {401, 403}:
        hint = " (pass --rpc-auth bearer:TOKEN or basic:USER:PASSWORD, as in API.Authorizations)"
    elif status in {404, 405}:
        hint = " (is this a kubo RPC address? it listens on port 5001, the gateway on 8080)"
    return (
        f"kubo RPC at {_shown(base)} refused the import: HTTP {status} {reason}: "
        f"{message[:300]}{hint}"
    )


def _kubo_answer(base: str, root: CID, car_size: int, body: bytes) -> KuboImport:
    pinned: CID | None = None
    blocks = nbytes = None
    for line in body.decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise PublishError(
                f"kubo RPC at {_shown(base)} answered {line[:200]!r}, not JSON"
            ) from None
        if not isinstance(item, dict):
            continue
        if item.get("Type") == "error":
            raise PublishError(f"kubo RPC at {_shown(base)}: {item.get('Message')}")
        if isinstance(item.get("Root"), dict):
            entry = item["Root"]
            if entry.get("PinErrorMsg"):
                raise PublishError(
                    f"kubo imported the blocks of {root} but could not pin it: "
                    f"{entry['PinErrorMsg']}"
                )
            try:
                pinned = CID.parse(str(entry["Cid"]["/"]))
            except (KeyError, TypeError, InvalidCID):
                raise PublishError(f"kubo RPC answered a malformed Root: {entry!r}") from None
        if isinstance(item.get("Stats"), dict):
            blocks = item["Stats"].get("BlockCount")
            nbytes = item["Stats"].get("BlockBytesCount")
    if pinned is None or pinned.to_v1() != root.to_v1():
        raise PublishError(
            f"kubo RPC at {_shown(base)} did not report pinning {root} "
            f"(it reported {pinned or 'no root'})"
        )
    return KuboImport(root, car_size, blocks, nbytes)


# --- the IPFS Pinning Service API --------------------------------------------------------------


@dataclass(frozen=True)
class PinStatus:
    """A pin request's state at a pinning service (the API's PinStatus object)."""

    requestid: str
    status: str  # queued, pinning, pinned or failed
    cid: CID
    delegates: tuple[str, ...] = ()
    info: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, service: str, value: Any) -> PinStatus:
        try:
            status = value["status"]
            if status not in _PIN_STATES:
                raise ValueError(status)
            return cls(
                requestid=str(value["requestid"]),
                status=status,
                cid=CID.parse(str(value["pin"]["cid"])),
                delegates=tuple(str(d) for d in value.get("delegates") or ()),
                info={str(k): str(v) for k, v in (value.get("info") or {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise PublishError(
                f"pinning service {service} answered something that is not a PinStatus: "
                f"{json.dumps(value)[:200]}"
            ) from None


def _service_call(
    service: str, token: str, method: str, path: str, body: Any = None, *, timeout: float
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(service + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read(_MAX_ANSWER)
    except urllib.error.HTTPError as exc:
        raise PublishError(_service_refusal(service, exc)) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise PublishError(f"cannot reach the pinning service at {service}: {reason}") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise PublishError(f"pinning service {service} answered {raw[:200]!r}, not JSON") from None


def _service_refusal(service: str, error: urllib.error.HTTPError) -> str:
    raw = error.read(_MAX_ANSWER)
    error.close()
    what = raw.decode("utf-8", "replace").strip()[:300]
    try:
        failure = json.loads(raw)["error"]
        what = failure["reason"] + (f": {failure['details']}" if failure.get("details") else "")
    except (ValueError, KeyError, TypeError):
        pass
    hint = " (check --token or $IPWHL_PINNING_TOKEN)" if error.code == 401 else ""
    return f"pinning service {service} refused: HTTP {error.code}: {what}{hint}"


def pin_remotely(
    service_url: str,
    token: str,
    cid: CID,
    *,
    name: str | None = None,
    origins: Sequence[str] = (),
    wait: float = 0.0,
    poll: float = 5.0,
    timeout: float = 60.0,
) -> PinStatus:
    """Ask a pinning service to pin `cid` (reusing a request for it that is already there);
    with `wait`, poll until pinned or failed for up to that many seconds. PublishError if the
    service refuses or reports the pin failed."""
    if not token:
        raise PublishError(
            "a pinning service needs an access token: --token or $IPWHL_PINNING_TOKEN"
        )
    service = service_url.strip().rstrip("/")
    if urllib.parse.urlsplit(service).scheme not in {"http", "https"}:
        raise PublishError(f"{service_url!r} is not a pinning service URL (https://…)")
    if name is not None and len(name) > 255:
        raise PublishError("a pin name is at most 255 characters")
    query = urllib.parse.urlencode(
        [("cid", str(cid)), *(("status", s) for s in ("queued", "pinning", "pinned"))]
    )
    listed = _service_call(service, token, "GET", f"/pins?{query}", timeout=timeout)
    existing = [
        PinStatus.from_json(service, item)
        for item in (listed.get("results") or [] if isinstance(listed, dict) else [])
    ]
    existing = [status for status in existing if status.cid.to_v1() == cid.to_v1()]
    if existing:
        status = existing[0]
    else:
        pin: dict[str, Any] = {"cid": str(cid)}
        if name:
            pin["name"] = name
        if origins:
            pin["origins"] = list(dict.fromkeys(origins))[:20]
        pin["meta"] = {"app": "ipwhl"}
        status = PinStatus.from_json(
            service, _service_call(service, token, "POST", "/pins", pin, timeout=timeout)
        )
    deadline = time.monotonic() + wait
    while status.status in {"queued", "pinning"} and time.monotonic() < deadline:
        time.sleep(min(poll, max(deadline - time.monotonic(), 0.0)))
        path = f"/pins/{urllib.parse.quote(status.requestid, safe='')}"
        status = PinStatus.from_json(service, _service_call(service, token, "GET", path,
                                                            timeout=timeout))
    if status.status == "failed":
        details = status.info.get("status_details", "no reason given")
        raise PublishError(f"pinning service {service} could not pin {cid}: {details}")
    return status
