"""Fetching the key set a private_key_jwt client publishes at its ``jwks_uri``: one bounded, blocking
HTTP GET (run it in a worker thread; `client_keys` runs it through the clients' StrangerGate).

Bounded every way a stranger's server could hold the service: the whole exchange must end within
FETCH_TIMEOUT (checked between chunks too, so a server dripping bytes cannot keep a thread), the body
is read while it streams and refused past MAX_JWKS_BYTES (a larger Content-Length before any of it),
it must come uncompressed (``Accept-Encoding: identity``: no compression bomb), and redirects are
not followed (the registered URL is the only place the service goes). Which URLs may be registered
is `assertions.check_jwks_uri`'s rule; the URL comes from the client's record, never from a request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import httpx

FETCH_TIMEOUT = 3.0
MAX_JWKS_BYTES = 64 * 1024  # MAX_KEYS RSA keys fit in well under this


class JwksFetchError(Exception):
    """The key set could not be fetched (unreachable, an error status, too large, too slow)."""

    def __init__(self, description: str, retry_after: float | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Fetched:
    """An answer: 200 with the body, or 304 (the set at `etag` is still current)."""

    status: int
    body: bytes
    etag: str | None
    cache_control: str | None


class JwksFetcher(Protocol):
    def __call__(self, url: str, etag: str | None) -> Fetched: ...


class HttpJwksFetcher:
    """`JwksFetcher` over one kept-alive httpx client (thread-safe), with the bounds above."""

    def __init__(self, timeout: float = FETCH_TIMEOUT, limit: int = MAX_JWKS_BYTES) -> None:
        self.timeout = timeout
        self.limit = limit
        self._http = httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False)

    def __call__(self, url: str, etag: str | None) -> Fetched:
        headers = {"Accept": "application/jwk-set+json, application/json", "Accept-Encoding": "identity"}
        if etag:
            headers["If-None-Match"] = etag
        deadline = time.monotonic() + self.timeout
        try:
            with self._http.stream("GET", url, headers=headers) as response:
                if response.status_code == 304:
                    return Fetched(304, b"", etag, response.headers.get("cache-control"))
                if response.status_code != 200:
                    retry = response.headers.get("retry-after", "")
                    raise JwksFetchError(
                        f"jwks_uri answered {response.status_code}", float(retry) if retry.isdigit() else None
                    )
                body = self._read(response, deadline)
                return Fetched(200, body, response.headers.get("etag"), response.headers.get("cache-control"))
        except httpx.HTTPError as exc:
            raise JwksFetchError(f"jwks_uri unreachable: {type(exc).__name__}: {exc}") from None

    def _read(self, response: httpx.Response, deadline: float) -> bytes:
        coding = response.headers.get("content-encoding", "identity").strip().lower()
        if coding not in ("", "identity"):
            raise JwksFetchError(f"jwks_uri answered with content coding {coding!r}; identity was asked for")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            raise JwksFetchError(f"jwks_uri's key set is larger than {self.limit} bytes")
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_raw():
            size += len(chunk)
            if size > self.limit:
                raise JwksFetchError(f"jwks_uri's key set is larger than {self.limit} bytes")
            if time.monotonic() > deadline:
                raise JwksFetchError(f"jwks_uri took longer than {self.timeout}s to answer")
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self._http.close()
