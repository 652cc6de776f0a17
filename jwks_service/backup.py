"""Backup and restore: keysets, key versions, clients, revoked tokens and the audit log in one file.

The file is one versioned JSON document::

    {"format": "jwks-service-backup", "version": 2, "created_at": "<RFC 3339>", "issuer": "...",
     "keysets": [{"name", "alg", "backend", "revision", "keys": [<codec.key_to_dict>...]}],
     "clients": [<codec.client_to_dict>...], "revoked_tokens": {"<jti>": <exp>},
     "audit": [<event dict>..., oldest first],
     "tag": "<base64url HMAC-SHA256>"}

Private key material stays sealed under the KEK exactly as it is in the store, and client secrets
are only digests keyed by a pepper derived from the KEK: the backup is useless without the KEK,
and a restore needs the same KEK file.

Integrity: ``tag`` is HMAC-SHA256, under a key derived from the KEK (``kek.derive("backup-mac")``,
HKDF-SHA256), over the canonical bytes of the document without ``tag``: JSON with sorted member
names, no whitespace, non-ASCII characters escaped, no NaN or Infinity. The tag is computed over
what the parser read, so however the file is laid out, what is verified is what is imported. An
import refuses a file whose tag is missing or does not verify before it looks at anything in it,
and version 1 files, which had no tag. Behind the tag every record is still checked
(backup_checks.py). An import merges into the store; a revocation is forever (backup_merge.py).

This module is the file: building the document (pure, but for `collect`, which reads the store),
its canonical bytes and tag, and reading it back into records (pure); reading and writing the file
are small functions of their own (the write is atomic, mode 0600).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import files
from .clock import rfc3339
from .errors import ConflictError, InvalidRequestError, JwksServiceError
from .jws import unique_members
from .model import AuditEvent, Client, Keyset, KeyState, KeyVersion, canonical_json
from .stores import Store
from .stores.codec import audit_from_dict, client_from_dict, client_to_dict, key_from_dict, key_to_dict

FORMAT = "jwks-service-backup"
VERSION = 2
TAG = "tag"
MAC_PURPOSE = "backup-mac"  # kek.derive(MAC_PURPOSE) keys the tag
# Every list_audit call takes a limit; this one means "all of them" (stores take any limit).
ALL_EVENTS = 2**62

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Backup:
    """The parsed content of a backup file."""

    issuer: str
    created_at: str
    keysets: tuple[Keyset, ...] = ()
    clients: tuple[Client, ...] = ()
    revoked_tokens: Mapping[str, float] = field(default_factory=dict)
    audit: tuple[AuditEvent, ...] = ()  # oldest first

    def counts(self) -> dict[str, int]:
        return {
            "keysets": len(self.keysets),
            "keys": sum(len(ks.keys) for ks in self.keysets),
            "clients": len(self.clients),
            "revoked_tokens": len(self.revoked_tokens),
            "audit_events": len(self.audit),
        }


def quiet(_: str) -> None:
    pass


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# ----- building the document (pure) ----------------------------------------------------------


def collect(store: Store, issuer: str, now: float, progress: Progress = quiet) -> Backup:
    """Everything a restore needs, read from `store`."""
    keysets = tuple(store.list_keysets())
    progress(f"keysets: {plural(len(keysets), 'keyset')}, {plural(sum(len(k.keys) for k in keysets), 'key')}")
    clients = tuple(store.list_clients())
    progress(f"clients: {plural(len(clients), 'client')}")
    revoked = store.revoked_tokens(now)
    progress(f"revoked tokens: {plural(len(revoked), 'token')} not yet expired")
    events = tuple(reversed(store.list_audit(limit=ALL_EVENTS)))
    progress(f"audit: {plural(len(events), 'event')}")
    return Backup(issuer, rfc3339(now), keysets, clients, revoked, events)


def to_document(backup: Backup) -> dict[str, Any]:
    """The document without its tag (`encode` adds it)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "created_at": backup.created_at,
        "issuer": backup.issuer,
        "keysets": [
            {
                "name": ks.name,
                "alg": ks.alg,
                "backend": ks.backend,
                "revision": ks.revision,
                "keys": [key_to_dict(k) for k in ks.keys],
            }
            for ks in backup.keysets
        ],
        "clients": [client_to_dict(c) for c in backup.clients],
        "revoked_tokens": dict(backup.revoked_tokens),
        "audit": [e.as_dict() for e in backup.audit],
    }


def canonical(document: Mapping[str, Any]) -> bytes:
    """The bytes the tag covers: the document without its tag, sorted, compact, ASCII."""
    return canonical_json({k: v for k, v in document.items() if k != TAG})


def tag(document: Mapping[str, Any], mac_key: bytes) -> str:
    mac = hmac.digest(mac_key, canonical(document), "sha256")
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def encode(document: Mapping[str, Any], mac_key: bytes) -> bytes:
    """The file: `document` with its tag, indented for people."""
    body = {k: v for k, v in document.items() if k != TAG}
    return (json.dumps({**body, TAG: tag(body, mac_key)}, indent=1) + "\n").encode("utf-8")


