"""The verifier SDK against the real service (issue 6, "How we will know").

Replicas are real `jwks-service serve` processes on one private Redis (tests/replicas.py):

- across scheduled rotations, a subscribed SDK verifies every valid token with at most one JWKS
  fetch per rotation (and an unsubscribed one verifies every token too);
- after an emergency revocation a subscribed SDK rejects the revoked kid within 1 s, an
  unsubscribed one within max-age;
- with the JWKS endpoint down, verification goes on from the cached set (stale-if-error, bounded);
- 10,000 tokens with random unknown kids cost at most a handful of fetches;
- `/keys/events`: live events across replicas, Last-Event-ID resume on another replica, heartbeats;
- the Starlette middleware, and introspection for an HMAC keyset.

Run with `pytest -s` to see the measured numbers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from replicas import Fleet, Policy, kid_of
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from support import free_port, make_settings, wait_until

from jwks_service.http.app import create_app
from jwks_service.sdk import (
    AsyncVerifier,
    CacheSettings,
    InactiveTokenError,
    InvalidTokenError,
    KeysUnavailableError,
    RevokedKeyError,
    UnknownKeyError,
    Verifier,
)
from jwks_service.sdk.sse import SSEParser
from jwks_service.sdk.starlette import BearerAuthMiddleware, require_scopes

pytestmark = pytest.mark.slow

# Rotation every 2 s, next key published 1 s ahead of signing (>= max_age + leeway).
ROTATING = Policy(max_age="1s", rotation_period="2s", prepublish="1s", token_ttl="10s", leeway="0s")
# Keys that stay put unless an administrator acts; max-age 2 s so "within max-age" is short.
STEADY = Policy(max_age="2s", rotation_period="1h", prepublish="2s", token_ttl="60s", leeway="0s")


@pytest.fixture
def fleet_factory(tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    fleets: list[Fleet] = []

    def make(policy: Policy, replicas: int = 1) -> Fleet:
        fleet = Fleet(tmp_path / f"fleet{len(fleets)}", policy, replicas=replicas)
        (tmp_path / f"fleet{len(fleets)}").mkdir()
        fleets.append(fleet)
        fleet.start()
        return fleet

    yield make
    for fleet in fleets:
        fleet.close()


@pytest.fixture(scope="module")
def steady(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path_factory.mktemp("steady"), STEADY, replicas=2)
    with fleet:
        yield fleet


def forged(token: str, kid: str) -> str:
    head = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    head["kid"] = kid
    h64 = base64.urlsafe_b64encode(json.dumps(head).encode()).rstrip(b"=").decode()
    return h64 + "." + token.split(".", 1)[1]


# ----- rotations ------------------------------------------------------------------------------


def test_every_token_verifies_across_scheduled_rotations_with_one_fetch_per_rotation(
    fleet_factory: Callable[..., Fleet],
) -> None:
    fleet = fleet_factory(ROTATING, replicas=2)
    issuer = fleet.issuer
    subscribed = Verifier(issuer, "api", events=True)
    polling = Verifier(issuer, "api")
    failures: list[str] = []
    kids: list[str] = []
    tokens = 0
    try:
        wait_until(lambda: subscribed.cache.subscribed, timeout=10)
        start_requests = subscribed.stats.jwks_requests
        deadline = time.monotonic() + 11.0  # ~5 rotations; bounded
        while time.monotonic() < deadline:
            token = fleet.token(fleet.pick())
            tokens += 1
            kid = kid_of(token)
            if not kids or kids[-1] != kid:
                kids.append(kid)
            for name, verifier in (("subscribed", subscribed), ("polling", polling)):
                try:
                    verifier.verify(token)
                except InvalidTokenError as exc:
                    failures.append(f"{name}: {type(exc).__name__}: {exc} ({kid})")
            time.sleep(0.01)
        rotations = len(kids) - 1
        used = subscribed.stats.jwks_requests - start_requests
        print(
            f"\n[sdk rotations] {tokens} tokens, {rotations} rotations; subscribed: {used} JWKS requests "
            f"during the run ({subscribed.stats.jwks_requests} in all, {subscribed.stats.events_received} events, "
            f"{subscribed.stats.unknown_kid_refetches} unknown-kid refetches); polling (max-age 1 s): "
            f"{polling.stats.jwks_requests} requests ({polling.stats.jwks_downloads} downloads, "
            f"{polling.stats.jwks_not_modified} not modified, {polling.stats.unknown_kid_refetches} unknown-kid)"
        )
        assert not failures, failures[:5]
        assert rotations >= 4
        # A rotation is one publication. The window can also hold the publication of the key that
        # signs after it ends (published `prepublish` ahead), so it may see one more than it counts.
        assert used <= rotations + 1, f"{used} JWKS requests for {rotations} rotations"
        assert subscribed.stats.unknown_kid_refetches == 0
        assert polling.stats.unknown_kid_refetches == 0  # prepublish >= max-age: never a surprise kid
    finally:
        subscribed.close()
        polling.close()


# ----- revocation -----------------------------------------------------------------------------


def test_revoked_kid_is_rejected_within_1s_subscribed_and_within_max_age_unsubscribed(steady: Fleet) -> None:
    r1, r2 = steady.replicas
    subscribed = Verifier(steady.issuer, "api", events=True, events_uri=r2.url("/keys/events"))
    polling = Verifier(steady.issuer, "api")
    try:
        wait_until(lambda: subscribed.cache.subscribed, timeout=10)
        token = steady.token(r1)
        old_kid = kid_of(token)
        assert subscribed.verify(token) and polling.verify(token)
        revoked_at = time.monotonic()
        r = steady.admin_post(r1, f"/admin/keys/{old_kid}/revoke", {"reason": "sdk test: key leaked"})
        assert r.status_code == 200, r.text

        def refused(verifier: Verifier) -> bool:
            try:
                verifier.verify(token)
            except (RevokedKeyError, UnknownKeyError):
                return True
            return False

        answered = time.monotonic() - revoked_at
        wait_until(lambda: refused(subscribed), timeout=5, interval=0.002)
        pushed = time.monotonic() - revoked_at
        wait_until(lambda: refused(polling), timeout=10, interval=0.02)
        polled = time.monotonic() - revoked_at
        print(
            f"\n[sdk revocation] from the revoke call (answered in {answered * 1000:.0f} ms by replica1): "
            f"subscribed SDK (events from replica2) rejects the kid after {pushed * 1000:.0f} ms; "
            f"unsubscribed after {polled * 1000:.0f} ms (max-age 2 s)"
        )
        assert pushed < 1.0
        assert polled < 2.0 + 0.5  # max-age plus one fetch
        with pytest.raises(RevokedKeyError):
            subscribed.verify(token)
        # The replacement key signs at once and both verifiers accept its tokens.
        fresh = steady.token(r2)
        assert kid_of(fresh) != old_kid
        assert subscribed.verify(fresh) and polling.verify(fresh)
    finally:
        subscribed.close()
        polling.close()


# ----- unknown kids ---------------------------------------------------------------------------


def test_ten_thousand_random_unknown_kids_cost_a_handful_of_fetches(steady: Fleet) -> None:
    verifier = Verifier(steady.issuer, "api")
    try:
        token = steady.token(steady.replicas[0])
        assert verifier.verify(token)
        before = verifier.stats.jwks_requests
        refused = 0
        start = time.perf_counter()
        for _ in range(10_000):
            try:
                verifier.verify(forged(token, secrets.token_urlsafe(16)))
            except UnknownKeyError:
                refused += 1
        elapsed = time.perf_counter() - start
        fetches = verifier.stats.jwks_requests - before
        print(f"\n[sdk unknown kids] 10000 forged kids refused in {elapsed:.2f} s with {fetches} JWKS fetches")
        assert refused == 10_000
        assert fetches <= 5
        assert verifier.verify(token)  # the real key is still there
    finally:
        verifier.close()


# ----- the JWKS endpoint failing --------------------------------------------------------------


# The server says stale-if-error = prepublish - max_age - leeway = 4 s.
STALE_4S = Policy(max_age="2s", rotation_period="1h", prepublish="6s", token_ttl="60s", leeway="0s")


def test_verification_goes_on_from_the_cached_set_while_the_issuer_is_down(
    fleet_factory: Callable[..., Fleet],
) -> None:
    fleet = fleet_factory(STALE_4S)
    replica = fleet.replicas[0]
    # The SDK would allow 10 s; the server's stale-if-error (4 s) is the bound that applies.
    settings = CacheSettings(stale_if_error=10.0, backoff_min=0.2, backoff_max=0.5)
    verifier = Verifier(
        fleet.issuer, "api", jwks_uri=replica.url("/.well-known/jwks.json"), cache=settings, timeout=1.0
    )
    try:
        token = fleet.token(replica)
        assert verifier.verify(token)
        assert verifier.cache.stale_for == 4.0
        replica.kill()
        down_at = time.monotonic()
        ok = 0
        while time.monotonic() - down_at < 3.0:  # beyond max-age (2 s): the set is stale now
            assert verifier.verify(token)
            ok += 1
            time.sleep(0.01)
        assert verifier.stats.jwks_failures >= 1
        # Bounded: past max-age + the server's stale-if-error (2 + 4 s) nothing is vouched for any more.
        wait_until(lambda: _unavailable(verifier, token), timeout=6, interval=0.05)
        gave_up = time.monotonic() - down_at
        replica.start()
        replica.wait_ready()
        back = wait_until(lambda: bool(verifier.verify(token)), timeout=5, interval=0.05)
        print(
            f"\n[sdk issuer down] {ok} verifications from the stale set over 3 s; "
            f"{verifier.stats.jwks_failures} failed refreshes; KeysUnavailableError after {gave_up:.1f} s "
            f"(max-age 2 s + stale-if-error 4 s); verifying again {back:.2f} s after the issuer returned"
        )
        assert 5.5 <= gave_up <= 8.0
    finally:
        if not replica.running:
            replica.start()
            replica.wait_ready()
        verifier.close()


def _unavailable(verifier: Verifier, token: str) -> bool:
    try:
        verifier.verify(token)
    except KeysUnavailableError:
        return True
    return False


# ----- /keys/events ---------------------------------------------------------------------------


class EventReader:
    """A plain SSE client on a thread, collecting (event, id, data)."""

    def __init__(self, url: str, last_id: str | None = None) -> None:
        self.url = url
        self.events: list[tuple[str, str | None, dict[str, Any]]] = []
        self.comments = 0
        self.status = 0
        self._stop = False
        self.parser = SSEParser()
        self._headers = {"Accept": "text/event-stream"} | ({"Last-Event-ID": last_id} if last_id else {})
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with httpx.stream("GET", self.url, headers=self._headers, timeout=httpx.Timeout(5, read=30)) as r:
                self.status = r.status_code
                for line in r.iter_lines():
                    if self._stop:
                        return
                    if line.startswith(":"):
                        self.comments += 1
                    event = self.parser.feed(line)
                    if event is not None:
                        self.events.append((event.event, event.id, json.loads(event.data)))
        except httpx.HTTPError:
            pass

    def kinds(self, kid: str) -> list[str]:
        return [e for e, _, data in self.events if data.get("kid") == kid]

    def close(self) -> None:
        self._stop = True


def test_events_flow_across_replicas_and_resume_on_another_one(steady: Fleet) -> None:
    r1, r2 = steady.replicas
    reader = EventReader(r1.url("/keys/events"))
    try:
        wait_until(lambda: any(e == "ready" for e, _, _ in reader.events), timeout=5)
        assert reader.events[0][1] is not None  # a resume point even before any change
        before = set(steady.kids(r1))
        answers: list[httpx.Response] = []

        def rotated() -> bool:  # the prepublish gate (2 s) refuses a rotation right after start-up
            answers.append(steady.admin_post(r2, "/admin/keysets/default/rotate", {"reason": "sdk events test"}))
            return answers[-1].status_code == 200

        wait_until(rotated, timeout=10, interval=0.5)
        summary = answers[-1].json()
        latency = wait_until(lambda: "created" in reader.kinds(summary["next"]), timeout=5, interval=0.005)
        assert "rotated" in reader.kinds(summary["current"])
        print(f"\n[keys/events] rotation on replica2 seen on replica1's stream after {latency * 1000:.0f} ms")
        last_id = reader.parser.last_id
        assert last_id
    finally:
        reader.close()
    # While nobody listens: an emergency revocation on replica1.
    current = summary["current"]
    r = steady.admin_post(r1, f"/admin/keys/{current}/revoke", {"reason": "sdk events test"})
    assert r.status_code == 200, r.text
    resumed = EventReader(r2.url("/keys/events"), last_id=last_id)
    try:
        wait_until(lambda: any(e == "ready" for e, _, _ in resumed.events), timeout=5)
        kinds = [e for e, _, _ in resumed.events]
        assert "revoked" in resumed.kinds(current)
        assert kinds.index("revoked") < kinds.index("ready")  # replayed first
        ids = [i for _, i, _ in resumed.events if i]
        assert last_id not in ids
    finally:
        resumed.close()
    assert summary["next"] not in before  # the rotation published a new key, announced as "created"
    assert current not in steady.kids(r1)
    bad = httpx.get(r1.url("/keys/events"), headers={"Last-Event-ID": "not-an-id"}, timeout=5)
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_request"


def test_event_stream_heartbeats_and_ends_for_resume(tmp_path: Path) -> None:
    """An in-process server (real uvicorn) with a short heartbeat and stream lifetime."""
    settings = make_settings(tmp_path)
    app = create_app(settings, events_heartbeat=0.2)
    app.state.events.max_stream = 1.5
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200, timeout=10)
        start = time.monotonic()
        reader = EventReader(f"http://127.0.0.1:{port}/keys/events")
        reader._thread.join(timeout=5)
        lasted = time.monotonic() - start
        assert reader.status == 200
        assert not reader._thread.is_alive()  # the server ended the stream after max_stream
        assert 1.4 <= lasted < 4.0
        assert reader.comments >= 1 + 5  # the banner, then a heartbeat every 0.2 s
        assert [e for e, _, _ in reader.events] == ["ready"]
        r = httpx.get(f"http://127.0.0.1:{port}/keys/events", headers={"Last-Event-ID": "1-x"}, timeout=5)
        assert r.status_code == 200  # streaming responses: the 1.5 s lifetime ends it
        assert "event: ready" in r.text
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# ----- Starlette middleware -------------------------------------------------------------------


def test_starlette_middleware(steady: Fleet) -> None:
    verifier = AsyncVerifier(steady.issuer, "api")

    async def orders(request: Request) -> JSONResponse:
        claims = require_scopes(request, "read")
        return JSONResponse({"client": request.user.client_id, "scopes": request.auth.scopes, "sub": claims["sub"]})

    async def admin(request: Request) -> JSONResponse:
        require_scopes(request, "write")
        return JSONResponse({})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[Route("/orders", orders), Route("/admin", admin), Route("/health", health)],
        middleware=[Middleware(BearerAuthMiddleware, verifier=verifier, public=["/health"])],
    )
    token = steady.token(steady.replicas[0])
    with TestClient(app) as client:
        ok = client.get("/orders", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["client"] == steady.client_id
        assert "read" in ok.json()["scopes"]
        assert client.get("/health").status_code == 200
        missing = client.get("/orders")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
        bad = client.get("/orders", headers={"Authorization": f"Bearer {token[:-3]}abc"})
        assert bad.status_code == 401
        assert bad.headers["www-authenticate"].startswith('Bearer realm="api", error="invalid_token"')
        assert bad.json()["error"] == "invalid_token"
        basic = client.get("/orders", headers={"Authorization": "Basic Zm9vOmJhcg=="})
        assert basic.status_code == 401 and 'error="invalid_token"' in basic.headers["www-authenticate"]
        forbidden = client.get("/admin", headers={"Authorization": f"Bearer {token}"})
        assert forbidden.status_code == 403
        assert 'error="insufficient_scope"' in forbidden.headers["www-authenticate"]
        wrong_aud = steady.token_response(steady.replicas[0], audience=steady.issuer).json()["access_token"]
        refused = client.get("/orders", headers={"Authorization": f"Bearer {wrong_aud}"})
        assert refused.status_code == 401 and "audience" in refused.json()["error_description"]
        client.portal.call(verifier.aclose)  # type: ignore[union-attr]


def test_middleware_answers_503_when_no_keys_can_be_had() -> None:
    port = free_port()  # nothing listens here
    verifier = AsyncVerifier(f"http://127.0.0.1:{port}", "api", timeout=0.5)
    app = Starlette(routes=[], middleware=[Middleware(BearerAuthMiddleware, verifier=verifier)])
    token = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsiLCJ0eXAiOiJhdCtqd3QifQ.e30.c2ln"
    with TestClient(app) as client:
        r = client.get("/x", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 503
        assert r.json()["error"] == "temporarily_unavailable"
        assert int(r.headers["retry-after"]) >= 1


# ----- async verifier with events, and HMAC by introspection -----------------------------------


def test_async_verifier_follows_a_revocation(steady: Fleet) -> None:
    async def scenario() -> tuple[float, int]:
        async with AsyncVerifier(steady.issuer, "api", events=True) as verifier:
            token = steady.token(steady.replicas[0])
            assert await verifier.verify(token)
            for _ in range(500):
                if verifier.cache.subscribed:
                    break
                await asyncio.sleep(0.01)
            assert verifier.cache.subscribed
            kid = kid_of(token)
            r = await asyncio.to_thread(
                steady.admin_post, steady.replicas[1], f"/admin/keys/{kid}/revoke", {"reason": "async sdk test"}
            )
            assert r.status_code == 200, r.text
            start = time.monotonic()
            while time.monotonic() - start < 3:
                try:
                    await verifier.verify(token)
                except RevokedKeyError:
                    return time.monotonic() - start, verifier.stats.jwks_requests
                await asyncio.sleep(0.005)
            raise AssertionError("the async verifier kept accepting the revoked kid")

    took, requests = asyncio.run(scenario())
    print(f"\n[sdk async] revoked kid refused {took * 1000:.0f} ms after the revoke call returned")
    assert took < 1.0
    assert requests <= 4


def test_hmac_keyset_tokens_are_verified_by_introspection(fleet_factory: Callable[..., Fleet]) -> None:
    fleet = fleet_factory(Policy(alg="HS256", max_age="1s", rotation_period="1h", prepublish="1s", token_ttl="60s"))
    verifier = Verifier(fleet.issuer, "api", introspection=fleet.auth, introspection_cache=0)
    try:
        token = fleet.token(fleet.replicas[0])
        claims = verifier.verify(token)
        assert claims["client_id"] == fleet.client_id
        assert verifier.stats.introspections == 1
        assert verifier.stats.jwks_downloads == 0  # HMAC keys are never published; nothing fetched
        r = httpx.post(fleet.replicas[0].url("/oauth/revoke"), data={"token": token}, auth=fleet.auth, timeout=5)
        assert r.status_code == 200
        with pytest.raises(InactiveTokenError):
            verifier.verify(token)
        with pytest.raises(InvalidTokenError):
            verifier.verify(token[:-2] + "xx")
    finally:
        verifier.close()


def test_an_issuer_answering_garbage_is_unavailable_not_a_crash() -> None:
    """Metadata that is not JSON: KeysUnavailableError (a 503 for the middleware), with backoff."""
    import http.server

    hits: list[str] = []

    class Garbage(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = b"<html>maintenance</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    token = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsiLCJ0eXAiOiJhdCtqd3QifQ.e30.c2ln"
    try:
        with Verifier(base, "api") as verifier:
            for _ in range(20):
                with pytest.raises(KeysUnavailableError):
                    verifier.verify(token)
            assert len(hits) <= 2  # one attempt, then backoff: no request per verification
        with Verifier(base, "api", jwks_uri=base + "/jwks") as direct, pytest.raises(KeysUnavailableError):
            direct.verify(token)
        from jwks_service.sdk import TokenClient, TokenRequestError

        with TokenClient(base, "id", "secret") as client, pytest.raises(TokenRequestError):
            client.get()
    finally:
        server.shutdown()
        server.server_close()


def test_everything_works_when_events_are_unavailable(steady: Fleet) -> None:
    """An events endpoint that is missing (404) or unreachable: the SDK backs off and verifies by
    max-age alone."""
    r1 = steady.replicas[0]
    dead = f"http://127.0.0.1:{free_port()}/keys/events"
    for events_uri in (r1.url("/no-such-stream"), dead):
        with Verifier(steady.issuer, "api", events=True, events_uri=events_uri) as verifier:
            token = steady.token(r1)
            for _ in range(20):
                assert verifier.verify(token)["client_id"] == steady.client_id
            time.sleep(0.3)
            assert not verifier.cache.subscribed
            assert verifier.stats.events_connects == 0
            assert verifier.verify(steady.token(r1))
