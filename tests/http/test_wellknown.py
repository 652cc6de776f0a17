"""Discovery, key status, health and readiness (API.md §3, RFC 8414)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.testclient import TestClient
from support import ISSUER

from jwks_service.clock import ManualClock
from jwks_service.http import create_app
from jwks_service.http.drain import Drain
from jwks_service.runtime import Runtime


def test_discovery_documents(http: TestClient) -> None:
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        body = http.get(path).json()
        assert body["issuer"] == ISSUER
        assert body["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
        assert body["token_endpoint"] == f"{ISSUER}/oauth/token"
        assert body["introspection_endpoint"] == f"{ISSUER}/oauth/introspect"
        assert body["revocation_endpoint"] == f"{ISSUER}/oauth/revoke"
        assert body["grant_types_supported"] == ["client_credentials"]
        assert set(body["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "client_secret_post"}
        assert body["id_token_signing_alg_values_supported"] == ["ES256"]


def test_jwks_has_only_public_members(runtime_factory: Callable[..., Runtime]) -> None:
    rt = runtime_factory(
        {"ec": {"alg": "ES384"}, "rsa": {"alg": "PS256"}, "ed": {"alg": "Ed25519"}, "mac": {"alg": "HS512"}}
    )
    http = TestClient(create_app(runtime=rt, background=False), base_url=ISSUER)
    r = http.get("/.well-known/jwks.json")
    assert r.headers["content-type"] == "application/jwk-set+json"
    keys = r.json()["keys"]
    assert len(keys) == 6  # current + next of the three asymmetric keysets; HMAC never published
    for k in keys:
        assert {"kid", "kty", "alg", "use"} <= set(k)
        assert k["use"] == "sig"
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(k)
        assert k["kty"] != "oct"
    assert {k["alg"] for k in keys} == {"ES384", "PS256", "Ed25519"}


def test_key_status_shows_the_rollover_coming(http: TestClient, runtime: Runtime) -> None:
    body = http.get("/keys/status").json()
    assert body["revoked"] == []
    by_state = {k["state"]: k for k in body["keys"]}
    assert set(by_state) == {"current", "next"}
    for k in body["keys"]:
        assert set(k) >= {"kid", "keyset", "alg", "state", "not_before", "not_after"}
        assert k["not_before"].endswith("Z")
    # the next key starts signing when the current one stops: 180 days after activation by default
    assert by_state["next"]["not_before"] > by_state["current"]["not_before"]


def test_health_and_readiness(http: TestClient) -> None:
    assert http.get("/healthz").status_code == 200
    r = http.get("/readyz")
    assert r.status_code == 200
    assert r.json()["keysets"] == ["default"]


def test_readyz_names_what_is_missing(runtime: Runtime, clock: ManualClock) -> None:
    http = TestClient(create_app(runtime=runtime, background=False), base_url=ISSUER)
    runtime.store.close()  # the store goes away under the running service
    r = http.get("/readyz")
    assert r.status_code == 503
    assert "store" in r.json()["problems"]
    assert r.json()["error"] == "not_ready"
    # Signing and JWKS keep working from memory.
    assert http.get("/.well-known/jwks.json").status_code == 200


def test_jwks_caching_headers_head_and_other_methods(http: TestClient, runtime: Runtime) -> None:
    r = http.get("/.well-known/jwks.json")
    settings = runtime.settings
    assert r.headers["cache-control"] == (
        f"public, max-age={settings.jwks_max_age}, stale-if-error={settings.stale_if_error}"
    )
    etag = r.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert int(r.headers["content-length"]) == len(r.content)
    for inm in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        not_modified = http.get("/.well-known/jwks.json", headers={"If-None-Match": inm})
        assert not_modified.status_code == 304 and not_modified.content == b""
        assert not_modified.headers["etag"] == etag
    assert http.get("/.well-known/jwks.json", headers={"If-None-Match": '"stale"'}).status_code == 200
    head = http.head("/.well-known/jwks.json")
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == etag
    post = http.post("/.well-known/jwks.json")
    assert post.status_code == 405 and post.json()["error"] == "method_not_allowed"
    # A rotation changes the body and the ETag at once.
    runtime.keys.rotate("default", force=True, reason="test")
    after = http.get("/.well-known/jwks.json", headers={"If-None-Match": etag})
    assert after.status_code == 200 and after.headers["etag"] != etag
    assert after.headers["content-length"] == str(len(after.content))


def test_draining_takes_the_replica_out_of_rotation_and_keeps_serving(runtime: Runtime) -> None:
    """`serve --drain`: after SIGTERM the health endpoints say 503 so a proxy stops routing here,
    while the requests it still sends are served."""
    drain = Drain()
    http = TestClient(create_app(runtime=runtime, background=False, drain=drain), base_url=ISSUER)
    assert http.get("/healthz").status_code == 200
    drain.start()
    for path in ("/healthz", "/readyz"):
        r = http.get(path)
        assert r.status_code == 503, path
        assert r.json() == {"status": "draining"}
    assert http.get("/.well-known/jwks.json").status_code == 200
    assert http.get("/keys/status").status_code == 200
