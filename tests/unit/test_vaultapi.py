"""The Vault exchange without I/O: what is sent, how each answer and failure maps, when it is sent again.

`vaultapi.Exchange` decides everything; here it is driven by hand with made-up answers, as the two
real drivers (blocking and on the event loop) drive it with httpcore's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpcore
import pytest

from jwks_service.errors import KeyValidationError, UnavailableError
from jwks_service.vaultapi import Exchange, VaultClient, VaultPermissionError, VaultRequest

URL = "http://vault.test:8200"


@pytest.fixture
def client() -> Iterator[VaultClient]:
    client = VaultClient(URL, "s.token", timeout=2, namespace="team-a")
    yield client
    client.close()


def answer(status: int, body: Any = None, headers: list[tuple[bytes, bytes]] | None = None) -> httpcore.Response:
    if body is None:
        content, kind = b"", []
    elif isinstance(body, bytes):
        content, kind = body, [(b"Content-Type", b"text/plain")]
    else:
        content, kind = json.dumps(body).encode(), [(b"Content-Type", b"application/json")]
    response = httpcore.Response(status, headers=kind + (headers or []), content=content)
    response.read()
    return response


def sign_request() -> VaultRequest:
    return VaultRequest.post("transit/sign/jwks-a", "update", b'{"input":"eA=="}', replayable=True)


def headers(request: httpcore.Request) -> dict[bytes, bytes]:
    return dict(request.headers)


def test_the_request_carries_the_token_namespace_and_body(client: VaultClient) -> None:
    exchange = Exchange(client, sign_request())
    sent = exchange.next_request()
    assert sent is not None
    assert sent.method == b"POST" and bytes(sent.url) == b"http://vault.test:8200/v1/transit/sign/jwks-a"
    assert headers(sent) == {
        b"Host": b"vault.test:8200",
        b"X-Vault-Request": b"true",
        b"X-Vault-Token": b"s.token",
        b"X-Vault-Namespace": b"team-a",
        b"Content-Type": b"application/json",
        b"Content-Length": b"16",
    }
    client.token = "s.renewed"  # VaultAuth replaced it: the next request carries the new one
    login = Exchange(client, VaultRequest.post("auth/approle/login", "update", {"role_id": "r"}, anonymous=True))
    sent_login = login.next_request()
    assert sent_login is not None and b"X-Vault-Token" not in headers(sent_login)
    read = Exchange(client, VaultRequest.get("transit/keys/jwks-a")).next_request()
    assert read is not None and read.method == b"GET" and headers(read)[b"X-Vault-Token"] == b"s.renewed"
    assert b"Content-Length" not in headers(read)


def test_answers_are_json_or_none(client: VaultClient) -> None:
    exchange = Exchange(client, sign_request())
    exchange.next_request()
    exchange.receive(answer(200, {"data": {"signature": "vault:v1:x"}}))
    assert exchange.result == {"data": {"signature": "vault:v1:x"}}
    assert exchange.next_request() is None
    empty = Exchange(client, VaultRequest.post("transit/keys/k/config", "update", {}))
    empty.next_request()
    empty.receive(answer(204))
    assert empty.result is None and empty.next_request() is None
    garbled = Exchange(client, sign_request())
    garbled.next_request()
    with pytest.raises(UnavailableError, match="something other than JSON"):
        garbled.receive(answer(200, b"<html>"))


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
    client: VaultClient, status: int, body: Any, error: type[Exception], message: str
) -> None:
    exchange = Exchange(client, sign_request())
    exchange.next_request()
    with pytest.raises(error) as caught:
        exchange.receive(answer(status, body))
    assert caught.type is error
    assert str(caught.value.description).startswith(message)  # type: ignore[attr-defined]
    if isinstance(caught.value, UnavailableError):
        assert caught.value.retry_after > 0
    assert exchange.next_request() is None  # never sent again


def test_absent_and_refused_may_be_answers(client: VaultClient) -> None:
    absent = Exchange(client, VaultRequest.get("transit/keys/jwks-new", absent_ok=True))
    absent.next_request()
    absent.receive(answer(404, {"errors": []}))
    assert absent.result is None
    refused = Exchange(client, VaultRequest.post("transit/verify/k", "update", {}, refused_ok=True))
    refused.next_request()
    refused.receive(answer(400, {"errors": ["key version is disallowed by policy"]}))
    assert refused.result is None
    missing = Exchange(client, VaultRequest.get("transit/keys/k", missing=" (is the engine mounted?)"))
    missing.next_request()
    with pytest.raises(KeyValidationError, match=r"^Vault has no transit/keys/k \(is the engine mounted\?\)$"):
        missing.receive(answer(404))


def test_a_stale_connection_costs_one_more_attempt_for_replayable_requests_only(client: VaultClient) -> None:
    exchange = Exchange(client, sign_request())
    first = exchange.next_request()
    exchange.fail(httpcore.RemoteProtocolError("Server disconnected without sending a response."))
    second = exchange.next_request()
    assert first is not None and second is not None and bytes(second.url) == bytes(first.url)
    with pytest.raises(UnavailableError, match=r"unreachable \(RemoteProtocolError\)"):
        exchange.fail(httpcore.RemoteProtocolError("again"))  # twice: Vault is the problem
    assert exchange.next_request() is None

    rotate = Exchange(client, VaultRequest.post("transit/keys/k/rotate", "update"))  # not replayable
    rotate.next_request()
    with pytest.raises(UnavailableError, match="unreachable"):
        rotate.fail(httpcore.ReadError("reset"))
    for failure in (httpcore.ConnectError("refused"), httpcore.ReadTimeout("slow")):
        fresh = Exchange(client, sign_request())
        fresh.next_request()
        with pytest.raises(UnavailableError, match="in time" if "Timeout" in type(failure).__name__ else "unreachable"):
            fresh.fail(failure)  # Vault down or slow: no second try


def test_the_reason_names_the_root_cause(client: VaultClient) -> None:
    exchange = Exchange(client, sign_request())
    exchange.next_request()
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
    except httpcore.ConnectError as wrapped:
        with pytest.raises(
            UnavailableError, match=r"^Vault at http://vault.test:8200 is unreachable \(ConnectionRefusedError\)$"
        ):
            exchange.fail(wrapped)


def test_redirects_are_followed_a_few_times(client: VaultClient) -> None:
    exchange = Exchange(client, sign_request())
    exchange.next_request()
    exchange.receive(answer(307, b"", [(b"Location", b"http://active.test:8200/v1/transit/sign/jwks-a")]))
    sent = exchange.next_request()
    assert sent is not None and bytes(sent.url) == b"http://active.test:8200/v1/transit/sign/jwks-a"
    assert headers(sent)[b"Host"] == b"active.test:8200" and sent.method == b"POST"
    for _ in range(Exchange.MAX_REDIRECTS - 1):
        exchange.receive(answer(307, b"", [(b"Location", b"/v1/transit/sign/jwks-a")]))
        assert exchange.next_request() is not None
    with pytest.raises(UnavailableError, match="failed on transit/sign/jwks-a"):
        exchange.receive(answer(307, b"", [(b"Location", b"/v1/transit/sign/jwks-a")]))
