"""A JWK set (RFC 7517) turned into verification keys, strictly. No I/O.

Part of the core: the verifier SDK loads the issuer's key set with it (`jwks_service.sdk.keys`
re-exports this module), and the server the key set of a `private_key_jwt` client.

One bad key does not spoil the set: it is left out with the reason (``KeyRing.skipped``), and
tokens naming it fail as an unknown kid. What is left out:

- keys without a ``kid`` (a token names its key by kid), and kids that appear twice;
- symmetric keys (``kty: oct``): a public key set never carries a secret worth trusting;
- keys whose ``use`` is not ``sig`` or whose ``key_ops`` lack ``verify``;
- keys whose algorithm is not allowed, is not the one the key type and curve imply, or cannot be
  inferred (an RSA key without ``alg``, unless exactly one RSA algorithm is allowed);
- malformed or weak material (RSA under 2048 bits, points not on the curve, ...).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from .algorithms import ALGORITHMS, MIN_RSA_BITS
from .crypto import make_verifier, public_key_from_jwk
from .errors import JwksServiceError
from .jws import VerificationKey

# What a verifier accepts unless told otherwise: every asymmetric algorithm (HMAC keys are never
# published; HS* tokens are checked by introspection).
ASYMMETRIC_ALGORITHMS = frozenset(name for name, alg in ALGORITHMS.items() if not alg.symmetric)
_CURVE_ALG = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "Ed25519": "EdDSA"}
MAX_KEYS = 100  # a key set larger than this is refused: nobody rotates that many keys at once


class KeySetError(ValueError):
    """The document is not a JWK set at all."""


@dataclass(frozen=True, slots=True)
class KeyRing:
    keys: Mapping[str, VerificationKey]
    skipped: Mapping[str, str] = field(default_factory=dict)  # kid (or "#index") -> why


def _infer_alg(jwk: Mapping[str, Any], allowed: Collection[str]) -> str:
    declared = jwk.get("alg")
    if declared is not None:
        if not isinstance(declared, str):
            raise ValueError("alg is not a string")
        return declared
    kty = jwk.get("kty")
    if kty in ("EC", "OKP"):
        crv = jwk.get("crv")
        if isinstance(crv, str) and crv in _CURVE_ALG:
            alg = _CURVE_ALG[crv]
            if alg == "EdDSA" and "EdDSA" not in allowed and "Ed25519" in allowed:
                return "Ed25519"
            return alg
        raise ValueError(f"unsupported curve {crv!r}")
    if kty == "RSA":
        rsa = [a for a in allowed if ALGORITHMS[a].family in ("RSA", "RSA-PSS")]
        if len(rsa) == 1:
            return rsa[0]
        raise ValueError("RSA key without alg (set algorithms= to exactly one RSA algorithm to accept it)")
    raise ValueError(f"unsupported kty {kty!r}")


def load_key(jwk: Mapping[str, Any], allowed: Collection[str]) -> VerificationKey:
    """One JWK as a verification key for its one algorithm; ValueError says why it is unusable."""
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError("no kid")
    if jwk.get("kty") == "oct":
        raise ValueError("symmetric keys are not accepted from a key set")
    if any(name in jwk for name in ("d", "p", "q", "dp", "dq", "qi", "k")):
        raise ValueError("private key material in a public key set")
    alg = _infer_alg(jwk, allowed)
    if alg not in allowed or alg not in ALGORITHMS:
        raise ValueError(f"algorithm {alg!r} is not allowed")
    if jwk.get("kty") == "RSA":
        # Refuse a weak modulus before importing it (the importer would warn on every fetch).
        n = jwk.get("n")
        if not isinstance(n, str) or len(n.rstrip("=")) * 6 < MIN_RSA_BITS - 7:
            raise ValueError(f"{alg} needs an RSA key of at least {MIN_RSA_BITS} bits")
    try:
        public = public_key_from_jwk(alg, jwk)
        verify = make_verifier(ALGORITHMS[alg], public)
    except JwksServiceError as exc:
        raise ValueError(exc.description) from None
    return VerificationKey(kid, alg, verify)


def load_key_set(document: Any, allowed: Collection[str] = ASYMMETRIC_ALGORITHMS) -> KeyRing:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeySetError('not a JWK set (a JSON object with a "keys" array)')
    entries: list[Any] = document["keys"]
    if len(entries) > MAX_KEYS:
        raise KeySetError(f"JWK set of {len(entries)} keys (at most {MAX_KEYS})")
    keys: dict[str, VerificationKey] = {}
    skipped: dict[str, str] = {}
    seen: set[str] = set()
    for index, jwk in enumerate(entries):
        label = f"#{index}"
        if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str) and jwk["kid"]:
            label = jwk["kid"]
            if label in seen:  # ambiguous whichever copy loaded: neither is used
                keys.pop(label, None)
                skipped[label] = "kid appears more than once"
                continue
            seen.add(label)
        if not isinstance(jwk, dict):
            skipped[label] = "not a JSON object"
            continue
        try:
            keys[label] = load_key(jwk, allowed)
        except ValueError as exc:
            skipped[label] = str(exc)
    return KeyRing(keys, skipped)
