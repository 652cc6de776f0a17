"""ClientRegistry.authenticate_assertion_async and ClientKeys (private_key_jwt): the throttle and replay
cache around the rules, and a jwks_uri kept by the SDK's cache rules. A SQLite store in a temporary
folder, a manual clock, and a fetcher that stands in for the client's server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from support import ClientKey

from jwks_service.client_keys import ClientKeys
from jwks_service.clients import ClientRegistry
from jwks_service.clock import ManualClock
from jwks_service.errors import InvalidClientError, InvalidRequestError, TooManyRequestsError
from jwks_service.jwks_fetch import Fetched, JwksFetchError
from jwks_service.model import KeysetPolicy
from jwks_service.stores.sqlite import SQLiteStore
from jwks_service.throttle import MAX_FAILURES_PER_CLIENT_AND_ADDRESS

AUD = "https://auth.example.com"
URI = "https://keys.client.example/jwks.json"
ADDRESS = "192.0.2.7"


class ClientServer:
    """What the client publishes at its jwks_uri, and the requests the service made."""

    def __init__(self, *keys: ClientKey, max_age: int = 60) -> None:
        self.keys = list(keys)
        self.max_age = max_age
        self.fetches: list[tuple[str, str | None]] = []
        self.down = False

    def __call__(self, url: str, etag: str | None) -> Fetched:
        self.fetches.append((url, etag))
        if self.down:
            raise JwksFetchError("jwks_uri unreachable: ConnectError")
        body = json.dumps({"keys": [k.jwk for k in self.keys]}).encode()
        tag = f'"{len(body)}-{"-".join(k.kid for k in self.keys)}"'
        cache_control = f"max-age={self.max_age}"
        if etag == tag:
            return Fetched(304, b"", tag, cache_control)
        return Fetched(200, body, tag, cache_control)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_800_000_000.0)


def registry(tmp_path: Path, clock: ManualClock, server: ClientServer | None = None) -> ClientRegistry:
    store = SQLiteStore(tmp_path / "store.db")
    keysets = {"default": KeysetPolicy("default", "ES256")}
    return ClientRegistry(store, b"pepper" * 6, clock, keysets, ClientKeys(clock, server))


def authenticate(reg: ClientRegistry, assertion: str, client_id: str | None = None) -> Any:
    return asyncio.run(reg.authenticate_assertion_async(assertion, client_id, {AUD}, ADDRESS))


def test_inline_jwks_client_authenticates_once_per_assertion(tmp_path: Path, clock: ManualClock) -> None:
    key = ClientKey("k1")
    reg = registry(tmp_path, clock)
    client, secret = reg.create("svc", ["read"], ["api"], auth_method="private_key_jwt", jwks={"keys": [key.jwk]})
    assert secret == "" and client.secrets == () and client.auth_method == "private_key_jwt"
    assertion = key.assertion(client.client_id, AUD, clock.now())
    assert authenticate(reg, assertion).client_id == client.client_id
    assert authenticate(reg, key.assertion(client.client_id, AUD, clock.now()), client.client_id) is not None
    with pytest.raises(InvalidClientError, match="used before"):
        authenticate(reg, assertion)
    with pytest.raises(InvalidClientError, match="client_id differs"):
        authenticate(reg, key.assertion(client.client_id, AUD, clock.now()), "someone-else")


def test_a_keyed_client_has_no_secret_to_use_or_rotate(tmp_path: Path, clock: ManualClock) -> None:
    key = ClientKey("k1")
    reg = registry(tmp_path, clock)
    client, _ = reg.create("svc", ["read"], ["api"], auth_method="private_key_jwt", jwks={"keys": [key.jwk]})
    with pytest.raises(InvalidClientError):
        asyncio.run(reg.authenticate_async(client.client_id, "", ADDRESS))
    with pytest.raises(InvalidRequestError, match="no secret"):
        reg.rotate_secret(client.client_id, 0)
    # and a secret client cannot authenticate with an assertion
    secret_client, _ = reg.create("secret", ["read"], ["api"])
    with pytest.raises(InvalidClientError):
        authenticate(reg, key.assertion(secret_client.client_id, AUD, clock.now()))


def test_failed_assertions_are_throttled_like_secrets(tmp_path: Path, clock: ManualClock) -> None:
    key, stranger = ClientKey("k1"), ClientKey("k1")  # the stranger guesses the kid, not the key
    reg = registry(tmp_path, clock)
    client, _ = reg.create("svc", ["read"], ["api"], auth_method="private_key_jwt", jwks={"keys": [key.jwk]})
    for _ in range(MAX_FAILURES_PER_CLIENT_AND_ADDRESS):
        with pytest.raises(InvalidClientError, match="signature"):
            authenticate(reg, stranger.assertion(client.client_id, AUD, clock.now()))
    with pytest.raises(TooManyRequestsError):  # even the right key, from that address, for a while
        authenticate(reg, key.assertion(client.client_id, AUD, clock.now()))
    clock.advance(61)
    assert authenticate(reg, key.assertion(client.client_id, AUD, clock.now())).client_id == client.client_id


def test_unknown_client_and_garbage_are_refused(tmp_path: Path, clock: ManualClock) -> None:
    reg = registry(tmp_path, clock)
    with pytest.raises(InvalidClientError):
        authenticate(reg, ClientKey("k").assertion("no-such-client", AUD, clock.now()))
    with pytest.raises(InvalidClientError):
        authenticate(reg, "not-a-jwt")


def test_jwks_uri_rotation_and_cache_rules(tmp_path: Path, clock: ManualClock) -> None:
    old, new = ClientKey("old"), ClientKey("new")
    server = ClientServer(old, max_age=60)
    reg = registry(tmp_path, clock, server)
    client, _ = reg.create("svc", ["read"], ["api"], auth_method="private_key_jwt", jwks_uri=URI)
    cid = client.client_id
    assert server.fetches == []  # nothing is fetched at registration

    assert authenticate(reg, old.assertion(cid, AUD, clock.now())).client_id == cid
    assert authenticate(reg, old.assertion(cid, AUD, clock.now())).client_id == cid
    assert len(server.fetches) == 1  # fresh for max-age: fetched once

    # The client publishes its next key and signs with it: the unknown kid is fetched again (once
    # the cooldown since the last fetch passed), conditionally.
    server.keys = [old, new]
    clock.advance(3)
    assert authenticate(reg, new.assertion(cid, AUD, clock.now())).client_id == cid
    assert len(server.fetches) == 2 and server.fetches[1][1] is not None  # If-None-Match sent

    # A kid nobody published does not make the service fetch on every request.
    for _ in range(3):
        with pytest.raises(InvalidClientError):
            authenticate(reg, ClientKey("forged").assertion(cid, AUD, clock.now()))
    assert len(server.fetches) == 2

    # The old key is removed: it stops working once the set's max-age has passed.
    server.keys = [new]
    assert authenticate(reg, old.assertion(cid, AUD, clock.now())).client_id == cid  # still cached
    clock.advance(61)
    with pytest.raises(InvalidClientError):
        authenticate(reg, old.assertion(cid, AUD, clock.now()))
    assert authenticate(reg, new.assertion(cid, AUD, clock.now())).client_id == cid


def test_jwks_uri_down_serves_the_last_good_set_for_a_while(tmp_path: Path, clock: ManualClock) -> None:
    key = ClientKey("k")
    server = ClientServer(key, max_age=10)
    reg = registry(tmp_path, clock, server)
    client, _ = reg.create("svc", ["read"], ["api"], auth_method="private_key_jwt", jwks_uri=URI)
    assert authenticate(reg, key.assertion(client.client_id, AUD, clock.now())) is not None
    server.down = True
    clock.advance(20)  # expired, and the refresh fails: the last good set serves (stale-if-error)
    assert authenticate(reg, key.assertion(client.client_id, AUD, clock.now())) is not None
    clock.advance(700)  # past the stale window: nothing usable
    with pytest.raises(InvalidClientError, match="jwks_uri"):
        authenticate(reg, key.assertion(client.client_id, AUD, clock.now()))


def test_a_jwks_uri_never_fetched_while_down_refuses(tmp_path: Path, clock: ManualClock) -> None:
    server = ClientServer(ClientKey("k"))
    server.down = True
    reg = registry(tmp_path, clock, server)
    client, _ = reg.create("svc", ["read"], ["api"], auth_method="private_key_jwt", jwks_uri=URI)
    with pytest.raises(InvalidClientError, match="jwks_uri"):
        authenticate(reg, ClientKey("k").assertion(client.client_id, AUD, clock.now()))


def test_registration_checks_the_key_source(tmp_path: Path, clock: ManualClock) -> None:
    reg = registry(tmp_path, clock)
    with pytest.raises(InvalidRequestError, match="jwks_uri"):
        reg.create("svc", ["read"], ["api"], auth_method="private_key_jwt", jwks_uri="http://keys.example/jwks")
    with pytest.raises(InvalidRequestError, match="exactly one"):
        reg.create("svc", ["read"], ["api"], auth_method="private_key_jwt")
    assert reg.read_all() == []
