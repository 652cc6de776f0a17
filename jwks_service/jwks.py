"""The public JWKS document: rendered once per keyset revision, with its ETag. No I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from .model import Keyset, KeyState

# Private and symmetric members must never leave the service (RFC 7517 §4, API.md §3).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k", "oth"})
_ORDER = {KeyState.CURRENT: 0, KeyState.NEXT: 1, KeyState.PREVIOUS: 2}


@dataclass(frozen=True, slots=True)
class RenderedJWKS:
    body: bytes
    etag: str  # strong validator, quoted (RFC 9110 §8.8.3)
    kids: tuple[str, ...]


def public_keys(keysets: Iterable[Keyset]) -> list[dict[str, Any]]:
    out: list[tuple[tuple[str, int, float], dict[str, Any]]] = []
    for ks in keysets:
        for key in ks.keys:
            if key.state not in _ORDER or key.public_jwk is None:
                continue  # HMAC keys have no public JWK and are never published
            jwk = {k: v for k, v in key.public_jwk.items() if k not in _PRIVATE_MEMBERS}
            if jwk.get("kty") == "oct":
                continue
            jwk.update({"kid": key.kid, "alg": key.alg, "use": "sig"})
            out.append(((ks.name, _ORDER[key.state], -key.created_at), jwk))
    out.sort(key=lambda item: item[0])
    return [jwk for _, jwk in out]


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
