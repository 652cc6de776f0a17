"""Token clients for services that obtain tokens (OAuth 2.0 client_credentials, RFC 6749 §4.4).

The token is cached until shortly before it expires (``refresh_margin``: 10% of its lifetime, at
least 5 s and at most 60 s), and concurrent callers share one request. Answers are read under the
SDK's document bound while they stream; an ``https://`` issuer's metadata may not name an
``http://`` token endpoint (the client secret would go out in clear) unless the caller passes it as
``token_endpoint`` or sets ``allow_http=True``.

The exchange is one flow (`_Base._token_flow`, see `flows`): the two clients only drive it.

Taint (API.md §6): pass ``verifier=`` a `Verifier` or `AsyncVerifier` subscribed to ``/keys/events``
(``events=True``) and the client shares its subscription: a cached token whose ``kid`` the issuer has
marked suspect is dropped, and the next `get` fetches a fresh one, signed by the key that replaced it.
Every replica derives its events from the shared store, so this works whichever replica either
client talks to.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import threading
import time
from collections.abc import Callable, Collection, Generator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from .bounded import BodyTooLargeError, aread_bounded, read_bounded
from .cache import KeyCache
from .errors import TokenRequestError
from .flows import Answer, Request, arun, http_client, run, scheme


@dataclass(frozen=True, slots=True)
class Token:
    access_token: str
    expires_at: float  # by the client's clock
    refresh_at: float
    scope: str
    token_type: str
    kid: str = ""  # from the JWS header; "" when the token is not a JWS we can read


class _TaintWatch(Protocol):
    """What a token client needs of a verifier: the kids its events marked suspect."""

    cache: KeyCache
    events_enabled: bool


def _kid(token: str) -> str:
    head = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error):
        return ""
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else ""


def _margin(expires_in: float) -> float:
    return min(60.0, max(5.0, expires_in * 0.1))


def _unreachable(exc: Exception) -> TokenRequestError:
    if isinstance(exc, BodyTooLargeError):
        return TokenRequestError("server_error", exc.description)
    return TokenRequestError("temporarily_unavailable", f"token endpoint unreachable: {type(exc).__name__}: {exc}")


class _Base:
    """The options and the OAuth exchange both clients share; subclasses open their HTTP client."""

    def __init__(
        self,
        issuer: str | None,
        client_id: str,
        client_secret: str,
        *,
        token_endpoint: str | None = None,
        scope: str | Collection[str] | None = None,
        audience: str | None = None,
        auth_method: str = "client_secret_basic",
        allow_http: bool = False,
        timeout: float = 5.0,
        http: httpx.Client | httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        verifier: _TaintWatch | None = None,
    ) -> None:
        if not (issuer or token_endpoint):
            raise ValueError("pass issuer (its RFC 8414 metadata names the token endpoint) or token_endpoint")
        if auth_method not in ("client_secret_basic", "client_secret_post"):
            raise ValueError("auth_method is client_secret_basic or client_secret_post")
        self.issuer = issuer
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_endpoint = token_endpoint
        self.scope = scope if scope is None or isinstance(scope, str) else " ".join(scope)
        self.audience = audience
        self.auth_method = auth_method
        self.allow_http = allow_http
        self.clock = clock
        if verifier is not None and not verifier.events_enabled:
            # It would never hear of a taint: the token client would look protected and not be.
            raise ValueError("verifier= needs a verifier subscribed to the issuer's events (events=True, not jwks=)")
        self.verifier = verifier
        self.token: Token | None = None
        self.requests = 0
        self.tainted_drops = 0  # cached tokens dropped because their key was tainted
        self._own_http = http is None
        self._open(http, timeout)

    def _open(self, http: httpx.Client | httpx.AsyncClient | None, timeout: float) -> None:
        raise NotImplementedError

    def _metadata_url(self) -> str:
        assert self.issuer is not None
        return self.issuer.rstrip("/") + "/.well-known/oauth-authorization-server"

    def _accept_metadata(self, response: httpx.Response, body: bytes) -> str:
        try:
            document: Any = json.loads(body) if response.status_code == 200 else None
        except ValueError:
            document = None
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise TokenRequestError("server_error", f"no usable RFC 8414 metadata at {self.issuer}")
        endpoint = document.get("token_endpoint")
        if not isinstance(endpoint, str) or scheme(endpoint) not in ("https", "http"):
            raise TokenRequestError("server_error", "the issuer's metadata has no usable token_endpoint")
        if scheme(endpoint) == "http" and scheme(self.issuer or "") == "https" and not self.allow_http:
            raise TokenRequestError(
                "server_error",
                f"the issuer's metadata gives an http:// token_endpoint ({endpoint}) for an https:// issuer: refused "
                "as a downgrade (pass token_endpoint= yourself, or allow_http=True, to use it)",
            )
        self.token_endpoint = endpoint
        return endpoint

    def _request(self, endpoint: str) -> Request:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        if self.audience:
            form["audience"] = self.audience
        auth = None
        if self.auth_method == "client_secret_basic":
            auth = (self.client_id, self.client_secret)  # httpx form-urlencodes (RFC 6749 §2.3.1)
        else:
            form["client_id"] = self.client_id
            form["client_secret"] = self.client_secret
        return Request("POST", endpoint, f"the answer of {endpoint}", {"Accept": "application/json"}, form, auth)

    def _token_flow(self) -> Generator[Request, Answer, str]:
        """Discover the token endpoint (once), then ask it for a token."""
        try:
            endpoint = self.token_endpoint
            if not endpoint:
                url = self._metadata_url()
                endpoint = self._accept_metadata(*(yield Request("GET", url, f"the answer of {url}")))
            sent_at = self.clock()
            response, raw = yield self._request(endpoint)
        except (httpx.HTTPError, BodyTooLargeError) as exc:
            raise _unreachable(exc) from None
        return self._accept(response, raw, sent_at).access_token

    def _accept(self, response: httpx.Response, raw: bytes, sent_at: float) -> Token:
        self.requests += 1
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error", "") if isinstance(body, dict) else ""
            description = body.get("error_description", "") if isinstance(body, dict) else ""
            raise TokenRequestError(
                str(error or f"http_{response.status_code}"), str(description), response.status_code
            )
        access_token = body.get("access_token")
        expires_in = body.get("expires_in")
        if not isinstance(access_token, str) or not isinstance(expires_in, int | float) or expires_in <= 0:
            raise TokenRequestError("server_error", "the token response lacks access_token or expires_in")
        expires_at = sent_at + float(expires_in)  # from when we asked: never later than the server means
        token = Token(
            access_token,
            expires_at,
            expires_at - _margin(float(expires_in)),
            str(body.get("scope", "")),
            str(body.get("token_type", "Bearer")),
            _kid(access_token),
        )
        self.token = token
        return token

    def _cached(self) -> str | None:
        token = self.token
        if token is not None and self.clock() < token.refresh_at and not self._tainted(token):
            return token.access_token
        return None

    def _tainted(self, token: Token) -> bool:
        """Whether the verifier's events marked the key that signed `token` as suspect."""
        if self.verifier is None or token.kid not in self.verifier.cache.tainted:
            return False
        self.tainted_drops += 1
        self.token = None
        return True

    def invalidate(self) -> None:
        """Forget the cached token (e.g. after a 401 from the resource server)."""
        self.token = None


