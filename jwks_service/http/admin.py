"""Admin API (API.md §3 "Admin"): bearer tokens of this service with scope `admin` and audience = issuer.

Every call is audited with the calling client as actor; state changes also audit each key
transition they cause. Writes run in a worker thread: generating an RSA key takes a while.
A call refused with 401 (no token, or not a live token of ours) is audited with actor
``anonymous`` and the source address, within a budget (DeniedAuditBudget) so that a stranger
cannot flood the audit log.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response

from .. import audit, planning, views
from ..clients import MAX_SECRET_GRACE, check_grace
from ..clock import MissingTimeZoneError, parse_rfc3339
from ..config import format_duration, parse_duration
from ..errors import (
    ConfigError,
    InsufficientScopeError,
    InvalidRequestError,
    InvalidTokenError,
    JwksServiceError,
    NotFoundError,
)
from ..model import Client, Keyset, KeyVersion
from ..runtime import Runtime
from .limits import source_of
from .responses import NO_STORE, JSONResponse

Handler = Callable[[Request, Runtime, str], Awaitable[tuple[Response, str, str]]]
MAX_REASON = 1000
MAX_DENIED_TARGET = 256  # characters of the path kept in an audit row of a refused call

log = logging.getLogger("jwks_service")


def _bearer(request: Request) -> str:
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidTokenError("an admin bearer token is required")
    return token.strip()


async def authorize(request: Request, runtime: Runtime) -> Client:
    """401 for anything that is not a live token of ours; 403 without scope admin or audience = issuer.

    Nothing blocks the event loop: the token passes every cheap check before its signature is
    checked, and a signature that needs Vault (an HMAC key) is checked through the clients' gate for
    unauthenticated callers (bounded in total and per address; 503 at once when full)."""
    result = await runtime.keys.introspect_async(
        _bearer(request), partial(runtime.clients.gate.run, source_of(request))
    )
    claims = result.claims
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    client = await runtime.clients.get_async(str(claims.get("client_id", "")))
    if client is None:
        raise InvalidTokenError("the token's client no longer exists")
    # The token must carry the scope, and the client must still hold it (revoking a client's admin
    # scope takes effect at once, not when its tokens expire).
    if "admin" not in str(claims.get("scope", "")).split() or "admin" not in client.scopes:
        raise ForbiddenError(client.client_id, "this call needs a token with scope admin")
    if runtime.settings.issuer not in audiences:
        raise ForbiddenError(client.client_id, f"admin tokens must have audience {runtime.settings.issuer}")
    return client


class ForbiddenError(InsufficientScopeError):
    """403 for a valid token of `client_id`: the audit names the client without checking the token twice."""

    def __init__(self, client_id: str, description: str) -> None:
        super().__init__(description)
        self.client_id = client_id


class DeniedAuditBudget:
    """How many unauthenticated (401) admin calls are written to the audit log, per process.

    Counted in memory per minute (fixed windows): at most `per_source` rows per source address and
    `total` rows in all. The calls past the budget are still refused, just not audited; the first
    one in a minute is logged as a warning (so at most one log line a minute). Memory is bounded
    too: an address is only counted once admitted, so the table never holds more than `total`.
    """

    PER_SOURCE = 10
    TOTAL = 100
    WINDOW = 60.0

    def __init__(self, per_source: int = PER_SOURCE, total: int = TOTAL) -> None:
        self.per_source = per_source
        self.total = total
        self._window = -1
        self._counts: dict[str, int] = {}
        self._admitted = 0
        self._warned = False

    def admit(self, source: str, now: float) -> bool:
        window = int(now // self.WINDOW)
        if window != self._window:
            self._window, self._counts, self._admitted, self._warned = window, {}, 0, False
        count = self._counts.get(source, 0)
        if count >= self.per_source or self._admitted >= self.total:
            if not self._warned:
                self._warned = True
                log.warning(
                    "unauthenticated admin calls over the audit budget (%d per address, %d in all, a minute):"
                    " further ones this minute are refused without an audit row (latest from %s)",
                    self.per_source,
                    self.total,
                    source,
                )
            return False
        self._counts[source] = count + 1
        self._admitted += 1
        return True


async def _audit_unauthenticated(request: Request, runtime: Runtime, action: str, reason: str) -> None:
    """Audit a 401 (actor anonymous, the source address) within the budget; never changes the answer."""
    await _audit_refused(request, runtime, "anonymous", action, reason)


async def _audit_refused(request: Request, runtime: Runtime, actor: str, action: str, reason: str) -> None:
    """Audit a refused admin call (401 or 403) within the budget of refused calls per source and per
    actor; the write goes through the gate for strangers; never changes the answer."""
    address = request.client.host if request.client else "unknown"
    source = source_of(request)
    budget: DeniedAuditBudget = request.app.state.denied_audit
    now = runtime.clock.now()
    if not budget.admit(source, now) or (actor != "anonymous" and not budget.admit(actor, now)):
        return
    target = request.url.path[:MAX_DENIED_TARGET]
    try:
        await _audit(runtime, actor, action, target, "denied", reason, stranger=source, address=address)
    except JwksServiceError as exc:
        log.warning("could not audit a refused admin call from %s: %s", address, exc.description)


def admin(action: str) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Authorise, run, and audit one admin call (also when it fails or is refused)."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            runtime: Runtime = request.app.state.runtime
            try:
                client = await authorize(request, runtime)
            except InvalidTokenError as exc:
                await _audit_unauthenticated(request, runtime, action, exc.description)
                raise
            except ForbiddenError as exc:
                await _audit_refused(request, runtime, f"client:{exc.client_id}", action, exc.description)
                raise
            actor = f"client:{client.client_id}"
            try:
                response, target, reason = await handler(request, runtime, actor)
            except JwksServiceError as exc:
                await _audit(runtime, actor, action, request.url.path, f"failed:{exc.error}", exc.description)
                raise
            await _audit(runtime, actor, action, target, "ok", reason)
            return response

        return endpoint

    return wrap


async def _audit(
    runtime: Runtime,
    actor: str,
    action: str,
    target: str,
    outcome: str,
    reason: str,
    *,
    stranger: str | None = None,
    **details: Any,
) -> None:
    """Write one audit event off the event loop. For a refused caller (`stranger`: its source), the
    write goes through the clients' gate for unauthenticated callers, bounded per source and in
    total, so refused calls cannot fill the thread pool that reloads and authentication need."""
    event = audit.event(
        runtime.clock.now(), actor, f"admin.{action}", target, outcome=outcome, reason=reason, **details
    )
    if stranger is None:
        await anyio.to_thread.run_sync(runtime.audit_log.record, [event])
    else:
        await runtime.clients.gate.run(stranger, runtime.audit_log.record, [event])


async def _json_body(request: Request, allowed: set[str]) -> dict[str, Any]:
    body = await request.body()
    if not body.strip():
        return {}
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        raise InvalidRequestError("the request body must be application/json")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequestError("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InvalidRequestError(f"unknown field {unknown[0]!r} (known: {', '.join(sorted(allowed))})")
    return data


def _reason(data: dict[str, Any], *, required: bool = False) -> str:
    reason = data.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise InvalidRequestError(f"reason must be a string of at most {MAX_REASON} characters")
    if required and not reason.strip():
        raise InvalidRequestError("reason is required")
    return reason


def _duration(value: object, name: str, *, at_most: int) -> int:
    """A duration from a request (`"15m"` or whole seconds), bounded: nothing a request says may
    reach a date no clock or store can hold."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        try:
            seconds = parse_duration(value, name)
        except ConfigError as exc:
            raise InvalidRequestError(exc.description) from None
    if not 0 <= seconds <= at_most:
        raise InvalidRequestError(f"{name}: from 0s to {format_duration(at_most)} (got {value!r})")
    return seconds


