"""Vault / OpenBao Transit keys: created inside Vault, used there, never exported.

A keyset ``K`` is one Transit key ``f"{key_prefix}{K}"``; each of our key versions is one version of
that Transit key. Every signature pins ``key_version``, so a version made out of band (someone ran
``rotate``, or ``auto_rotate_period`` is set in Vault) never signs before the service has published
it; `latest_version` lets the service notice such a version and `adopt` turns it into a key record.

The record's ``sealed_private`` holds only a pointer, ``vault-transit:v1:<transit key>:<version>``:
not secret, and useless without a Vault token allowed to sign with that key.

Every request goes through `vaultapi.VaultClient`, which maps Vault's errors to the service's
(`UnavailableError`, `VaultPermissionError`, `KeyValidationError`). Batched signing, the service's
hot path, posts JSON built on a prepared prefix on the event loop (`sign_batch_async`); everything
else blocks, in worker threads. ECDSA and RSA inputs are hashed here and sent ``prehashed``: 32-64
bytes per token instead of the whole signing input, less for Vault to parse (Ed25519 cannot be
prehashed).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ..algorithms import ALGORITHMS, Algorithm, TransitKeySpec, transit_key_spec
from ..crypto import (
    KeyMismatchError,
    PublicKey,
    SignFn,
    VerifyFn,
    check_key,
    make_verifier,
    public_jwk_from_public_key,
    public_key_from_jwk,
)
from ..errors import KeyValidationError
from ..model import KeyVersion, NewKey
from ..vaultapi import VaultClient, VaultPermissionError, VaultRequest

__all__ = ["REFERENCE_PREFIX", "TransitRef", "VaultBackend", "VaultPermissionError", "parse_reference"]

log = logging.getLogger(__name__)

REFERENCE_PREFIX = b"vault-transit:v1:"
_URLSAFE = str.maketrans("-_", "+/")
_HASHES = {"sha256": "sha2-256", "sha384": "sha2-384", "sha512": "sha2-512"}


@dataclass(frozen=True, slots=True)
class TransitRef:
    """What a Vault-backed key record points at: a Transit key and one of its versions."""

    key_name: str
    version: int

    def encode(self) -> bytes:
        return REFERENCE_PREFIX + f"{self.key_name}:{self.version}".encode()


def parse_reference(key: KeyVersion) -> TransitRef:
    """The Transit key and version a record points at; KeyValidationError when it has none."""
    blob = key.sealed_private
    if blob is None:
        raise KeyValidationError(f"key {key.kid} holds no Vault reference (retired or revoked)")
    if not blob.startswith(REFERENCE_PREFIX):
        raise KeyValidationError(f"key {key.kid}: not a Vault Transit reference")
    name, sep, version = blob[len(REFERENCE_PREFIX) :].decode("utf-8", "replace").rpartition(":")
    if not sep or not name or not version.isdigit() or int(version) < 1:
        raise KeyValidationError(f"key {key.kid}: malformed Vault Transit reference")
    return TransitRef(name, int(version))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True, slots=True)
class _Operation:
    """One pinned Transit signing operation: the endpoint, the request prepared as JSON, the decoding."""

    path: str  # e.g. sign/jwks-default (under the mount)
    fields: dict[str, Any]  # the request's fixed fields, for a single signature
    batch: bytes  # the JSON request up to its batch_input's items: {...,"batch_input":[
    digest: Callable[[bytes], bytes] | None  # prehashed: the input is this hash of the data
    result: str  # "signature" (sign) or "hmac"
    prefix: str  # vault:v<version>:
    urlsafe: bool  # ECDSA with marshaling_algorithm=jws: base64url without padding

    def encode(self, data: bytes) -> bytes:
        return binascii.b2a_base64(self.digest(data) if self.digest is not None else data, newline=False)

    def batch_body(self, inputs: Sequence[bytes]) -> bytes:
        items = b'"},{"input":"'.join(map(self.encode, inputs))  # base64 needs no JSON escaping
        return b"".join((self.batch, b'{"input":"', items, b'"}]}'))

    def decode(self, value: Any) -> bytes:
        if not isinstance(value, str) or not value.startswith(self.prefix):
            raise KeyValidationError(f"{self.path}: Transit answered with another key version than {self.prefix!r}")
        body = value[len(self.prefix) :]
        if self.urlsafe:
            body = body.translate(_URLSAFE) + "=" * (-len(body) % 4)
        try:  # binascii straight away: base64's wrappers cost as much again, per signature
            return binascii.a2b_base64(body, strict_mode=True)
        except (binascii.Error, ValueError):
            raise KeyValidationError(f"{self.path}: Transit returned a malformed signature") from None


def _digest(name: str) -> Callable[[bytes], bytes]:
    new = getattr(hashlib, name)

    def digest(data: bytes) -> bytes:
        return new(data).digest()  # type: ignore[no-any-return]

    return digest


class VaultBackend:
    """A `KeyBackend` whose keys live in a Vault or OpenBao Transit secrets engine."""

    name = "vault"

    def __init__(self, client: VaultClient, mount: str = "transit", key_prefix: str = "jwks-") -> None:
        self._client = client
        self._mount = mount.strip("/")
        self._prefix = key_prefix
        self._public: dict[tuple[str, int], PublicKey] = {}
        self._public_lock = threading.Lock()
        self._operations: dict[tuple[str, str, bytes | None], _Operation] = {}

    # ----- names and Vault calls --------------------------------------------------------------

    def key_name(self, keyset: str) -> str:
        return f"{self._prefix}{keyset}"

    def _request(self, method: str, path: str, capability: str, data: Any = None, **options: Any) -> VaultRequest:
        """A request on <mount>/`path`."""
        hint = f" (is the key missing, or the transit engine not mounted at {self._mount}?)"
        engine = ("transit", self._mount)
        if method == "GET":
            return VaultRequest.get(f"{self._mount}/{path}", capability, missing=hint, engine=engine, **options)
        return VaultRequest.post(f"{self._mount}/{path}", capability, data, missing=hint, engine=engine, **options)

    def _post(self, path: str, body: Any, capability: str = "update", **options: Any) -> dict[str, Any]:
        resp = self._client.call(self._request("POST", path, capability, body, **options))
        return resp if isinstance(resp, dict) else {}

    def _read_key(self, name: str) -> dict[str, Any] | None:
        """The Transit key's description, or None when it does not exist."""
        resp = self._client.call(self._request("GET", f"keys/{name}", "read", absent_ok=True, replayable=True))
        if resp is None:
            return None
        info: dict[str, Any] = resp["data"]
        self._remember_public(name, info)
        return info

    def _key_info(self, name: str) -> dict[str, Any]:
        info = self._read_key(name)
        if info is None:
            raise KeyValidationError(f"Vault has no Transit key {self._mount}/keys/{name}")
        return info

    # ----- public keys ------------------------------------------------------------------------

    def _remember_public(self, name: str, info: dict[str, Any]) -> None:
        key_type = info.get("type")
        for version, entry in (info.get("keys") or {}).items():
            if not isinstance(entry, dict) or (name, int(version)) in self._public:
                continue
            text = entry.get("public_key")
            if not text:
                continue
            try:
                public = self._parse_public(str(key_type), str(text))
            except (ValueError, binascii.Error):
                log.error("Transit key %s v%s: cannot parse its public key", name, version)
                continue
            with self._public_lock:
                self._public.setdefault((name, int(version)), public)

    @staticmethod
    def _parse_public(key_type: str, text: str) -> PublicKey:
        if key_type == "ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
        loaded = serialization.load_pem_public_key(text.encode())
        if not isinstance(loaded, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ValueError(f"unexpected public key {type(loaded).__name__}")
        return loaded

    def public_key(self, key_name: str, version: int) -> PublicKey:
        """The public key of a Transit key version, read from Vault once per version and cached."""
        cached = self._public.get((key_name, version))
        if cached is not None:
            return cached
        self._key_info(key_name)  # caches every version it lists
        cached = self._public.get((key_name, version))
        if cached is None:
            raise KeyValidationError(
                f"Vault has no public key for {self._mount}/keys/{key_name} version {version} "
                "(not a signing key, trimmed, or below min_decryption_version)"
            )
        return cached

    # ----- KeyBackend -------------------------------------------------------------------------

    def _check_key(self, name: str, alg: Algorithm, spec: TransitKeySpec, info: dict[str, Any]) -> None:
        """Refuse a Transit key we did not make the way we would have (an out-of-band or reused name)."""
        where = f"{self._mount}/keys/{name}"
        if info.get("type") != spec.key_type:
            raise KeyValidationError(f"Transit key {where} is {info.get('type')}, but {alg.name} needs {spec.key_type}")
        if spec.key_size is not None and info.get("key_size") != spec.key_size:
            raise KeyValidationError(
                f"Transit key {where} holds {info.get('key_size')}-byte secrets, not the configured {spec.key_size}"
            )
        if info.get("exportable") or info.get("allow_plaintext_backup"):
            raise KeyValidationError(
                f"Transit key {where} is exportable or allows plaintext backups: its private key could leave Vault"
            )
        if info.get("derived"):
            raise KeyValidationError(f"Transit key {where} uses key derivation, which JWS signing cannot")

    def generate(self, keyset: str, alg: Algorithm, key_bits: int) -> NewKey:
        """Create the Transit key (version 1) or rotate it; the new version becomes the new key."""
        spec = transit_key_spec(alg, key_bits)
        name = self.key_name(keyset)
        info = self._read_key(name)
        if info is None:
            body: dict[str, Any] = {"type": spec.key_type, "exportable": False, "allow_plaintext_backup": False}
            if spec.key_size is not None:
                body["key_size"] = spec.key_size
            created = self._post(f"keys/{name}", body, "create").get("data")
            info = created if isinstance(created, dict) and "latest_version" in created else self._key_info(name)
            self._remember_public(name, info)
            self._check_key(name, alg, spec, info)  # creating over an existing key is a silent no-op
        else:
            self._check_key(name, alg, spec, info)
            rotated = self._post(f"keys/{name}/rotate", None).get("data")
            info = rotated if isinstance(rotated, dict) and "latest_version" in rotated else self._key_info(name)
            self._remember_public(name, info)
        return self._new_key(name, alg, int(info["latest_version"]))

    def adopt(self, keyset: str, alg: Algorithm, key_bits: int, version: int) -> NewKey:
        """A key record for a Transit version made outside the service (rotate, auto_rotate_period)."""
        spec = transit_key_spec(alg, key_bits)
        name = self.key_name(keyset)
        info = self._key_info(name)
        self._check_key(name, alg, spec, info)
        low, high = int(info.get("min_decryption_version") or 1), int(info["latest_version"])
        if not low <= version <= high:
            raise KeyValidationError(f"Transit key {name} has no usable version {version} (usable: {low}..{high})")
        return self._new_key(name, alg, version)

    def _new_key(self, name: str, alg: Algorithm, version: int) -> NewKey:
        ref = TransitRef(name, version).encode()
        if alg.symmetric:
            # HMAC kids are random, never derived from the secret (which Vault keeps anyway).
            return NewKey(secrets.token_urlsafe(16), None, ref)
        public = self.public_key(name, version)
        try:
            check_key(alg, public)
        except KeyMismatchError as exc:
            raise KeyValidationError(f"Transit key {name} v{version}: {exc}") from None
        jwk, kid = public_jwk_from_public_key(public)
        jwk.update({"kid": kid, "alg": alg.name, "use": "sig"})
        return NewKey(kid, jwk, ref)

    def _operation(self, key: KeyVersion) -> _Operation:
        cache_key = (key.kid, key.alg, key.sealed_private)
        op = self._operations.get(cache_key)
        if op is None:
            op = self._make_operation(key)
            if len(self._operations) > 1024:  # records of retired keys linger otherwise
                self._operations.clear()
            self._operations[cache_key] = op
        return op

    @staticmethod
    def _make_operation(key: KeyVersion) -> _Operation:
        ref = parse_reference(key)
        alg = ALGORITHMS.get(key.alg)
        if alg is None:
            raise KeyValidationError(f"key {key.kid}: unsupported algorithm {key.alg!r}")
        prefix = f"vault:v{ref.version}:"
        fields: dict[str, Any] = {"key_version": ref.version}
        digest = None
        if alg.symmetric:
            path, result = f"hmac/{ref.key_name}", "hmac"
            fields["algorithm"] = _HASHES[alg.hash_name]
        else:
            path, result = f"sign/{ref.key_name}", "signature"
            if alg.family in ("RSA", "RSA-PSS", "EC"):
                # Hashed here: Transit signs the digest as it would have signed its own (hash_algorithm).
                digest = _digest(alg.hash_name)
                fields.update(hash_algorithm=_HASHES[alg.hash_name], prehashed=True)
            if alg.family == "RSA":
                fields.update(signature_algorithm="pkcs1v15")
            elif alg.family == "RSA-PSS":
                # RFC 7518 §3.5: the salt is as long as the hash ("auto", Vault's default, makes it as long
                # as possible).
                fields.update(signature_algorithm="pss", salt_length="hash")
            elif alg.family == "EC":
                # jws marshaling: r || s in base64url (RFC 7518 §3.4), not ASN.1 DER.
                fields.update(marshaling_algorithm="jws")
        head = orjson.dumps(fields)[:-1]
        return _Operation(
            path,
            fields,
            head + b',"batch_input":[',
            digest,
            result,
            prefix,
            urlsafe=alg.family == "EC",
        )

    def signer(self, key: KeyVersion) -> SignFn:
        """Sign with the record's Transit version (pinned): one blocking Vault request per call."""
        op = self._operation(key)

        def sign(data: bytes) -> bytes:
            resp = self._post(op.path, {**op.fields, "input": op.encode(data).decode("ascii")}, replayable=True)
            return op.decode((resp.get("data") or {}).get(op.result))

        return sign

    def _batch_request(self, op: _Operation, inputs: Sequence[bytes]) -> VaultRequest:
        return self._request("POST", op.path, "update", op.batch_body(inputs), replayable=True)

    def sign_batch(self, key: KeyVersion, inputs: Sequence[bytes]) -> list[bytes]:
        """Sign many inputs in ONE Transit request (``batch_input``), pinned to the record's version.

        Signatures come back in input order; any item Vault refused fails the whole batch.
        """
        if not inputs:
            return []
        op = self._operation(key)
        return self._batch_results(op, self._client.call(self._batch_request(op, inputs)), len(inputs))

    async def sign_batch_async(self, key: KeyVersion, inputs: Sequence[bytes]) -> list[bytes]:
        """`sign_batch` on the event loop, which it never blocks. The MicroBatcher prefers it."""
        if not inputs:
            return []
        op = self._operation(key)
        return self._batch_results(op, await self._client.acall(self._batch_request(op, inputs)), len(inputs))

    def _batch_results(self, op: _Operation, resp: Any, count: int) -> list[bytes]:
        results = ((resp.get("data") if isinstance(resp, dict) else None) or {}).get("batch_results")
        if not isinstance(results, list) or len(results) != count:
            raise KeyValidationError(f"{self._mount}/{op.path}: Transit answered a batch of {count} oddly")
        out: list[bytes] = []
        name, decode = op.result, op.decode
        for i, item in enumerate(results):
            if not isinstance(item, dict) or item.get("error"):
                error = item.get("error") if isinstance(item, dict) else item
                raise KeyValidationError(f"{self._mount}/{op.path}: batch item {i} refused: {error}")
            out.append(decode(item.get(name)))
        return out

    def verifies_remotely(self, key: KeyVersion) -> bool:
        """Whether `verifier(key)` calls Transit (HMAC keys): then it must run off the event loop."""
        alg = ALGORITHMS.get(key.alg)
        return alg is not None and alg.symmetric

    def verifier(self, key: KeyVersion) -> VerifyFn:
        """Asymmetric keys verify locally with the published JWK; HMAC keys ask Transit (the secret stays there):
        a blocking call, bounded by the Vault client's timeout, that the service makes last, after every
        cheap check of the token, and never on the event loop (`verifies_remotely`)."""
        alg = ALGORITHMS.get(key.alg)
        if alg is None:
            raise KeyValidationError(f"key {key.kid}: unsupported algorithm {key.alg!r}")
        if not alg.symmetric:
            if key.public_jwk is None:
                raise KeyValidationError(f"key {key.kid} has no public key")
            try:
                return make_verifier(alg, public_key_from_jwk(key.alg, key.public_jwk))
            except KeyMismatchError as exc:
                raise KeyValidationError(f"key {key.kid}: {exc}") from None
        ref = parse_reference(key)
        path = f"verify/{ref.key_name}"
        prefix, size, algorithm = f"vault:v{ref.version}:", alg.hash_bytes, _HASHES[alg.hash_name]

        def verify_hmac(data: bytes, sig: bytes) -> bool:
            if len(sig) != size:
                return False
            body = {"input": _b64(data), "algorithm": algorithm, "hmac": prefix + _b64(sig)}
            # refused_ok: Vault answers 400 for a version retired (min_decryption_version) or trimmed.
            resp = self._post(path, body, refused_ok=True, replayable=True)
            return isinstance(resp, dict) and (resp.get("data") or {}).get("valid") is True

        return verify_hmac

    # ----- lifecycle helpers ------------------------------------------------------------------

    def version_of(self, key: KeyVersion) -> int | None:
        """The Transit version a record points at; None once its reference is gone (retired)."""
        try:
            return parse_reference(key).version
        except KeyValidationError:
            return None

    def latest_version(self, keyset: str) -> int:
        """The newest version of the keyset's Transit key (0 when it does not exist), to spot
        versions made out of band."""
        info = self._read_key(self.key_name(keyset))
        return 0 if info is None else int(info["latest_version"])

    def retire(self, key: KeyVersion, live: Iterable[KeyVersion]) -> int:
        """Make retired versions unusable in Vault and destroy them where Transit allows.

        `key` is the record being retired or revoked, as it was before (with its reference); `live`
        are the keyset's records still in next/current/previous. Transit can only cut a key ring
        from below: min_decryption_version and min_encryption_version rise to the oldest live version
        (no older version can then sign, verify or be read) and the key is trimmed to it (older
        versions deleted for good). A retired version newer than a live one stays in Vault until
        every older version is retired too; the service no longer signs with it (its record has no
        reference) nor publishes it. Returns the key ring's min_available_version afterwards.
        """
        try:
            retired: TransitRef | None = parse_reference(key)
        except KeyValidationError:
            retired = None
        live_refs: list[TransitRef] = []
        for k in live:
            try:
                live_refs.append(parse_reference(k))
            except KeyValidationError:
                continue
        name = retired.key_name if retired else (live_refs[0].key_name if live_refs else self.key_name(key.keyset))
        live_versions = [r.version for r in live_refs if r.key_name == name]
        info = self._read_key(name)
        if info is None:
            return 0
        latest = int(info["latest_version"])
        if live_versions:
            floor = min(live_versions)
        elif retired is not None:
            floor = retired.version + 1
        else:
            return int(info.get("min_available_version") or 0)
        floor = min(floor, latest)  # Transit never lets the minimums pass the latest version
        if retired is not None and retired.version >= floor:
            log.warning(
                "Transit key %s v%d stays in Vault until the older live version v%d is retired",
                name,
                retired.version,
                floor,
            )
        min_dec = int(info.get("min_decryption_version") or 0)
        min_enc = int(info.get("min_encryption_version") or 0)
        min_avail = int(info.get("min_available_version") or 0)
        new_dec = max(min_dec, floor)
        new_enc = max(min_enc, new_dec)  # never 0 ("any version") once we manage the ring
        if (new_dec, new_enc) != (min_dec, min_enc):
            self._post(f"keys/{name}/config", {"min_decryption_version": new_dec, "min_encryption_version": new_enc})
            with self._public_lock:
                for cached in [k for k in self._public if k[0] == name and k[1] < new_dec]:
                    del self._public[cached]
        if new_dec > min_avail:
            self._post(f"keys/{name}/trim", {"min_available_version": new_dec})
            min_avail = new_dec
        return min_avail
