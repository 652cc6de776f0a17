"""Issuance: the hot path. Access tokens signed with a keyset's current key, introspection of them,
and their revocation (RFC 9068, RFC 7662, RFC 7009).

Everything here reads the served snapshot (`snapshot.ServedKeys`); no store is read per token. Each
sync/async pair shares one I/O-free core (`_prepare`: the signing key, lifetime and claims; `_check`:
every check of a token but its signature) and differs only in how the signature is made or checked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from .clock import Clock
from .config import Settings
from .errors import InvalidTokenError, UnavailableError
from .model import Client
from .snapshot import ServedKeys, SigningKey
from .stores import Store
from .tokens import (
    CheckedToken,
    access_token_claims,
    assemble,
    check_access_token,
    check_claims,
    encode_token,
    signing_input,
)

# Introspection refuses to vouch for a token when the revocation list is older than this.
REVOCATION_STALENESS = 5.0
# A revocation record outlives the token's exp by the widest leeway of any keyset plus this much: a
# keyset's leeway may be raised after the record was written, and replicas' clocks differ a little.
REVOCATION_RECORD_MARGIN = 300.0

# Runs a remote signature check off the event loop: (verify, signing input, signature) -> valid.
RemoteVerify = Callable[[Callable[[bytes, bytes], bool], bytes, bytes], Awaitable[bool]]


@dataclass(slots=True)  # not frozen: a frozen __init__ costs ~1 µs per token (object.__setattr__ per field)
class Issued:
    token: str
    expires_in: int
    scope: str
    kid: str
    claims: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Introspected:
    claims: dict[str, Any]
    kid: str
    keyset: str
    key_tainted: bool = False  # signed by a key marked suspect (API.md §6): still active


class Issuance:
    def __init__(self, settings: Settings, store: Store, clock: Clock, served: ServedKeys) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.served = served
        # Introspection first checks a token with the widest leeway of any keyset (it does not know
        # the keyset yet); revocation records outlive that window. Settings do not change at run time.
        self.widest_leeway = max((p.leeway for p in settings.keysets.values()), default=0)

    def _prepare(self, client: Client, scope: str, audience: str) -> tuple[SigningKey, int, dict[str, Any]]:
        """The key that signs the client's token, its lifetime (the client's TTL, capped by its
        keyset's) and its RFC 9068 claims; UnavailableError when the keyset cannot sign."""
        signing = self.served.snapshot.signing.get(client.keyset)
        policy = self.settings.keysets.get(client.keyset)
        if signing is None or policy is None:
            raise UnavailableError(f"keyset {client.keyset} cannot sign right now", retry_after=5)
        # A comparison instead of min(): this runs once per token (see bench/sign.py).
        ttl = client.token_ttl if client.token_ttl < policy.token_ttl else policy.token_ttl
        claims = access_token_claims(
            issuer=self.settings.issuer,
            client_id=client.client_id,
            audience=audience,
            scope=scope,
            now=self.clock.now(),
            ttl=ttl,
        )
        return signing, ttl, claims

    def issue(self, client: Client, scope: str, audience: str) -> Issued:
        """Blocking for a remote key: on the event loop, `issue_async`."""
        signing, ttl, claims = self._prepare(client, scope, audience)
        return Issued(encode_token(signing.header_b64, claims, signing.sign), ttl, scope, signing.kid, claims)

    async def issue_async(self, client: Client, scope: str, audience: str) -> Issued:
        """`issue` for the event loop: a local key signs in process; a remote key's signature goes the
        way chosen when the key was installed (`SigningKey.sign_async`), and its keyset is marked
        degraded while its signatures fail."""
        signing, ttl, claims = self._prepare(client, scope, audience)
        sign_async = signing.sign_async
        if sign_async is None:
            return Issued(encode_token(signing.header_b64, claims, signing.sign), ttl, scope, signing.kid, claims)
        data = signing_input(signing.header_b64, claims)
        try:
            signature = await sign_async(data)
        except UnavailableError as exc:
            self.served.degraded[client.keyset] = exc.description
            raise
        self.served.degraded.pop(client.keyset, None)
        return Issued(assemble(data, signature), ttl, scope, signing.kid, claims)

    def _check(self, token: str) -> tuple[CheckedToken, str]:
        """Everything introspection checks but the signature (CPU only), and the token's keyset."""
        now = self.clock.now()
        served = self.served
        snap = served.snapshot
        checked = check_access_token(
            token, snap.verify_keys, issuer=self.settings.issuer, audiences=None, now=now, leeway=self.widest_leeway
        )
        keyset = snap.kid_keyset[checked.key.kid]
        policy = self.settings.keysets[keyset]
        claims = checked.claims
        # Checked above with the widest leeway of any keyset; now hold it to its own keyset's rules
        # (the same check again when its leeway is the widest: then there is nothing more to check).
        if policy.leeway != self.widest_leeway:
            check_claims(claims, issuer=self.settings.issuer, audiences=None, now=now, leeway=policy.leeway)
        if float(claims["exp"]) - float(claims["iat"]) > policy.token_ttl:
            raise InvalidTokenError("token lives longer than its keyset allows")
        if now - served.revoked_loaded_at > REVOCATION_STALENESS:
            raise UnavailableError("revocation state is stale; cannot vouch for tokens", retry_after=1)
        if claims["jti"] in served.revoked:
            raise InvalidTokenError("token revoked")
        return checked, keyset

    def introspect(self, token: str) -> Introspected:
        """Verify one of our access tokens for RFC 7662; InvalidTokenError for anything inactive.
        Blocking for a Vault HMAC key: on the event loop, `introspect_async`."""
        checked, keyset = self._check(token)
        key = checked.key
        return self._decide(checked, keyset, key.verify(checked.signing_input, checked.signature))

    async def introspect_async(self, token: str, remote: RemoteVerify | None = None) -> Introspected:
        """`introspect` for the event loop. Every cheap check comes first; the signature is checked
        last, here for a local key (CPU only), else through `remote` (default: a worker thread),
        bounded by the backend's request timeout."""
        checked, keyset = self._check(token)
        key = checked.key
        if not key.remote:
            valid = key.verify(checked.signing_input, checked.signature)
        elif remote is not None:
            valid = await remote(key.verify, checked.signing_input, checked.signature)
        else:
            valid = await anyio.to_thread.run_sync(key.verify, checked.signing_input, checked.signature)
        return self._decide(checked, keyset, valid)

    def revocation_record_expiry(self, token_exp: float) -> float:
        """Until when a revocation of a token expiring at `token_exp` is kept: introspection accepts
        a token up to exp + leeway (RFC 7519 §4.1.4), so the record must outlive every such window."""
        return token_exp + self.widest_leeway + REVOCATION_RECORD_MARGIN

    def revoke_token(self, jti: str, token_exp: float) -> None:
        """RFC 7009: the token is inactive from now on, on every replica, for as long as any could accept it."""
        keep_until = self.revocation_record_expiry(token_exp)
        self.store.revoke_token(jti, keep_until)
        self.served.remember_revoked(jti, keep_until)

    def _decide(self, checked: CheckedToken, keyset: str, valid: bool) -> Introspected:
        """The answer for a token that passed `_check`, once its signature is checked."""
        if not valid:
            raise InvalidTokenError("signature does not verify")
        kid = checked.key.kid
        return Introspected(checked.claims, kid, keyset, key_tainted=kid in self.served.snapshot.tainted)