def _string_list(value: object, name: str) -> list[str]:
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequestError(f"{name} must be a list of strings")
    return value


def _client_view(runtime: Runtime, client: Client) -> dict[str, Any]:
    return views.client_view(client, runtime.clock.now(), runtime.settings.client_secret_max_age)


@admin("keysets.list")
async def list_keysets(request: Request, runtime: Runtime, actor: str) -> tuple[Response, str, str]:
    out = views.keysets_view(runtime.settings.keysets, runtime.keys.snapshot.keysets)
    return JSONResponse({"keysets": out}), "keysets", ""


@admin("keysets.plan")
async def keyset_plan(request: Request, runtime: Runtime, actor: str) -> tuple[Response, str, str]:
    name = request.path_params["name"]
    plan = await anyio.to_thread.run_sync(planning.read_plan, runtime, name)
    return JSONResponse(plan.as_dict(), headers={"Cache-Control": "no-store"}), f"keyset:{name}", ""


@admin("keysets.rotate")
async def rotate(request: Request, runtime: Runtime, actor: str) -> tuple[Response, str, str]:
    name = request.path_params["name"]
    data = await _json_body(request, {"force", "reason"})
    force = data.get("force", False)
    if not isinstance(force, bool):
        raise InvalidRequestError("force must be true or false")
    reason = _reason(data)
    if name not in runtime.settings.keysets:
        raise NotFoundError(f"no keyset {name}")
    summary = await anyio.to_thread.run_sync(lambda: runtime.keys.rotate(name, force=force, reason=reason, actor=actor))
    return JSONResponse(summary), f"keyset:{name}", reason


