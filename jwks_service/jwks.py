"""The public JWKS document: rendered once per keyset revision, with its ETag. No I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .algorithms import ALGORITHMS
from .model import Keyset, KeyState

# What is published of a key: the members that make up its public key (RFC 7518 §6.2.1, §6.3.1;
# RFC 8037 §2), then kid, alg and use, which the service sets itself. An allow-list, not a deny-list:
# nothing else stored with a key (private members, x5u, x5c, jku, key_ops, ...) ever reaches a verifier.
PUBLIC_MEMBERS: dict[str, tuple[str, ...]] = {
    "RSA": ("kty", "n", "e"),
    "EC": ("kty", "crv", "x", "y"),
    "OKP": ("kty", "crv", "x"),
}
JWK_META = ("kid", "alg", "use")
_ORDER = {KeyState.CURRENT: 0, KeyState.NEXT: 1, KeyState.PREVIOUS: 2}


@dataclass(frozen=True, slots=True)
class RenderedJWKS:
    body: bytes
    etag: str  # strong validator, quoted (RFC 9110 §8.8.3)
    kids: tuple[str, ...]


# Per asymmetric alg: the kty and curve its key must have, and the members published of it.
_PUBLISHED: dict[str, tuple[str, str, tuple[str, ...]]] = {
    name: (alg.kty, alg.curve, PUBLIC_MEMBERS[alg.kty]) for name, alg in ALGORITHMS.items() if not alg.symmetric
}


def public_members(alg_name: str, jwk: Mapping[str, Any]) -> dict[str, str] | None:
    """The members of `jwk` that make up an `alg_name` public key, or None when it is not one: an
    unknown or symmetric alg (HMAC keys are never published), another kty or curve, a member missing."""
    spec = _PUBLISHED.get(alg_name)
    if spec is None:
        return None
    kty, curve, names = spec
    if jwk.get("kty") != kty or (curve and jwk.get("crv") != curve):
        return None
    members: dict[str, str] = {}
    for name in names:
        value = jwk.get(name)
        if type(value) is not str or not value:  # exactly str: a subclass could carry anything
            return None
        members[name] = value
    return members


def public_keys(keysets: Iterable[Keyset]) -> list[dict[str, Any]]:
    out: list[tuple[tuple[str, int, float], dict[str, Any]]] = []
    for ks in keysets:
        for key in ks.keys:
            order = _ORDER.get(key.state)
            if order is None or key.public_jwk is None:
                continue  # HMAC keys have no public JWK and are never published
            jwk: dict[str, Any] | None = public_members(key.alg, key.public_jwk)
            if jwk is None:
                continue
            jwk["kid"] = key.kid
            jwk["alg"] = key.alg
            jwk["use"] = "sig"
            out.append(((ks.name, order, -key.created_at), jwk))
    out.sort(key=_first)
    return [jwk for _, jwk in out]


def _first(item: tuple[tuple[str, int, float], dict[str, Any]]) -> tuple[str, int, float]:
    return item[0]


def render_jwks(keysets: Iterable[Keyset]) -> RenderedJWKS:
    keys = public_keys(keysets)
    body = orjson.dumps({"keys": keys})
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return RenderedJWKS(body, etag, tuple(k["kid"] for k in keys))


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 §13.1.2: weak comparison for If-None-Match, list or ``*``."""
    if if_none_match.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in if_none_match.split(","))
