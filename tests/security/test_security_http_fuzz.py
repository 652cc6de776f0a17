"""The HTTP error contract (API.md §3) under hostile input: never a 500, always a JSON error body.

Random bodies, forms, headers and paths go through the real app. The test client re-raises any
exception that reaches Starlette's server-error handler, so an unexpected error fails with its
traceback; a handled error that still maps to a 5xx fails the status assertion.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from jwks_service.clock import ManualClock
from jwks_service.http import create_app
from jwks_service.runtime import Runtime

ISSUER = "http://127.0.0.1:8000"
OAUTH = ("/oauth/token", "/oauth/introspect", "/oauth/revoke")
FORM = "application/x-www-form-urlencoded"
MAX_BODY = 64 * 1024
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Target:
    http: TestClient
    rt: Runtime
    client_id: str
    secret: str
    token: str  # a genuine access token of that client
    genuine: TestClient  # the same app seen from another address, for requests with genuine credentials


@pytest.fixture(scope="module")
def target(make_runtime: Callable[[], tuple[Runtime, ManualClock]]) -> Iterator[Target]:
    rt, _ = make_runtime()
    client, secret = rt.clients.create("fuzz", ["read", "introspect"], ["api", "other"], keyset="default")
    app = create_app(runtime=rt, background=False)
    with (
        TestClient(app, base_url=ISSUER) as http,
        TestClient(app, base_url=ISSUER, client=("127.0.0.2", 50000)) as genuine,
    ):
        r = http.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(client.client_id, secret))
        assert r.status_code == 200, r.text
        yield Target(http, rt, client.client_id, secret, r.json()["access_token"], genuine)


def check(response: httpx.Response, path: str) -> None:
    """The contract every answer keeps, whatever the input."""
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code == 304 or not response.content:
        # revoke answers 200 with no body; a CORS preflight (OPTIONS on a public document) 204
        assert response.status_code in (200, 204, 304), response.status_code
        return
    assert response.headers["content-type"].split(";")[0] in ("application/json", "application/jwk-set+json")
    body = response.json()
    if response.status_code >= 400:
        assert isinstance(body, dict), body
        assert isinstance(body.get("error"), str) and body["error"], body
        assert isinstance(body.get("error_description"), str), body
        assert "Traceback" not in response.text
        if response.status_code == 401 and path in OAUTH:
            assert body["error"] == "invalid_client", body
        if response.status_code == 429:
            assert 0 < int(response.headers["retry-after"]) <= 60
    elif path == "/oauth/introspect":
        assert body == {"active": False} or body["active"] is True, body
    elif path == "/oauth/token":
        assert body["token_type"] == "Bearer", body
        assert response.headers["cache-control"] == "no-store"


def fuzz_check(response: httpx.Response, path: str) -> None:
    event(f"{path if path in OAUTH else 'other'} -> {response.status_code}")  # --hypothesis-show-statistics
    check(response, path)


# ----- strategies -------------------------------------------------------------------------------

printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
# What an HTTP client will put in a path (no controls); '?' and '#' would end it.
url_chars = st.characters(min_codepoint=0x21, max_codepoint=0x2FF, exclude_categories=["Cc"], exclude_characters="?#")
header_bytes = st.binary(max_size=200).map(lambda b: bytes(c for c in b if 0x20 <= c != 0x7F))


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@st.composite
def authorization(draw: st.DrawFn, target: Target) -> bytes | None:
    kind = draw(st.sampled_from(["none", "random", "basic-random", "basic-bytes", "bearer", "basic-genuine"]))
    if kind == "none":
        return None
    if kind == "random":
        return draw(header_bytes)
    if kind == "basic-random":
        return basic(draw(st.text(printable, max_size=40)), draw(st.text(max_size=40))).encode()
    if kind == "basic-bytes":
        return b"Basic " + base64.b64encode(draw(st.binary(max_size=60)))
    if kind == "bearer":
        return b"Bearer " + target.token.encode()
    return basic(target.client_id, target.secret).encode()


def mutated_token(draw: st.DrawFn, token: str) -> str:
    kind = draw(st.sampled_from(["same", "replace", "truncate", "insert", "swap-parts", "random"]))
    if kind == "same":
        return token
    if kind == "replace":
        i = draw(st.integers(0, len(token) - 1))
        return token[:i] + draw(st.characters(min_codepoint=0x20, max_codepoint=0x2FF)) + token[i + 1 :]
    if kind == "truncate":
        return token[: draw(st.integers(0, len(token) - 1))]
    if kind == "insert":
        i = draw(st.integers(0, len(token)))
        return token[:i] + draw(st.text(max_size=8)) + token[i:]
    if kind == "swap-parts":
        h, p, s = token.split(".")
        return ".".join(draw(st.permutations([h, p, s])))
    return draw(st.text(max_size=300))


FIELDS = ["grant_type", "client_id", "client_secret", "scope", "audience", "token", "token_type_hint"]


@st.composite
def oauth_form(draw: st.DrawFn, target: Target, path: str) -> tuple[dict[str, str], dict[str, str]]:
    """A form (fields of the protocol with odd values, plus junk fields) and headers for client auth."""
    form: dict[str, str] = {}
    names = draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=len(FIELDS)))
    key_field = "grant_type" if path == "/oauth/token" else "token"
    if key_field not in names and draw(st.integers(0, 3)):
        names.append(key_field)  # mostly present, so the endpoint gets past its first check
    for name in names:
        if name == "grant_type":
            form[name] = draw(st.sampled_from(["client_credentials", "password", "", "CLIENT_CREDENTIALS"]) | st.text())
        elif name == "scope":
            form[name] = draw(
                st.sampled_from(["read", "read introspect", "admin", " read", "read  read", ""]) | st.text()
            )
        elif name == "audience":
            form[name] = draw(st.sampled_from(["api", "other", "API", ""]) | st.text())
        elif name == "token":
            form[name] = mutated_token(draw, target.token)
        else:
            form[name] = draw(st.text(max_size=60))
    form.update(draw(st.dictionaries(st.text(min_size=1, max_size=12), st.text(max_size=30), max_size=3)))
    # Mostly genuine credentials, so the fuzzing reaches past client authentication.
    genuine = ["basic", "basic", "basic", "post", "post", "post"]
    auth = draw(st.sampled_from([*genuine, "none", "both", "basic-wrong", "post-wrong", "post-id-only"]))
    if auth in ("basic", "post") and draw(st.integers(0, 3)):
        form.pop("client_id", None)
        form.pop("client_secret", None)
    headers: dict[str, str] = {}
    if auth in ("basic", "both"):
        headers["Authorization"] = basic(target.client_id, target.secret)
    if auth == "basic-wrong":
        headers["Authorization"] = basic(target.client_id, target.secret[:-1])
    if auth in ("post", "both", "post-id-only"):
        form["client_id"] = target.client_id
        if auth != "post-id-only":
            form["client_secret"] = target.secret
    if auth == "post-wrong":
        form.update(client_id=target.client_id, client_secret=target.secret + "x")
    return form, headers


CONTENT_TYPES = [
    FORM,
    f"{FORM}; charset=utf-8",
    "APPLICATION/X-WWW-FORM-URLENCODED",
    "application/json",
    "text/plain",
    "multipart/form-data; boundary=x",
    "",
    ";;;",
]


# ----- fuzz tests -------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_random_bodies_to_the_oauth_endpoints(target: Target, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(OAUTH))
    body = data.draw(st.binary(max_size=2048) | st.text(max_size=500).map(str.encode))
    headers: dict[str, Any] = {}
    content_type = data.draw(st.sampled_from(CONTENT_TYPES) | st.text(printable, max_size=40))
    if content_type:
        headers["content-type"] = content_type
    auth = data.draw(authorization(target))
    if auth is not None:
        headers["authorization"] = auth
    fuzz_check(target.http.post(path, content=body, headers=headers), path)


@FUZZ
@given(data=st.data())
def test_random_forms_with_and_without_genuine_credentials(target: Target, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(OAUTH))
    form, headers = data.draw(oauth_form(target, path))
    fuzz_check(target.http.post(path, data=form, headers=headers), path)


@FUZZ
@given(data=st.data())
def test_random_tokens_to_introspect_and_revoke(target: Target, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(OAUTH[1:]))
    token = mutated_token(data.draw, target.token)
    # From an address of its own: the other fuzz tests' failed logins throttle theirs (429).
    response = target.genuine.post(path, data={"token": token}, auth=(target.client_id, target.secret))
    fuzz_check(response, path)
    if path == "/oauth/introspect" and token != target.token:
        # Any change to a genuine token makes it inactive (canonical base64url: no two texts verify).
        assert response.status_code in (200, 400), response.text
        if response.status_code == 200:
            assert response.json() == {"active": False}


@FUZZ
@given(data=st.data())
def test_random_paths_and_methods(target: Target, data: st.DataObject) -> None:
    known = [
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/keys/status",
        "/healthz",
        "/readyz",
        *OAUTH,
    ]
    path = data.draw(
        st.sampled_from(known)
        | st.sampled_from(known).map(lambda p: p + "/")
        | st.text(url_chars, max_size=60).map(lambda s: "/" + s.lstrip("/"))
    )
    method = data.draw(st.sampled_from(["GET", "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    headers: dict[str, Any] = {}
    if data.draw(st.booleans()):
        headers["if-none-match"] = data.draw(header_bytes)
    auth = data.draw(authorization(target))
    if auth is not None:
        headers["authorization"] = auth
    response = target.http.request(method, path, headers=headers)
    fuzz_check(response, path)
    if path not in known and path.rstrip("/") not in known:
        assert response.status_code in (404, 405), (path, response.status_code)


# ----- deterministic edges ----------------------------------------------------------------------


@pytest.mark.parametrize("path", OAUTH)
def test_bodies_over_64_kib_get_413(target: Target, path: str) -> None:
    at_limit = b"x=" + b"a" * (MAX_BODY - 2)
    response = target.http.post(path, content=at_limit, headers={"content-type": FORM})
    assert response.status_code != 413  # control: exactly 64 KiB is read (and refused for other reasons)
    check(response, path)
    response = target.http.post(path, content=at_limit + b"a", headers={"content-type": FORM})
    assert response.status_code == 413
    assert response.json()["error"] == "request_too_large"


@pytest.mark.parametrize("path", OAUTH)
def test_chunked_bodies_over_64_kib_get_413(target: Target, path: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"token="
        for _ in range(20):
            yield b"a" * 4096

    response = target.http.post(path, content=chunks(), headers={"content-type": FORM})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["error"] == "request_too_large"


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/nope", 404, "not_found"),
        ("GET", "/oauth/token", 405, "method_not_allowed"),
        ("DELETE", "/oauth/introspect", 405, "method_not_allowed"),
        ("POST", "/.well-known/jwks.json", 405, "method_not_allowed"),
        ("POST", "/oauth/token", 400, "invalid_request"),  # no form at all
    ],
)
def test_error_bodies_are_json(target: Target, method: str, path: str, status: int, error: str) -> None:
    response = target.http.request(method, path)
    assert response.status_code == status
    assert response.json()["error"] == error
    check(response, path)


def test_control_a_genuine_request_succeeds(target: Target) -> None:
    """The fuzz tests above would pass on an app that refused everything; this one must not."""
    auth = (target.client_id, target.secret)
    form = {"grant_type": "client_credentials", "scope": "read", "audience": "other"}
    # From the address the fuzzers do not use: their failed logins throttle theirs.
    response = target.genuine.post("/oauth/token", data=form, auth=auth)
    check(response, "/oauth/token")
    assert response.status_code == 200
    token = response.json()["access_token"]  # fresh: the fuzzers may have revoked target.token
    response = target.genuine.post("/oauth/introspect", data={"token": token}, auth=auth)
    check(response, "/oauth/introspect")
    assert response.json()["active"] is True
    assert response.json()["aud"] == "other"


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic",
        "Basic ",
        "Basic !!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        "Basic " + base64.b64encode(b"%zz:%zz").decode(),
        "Basic " + base64.b64encode(b":").decode(),
        "Basic " + base64.b64encode(b"a" * 10_000 + b":x").decode(),
        "Bearer abc",
        "Digest x",
        "basic " + base64.b64encode(b"id:secret").decode(),
    ],
)
@pytest.mark.parametrize("path", OAUTH)
def test_malformed_basic_credentials_are_invalid_client(target: Target, authorization: str, path: str) -> None:
    form = {"grant_type": "client_credentials", "token": "x"}
    response = target.http.post(path, data=form, headers={"Authorization": authorization})
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")
