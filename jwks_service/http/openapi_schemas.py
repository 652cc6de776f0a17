"""The parts of the OpenAPI document that the operations refer to (http/openapi.py): the schemas of
the request and response bodies, the shared error responses and headers, and the limits the
handlers enforce, stated by name so that the document and the code cannot disagree."""

from __future__ import annotations

from typing import Any

from ..adoption import MAX_LAGGARDS
from ..algorithms import ALGORITHMS
from ..assertions import ASSERTION_TYPE, AUTH_METHODS, MAX_JWKS_URI_CHARS
from ..clients import _SCOPE_TOKEN
from ..configparts import _DURATION
from ..jwkset import MAX_KEYS
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


def ref(name: str) -> Schema:
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
# What an operator should fix while the service stays ready, in public wording (store_warnings).
_WARNINGS = {"type": "array", "items": {"type": "string"}}
# A share of the adoption window's fetchers: null when there is none (or for an unpublished key).
_SHARE = {"type": ["number", "null"], "minimum": 0, "maximum": 1}


def _typed(kind: str, *names: str) -> Schema:
    """Properties `names`, each of JSON type `kind`."""
    return {name: {"type": kind} for name in names}


def json_content(schema: Schema) -> Schema:
    return {JSON: {"schema": schema}}


def header(name: str) -> Schema:
    return {"$ref": f"#/components/headers/{name}"}


def _error(description: str, codes: list[str], *headers: str) -> Schema:
    schema = {"allOf": [ref("Error"), {"properties": {"error": {"enum": codes}}}]}
    out: Schema = {"description": description, "content": json_content(schema)}
    if headers:
        out["headers"] = {h: header(h) for h in headers}
    return out


_CLIENT_REQUEST_FIELDS: Schema = {
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
    "token_ttl": {
        "allOf": [ref("Duration")],
        "description": "at most the keyset's token_ttl (its default)",
    },
}

# How a client authenticates (RFC 7591 names): a secret, or private_key_jwt with its keys inline or at a URL.
_KEY_AUTH_FIELDS: Schema = {
    "token_endpoint_auth_method": {
        "enum": list(AUTH_METHODS),
        "default": "client_secret_basic",
        "description": "client_secret_basic (Basic or client_secret_post) or private_key_jwt (RFC 7523, no secret)",
    },
    "jwks": {
        "type": "object",
        "description": "private_key_jwt: the client's public keys, a JWK set (RFC 7517); or jwks_uri",
        "properties": {"keys": {"type": "array", "minItems": 1, "maxItems": MAX_KEYS, "items": {"type": "object"}}},
        "required": ["keys"],
    },
    "jwks_uri": {
        "type": "string",
        "format": "uri",
        "maxLength": MAX_JWKS_URI_CHARS,
        "description": "private_key_jwt: where the client publishes its JWK set (https, or http on loopback)",
    },
}


