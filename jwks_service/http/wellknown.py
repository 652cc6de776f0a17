"""Public endpoints: JWKS, discovery metadata (RFC 8414), key status, health."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..adoption import Adoption, fetcher_identity
from ..assertions import ASSERTION_ALGORITHMS, AUTH_METHODS
from ..clock import rfc3339
from ..config import Settings
from ..jwks import etag_matches
from ..lifecycle import next_rotation_at
from ..model import KeyState
from ..runtime import Runtime
from ..snapshot import NOT_CREATED
from ..vaultapi import PUBLIC_CAUSE
from .limits import source_address
from .responses import JSONResponse
from .tally import Tally

log = logging.getLogger("jwks_service")


# The JWKS and the metadata answer cross-origin reads (API.md §8): a browser app may fetch them. The
# header bytes are made once; the JWKS adds them to its pre-built heads, at no cost per request.
CORS_ORIGIN = (b"access-control-allow-origin", b"*")
CORS_EXPOSE_ETAG = (b"access-control-expose-headers", b"ETag")

# Clients whose fetcher names the JWKS endpoint remembers (then it starts again), and the longest
# JWKS-Verifier plus User-Agent it remembers one by (longer ones are named on every request).
MAX_REMEMBERED_FETCHERS = 4096
MAX_REMEMBERED_HEADERS = 512

_OK, _NOT_MODIFIED = ("200",), ("304",)  # the jwks_jwks_requests counter's label values


class Preflight:
    """OPTIONS on a public document: the CORS preflight a browser sends before a GET with a header of
    its own (If-None-Match), answered 204 with headers made once."""

    def __init__(self) -> None:
        self.headers = [
            CORS_ORIGIN,
            (b"access-control-allow-methods", b"GET, HEAD, OPTIONS"),
            (b"access-control-allow-headers", b"If-None-Match, JWKS-Verifier"),
            (b"access-control-max-age", b"86400"),
            (b"content-length", b"0"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": self.headers})
        await send({"type": "http.response.body", "body": b""})


def metadata(settings: Settings) -> dict[str, Any]:
    """RFC 8414 metadata of what exists: a token endpoint for client_credentials, introspection and
    revocation; no authorization endpoint (so no response types), no ID tokens."""
    algs = sorted({p.alg for p in settings.keysets.values()})
    auth_methods = list(AUTH_METHODS)
    assertion_algs = sorted(ASSERTION_ALGORITHMS)  # what private_key_jwt assertions may be signed with
    return {
        "issuer": settings.issuer,
        "jwks_uri": settings.url("/.well-known/jwks.json"),
        "token_endpoint": settings.url("/oauth/token"),
        "introspection_endpoint": settings.url("/oauth/introspect"),
        "revocation_endpoint": settings.url("/oauth/revoke"),
        "grant_types_supported": ["client_credentials"],
        # REQUIRED by RFC 8414 §2; there is no authorization endpoint, so no response type either.
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "introspection_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "revocation_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "access_token_signing_alg_values_supported": algs,
        "scopes_supported": sorted({"introspect"}),
    }


class JwksEndpoint:
    """GET/HEAD /.well-known/jwks.json as plain ASGI: a fast route (http/routes.py), called ahead of
    Starlette's routing.

    The busiest public endpoint serves one pre-rendered body: the response head is built once per
    key-set version (ETag) and sent as is. Behaviour is that of any route: ETag, If-None-Match ->
    304, Cache-Control with max-age and stale-if-error, the request counter. Profiled: the Starlette
    request/response machinery was about a fifth of the CPU of serving the JWKS.
    """

    def __init__(self, runtime: Runtime, requests: Tally) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.cache_control = (
            f"public, max-age={settings.jwks_max_age}, stale-if-error={settings.stale_if_error}".encode()
        )
        self._etag = ""
        self._head_200: list[tuple[bytes, bytes]] = []
        self._head_304: list[tuple[bytes, bytes]] = []
        self.requests = requests.counts  # the jwks_jwks_requests counter by status (event loop only)
        self.recorder = runtime.fetches
        self.clock = runtime.clock
        # (JWKS-Verifier, User-Agent, address) -> (fetcher name, source): names made once per client
        self._fetchers: dict[tuple[bytes | None, bytes | None, str], tuple[str, str]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, head, body = self.respond(scope["method"] == "GET", scope["headers"], scope.get("client"))
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})

    def respond(
        self, get: bool, headers: Iterable[tuple[bytes, bytes]], client: tuple[str, int] | None
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The status, head and body of the answer to a GET (or, `get` false, a HEAD) with these
        request headers (ASGI's: lower-case names) from `client`; counted, and the fetcher noted."""
        rendered = self.runtime.keys.snapshot.jwks
        if rendered.etag != self._etag:
            etag = rendered.etag.encode()
            common = [(b"cache-control", self.cache_control), (b"etag", etag), CORS_ORIGIN, CORS_EXPOSE_ETAG]
            self._head_200 = [
                *common,
                (b"content-type", b"application/jwk-set+json"),
                (b"content-length", str(len(rendered.body)).encode()),
            ]
            self._head_304 = common
            self._etag = rendered.etag
        inm = verifier = agent = None
        for name, value in headers:
            if name == b"if-none-match":
                inm = value
            elif name == b"jwks-verifier":
                verifier = value
            elif name == b"user-agent":
                agent = value
        if get:  # who now holds this revision (API.md §6): a 200 hands it over, a matching 304 confirms it
            host = client[0] if client else "unknown"
            named = self._fetchers.get((verifier, agent, host))
            if named is None:
                named = self._fetcher(verifier, agent, host)
            self.recorder.note(named[0], named[1], rendered.etag, rendered.kids, self.clock.now())
        requests = self.requests
        if inm is not None and etag_matches(inm.decode("latin-1"), rendered.etag):
            requests[_NOT_MODIFIED] = requests.get(_NOT_MODIFIED, 0) + 1
            return 304, self._head_304, b""
        requests[_OK] = requests.get(_OK, 0) + 1
        return 200, self._head_200, rendered.body if get else b""

    def _fetcher(self, verifier: bytes | None, agent: bytes | None, host: str) -> tuple[str, str]:
        """The fetcher's name and the source its per-source cap counts (an IPv6 address by its /64),
        remembered for the next request of the same client (bounded)."""
        name = fetcher_identity(
            None if verifier is None else verifier.decode("latin-1"),
            host,
            None if agent is None else agent.decode("latin-1"),
        )
        named = (name, source_address(host))
        if len(verifier or b"") + len(agent or b"") <= MAX_REMEMBERED_HEADERS:
            if len(self._fetchers) >= MAX_REMEMBERED_FETCHERS:
                self._fetchers.clear()
            self._fetchers[(verifier, agent, host)] = named
        return named


