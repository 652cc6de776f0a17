"""The OpenAPI schemas of a keyset's plan (`GET /admin/keysets/{name}/plan`, plan.KeysetPlan.as_dict)
and of the status page, merged into the document by http/openapi.py."""

from __future__ import annotations

from .openapi_schemas import Schema, ref

_TIME = {"type": "string", "format": "date-time"}
_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
_KID_OR_NULL = {"type": ["string", "null"]}
_SHARE_OR_NULL = {"type": ["number", "null"], "minimum": 0, "maximum": 1}


def _obj(properties: Schema, required: list[str] | None = None) -> Schema:
    return {"type": "object", "properties": properties, "required": required or list(properties)}


_MOMENT = {
    "oneOf": [
        {"type": "null"},
        {**_obj({"at": _TIME, "planned": {"type": "boolean"}}), "additionalProperties": False},
    ],
    "description": "null where it does not apply; `planned`: foreseen by the schedule, not happened yet",
}

PLAN_SCHEMAS: dict[str, Schema] = {
    "KeysetPlan": _obj(
        {
            "keyset": {"type": "string"},
            "alg": {"type": "string"},
            "generated_at": _TIME,
            "published": {"type": "boolean", "description": "false for HMAC keysets (never in the JWKS)"},
            "policy": {"type": "object"},
            "keys": {"type": "array", "items": ref("KeyPlan")},
            "rotations": {
                "type": "array",
                "maxItems": 3,
                "description": "the next scheduled rotations, earliest first",
                "items": _obj(
                    {
                        "at": {**_TIME, "description": "the earliest moment; past while a due rotation waits"},
                        "promotes": _KID_OR_NULL,
                        "demotes": _KID_OR_NULL,
                        "waiting": {"type": "boolean", "description": "held by the adoption gate"},
                        "latest": _TIME_OR_NULL,
                    }
                ),
            },
            "gate": {
                "type": ["object", "null"],
                "description": "the adoption gate's state; null while adoption is not known",
            },
            "adoption": {
                "oneOf": [{"type": "null"}, _obj({"fetchers": {"type": "integer", "minimum": 0}})],
            },
            "forced_rotation_now": _obj(
                {
                    "promotes": _KID_OR_NULL,
                    "demotes": _KID_OR_NULL,
                    "refused_without_force": {"type": ["string", "null"]},
                    "unknown_kid_fetchers": {
                        "type": ["integer", "null"],
                        "minimum": 0,
                        "description": "fetchers that do not hold the key that would sign; null: not known",
                    },
                    "laggards": {
                        "type": "array",
                        "items": _obj(
                            {"fetcher": {"type": "string"}, "revision": {"type": "string"}, "last_fetch": _TIME}
                        ),
                    },
                    "last_token_expires_at": {
                        **_TIME_OR_NULL,
                        "description": "when the demoted key's last token stops verifying: now + token_ttl + leeway",
                    },
                    "retire_at": _TIME_OR_NULL,
                }
            ),
        }
    ),
    "KeyPlan": _obj(
        {
            "kid": {"type": "string"},
            "state": {"enum": ["next", "current", "previous", "retired", "revoked"]},
            "created_at": _TIME,
            "tainted": {"type": "boolean"},
            "tainted_at": _TIME_OR_NULL,
            "revoked_at": _TIME_OR_NULL,
            "published": _MOMENT,
            "signing": _MOMENT,
            "stop_signing": _MOMENT,
            "retire": _MOMENT,
            "share": _SHARE_OR_NULL,
        }
    ),
}
