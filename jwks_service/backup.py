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
and version 1 files, which had no tag. Behind the tag every record is still checked, so that a
file made by a faulty exporter (or anyone holding the KEK) cannot plant a key either: each
asymmetric kid is recomputed as the RFC 7638 thumbprint of its public JWK, which may hold only the
members the service writes; each live local key must unseal to the private half of its public
key; each live Vault key must point at this keyset's Transit key, and its public JWK must be the
one Transit holds for that version; client records must be valid clients of this configuration.

Import merges; a revocation is forever. Into a store that already holds a keyset, each key takes
whichever of the two records is further along the lifecycle (next < current < previous < retired
< revoked; a key only ever moves forward), so a key revoked or retired in the store stays so
whatever the backup says, and one revoked in the backup is revoked here too. Keys of one side only
are kept. If that leaves two current keys, the backup's signs and the other becomes previous (it
verifies for the keyset's verify_window); of two next keys the backup's is kept and the other
(which never signed) is discarded; a keyset left without a current key is repaired by the next
start or scheduler tick (its next key is promoted, or a new key made), as after an emergency
revocation. Revoked tokens are only ever added (a store never shortens a revocation). A client the
store holds is kept as it is there (a secret rotated out, or a scope taken away, does not come back);
clients only in the backup are added. Audit events the store holds already are not written twice.
Every such decision is printed and recorded in the ``backup.import`` audit event.

Building, parsing and merging are pure; reading and writing the file are small functions of their
own (the write is atomic, mode 0600); the checks against the backends do I/O (Vault).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import audit as audit_log
from . import files
from .algorithms import ALGORITHMS
from .backends import KeyBackend
from .clients import valid_scope_token
from .clock import parse_rfc3339, rfc3339
from .config import Settings
from .crypto import KeyMismatchError, public_jwk_from_public_key, public_key_from_jwk
from .errors import (
    ConflictError,
    InvalidRequestError,
    JwksServiceError,
    KeyValidationError,
    RevisionConflictError,
)
from .jwks import JWK_META, PUBLIC_MEMBERS, public_members
from .lifecycle import RETAIN_RETIRED_SECONDS
from .model import AuditEvent, Client, Keyset, KeysetPolicy, KeyState, KeyVersion
from .stores import Store
from .stores.codec import audit_from_dict, client_from_dict, client_to_dict, key_from_dict, key_to_dict

FORMAT = "jwks-service-backup"
VERSION = 2
TAG = "tag"
MAC_PURPOSE = "backup-mac"  # kek.derive(MAC_PURPOSE) keys the tag
# The audit log can be long: it is read in one go but written back in batches of this many events.
AUDIT_BATCH = 1000
# Every list_audit call takes a limit; this one means "all of them" (stores take any limit).
ALL_EVENTS = 2**62
# Writes of one keyset that lost a compare-and-set to a running server are merged again this often.
MERGE_ATTEMPTS = 5
REFUSED = "import refused, nothing written"

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


def _quiet(_: str) -> None:
    pass


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# ----- building the document (pure) ----------------------------------------------------------


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
    body = {k: v for k, v in document.items() if k != TAG}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


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


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise ValueError(f"duplicate member {name!r}")
        out[name] = value
    return out


def load(data: bytes) -> dict[str, Any]:
    """The document of a backup file, with its format and version checked and a tag present (not yet
    verified: that needs the KEK, see `verify`)."""
    try:
        doc = json.loads(data, parse_constant=_no_constant, object_pairs_hook=_unique_members)
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
    for i, secret_hash in enumerate(client.secrets):
        if len(secret_hash.digest) != 32:
            raise InvalidRequestError(f"backup: {where}.secrets[{i}].digest must be 32 bytes (an HMAC-SHA256)")
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


# ----- checks before an import (nothing written yet) -----------------------------------------


def check_config(backup: Backup, settings: Settings) -> None:
    """Every keyset of the backup is configured here, with the same alg and backend; every key record
    is one this service could have written; every client is a valid client of this configuration."""
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
        for key in ks.keys:
            check_key_record(key)
    for i, client in enumerate(backup.clients):
        _check_client(client, f"clients[{i}]", settings.keysets)


