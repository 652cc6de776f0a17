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
from .limits import MAX_BODY_BYTES
from .openapi_plan import PLAN_SCHEMAS
from .openapi_rollover import ROLLOVER_SCHEMAS
from .openapi_schemas import (
    EVENT_ID,
    FORM,
    HEADERS,
    MAX_AUDIT_PAGE,
    RESPONSES,
    SCHEMAS,
    Schema,
    header,
    json_content,
    ref,
)

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
        out["content"] = json_content(schema)
    if headers:
        out["headers"] = {name.replace("_", "-"): header(target) for name, target in headers.items()}
    return {status: out}


_PUBLIC = {"security": [], "tags": ["public"]}
_CLIENT_AUTH = {"security": [{"clientSecretBasic": []}, {}], "tags": ["oauth"]}
_ADMIN = {"security": [{"adminBearer": []}], "tags": ["admin"]}


def _form(schema: str) -> Schema:
    return {"required": True, "content": {FORM: {"schema": ref(schema)}}}


def _admin_body(schema: str) -> Schema:
    return {
        "required": False,
        "description": "An empty body means every field at its default.",
        "content": json_content(ref(schema)),
    }


def _path_param(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


_ADMIN_ERRORS = ("401-bearer", "403", "503")
_CORS = {"Access-Control-Allow-Origin": header("CORS")}


def _preflight(operation_id: str) -> Schema:
    return {
        **_PUBLIC,
        "operationId": operation_id,
        "summary": "CORS preflight: any origin may GET this document, with If-None-Match (and JWKS-Verifier).",
        "responses": {"204": {"description": "Allowed.", "headers": _CORS}},
    }


def _key_action(operation_id: str, summary: str, what: str, response: str) -> Schema:
    """An admin action on one key by kid, with a required reason (revoke, taint)."""
    return {
        "post": {
            **_ADMIN,
            "operationId": operation_id,
            "summary": summary,
            "parameters": [_path_param("kid", "the key")],
            "requestBody": {"required": True, "content": json_content(ref("RevokeKeyRequest"))},
            "responses": _responses(
                _ok(f"The keyset after the {what}.", ref(response)), "400", *_ADMIN_ERRORS, "404", "409", "413"
            ),
        }
    }


PATHS: dict[str, Schema] = {
    "/.well-known/jwks.json": {
        "get": {
            **_PUBLIC,
            "operationId": "getJwks",
            "summary": "The public keys of every key in next, current and previous (RFC 7517).",
            "parameters": [
                {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}},
                {
                    "name": "JWKS-Verifier",
                    "in": "header",
                    "required": False,
                    "description": "Who fetches (API.md §6 adoption), e.g. `orders-api/1a2b3c4d`; without it, the"
                    " source address and User-Agent name the fetcher.",
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "200": {
                    "description": "The JWK Set.",
                    "headers": {"ETag": header("ETag"), "Cache-Control": header("Cache-Control"), **_CORS},
                    "content": {"application/jwk-set+json": {"schema": ref("JWKS")}},
                },
                "304": {
                    "description": "`If-None-Match` matched the current ETag.",
                    "headers": {"ETag": header("ETag"), "Cache-Control": header("Cache-Control"), **_CORS},
                },
            },
        },
        "options": _preflight("preflightJwks"),
    },
    **{
        path: {
            "get": {
                **_PUBLIC,
                "operationId": operation_id,
                "summary": "Authorization server metadata (RFC 8414, OpenID Connect Discovery).",
                "responses": _ok(
                    "The metadata.", ref("Metadata"), Cache_Control="Cache-Control", Access_Control_Allow_Origin="CORS"
                ),
            },
            "options": _preflight("preflight" + operation_id[3:]),
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
            "responses": _ok("The key status.", ref("KeyStatus"), Cache_Control="Cache-Control"),
        }
    },
    "/keys/events": {
        "get": {
            **_PUBLIC,
            "operationId": "getKeyEvents",
            "summary": "Server-Sent Events: one per key change (created, rotated, tainted, revoked, retired), with"
            " heartbeats.",
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
                        "headers": {"Cache-Control": header("NoStore")},
                        "content": {"text/event-stream": {"schema": ref("ServerSentEvent")}},
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
            "responses": _ok("Alive.", ref("Health")),
        }
    },
    "/readyz": {
        "get": {
            **_PUBLIC,
            "operationId": "getReadiness",
            "summary": "200 when the store is reachable and every keyset can sign.",
            "responses": {
                **_ok("Ready.", ref("Ready")),
                "503": {"description": "Not ready, and why.", "content": json_content(ref("NotReady"))},
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
                _ok("The access token.", ref("TokenResponse"), Cache_Control="NoStore"),
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
                    ref("IntrospectionResponse"),
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
            "responses": _responses(_ok("The keysets.", ref("Keysets")), *_ADMIN_ERRORS),
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
                _ok("The keyset's kids by role after the rotation.", ref("RotateResponse")),
                "400",
                *_ADMIN_ERRORS,
                "404",
                "409",
                "413",
            ),
        }
    },
    "/admin/keysets/{name}/adoption": {
        "get": {
            **_ADMIN,
            "operationId": "keysetAdoption",
            "summary": "Who holds which key (API.md §6): per published kid, how many of the window's JWKS fetchers"
            " hold it, and the fetchers that do not hold next (laggards), from every replica's records.",
            "parameters": [{**_path_param("name", "the keyset"), "example": "default"}],
            "responses": _responses(_ok("The keyset's adoption.", ref("Adoption")), *_ADMIN_ERRORS, "404"),
        }
    },
    "/admin/keys/{kid}/revoke": _key_action(
        "revokeKey", "Emergency revocation of a key (API.md §2); idempotent.", "revocation", "RevokeKeyResponse"
    ),
    "/admin/keys/{kid}/taint": _key_action(
        "taintKey",
        "Mark a current or previous key as suspect (API.md §6): it stops signing at once (a current key is"
        " replaced by next) and keeps verifying until its tokens expire or it is revoked; idempotent. 409 for"
        " a next, retired or revoked key.",
        "taint",
        "TaintKeyResponse",
    ),
    "/admin/clients": {
        "get": {
            **_ADMIN,
            "operationId": "listClients",
            "summary": "Every client (never a secret).",
            "responses": _responses(_ok("The clients.", ref("Clients")), *_ADMIN_ERRORS),
        },
        "post": {
            **_ADMIN,
            "operationId": "createClient",
            "summary": "Register a client; its secret is generated here and returned once.",
            "requestBody": {"required": True, "content": json_content(ref("ClientRequest"))},
            "responses": _responses(
                _ok("The client and its secret.", ref("CreatedClient"), status="201", Cache_Control="NoStore"),
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
            "responses": _responses(_ok("The client.", ref("Client")), *_ADMIN_ERRORS, "404"),
        },
        "patch": {
            **_ADMIN,
            "operationId": "updateClient",
            "summary": "Change a client's name, scopes, audiences or token_ttl (the fields given; the others stay). "
            "In force on every replica within 1 s; tokens issued before keep their claims until they expire.",
            "requestBody": {"required": True, "content": json_content(ref("ClientUpdate"))},
            "responses": _responses(
                _ok("The client as it is now, and the fields that changed.", ref("UpdatedClient")),
                "400",
                *_ADMIN_ERRORS,
                "404",
                "409",
                "413",
            ),
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
                _ok("The new secret.", ref("SecretResponse"), Cache_Control="NoStore"),
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
                {
                    "name": "cursor",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                    "description": "the `next_cursor` of the page before: the next, older events",
                },
            ],
            "responses": _responses(_ok("The events.", ref("AuditEvents")), "400", *_ADMIN_ERRORS),
        }
    },
    "/admin/keysets/{name}/plan": {
        "get": {
            **_ADMIN,
            "operationId": "getKeysetPlan",
            "summary": "Each key's published/signing/stop-signing/retire times (past and planned), the next three "
            "scheduled rotations, the adoption gate, and what a forced rotation now would do (API.md §6).",
            "parameters": [{**_path_param("name", "the keyset"), "example": "default"}],
            "responses": _responses(
                _ok("The plan.", ref("KeysetPlan"), Cache_Control="NoStore"), *_ADMIN_ERRORS, "404"
            ),
        }
    },
    "/status": {
        "get": {
            **_PUBLIC,
            "operationId": "getStatusPage",
            "summary": "An HTML page of every keyset: its keys on a timeline, the next rotation, adoption shares "
            "and the latest key events; public information only, no external assets, live from /keys/events.",
            "responses": {
                "200": {
                    "description": "The page.",
                    "headers": {"Cache-Control": header("Cache-Control"), "Content-Security-Policy": header("CSP")},
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
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
        "token of this service with scope `admin` and audience = the issuer. With `[http] admin_listen` "
        "configured, the admin endpoints and /metrics are served only on that listener, and only they are "
        "(404 elsewhere).",
        "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
    },
    "tags": [
        {"name": "public", "description": "Keys, metadata and health, for anyone."},
        {"name": "oauth", "description": "OAuth 2.0 for registered clients."},
        {"name": "admin", "description": "Key and client administration."},
    ],
    "paths": PATHS,
    "components": {
        "schemas": {**SCHEMAS, **ROLLOVER_SCHEMAS, **PLAN_SCHEMAS},
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
