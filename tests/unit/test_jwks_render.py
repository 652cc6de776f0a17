"""JWKS rendering publishes an allow-list of members per key type, never whatever was stored."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from jwks_service.jwks import render_jwks
from jwks_service.model import Keyset, KeyState, KeyVersion

EXTRA = {
    "x5u": "https://attacker.example/chain.pem",
    "x5c": ["MIIB"],
    "x5t": "AAAA",
    "jku": "https://attacker.example/jwks.json",
    "key_ops": ["sign"],
    "ext": True,
    "d": "private",
    "k": "secret",
    "kid": "another-kid",
    "alg": "none",
    "use": "enc",
}
PUBLIC = {
    "RS256": {"kty": "RSA", "n": "sXch", "e": "AQAB"},
    "ES256": {"kty": "EC", "crv": "P-256", "x": "f83O", "y": "x_FE"},
    "EdDSA": {"kty": "OKP", "crv": "Ed25519", "x": "11qY"},
}


def keyset(alg: str, jwk: dict[str, Any] | None, state: KeyState = KeyState.CURRENT) -> Keyset:
    key = KeyVersion(kid="k1", keyset="ks", alg=alg, state=state, created_at=1.0, public_jwk=jwk)
    return Keyset("ks", alg, "local", 1, (key,))


@pytest.mark.parametrize("alg", sorted(PUBLIC))
def test_only_the_public_members_of_each_kty_are_published(alg: str) -> None:
    rendered = render_jwks([keyset(alg, {**PUBLIC[alg], **EXTRA})])
    (jwk,) = orjson.loads(rendered.body)["keys"]
    assert jwk == {**PUBLIC[alg], "kid": "k1", "alg": alg, "use": "sig"}


@pytest.mark.parametrize(
    ("alg", "jwk"),
    [
        ("HS256", {"kty": "oct", "k": "c2VjcmV0"}),  # a symmetric key is never published
        ("HS256", PUBLIC["ES256"]),  # nor a public key planted on an HMAC key record
        ("ES256", PUBLIC["RS256"]),  # nor a key of another type than its alg's
        ("ES256", {"kty": "EC", "crv": "P-256", "x": "f83O"}),  # nor an incomplete one
        ("ES256", {"kty": "EC", "crv": "P-256", "x": "f83O", "y": 7}),  # nor one with a non-string member
        ("ES256", {"kty": "XYZ", "x": "f83O"}),
        ("XX999", PUBLIC["ES256"]),  # an unknown alg
    ],
)
def test_keys_that_do_not_fit_their_alg_are_not_published(alg: str, jwk: dict[str, Any]) -> None:
    assert orjson.loads(render_jwks([keyset(alg, jwk)]).body) == {"keys": []}


def test_only_published_states_are_rendered() -> None:
    for state in (KeyState.RETIRED, KeyState.REVOKED):
        assert orjson.loads(render_jwks([keyset("ES256", PUBLIC["ES256"], state)]).body) == {"keys": []}