def check_key_record(key: KeyVersion) -> None:
    """A key record as the service writes it: an asymmetric key's public JWK holds only the members
    the service writes and its kid is that key's RFC 7638 thumbprint; an HMAC key has no public key;
    a key that signs or verifies holds its private key (or its reference, for Vault)."""
    where = f"key {key.kid} of keyset {key.keyset}"
    alg = ALGORITHMS.get(key.alg)
    if alg is None:
        raise InvalidRequestError(f"backup: {where}: unknown alg {key.alg!r}; {REFUSED}")
    if key.verifies and key.sealed_private is None:
        raise InvalidRequestError(
            f"backup: {where} is {key.state} but holds no private key (a key that signs or verifies needs one);"
            f" {REFUSED}"
        )
    jwk = key.public_jwk
    if alg.symmetric:
        if jwk is not None:
            raise InvalidRequestError(f"backup: {where}: an {alg.name} key has no public key; {REFUSED}")
        return
    if jwk is None:
        raise InvalidRequestError(f"backup: {where}: an {alg.name} key needs its public JWK; {REFUSED}")
    members = public_members(key.alg, jwk)
    if members is None:
        raise InvalidRequestError(f"backup: {where}: its public JWK is not an {alg.name} public key; {REFUSED}")
    extra = sorted(set(jwk) - set(PUBLIC_MEMBERS[alg.kty]) - set(JWK_META))
    if extra:
        raise InvalidRequestError(
            f"backup: {where}: its public JWK has members the service never writes: {', '.join(extra)}; {REFUSED}"
        )
    try:
        public = public_key_from_jwk(key.alg, members)
        if isinstance(public, bytes):
            raise KeyMismatchError("not a public key")
        canonical_jwk, thumbprint = public_jwk_from_public_key(public)
    except KeyMismatchError as exc:
        raise InvalidRequestError(f"backup: {where}: its public JWK is not a usable key ({exc}); {REFUSED}") from None
    if not hmac.compare_digest(thumbprint.encode(), key.kid.encode()):
        raise InvalidRequestError(
            f"backup: {where}: its kid is not the RFC 7638 thumbprint of its public key ({thumbprint}); {REFUSED}"
        )
    if {k: canonical_jwk.get(k) for k in members} != members:
        raise InvalidRequestError(f"backup: {where}: its public JWK is not in canonical form; {REFUSED}")
    stated = {"kid": key.kid, "alg": key.alg, "use": "sig"}
    for name, value in stated.items():
        if jwk.get(name, value) != value:
            raise InvalidRequestError(
                f"backup: {where}: its public JWK says {name} = {jwk.get(name)!r}, not {value!r}; {REFUSED}"
            )


def _check_client(client: Client, where: str, keysets: Mapping[str, KeysetPolicy]) -> None:
    """The rules a registration follows (ClientRegistry.validate), for a client read from a file."""

    def refuse(problem: str) -> InvalidRequestError:
        return InvalidRequestError(f"backup: {where}.{problem}; {REFUSED}")

    if not client.client_id or len(client.client_id) > 256 or not client.client_id.isprintable():
        raise refuse("client_id: 1 to 256 printable characters")
    if any(c.isspace() for c in client.client_id):
        raise refuse("client_id: no spaces")
    if client.name != client.name.strip() or not client.name or len(client.name) > 200:
        raise refuse("name: 1 to 200 characters")
    if not client.scopes or len(set(client.scopes)) != len(client.scopes):
        raise refuse("scopes: at least one scope, each once")
    for scope in client.scopes:
        if not valid_scope_token(scope):
            raise refuse(f"scopes: {scope!r} is not a valid scope token (RFC 6749 §3.3)")
    audiences = client.audiences
    if not audiences or len(set(audiences)) != len(audiences) or any(a != a.strip() or not a for a in audiences):
        raise refuse("audiences: at least one non-empty audience, each once")
    if any(len(a) > 512 for a in audiences):
        raise refuse("audiences: at most 512 characters each")
    policy = keysets.get(client.keyset)
    if policy is None:
        raise refuse(f"keyset: unknown keyset {client.keyset!r} (configured: {', '.join(keysets)})")
    if not 0 < client.token_ttl <= policy.token_ttl:
        raise refuse(f"token_ttl: between 1s and the keyset's token_ttl ({policy.token_ttl}s), not {client.token_ttl}")


