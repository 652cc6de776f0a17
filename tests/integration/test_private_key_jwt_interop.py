"""private_key_jwt against real `jwks-service serve` processes, with an outside client library:
Authlib's OAuth2Client with its `PrivateKeyJWT` client authentication (RFC 7523).

- Inline `jwks`: Authlib gets tokens, and introspects one, signing with an RSA key the client registered.
- A `jwks_uri` served on loopback by a small HTTP server whose key rotates while the test runs (the
  next key published, signed with, the old one removed): the client keeps getting tokens, and the
  removed key stops working within the set's max-age.
- Two replicas sharing one Redis: an assertion accepted by one is refused by the other (the jti cache
  lives in the shared store).
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from authlib.integrations.base_client.errors import OAuthError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey
from replicas import Fleet, Policy
from support import ClientKey, free_port, wait_until

from bench.baoserver import stop_process

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "jwks_service"]
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class RsaClientKey:
    """An RSA key as Authlib takes it (PEM) and as the service registers it (public JWK with kid)."""

    kid: str
    private: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))

    @property
    def pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def jwk(self) -> dict[str, Any]:
        public = RSAKey.import_key(self.private.public_key()).as_dict(private=False)
        return {**public, "kid": self.kid, "alg": "RS256", "use": "sig"}


class KeyServer:
    """The client's own JWK set on loopback, with `Cache-Control: max-age=1`; `keys` may change."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.requests = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/jwk-set+json")
                self.send_header("Cache-Control", "max-age=1")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Service:
    base: str
    workdir: Path
    config: Path
    env: dict[str, str]

    def cli(self, *args: str) -> dict[str, Any]:
        result = subprocess.run(
            [*CLI, *args, "--config", str(self.config), "--json"],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"{args} failed: {result.stderr}"
        created: dict[str, Any] = json.loads(result.stdout)
        return created

    def create_keyed(self, *key_source: str) -> str:
        created = self.cli(
            "clients", "create", "keyed", "--scope", "read", "--audience", "api", "--auth", "private_key_jwt",
            *key_source,
        )  # fmt: skip
        return str(created["client_id"])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("pkjwt")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp / "jwks.toml"
    config.write_text(
        f'issuer = "{base}"\nlisten = "127.0.0.1:{port}"\n'
        f'[store]\nurl = "sqlite:///{tmp}/jwks.db"\n[secrets]\nkek_file = "{tmp}/kek"\n'
        '[keysets.default]\nalg = "ES256"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JWKS_")}
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen(
        [*CLI, "serve", "--config", str(config)], cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, timeout=30)
        yield Service(base, tmp, config, env)
    finally:
        stop_process(proc)
        log.close()
    assert proc.returncode in (0, -15), (tmp / "server.log").read_text()


def authlib_client(service: Service, client_id: str, key: RsaClientKey, *, kid: bool = True) -> Any:
    from authlib.integrations.httpx_client import OAuth2Client
    from authlib.oauth2.rfc7523 import PrivateKeyJWT

    class ShortLived(PrivateKeyJWT):  # type: ignore[misc]
        """Authlib's PrivateKeyJWT, its assertions valid for 2 minutes: Authlib's default is an hour, and
        the service takes at most 5 minutes. A new claims dict for each assertion, since Authlib adds
        its fresh jti to the dict it is given (one dict kept would repeat the first jti)."""

        def sign(self, auth: Any, token_endpoint: str) -> Any:
            self.claims = {"exp": int(time.time()) + 120}
            return super().sign(auth, token_endpoint)

    endpoint = f"{service.base}/oauth/token"
    auth = ShortLived(endpoint, headers={"kid": key.kid} if kid else None)
    client = OAuth2Client(client_id, key.pem.decode(), token_endpoint_auth_method="private_key_jwt", timeout=10)
    client.register_client_auth_method(auth)  # as Authlib's documentation shows
    return client


def fetch(client: Any, service: Service) -> dict[str, Any]:
    token: dict[str, Any] = client.fetch_token(f"{service.base}/oauth/token", grant_type="client_credentials")
    return token


def eventually_fetch(client: Any, service: Service) -> dict[str, Any]:
    """The first token of a client the CLI just created (the server sees it within a second)."""
    found: list[dict[str, Any]] = []
    wait_until(lambda: found.append(fetch(client, service)) is None, timeout=10, interval=0.2)
    return found[0]


def test_authlib_with_inline_jwks(service: Service, tmp_path: Path) -> None:
    key = RsaClientKey("inline-1")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.jwk]}))
    client_id = service.create_keyed("--jwks", str(jwks))
    with authlib_client(service, client_id, key, kid=False) as client:  # no kid: the one RS256 key
        token = eventually_fetch(client, service)
        assert token["token_type"] == "Bearer" and token["scope"] == "read"
        for _ in range(5):  # a new assertion (jti) each time
            assert fetch(client, service)["access_token"]
    # Authlib's default assertion lifetime (an hour) is more than the service's 5 minutes: refused.
    from authlib.integrations.httpx_client import OAuth2Client
    from authlib.oauth2.rfc7523 import PrivateKeyJWT

    with OAuth2Client(client_id, key.pem.decode(), token_endpoint_auth_method="private_key_jwt") as client:
        client.register_client_auth_method(PrivateKeyJWT(f"{service.base}/oauth/token"))
        with pytest.raises(OAuthError, match="exp is more than 300s ahead"):
            fetch(client, service)
    # the same key at the introspection endpoint (aud = its URL), by a hand-made form
    signer = ClientKeyFromRsa(key)
    form = {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": signer.assertion(client_id, f"{service.base}/oauth/introspect", time.time()),
        "token": token["access_token"],
    }
    r = httpx.post(f"{service.base}/oauth/introspect", data=form)
    assert r.status_code == 200 and r.json()["active"] is True and r.json()["client_id"] == client_id


