"""Client assertions (RFC 7523 §2.2 and §3, OIDC ``private_key_jwt``): the rules a JWT that a client
signed to authenticate itself is held to, and where a client's ``jwks_uri`` may point. No I/O; `now`
is a parameter.

The signature is checked with the JOSE core (`jws`: the header rules of RFC 8725, one algorithm per
key, ``alg: none`` and keys named by the token refused), against the keys the client registered
(`jwkset`: asymmetric keys only, so an HMAC assertion "signed" with a public key never verifies).
Then the claims: ``iss`` = ``sub`` = the client_id, ``aud`` one of the audiences the endpoint
accepts (the issuer or the endpoint's URL), ``exp`` in the future but at most
MAX_ASSERTION_LIFETIME ahead (so a replay cache that keeps each ``jti`` until its ``exp`` stays
bounded), ``iat`` / ``nbf`` not in the future, and a ``jti``. Whether the ``jti`` was seen before is
the store's to say (`Store.remember_jti`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .claims import audience_matches, number
from .errors import (
    ExpiredTokenError,
    ImmatureTokenError,
    InvalidAudienceError,
    InvalidClaimsError,
    InvalidIssuerError,
    InvalidRequestError,
    MalformedTokenError,
)
from .jwkset import ASYMMETRIC_ALGORITHMS, KeySetError, load_key_set
from .jws import (
    MAX_HEADER_SEGMENT,
    VerificationKey,
    b64decode,
    bad_signature,
    check_header,
    key_for,
    parse_claims,
    parse_json_object,
    split_compact,
)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PRIVATE_KEY_JWT = "private_key_jwt"
SECRET_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
AUTH_METHODS = (*SECRET_AUTH_METHODS, PRIVATE_KEY_JWT)
# What a client may sign its assertions with: every asymmetric algorithm (a shared secret would make
# it a client_secret_jwt client, which this service does not offer).
ASSERTION_ALGORITHMS = ASYMMETRIC_ALGORITHMS
MAX_ASSERTION_LIFETIME = 300  # exp at most 5 minutes ahead
ASSERTION_LEEWAY = 30  # clock skew tolerated on exp, iat and nbf
MAX_ASSERTION_BYTES = 8192
MAX_JTI_CHARS = 256
MAX_CLIENT_ID_CHARS = 256
MAX_JWKS_URI_CHARS = 2048


@dataclass(frozen=True, slots=True)
class Assertion:
    """A verified assertion: its jti, and until when it could be accepted (its exp plus the leeway),
    which is how long the jti must be remembered to refuse a replay."""

    client_id: str
    jti: str
    expires_at: float


def claimed_client(token: str) -> tuple[str, str | None]:
    """The ``iss`` and the header's ``kid`` (None when absent) of an assertion not verified yet: whose
    keys to check it with, and which one. Nothing is trusted from them; MalformedTokenError or
    InvalidClaimsError when there is no usable iss."""
    _, h64, p64, _ = split_compact(token, MAX_ASSERTION_BYTES)
    kid = _header(h64).get("kid")
    iss = parse_claims(p64).get("iss")
    if not isinstance(iss, str) or not iss or len(iss) > MAX_CLIENT_ID_CHARS:
        raise InvalidClaimsError("the assertion's iss must be the client_id")
    return iss, kid if isinstance(kid, str) else None


def _header(h64: bytes) -> dict[str, Any]:
    if len(h64) > MAX_HEADER_SEGMENT:
        raise MalformedTokenError("header too large")
    return parse_json_object(b64decode(h64, "header"), "header")


def check_assertion(
    token: str,
    client_id: str,
    keys: Mapping[str, VerificationKey],
    audiences: Collection[str],
    now: float,
) -> Assertion:
    """Verify `token` as `client_id`'s assertion, signed by one of `keys`; a JoseError says why not.

    A header without ``kid`` names the client's one key of its ``alg``, when there is exactly one
    (some client libraries send none); with several candidates a kid is required."""
    signing_input, h64, p64, s64 = split_compact(token, MAX_ASSERTION_BYTES)
    header = _header(h64)
    if "kid" not in header:
        candidates = [k.kid for k in keys.values() if k.alg == header.get("alg")]
        if len(candidates) == 1:
            header = {**header, "kid": candidates[0]}
    alg, kid = check_header(header, ASSERTION_ALGORITHMS)
    key = key_for(keys, kid, alg)
    if not key.verify(signing_input, b64decode(s64, "signature")):
        raise bad_signature()
    claims = parse_claims(p64)
    check_assertion_claims(claims, client_id, audiences, now)
    return Assertion(client_id, claims["jti"], number(claims, "exp") + ASSERTION_LEEWAY)


def check_assertion_claims(claims: Mapping[str, Any], client_id: str, audiences: Collection[str], now: float) -> None:
    if claims.get("iss") != client_id:
        raise InvalidIssuerError("the assertion's iss must be the client_id")
    if claims.get("sub") != client_id:
        raise InvalidClaimsError("the assertion's sub must be the client_id")
    if not audience_matches(claims.get("aud"), audiences):
        raise InvalidAudienceError("the assertion's aud must be the issuer or the endpoint's URL")
    exp = number(claims, "exp")
    if now >= exp + ASSERTION_LEEWAY:
        raise ExpiredTokenError("the assertion expired")
    if exp > now + MAX_ASSERTION_LIFETIME + ASSERTION_LEEWAY:
        raise InvalidClaimsError(f"the assertion's exp is more than {MAX_ASSERTION_LIFETIME}s ahead")
    for name in ("iat", "nbf"):
        if name in claims and number(claims, name) > now + ASSERTION_LEEWAY:
            raise ImmatureTokenError(f"the assertion's {name} is in the future")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS:
        raise InvalidClaimsError(f"the assertion needs a jti of 1 to {MAX_JTI_CHARS} characters")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_jwks_uri(url: object, allow_http: bool = False) -> str:
    """`url` if a client's key set may be fetched from it: https (http only on a loopback address,
    or with `allow_http`), a host, no user info or fragment; else InvalidRequestError."""
    if not isinstance(url, str) or not url or len(url) > MAX_JWKS_URI_CHARS:
        raise InvalidRequestError(f"jwks_uri: a URL of at most {MAX_JWKS_URI_CHARS} characters")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port  # .port raises ValueError when out of range
    except ValueError:
        raise InvalidRequestError(f"jwks_uri: {url!r} is not a valid URL") from None
    if port == 0:
        raise InvalidRequestError("jwks_uri: port 0 is not a port to fetch from")
    if parts.scheme not in ("https", "http") or not host or parts.username is not None or parts.fragment:
        raise InvalidRequestError("jwks_uri: an https:// URL with a host, and no user info or fragment")
    if parts.scheme == "http" and not (allow_http or _loopback(host)):
        raise InvalidRequestError(
            "jwks_uri: http:// only on a loopback address (or set clients.allow_http_jwks_uri = true)"
        )
    return url


def check_client_keys(method: object, jwks: object, jwks_uri: object, allow_http: bool = False) -> None:
    """A registration's `token_endpoint_auth_method` and key source, as the service accepts them: a
    secret method with neither `jwks` nor `jwks_uri`; private_key_jwt with exactly one of them, the
    JWK set holding at least one usable key and none it would leave out. InvalidRequestError if not."""
    if method not in AUTH_METHODS:
        raise InvalidRequestError(f"token_endpoint_auth_method: one of {', '.join(AUTH_METHODS)}")
    if method != PRIVATE_KEY_JWT:
        if jwks is not None or jwks_uri is not None:
            raise InvalidRequestError("jwks, jwks_uri: only with token_endpoint_auth_method private_key_jwt")
        return
    if (jwks is None) == (jwks_uri is None):
        raise InvalidRequestError("private_key_jwt: exactly one of jwks (the keys) and jwks_uri (where they are)")
    if jwks_uri is not None:
        check_jwks_uri(jwks_uri, allow_http)
        return
    try:
        ring = load_key_set(jwks, ASSERTION_ALGORITHMS)
    except KeySetError as exc:
        raise InvalidRequestError(f"jwks: {exc}") from None
    if ring.skipped:
        kid, why = next(iter(ring.skipped.items()))
        raise InvalidRequestError(f"jwks: key {kid}: {why}")
    if not ring.keys:
        raise InvalidRequestError("jwks: at least one public key")
