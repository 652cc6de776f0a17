"""`BearerAuthMiddleware` through Starlette's TestClient, with a fixed key set (no issuer to reach).

- WebSocket connections are authenticated like HTTP requests: no token or a bad one closes the
  handshake with 1008 (policy violation) before it is accepted, keys that cannot be had close it
  with 1013 (try again later), a valid token lets it through with its claims.
- Only ``lifespan`` passes without a token; an ASGI scope type the middleware does not know is
  refused rather than waved through.
- No failure of the verifier becomes a 500: introspection that refuses our credentials (or
  answers anything but a usable 200) is a 503 with a JSON body and ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from support import es256_keypair

from jwks_service.algorithms import ALGORITHMS
from jwks_service.crypto import make_signer
from jwks_service.jws import b64encode
from jwks_service.sdk import AsyncVerifier, IntrospectionUnavailableError, KeysUnavailableError, SDKError
from jwks_service.sdk.starlette import BearerAuthMiddleware

ISSUER = "https://issuer.example"
INTROSPECT = ISSUER + "/oauth/introspect"
HS256_TOKEN = b64encode(b'{"alg":"HS256","kid":"h1","typ":"at+jwt"}').decode() + ".e30.c2ln"


def mint(**claims: Any) -> str:
    private, jwk = es256_keypair()
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "sub": "svc",
        "client_id": "svc",
        "aud": "api",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "j1",
        "scope": "read chat",
        **claims,
    }
    head = {"alg": "ES256", "kid": jwk["kid"], "typ": "at+jwt"}
    signing_input = b64encode(json.dumps(head).encode()) + b"." + b64encode(json.dumps(body).encode())
    return (signing_input + b"." + b64encode(make_signer(ALGORITHMS["ES256"], private)(signing_input))).decode()


async def chat(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json(
        {
            "client": websocket.user.client_id,
            "scopes": list(websocket.auth.scopes),
            "claims": websocket.state.claims,
        }
    )
    await websocket.close()


async def public_chat(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"authenticated": "user" in websocket.scope})
    await websocket.close()


async def orders(request: Request) -> JSONResponse:
    return JSONResponse({"client": request.user.client_id, "claims": request.state.claims})


def make_app(verifier: Any, **options: Any) -> Starlette:
    return Starlette(
        routes=[Route("/orders", orders), WebSocketRoute("/chat", chat), WebSocketRoute("/public-chat", public_chat)],
        middleware=[Middleware(BearerAuthMiddleware, verifier=verifier, **options)],
    )


def static_verifier() -> AsyncVerifier:
    return AsyncVerifier(ISSUER, "api", jwks={"keys": [es256_keypair()[1]]})


# ----- WebSocket ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "invalid_request"),
        ({"Authorization": "Basic Zm9vOmJhcg=="}, "invalid_token"),
        ({"Authorization": "Bearer not-a-token"}, "invalid_token"),
        ({"Authorization": f"Bearer {mint(aud='other')}"}, "invalid_token"),
        ({"Authorization": f"Bearer {mint(exp=1)}"}, "invalid_token"),
    ],
)
def test_websocket_without_a_valid_token_is_closed_with_1008_before_it_is_accepted(
    headers: dict[str, str], reason: str
) -> None:
    with TestClient(make_app(static_verifier())) as client:
        with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/chat", headers=headers):
            pytest.fail("the handshake was accepted")
        assert closed.value.code == 1008
        assert closed.value.reason.startswith(reason)
        assert len(closed.value.reason.encode()) <= 123  # RFC 6455 §5.5: a close frame's payload


def test_websocket_with_a_valid_token_is_accepted_and_its_claims_reach_the_endpoint() -> None:
    token = mint()
    with TestClient(make_app(static_verifier())) as client:
        with client.websocket_connect("/chat", headers={"Authorization": f"Bearer {token}"}) as ws:
            answer = ws.receive_json()
        http = client.get("/orders", headers={"Authorization": f"Bearer {token}"}).json()
    assert answer["client"] == "svc"
    assert answer["scopes"] == ["read", "chat"]
    assert answer["claims"] == http["claims"]  # the same claims as an HTTP request gets
    assert answer["claims"]["sub"] == "svc"


def test_websocket_on_a_public_path_needs_no_token() -> None:
    with TestClient(make_app(static_verifier(), public=["/public-chat"])) as client:
        with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/chat"):
            pytest.fail("the handshake was accepted")
        assert closed.value.code == 1008
        with client.websocket_connect("/public-chat") as ws:
            assert ws.receive_json() == {"authenticated": False}


def test_websocket_when_no_keys_can_be_had_is_closed_with_1013() -> None:
    verifier = AsyncVerifier(ISSUER, "api", jwks_uri="http://127.0.0.1:9/jwks", timeout=0.5)
    with TestClient(make_app(verifier)) as client:
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            client.websocket_connect("/chat", headers={"Authorization": f"Bearer {mint()}"}),
        ):
            pytest.fail("the handshake was accepted")
        assert closed.value.code == 1013  # RFC 6455 §7.4 registry: try again later (a 503, not a 401)
        assert closed.value.reason.startswith("temporarily_unavailable")
        client.portal.call(verifier.aclose)  # type: ignore[union-attr]


# ----- scope types ----------------------------------------------------------------------------


def test_lifespan_passes_through() -> None:
    started: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        message = await receive()
        started.append(message["type"])
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        started.append(message["type"])
        await send({"type": "lifespan.shutdown.complete"})

    with TestClient(BearerAuthMiddleware(inner, verifier=static_verifier())):
        pass
    assert started == ["lifespan.startup", "lifespan.shutdown"]


def test_an_unknown_scope_type_is_refused() -> None:
    reached: list[Scope] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope)

    async def receive() -> Message:
        return {"type": "webtransport.connect"}

    async def send(message: Message) -> None:
        raise AssertionError(f"sent {message}")

    middleware = BearerAuthMiddleware(inner, verifier=static_verifier())
    with pytest.raises(RuntimeError, match="webtransport"):
        asyncio.run(middleware({"type": "webtransport", "path": "/chat", "headers": []}, receive, send))
    assert reached == []


# ----- no verifier failure is a 500 -----------------------------------------------------------


def issuer_transport(introspection: httpx.Response | Exception) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(
                200, json={"issuer": ISSUER, "jwks_uri": ISSUER + "/jwks", "introspection_endpoint": INTROSPECT}
            )
        if str(request.url) == INTROSPECT:
            if isinstance(introspection, Exception):
                raise introspection
            return introspection
        return httpx.Response(404)

    return httpx.MockTransport(handle)


INTROSPECTION_FAILURES = {
    "401 (our secret rotated out)": httpx.Response(401, json={"error": "invalid_client"}),
    "403": httpx.Response(403, json={"error": "insufficient_scope"}),
    "400": httpx.Response(400, json={"error": "invalid_request"}),
    "404": httpx.Response(404),
    "302": httpx.Response(302, headers={"Location": "https://elsewhere.example/"}),
    "429": httpx.Response(429, headers={"Retry-After": "7"}),
    "500": httpx.Response(500),
    "503": httpx.Response(503, headers={"Retry-After": "12"}),
    "200 not JSON": httpx.Response(200, text="<html>maintenance</html>"),
    "200 not an object": httpx.Response(200, json=["active"]),
    "connection refused": httpx.ConnectError("connection refused"),
}


@pytest.mark.parametrize("answer", INTROSPECTION_FAILURES.values(), ids=INTROSPECTION_FAILURES.keys())
def test_every_introspection_failure_is_a_503_with_retry_after(answer: httpx.Response | Exception) -> None:
    http = httpx.AsyncClient(transport=issuer_transport(answer))
    verifier = AsyncVerifier(ISSUER, "api", introspection=("verifier", "old-secret"), http=http)
    with TestClient(make_app(verifier), raise_server_exceptions=False) as client:
        r = client.get("/orders", headers={"Authorization": f"Bearer {HS256_TOKEN}"})
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.json()["error"] == "temporarily_unavailable"
        assert "introspection" in r.json()["error_description"]
        assert int(r.headers["retry-after"]) >= 1
        if isinstance(answer, httpx.Response) and "retry-after" in answer.headers:
            assert r.headers["retry-after"] == answer.headers["retry-after"]
        client.portal.call(http.aclose)  # type: ignore[union-attr]


def test_introspection_failures_are_typed() -> None:
    async def scenario() -> None:
        answer = httpx.Response(401, json={"error": "invalid_client"})
        async with httpx.AsyncClient(transport=issuer_transport(answer)) as http:
            verifier = AsyncVerifier(ISSUER, "api", introspection=("verifier", "old-secret"), http=http)
            with pytest.raises(IntrospectionUnavailableError, match="HTTP 401") as raised:
                await verifier.verify(HS256_TOKEN)
            assert isinstance(raised.value, KeysUnavailableError)  # `except KeysUnavailableError` still catches it

    asyncio.run(scenario())


def test_any_other_sdk_error_is_a_503_never_a_500() -> None:
    class Broken:
        async def verify(self, token: str) -> dict[str, Any]:
            raise SDKError("nothing foreseen")

    with TestClient(make_app(Broken()), raise_server_exceptions=False) as client:
        r = client.get("/orders", headers={"Authorization": f"Bearer {mint()}"})
        assert r.status_code == 503
        assert r.json() == {"error": "temporarily_unavailable", "error_description": "nothing foreseen"}
        assert r.headers["retry-after"] == "5"
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            client.websocket_connect("/chat", headers={"Authorization": f"Bearer {mint()}"}),
        ):
            pytest.fail("the handshake was accepted")
        assert closed.value.code == 1013