async def discovery(request: Request) -> Response:
    body: bytes = request.app.state.metadata_body
    return Response(body, media_type="application/json", headers=_DISCOVERY_HEADERS)


_DISCOVERY_HEADERS = {"Cache-Control": "public, max-age=3600", "Access-Control-Allow-Origin": "*"}


async def key_status(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    adoptions = await anyio.to_thread.run_sync(runtime.adoption.adoptions)  # read at most once a second
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
                    "tainted": key.tainted,
                    "adoption": _adoption_of(adoptions.get(name), key.kid),
                }
            )
    # A due rotation that waits for the adoption gate says so and why (API.md §6); no fetcher identities.
    waiting = {name: gate.as_dict() for name, gate in list(runtime.keys.waiting.items())}
    return JSONResponse({"keys": keys, "revoked": revoked, "waiting": waiting}, headers={"Cache-Control": "no-cache"})


def _adoption_of(adopted: Adoption | None, kid: str) -> dict[str, Any]:
    """A key's adoption for anyone to read: how many fetchers in the window, the share holding it (None
    with no fetcher, for an unpublished HMAC key, or before the records could first be read)."""
    if adopted is None:
        return {"fetchers": 0, "share": None}
    return {"fetchers": adopted.fetchers, "share": adopted.share(kid)}


def _draining() -> Response:
    """After SIGTERM with `serve --drain`: out of the proxy's rotation, still serving (http/drain.py)."""
    return JSONResponse({"status": "draining"}, status_code=503)


async def healthz(request: Request) -> Response:
    if request.app.state.drain.active:
        return _draining()
    return JSONResponse({"status": "ok"})


def public_problems(problems: Mapping[str, str]) -> dict[str, str]:
    """What /readyz may tell anyone: a fixed word per problem, never the backend's own text (hosts,
    ports, paths, Vault messages). Anything not recognised here is just "not ready"."""
    out = {}
    for name, detail in problems.items():
        if name == "store":
            out[name] = "unreachable"
        elif detail.startswith("degraded:") or " cannot sign" in detail:
            out[name] = "cannot sign"
        elif detail == "no current key":
            out[name] = "no current key"
        elif detail.startswith(NOT_CREATED):
            # A cause worded for anyone (vaultapi.PUBLIC_CAUSE: "vault: transit engine not mounted at
            # transit/") is named; any other stays private (it may name hosts or paths).
            cause = detail[len(NOT_CREATED) :].removeprefix(": ")
            out[name] = f"not created yet ({cause})" if cause.startswith(PUBLIC_CAUSE) else "not created yet"
        else:
            out[name] = "not ready"
    return out


class Readiness:
    """The readiness check for /readyz, logging each problem's detail once.

    `KeyService.readiness` does no I/O (it reports what the last background refresh found), so the
    check is cheap and cannot hang with the store. Each problem's detail is logged once when it
    appears or changes, and once when it clears; the public answer names only what is not ready.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._logged: dict[str, str] = {}

    def check(self) -> dict[str, str]:
        problems = self.runtime.keys.readiness()
        self._log(problems)
        return problems

    def _log(self, problems: Mapping[str, str]) -> None:
        for name, detail in problems.items():
            if self._logged.get(name) != detail:
                log.warning("not ready: %s: %s", name, detail)
                self._logged[name] = detail
        for name in [n for n in self._logged if n not in problems]:
            log.info("ready again: %s", name)
            del self._logged[name]


async def readyz(request: Request) -> Response:
    if request.app.state.drain.active:
        return _draining()
    runtime: Runtime = request.app.state.runtime
    readiness: Readiness = request.app.state.readiness
    problems = public_problems(readiness.check())
    # Not failures: what an operator should fix while the service stays ready (store_warnings).
    warnings = list(request.app.state.store_warnings.current)
    if problems:
        return JSONResponse(
            {
                "status": "unavailable",
                "error": "not_ready",
                "error_description": "not ready: " + "; ".join(f"{k} {v}" for k, v in sorted(problems.items())),
                "problems": problems,
                "warnings": warnings,
            },
            status_code=503,
            headers={"Cache-Control": "no-store"},
        )
    return JSONResponse({"status": "ready", "keysets": sorted(runtime.keys.snapshot.signing), "warnings": warnings})