# Error responses, shared by reference. The codes are the ones errors.py and app.py produce.
RESPONSES: dict[str, Schema] = {
    "BadRequest": _error(
        "The request is malformed or names something the caller may not have.",
        ["invalid_request", "unsupported_grant_type", "invalid_scope", "invalid_target"],
    ),
    "ClientUnauthorized": _error(
        "Client authentication failed: unknown client, wrong secret, or none given. Same body and timing for "
        "each; `WWW-Authenticate: Basic` when Basic was tried (RFC 6749 §5.2). A refused private_key_jwt "
        "assertion says why in error_description.",
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
    "CORS": {"description": "`*`: any origin may read the document (CORS).", "schema": {"const": "*"}},
    "CSP": {"description": "The Content-Security-Policy of an HTML page.", "schema": {"type": "string"}},
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
    "JWKS": _obj({"keys": {"type": "array", "items": ref("JWK")}}, ["keys"]),
    "Metadata": _obj(
        {
            "issuer": {"type": "string", "format": "uri"},
            "jwks_uri": {"type": "string", "format": "uri"},
            "token_endpoint": {"type": "string", "format": "uri"},
            "introspection_endpoint": {"type": "string", "format": "uri"},
            "revocation_endpoint": {"type": "string", "format": "uri"},
            "grant_types_supported": {"type": "array", "items": {"const": "client_credentials"}},
            "response_types_supported": {"type": "array", "maxItems": 0, "description": "no authorization endpoint"},
            "token_endpoint_auth_methods_supported": {"type": "array", "items": {"type": "string"}},
            "introspection_endpoint_auth_methods_supported": {"type": "array", "items": {"type": "string"}},
            "revocation_endpoint_auth_methods_supported": {"type": "array", "items": {"type": "string"}},
            "access_token_signing_alg_values_supported": {"type": "array", "items": {"enum": _ALGS}},
            **{
                f"{endpoint}_endpoint_auth_signing_alg_values_supported": {
                    "type": "array",
                    "items": {"enum": _ALGS},
                    "description": "what private_key_jwt client assertions may be signed with",
                }
                for endpoint in ("token", "introspection", "revocation")
            },
            "scopes_supported": {"type": "array", "items": {"type": "string"}},
        },
        [
            "issuer",
            "jwks_uri",
            "token_endpoint",
            "response_types_supported",
            "grant_types_supported",
            "token_endpoint_auth_methods_supported",
        ],
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
                        "tainted": {"type": "boolean", "description": "marked suspect: verifies, never signs again"},
                        "adoption": _obj(
                            {"fetchers": {"type": "integer", "minimum": 0}, "share": _SHARE},
                            ["fetchers", "share"],
                        ),
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
            "waiting": {
                "type": "object",
                "description": "keysets whose due scheduled rotation waits for the adoption gate, and why",
                "additionalProperties": ref("GateState"),
            },
        },
        ["keys", "revoked"],
    ),
    "Health": _obj({"status": {"const": "ok"}}, ["status"]),
    "Ready": _obj(
        {
            "status": {"const": "ready"},
            "keysets": {"type": "array", "items": {"type": "string"}},
            "warnings": _WARNINGS,
        },
        ["status"],
    ),
    "NotReady": _obj(
        {
            "status": {"const": "unavailable"},
            "error": {"const": "not_ready"},
            "error_description": {"type": "string"},
            "problems": {"type": "object", "additionalProperties": {"type": "string"}},
            "warnings": _WARNINGS,
        },
        ["status", "error", "error_description"],
    ),
    "ClientCredentials": _obj(
        {
            "client_id": {"type": "string", "description": "client_secret_post; with Basic, it must match"},
            "client_secret": {"type": "string", "description": "client_secret_post; never together with Basic"},
            "client_assertion_type": {"const": ASSERTION_TYPE, "description": "private_key_jwt (RFC 7523 §2.2)"},
            "client_assertion": {
                "type": "string",
                "description": "private_key_jwt: a JWT signed with one of the client's keys: iss = sub = client_id, "
                "aud = the issuer or this endpoint's URL, exp at most 5 minutes ahead, a jti never used before",
            },
        },
        closed=False,
    ),
    "TokenRequest": {
        "allOf": [
            ref("ClientCredentials"),
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
            ref("ClientCredentials"),
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
                    **_typed("string", "kid", "keyset", "iss", "sub"),
                    "aud": {"type": ["string", "array"], "items": {"type": "string"}},
                    **_typed("number", "exp", "iat", "nbf"),
                    **_typed("string", "jti", "client_id", "scope"),
                    "key_tainted": {"const": True, "description": "signed by a key marked suspect (API.md §6)"},
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
            "event": {"enum": ["created", "rotated", "tainted", "revoked", "retired", "ready"]},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"oneOf": [ref("KeyEvent"), ref("ReadyEvent")]},
            },
            "retry": {"type": "integer", "minimum": 0},
        },
        ["event", "data"],
    ),
    "KeyEvent": _obj(
        {
            "type": {"enum": ["created", "rotated", "tainted", "revoked", "retired"]},
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
                                    "tainted_at": _TIME_OR_NULL,
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
    "RotateRequest": _obj({"force": {"type": "boolean", "default": False}, "reason": ref("Reason")}),
    "RotateResponse": _obj(
        {
            "keyset": {"type": "string"},
            "current": _KID_OR_NULL,
            "previous": _KID_OR_NULL,
            "next": _KID_OR_NULL,
            "laggards": ref("Laggards"),
        },
        ["keyset", "current", "previous", "next"],
    ),
    "RevokeKeyRequest": _obj({"reason": {"allOf": [ref("Reason"), {"minLength": 1}]}}, ["reason"]),
    "RevokeKeyResponse": _obj(
        {
            "keyset": {"type": "string"},
            "revoked": {"type": "string"},
            "current": _KID_OR_NULL,
            "next": _KID_OR_NULL,
            "laggards": ref("Laggards"),
        },
        ["keyset", "revoked", "current", "next"],
    ),
    "Adoption": _obj(
        {
            "keyset": {"type": "string"},
            "window": {"type": "integer", "minimum": 0, "description": "seconds: [adoption] window"},
            "fetchers": {"type": "integer", "minimum": 0, "description": "fetchers seen within the window"},
            "keys": {
                "type": "array",
                "items": _obj(
                    {
                        "kid": {"type": "string"},
                        "state": {"enum": _PUBLISHED},
                        "holding": {"type": "integer", "minimum": 0},
                        "share": _SHARE,
                    },
                    ["kid", "state", "holding", "share"],
                ),
            },
            "laggards": {
                "type": "array",
                "maxItems": MAX_LAGGARDS,
                "description": "fetchers that do not hold next, oldest fetch first",
                "items": _obj(
                    {"fetcher": {"type": "string"}, "revision": {"type": "string"}, "last_fetch": _TIME},
                    ["fetcher", "revision", "last_fetch"],
                ),
            },
            "laggard_count": {"type": "integer", "minimum": 0, "description": "every laggard, beyond the list too"},
        },
        ["keyset", "window", "fetchers", "keys", "laggards"],
    ),
    "TaintKeyResponse": _obj(
        {
            "keyset": {"type": "string"},
            "tainted": {"type": "string"},
            "current": _KID_OR_NULL,
            "next": _KID_OR_NULL,
            "laggards": ref("Laggards"),
        },
        ["keyset", "tainted", "current", "next"],
    ),
    "ClientRequest": _obj(
        {**_CLIENT_REQUEST_FIELDS, "keyset": {"type": "string", "default": "default"}, **_KEY_AUTH_FIELDS},
        ["name", "scopes", "audiences"],
    ),
    "ClientUpdate": {
        **_obj(
            {
                name: {**schema, "description": "replaces the client's " + name}
                for name, schema in _CLIENT_REQUEST_FIELDS.items()
            },
            [],
        ),
        "minProperties": 1,
    },
    "UpdatedClient": {
        "allOf": [
            ref("Client"),
            {
                "type": "object",
                "properties": {
                    "changed": {
                        "type": "array",
                        "items": {"enum": ["audiences", "name", "scopes", "token_ttl"]},
                        "description": "the fields this call changed (none: they were already so)",
                    }
                },
                "required": ["changed"],
            },
        ]
    },
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
            **_KEY_AUTH_FIELDS,
        },
        ["client_id", "name", "scopes", "audiences", "keyset", "token_ttl", "created_at"],
        closed=False,
    ),
    "CreatedClient": {
        "allOf": [
            ref("Client"),
            {
                "type": "object",
                "properties": {
                    "client_secret": {
                        "type": "string",
                        "pattern": "^[A-Za-z0-9_-]{43,}$",
                        "description": "shown this once; a private_key_jwt client has none",
                    }
                },
            },
        ],
    },
    "Clients": _obj({"clients": {"type": "array", "items": ref("Client")}}, ["clients"]),
    "SecretRequest": _obj(
        {
            "grace": {
                "allOf": [ref("Duration")],
                "description": "how long the old secrets keep working (default 24h); bounded, 400 beyond the bound",
            },
            "reason": ref("Reason"),
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
                        **_typed("string", "actor", "action", "target", "outcome", "reason"),
                        "details": {"type": "object"},
                        "prev": {
                            "type": "string",
                            "pattern": "^([0-9a-f]{64})?$",
                            "description": "SHA-256 (hex) of the previous event's canonical JSON; empty for the "
                            "first event, and for events written before the chain existed",
                        },
                    },
                    ["id", "at", "actor", "action", "target", "outcome", "prev"],
                    closed=False,
                ),
            },
            "next_cursor": {
                "type": ["string", "null"],
                "description": "pass as `cursor` for the next (older) page; null on the last page",
            },
        },
        ["events", "next_cursor"],
        closed=False,
    ),
}
