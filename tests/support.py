"""Helpers shared by test modules (import as `from support import ...`)."""

from __future__ import annotations

import base64
import functools
import json
import uuid
from pathlib import Path
from typing import Any

from jwks_service.algorithms import ALGORITHMS, Family
from jwks_service.config import Settings, build_settings
from jwks_service.crypto import generate_private_key, make_signer, public_jwk

ISSUER = "http://127.0.0.1:8000"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Wycheproof vectors vendored with their license (tests/vectors/wycheproof/README.md); a missing file fails.
VECTORS = PROJECT_ROOT / "tests" / "vectors" / "wycheproof"
# The SDK's own distribution, jwks-service-sdk: its pyproject.toml and build backend.
SDK_DIST = PROJECT_ROOT / "sdk-dist"


def algorithms(*families: Family) -> list[str]:
    """The names in the one registry (jwks_service.algorithms), in its order: every algorithm, or
    those of `families`. Tests that mean "every algorithm (of a family)" take them from here, so that
    an algorithm added to the registry is tested, or fails a test that pins values per algorithm."""
    return [name for name, alg in ALGORITHMS.items() if not families or alg.family in families]


def make_settings(tmp_path: Path, keysets: dict[str, dict[str, Any]] | None = None, **extra: Any) -> Settings:
    raw: dict[str, Any] = {
        "issuer": ISSUER,
        "store": {"url": f"sqlite:///{tmp_path}/jwks.db"},
        "secrets": {"kek_file": str(tmp_path / "kek")},
        "keysets": keysets or {"default": {"alg": "ES256"}},
        **extra,
    }
    return build_settings(raw)


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> float:
    """Poll `predicate` until it is truthy; return the seconds it took, or raise TimeoutError."""
    import time

    start = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - start
        except Exception:  # noqa: S110 - the server may not be up yet; keep polling until the deadline
            pass
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)


@functools.cache
def es256_keypair() -> tuple[Any, dict[str, Any]]:
    """One ES256 private key for a test session and its public JWK as the service publishes it
    (kid = RFC 7638 thumbprint, alg, use)."""
    alg = ALGORITHMS["ES256"]
    private = generate_private_key(alg, alg.default_key_bits)
    jwk, thumbprint = public_jwk(alg, private)  # type: ignore[arg-type]
    return private, {**jwk, "kid": thumbprint, "alg": "ES256", "use": "sig"}


def sdk_distribution_files() -> dict[str, Path]:
    """The files of the jwks-service-sdk wheel's package, by path in the wheel, and their sources in the
    repository: what sdk-dist/sdk_build.py copies for a build."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sdk_build", SDK_DIST / "sdk_build.py")
    assert spec is not None and spec.loader is not None
    sdk_build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sdk_build)
    files: dict[str, Path] = sdk_build.files(PROJECT_ROOT)
    return files


class ClientKey:
    """A private_key_jwt client's key pair: its public JWK (with `kid`) and assertions signed with it."""

    def __init__(self, kid: str, alg: str = "ES256") -> None:
        algorithm = ALGORITHMS[alg]
        self.private = generate_private_key(algorithm, algorithm.default_key_bits)
        jwk, _ = public_jwk(algorithm, self.private)  # type: ignore[arg-type]
        self.kid, self.alg = kid, alg
        self.jwk = {**jwk, "kid": kid, "alg": alg, "use": "sig"}
        self._sign = make_signer(algorithm, self.private)

    def assertion(
        self,
        client_id: str,
        aud: str | list[str],
        now: float,
        /,
        *,
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A client assertion (RFC 7523): iss = sub = client_id, exp a minute ahead, a fresh jti;
        `claims` replace or add claims (None removes one), `header` replaces the header."""
        body = {"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + 60, "jti": uuid.uuid4().hex}
        body = {k: v for k, v in {**body, **claims}.items() if v is not None}
        head = header if header is not None else {"alg": self.alg, "kid": self.kid, "typ": "JWT"}
        return sign_compact(head, body, self._sign)


def sign_compact(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    signing_input = b64url(json.dumps(header).encode()) + b"." + b64url(json.dumps(claims).encode())
    return (signing_input + b"." + b64url(sign(signing_input))).decode()


def b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")