class TokenClient(_Base):
    """``TokenClient(issuer, client_id, client_secret, scope="read").get()`` → an access token."""

    http: httpx.Client

    def _open(self, http: httpx.Client | httpx.AsyncClient | None, timeout: float) -> None:
        self.http = http_client(http, httpx.Client, "TokenClient", timeout=timeout)
        self._lock = threading.Lock()

    def get(self) -> str:
        cached = self._cached()
        if cached is not None:
            return cached
        with self._lock:  # one request at a time; who waited takes the token it brought
            cached = self._cached()
            return cached if cached is not None else run(self._token_flow(), self._send)

    def _send(self, request: Request) -> Answer:
        with self.http.stream(request.method, request.url, **request.options()) as response:
            return response, read_bounded(response, request.what)

    def close(self) -> None:
        if self._own_http:
            self.http.close()

    def __enter__(self) -> TokenClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncTokenClient(_Base):
    """`TokenClient` for asyncio code: ``await client.get()``. Close with ``aclose``."""

    http: httpx.AsyncClient

    def _open(self, http: httpx.Client | httpx.AsyncClient | None, timeout: float) -> None:
        self.http = http_client(http, httpx.AsyncClient, "AsyncTokenClient", timeout=timeout)
        self._lock: asyncio.Lock | None = None

    async def get(self) -> str:
        cached = self._cached()
        if cached is not None:
            return cached
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            cached = self._cached()
            return cached if cached is not None else await arun(self._token_flow(), self._send)

    async def _send(self, request: Request) -> Answer:
        async with self.http.stream(request.method, request.url, **request.options()) as response:
            return response, await aread_bounded(response, request.what)

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    async def __aenter__(self) -> AsyncTokenClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