class ClientKeyFromRsa(ClientKey):
    """`support.ClientKey`'s assertions, signed with an RsaClientKey."""

    def __init__(self, key: RsaClientKey) -> None:
        from jwks_service.algorithms import ALGORITHMS
        from jwks_service.crypto import make_signer

        self.kid, self.alg, self.jwk = key.kid, "RS256", key.jwk
        self._sign = make_signer(ALGORITHMS["RS256"], key.private)


def test_authlib_with_a_jwks_uri_that_rotates(service: Service) -> None:
    old, new = RsaClientKey("uri-old"), RsaClientKey("uri-new")
    keys = KeyServer()
    try:
        keys.keys = [old.jwk]
        client_id = service.create_keyed("--jwks-uri", keys.url)
        with authlib_client(service, client_id, old) as client:
            eventually_fetch(client, service)
            tokens = [fetch(client, service) for _ in range(3)]
        # The next key is published beside the old one; after the cooldown of an unknown kid (2 s)
        # the client signs with it.
        keys.keys = [old.jwk, new.jwk]
        time.sleep(2.2)
        with authlib_client(service, client_id, new) as client:
            tokens += [fetch(client, service) for _ in range(3)]
            # The old key is removed; the client goes on with the new one.
            keys.keys = [new.jwk]
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                tokens.append(fetch(client, service))
                time.sleep(0.2)
        assert all(t["token_type"] == "Bearer" for t in tokens) and len(tokens) >= 15
        assert keys.requests >= 2
        # Past the set's max-age (1 s), the removed key no longer authenticates.
        with authlib_client(service, client_id, old) as client, pytest.raises(OAuthError, match="invalid_client"):
            fetch(client, service)
    finally:
        keys.close()


def test_a_replay_on_another_replica_is_refused(tmp_path: Path) -> None:
    key = ClientKey("replica-key")
    with Fleet(tmp_path, Policy(rotation_period="1h", prepublish="2s"), replicas=2) as fleet:
        jwks = tmp_path / "client.json"
        jwks.write_text(json.dumps({"keys": [key.jwk]}))
        created = json.loads(
            fleet.cli(
                "clients", "create", "keyed", "--scope", "read", "--audience", "api",
                "--auth", "private_key_jwt", "--jwks", str(jwks), "--json",
            ).stdout
        )  # fmt: skip
        client_id = created["client_id"]
        first, second = fleet.replicas

        def post(replica: Any, assertion: str) -> httpx.Response:
            form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE}
            return fleet.http.post(replica.url("/oauth/token"), data={**form, "client_assertion": assertion})

        wait_until(lambda: post(second, key.assertion(client_id, fleet.issuer, time.time())).status_code == 200)
        assertion = key.assertion(client_id, fleet.issuer, time.time())
        assert post(first, assertion).status_code == 200
        replay = post(second, assertion)
        assert replay.status_code == 401 and "used before" in replay.json()["error_description"]
        assert post(first, assertion).status_code == 401
        assert post(second, key.assertion(client_id, fleet.issuer, time.time())).status_code == 200