def check_keys(backup: Backup, backends: Mapping[str, KeyBackend]) -> dict[str, int]:
    """Check every live key against its backend: a local key must unseal (under this KEK) to the
    private half of its public key; a Vault key must point at its keyset's Transit key, whose public
    key for that version must be the record's. Returns how many keys were checked, per backend."""
    checked = dict.fromkeys(sorted({ks.backend for ks in backup.keysets}), 0)
    for ks in backup.keysets:
        backend = backends.get(ks.backend)
        if backend is None:
            raise InvalidRequestError(f"backup: keyset {ks.name} uses backend {ks.backend}, which is not set up here")
        for key in ks.keys:
            if not key.verifies:
                continue
            if ks.backend == "vault":
                _check_vault_key(backend, key)
            _probe(backend, key)
            checked[ks.backend] += 1
    return checked


def _probe(backend: KeyBackend, key: KeyVersion) -> None:
    """Sign with the key's private half (unsealed here or held by Vault) and verify with its public key."""
    where = f"key {key.kid} of keyset {key.keyset}"
    try:
        sign = backend.signer(key)
    except KeyValidationError as exc:
        raise InvalidRequestError(
            f"backup: {where}: cannot use its private key ({exc.description}); {REFUSED}"
        ) from None
    try:
        probe = b"jwks-service backup import probe"
        works = backend.verifier(key)(probe, sign(probe))
    except JwksServiceError as exc:
        if isinstance(exc, KeyValidationError):
            raise InvalidRequestError(f"backup: {where} is damaged ({exc.description}); {REFUSED}") from None
        raise  # Vault unreachable, say: the operator may try again
    except Exception as exc:  # damaged material must not be imported, whatever the failure
        raise InvalidRequestError(f"backup: {where} is damaged ({exc}); {REFUSED}") from None
    if not works:
        raise InvalidRequestError(
            f"backup: {where} does not verify its own signature (its public key does not match its private key);"
            f" {REFUSED}"
        )


def _check_vault_key(backend: KeyBackend, key: KeyVersion) -> None:
    from .backends.vault import VaultBackend, parse_reference

    assert isinstance(backend, VaultBackend)
    where = f"key {key.kid} of keyset {key.keyset}"
    try:
        ref = parse_reference(key)
    except KeyValidationError as exc:
        raise InvalidRequestError(f"backup: {where}: {exc.description}; {REFUSED}") from None
    expected = backend.key_name(key.keyset)
    if ref.key_name != expected:
        raise InvalidRequestError(
            f"backup: {where} points at Transit key {ref.key_name}, not its keyset's {expected}; {REFUSED}"
        )
    if key.public_jwk is None:
        return  # HMAC: Transit keeps the secret; the probe signs and verifies with it there
    try:
        _, thumbprint = public_jwk_from_public_key(backend.public_key(ref.key_name, ref.version))
    except KeyValidationError as exc:
        raise InvalidRequestError(f"backup: {where}: {exc.description}; {REFUSED}") from None
    if thumbprint != key.kid:
        raise InvalidRequestError(
            f"backup: {where}: its public key is not the one Vault Transit holds for {ref.key_name} version"
            f" {ref.version}; {REFUSED}"
        )


def check_target(store: Store, backup: Backup, *, force: bool) -> None:
    """The store may take the backup: it is empty, or `force` merges into it keysets of the same alg
    and backend."""
    if not force and not store.is_empty():
        raise ConflictError(
            "the store is not empty (it holds keys, clients, revocations or audit events); import refused, nothing"
            " written. Use --force to merge the backup into it (revoked and retired keys stay so)"
        )
    for ks in backup.keysets:
        stored = store.get_keyset(ks.name)
        if stored is not None and stored.keys and (stored.alg, stored.backend) != (ks.alg, ks.backend):
            raise ConflictError(
                f"keyset {ks.name} in the store holds {stored.alg} keys in {stored.backend}, the backup's are"
                f" {ks.alg} keys in {ks.backend}: they cannot be merged; {REFUSED}"
            )


# ----- merging a keyset (pure) -----------------------------------------------------------------

