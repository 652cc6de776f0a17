"""Interoperability against one real `jwks-service serve` (uvicorn, SQLite, three keysets).

Tokens from the service verify *unmodified* with PyJWT, joserfc and authlib (each given the JWKS the
service publishes) and with our own SDK found through RFC 8414 discovery; Authlib's OAuth2 client
obtains tokens from /oauth/token with both client authentication methods; our `TokenClient` finds
the token endpoint by discovery and caches its token. Real processes and real HTTP only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import authlib.deprecate  # noqa: F401 - see AUTHLIB_JOSE_DEPRECATED
import httpx
import jwt
import pytest
from support import free_port, wait_until

from bench.baoserver import stop_process
from jwks_service.sdk import AsyncVerifier, InvalidAudienceError, TokenClient, Verifier

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "jwks_service"]
AUDIENCE = "api"
# keyset name -> its algorithm; each gets one client.
KEYSETS = {"default": "ES256", "rsa": "RS256", "ed": "EdDSA"}
# authlib.jose warns that it is deprecated (in favour of joserfc) when first imported; that one warning
# is allowed. authlib.deprecate installs a global "always" filter when first imported, which would beat
# the test's mark: importing it at collection (above) confines that filter to collection.
AUTHLIB_JOSE_DEPRECATED = "ignore:authlib.jose module is deprecated:DeprecationWarning"
# joserfc warns on every use of the alg name "EdDSA" (RFC 9864 deprecates it for "Ed25519"); the
# service signs with the name configured, and EdDSA is what most verifiers know.
JOSERFC_EDDSA_DEPRECATED = "ignore:EdDSA is deprecated via RFC 9864"


@dataclass
class Service:
    base: str
    workdir: Path
    config: Path
    env: dict[str, str]
    clients: dict[str, tuple[str, str]] = field(default_factory=dict)  # keyset -> (client_id, secret)
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))  # one connection for many tokens

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [*CLI, *args, "--config", str(self.config)],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"{args} failed: {result.stderr}"
        return result.stdout

    def token_response(self, keyset: str) -> httpx.Response:
        form = {"grant_type": "client_credentials"}
        return self.http.post(f"{self.base}/oauth/token", data=form, auth=self.clients[keyset])

    def token(self, keyset: str) -> str:
        r = self.token_response(keyset)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def jwks(self) -> dict[str, Any]:
        document: dict[str, Any] = self.http.get(self.metadata()["jwks_uri"]).json()
        return document

    def metadata(self) -> dict[str, Any]:
        document: dict[str, Any] = self.http.get(f"{self.base}/.well-known/oauth-authorization-server").json()
        return document


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("interop")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp / "jwks.toml"
    config.write_text(
        f'issuer = "{base}"\nlisten = "127.0.0.1:{port}"\n'
        f'[store]\nurl = "sqlite:///{tmp}/jwks.db"\n[secrets]\nkek_file = "{tmp}/kek"\n'
        + "".join(f'[keysets.{name}]\nalg = "{alg}"\n' for name, alg in KEYSETS.items())
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JWKS_")}
    srv = Service(base, tmp, config, env)
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen(
        [*CLI, "serve", "--config", str(config)], cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, timeout=30)
        for keyset in KEYSETS:
            out = srv.cli(
                "clients", "create", f"interop-{keyset}", "--scope", "read", "--audience", AUDIENCE,
                "--keyset", keyset, "--json",
            )  # fmt: skip
            created = json.loads(out)
            srv.clients[keyset] = (created["client_id"], created["client_secret"])
        # The running server picks the CLI's clients up within a second.
        wait_until(lambda: all(srv.token_response(k).status_code == 200 for k in KEYSETS), timeout=10)
        yield srv
    finally:
        stop_process(proc)
        log.close()
        srv.http.close()
    assert proc.returncode in (0, -15), (tmp / "server.log").read_text()


def header_of(token: str) -> dict[str, Any]:
    segment = token.split(".", 1)[0]
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return value


def check_claims(claims: dict[str, Any], service: Service, keyset: str) -> None:
    client_id = service.clients[keyset][0]
    assert claims["iss"] == service.base
    assert claims["aud"] == AUDIENCE
    assert claims["client_id"] == claims["sub"] == client_id
    assert claims["scope"] == "read"
    assert claims["exp"] > claims["iat"]


by_keyset = pytest.mark.parametrize(("keyset", "alg"), list(KEYSETS.items()))
by_keyset_joserfc = pytest.mark.parametrize(
    ("keyset", "alg"),
    [
        pytest.param(
            keyset, alg, marks=[pytest.mark.filterwarnings(JOSERFC_EDDSA_DEPRECATED)] if alg == "EdDSA" else []
        )
        for keyset, alg in KEYSETS.items()
    ],
)


def test_service_publishes_one_key_set_with_every_algorithm(service: Service) -> None:
    metadata = service.metadata()
    assert metadata["issuer"] == service.base
    published = {k["alg"] for k in service.jwks()["keys"]}
    assert published == set(KEYSETS.values())


@by_keyset
def test_token_header_is_rfc9068(service: Service, keyset: str, alg: str) -> None:
    header = header_of(service.token(keyset))
    assert header["alg"] == alg
    assert header["typ"] == "at+jwt"
    assert header["kid"] in {k["kid"] for k in service.jwks()["keys"] if k["alg"] == alg}


@by_keyset
def test_pyjwt_verifies_unmodified(service: Service, keyset: str, alg: str) -> None:
    token = service.token(keyset)
    client = jwt.PyJWKClient(service.metadata()["jwks_uri"])
    key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token, key, algorithms=[alg], audience=AUDIENCE, issuer=service.base, options={"require": ["exp", "iat"]}
    )
    check_claims(claims, service, keyset)
    # The same key, from a JWKS fetched by hand.
    jwk = next(k for k in service.jwks()["keys"] if k["kid"] == header_of(token)["kid"])
    claims = jwt.decode(token, jwt.PyJWK(jwk), algorithms=[alg], audience=AUDIENCE, issuer=service.base)
    check_claims(claims, service, keyset)
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key, algorithms=[alg], audience="elsewhere", issuer=service.base)


@by_keyset_joserfc
def test_joserfc_verifies_unmodified(service: Service, keyset: str, alg: str) -> None:
    from joserfc import jwt as jose_jwt
    from joserfc.errors import InvalidClaimError
    from joserfc.jwk import KeySet

    token = service.token(keyset)
    key_set = KeySet.import_key_set(service.jwks())  # type: ignore[arg-type]
    decoded = jose_jwt.decode(token, key_set, algorithms=[alg])
    assert decoded.header["alg"] == alg
    registry = jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": service.base},
        aud={"essential": True, "value": AUDIENCE},
        exp={"essential": True},
        sub={"essential": True},
    )
    registry.validate(decoded.claims)
    check_claims(decoded.claims, service, keyset)
    strict = jose_jwt.JWTClaimsRegistry(aud={"essential": True, "value": "elsewhere"})
    with pytest.raises(InvalidClaimError):
        strict.validate(decoded.claims)


@by_keyset
@pytest.mark.filterwarnings(AUTHLIB_JOSE_DEPRECATED)
def test_authlib_verifies_unmodified(service: Service, keyset: str, alg: str) -> None:
    from authlib.jose import JsonWebKey, JsonWebToken
    from authlib.jose.errors import InvalidClaimError

    token = service.token(keyset)
    key_set = JsonWebKey.import_key_set(service.jwks())
    options = {
        "iss": {"essential": True, "value": service.base},
        "aud": {"essential": True, "value": AUDIENCE},
        "exp": {"essential": True},
    }
    claims = JsonWebToken([alg]).decode(token, key_set, claims_options=options)
    claims.validate()
    assert claims.header["alg"] == alg
    check_claims(dict(claims), service, keyset)
    wrong = JsonWebToken([alg]).decode(token, key_set, claims_options={"aud": {"essential": True, "value": "x"}})
    with pytest.raises(InvalidClaimError):
        wrong.validate()


@by_keyset
def test_sdk_verifier_found_by_discovery(service: Service, keyset: str, alg: str) -> None:
    token = service.token(keyset)
    with Verifier(service.base, AUDIENCE) as verifier:
        claims = verifier.verify(token)
        check_claims(claims, service, keyset)
        assert verifier.metadata is not None
        assert verifier.jwks_uri == service.metadata()["jwks_uri"]
        for _ in range(20):
            verifier.verify(service.token(keyset))
        assert verifier.stats.jwks_requests == 1
        assert verifier.stats.jwks_downloads == 1
    with Verifier(service.base, "elsewhere") as other, pytest.raises(InvalidAudienceError):
        other.verify(token)


def test_sdk_async_verifier_found_by_discovery(service: Service) -> None:
    tokens = {keyset: service.token(keyset) for keyset in KEYSETS}

    async def main() -> dict[str, dict[str, Any]]:
        verifier = AsyncVerifier(service.base, AUDIENCE)
        try:
            return {keyset: await verifier.verify(token) for keyset, token in tokens.items()}
        finally:
            await verifier.aclose()

    for keyset, claims in asyncio.run(main()).items():
        check_claims(claims, service, keyset)


class Recorder:
    """httpx event hook: every request a client really sent."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> None:
        self.requests.append(request)

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_authlib_oauth2_client_obtains_tokens(service: Service, method: str) -> None:
    from authlib.integrations.httpx_client import OAuth2Client

    client_id, secret = service.clients["rsa"]
    endpoint = service.metadata()["token_endpoint"]
    recorder = Recorder()
    with OAuth2Client(
        client_id, secret, token_endpoint_auth_method=method, event_hooks={"request": [recorder]}
    ) as client:
        token = client.fetch_token(endpoint, grant_type="client_credentials")
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] > 0
    assert token["scope"] == "read"
    (request,) = recorder.sent("POST", "/oauth/token")
    form = parse_qs(request.content.decode())
    if method == "client_secret_basic":
        assert request.headers["authorization"].startswith("Basic ")
        assert "client_secret" not in form
    else:
        assert "authorization" not in request.headers
        assert form["client_id"] == [client_id]
        assert form["client_secret"] == [secret]
    with Verifier(service.base, AUDIENCE) as verifier:
        check_claims(verifier.verify(token["access_token"]), service, "rsa")


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_sdk_token_client_discovers_and_caches(service: Service, method: str) -> None:
    client_id, secret = service.clients["default"]
    recorder = Recorder()
    http = httpx.Client(timeout=5, event_hooks={"request": [recorder]})
    with TokenClient(service.base, client_id, secret, scope="read", auth_method=method, http=http) as tokens:
        first = tokens.get()
        assert all(tokens.get() == first for _ in range(9))
        assert len(recorder.sent("POST", "/oauth/token")) == 1
        assert len(recorder.sent("GET", "/.well-known/oauth-authorization-server")) == 1
        assert tokens.requests == 1
        assert tokens.token_endpoint == service.metadata()["token_endpoint"]

        tokens.invalidate()
        second = tokens.get()
        assert second != first
        assert tokens.get() == second
        assert len(recorder.sent("POST", "/oauth/token")) == 2
        assert len(recorder.sent("GET", "/.well-known/oauth-authorization-server")) == 1  # endpoint remembered
    http.close()
    (post, *_) = recorder.sent("POST", "/oauth/token")
    assert ("authorization" in post.headers) == (method == "client_secret_basic")
    with Verifier(service.base, AUDIENCE) as verifier:
        for token in (first, second):
            claims = verifier.verify(token)
            check_claims(claims, service, "default")
        assert verifier.verify(first)["jti"] != verifier.verify(second)["jti"]
