"""`jwks_service.sdk` runs without the server's dependencies (pyproject's ``sdk`` extra: httpx,
cryptography, joserfc).

A fresh interpreter installs an import hook that refuses every server-only dependency, then imports
the SDK, verifies tokens it signed itself against a static JWK set, finds an issuer by RFC 8414
discovery and obtains a token with `TokenClient` from a stdlib HTTP server standing in for the
issuer. The hook records what was attempted: the SDK itself must attempt none of them, and none may
end up in ``sys.modules``. Only the Starlette middleware (``jwks_service.sdk.starlette``) needs
Starlette.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from support import PROJECT_ROOT

BLOCKED = ("starlette", "uvicorn", "redis", "hvac", "requests", "prometheus_client", "orjson")

SCRIPT = r"""
import importlib.abc
import json
import sys

BLOCKED = tuple(sys.argv[1].split(","))
attempts = []


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempts.append(name)
            raise ImportError(f"{name} is blocked: not a dependency of the SDK")
        return None


preloaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
sys.meta_path.insert(0, Refuse())
report = {"preloaded": preloaded}

# ----- the SDK alone ----------------------------------------------------------------------------
import jwks_service.sdk as sdk
from jwks_service.sdk import AsyncTokenClient, AsyncVerifier, TokenClient, Verifier  # lazy attributes
from jwks_service.sdk.errors import InvalidSignatureError, InvalidTokenError

report["sdk_attempts"] = list(attempts)
try:
    import jwks_service.sdk.starlette  # noqa: F401
except ImportError as exc:
    report["starlette_middleware"] = str(exc)
else:
    report["starlette_middleware"] = "imported"
del attempts[:]

# ----- keys and tokens made here: cryptography + joserfc + the service's token encoder -----------
import http.server
import threading
import time

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from joserfc.jwk import ECKey, OKPKey

from jwks_service.algorithms import ALGORITHMS
from jwks_service.crypto import make_signer
from jwks_service import tokens

report["tokens_attempts"] = list(attempts)  # tokens.py falls back to json without orjson
del attempts[:]
es_key = ec.generate_private_key(ec.SECP256R1())
ed_key = ed25519.Ed25519PrivateKey.generate()
jwks = {
    "keys": [
        {**ECKey.import_key(es_key.public_key()).as_dict(private=False), "kid": "es-1", "alg": "ES256", "use": "sig"},
        {**OKPKey.import_key(ed_key.public_key()).as_dict(private=False), "kid": "ed-1", "alg": "EdDSA", "use": "sig"},
    ]
}
signers = {
    "es-1": ("ES256", make_signer(ALGORITHMS["ES256"], es_key)),
    "ed-1": ("EdDSA", make_signer(ALGORITHMS["EdDSA"], ed_key)),
}
ISSUER = "http://127.0.0.1:%d"


def sign(kid, issuer, audience="api", header_kid=None):
    alg, signer = signers[kid]
    claims = tokens.access_token_claims(
        issuer=issuer, client_id="svc", audience=audience, scope="read", now=time.time(), ttl=300
    )
    return tokens.encode_token(tokens.encode_header(alg, header_kid or kid), claims, signer)


# ----- a static key set: no fetching ------------------------------------------------------------
static_issuer = "https://issuer.invalid"
with Verifier(static_issuer, "api", jwks=jwks) as verifier:
    report["static"] = {kid: verifier.verify(sign(kid, static_issuer))["client_id"] for kid in signers}
    token = sign("es-1", static_issuer)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    try:
        verifier.verify(forged)
    except InvalidSignatureError as exc:
        report["forged"] = type(exc).__name__
    try:
        verifier.verify(sign("es-1", static_issuer, audience="other"))
    except InvalidTokenError as exc:
        report["wrong_audience"] = type(exc).__name__
    report["static_requests"] = verifier.stats.jwks_requests


# ----- discovery and a token endpoint over real HTTP, from the standard library -----------------
class Issuer(http.server.BaseHTTPRequestHandler):
    hits = []

    def log_message(self, *args):
        pass

    def _json(self, body, headers=()):
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        self.hits.append("GET " + self.path)
        base = self.server.base
        if self.path == "/.well-known/oauth-authorization-server":
            self._json({"issuer": base, "jwks_uri": base + "/jwks", "token_endpoint": base + "/token"})
        elif self.path == "/jwks":
            self._json(jwks, [("Cache-Control", "public, max-age=300")])
        else:
            self.send_error(404)

    def do_POST(self):
        self.hits.append("POST " + self.path)
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/token" or not self.headers.get("Authorization", "").startswith("Basic "):
            self.send_error(401)
            return
        self._json({"access_token": sign("ed-1", self.server.base), "token_type": "Bearer", "expires_in": 300})


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Issuer)
server.base = ISSUER % server.server_address[1]
threading.Thread(target=server.serve_forever, daemon=True).start()
try:
    with TokenClient(server.base, "svc", "secret", scope="read") as client:
        access_token = client.get()
        report["token_client_same"] = all(client.get() == access_token for _ in range(5))
    with Verifier(server.base, "api") as verifier:
        report["discovered"] = verifier.verify(access_token)["iss"] == server.base
        report["discovered_es"] = verifier.verify(sign("es-1", server.base))["client_id"]
        try:
            verifier.verify(sign("es-1", server.base, header_kid="es-2"))
        except InvalidTokenError as exc:
            report["unknown_kid"] = type(exc).__name__
        report["jwks_requests"] = verifier.stats.jwks_requests
    report["hits"] = Issuer.hits
finally:
    server.shutdown()

report["later_attempts"] = list(attempts)
report["blocked_loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
report["sdk_modules"] = sorted(m for m in sys.modules if m.startswith("jwks_service"))
print(json.dumps(report))
"""


def run_isolated() -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(BLOCKED)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def test_sdk_works_without_the_server_dependencies() -> None:
    report = run_isolated()
    assert report["preloaded"] == []
    # The SDK never even tries to import a server dependency; only the middleware needs Starlette.
    assert report["sdk_attempts"] == []
    assert "starlette" in report["starlette_middleware"]
    assert "blocked" in report["starlette_middleware"]
    # tokens.py tries orjson and falls back to json.
    assert report["tokens_attempts"] == ["orjson"]

    assert report["static"] == {"es-1": "svc", "ed-1": "svc"}
    assert report["forged"] == "InvalidSignatureError"
    assert report["wrong_audience"] == "InvalidAudienceError"
    assert report["static_requests"] == 0

    assert report["token_client_same"] is True
    assert report["discovered"] is True
    assert report["discovered_es"] == "svc"
    assert report["unknown_kid"] == "UnknownKeyError"
    assert report["jwks_requests"] == 1  # an unknown kid right after a fetch waits out the refetch cooldown
    assert report["hits"].count("POST /token") == 1
    assert report["hits"].count("GET /.well-known/oauth-authorization-server") == 2  # TokenClient, Verifier

    assert report["later_attempts"] == []
    assert report["blocked_loaded"] == []
    assert "jwks_service.sdk.verifier" in report["sdk_modules"]
    assert "jwks_service.sdk.client" in report["sdk_modules"]
    # Nothing of the server came along.
    server_side = {"jwks_service.http", "jwks_service.runtime", "jwks_service.service", "jwks_service.stores"}
    assert not server_side.intersection(report["sdk_modules"])
