"""The Vault exchange without I/O: what is sent, how each answer and failure maps, when it is sent again.

`vaultapi.Exchange` decides everything; here it is driven by hand with made-up answers, as the two
real drivers drive it with httpx's (blocking) and aiohttp's (on the event loop).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from jwks_service.errors import KeyValidationError, UnavailableError
from jwks_service.vaultapi import Exchange, VaultClient, VaultMountError, VaultPermissionError, VaultRequest, _stale

URL = "http://vault.test:8200"


@pytest.fixture
def client() -> Iterator[VaultClient]:
    client = VaultClient(URL, "s.token", timeout=2, namespace="team-a")
    yield client
    client.close()


def answer(exchange: Exchange, status: int, body: Any = None, location: str = "") -> None:
    """Hand `exchange` Vault's answer: JSON for a dict or list, text for bytes, nothing for None."""
    if body is None:
        exchange.receive(status, b"", "", location)
    elif isinstance(body, bytes):
        exchange.receive(status, body, "text/plain", location)
    else:
        exchange.receive(status, json.dumps(body).encode(), "application/json", location)


def sign_request() -> VaultRequest:
    return VaultRequest.post("transit/sign/jwks-a", "update", b'{"input":"eA=="}', replayable=True)


def test_the_request_carries_the_token_namespace_and_body(client: VaultClient) -> None:
    exchange = Exchange(client, sign_request())
    sent = exchange.next_request()
    assert sent is not None
    assert (sent.method, sent.url, sent.body) == (
        "POST",
        "http://vault.test:8200/v1/transit/sign/jwks-a",
        b'{"input":"eA=="}',
    )
    assert sent.headers == {
        "X-Vault-Request": "true",
        "X-Vault-Token": "s.token",
        "X-Vault-Namespace": "team-a",
        "Content-Type": "application/json",
    }
    client.token = "s.renewed"  # VaultAuth replaced it: the next request carries the new one
    login = Exchange(client, VaultRequest.post("auth/approle/login", "update", {"role_id": "r"}, anonymous=True))
    sent_login = login.next_request()
    assert sent_login is not None and "X-Vault-Token" not in sent_login.headers
    assert sent_login.body == b'{"role_id":"r"}'
    read = Exchange(client, VaultRequest.get("transit/keys/jwks-a")).next_request()
    assert read is not None and read.method == "GET" and read.headers["X-Vault-Token"] == "s.renewed"
    assert read.body is None and "Content-Type" not in read.headers


def test_answers_are_json_or_none(client: VaultClient) -> None:
    exchange = Exchange(client, sign_request())
    exchange.next_request()
    answer(exchange, 200, {"data": {"signature": "vault:v1:x"}})
    assert exchange.result == {"data": {"signature": "vault:v1:x"}}
    assert exchange.next_request() is None
    empty = Exchange(client, VaultRequest.post("transit/keys/k/config", "update", {}))
    empty.next_request()
    answer(empty, 204)
    assert empty.result is None and empty.next_request() is None
    garbled = Exchange(client, sign_request())
    garbled.next_request()
    with pytest.raises(UnavailableError, match="something other than JSON"):
        answer(garbled, 200, b"<html>")


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        (
            403,
            {"errors": ["1 error occurred:\n\t* permission denied\n\n"]},
            VaultPermissionError,
            "Vault permission denied on transit/sign/jwks-a: the token's policy must allow 'update' on that path",
        ),
        (401, None, VaultPermissionError, "Vault refused the token on transit/sign/jwks-a"),
        (404, {"errors": []}, KeyValidationError, "Vault has no transit/sign/jwks-a"),
        (
            400,
            {"errors": ["requested version for signing does not exist"]},
            KeyValidationError,
            "Vault refused transit/sign/jwks-a: requested version for signing does not exist",
        ),
        (405, b"unsupported", KeyValidationError, "Vault refused transit/sign/jwks-a: unsupported"),
        (
            500,
            {"errors": ["no such key  version"]},
            KeyValidationError,
            "Vault refused transit/sign/jwks-a: no such key version",
        ),
        (
            500,
            {"errors": ["storage is broken"]},
            UnavailableError,
            "Vault failed on transit/sign/jwks-a: storage is broken",
        ),
        (503, {"errors": ["Vault is sealed"]}, UnavailableError, f"Vault at {URL} is sealed or unavailable"),
        (429, b"", UnavailableError, "Vault failed on transit/sign/jwks-a: HTTP 429"),
        (502, b"bad\r\n gateway", UnavailableError, "Vault failed on transit/sign/jwks-a: bad gateway"),
    ],
)
def test_error_answers_map_to_service_errors(
    client: VaultClient, status: int, body: Any, error: type[UnavailableError | KeyValidationError], message: str
) -> None:
    exchange = Exchange(client, sign_request())
    exchange.next_request()
    with pytest.raises(error) as caught:
        answer(exchange, status, body)
    assert caught.type is error
    assert caught.value.description.startswith(message)
    if isinstance(caught.value, UnavailableError):
        assert caught.value.retry_after > 0
    assert exchange.next_request() is None  # never sent again


