"""Request body limit as plain ASGI middleware: 413 before a large body is read into memory; the
source a per-address limit counts."""

from __future__ import annotations

import ipaddress

from starlette.requests import HTTPConnection
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


def source_of(request: HTTPConnection) -> str:
    """What a per-source limit counts: the client's address (the peer, or what a trusted proxy says),
    an IPv6 one by its /64, since one host commonly holds a whole /64 and could otherwise take a new
    address per request."""
    return source_address(request.client.host if request.client else "unknown")


def source_address(host: str) -> str:
    """`source_of` for a peer's address as given (the JWKS endpoint reads it from the ASGI scope)."""
    if ":" not in host:  # IPv4 (or a name): as it is, with no parsing on the token endpoint's hot path
        return host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
