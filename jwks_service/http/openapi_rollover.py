"""OpenAPI schemas of rollover intelligence (API.md §6): adoption, the promotion gate, laggards, the plan.

Kept apart from openapi_schemas.py (the rest of the document's schemas) so that each stays small;
openapi.py lists both under components.schemas.
"""

from __future__ import annotations

from .openapi_schemas import _TIME, _TIME_OR_NULL, Schema, _obj

ROLLOVER_SCHEMAS: dict[str, Schema] = {
    "GateState": _obj(
        {
            "open": {"type": "boolean"},
            "reason": {
                "enum": [
                    "off",
                    "not published",
                    "no next key",
                    "no fetchers",
                    "adopted",
                    "waiting",
                    "timed out",
                    "unknown",
                ]
            },
            "description": {"type": "string"},
            "required": {"type": "number", "minimum": 0, "maximum": 1},
            "share": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "fetchers": {"type": "integer", "minimum": 0},
            "due_at": _TIME_OR_NULL,
            "deadline": _TIME_OR_NULL,
        },
        ["open", "reason", "required", "share", "fetchers"],
    ),
    "Laggards": {
        "type": "array",
        "description": "JWKS fetchers that did not hold the key promoted now (API.md §6)",
        "items": _obj(
            {"fetcher": {"type": "string"}, "revision": {"type": "string"}, "last_fetch": _TIME},
            ["fetcher", "revision", "last_fetch"],
        ),
    },
}
