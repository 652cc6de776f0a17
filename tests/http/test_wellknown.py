"""Discovery, key status, health and readiness (API.md §3, RFC 8414)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redisserver import RedisServer
from starlette.testclient import TestClient
from support import ISSUER

from jwks_service.clock import ManualClock
from jwks_service.errors import StoreError
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
        methods = {"client_secret_basic", "client_secret_post", "private_key_jwt"}
        assert set(body["token_endpoint_auth_methods_supported"]) == methods
        assert body["access_token_signing_alg_values_supported"] == ["ES256"]
        # RFC 8414 §2: response_types_supported is REQUIRED; with no authorization endpoint, none.
        assert body["response_types_supported"] == []
        # Nothing that does not exist: no ID tokens, no authorization endpoint.
        assert not {"id_token_signing_alg_values_supported", "subject_types_supported", "authorization_endpoint"} & set(
            body
        )


@pytest.mark.parametrize(
    "path", ["/.well-known/jwks.json", "/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"]
)
def test_public_documents_answer_cross_origin_reads(http: TestClient, path: str) -> None:
    origin = {"Origin": "https://app.example"}
    r = http.get(path, headers=origin)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    assert http.head(path, headers=origin).headers["access-control-allow-origin"] == "*"
    preflight = http.options(
        path,
        headers={**origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "if-none-match"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "GET" in preflight.headers["access-control-allow-methods"]
    # a browser app's verifier may name itself (API.md §6)
    assert preflight.headers["access-control-allow-headers"].lower() == "if-none-match, jwks-verifier"
    # Writes stay refused.
    assert http.post(path).status_code == 405


def test_a_304_carries_the_cors_header_and_the_etag_is_readable(http: TestClient) -> None:
    first = http.get("/.well-known/jwks.json")
    assert first.headers["access-control-expose-headers"] == "ETag"
    r = http.get("/.well-known/jwks.json", headers={"If-None-Match": first.headers["etag"]})
    assert r.status_code == 304 and r.headers["access-control-allow-origin"] == "*"


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
    # /readyz does no I/O (anyone may call it): it reports what the background refresh found.
    with pytest.raises(StoreError):
        runtime.keys.refresh()
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


def test_readyz_names_problems_without_backend_error_text(
    runtime_factory: Callable[..., Runtime], private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 11: the public /readyz said what the backends said (Redis host and port, Vault addresses and
    messages). It names only what is not ready; the detail goes to the log, once per cause."""
    redis = private_redis
    runtime = runtime_factory(store={"url": redis.url})
    vault_text = "Vault at http://10.9.8.7:8200 refused transit/sign/jwks-default: permission denied"
    http = TestClient(create_app(runtime=runtime, background=False), base_url=ISSUER)
    assert http.get("/readyz").status_code == 200
    redis.stop(kill=True)  # the store goes away under the running service
    with pytest.raises(StoreError):
        runtime.keys.refresh()  # what the background reload finds next
    runtime.keys.degraded["default"] = vault_text  # as issue_async records a failing Vault signature
    with caplog.at_level("WARNING", logger="jwks_service"):
        bodies = [http.get("/readyz") for _ in range(3)]
    for r in bodies:
        assert r.status_code == 503
        assert r.json()["error"] == "not_ready"
        assert r.json()["problems"] == {"store": "unreachable", "default": "cannot sign"}
        for secret in (str(redis.port), "127.0.0.1", "refused", "Error", "10.9.8.7", "8200", "permission", "transit"):
            assert secret not in r.text, (secret, r.text)
    logged = [rec.getMessage() for rec in caplog.records if rec.name == "jwks_service"]
    assert sum(str(redis.port) in line for line in logged) == 1, logged  # the detail, once, not per request
    assert sum(vault_text in line for line in logged) == 1, logged


def test_readyz_problems_are_an_allow_list() -> None:
    from jwks_service.http.wellknown import public_problems

    assert public_problems(
        {
            "store": "Redis 10.0.0.5:6379 unreachable: Connection refused",
            "a": "current key K cannot sign: Vault http://vault:8200 said 403",
            "b": "no current key",
            "c": "keyset not created yet",
            "d": "degraded: Transit at http://vault:8200 timed out",
            "e": "something new with /etc/secret/path",
        }
    ) == {
        "store": "unreachable",
        "a": "cannot sign",
        "b": "no current key",
        "c": "not created yet",
        "d": "cannot sign",
        "e": "not ready",
    }


def test_readyz_answers_in_bounded_time_while_the_store_hangs(
    runtime_factory: Callable[..., Runtime], private_redis: RedisServer
) -> None:
    """A frozen Redis (SIGSTOP): /readyz does no I/O, so it answers at once (200 until a reload has
    failed, then 503 naming the store), and the JWKS is served meanwhile."""
    import signal
    import time

    redis = private_redis
    assert redis.proc is not None
    runtime = runtime_factory(store={"url": redis.url})
    with TestClient(create_app(runtime=runtime, background=False), base_url=ISSUER) as http:
        assert http.get("/readyz").status_code == 200
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            start = time.monotonic()
            assert http.get("/readyz").status_code == 200  # nothing has noticed yet
            assert time.monotonic() - start < 0.5
            with pytest.raises(StoreError):
                runtime.keys.refresh()  # the background reload times out on the frozen store
            for _ in range(2):
                start = time.monotonic()
                r = http.get("/readyz")
                took = time.monotonic() - start
                assert r.status_code == 503 and r.json()["problems"] == {"store": "unreachable"}
                assert took < 0.5, took
                assert http.get("/.well-known/jwks.json").status_code == 200
        finally:
            redis.proc.send_signal(signal.SIGCONT)


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