def test_absent_and_refused_may_be_answers(client: VaultClient) -> None:
    absent = Exchange(client, VaultRequest.get("transit/keys/jwks-new", absent_ok=True))
    absent.next_request()
    answer(absent, 404, {"errors": []})
    assert absent.result is None
    refused = Exchange(client, VaultRequest.post("transit/verify/k", "update", {}, refused_ok=True))
    refused.next_request()
    answer(refused, 400, {"errors": ["key version is disallowed by policy"]})
    assert refused.result is None
    missing = Exchange(client, VaultRequest.get("transit/keys/k", missing=" (is the engine mounted?)"))
    missing.next_request()
    with pytest.raises(KeyValidationError, match=r"^Vault has no transit/keys/k \(is the engine mounted\?\)$"):
        answer(missing, 404)


def test_a_stale_connection_costs_one_more_attempt_for_replayable_requests_only(client: VaultClient) -> None:
    exchange = Exchange(client, sign_request())
    first = exchange.next_request()
    exchange.fail(ConnectionResetError(), stale=True)
    second = exchange.next_request()
    assert first is not None and second == first
    with pytest.raises(UnavailableError, match=r"unreachable \(ConnectionResetError\)"):
        exchange.fail(ConnectionResetError(), stale=True)  # twice: Vault is the problem
    assert exchange.next_request() is None

    rotate = Exchange(client, VaultRequest.post("transit/keys/k/rotate", "update"))  # not replayable
    rotate.next_request()
    with pytest.raises(UnavailableError, match="unreachable"):
        rotate.fail(ConnectionResetError(), stale=True)
    for timed_out in (False, True):  # refused, or slow: Vault is down, no second try
        fresh = Exchange(client, sign_request())
        fresh.next_request()
        with pytest.raises(
            UnavailableError, match="did not answer transit/sign/jwks-a in time" if timed_out else "unreachable"
        ):
            fresh.fail(TimeoutError() if timed_out else ConnectionRefusedError(), timed_out=timed_out)
        assert fresh.next_request() is None


@pytest.mark.parametrize(
    ("failure", "stale"),
    [
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), True),
        (httpx.ReadError("reset"), True),
        (httpx.WriteError("broken pipe"), True),
        (httpx.ConnectError("refused"), False),
        (httpx.ReadTimeout("slow"), False),
        (aiohttp.ServerDisconnectedError(), True),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), True),
        (aiohttp.ClientConnectorError(None, OSError(111, "refused")), False),  # type: ignore[arg-type]
        (aiohttp.ServerTimeoutError(), False),
    ],
)
def test_what_the_drivers_count_as_a_stale_connection(failure: Exception, stale: bool) -> None:
    assert _stale(failure) is stale


def test_the_reason_names_the_root_cause(client: VaultClient) -> None:
    exchange = Exchange(client, sign_request())
    exchange.next_request()
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from exc
    except httpx.ConnectError as wrapped:
        with pytest.raises(
            UnavailableError, match=r"^Vault at http://vault.test:8200 is unreachable \(ConnectionRefusedError\)$"
        ):
            exchange.fail(wrapped)


def test_redirects_are_followed_a_few_times(client: VaultClient) -> None:
    exchange = Exchange(client, sign_request())
    exchange.next_request()
    answer(exchange, 307, b"", "http://active.test:8200/v1/transit/sign/jwks-a")
    sent = exchange.next_request()
    assert sent is not None and sent.url == "http://active.test:8200/v1/transit/sign/jwks-a"
    assert sent.method == "POST" and sent.body == b'{"input":"eA=="}'
    for _ in range(Exchange.MAX_REDIRECTS - 1):
        answer(exchange, 307, b"", "/v1/transit/sign/jwks-a")
        assert exchange.next_request() is not None
    with pytest.raises(UnavailableError, match="failed on transit/sign/jwks-a"):
        answer(exchange, 307, b"", "/v1/transit/sign/jwks-a")


def test_no_engine_at_the_mount_is_named_even_where_an_absent_key_is_an_answer(client: VaultClient) -> None:
    """Vault answers 404 both for a key that does not exist and for a path under no mount; only the
    wording tells them apart. A missing engine is never "no such key"."""
    unmounted = {"errors": ['no handler for route "transit/keys/k". route entry not found.']}
    for request in (
        VaultRequest.get("transit/keys/k", absent_ok=True, engine=("transit", "transit")),
        VaultRequest.post("transit/keys/k", "update", {}, engine=("transit", "transit")),
    ):
        exchange = Exchange(client, request)
        exchange.next_request()
        with pytest.raises(VaultMountError, match=r"^vault: transit engine not mounted at transit/ \(enable it"):
            answer(exchange, 404, unmounted)


def test_namespace_header_is_sent_when_configured() -> None:
    spaced = VaultClient.from_environment(URL, timeout=1, environ={}, namespace="team-a")
    from_env = VaultClient.from_environment(URL, timeout=1, environ={"VAULT_NAMESPACE": "org/team-b/"})
    try:
        assert spaced.headers(VaultRequest.get("x"))["X-Vault-Namespace"] == "team-a"
        assert from_env.headers(VaultRequest.get("x"))["X-Vault-Namespace"] == "org/team-b"
    finally:
        spaced.close()
        from_env.close()
