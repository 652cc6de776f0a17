"""JSON responses and the error body every failure uses (API.md §3)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from ..errors import JwksServiceError, TooManyRequestsError, UnavailableError

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(exc: JwksServiceError, headers: dict[str, str] | None = None) -> JSONResponse:
    out = dict(NO_STORE)
    if isinstance(exc, TooManyRequestsError | UnavailableError):
        out["Retry-After"] = str(exc.retry_after)
    if headers:
        out.update(headers)
    return JSONResponse(exc.as_dict(), status_code=exc.status, headers=out)


def error_body(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)
