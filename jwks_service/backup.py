"""Backup and restore: keysets, key versions, clients, revoked tokens and the audit log in one file.

The file is one versioned JSON document::

    {"format": "jwks-service-backup", "version": 1, "created_at": "<RFC 3339>", "issuer": "...",
     "keysets": [{"name", "alg", "backend", "revision", "keys": [<codec.key_to_dict>...]}],
     "clients": [<codec.client_to_dict>...], "revoked_tokens": {"<jti>": <exp>},
     "audit": [<event dict>..., oldest first]}

Private key material stays sealed under the KEK exactly as it is in the store, and client secrets
are only digests keyed by a pepper derived from the KEK: the backup is useless without the KEK,
and a restore needs the same KEK file. Building and parsing the document is pure; reading and
writing the file are small functions of their own (the write is atomic, mode 0600).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import audit as audit_log
from .backends.local import LocalBackend
from .config import Settings
from .errors import ConflictError, InvalidRequestError, JwksServiceError, KeyValidationError
from .model import AuditEvent, Client, Keyset, KeyVersion
from .stores import Store
from .stores.codec import audit_from_dict, client_from_dict, client_to_dict, key_from_dict, key_to_dict

FORMAT = "jwks-service-backup"
VERSION = 1
# The audit log can be long: it is read in one go but written back in batches of this many events.
AUDIT_BATCH = 1000
# Every list_audit call takes a limit; this one means "all of them".
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


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _quiet(_: str) -> None:
    pass


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# ----- building and parsing the document (pure) ----------------------------------------------


def collect(store: Store, issuer: str, now: float, progress: Progress = _quiet) -> Backup:
    """Everything a restore needs, read from `store`."""
    keysets = tuple(store.list_keysets())
    progress(f"keysets: {_plural(len(keysets), 'keyset')}, {_plural(sum(len(k.keys) for k in keysets), 'key')}")
    clients = tuple(store.list_clients())
    progress(f"clients: {_plural(len(clients), 'client')}")
    revoked = store.revoked_tokens(now)
    progress(f"revoked tokens: {_plural(len(revoked), 'token')} not yet expired")
    events = tuple(reversed(store.list_audit(limit=ALL_EVENTS)))
    progress(f"audit: {_plural(len(events), 'event')}")
    return Backup(issuer, _rfc3339(now), keysets, clients, revoked, events)


def to_document(backup: Backup) -> dict[str, Any]:
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


def encode(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, indent=1, sort_keys=False) + "\n").encode("utf-8")


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
    except (TypeError, ValueError, AttributeError) as exc:
        raise InvalidRequestError(f"backup: {where} is malformed ({exc})") from None


_NUMBER = (int, float)
_KIND_NAMES: dict[Any, str] = {
    str: "a string",
    int: "an integer",
    _NUMBER: "a number",
    list: "a list",
    dict: "an object",
}
_KEY_TIMES = ("activated_at", "deactivated_at", "retire_at", "retired_at", "revoked_at")


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
        {},
    )
    for field_name in ("scopes", "audiences"):
        if not all(isinstance(v, str) for v in data[field_name]):
            raise InvalidRequestError(f"backup: {where}.{field_name} must be a list of strings")
    for i, secret in enumerate(data["secrets"]):
        _want(secret, dict, f"{where}.secrets[{i}]", "an object")
        _types(secret, f"{where}.secrets[{i}]", {"digest": str, "created_at": _NUMBER}, {"expires_at": _NUMBER})
    client: Client = _record(client_from_dict, data, where)
    return client


def _event(data: dict[str, Any], where: str) -> AuditEvent:
    _types(
        data,
        where,
        {"at": _NUMBER, "actor": str, "action": str, "target": str},
        {"outcome": str, "reason": str, "details": dict},
    )
    event: AuditEvent = _record(audit_from_dict, data, where)
    return event


def parse(data: bytes) -> Backup:
    """A backup from the bytes of a backup file; InvalidRequestError naming the first problem."""
    try:
        doc = json.loads(data)
    except UnicodeDecodeError:
        raise InvalidRequestError("backup: the file is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"backup: the file is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InvalidRequestError(f'backup: the file is not a jwks-service backup (no "format": "{FORMAT}")')
    version = doc.get("version")
    if version != VERSION or isinstance(version, bool):
        raise InvalidRequestError(
            f"backup: version {version!r} is not supported (this jwks-service reads version {VERSION})"
        )
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


# ----- checks before an import (nothing written yet) -----------------------------------------


def check_config(backup: Backup, settings: Settings) -> None:
    """Every keyset of the backup is configured here, with the same alg and backend."""
    for ks in backup.keysets:
        policy = settings.keysets.get(ks.name)
        if policy is None:
            raise InvalidRequestError(
                f"keyset {ks.name} of the backup is not configured here (configured: {', '.join(settings.keysets)});"
                f" add [keysets.{ks.name}] with alg = {ks.alg!r}. Import refused, nothing written"
            )
        if policy.alg != ks.alg:
            raise InvalidRequestError(
                f"keysets.{ks.name}.alg: is {policy.alg} here but the backup's keys are {ks.alg}."
                " Import refused, nothing written"
            )
        if policy.backend != ks.backend:
            raise InvalidRequestError(
                f"keysets.{ks.name}.backend: is {policy.backend} here but the backup's keys live in {ks.backend}."
                " Import refused, nothing written"
            )


def check_kek(backup: Backup, local: LocalBackend) -> int:
    """Unseal every live key of the backup with this KEK and sign and verify a probe with it;
    returns how many keys were checked."""
    checked = 0
    for ks in backup.keysets:
        if ks.backend != "local":
            continue
        for key in ks.keys:
            if not key.verifies or key.sealed_private is None:
                continue
            try:
                sign = local.signer(key)
            except KeyValidationError as exc:
                raise InvalidRequestError(
                    f"backup was made under a different KEK; import refused, nothing written ({exc.description})"
                ) from None
            try:
                probe = b"jwks-service backup import probe"
                works = local.verifier(key)(probe, sign(probe))
            except Exception as exc:  # damaged material must not be imported, whatever the failure
                raise InvalidRequestError(
                    f"backup: key {key.kid} of keyset {ks.name} is damaged ({exc}); import refused, nothing written"
                ) from None
            if not works:
                raise InvalidRequestError(
                    f"backup: key {key.kid} of keyset {ks.name} does not verify its own signature (its public key"
                    " does not match); import refused, nothing written"
                )
            checked += 1
    return checked


def check_target(store: Store, *, force: bool) -> None:
    if not force and not store.is_empty():
        raise ConflictError(
            "the store is not empty (it holds keys, clients, revocations or audit events); import refused, nothing"
            " written. Use --force to replace its keysets with the backup's and add the rest"
        )


# ----- writing into a store ------------------------------------------------------------------


def restore(backup: Backup, store: Store, now: float, source: str = "", progress: Progress = _quiet) -> dict[str, int]:
    """Write the backup into `store`: its keysets replace stored ones of the same name, clients are
    upserted, revoked tokens and audit events added; then one `backup.import` audit event."""
    for ks in backup.keysets:
        stored = store.get_keyset(ks.name)
        store.save_keyset(ks, stored.revision if stored is not None else 0)
    progress(f"keysets: {_plural(len(backup.keysets), 'keyset')} written")
    for client in backup.clients:
        store.put_client(client)
    progress(f"clients: {_plural(len(backup.clients), 'client')} written")
    live = {jti: exp for jti, exp in backup.revoked_tokens.items() if exp > now}
    for jti, exp in live.items():
        store.revoke_token(jti, exp)
    progress(f"revoked tokens: {_plural(len(live), 'token')} written")
    for start in range(0, len(backup.audit), AUDIT_BATCH):
        store.append_audit(backup.audit[start : start + AUDIT_BATCH])
    progress(f"audit: {_plural(len(backup.audit), 'event')} written")
    counts = {**backup.counts(), "revoked_tokens": len(live)}
    event = AuditEvent(
        at=now,
        actor="cli",
        action="backup.import",
        target=source,
        details={"issuer": backup.issuer, "created_at": backup.created_at, **counts},
    )
    store.append_audit([event])
    audit_log.log_events([event])
    return counts


# ----- the file ------------------------------------------------------------------------------


def read_file(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InvalidRequestError(f"backup: {path} does not exist") from None
    except OSError as exc:
        raise InvalidRequestError(f"backup: cannot read {path}: {exc.strerror}") from None


def write_file(path: str | Path, data: bytes, *, force: bool = False) -> None:
    """Write atomically (temporary file in the same folder, mode 0600, fsync, rename); an existing
    file is replaced only with `force`."""
    target = Path(path)
    if target.is_dir():
        raise JwksServiceError(f"{target} is a directory")
    if not force and os.path.lexists(target):
        raise ConflictError(f"{target} exists; use --force to overwrite it")
    folder = target.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise JwksServiceError(f"cannot write in {folder}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if force:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)  # never clobbers a file that appeared meanwhile
            except FileExistsError:
                raise ConflictError(f"{target} exists; use --force to overwrite it") from None
            except OSError:  # a filesystem without hard links
                if os.path.lexists(target):
                    raise ConflictError(f"{target} exists; use --force to overwrite it") from None
                os.replace(tmp, target)
    except OSError as exc:
        raise JwksServiceError(f"cannot write {target}: {exc.strerror}") from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename itself is still atomic
    finally:
        os.close(fd)


def summary(c: Mapping[str, int]) -> str:
    return (
        f"{_plural(c['keysets'], 'keyset')} ({_plural(c['keys'], 'key')}), {_plural(c['clients'], 'client')},"
        f" {_plural(c['revoked_tokens'], 'revoked token')}, {_plural(c['audit_events'], 'audit event')}"
    )


def describe(backup: Backup) -> Sequence[str]:
    return [f"backup of {backup.issuer}, made {backup.created_at}", summary(backup.counts())]
