"""Request body limit as plain ASGI middleware: 413 before a large body is read into memory."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InvalidRequestError, PayloadTooLargeError
from .responses import error_response

MAX_BODY_BYTES = 64 * 1024


class BodyLimitMiddleware:
    """Refuses a declared Content-Length over the limit at once; a chunked body that grows past it
    raises PayloadTooLargeError while being read, which the app's error handler answers with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name != b"content-length":
                continue
            if not value.isdigit():
                await error_response(InvalidRequestError("malformed Content-Length"))(scope, receive, send)
                return
            if int(value) > self.max_bytes:
                too_large = PayloadTooLargeError(f"request bodies are limited to {self.max_bytes} bytes")
                await error_response(too_large)(scope, receive, send)
                return
        seen = 0
        limit = self.max_bytes

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLargeError(f"request bodies are limited to {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)
