"""private_key_jwt through the real app (API.md §8, RFC 7523 §2.2): the token, introspection and
revocation endpoints, the admin API's registration, the metadata, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from support import ISSUER, ClientKey, basic, make_settings

from jwks_service.cli import main
from jwks_service.model import Client
from jwks_service.runtime import Runtime

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
GRANT = {"grant_type": "client_credentials"}


@pytest.fixture(scope="module")
def key() -> ClientKey:
    return ClientKey("pk-1")


@pytest.fixture
def keyed(runtime: Runtime, key: ClientKey) -> Client:
    client, _ = runtime.clients.create(
        "keyed", ["read"], ["api"], auth_method="private_key_jwt", jwks={"keys": [key.jwk]}
    )
    return client


def assertion_form(assertion: str, **form: str) -> dict[str, str]:
    return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion, **form}


def test_token_with_an_assertion(http: TestClient, runtime: Runtime, keyed: Client, key: ClientKey) -> None:
    now = runtime.clock.now()
    for aud in (ISSUER, ISSUER + "/oauth/token"):
        r = http.post("/oauth/token", data=assertion_form(key.assertion(keyed.client_id, aud, now), **GRANT))
        assert r.status_code == 200, r.text
        assert r.json()["scope"] == "read"
    # with client_id in the form too (RFC 7523 §3 allows it)
    form = assertion_form(key.assertion(keyed.client_id, ISSUER, now), client_id=keyed.client_id, **GRANT)
    assert http.post("/oauth/token", data=form).status_code == 200


def test_a_replayed_assertion_is_refused(http: TestClient, runtime: Runtime, keyed: Client, key: ClientKey) -> None:
    form = assertion_form(key.assertion(keyed.client_id, ISSUER, runtime.clock.now()), **GRANT)
    assert http.post("/oauth/token", data=form).status_code == 200
    r = http.post("/oauth/token", data=form)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert "used before" in r.json()["error_description"]
    assert "www-authenticate" not in r.headers


@pytest.mark.parametrize(
    ("claims", "said"),
    [
        ({"aud": "https://elsewhere.example"}, "aud"),
        ({"sub": "other"}, "sub"),
        ({"exp_in": 3600}, "exp"),
        ({"exp_in": -120}, "expired"),
    ],
)
def test_bad_assertions_are_invalid_client(
    http: TestClient, runtime: Runtime, keyed: Client, key: ClientKey, claims: dict[str, object], said: str
) -> None:
    now = runtime.clock.now()
    extra = dict(claims)
    if "exp_in" in extra:
        extra["exp"] = now + float(str(extra.pop("exp_in")))
    r = http.post("/oauth/token", data=assertion_form(key.assertion(keyed.client_id, ISSUER, now, **extra), **GRANT))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert said in r.json()["error_description"]


def test_introspect_and_revoke_with_assertions(
    http: TestClient, runtime: Runtime, keyed: Client, key: ClientKey
) -> None:
    now = runtime.clock.now()
    token = http.post("/oauth/token", data=assertion_form(key.assertion(keyed.client_id, ISSUER, now), **GRANT))
    access = token.json()["access_token"]
    # aud may name the endpoint called
    form = assertion_form(key.assertion(keyed.client_id, ISSUER + "/oauth/introspect", now), token=access)
    r = http.post("/oauth/introspect", data=form)
    assert r.status_code == 200 and r.json()["active"] is True and r.json()["client_id"] == keyed.client_id
    form = assertion_form(key.assertion(keyed.client_id, ISSUER + "/oauth/revoke", now), token=access)
    assert http.post("/oauth/revoke", data=form).status_code == 200
    form = assertion_form(key.assertion(keyed.client_id, ISSUER, now), token=access)
    assert http.post("/oauth/introspect", data=form).json() == {"active": False}
    # the introspection endpoint's URL is not an audience of the token endpoint
    form = assertion_form(key.assertion(keyed.client_id, ISSUER + "/oauth/introspect", now), **GRANT)
    assert http.post("/oauth/token", data=form).status_code == 401


def test_mixed_or_malformed_client_authentication_is_invalid_request(
    http: TestClient, runtime: Runtime, keyed: Client, key: ClientKey
) -> None:
    assertion = key.assertion(keyed.client_id, ISSUER, runtime.clock.now())
    client, secret = runtime.clients.create("secret", ["read"], ["api"])
    cases = [
        (assertion_form(assertion, **GRANT), basic(client.client_id, secret)),
        (assertion_form(assertion, client_secret=secret, **GRANT), None),
        ({"client_assertion_type": "urn:other", "client_assertion": assertion, **GRANT}, None),
        ({"client_assertion": assertion, **GRANT}, None),
        ({"client_assertion_type": ASSERTION_TYPE, **GRANT}, None),
    ]
    for form, headers in cases:
        r = http.post("/oauth/token", data=form, headers=headers)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", (form, r.text)


def test_a_keyed_client_cannot_use_a_secret(http: TestClient, keyed: Client) -> None:
    form = {"client_id": keyed.client_id, "client_secret": "", **GRANT}
    assert http.post("/oauth/token", data=form).status_code == 401


def test_metadata_lists_private_key_jwt(http: TestClient) -> None:
    meta = http.get("/.well-known/oauth-authorization-server").json()
    for endpoint in ("token", "introspection", "revocation"):
        assert "private_key_jwt" in meta[f"{endpoint}_endpoint_auth_methods_supported"]
        algs = meta[f"{endpoint}_endpoint_auth_signing_alg_values_supported"]
        assert {"ES256", "RS256", "PS256", "EdDSA"} <= set(algs) and not {"HS256", "none"} & set(algs)


def admin_headers(http: TestClient, runtime: Runtime) -> dict[str, str]:
    client, secret = runtime.clients.create("admin", ["admin"], [ISSUER])
    r = http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret))
    return {"Authorization": "Bearer " + r.json()["access_token"]}


def test_admin_api_registers_keyed_clients(http: TestClient, runtime: Runtime, key: ClientKey) -> None:
    headers = admin_headers(http, runtime)
    body = {
        "name": "by-api",
        "scopes": ["read"],
        "audiences": ["api"],
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [key.jwk]},
    }
    r = http.post("/admin/clients", json=body, headers=headers)
    assert r.status_code == 201, r.text
    created = r.json()
    assert "client_secret" not in created and "secret_due_at" not in created
    assert created["token_endpoint_auth_method"] == "private_key_jwt" and created["jwks"] == {"keys": [key.jwk]}
    uri = {**body, "jwks": None, "jwks_uri": "https://keys.example.com/jwks.json"}
    del uri["jwks"]
    r = http.post("/admin/clients", json=uri, headers=headers)
    assert r.status_code == 201 and r.json()["jwks_uri"] == "https://keys.example.com/jwks.json"
    for bad in (
        {**body, "jwks": {"keys": [{**key.jwk, "d": "x"}]}},
        {**body, "jwks_uri": "https://k.example/j"},
        {k: v for k, v in body.items() if k != "jwks"},
        {**{k: v for k, v in body.items() if k != "jwks"}, "jwks_uri": "http://keys.example.com/jwks"},
        {**body, "token_endpoint_auth_method": "client_secret_basic"},
    ):
        r = http.post("/admin/clients", json=bad, headers=headers)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", (bad, r.text)
    listed = http.get("/admin/clients", headers=headers).json()["clients"]
    by_name = {c["name"]: c for c in listed}
    assert by_name["by-api"]["token_endpoint_auth_method"] == "private_key_jwt"
    assert by_name["admin"]["token_endpoint_auth_method"] == "client_secret_basic"
    secret_path = f"/admin/clients/{created['client_id']}/secret"
    r = http.post(secret_path, json={}, headers=headers)
    assert r.status_code == 400 and "no secret" in r.json()["error_description"]


def test_cli_creates_keyed_clients(tmp_path: Path, key: ClientKey, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path)
    config = tmp_path / "jwks.toml"
    config.write_text(
        f'issuer = "{settings.issuer}"\n[store]\nurl = "{settings.store_url}"\n'
        f'[secrets]\nkek_file = "{settings.kek_file}"\n[keysets.default]\nalg = "ES256"\n'
    )
    jwks = tmp_path / "client-jwks.json"
    jwks.write_text(json.dumps({"keys": [key.jwk]}))
    common = ["clients", "create", "svc", "--scope", "read", "--audience", "api", "--config", str(config)]
    assert main([*common, "--auth", "private_key_jwt", "--jwks", str(jwks), "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["jwks"] == {"keys": [key.jwk]} and "client_secret" not in created
    assert main([*common, "--auth", "private_key_jwt", "--jwks-uri", "https://keys.example.com/j"]) == 0
    assert "private_key_jwt, with the keys at https://keys.example.com/j" in capsys.readouterr().out
    assert main([*common, "--auth", "private_key_jwt"]) != 0
    assert "exactly one" in capsys.readouterr().err
    assert main(["clients", "list", "--config", str(config)]) == 0
    assert capsys.readouterr().out.count("private_key_jwt") == 2
    assert main(["clients", "show", created["client_id"], "--config", str(config)]) == 0
    assert "private_key_jwt, with the keys given inline (1)" in capsys.readouterr().out
