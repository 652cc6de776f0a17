"""The checks an import makes before anything is written (backup.py describes the file).

Behind the file's tag every record is still checked, so that a file made by a faulty exporter (or
anyone holding the KEK) cannot plant a key either: each asymmetric kid is recomputed as the RFC 7638
thumbprint of its public JWK, which may hold only the members the service writes; each live local
key must unseal to the private half of its public key; each live Vault key must point at this
keyset's Transit key, and its public JWK must be the one Transit holds for that version; client
records must be valid clients of this configuration. And the target store must be empty, or its
keysets of the same algorithm and backend (`--force`).

The record checks are pure; `check_keys` asks the backends (Vault), `check_target` reads the store.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from .algorithms import ALGORITHMS
from .assertions import PRIVATE_KEY_JWT, check_client_keys
from .backends import KeyBackend
from .backup import Backup
from .clients import valid_scope_token
from .config import Settings
from .crypto import KeyMismatchError, public_jwk_from_public_key, public_key_from_jwk
from .errors import ConflictError, InvalidRequestError, JwksServiceError, KeyValidationError
from .jwks import JWK_META, PUBLIC_MEMBERS, public_members
from .model import Client, KeysetPolicy, KeyVersion
from .stores import Store

REFUSED = "import refused, nothing written"


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
        _check_client(client, f"clients[{i}]", settings.keysets, settings.clients_allow_http_jwks_uri)


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


def _check_client(client: Client, where: str, keysets: Mapping[str, KeysetPolicy], allow_http: bool) -> None:
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
    try:
        check_client_keys(client.auth_method, client.jwks, client.jwks_uri, allow_http)
    except InvalidRequestError as exc:
        raise refuse(exc.description) from None
    if client.auth_method == PRIVATE_KEY_JWT and client.secrets:
        raise refuse("secrets: a private_key_jwt client has none")


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
