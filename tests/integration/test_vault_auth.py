"""Logging in to a real OpenBao dev server (token file, VAULT_TOKEN, AppRole) and keeping the token alive.

Tokens here live 3 s: the renewal thread must renew them, and with AppRole log in again once the
token's max TTL (6 s) is near, while the service keeps signing with its Vault keyset.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac.exceptions
import jwt
import pytest
from starlette.testclient import TestClient
from support import ISSUER, PROJECT_ROOT, basic, free_port, make_settings, wait_until

from jwks_service.errors import ConfigError
from jwks_service.http import create_app
from jwks_service.runtime import Runtime, build_runtime

POLICY_FILE = PROJECT_ROOT / "deploy" / "vault-policy.hcl"
GRANT = {"grant_type": "client_credentials"}


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture(autouse=True)
def no_vault_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID", "VAULT_ADDR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def policy(openbao: Any) -> str:
    """deploy/vault-policy.hcl as a policy on the server: the only one the service's tokens hold."""
    name = unique("jwks-service")
    openbao.client().sys.create_or_update_policy(name, POLICY_FILE.read_text())
    return name


@dataclass
class AppRole:
    mount: str
    role_id: str
    secret_id: str


@pytest.fixture(scope="module")
def approle(openbao: Any, policy: str) -> AppRole:
    """An AppRole auth method (at a mount of its own) whose tokens live 3 s, 6 s at most."""
    root = openbao.client()
    mount = unique("approle")
    root.sys.enable_auth_method("approle", path=mount)
    root.auth.approle.create_or_update_approle(
        "jwks-service",
        token_ttl="3s",
        token_max_ttl="6s",
        token_policies=[policy],
        token_no_default_policy=True,
        mount_point=mount,
    )
    role_id = root.auth.approle.read_role_id("jwks-service", mount_point=mount)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("jwks-service", mount_point=mount)["data"]["secret_id"]
    return AppRole(mount, role_id, secret_id)


@pytest.fixture
def runtimes(tmp_path: Path) -> Iterator[Callable[..., Runtime]]:
    opened: list[Runtime] = []

    def make(keysets: dict[str, dict[str, Any]], **extra: Any) -> Runtime:
        rt = build_runtime(make_settings(tmp_path, keysets, **extra))
        opened.append(rt)
        return rt

    yield make
    for rt in opened:
        rt.close()


def issue_and_verify(rt: Runtime, keyset: str) -> str:
    """A token from the keyset through the HTTP API, verified by PyJWT against the JWKS."""
    client, secret = rt.clients.create(unique("svc"), ["read"], ["api"], keyset=keyset)
    http = TestClient(create_app(runtime=rt, background=False), base_url=ISSUER)
    r = http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret))
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwt.PyJWKSet.from_dict(http.get("/.well-known/jwks.json").json()).keys if k.key_id == kid)
    jwt.decode(token, key, algorithms=["ES256"], audience="api", issuer=ISSUER)
    return token


def token_is_alive(openbao: Any, token: str) -> bool:
    try:
        openbao.client().auth.token.lookup(token)
    except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
        return False
    return True


def test_approle_login_renewal_and_login_again_past_the_max_ttl(
    openbao: Any, approle: AppRole, runtimes: Callable[..., Runtime], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="jwks_service")
    secret_file = tmp_path / "secret-id"
    secret_file.write_text(approle.secret_id + "\n")
    name = unique("ar")
    vault = {"addr": openbao.addr, "role_id": approle.role_id, "secret_id_file": str(secret_file)}
    started = time.monotonic()
    rt = runtimes({name: {"alg": "ES256", "backend": "vault"}}, vault={**vault, "auth_mount": approle.mount})
    assert rt.vault is not None and rt.vault.method == "approle" and rt.vault.logins == 1
    first_token = rt.vault.client.token
    issue_and_verify(rt, name)

    # Past the first token's max TTL (6 s): it was renewed (3 s TTL), then replaced by a new login.
    wait_until(lambda: time.monotonic() - started > 6.5 and rt.vault is not None and rt.vault.logins >= 2, 10)
    assert rt.vault.renewals >= 1
    assert rt.vault.client.token != first_token
    assert not token_is_alive(openbao, first_token)
    issue_and_verify(rt, name)  # still signs, with the new token

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "logged in to Vault" in logged and "max TTL" in logged
    for secret in (first_token, rt.vault.client.token, approle.secret_id):
        assert secret not in logged