# How far along the lifecycle a key is; it only ever moves forward (any state may become revoked).
_RANK = {KeyState.NEXT: 0, KeyState.CURRENT: 1, KeyState.PREVIOUS: 2, KeyState.RETIRED: 3, KeyState.REVOKED: 4}


def _since(key: KeyVersion) -> float | None:
    return {
        KeyState.REVOKED: key.revoked_at,
        KeyState.RETIRED: key.retired_at,
        KeyState.PREVIOUS: key.deactivated_at,
        KeyState.CURRENT: key.activated_at,
        KeyState.NEXT: key.created_at,
    }[key.state]


def _at(key: KeyVersion) -> str:
    when = _since(key)
    if when is None:
        return ""
    return f" {'at' if key.state in (KeyState.REVOKED, KeyState.RETIRED) else 'since'} {rfc3339(when)}"


def merge_keyset(
    stored: Keyset | None, incoming: Keyset, now: float, verify_window: int, made_at: float | None = None
) -> tuple[Keyset, list[str]]:
    """The keyset to write for `incoming` (from a backup made at `made_at`) over `stored`, with the
    stored revision (for compare-and-set), and what was decided, for people. See the module
    docstring for the rules."""
    if stored is None:
        return replace(incoming, revision=0), []
    notes: list[str] = []
    mine = {k.kid: k for k in stored.keys}
    merged: dict[str, KeyVersion] = {}
    from_backup: set[str] = set()
    # The store forgets a retired key RETAIN_RETIRED_SECONDS after it retired. A key it does not
    # know may have been retired (or lived and retired) here after a backup older than that: such a
    # key comes in retired, never live again.
    forgetful = made_at is None or made_at + RETAIN_RETIRED_SECONDS <= now
    for key in incoming.keys:
        old = mine.get(key.kid)
        if old is None and forgetful and key.verifies:
            merged[key.kid] = key.with_(state=KeyState.RETIRED, retired_at=now, sealed_private=None)
            notes.append(
                f"key {key.kid} comes in retired (the backup has it {key.state}): this store does not know it, and"
                f" it forgets retired keys {RETAIN_RETIRED_SECONDS // 86400} days after they retire, which is less"
                " than the backup's age, so it may have been retired here"
            )
            continue
        if old is None or _RANK[key.state] > _RANK[old.state]:
            merged[key.kid] = key
            from_backup.add(key.kid)
            if old is not None:
                notes.append(
                    f"key {key.kid} is {key.state} (the backup has it so{_at(key)}; the store had it {old.state})"
                )
        else:
            merged[key.kid] = old
            if old.state != key.state:
                notes.append(
                    f"kept key {old.kid} {old.state} ({old.state} in the store{_at(old)};"
                    f" the backup has it {key.state})"
                )
    for key in stored.keys:
        merged.setdefault(key.kid, key)

    def preferred(state: KeyState) -> list[str]:
        """Kids in `state`, the one to keep first: the backup's, then the most recent."""
        kids = [kid for kid, k in merged.items() if k.state == state]
        return sorted(kids, key=lambda kid: (kid not in from_backup, -(_since(merged[kid]) or 0.0)))

    currents = preferred(KeyState.CURRENT)
    for kid in currents[1:]:
        merged[kid] = merged[kid].with_(state=KeyState.PREVIOUS, deactivated_at=now, retire_at=now + verify_window)
        notes.append(
            f"key {kid} becomes previous (it verifies until {rfc3339(now + verify_window)}): key {currents[0]} is the"
            " current key"
        )
    nexts = preferred(KeyState.NEXT)
    for kid in nexts[1:]:
        merged[kid] = merged[kid].with_(state=KeyState.RETIRED, retired_at=now, sealed_private=None)
        notes.append(f"next key {kid} is discarded (it never signed): key {nexts[0]} is the next key")
    if not currents:
        notes.append(
            f"keyset {incoming.name} has no current key after the import; the next start (or scheduler tick of a"
            " running server) promotes its next key or makes a new one, as after an emergency revocation"
        )
    return replace(incoming, revision=stored.revision, keys=tuple(merged.values())), notes


# ----- writing into a store ------------------------------------------------------------------