# ----- reading the document -------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def load(data: bytes) -> dict[str, Any]:
    """The document of a backup file, with its format and version checked and a tag present (not yet
    verified: that needs the KEK, see `verify`)."""
    try:
        doc = json.loads(data, parse_constant=_no_constant, object_pairs_hook=unique_members)
    except UnicodeDecodeError:
        raise InvalidRequestError("backup: the file is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"backup: the file is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidRequestError(f"backup: the file is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InvalidRequestError(f'backup: the file is not a jwks-service backup (no "format": "{FORMAT}")')
    version = doc.get("version")
    if version == 1 and not isinstance(version, bool):
        raise InvalidRequestError(
            "backup: format version 1 has no integrity tag, so nothing in the file can be trusted; export the"
            f" store again with this jwks-service (version {VERSION}) and import that. Import refused, nothing written"
        )
    if version != VERSION or isinstance(version, bool):
        raise InvalidRequestError(
            f"backup: version {version!r} is not supported (this jwks-service reads version {VERSION})"
        )
    if not isinstance(doc.get(TAG), str):
        raise InvalidRequestError(
            f'backup: the file has no integrity tag ("{TAG}"), so nothing in it can be trusted. Import refused,'
            " nothing written"
        )
    return doc


def verify(document: Mapping[str, Any], mac_key: bytes) -> None:
    """InvalidRequestError unless the document's tag is the HMAC of its canonical bytes under `mac_key`."""
    presented = document.get(TAG)
    try:
        expected = tag(document, mac_key)
    except ValueError:  # not serialisable canonically (load refuses NaN, so this is defensive)
        expected = ""
    if (
        not isinstance(presented, str)
        or not expected
        or not hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), expected.encode())
    ):
        raise InvalidRequestError(
            "the backup's integrity tag does not verify: the file was changed, or it was made under another KEK;"
            " nothing written"
        )


def _want(value: object, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):  # JSON true is no number
        raise InvalidRequestError(f"backup: {where} must be {what}")
    return value


