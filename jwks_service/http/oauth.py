"""OAuth 2.0 endpoints: token (RFC 6749 §4.4), introspection (RFC 7662), revocation (RFC 7009)."""

from __future__ import annotations

import binascii
from base64 import b64decode
from collections.abc import Mapping
from time import perf_counter
from urllib.parse import parse_qsl, unquote_plus

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from ..assertions import ASSERTION_TYPE
from ..clients import valid_scope_token
from ..errors import (
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
    InvalidTokenError,
    JwksServiceError,
    UnsupportedGrantTypeError,
)
from ..model import Client
from ..runtime import Runtime
from .limits import source_address, source_of
from .metrics import Metrics
from .responses import NO_STORE, error_response

FORM_TYPE = "application/x-www-form-urlencoded"


class InvalidTargetError(InvalidRequestError):
    error = "invalid_target"  # RFC 8707 §2: the requested audience is not one of the client's


class ClientAuthError(Exception):
    """invalid_client; `basic` says whether Basic was tried (RFC 6749 §5.2: then WWW-Authenticate)."""

    def __init__(self, *, basic: bool, description: str = "client authentication failed") -> None:
        super().__init__(description)
        self.basic = basic
        self.description = description


async def read_form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "")
    return parse_form(content_type, await request.body())


def parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """A request's form parameters (RFC 6749 §3.1: none repeated), or InvalidRequestError."""
    if content_type.split(";", 1)[0].strip().lower() != FORM_TYPE:
        raise InvalidRequestError(f"the request body must be {FORM_TYPE}")
    try:
        text = body.decode("utf-8")
        if "%" in text or "+" in text:
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict")
        else:  # nothing to unquote: what parse_qsl (strict) gives, without its per-field unquoting
            pairs = [_split_field(field) for field in text.split("&")] if text else []
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequestError("the request body is not valid form encoding") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:  # RFC 6749 §3.1: parameters must not be included more than once
            raise InvalidRequestError(f"parameter {key} is repeated")
        form[key] = value
    return form


def _split_field(field: str) -> tuple[str, str]:
    key, sep, value = field.partition("=")
    if not sep:
        raise ValueError(f"bad query field: {field!r}")
    return key, value


def _address(request: Request) -> str:
    """The source the failure throttle counts (an IPv6 client by its /64, see limits.source_of)."""
    return source_of(request)


async def authenticate_client(
    runtime: Runtime, authorization: str | None, address: str, path: str, form: dict[str, str]
) -> Client:
    """client_secret_basic, client_secret_post or private_key_jwt, never two (RFC 6749 §2.3), for a
    request with this Authorization header (or None), from `address` (what the throttle counts), to
    `path`. No store call runs on the event loop (see ClientRegistry.authenticate_async)."""
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise ClientAuthError(basic=True, description="only Basic client authentication is accepted here")
        if "client_secret" in form or "client_assertion" in form:
            raise InvalidRequestError("use one client authentication method, not Basic and another")
        try:
            decoded = b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise ClientAuthError(basic=True, description="malformed Basic credentials") from None
        raw_id, sep, raw_secret = decoded.partition(":")
        if not sep:
            raise ClientAuthError(basic=True, description="malformed Basic credentials")
        # RFC 6749 §2.3.1: both parts are form-urlencoded before Base64.
        client_id = unquote_plus(raw_id) if "%" in raw_id or "+" in raw_id else raw_id
        secret = unquote_plus(raw_secret) if "%" in raw_secret or "+" in raw_secret else raw_secret
        if "client_id" in form and form["client_id"] != client_id:
            raise InvalidRequestError("client_id in the body differs from the Basic credentials")
        try:
            return await runtime.clients.authenticate_async(client_id, secret, address)
        except InvalidClientError:
            raise ClientAuthError(basic=True) from None
    if "client_assertion" in form or "client_assertion_type" in form:
        return await _authenticate_assertion(runtime, address, path, form)
    post_id = form.get("client_id")
    post_secret = form.get("client_secret")
    if not post_id or post_secret is None:
        raise ClientAuthError(basic=False, description="client authentication is required")
    try:
        return await runtime.clients.authenticate_async(post_id, post_secret, address)
    except InvalidClientError:
        raise ClientAuthError(basic=False) from None


async def _authenticate_assertion(runtime: Runtime, address: str, path: str, form: dict[str, str]) -> Client:
    """private_key_jwt (RFC 7523 §2.2): the assertion's aud may be the issuer, the token endpoint's URL
    or the URL of the endpoint called."""
    if "client_secret" in form:
        raise InvalidRequestError("use one client authentication method, not client_secret and client_assertion")
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise InvalidRequestError(f"client_assertion_type must be {ASSERTION_TYPE}")
    assertion = form.get("client_assertion")
    if not assertion:
        raise InvalidRequestError("client_assertion is required with client_assertion_type")
    settings = runtime.settings
    audiences = {settings.issuer, settings.url("/oauth/token"), settings.url(path)}
    try:
        return await runtime.clients.authenticate_assertion_async(assertion, form.get("client_id"), audiences, address)
    except InvalidClientError as exc:
        raise ClientAuthError(basic=False, description=exc.description) from None


CLIENT_AUTH_CHALLENGE = 'Basic realm="jwks-service", charset="UTF-8"'


async def client_auth_error(request: Request, exc: Exception) -> Response:
    """Exception handler: 401 invalid_client, with a Basic challenge when Basic was tried."""
    assert isinstance(exc, ClientAuthError)
    headers = {"WWW-Authenticate": CLIENT_AUTH_CHALLENGE} if exc.basic else None
    return error_response(InvalidClientError(exc.description), headers)