def restore(
    backup: Backup,
    store: Store,
    now: float,
    policies: Mapping[str, KeysetPolicy],
    source: str = "",
    progress: Progress = _quiet,
    actor: str = "cli",
) -> dict[str, int]:
    """Write the backup into `store`: its keysets are merged into stored ones of the same name
    (`merge_keyset`), clients the store lacks, revoked tokens and audit events it does not hold yet
    are added; then one `backup.import` audit event, which lists every merge decision."""
    notes: list[str] = []
    made_at = _timestamp(backup.created_at)
    for ks in backup.keysets:
        for attempt in range(MERGE_ATTEMPTS):
            merged, decided = merge_keyset(store.get_keyset(ks.name), ks, now, policies[ks.name].verify_window, made_at)
            try:
                store.save_keyset(merged, merged.revision)
            except RevisionConflictError:  # a running server changed it meanwhile: merge with that
                if attempt + 1 == MERGE_ATTEMPTS:
                    raise
                continue
            break
        for note in decided:
            progress(note)
        notes.extend(decided)
    progress(f"keysets: {_plural(len(backup.keysets), 'keyset')} written")
    clients = 0
    # Deleted clients stay deleted: the store keeps no record of a client once deleted but its audit
    # event (kept for audit.retention).
    held_audit = store.list_audit(limit=ALL_EVENTS) if backup.clients or backup.audit else []
    deleted = {e.target: e.at for e in held_audit if e.action in _DELETED_ACTIONS and e.outcome == "ok"}
    for client in backup.clients:
        if client.client_id in deleted:
            when = rfc3339(deleted[client.client_id])
            note = f"skipped client {client.client_id}: it was deleted in this store at {when}"
            progress(note)
            notes.append(note)
            continue
        if store.get_client(client.client_id) is not None:
            # A secret rotated out or a scope taken away in the store must not come back from a backup.
            note = f"kept client {client.client_id} as the store has it (its secrets and scopes are not rolled back)"
            progress(note)
            notes.append(note)
            continue
        store.put_client(client)
        clients += 1
    progress(f"clients: {_plural(clients, 'client')} written")
    live = {jti: exp for jti, exp in backup.revoked_tokens.items() if exp > now}
    for jti, exp in live.items():
        store.revoke_token(jti, exp)  # never shortens a revocation the store holds
    progress(f"revoked tokens: {_plural(len(live), 'token')} written")
    # Events the store holds already (a backup of this very store) are not written twice.
    held = {_event_key(e) for e in held_audit}
    events = [e for e in backup.audit if _event_key(e) not in held]
    for start in range(0, len(events), AUDIT_BATCH):
        store.append_audit(events[start : start + AUDIT_BATCH])
    progress(f"audit: {_plural(len(events), 'event')} written")
    counts = {**backup.counts(), "clients": clients, "revoked_tokens": len(live), "audit_events": len(events)}
    details: dict[str, Any] = {"issuer": backup.issuer, "created_at": backup.created_at, **counts}
    if notes:
        details["merged"] = notes
    event = AuditEvent(at=now, actor=actor, action="backup.import", target=source, details=details)
    store.append_audit([event])
    audit_log.log_events([event])
    return counts


# Audit actions that delete a client (the CLI's and the admin API's).
_DELETED_ACTIONS = frozenset({"client.delete"})


def _timestamp(text: str) -> float | None:
    """The backup's `created_at` (RFC 3339, authenticated by the tag) as seconds; None if unreadable."""
    try:
        return parse_rfc3339(text)
    except ValueError:
        return None


def _event_key(event: AuditEvent) -> str:
    """An audit event without its id (which every store numbers itself)."""
    return json.dumps({**event.as_dict(), "id": 0}, sort_keys=True, default=str)


# ----- the file ------------------------------------------------------------------------------


def read_file(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InvalidRequestError(f"backup: {path} does not exist") from None
    except OSError as exc:
        raise InvalidRequestError(f"backup: cannot read {path}: {exc.strerror}") from None


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
        f"{_plural(c['keysets'], 'keyset')} ({_plural(c['keys'], 'key')}), {_plural(c['clients'], 'client')},"
        f" {_plural(c['revoked_tokens'], 'revoked token')}, {_plural(c['audit_events'], 'audit event')}"
    )


def describe(backup: Backup) -> Sequence[str]:
    return [f"backup of {backup.issuer}, made {backup.created_at}", summary(backup.counts())]