@admin("keysets.adoption")
async def keyset_adoption(request: Request, runtime: Runtime, actor: str) -> tuple[Response, str, str]:
    """Who holds which of the keyset's keys (API.md §6), from every replica's records."""
    name = request.path_params["name"]
    if name not in runtime.settings.keysets:
        raise NotFoundError(f"no keyset {name}")
    adopted = await anyio.to_thread.run_sync(runtime.adoption.adoption, name)
    return JSONResponse(adopted.as_dict()), f"keyset:{name}", ""


@admin("keys.revoke")
async def revoke_key(request: Request, runtime: Runtime, actor: str) -> tuple[Response, str, str]:
    return await _key_action(request, runtime.keys.revoke, runtime, actor, "revoked")


@admin("keys.taint")
async def taint_key(request: Request, runtime: Runtime, actor: str) -> tuple[Response, str, str]:
    return await _key_action(request, runtime.keys.taint, runtime, actor, "tainted")


async def _key_action(
    request: Request,
    action: Callable[..., tuple[Keyset, KeyVersion]],
    runtime: Runtime,
    actor: str,
    done: str,
) -> tuple[Response, str, str]:
    """An action on one key by kid (revoke, taint): `action(kid, reason=, actor=)`, answered with the
    key as `done` ("revoked", "tainted")."""
    kid = request.path_params["kid"]
    reason = _reason(await _json_body(request, {"reason"}), required=True)
    laggards = await anyio.to_thread.run_sync(runtime.keys.laggards_if_promoting, kid)
    keyset, key = await anyio.to_thread.run_sync(lambda: action(kid, reason=reason, actor=actor))
    summary = await anyio.to_thread.run_sync(runtime.keys.summary, keyset.name)
    view = views.key_action_view(keyset, done, key.kid, summary, laggards)
    return JSONResponse(view), f"key:{kid}", reason


@admin("clients.list")
async def list_clients(request: Request, runtime: Runtime, actor: str) -> tuple[Response, str, str]:
    clients = await anyio.to_thread.run_sync(runtime.clients.read_all)
    return JSONResponse({"clients": [_client_view(runtime, c) for c in clients]}), "clients", ""


_CLIENT_FIELDS = ("name", "scopes", "audiences", "token_ttl")
_KEY_AUTH_FIELDS = ("token_endpoint_auth_method", "jwks", "jwks_uri")  # private_key_jwt (RFC 7591 names)


def _client_fields(
    runtime: Runtime, data: dict[str, Any]
) -> tuple[str | None, list[str] | None, list[str] | None, int | None]:
    """A client's name, scopes, audiences and token_ttl from a request body, None where absent
    (then ClientRegistry.validate checks them against the keysets)."""
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidRequestError("name must be a string")
    scopes = _string_list(data["scopes"], "scopes") if "scopes" in data else None
    audiences = _string_list(data["audiences"], "audiences") if "audiences" in data else None
    longest = max((p.token_ttl for p in runtime.settings.keysets.values()), default=0)
    ttl = _duration(data["token_ttl"], "token_ttl", at_most=longest) if "token_ttl" in data else None
    return name, scopes, audiences, ttl