async def client_request(request: Request) -> tuple[Runtime, dict[str, str], Client]:
    """The runtime, the form and the authenticated client of an OAuth endpoint request."""
    runtime: Runtime = request.app.state.runtime
    form = await read_form(request)
    authorization = request.headers.get("authorization")
    client = await authenticate_client(runtime, authorization, _address(request), request.url.path, form)
    return runtime, form, client


def choose_scope(client: Client, requested: str | None) -> str:
    if requested is None or not requested.strip():
        return " ".join(client.scopes)
    wanted = requested.split(" ")
    for s in wanted:
        if not s or not valid_scope_token(s):
            raise InvalidScopeError("scope must be space-separated scope tokens")
        if s not in client.scopes:
            raise InvalidScopeError(f"scope {s!r} is not granted to this client")
    return " ".join(dict.fromkeys(wanted))


def choose_audience(client: Client, requested: str | None) -> str:
    if requested is None or requested == "":
        return client.audiences[0]
    if requested not in client.audiences:
        raise InvalidTargetError(f"audience {requested!r} is not one of this client's audiences")
    return requested


def _request_parts(scope: Scope) -> tuple[Runtime, Metrics, str]:
    """The runtime and metrics of the app a plain-ASGI OAuth request came to, and its source address."""
    state = scope["app"].state
    client = scope.get("client")
    return state.runtime, state.metrics, source_address(client[0] if client else "unknown")


async def _client_of(
    runtime: Runtime, scope: Scope, headers: Mapping[bytes, bytes], body: bytes, address: str
) -> tuple[dict[str, str], Client]:
    """The form and the authenticated client of a plain-ASGI OAuth request (routes.JsonApp)."""
    form = parse_form(headers.get(b"content-type", b"").decode("latin-1"), body)
    authorization = headers.get(b"authorization")
    header = None if authorization is None else authorization.decode("latin-1")
    return form, await authenticate_client(runtime, header, address, scope["path"], form)


async def token(scope: Scope, headers: Mapping[bytes, bytes], body: bytes) -> bytes:
    """POST /oauth/token as a routes.JsonApp answer: the JSON of the 200 answer, or an error raised."""
    runtime, metrics, address = _request_parts(scope)
    try:
        answer = await _token(runtime, metrics, scope, headers, body, address)
    except ClientAuthError:
        metrics.token_requests.inc("invalid_client")
        raise
    except JwksServiceError as exc:
        metrics.token_requests.inc(exc.error)
        raise
    metrics.token_requests.inc("ok")
    return answer


async def _token(
    runtime: Runtime, metrics: Metrics, scope: Scope, headers: Mapping[bytes, bytes], body: bytes, address: str
) -> bytes:
    form, client = await _client_of(runtime, scope, headers, body, address)
    grant_type = form.get("grant_type")
    if not grant_type:
        raise InvalidRequestError("grant_type is required")
    if grant_type != "client_credentials":
        raise UnsupportedGrantTypeError(f"grant_type {grant_type!r} is not supported; use client_credentials")
    scope_granted = choose_scope(client, form.get("scope"))
    audience = choose_audience(client, form.get("audience"))
    started = perf_counter()
    issued = await runtime.keys.issue_async(client, scope_granted, audience)
    metrics.signing_seconds.observe(perf_counter() - started, client.keyset)
    metrics.tokens_issued.inc(client.keyset, issued.kid)
    return orjson.dumps(
        {"access_token": issued.token, "token_type": "Bearer", "expires_in": issued.expires_in, "scope": issued.scope}
    )


def _token_param(form: dict[str, str]) -> str:
    value = form.get("token")
    if not value:
        raise InvalidRequestError("token is required")
    return value


_INACTIVE = orjson.dumps({"active": False})


async def introspect(scope: Scope, headers: Mapping[bytes, bytes], body: bytes) -> bytes:
    """POST /oauth/introspect as a routes.JsonApp answer: the JSON of the 200 answer, or an error raised."""
    runtime, metrics, address = _request_parts(scope)
    form, caller = await _client_of(runtime, scope, headers, body, address)
    value = _token_param(form)
    try:
        result = await runtime.keys.introspect_async(value)
    except InvalidTokenError:
        metrics.introspections.inc("inactive")
        return _INACTIVE
    except JwksServiceError as exc:
        metrics.introspections.inc(exc.error)
        raise
    # A client sees its own tokens; only a client with scope `introspect` sees others'.
    if result.claims.get("client_id") != caller.client_id and "introspect" not in caller.scopes:
        metrics.introspections.inc("inactive")
        return _INACTIVE
    metrics.introspections.inc("active")
    answer = {**result.claims, "active": True, "token_type": "Bearer", "kid": result.kid, "keyset": result.keyset}
    if result.key_tainted:
        answer["key_tainted"] = True
    return orjson.dumps(answer)


async def revoke(request: Request) -> Response:
    runtime, form, caller = await client_request(request)
    value = _token_param(form)
    try:
        result = await runtime.keys.introspect_async(value)
    except InvalidTokenError:
        return Response(status_code=200, headers=NO_STORE)  # RFC 7009 §2.2: invalid tokens need no action
    if result.claims.get("client_id") == caller.client_id:
        jti, exp = str(result.claims["jti"]), float(result.claims["exp"])
        await anyio.to_thread.run_sync(runtime.keys.revoke_token, jti, exp)
    return Response(status_code=200, headers=NO_STORE)
