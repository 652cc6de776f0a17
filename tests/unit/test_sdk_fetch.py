"""What the verifier and the token client fetch, and from where, against an in-memory issuer
(httpx.MockTransport) and a manual clock.

- An ``https://`` issuer's metadata may not send the SDK to ``http://`` (jwks_uri,
  introspection_endpoint, token_endpoint): refused, naming the member, unless the caller passes
  that URL itself or ``allow_http=True``. Nothing is ever sent to the refused URL.
- An unknown kid while refreshes are failing waits for the backoff, like every other refresh.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from support import es256_keypair

from jwks_service.algorithms import ALGORITHMS
from jwks_service.crypto import make_signer
from jwks_service.jws import b64encode
from jwks_service.sdk import (
    AsyncVerifier,
    IntrospectionUnavailableError,
    KeysUnavailableError,
    TokenClient,
    TokenRequestError,
    UnknownKeyError,
    Verifier,
)

ISSUER = "https://issuer.example"
NOW = 1_800_000_000.0
HS256_TOKEN = b64encode(b'{"alg":"HS256","kid":"h1","typ":"at+jwt"}').decode() + ".e30.c2ln"


def mint(kid: str | None = None) -> str:
    private, jwk = es256_keypair()
    body = {"iss": ISSUER, "sub": "svc", "client_id": "svc", "aud": "api", "jti": "j1", "scope": "read"}
    body |= {"iat": int(NOW), "nbf": int(NOW), "exp": int(NOW) + 3600}
    head = {"alg": "ES256", "kid": kid or jwk["kid"], "typ": "at+jwt"}
    signing_input = b64encode(json.dumps(head).encode()) + b"." + b64encode(json.dumps(body).encode())
    return (signing_input + b"." + b64encode(make_signer(ALGORITHMS["ES256"], private)(signing_input))).decode()


class Issuer:
    """An in-memory issuer: RFC 8414 metadata (with the given members), a JWKS, introspection and a
    token endpoint wherever the metadata says; every request is recorded."""

    def __init__(self, **metadata: str) -> None:
        self.metadata = {
            "issuer": ISSUER,
            "jwks_uri": ISSUER + "/jwks",
            "introspection_endpoint": ISSUER + "/oauth/introspect",
            "token_endpoint": ISSUER + "/oauth/token",
            **metadata,
        }
        self.requests: list[str] = []
        self.jwks_verifiers: list[str | None] = []  # the JWKS-Verifier header of each JWKS request
        self.jwks_status = 200
        self.cache_control = "max-age=100"

    def handle(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.requests.append(f"{request.method} {url}")
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json=self.metadata)
        if request.url.path == "/jwks":
            self.jwks_verifiers.append(request.headers.get("jwks-verifier"))
            if self.jwks_status != 200:
                return httpx.Response(self.jwks_status)
            return httpx.Response(
                200, json={"keys": [es256_keypair()[1]]}, headers={"Cache-Control": self.cache_control}
            )
        if request.url.path == "/oauth/introspect":
            now = int(NOW)
            claims = {"iss": ISSUER, "sub": "svc", "client_id": "svc", "aud": "api", "jti": "h"}
            return httpx.Response(200, json={"active": True, **claims, "iat": now, "nbf": now, "exp": now + 60})
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "t", "token_type": "Bearer", "expires_in": 60})
        return httpx.Response(404)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))

    def hits(self, prefix: str) -> list[str]:
        return [r for r in self.requests if r.split(" ", 1)[1].startswith(prefix)]


def verifier(issuer: Issuer, clock: Callable[[], float] = lambda: NOW, **options: Any) -> Verifier:
    return Verifier(ISSUER, "api", http=issuer.client(), clock=clock, **options)


# ----- naming itself (API.md §6 "Adoption") --------------------------------------------------


def test_every_jwks_fetch_names_the_verifier_and_its_instance() -> None:
    issuer = Issuer()
    now = [NOW]
    v = verifier(issuer, clock=lambda: now[0], name="orders-api")
    v.verify(mint())  # the first fetch
    now[0] += 200
    v.refresh()
    assert len(issuer.jwks_verifiers) >= 2
    assert len(set(issuer.jwks_verifiers)) == 1
    name, _, instance = str(issuer.jwks_verifiers[0]).partition("/")
    assert name == "orders-api" and len(instance) == 8 and int(instance, 16) >= 0
    other = verifier(issuer, name="orders-api")
    other.refresh()
    assert issuer.jwks_verifiers[-1] != issuer.jwks_verifiers[0]  # another instance


def test_the_async_verifier_names_itself_too() -> None:
    issuer = Issuer()

    async def fetch() -> str:
        http = httpx.AsyncClient(transport=httpx.MockTransport(issuer.handle))
        async with AsyncVerifier(ISSUER, "api", http=http, clock=lambda: NOW, name="billing") as v:
            await v.refresh()
            return v.verifier_id

    verifier_id = asyncio.run(fetch())
    assert verifier_id.startswith("billing/") and issuer.jwks_verifiers == [verifier_id]


def test_the_default_name_and_bad_names() -> None:
    issuer = Issuer()
    verifier(issuer).refresh()
    assert str(issuer.jwks_verifiers[0]).startswith("jwks-service-sdk/")
    for bad in ("", "orders api", "x" * 101, "caf\u00e9"):
        with pytest.raises(ValueError, match="name"):
            verifier(issuer, name=bad)


# ----- downgrades -----------------------------------------------------------------------------


def test_an_http_jwks_uri_from_an_https_issuer_is_refused() -> None:
    issuer = Issuer(jwks_uri="http://issuer.example/jwks")
    with pytest.raises(KeysUnavailableError, match="http:// jwks_uri") as refused:
        verifier(issuer).verify(mint())
    assert "downgrade" in refused.value.description
    assert issuer.hits("http://") == []  # nothing was fetched from the downgraded URL


def test_an_upper_case_http_scheme_is_a_downgrade_too() -> None:
    issuer = Issuer(jwks_uri="HTTP://issuer.example/jwks")
    with pytest.raises(KeysUnavailableError, match="http:// jwks_uri"):
        verifier(issuer).verify(mint())
    assert [r for r in issuer.requests if "/jwks" in r] == []


@pytest.mark.parametrize("value", ["ftp://issuer.example/jwks", "/jwks", "", 42, "http://[::1"])
def test_a_jwks_uri_that_is_no_http_url_is_refused(value: Any) -> None:
    issuer = Issuer(jwks_uri=value)
    with pytest.raises(KeysUnavailableError, match="jwks_uri"):
        verifier(issuer).verify(mint())


def test_an_http_jwks_uri_passed_by_the_caller_is_used() -> None:
    issuer = Issuer(jwks_uri="http://issuer.example/jwks")
    v = verifier(issuer, jwks_uri="http://issuer.example/jwks")
    assert v.verify(mint())["sub"] == "svc"
    assert issuer.requests == ["GET http://issuer.example/jwks"]  # no discovery needed


def test_an_http_jwks_uri_is_used_when_the_caller_opts_in() -> None:
    issuer = Issuer(jwks_uri="http://issuer.example/jwks")
    assert verifier(issuer, allow_http=True).verify(mint())["sub"] == "svc"
    assert issuer.hits("http://issuer.example/jwks")


def test_an_http_issuer_may_name_http_endpoints() -> None:
    """Not a downgrade: an http issuer (a test rig, a sidecar on loopback) was never https."""
    metadata = {"issuer": "http://127.0.0.1:8000", "jwks_uri": "http://127.0.0.1:8000/jwks"}
    issuer = Issuer()
    v = Verifier("http://127.0.0.1:8000", "api", http=issuer.client())
    v._accept_metadata(metadata)
    assert v.jwks_uri == "http://127.0.0.1:8000/jwks"


def test_an_http_introspection_endpoint_from_an_https_issuer_is_refused() -> None:
    issuer = Issuer(introspection_endpoint="http://issuer.example/oauth/introspect")
    v = verifier(issuer, introspection=("verifier", "secret"))
    with pytest.raises(IntrospectionUnavailableError, match="http:// introspection_endpoint"):
        v.verify(HS256_TOKEN)
    assert issuer.hits("http://") == []  # our client secret never went out in clear


def test_an_http_introspection_endpoint_passed_by_the_caller_is_used() -> None:
    issuer = Issuer(introspection_endpoint="http://issuer.example/oauth/introspect")
    v = verifier(
        issuer, introspection=("verifier", "secret"), introspection_uri="http://issuer.example/oauth/introspect"
    )
    assert v.verify(HS256_TOKEN)["jti"] == "h"
    assert issuer.hits("http://issuer.example/oauth/introspect")


def test_an_http_introspection_endpoint_is_used_when_the_caller_opts_in() -> None:
    issuer = Issuer(introspection_endpoint="http://issuer.example/oauth/introspect")
    v = verifier(issuer, introspection=("verifier", "secret"), allow_http=True)
    assert v.verify(HS256_TOKEN)["jti"] == "h"


def test_the_events_stream_of_an_https_issuer_is_https() -> None:
    """The stream's URL is never read from metadata: the issuer's own origin, or what the caller passes."""
    v = verifier(Issuer())
    assert v.events_url() == ISSUER + "/keys/events"


def test_an_http_token_endpoint_from_an_https_issuer_is_refused() -> None:
    issuer = Issuer(token_endpoint="http://issuer.example/oauth/token")
    client = TokenClient(ISSUER, "svc", "secret", http=issuer.client())
    with pytest.raises(TokenRequestError) as refused:
        client.get()
    assert "http:// token_endpoint" in str(refused.value)
    assert issuer.hits("http://") == []  # the client secret never went out in clear


def test_an_http_token_endpoint_is_used_when_passed_or_opted_in() -> None:
    issuer = Issuer(token_endpoint="http://issuer.example/oauth/token")
    with TokenClient(ISSUER, "svc", "secret", http=issuer.client(), allow_http=True) as client:
        assert client.get() == "t"
    with TokenClient(
        ISSUER, "svc", "secret", token_endpoint="http://issuer.example/oauth/token", http=issuer.client()
    ) as client:
        assert client.get() == "t"


# ----- an unknown kid while backing off -------------------------------------------------------


def test_an_unknown_kid_while_backing_off_waits_for_the_backoff() -> None:
    """The cooldown of unknown-kid refetches (2 s) is shorter than the backoff after failures (8 s
    and more): a forged kid during an outage must not bring a request forward."""
    from jwks_service.sdk import CacheSettings

    issuer = Issuer()
    now = [NOW]
    settings = CacheSettings(unknown_kid_cooldown=2.0, backoff_min=8.0, backoff_max=60.0)
    v = verifier(issuer, clock=lambda: now[0], jwks_uri=ISSUER + "/jwks", cache=settings)
    assert v.verify(mint())["sub"] == "svc"
    assert v.stats.jwks_requests == 1
    issuer.jwks_status = 503
    now[0] = NOW + 100  # expired (max-age=100): the next use refreshes, which fails
    assert v.verify(mint())["sub"] == "svc"  # served stale
    assert v.stats.jwks_requests == 2 and v.stats.jwks_failures == 1
    retry_at = v.cache.retry_at
    assert retry_at >= now[0] + 4.0  # at least half of backoff_min
    for t in (now[0] + 2.0, now[0] + 3.0, retry_at - 0.01):  # past the cooldown, inside the backoff
        now[0] = t
        with pytest.raises(UnknownKeyError):
            v.verify(mint(kid="forged"))
        assert v.verify(mint())["sub"] == "svc"
    assert v.stats.jwks_requests == 2
    assert v.stats.unknown_kid_refetches == 0
    now[0] = retry_at  # the backoff is over: one request (the expired set's blocking refresh)
    with pytest.raises(UnknownKeyError):
        v.verify(mint(kid="forged"))
    assert v.stats.jwks_requests == 3


def test_a_set_usable_when_the_refresh_was_decided_verifies_the_token() -> None:
    """The set is judged at the instant the verifier decided to refresh it beside: expiring a moment
    later, while the background refresh starts, must not refuse the token (no stale-if-error)."""
    issuer = Issuer()
    issuer.cache_control = "max-age=100, stale-if-error=0"  # as the service's fleet in tests sends it
    readings = [NOW]
    v = verifier(issuer, clock=lambda: readings.pop(0) if len(readings) > 1 else readings[0], jwks_uri=ISSUER + "/jwks")
    token = mint()
    assert v.verify(token)["sub"] == "svc"
    expiry = v.cache.expires_at
    assert v.cache.stale_for == 0 and v.cache.decide(expiry - 0.001).name == "BACKGROUND"
    issuer.jwks_status = 503  # the background refresh fails; the answer must not depend on it
    readings[:] = [expiry - 0.001, expiry + 0.001]  # decided just before expiry, read again just after
    assert v.verify(token)["sub"] == "svc"
    if v._background is not None:
        v._background.join(timeout=5)


# ----- the flows themselves, driven by hand: no HTTP client is ever used ---------------------------


def _unused(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"the flow was driven by hand, yet {request.method} {request.url} was sent")


def test_the_token_flow_says_what_to_send_and_reads_the_answers() -> None:
    client = TokenClient(
        ISSUER, "svc", "s3cret", scope="read", http=httpx.Client(transport=httpx.MockTransport(_unused))
    )
    flow = client._token_flow()
    discovery = next(flow)
    assert (discovery.method, discovery.url) == ("GET", ISSUER + "/.well-known/oauth-authorization-server")
    metadata = {"issuer": ISSUER, "token_endpoint": ISSUER + "/oauth/token"}
    request = flow.send((httpx.Response(200), json.dumps(metadata).encode()))
    assert (request.method, request.url, request.auth) == ("POST", ISSUER + "/oauth/token", ("svc", "s3cret"))
    assert request.data == {"grant_type": "client_credentials", "scope": "read"}
    with pytest.raises(StopIteration) as done:
        flow.send((httpx.Response(200), b'{"access_token": "t1", "expires_in": 60}'))
    assert done.value.value == "t1"
    assert client.token is not None and client.token_endpoint == ISSUER + "/oauth/token"


def test_a_failure_thrown_into_the_token_flow_becomes_its_error() -> None:
    client = TokenClient(
        None,
        "svc",
        "s3cret",
        token_endpoint=ISSUER + "/token",
        http=httpx.Client(transport=httpx.MockTransport(_unused)),
    )
    flow = client._token_flow()
    assert next(flow).url == ISSUER + "/token"  # no discovery: the endpoint was given
    with pytest.raises(TokenRequestError) as refused:
        flow.throw(httpx.ConnectError("refused"))
    assert refused.value.error == "temporarily_unavailable"


def test_the_refresh_flow_records_a_failure_thrown_in() -> None:
    v = Verifier(
        ISSUER,
        "api",
        jwks_uri=ISSUER + "/jwks",
        clock=lambda: NOW,
        http=httpx.Client(transport=httpx.MockTransport(_unused)),
    )
    flow = v._refresh_flow()
    request = next(flow)
    assert (request.method, request.url, request.what) == ("GET", ISSUER + "/jwks", "the JWK set")
    with pytest.raises(StopIteration):
        flow.throw(httpx.ReadTimeout("slow"))
    assert v.cache.failures == 1 and "ReadTimeout" in v.cache.last_error and not v.cache.loaded
    assert v.stats.jwks_requests == 1 and v.stats.jwks_failures == 1