def _field(obj: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in obj:
        raise InvalidRequestError(f"backup: {where} is missing the field {name!r}")
    return obj[name]


def _record(parse: Callable[[dict[str, Any]], Any], data: object, where: str) -> Any:
    _want(data, dict, where, "an object")
    assert isinstance(data, dict)
    try:
        return parse(data)
    except KeyError as exc:
        raise InvalidRequestError(f"backup: {where} is missing the field {exc.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError, binascii.Error) as exc:
        raise InvalidRequestError(f"backup: {where} is malformed ({exc})") from None


_NUMBER = (int, float)
_KIND_NAMES: dict[Any, str] = {
    str: "a string",
    int: "an integer",
    _NUMBER: "a number",
    list: "a list",
    dict: "an object",
}
_KEY_TIMES = ("activated_at", "deactivated_at", "retire_at", "retired_at", "revoked_at", "tainted_at")


def _types(data: Mapping[str, Any], where: str, required: Mapping[str, Any], optional: Mapping[str, Any]) -> None:
    """Field types of one record (the codec trusts its input; a backup file is input)."""
    for name, kind in required.items():
        _want(_field(data, name, where), kind, f"{where}.{name}", _KIND_NAMES[kind])
    for name, kind in optional.items():
        if data.get(name) is not None:
            _want(data[name], kind, f"{where}.{name}", _KIND_NAMES[kind])


def _key(data: dict[str, Any], where: str) -> KeyVersion:
    _types(
        data,
        where,
        {"kid": str, "keyset": str, "alg": str, "state": str, "created_at": _NUMBER},
        {"public_jwk": dict, "sealed_private": str, "revoke_reason": str, **dict.fromkeys(_KEY_TIMES, _NUMBER)},
    )
    key: KeyVersion = _record(key_from_dict, data, where)
    return key


def _client(data: dict[str, Any], where: str) -> Client:
    _types(
        data,
        where,
        {
            "client_id": str,
            "name": str,
            "scopes": list,
            "audiences": list,
            "keyset": str,
            "token_ttl": int,
            "created_at": _NUMBER,
            "secrets": list,
        },
        {"token_endpoint_auth_method": str, "jwks": dict, "jwks_uri": str},
    )
    for field_name in ("scopes", "audiences"):
        if not all(isinstance(v, str) for v in data[field_name]):
            raise InvalidRequestError(f"backup: {where}.{field_name} must be a list of strings")
    for i, secret in enumerate(data["secrets"]):
        _want(secret, dict, f"{where}.secrets[{i}]", "an object")
        _types(secret, f"{where}.secrets[{i}]", {"digest": str, "created_at": _NUMBER}, {"expires_at": _NUMBER})
    client: Client = _record(client_from_dict, data, where)
    for i, secret_hash in enumerate(client.secrets):
        if len(secret_hash.digest) != 32:
            raise InvalidRequestError(f"backup: {where}.secrets[{i}].digest must be 32 bytes (an HMAC-SHA256)")
    return client


def _event(data: dict[str, Any], where: str) -> AuditEvent:
    _types(
        data,
        where,
        {"at": _NUMBER, "actor": str, "action": str, "target": str},
        {"outcome": str, "reason": str, "details": dict, "prev": str},
    )
    event: AuditEvent = _record(audit_from_dict, data, where)
    return event


def parse(doc: Mapping[str, Any]) -> Backup:
    """A backup from a loaded (and verified) document; InvalidRequestError naming the first problem."""
    issuer = _want(_field(doc, "issuer", "the file"), str, "issuer", "a string")
    created_at = _want(_field(doc, "created_at", "the file"), str, "created_at", "a string")

    keysets = []
    names: set[str] = set()
    for i, raw in enumerate(_want(_field(doc, "keysets", "the file"), list, "keysets", "a list")):
        where = f"keysets[{i}]"
        _want(raw, dict, where, "an object")
        name = _want(_field(raw, "name", where), str, f"{where}.name", "a string")
        where = f"keyset {name!r}"
        if name in names:
            raise InvalidRequestError(f"backup: {where} appears twice")
        names.add(name)
        alg = _want(_field(raw, "alg", where), str, f"{where}.alg", "a string")
        backend = _want(_field(raw, "backend", where), str, f"{where}.backend", "a string")
        revision = _want(raw.get("revision", 0), int, f"{where}.revision", "an integer")
        keys: list[KeyVersion] = []
        for j, raw_key in enumerate(_want(_field(raw, "keys", where), list, f"{where}.keys", "a list")):
            _want(raw_key, dict, f"{where}.keys[{j}]", "an object")
            key = _key(raw_key, f"{where}.keys[{j}]")
            if key.keyset != name or key.alg != alg:
                raise InvalidRequestError(
                    f"backup: {where}.keys[{j}] ({key.kid}) belongs to keyset {key.keyset!r} with alg {key.alg},"
                    f" not {name!r} with {alg}"
                )
            keys.append(key)
        kids = [k.kid for k in keys]
        if len(set(kids)) != len(kids):
            raise InvalidRequestError(f"backup: {where} holds the same kid twice")
        for state in (KeyState.CURRENT, KeyState.NEXT):
            if sum(k.state == state for k in keys) > 1:
                raise InvalidRequestError(f"backup: {where} has more than one {state} key")
        keysets.append(Keyset(name, alg, backend, revision, tuple(keys)))

    clients = []
    seen: set[str] = set()
    for i, raw in enumerate(_want(_field(doc, "clients", "the file"), list, "clients", "a list")):
        _want(raw, dict, f"clients[{i}]", "an object")
        client = _client(raw, f"clients[{i}]")
        if client.client_id in seen:
            raise InvalidRequestError(f"backup: client {client.client_id} appears twice")
        seen.add(client.client_id)
        clients.append(client)

    revoked: dict[str, float] = {}
    raw_revoked = _want(_field(doc, "revoked_tokens", "the file"), dict, "revoked_tokens", "an object {jti: exp}")
    for jti, exp in raw_revoked.items():
        revoked[jti] = float(_want(exp, (int, float), f"revoked_tokens[{jti!r}]", "a number"))

    events = []
    for i, raw in enumerate(_want(_field(doc, "audit", "the file"), list, "audit", "a list")):
        _want(raw, dict, f"audit[{i}]", "an object")
        events.append(_event(raw, f"audit[{i}]"))
    return Backup(issuer, created_at, tuple(keysets), tuple(clients), revoked, tuple(events))


# ----- the file ------------------------------------------------------------------------------


def read_file(path: str | Path) -> bytes:
    return files.read(path, "backup", InvalidRequestError)


def write_file(path: str | Path, data: bytes, *, force: bool = False) -> None:
    """Write atomically, mode 0600 (see files); an existing file is replaced only with `force`."""
    target = Path(path)
    if target.is_dir():
        raise JwksServiceError(f"{target} is a directory")
    try:
        if force:
            files.replace(target, data)
        elif not files.write_new(target, data):  # never clobbers a file, even one that appeared meanwhile
            raise ConflictError(f"{target} exists; use --force to overwrite it")
    except OSError as exc:
        raise JwksServiceError(f"cannot write {target}: {exc.strerror}") from None


def summary(c: Mapping[str, int]) -> str:
    return (
        f"{plural(c['keysets'], 'keyset')} ({plural(c['keys'], 'key')}), {plural(c['clients'], 'client')},"
        f" {plural(c['revoked_tokens'], 'revoked token')}, {plural(c['audit_events'], 'audit event')}"
    )


def describe(backup: Backup) -> Sequence[str]:
    return [f"backup of {backup.issuer}, made {backup.created_at}", summary(backup.counts())]
