"""POST /oauth/token, /oauth/introspect, /oauth/revoke through the real app (API.md §3, RFC 6749/7662/7009)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from urllib.parse import quote

import jwt
import pytest
from starlette.testclient import TestClient
from support import ISSUER, basic

from jwks_service.clock import ManualClock
from jwks_service.http import create_app
from jwks_service.runtime import Runtime

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def creds(runtime: Runtime) -> tuple[str, str]:
    client, secret = runtime.clients.create("svc", ["read", "write"], ["api", "other"])
    return client.client_id, secret


def get_token(http: TestClient, creds: tuple[str, str], **form: str) -> str:
    r = http.post("/oauth/token", data={"grant_type": "client_credentials", **form}, headers=basic(*creds))
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def test_basic_auth_issues_rfc9068_token(http: TestClient, creds: tuple[str, str], runtime: Runtime) -> None:
    r = http.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(*creds))
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900 and body["scope"] == "read write"
    header = jwt.get_unverified_header(body["access_token"])
    assert header == {"alg": "ES256", "kid": runtime.keys.snapshot.signing["default"].kid, "typ": "at+jwt"}
    jwks = jwt.PyJWKSet.from_dict(http.get("/.well-known/jwks.json").json())
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    claims = jwt.decode(
        body["access_token"], key, algorithms=["ES256"], audience="api", issuer=ISSUER, options={"verify_exp": False}
    )
    assert set(claims) == {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope"}
    assert claims["sub"] == claims["client_id"] == creds[0]
    assert claims["exp"] - claims["iat"] == 900


def test_post_auth_scope_and_audience(http: TestClient, creds: tuple[str, str]) -> None:
    r = http.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": creds[0],
            "client_secret": creds[1],
            "scope": "write",
            "audience": "other",
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "write"
    claims = jwt.decode(r.json()["access_token"], options={"verify_signature": False})
    assert claims["aud"] == "other" and claims["scope"] == "write"


def test_basic_credentials_are_url_decoded(http: TestClient, runtime: Runtime) -> None:
    client, secret = runtime.clients.create("svc", ["read"], ["api"])
    encoded = f"{quote(client.client_id, safe='')}:{quote(secret, safe='')}".replace("-", "%2D")
    header = {"Authorization": "Basic " + base64.b64encode(encoded.encode()).decode()}
    assert http.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=header).status_code == 200


def test_both_auth_methods_is_invalid_request(http: TestClient, creds: tuple[str, str]) -> None:
    r = http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": creds[0], "client_secret": creds[1]},
        headers=basic(*creds),
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


@pytest.mark.parametrize("basic_tried", [True, False])
def test_unknown_client_and_wrong_secret_look_the_same(
    http: TestClient, creds: tuple[str, str], basic_tried: bool
) -> None:
    responses = []
    for client_id, secret in [(creds[0], creds[1] + "x"), ("no-such-client", creds[1])]:
        if basic_tried:
            r = http.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(client_id, secret))
        else:
            form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
            r = http.post("/oauth/token", data=form)
        responses.append(r)
    a, b = responses
    assert a.status_code == b.status_code == 401
    assert a.json() == b.json() and a.json()["error"] == "invalid_client"
    assert a.headers.get("www-authenticate") == b.headers.get("www-authenticate")
    assert ("www-authenticate" in a.headers) is basic_tried


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": "authorization_code"}, 400, "unsupported_grant_type"),
        ({}, 400, "invalid_request"),
        ({"grant_type": "client_credentials", "scope": "admin"}, 400, "invalid_scope"),
        ({"grant_type": "client_credentials", "scope": "read  write"}, 400, "invalid_scope"),
        ({"grant_type": "client_credentials", "audience": "elsewhere"}, 400, "invalid_target"),
    ],
)
def test_request_errors(
    http: TestClient, creds: tuple[str, str], form: dict[str, str], status: int, error: str
) -> None:
    r = http.post("/oauth/token", data=form, headers=basic(*creds))
    assert r.status_code == status
    assert r.json()["error"] == error and r.json()["error_description"]


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"grant_type=client_credentials&grant_type=client_credentials", FORM),
        (b'{"grant_type": "client_credentials"}', {"Content-Type": "application/json"}),
        (b"grant_type=client_credentials", {}),
        (b"grant_type=%ff%fe", FORM),
        (b"&&&", FORM),
    ],
)
def test_malformed_bodies(http: TestClient, creds: tuple[str, str], body: bytes, headers: dict[str, str]) -> None:
    r = http.post("/oauth/token", content=body, headers={**headers, **basic(*creds)})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "authorization", ["Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Bearer abc", "Basic"]
)
def test_malformed_basic_is_invalid_client(http: TestClient, authorization: str) -> None:
    r = http.post("/oauth/token", data={"grant_type": "client_credentials"}, headers={"Authorization": authorization})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert r.headers["www-authenticate"].startswith("Basic")


def test_body_over_64k_is_413(http: TestClient, creds: tuple[str, str]) -> None:
    r = http.post("/oauth/token", content=b"a=" + b"x" * 70_000, headers={**FORM, **basic(*creds)})
    assert r.status_code == 413 and r.json()["error"] == "request_too_large"


def test_chunked_body_over_64k_is_413(http: TestClient, creds: tuple[str, str]) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"x" * 8192

    r = http.post("/oauth/token", content=chunks(), headers={**FORM, **basic(*creds)})
    assert r.status_code == 413 and r.json()["error"] == "request_too_large"


def test_404_and_405_are_json(http: TestClient) -> None:
    r = http.get("/nope")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = http.get("/oauth/token")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_secret_rotation_grace(http: TestClient, runtime: Runtime, clock: ManualClock, creds: tuple[str, str]) -> None:
    _, new_secret = runtime.clients.rotate_secret(creds[0], grace=3600)
    assert get_token(http, creds) and get_token(http, (creds[0], new_secret))
    clock.advance(3601)
    r = http.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(*creds))
    assert r.status_code == 401
    assert get_token(http, (creds[0], new_secret))


# ----- introspection -------------------------------------------------------------------------


def introspect(http: TestClient, creds: tuple[str, str], token: str) -> dict[str, object]:
    r = http.post("/oauth/introspect", data={"token": token}, headers=basic(*creds))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    return dict(r.json())


def test_introspect_own_token(http: TestClient, creds: tuple[str, str], runtime: Runtime) -> None:
    token = get_token(http, creds)
    body = introspect(http, creds, token)
    assert body["active"] is True
    assert body["client_id"] == creds[0] and body["iss"] == ISSUER and body["aud"] == "api"
    assert body["keyset"] == "default" and body["kid"] == runtime.keys.snapshot.signing["default"].kid


def test_introspect_foreign_token_needs_introspect_scope(http: TestClient, runtime: Runtime) -> None:
    a, sa = runtime.clients.create("a", ["read"], ["api"])
    b, sb = runtime.clients.create("b", ["read"], ["api"])
    c, sc = runtime.clients.create("auditor", ["introspect"], ["api"])
    token = get_token(http, (a.client_id, sa))
    assert introspect(http, (b.client_id, sb), token) == {"active": False}
    assert introspect(http, (c.client_id, sc), token)["active"] is True


def test_introspect_expired_and_garbage(
    http: TestClient, creds: tuple[str, str], clock: ManualClock, runtime: Runtime
) -> None:
    token = get_token(http, creds)
    assert introspect(http, creds, "garbage") == {"active": False}
    assert introspect(http, creds, token[:-4] + "AAAA") == {"active": False}
    clock.advance(900 + 30 - 1)  # inside leeway
    runtime.keys.refresh()
    assert introspect(http, creds, token)["active"] is True
    clock.advance(2)
    runtime.keys.refresh()
    assert introspect(http, creds, token) == {"active": False}


def test_introspect_requires_client_auth_and_token(http: TestClient, creds: tuple[str, str]) -> None:
    r = http.post("/oauth/introspect", data={"token": "x"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = http.post("/oauth/introspect", data={}, headers=basic(*creds))
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_introspect_token_from_other_issuer(http: TestClient, creds: tuple[str, str], runtime: Runtime) -> None:
    from jwks_service.tokens import access_token_claims, encode_token

    signing = runtime.keys.snapshot.signing["default"]
    claims = access_token_claims(
        issuer="https://evil.example", client_id=creds[0], audience="api", scope="read", now=runtime.clock.now(), ttl=60
    )
    forged = encode_token(signing.header_b64, claims, signing.sign)
    assert introspect(http, creds, forged) == {"active": False}


def test_introspect_is_inactive_when_revocation_state_is_stale(
    http: TestClient, creds: tuple[str, str], clock: ManualClock
) -> None:
    token = get_token(http, creds)
    clock.advance(10)  # no refresh for 10 s: the service cannot vouch for the revocation list
    r = http.post("/oauth/introspect", data={"token": token}, headers=basic(*creds))
    assert r.status_code == 503 and r.json()["error"] == "temporarily_unavailable"
    assert "retry-after" in r.headers


# ----- revocation ----------------------------------------------------------------------------


def test_revoke_own_token(http: TestClient, creds: tuple[str, str]) -> None:
    token = get_token(http, creds)
    other = get_token(http, creds)
    r = http.post("/oauth/revoke", data={"token": token, "token_type_hint": "access_token"}, headers=basic(*creds))
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert introspect(http, creds, token) == {"active": False}
    assert introspect(http, creds, other)["active"] is True


def test_revoked_token_stays_inactive_through_the_leeway_after_exp(
    http: TestClient, creds: tuple[str, str], clock: ManualClock, runtime: Runtime, runtime_factory: object
) -> None:
    """Introspection accepts a token until exp + leeway, so its revocation record must outlive that."""
    token = get_token(http, creds)
    other = get_token(http, creds)
    assert http.post("/oauth/revoke", data={"token": token}, headers=basic(*creds)).status_code == 200
    exp = float(jwt.decode(token, options={"verify_signature": False})["exp"])
    leeway = runtime.settings.keysets["default"].leeway
    clock.set(exp + leeway / 2)
    runtime.keys.refresh(force=True)  # the revocation list as read back from the store now
    assert introspect(http, creds, other)["active"] is True  # still inside its leeway
    assert introspect(http, creds, token) == {"active": False}
    fresh = runtime_factory()  # type: ignore[operator]  # a process started now
    with pytest.raises(Exception, match="revoked"):
        fresh.keys.introspect(token)
    # The record is dropped once no replica could accept the token any more.
    clock.set(exp + 86400)
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    assert jti not in runtime.store.revoked_tokens(clock.now())


def test_revoke_foreign_or_unknown_token_is_200_and_noop(http: TestClient, runtime: Runtime) -> None:
    a, sa = runtime.clients.create("a", ["read"], ["api"])
    b, sb = runtime.clients.create("b", ["read"], ["api"])
    token = get_token(http, (a.client_id, sa))
    assert http.post("/oauth/revoke", data={"token": token}, headers=basic(b.client_id, sb)).status_code == 200
    assert http.post("/oauth/revoke", data={"token": "nonsense"}, headers=basic(b.client_id, sb)).status_code == 200
    assert introspect(http, (a.client_id, sa), token)["active"] is True


def test_revocation_survives_restart_and_reaches_other_processes(
    http: TestClient, creds: tuple[str, str], runtime_factory: object
) -> None:
    token = get_token(http, creds)
    http.post("/oauth/revoke", data={"token": token}, headers=basic(*creds))
    other = runtime_factory()  # type: ignore[operator]
    with pytest.raises(Exception, match="revoked"):
        other.keys.introspect(token)


def test_error_bodies_never_leak_internals(http: TestClient, creds: tuple[str, str]) -> None:
    r = http.post("/oauth/token", content=b"\x00\xff" * 10, headers={**FORM, **basic(*creds)})
    assert r.status_code == 400
    body = json.loads(r.content)
    assert set(body) == {"error", "error_description"} and "Traceback" not in r.text


def test_introspect_holds_each_keyset_to_its_own_leeway(
    runtime_factory: Callable[..., Runtime], clock: ManualClock
) -> None:
    """Introspection first checks with the widest leeway of any keyset, then with the token's own."""
    rt = runtime_factory({"strict": {"alg": "ES256", "leeway": "0s"}, "lenient": {"alg": "ES256", "leeway": "60s"}})
    strict, strict_secret = rt.clients.create("s", ["read"], ["api"], keyset="strict")
    lenient, lenient_secret = rt.clients.create("l", ["read"], ["api"], keyset="lenient")
    with TestClient(create_app(runtime=rt, background=False), base_url=ISSUER) as http:
        strict_creds, lenient_creds = (strict.client_id, strict_secret), (lenient.client_id, lenient_secret)
        tokens = {creds: get_token(http, creds) for creds in (strict_creds, lenient_creds)}
        clock.advance(900 + 10)  # both expired 10 s ago: within the lenient keyset's leeway only
        rt.keys.refresh()
        assert introspect(http, strict_creds, tokens[strict_creds]) == {"active": False}
        assert introspect(http, lenient_creds, tokens[lenient_creds])["active"] is True