@admin("clients.create")
async def create_client(request: Request, runtime: Runtime, actor: str) -> tuple[Response, str, str]:
    data = await _json_body(request, {*_CLIENT_FIELDS, "keyset", *_KEY_AUTH_FIELDS})
    if not isinstance(data.get("name"), str):
        raise InvalidRequestError("name is required (a string)")
    # scopes and audiences are required here: absent, they are refused as not lists of strings.
    name, scopes, audiences, ttl = _client_fields(runtime, {"scopes": None, "audiences": None, **data})
    assert name is not None
    assert scopes is not None
    assert audiences is not None
    keyset = data.get("keyset", "default")
    if not isinstance(keyset, str):
        raise InvalidRequestError("keyset must be a string")
    method = data.get("token_endpoint_auth_method", "client_secret_basic")
    jwks, jwks_uri = data.get("jwks"), data.get("jwks_uri")
    client, secret = await anyio.to_thread.run_sync(
        lambda: runtime.clients.create(
            name,
            scopes,
            audiences,
            keyset=keyset,
            token_ttl=ttl,
            actor=actor,
            auth_method=method,
            jwks=jwks,
            jwks_uri=jwks_uri,
        )
    )
    body = views.created_client_view(client, secret, runtime.clock.now(), runtime.settings.client_secret_max_age)
    return JSONResponse(body, status_code=201, headers=NO_STORE), f"client:{client.client_id}", ""


@admin("clients.show")
async def show_client(request: Request, runtime: Runtime, actor: str) -> tuple[Response, str, str]:
    client_id = request.path_params["client_id"]
    client = await anyio.to_thread.run_sync(runtime.clients.read, client_id)
    return JSONResponse(_client_view(runtime, client)), f"client:{client_id}", ""


@admin("clients.update")
async def update_client(request: Request, runtime: Runtime, actor: str) -> tuple[Response, str, str]:
    """PATCH: the fields given change, the others stay; in force on every replica within 1 s."""
    client_id = request.path_params["client_id"]
    data = await _json_body(request, set(_CLIENT_FIELDS))
    if not data:
        raise InvalidRequestError(f"nothing to change: give at least one of {', '.join(_CLIENT_FIELDS)}")
    name, scopes, audiences, ttl = _client_fields(runtime, data)
    client, changes = await anyio.to_thread.run_sync(
        lambda: runtime.clients.update(
            client_id, name=name, scopes=scopes, audiences=audiences, token_ttl=ttl, actor=actor
        )
    )
    body = views.updated_client_view(client, changes, runtime.clock.now(), runtime.settings.client_secret_max_age)
    return JSONResponse(body), f"client:{client_id}", ""


@admin("clients.delete")
async def delete_client(request: Request, runtime: Runtime, actor: str) -> tuple[Response, str, str]:
    client_id = request.path_params["client_id"]
    await anyio.to_thread.run_sync(lambda: runtime.clients.delete(client_id, actor=actor))
    return Response(status_code=204), f"client:{client_id}", ""


@admin("clients.rotate_secret")
async def rotate_secret(request: Request, runtime: Runtime, actor: str) -> tuple[Response, str, str]:
    client_id = request.path_params["client_id"]
    data = await _json_body(request, {"grace", "reason"})
    grace = check_grace(_duration(data.get("grace", "24h"), "grace", at_most=MAX_SECRET_GRACE))
    reason = _reason(data)
    client, secret = await anyio.to_thread.run_sync(
        lambda: runtime.clients.rotate_secret(client_id, grace, actor=actor)
    )
    body = views.secret_rotation_view(client, secret, runtime.clock.now() + grace)
    return JSONResponse(body, headers=NO_STORE), f"client:{client_id}", reason


def _since(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        try:
            return parse_rfc3339(value)
        except MissingTimeZoneError:
            raise InvalidRequestError("since needs a time zone (e.g. 2026-01-01T00:00:00Z)") from None
        except ValueError:
            raise InvalidRequestError("since must be an RFC 3339 time or seconds since the epoch") from None
    if not math.isfinite(number):
        raise InvalidRequestError("since must be finite")
    return number


@admin("audit.list")
async def list_audit(request: Request, runtime: Runtime, actor: str) -> tuple[Response, str, str]:
    since = _since(request.query_params.get("since"))
    raw_limit = request.query_params.get("limit", "100")
    if not raw_limit.isascii() or not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
        raise InvalidRequestError("limit must be a whole number from 1 to 1000")
    limit = int(raw_limit)
    cursor = request.query_params.get("cursor")
    events, next_cursor = await anyio.to_thread.run_sync(runtime.audit_log.page, since, limit, cursor)
    body = {"events": [views.audit_event_view(e) for e in events], "next_cursor": next_cursor}
    return JSONResponse(body), "audit", ""