def test_a_short_lived_token_file_token_is_renewed_and_a_replaced_file_is_adopted(
    openbao: Any, policy: str, runtimes: Callable[..., Runtime], tmp_path: Path
) -> None:
    def new_token() -> str:
        made = openbao.client().auth.token.create(policies=[policy], ttl="3s", no_default_policy=True)
        return str(made["auth"]["client_token"])

    first = new_token()
    token_file = tmp_path / "vault-token"
    token_file.write_text(first + "\n")
    name = unique("tf")
    started = time.monotonic()
    rt = runtimes(
        {name: {"alg": "ES256", "backend": "vault"}}, vault={"addr": openbao.addr, "token_file": str(token_file)}
    )
    assert rt.vault is not None and rt.vault.method == "token" and rt.vault.client.token == first
    issue_and_verify(rt, name)
    wait_until(lambda: rt.vault is not None and rt.vault.renewals >= 1, 3)  # at about 2/3 of the 3 s TTL

    # An agent (e.g. Vault Agent) writes a new token into the file: the next round adopts it.
    second = new_token()
    token_file.write_text(second + "\n")
    wait_until(lambda: rt.vault is not None and rt.vault.client.token == second, 3)
    assert time.monotonic() - started > 3  # longer than the first token's TTL...
    assert token_is_alive(openbao, first)  # ...which lives on because it was renewed
    issue_and_verify(rt, name)


def test_a_root_token_needs_no_renewal(openbao: Any, runtimes: Callable[..., Runtime], monkeypatch: Any) -> None:
    monkeypatch.setenv("VAULT_TOKEN", openbao.root_token)
    rt = runtimes({unique("rt"): {"alg": "ES256", "backend": "vault"}}, vault={"addr": openbao.addr})
    assert rt.vault is not None and rt.vault.expires_in is None and rt.vault._thread is None


def test_missing_credentials_are_refused_at_start(openbao: Any, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, {"v": {"alg": "ES256", "backend": "vault"}}, vault={"addr": openbao.addr})
    with pytest.raises(ConfigError) as caught:
        build_runtime(settings)
    assert "keysets.v uses backend = vault" in caught.value.description
    assert "VAULT_TOKEN" in caught.value.description and "vault.role_id" in caught.value.description

    approle_only = make_settings(
        tmp_path, {"v": {"alg": "ES256", "backend": "vault"}}, vault={"addr": openbao.addr, "role_id": "r"}
    )
    with pytest.raises(ConfigError, match=r"vault\.secret_id_file: vault\.role_id is set"):
        build_runtime(approle_only)


def test_refused_credentials_are_refused_at_start(openbao: Any, approle: AppRole, tmp_path: Path) -> None:
    keysets = {"v": {"alg": "ES256", "backend": "vault"}}
    bad_token = tmp_path / "token"
    bad_token.write_text("s.not-a-token\n")
    with pytest.raises(ConfigError, match=r"vault.token_file: Vault refused .* \(auth/token/lookup-self\)") as caught:
        build_runtime(make_settings(tmp_path, keysets, vault={"addr": openbao.addr, "token_file": str(bad_token)}))
    assert "s.not-a-token" not in caught.value.description

    bad_secret = tmp_path / "secret-id"
    bad_secret.write_text("not-the-secret-id\n")
    vault = {"addr": openbao.addr, "role_id": approle.role_id, "secret_id_file": str(bad_secret)}
    with pytest.raises(ConfigError, match=f"AppRole login was refused: Vault refused auth/{approle.mount}/login"):
        build_runtime(make_settings(tmp_path, keysets, vault={**vault, "auth_mount": approle.mount}))
    with pytest.raises(
        ConfigError, match=r"vault.auth_mount: Vault refused auth/nowhere/login .* enabled at auth/nowhere\?"
    ):
        build_runtime(make_settings(tmp_path, keysets, vault={**vault, "auth_mount": "nowhere"}))


def test_unreachable_vault_at_start_leaves_only_vault_keysets_degraded(
    tmp_path: Path, runtimes: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "s.some-token")
    rt = runtimes(
        {"v": {"alg": "ES256", "backend": "vault"}, "local": {"alg": "ES256"}},
        vault={"addr": f"http://127.0.0.1:{free_port()}"},
    )
    assert rt.vault is not None and rt.vault._thread is not None  # keeps trying
    assert "v" in rt.keys.snapshot.problems and "local" not in rt.keys.snapshot.problems
    issue_and_verify(rt, "local")


def test_approle_login_waits_for_a_sealed_vault_and_recovers(
    openbao: Any, approle: AppRole, runtimes: Callable[..., Runtime], tmp_path: Path
) -> None:
    match = re.search(r"Unseal Key: (\S+)", Path(openbao.log).read_text(errors="replace"))
    assert match is not None, "the dev server printed no unseal key"
    secret_file = tmp_path / "secret-id"
    secret_file.write_text(approle.secret_id)
    vault = {"addr": openbao.addr, "role_id": approle.role_id, "secret_id_file": str(secret_file)}
    name = unique("sealed")
    root = openbao.client()
    root.sys.seal()
    try:
        rt = runtimes({name: {"alg": "ES256", "backend": "vault"}}, vault={**vault, "auth_mount": approle.mount})
        assert rt.vault is not None and rt.vault.logins == 0  # started, degraded: no token yet
        assert name in rt.keys.snapshot.problems
    finally:
        root.sys.submit_unseal_key(match.group(1))
    wait_until(lambda: rt.vault is not None and rt.vault.logins == 1, 5)  # the thread logged in by itself
    rt.keys.tick()  # the scheduler (once a second in the server) creates the keyset's keys now
    rt.keys.refresh(force=True)
    assert name not in rt.keys.snapshot.problems
    issue_and_verify(rt, name)
