"""Public endpoints: JWKS, discovery metadata (RFC 8414), key status, health."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..config import Settings
from ..jwks import etag_matches
from ..lifecycle import next_rotation_at
from ..model import KeyState
from ..runtime import Runtime
from .responses import JSONResponse


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def metadata(settings: Settings) -> dict[str, Any]:
    algs = sorted({p.alg for p in settings.keysets.values()})
    auth_methods = ["client_secret_basic", "client_secret_post"]
    return {
        "issuer": settings.issuer,
        "jwks_uri": settings.url("/.well-known/jwks.json"),
        "token_endpoint": settings.url("/oauth/token"),
        "introspection_endpoint": settings.url("/oauth/introspect"),
        "revocation_endpoint": settings.url("/oauth/revoke"),
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": ["token"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "access_token_signing_alg_values_supported": algs,
        "id_token_signing_alg_values_supported": algs,
        "subject_types_supported": ["public"],
        "scopes_supported": sorted({"introspect"}),
    }


async def jwks(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    rendered = runtime.keys.snapshot.jwks
    settings = runtime.settings
    headers = {
        "Cache-Control": f"public, max-age={settings.jwks_max_age}, stale-if-error={settings.stale_if_error}",
        "ETag": rendered.etag,
    }
    counter = request.app.state.metrics.jwks_requests
    inm = request.headers.get("if-none-match")
    if inm is not None and etag_matches(inm, rendered.etag):
        counter.labels("304").inc()
        return Response(status_code=304, headers=headers)
    counter.labels("200").inc()
    return Response(rendered.body, media_type="application/jwk-set+json", headers=headers)


async def discovery(request: Request) -> Response:
    body: bytes = request.app.state.metadata_body
    return Response(body, media_type="application/json", headers={"Cache-Control": "public, max-age=3600"})


async def key_status(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    snap = runtime.keys.snapshot
    keys: list[dict[str, Any]] = []
    revoked: list[dict[str, Any]] = []
    for name, ks in snap.keysets.items():
        policy = runtime.settings.keysets[name]
        rotation = next_rotation_at(policy, ks)
        for key in ks.keys:
            if key.state == KeyState.REVOKED:
                revoked.append({"kid": key.kid, "keyset": name, "revoked_at": rfc3339(key.revoked_at)})
                continue
            if key.state == KeyState.CURRENT:
                not_before, not_after = key.activated_at, None if rotation is None else rotation + policy.verify_window
            elif key.state == KeyState.NEXT:
                not_before = rotation
                not_after = None if rotation is None else rotation + policy.rotation_period + policy.verify_window
            elif key.state == KeyState.PREVIOUS:
                not_before, not_after = key.activated_at, key.retire_at
            else:
                continue
            keys.append(
                {
                    "kid": key.kid,
                    "keyset": name,
                    "alg": key.alg,
                    "state": key.state.value,
                    "not_before": rfc3339(not_before),
                    "not_after": rfc3339(not_after),
                    "created_at": rfc3339(key.created_at),
                    "published": key.public_jwk is not None,
                }
            )
    return JSONResponse({"keys": keys, "revoked": revoked}, headers={"Cache-Control": "no-cache"})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    problems = runtime.keys.readiness()
    if problems:
        return JSONResponse(
            {
                "status": "unavailable",
                "error": "not_ready",
                "error_description": "; ".join(f"{k}: {v}" for k, v in sorted(problems.items())),
                "problems": problems,
            },
            status_code=503,
        )
    return JSONResponse({"status": "ready", "keysets": sorted(runtime.keys.snapshot.signing)})
