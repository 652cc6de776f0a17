"""The OpenAPI 3.1 document of the HTTP API (API.md §3), served at `GET /openapi.json`.

Written as data, next to the code it describes: where a handler's limit has a name (body size,
reason length, scope tokens, durations), the document states that name's value, so the two cannot
disagree. tests/http/test_openapi.py checks that the document and the app's route table name the
same operations; tests/http/test_openapi_fuzz.py runs schemathesis against the app with it.

Every error body is `{"error", "error_description"}`; a 500 is never documented, because none may
happen. `GET` implies `HEAD` (RFC 9110 §9.3.2) and is not listed twice.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from .. import __version__
from ..algorithms import ALGORITHMS
from ..clients import _SCOPE_TOKEN
from ..config import _DURATION
from ..model import PUBLISHED_STATES
from .admin import MAX_REASON
from .limits import MAX_BODY_BYTES

# Limits the handlers enforce (http/admin.py, clients.py) that have no constant of their own there.
MAX_AUDIT_PAGE = 1000
MAX_CLIENT_NAME = 200
MAX_AUDIENCE = 512
SCOPE_TOKEN = _SCOPE_TOKEN.pattern  # RFC 6749 §3.3 scope-token
DURATION = rf"^\s*{_DURATION.pattern}\s*$"  # config.parse_duration (on the stripped value)
EVENT_ID = r"^[0-9]{1,20}(-.*)?$"  # events.parse_event_id: microseconds, then anything

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: Schema, required: list[str] | None = None, *, closed: bool = True) -> Schema:
    out: Schema = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    if closed:
        out["additionalProperties"] = False
    return out


_TIME = {"type": "string", "format": "date-time"}
_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
_KID_OR_NULL = {"type": ["string", "null"]}


def _json(schema: Schema) -> Schema:
    return {JSON: {"schema": schema}}


def _header(name: str) -> Schema:
    return {"$ref": f"#/components/headers/{name}"}


def _error(description: str, codes: list[str], *headers: str) -> Schema:
    schema = {"allOf": [_ref("Error"), {"properties": {"error": {"enum": codes}}}]}
    out: Schema = {"description": description, "content": _json(schema)}
    if headers:
        out["headers"] = {h: _header(h) for h in headers}
    return out


# Error responses, shared by reference. The codes are the ones errors.py and app.py produce.
RESPONSES: dict[str, Schema] = {
    "BadRequest": _error(
        "The request is malformed or names something the caller may not have.",
        ["invalid_request", "unsupported_grant_type", "invalid_scope", "invalid_target"],
    ),
    "ClientUnauthorized": _error(
        "Client authentication failed: unknown client, wrong secret, or none given. Same body and timing for "
        "each; `WWW-Authenticate: Basic` when Basic was tried (RFC 6749 §5.2).",
        ["invalid_client"],
        "WWW-Authenticate",
    ),
    "BearerUnauthorized": _error(
        "Missing, malformed, forged, expired or revoked bearer token (RFC 6750 §3.1).",
        ["invalid_token"],
        "WWW-Authenticate",
    ),
    "Forbidden": _error(
        "A valid token of this service without scope `admin` or without audience = issuer.",
        ["insufficient_scope"],
        "WWW-Authenticate",
    ),
    "NotFound": _error("No such resource.", ["not_found"]),
    "Conflict": _error(
        "The change was refused: a rotation before the next key has been published long enough, or a write "
        "that lost a race with another replica.",
        ["conflict", "rotation_refused"],
    ),
    "TooLarge": _error(f"Request bodies are limited to {MAX_BODY_BYTES} bytes.", ["request_too_large"]),
    "TooManyRequests": _error(
        "Too many failed client authentications from this client id and address, or from this address "
        "(or too many event streams from this address); wait `Retry-After` seconds.",
        ["slow_down"],
        "Retry-After",
    ),
    "Unavailable": _error(
        "The store or the key backend cannot be reached, or the revocation state is stale; retry after "
        "`Retry-After` seconds.",
        ["temporarily_unavailable"],
        "Retry-After",
    ),
}

HEADERS: dict[str, Schema] = {
    "Retry-After": {
        "description": "Seconds to wait before retrying (RFC 9110 §10.2.3).",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "ETag": {
        "description": "A strong validator of the JWKS body; send it back in `If-None-Match`.",
        "schema": {"type": "string", "pattern": '^"[^"]+"$'},
    },
    "Cache-Control": {"description": "Caching rules of the response.", "schema": {"type": "string"}},
    "NoStore": {
        "description": "`no-store`: token-bearing responses are never cached.",
        "schema": {"type": "string", "const": "no-store"},
    },
    "WWW-Authenticate": {"description": "The authentication challenge.", "schema": {"type": "string"}},
}

_ALGS = sorted(ALGORITHMS)
_ASYMMETRIC_ALGS = sorted(name for name, a in ALGORITHMS.items() if not a.symmetric)
_PUBLISHED = sorted(state.value for state in PUBLISHED_STATES)
_SIG = {"kid": {"type": "string"}, "alg": {"type": "string", "enum": _ASYMMETRIC_ALGS}, "use": {"const": "sig"}}
_B64URL = {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}

SCHEMAS: dict[str, Schema] = {
    "Error": _obj(
        {"error": {"type": "string"}, "error_description": {"type": "string"}}, ["error", "error_description"]
    ),
    # API.md §3: only public members, never d/p/q/dp/dq/qi/k, never kty oct.
    "JWK": {
        "oneOf": [
            _obj({**_SIG, "kty": {"const": "RSA"}, "n": _B64URL, "e": _B64URL}, ["kid", "kty", "alg", "use", "n", "e"]),
            _obj(
                {
                    **_SIG,
                    "kty": {"const": "EC"},
                    "crv": {"enum": ["P-256", "P-384", "P-521"]},
                    "x": _B64URL,
                    "y": _B64URL,
                },
                ["kid", "kty", "alg", "use", "crv", "x", "y"],
            ),
            _obj(
                {**_SIG, "kty": {"const": "OKP"}, "crv": {"const": "Ed25519"}, "x": _B64URL},
                ["kid", "kty", "alg", "use", "crv", "x"],
            ),
        ]
    },
    "JWKS": _obj({"keys": {"type": "array", "items": _ref("JWK")}}, ["keys"]),
    "Metadata": _obj(
        {
            "issuer": {"type": "string", "format": "uri"},
            "jwks_uri": {"type": "string", "format": "uri"},
            "token_endpoint": {"type": "string", "format": "uri"},
            "introspection_endpoint": {"type": "string", "format": "uri"},
            "revocation_endpoint": {"type": "string", "format": "uri"},
            "grant_types_supported": {"type": "array", "items": {"const": "client_credentials"}},
            "response_types_supported": {"type": "array", "items": {"type": "string"}},
            "token_endpoint_auth_methods_supported": {"type": "array", "items": {"type": "string"}},
            "introspection_endpoint_auth_methods_supported": {"type": "array", "items": {"type": "string"}},
            "revocation_endpoint_auth_methods_supported": {"type": "array", "items": {"type": "string"}},
            "access_token_signing_alg_values_supported": {"type": "array", "items": {"enum": _ALGS}},
            "id_token_signing_alg_values_supported": {"type": "array", "items": {"enum": _ALGS}},
            "subject_types_supported": {"type": "array", "items": {"type": "string"}},
            "scopes_supported": {"type": "array", "items": {"type": "string"}},
        },
        ["issuer", "jwks_uri", "token_endpoint", "grant_types_supported", "token_endpoint_auth_methods_supported"],
        closed=False,  # RFC 8414 §2: metadata may grow
    ),
    "KeyStatus": _obj(
        {
            "keys": {
                "type": "array",
                "items": _obj(
                    {
                        "kid": {"type": "string"},
                        "keyset": {"type": "string"},
                        "alg": {"type": "string", "enum": _ALGS},
                        "state": {"enum": _PUBLISHED},
                        "not_before": _TIME_OR_NULL,
                        "not_after": _TIME_OR_NULL,
                        "created_at": _TIME,
                        "published": {"type": "boolean", "description": "false for HMAC keys (no public JWK)"},
                    },
                    ["kid", "keyset", "alg", "state", "not_before", "not_after"],
                ),
            },
            "revoked": {
                "type": "array",
                "items": _obj(
                    {"kid": {"type": "string"}, "keyset": {"type": "string"}, "revoked_at": _TIME_OR_NULL},
                    ["kid", "keyset", "revoked_at"],
                ),
            },
        },
        ["keys", "revoked"],
    ),
    "Health": _obj({"status": {"const": "ok"}}, ["status"]),
    "Ready": _obj(
        {"status": {"const": "ready"}, "keysets": {"type": "array", "items": {"type": "string"}}}, ["status"]
    ),
    "NotReady": _obj(
        {
            "status": {"const": "unavailable"},
            "error": {"const": "not_ready"},
            "error_description": {"type": "string"},
            "problems": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        ["status", "error", "error_description"],
    ),
    "ClientCredentials": _obj(
        {
            "client_id": {"type": "string", "description": "client_secret_post; with Basic, it must match"},
            "client_secret": {"type": "string", "description": "client_secret_post; never together with Basic"},
        },
        closed=False,
    ),
    "TokenRequest": {
        "allOf": [
            _ref("ClientCredentials"),
            _obj(
                {
                    "grant_type": {
                        "enum": ["client_credentials"],
                        "description": "only `client_credentials` (else 400 unsupported_grant_type)",
                    },
                    "scope": {"type": "string", "description": "space-separated; a subset of the client's scopes"},
                    "audience": {"type": "string", "description": "one of the client's audiences (RFC 8707)"},
                },
                ["grant_type"],
                closed=False,
            ),
        ]
    },
    "TokenResponse": _obj(
        {
            "access_token": {"type": "string"},
            "token_type": {"const": "Bearer"},
            "expires_in": {"type": "integer", "minimum": 1},
            "scope": {"type": "string"},
        },
        ["access_token", "token_type", "expires_in", "scope"],
    ),
    "TokenParameter": {
        "allOf": [
            _ref("ClientCredentials"),
            _obj({"token": {"type": "string", "minLength": 1}}, ["token"], closed=False),
        ]
    },
    "IntrospectionResponse": {
        "oneOf": [
            _obj({"active": {"const": False}}, ["active"]),
            _obj(
                {
                    "active": {"const": True},
                    "token_type": {"const": "Bearer"},
                    "kid": {"type": "string"},
                    "keyset": {"type": "string"},
                    "iss": {"type": "string"},
                    "sub": {"type": "string"},
                    "aud": {"type": ["string", "array"], "items": {"type": "string"}},
                    "exp": {"type": "number"},
                    "iat": {"type": "number"},
                    "nbf": {"type": "number"},
                    "jti": {"type": "string"},
                    "client_id": {"type": "string"},
                    "scope": {"type": "string"},
                },
                ["active", "token_type", "kid", "keyset", "iss", "sub", "aud", "exp", "iat", "jti", "client_id"],
                closed=False,
            ),
        ]
    },
    # One event of the stream, as OpenAPI 3.2's `itemSchema` describes them: its fields, with JSON data.
    "ServerSentEvent": _obj(
        {
            "id": {"type": "string"},
            "event": {"enum": ["created", "rotated", "revoked", "retired", "ready"]},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"oneOf": [_ref("KeyEvent"), _ref("ReadyEvent")]},
            },
            "retry": {"type": "integer", "minimum": 0},
        },
        ["event", "data"],
    ),
    "KeyEvent": _obj(
        {
            "type": {"enum": ["created", "rotated", "revoked", "retired"]},
            "kid": {"type": "string"},
            "keyset": {"type": "string"},
            "alg": {"type": "string", "enum": _ALGS},
            "revision": {"type": "integer"},
            "at": _TIME,
        },
        ["type", "kid", "keyset", "alg", "revision", "at"],
    ),
    "ReadyEvent": _obj(
        {"type": {"const": "ready"}, "keysets": {"type": "object", "additionalProperties": {"type": "integer"}}},
        ["type", "keysets"],
    ),
    "Reason": {"type": "string", "maxLength": MAX_REASON},
    "Duration": {
        "oneOf": [
            {"type": "string", "pattern": DURATION, "description": "a duration like 30s, 15m, 1h or 90d"},
            {"type": "integer", "minimum": 0, "description": "seconds"},
        ]
    },
    "Keysets": _obj(
        {
            "keysets": {
                "type": "array",
                "items": _obj(
                    {
                        "name": {"type": "string"},
                        "alg": {"type": "string", "enum": _ALGS},
                        "backend": {"type": "string"},
                        "revision": {"type": "integer"},
                        "policy": {"type": "object", "additionalProperties": {"type": "string"}},
                        "next_rotation_at": _TIME_OR_NULL,
                        "keys": {
                            "type": "array",
                            "items": _obj(
                                {
                                    "kid": {"type": "string"},
                                    "state": {"type": "string"},
                                    "created_at": _TIME_OR_NULL,
                                    "activated_at": _TIME_OR_NULL,
                                    "retire_at": _TIME_OR_NULL,
                                    "retired_at": _TIME_OR_NULL,
                                    "revoked_at": _TIME_OR_NULL,
                                },
                                ["kid", "state"],
                                closed=False,
                            ),
                        },
                    },
                    ["name", "alg", "keys"],
                    closed=False,
                ),
            }
        },
        ["keysets"],
    ),
    "RotateRequest": _obj({"force": {"type": "boolean", "default": False}, "reason": _ref("Reason")}),
    "RotateResponse": _obj(
        {"keyset": {"type": "string"}, "current": _KID_OR_NULL, "previous": _KID_OR_NULL, "next": _KID_OR_NULL},
        ["keyset", "current", "previous", "next"],
    ),
    "RevokeKeyRequest": _obj({"reason": {"allOf": [_ref("Reason"), {"minLength": 1}]}}, ["reason"]),
    "RevokeKeyResponse": _obj(
        {"keyset": {"type": "string"}, "revoked": {"type": "string"}, "current": _KID_OR_NULL, "next": _KID_OR_NULL},
        ["keyset", "revoked", "current", "next"],
    ),
    "ClientRequest": _obj(
        {
            "name": {"type": "string", "minLength": 1, "maxLength": MAX_CLIENT_NAME},
            "scopes": {
                "description": "a list, or one space-separated string",
                "oneOf": [
                    {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": SCOPE_TOKEN}},
                    {"type": "string", "pattern": "\\S"},
                ],
            },
            "audiences": {
                "description": "a list, or one space-separated string",
                "oneOf": [
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "string", "minLength": 1, "maxLength": MAX_AUDIENCE},
                    },
                    {"type": "string", "pattern": "\\S"},
                ],
            },
            "keyset": {"type": "string", "default": "default"},
            "token_ttl": {
                "allOf": [_ref("Duration")],
                "description": "at most the keyset's token_ttl (its default)",
            },
        },
        ["name", "scopes", "audiences"],
    ),
    "Client": _obj(
        {
            "client_id": {"type": "string"},
            "name": {"type": "string"},
            "scopes": {"type": "array", "items": {"type": "string"}},
            "audiences": {"type": "array", "items": {"type": "string"}},
            "keyset": {"type": "string"},
            "token_ttl": {"type": "string", "pattern": DURATION},
            "created_at": _TIME,
            "secret_created_at": _TIME,
            "secret_due_at": _TIME,
            "secret_overdue": {"type": "boolean"},
            "valid_secrets": {"type": "integer", "minimum": 0},
        },
        ["client_id", "name", "scopes", "audiences", "keyset", "token_ttl", "created_at"],
        closed=False,
    ),
    "CreatedClient": {
        "allOf": [
            _ref("Client"),
            {
                "type": "object",
                "properties": {"client_secret": {"type": "string", "pattern": "^[A-Za-z0-9_-]{43,}$"}},
                "required": ["client_secret"],
            },
        ],
    },
    "Clients": _obj({"clients": {"type": "array", "items": _ref("Client")}}, ["clients"]),
    "SecretRequest": _obj(
        {
            "grace": {
                "allOf": [_ref("Duration")],
                "description": "how long the old secrets keep working (default 24h); bounded, 400 beyond the bound",
            },
            "reason": _ref("Reason"),
        }
    ),
    "SecretResponse": _obj(
        {
            "client_id": {"type": "string"},
            "client_secret": {"type": "string", "pattern": "^[A-Za-z0-9_-]{43,}$"},
            "previous_secrets_expire_at": _TIME,
        },
        ["client_id", "client_secret", "previous_secrets_expire_at"],
    ),
    "AuditEvents": _obj(
        {
            "events": {
                "type": "array",
                "items": _obj(
                    {
                        "id": {"type": "integer"},
                        "at": _TIME,
                        "actor": {"type": "string"},
                        "action": {"type": "string"},
                        "target": {"type": "string"},
                        "outcome": {"type": "string"},
                        "reason": {"type": "string"},
                        "details": {"type": "object"},
                    },
                    ["id", "at", "actor", "action", "target", "outcome"],
                    closed=False,
                ),
            }
        },
        ["events"],
        closed=False,
    ),
}


_ERROR_RESPONSES = {
    "400": "BadRequest",
    "401-client": "ClientUnauthorized",
    "401-bearer": "BearerUnauthorized",
    "403": "Forbidden",
    "404": "NotFound",
    "409": "Conflict",
    "413": "TooLarge",
    "429": "TooManyRequests",
    "503": "Unavailable",
}


def _responses(ok: dict[str, Schema], *errors: str) -> dict[str, Schema]:
    """`ok` plus the named error responses ("401-client" and "401-bearer" say which 401)."""
    out = dict(ok)
    for name in errors:
        out[name[:3]] = {"$ref": f"#/components/responses/{_ERROR_RESPONSES[name]}"}
    return out


def _ok(description: str, schema: Schema | None = None, *, status: str = "200", **headers: str) -> dict[str, Schema]:
    out: Schema = {"description": description}
    if schema is not None:
        out["content"] = _json(schema)
    if headers:
        out["headers"] = {name.replace("_", "-"): _header(ref) for name, ref in headers.items()}
    return {status: out}


_PUBLIC = {"security": [], "tags": ["public"]}
_CLIENT_AUTH = {"security": [{"clientSecretBasic": []}, {}], "tags": ["oauth"]}
_ADMIN = {"security": [{"adminBearer": []}], "tags": ["admin"]}


def _form(schema: str) -> Schema:
    return {"required": True, "content": {FORM: {"schema": _ref(schema)}}}


def _admin_body(schema: str) -> Schema:
    return {
        "required": False,
        "description": "An empty body means every field at its default.",
        "content": _json(_ref(schema)),
    }


def _path_param(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


_ADMIN_ERRORS = ("401-bearer", "403", "503")

PATHS: dict[str, Schema] = {
    "/.well-known/jwks.json": {
        "get": {
            **_PUBLIC,
            "operationId": "getJwks",
            "summary": "The public keys of every key in next, current and previous (RFC 7517).",
            "parameters": [
                {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": {
                    "description": "The JWK Set.",
                    "headers": {"ETag": _header("ETag"), "Cache-Control": _header("Cache-Control")},
                    "content": {"application/jwk-set+json": {"schema": _ref("JWKS")}},
                },
                "304": {
                    "description": "`If-None-Match` matched the current ETag.",
                    "headers": {"ETag": _header("ETag"), "Cache-Control": _header("Cache-Control")},
                },
            },
        }
    },
    **{
        path: {
            "get": {
                **_PUBLIC,
                "operationId": operation_id,
                "summary": "Authorization server metadata (RFC 8414, OpenID Connect Discovery).",
                "responses": _ok("The metadata.", _ref("Metadata"), Cache_Control="Cache-Control"),
            }
        }
        for path, operation_id in (
            ("/.well-known/openid-configuration", "getOpenIdConfiguration"),
            ("/.well-known/oauth-authorization-server", "getOAuthMetadata"),
        )
    },
    "/keys/status": {
        "get": {
            **_PUBLIC,
            "operationId": "getKeyStatus",
            "summary": "Every published key with its validity window, and every revoked kid.",
            "responses": _ok("The key status.", _ref("KeyStatus"), Cache_Control="Cache-Control"),
        }
    },
    "/keys/events": {
        "get": {
            **_PUBLIC,
            "operationId": "getKeyEvents",
            "summary": "Server-Sent Events: one per key change (created, rotated, revoked, retired), with heartbeats.",
            "parameters": [
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "pattern": EVENT_ID},
                    "description": "resume after this event id",
                },
                {
                    "name": "last_event_id",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "pattern": EVENT_ID},
                    "description": "the same, for clients that cannot set headers",
                },
            ],
            "responses": _responses(
                {
                    "200": {
                        "description": "The event stream. Each event's data is "
                        '`{"type", "kid", "keyset", "alg", "revision", "at"}`; a `ready` event follows the replay.',
                        "headers": {"Cache-Control": _header("NoStore")},
                        "content": {"text/event-stream": {"schema": _ref("ServerSentEvent")}},
                    }
                },
                "400",
                "429",
                "503",
            ),
        }
    },
    "/healthz": {
        "get": {
            **_PUBLIC,
            "operationId": "getHealth",
            "summary": "200 while the process lives.",
            "responses": _ok("Alive.", _ref("Health")),
        }
    },
    "/readyz": {
        "get": {
            **_PUBLIC,
            "operationId": "getReadiness",
            "summary": "200 when the store is reachable and every keyset can sign.",
            "responses": {
                **_ok("Ready.", _ref("Ready")),
                "503": {"description": "Not ready, and why.", "content": _json(_ref("NotReady"))},
            },
        }
    },
    "/metrics": {
        "get": {
            **_PUBLIC,
            "operationId": "getMetrics",
            "summary": "Prometheus metrics of this process.",
            "responses": {
                "200": {
                    "description": "The Prometheus text exposition format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            **_PUBLIC,
            "operationId": "getOpenApi",
            "summary": "This document.",
            "responses": _ok("The OpenAPI 3.1 document.", {"type": "object"}),
        }
    },
    "/oauth/token": {
        "post": {
            **_CLIENT_AUTH,
            "operationId": "issueToken",
            "summary": "client_credentials grant (RFC 6749 §4.4); an RFC 9068 access token.",
            "requestBody": _form("TokenRequest"),
            "responses": _responses(
                _ok("The access token.", _ref("TokenResponse"), Cache_Control="NoStore"),
                "400",
                "401-client",
                "413",
                "429",
                "503",
            ),
        }
    },
    "/oauth/introspect": {
        "post": {
            **_CLIENT_AUTH,
            "operationId": "introspectToken",
            "summary": "Token introspection (RFC 7662): a client sees its own tokens, scope `introspect` any.",
            "requestBody": _form("TokenParameter"),
            "responses": _responses(
                _ok(
                    'Exactly `{"active": false}`, or the claims.',
                    _ref("IntrospectionResponse"),
                    Cache_Control="NoStore",
                ),
                "400",
                "401-client",
                "413",
                "429",
                "503",
            ),
        }
    },
    "/oauth/revoke": {
        "post": {
            **_CLIENT_AUTH,
            "operationId": "revokeToken",
            "summary": "Token revocation (RFC 7009): a client revokes its own tokens; 200 for any other token.",
            "requestBody": _form("TokenParameter"),
            "responses": _responses(
                _ok("Revoked, or nothing to revoke.", Cache_Control="NoStore"), "400", "401-client", "413", "429", "503"
            ),
        }
    },
    "/admin/keysets": {
        "get": {
            **_ADMIN,
            "operationId": "listKeysets",
            "summary": "Every keyset with its policy and keys.",
            "responses": _responses(_ok("The keysets.", _ref("Keysets")), *_ADMIN_ERRORS),
        }
    },
    "/admin/keysets/{name}/rotate": {
        "post": {
            **_ADMIN,
            "operationId": "rotateKeyset",
            "summary": "Rotate now: next becomes current; 409 when the next key is not published long enough.",
            "parameters": [{**_path_param("name", "the keyset"), "example": "default"}],
            "requestBody": _admin_body("RotateRequest"),
            "responses": _responses(
                _ok("The keyset's kids by role after the rotation.", _ref("RotateResponse")),
                "400",
                *_ADMIN_ERRORS,
                "404",
                "409",
                "413",
            ),
        }
    },
    "/admin/keys/{kid}/revoke": {
        "post": {
            **_ADMIN,
            "operationId": "revokeKey",
            "summary": "Emergency revocation of a key (API.md §2); idempotent.",
            "parameters": [_path_param("kid", "the key")],
            "requestBody": {"required": True, "content": _json(_ref("RevokeKeyRequest"))},
            "responses": _responses(
                _ok("The keyset after the revocation.", _ref("RevokeKeyResponse")),
                "400",
                *_ADMIN_ERRORS,
                "404",
                "409",
                "413",
            ),
        }
    },
    "/admin/clients": {
        "get": {
            **_ADMIN,
            "operationId": "listClients",
            "summary": "Every client (never a secret).",
            "responses": _responses(_ok("The clients.", _ref("Clients")), *_ADMIN_ERRORS),
        },
        "post": {
            **_ADMIN,
            "operationId": "createClient",
            "summary": "Register a client; its secret is generated here and returned once.",
            "requestBody": {"required": True, "content": _json(_ref("ClientRequest"))},
            "responses": _responses(
                _ok("The client and its secret.", _ref("CreatedClient"), status="201", Cache_Control="NoStore"),
                "400",
                *_ADMIN_ERRORS,
                "409",
                "413",
            ),
        },
    },
    "/admin/clients/{client_id}": {
        "parameters": [_path_param("client_id", "the client")],
        "get": {
            **_ADMIN,
            "operationId": "showClient",
            "summary": "One client (never its secret).",
            "responses": _responses(_ok("The client.", _ref("Client")), *_ADMIN_ERRORS, "404"),
        },
        "delete": {
            **_ADMIN,
            "operationId": "deleteClient",
            "summary": "Delete a client: its secrets stop working at once.",
            "responses": _responses({"204": {"description": "Deleted."}}, *_ADMIN_ERRORS, "404", "409"),
        },
    },
    "/admin/clients/{client_id}/secret": {
        "post": {
            **_ADMIN,
            "operationId": "rotateClientSecret",
            "summary": "A new secret, returned once; the old ones keep working for `grace`.",
            "parameters": [_path_param("client_id", "the client")],
            "requestBody": _admin_body("SecretRequest"),
            "responses": _responses(
                _ok("The new secret.", _ref("SecretResponse"), Cache_Control="NoStore"),
                "400",
                *_ADMIN_ERRORS,
                "404",
                "409",
                "413",
            ),
        }
    },
    "/admin/audit": {
        "get": {
            **_ADMIN,
            "operationId": "listAudit",
            "summary": "Audit events, newest first.",
            "parameters": [
                {
                    "name": "since",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "an RFC 3339 time with a zone, or seconds since the epoch",
                },
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_AUDIT_PAGE, "default": 100},
                },
            ],
            "responses": _responses(_ok("The events.", _ref("AuditEvents")), "400", *_ADMIN_ERRORS),
        }
    },
}


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "jwks-service",
        "version": __version__,
        "description": "Signing keys with overlapping rollover, a JWKS, and OAuth2 client_credentials. "
        'Every error body is `{"error", "error_description"}`; request bodies over '
        f"{MAX_BODY_BYTES} bytes get 413, unknown paths 404 and other methods 405, each with that body. "
        "OAuth endpoints take client_secret_basic (the `clientSecretBasic` scheme) or client_secret_post "
        "(`client_id` and `client_secret` in the form), never both. Admin endpoints take a bearer access "
        "token of this service with scope `admin` and audience = the issuer.",
        "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
    },
    "tags": [
        {"name": "public", "description": "Keys, metadata and health, for anyone."},
        {"name": "oauth", "description": "OAuth 2.0 for registered clients."},
        {"name": "admin", "description": "Key and client administration."},
    ],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "responses": RESPONSES,
        "headers": HEADERS,
        "securitySchemes": {
            "clientSecretBasic": {
                "type": "http",
                "scheme": "basic",
                "description": "client_secret_basic (RFC 6749 §2.3.1): id and secret form-urlencoded, then Base64.",
            },
            "adminBearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "An access token from POST /oauth/token with scope `admin` and audience = issuer.",
            },
        },
    },
}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document, as a fresh dict (a deep copy: callers may change theirs)."""
    return copy.deepcopy(DOCUMENT)


def render() -> bytes:
    return orjson.dumps(DOCUMENT)
