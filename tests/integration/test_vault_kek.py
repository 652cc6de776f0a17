"""Envelope mode against a real OpenBao dev server: secrets.kek = "vault-transit:jwks-kek".

The KEK is made once, wrapped by Transit, and only the wrapped form is written (to secrets.kek_file);
every start unwraps it with Transit. Tokens use only deploy/vault-policy.hcl.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from support import ISSUER, PROJECT_ROOT, basic, free_port, make_settings

from jwks_service import cli
from jwks_service.config import Settings
from jwks_service.errors import ConfigError, UnavailableError
from jwks_service.http import create_app
from jwks_service.runtime import Runtime, build_runtime

POLICY_FILE = PROJECT_ROOT / "deploy" / "vault-policy.hcl"
KEK_KEY = "jwks-kek"  # the name deploy/vault-policy.hcl grants encrypt/decrypt on
GRANT = {"grant_type": "client_credentials"}


@pytest.fixture(autouse=True)
def no_vault_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID", "VAULT_ADDR"):
        monkeypatch.delenv(name, raising=False)


def token_file(openbao: Any, tmp_path: Path, policy_text: str) -> Path:
    """A file holding a token whose only policy is `policy_text`."""
    root = openbao.client()
    name = f"p-{secrets.token_hex(4)}"
    root.sys.create_or_update_policy(name, policy_text)
    token = root.auth.token.create(policies=[name], ttl="10m", no_default_policy=True)["auth"]["client_token"]
    path = tmp_path / f"token-{name}"
    path.write_text(token + "\n")
    return path


def envelope_settings(tmp_path: Path, vault: dict[str, str], **secrets_table: str) -> Settings:
    keysets = {"default": {"alg": "ES256"}, "hs": {"alg": "HS256"}}
    table = {"kek": f"vault-transit:{KEK_KEY}", "kek_file": str(tmp_path / "kek.wrapped"), **secrets_table}
    return make_settings(tmp_path, keysets, secrets=table, vault=vault)


@pytest.fixture
def runtimes() -> Iterator[Callable[[Settings], Runtime]]:
    opened: list[Runtime] = []

    def make(settings: Settings) -> Runtime:
        rt = build_runtime(settings)
        opened.append(rt)
        return rt

    yield make
    for rt in opened:
        rt.close()


def test_the_kek_is_wrapped_by_transit_and_unseals_the_same_keys_on_the_next_start(
    openbao: Any, tmp_path: Path, runtimes: Callable[[Settings], Runtime]
) -> None:
    vault = {"addr": openbao.addr, "token_file": str(token_file(openbao, tmp_path, POLICY_FILE.read_text()))}
    settings = envelope_settings(tmp_path, vault)
    first = runtimes(settings)
    assert first.kek.generated and first.kek.wrapped_by == f"Vault Transit key transit/keys/{KEK_KEY}"
    wrapped = Path(settings.kek_file).read_text()
    assert wrapped.startswith("vault:v1:")
    # No plaintext KEK anywhere on disk (the store holds only keys sealed under it).
    plain = (first.kek.key, base64.b64encode(first.kek.key), base64.urlsafe_b64encode(first.kek.key))
    for f in tmp_path.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert not any(p in data for p in plain), f
    info = openbao.client().secrets.transit.read_key(KEK_KEY)["data"]
    assert info["type"] == "aes256-gcm96" and info["exportable"] is False

    tokens = {}
    http1 = TestClient(create_app(runtime=first, background=False), base_url=ISSUER)
    creds = {}
    for keyset in ("default", "hs"):
        client, secret = first.clients.create(f"svc-{keyset}", ["read"], ["api"], keyset=keyset)
        creds[keyset] = basic(client.client_id, secret)
        r = http1.post("/oauth/token", data=GRANT, headers=creds[keyset])
        assert r.status_code == 200, r.text
        tokens[keyset] = r.json()["access_token"]

    # Another process of the same deployment: same store, same wrapped file -> same KEK, same keys.
    second = runtimes(settings)
    assert not second.kek.generated and second.kek.key == first.kek.key
    assert Path(settings.kek_file).read_text() == wrapped
    http2 = TestClient(create_app(runtime=second, background=False), base_url=ISSUER)
    for keyset, token in tokens.items():  # client secrets (peppered by the KEK) and HMAC keys unseal
        r = http2.post("/oauth/introspect", data={"token": token}, headers=creds[keyset])
        assert r.json()["active"] is True, (keyset, r.text)
    assert http2.get("/.well-known/jwks.json").json() == http1.get("/.well-known/jwks.json").json()


def test_a_kek_wrapped_by_an_operator_with_datakey_is_used(openbao: Any, tmp_path: Path) -> None:
    root = openbao.client()
    root.adapter.post(f"/v1/transit/keys/{KEK_KEY}", json={"type": "aes256-gcm96"})
    made = root.adapter.post(f"/v1/transit/datakey/wrapped/{KEK_KEY}", json={"bits": 256})["data"]["ciphertext"]
    (tmp_path / "kek.wrapped").write_text(made + "\n")
    vault = {"addr": openbao.addr, "token_file": str(token_file(openbao, tmp_path, POLICY_FILE.read_text()))}
    rt = build_runtime(envelope_settings(tmp_path, vault))
    try:
        assert not rt.kek.generated
        plaintext = root.adapter.post(f"/v1/transit/decrypt/{KEK_KEY}", json={"ciphertext": made})["data"]["plaintext"]
        assert rt.kek.key == base64.b64decode(plaintext)
    finally:
        rt.close()


def test_unreachable_vault_at_start_is_a_clear_error_and_a_failed_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "s.some-token")
    addr = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UnavailableError) as caught:
        build_runtime(envelope_settings(tmp_path, {"addr": addr}))
    assert caught.value.description.startswith("secrets.kek: cannot log in to Vault to unwrap the KEK")
    assert f"Vault at {addr} is unreachable" in caught.value.description
    assert not (tmp_path / "kek.wrapped").exists() and not (tmp_path / "jwks.db").exists()

    config = tmp_path / "jwks.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path}/jwks.db"\n'
        f'[secrets]\nkek = "vault-transit:{KEK_KEY}"\nkek_file = "{tmp_path}/kek.wrapped"\n'
        f'[vault]\naddr = "{addr}"\n'
    )
    assert cli.main(["clients", "create", "c", "--scope", "s", "--audience", "a", "--config", str(config)]) != 0
    err = capsys.readouterr().err
    assert "secrets.kek: cannot log in to Vault" in err and "unreachable" in err


def test_refusals_name_what_to_fix(openbao: Any, tmp_path: Path) -> None:
    good = {"addr": openbao.addr, "token_file": str(token_file(openbao, tmp_path, POLICY_FILE.read_text()))}
    build_runtime(envelope_settings(tmp_path, good)).close()  # writes kek.wrapped

    # A token without decrypt on the key: the path is named.
    reader = token_file(
        openbao,
        tmp_path,
        'path "transit/keys/jwks-*" { capabilities = ["read"] }\n'
        'path "auth/token/lookup-self" { capabilities = ["read"] }',
    )
    with pytest.raises(ConfigError) as caught:
        build_runtime(envelope_settings(tmp_path, {"addr": openbao.addr, "token_file": str(reader)}))
    assert caught.value.description.startswith(
        f"secrets.kek: cannot unwrap the KEK in {tmp_path}/kek.wrapped with Vault Transit key transit/keys/{KEK_KEY}:"
        f" Vault permission denied on transit/decrypt/{KEK_KEY}: the token's policy must allow 'update'"
    )

    # A file wrapped by another Transit key.
    root = openbao.client()
    other = f"other-{secrets.token_hex(4)}"
    root.adapter.post(f"/v1/transit/keys/{other}", json={"type": "aes256-gcm96"})
    foreign = root.adapter.post(f"/v1/transit/datakey/wrapped/{other}", json={"bits": 256})["data"]["ciphertext"]
    (tmp_path / "foreign").write_text(foreign)
    with pytest.raises(ConfigError, match=f"Vault refused transit/decrypt/{KEK_KEY}: "):
        build_runtime(envelope_settings(tmp_path, good, kek_file=str(tmp_path / "foreign")))

    # A plaintext KEK where the wrapped one should be, and the other way round.
    plain = tmp_path / "plain-kek"
    plain.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    plain.chmod(0o600)
    with pytest.raises(ConfigError, match=r"holds a plaintext KEK, but secrets\.kek wraps the KEK with Vault Transit"):
        build_runtime(envelope_settings(tmp_path, good, kek_file=str(plain)))
    with pytest.raises(ConfigError, match=r"holds a KEK wrapped by Vault Transit; set secrets\.kek"):
        build_runtime(make_settings(tmp_path, secrets={"kek_file": str(tmp_path / "kek.wrapped")}))

    # Replicas (a Redis store) never make their own KEK: the file must be given, and how is said.
    shared = make_settings(
        tmp_path,
        store={"url": "redis://127.0.0.1:1/0"},
        secrets={"kek": f"vault-transit:{KEK_KEY}", "kek_file": str(tmp_path / "missing")},
        vault=good,
    )
    with pytest.raises(ConfigError, match=r"does not exist; .* transit/datakey/wrapped/<key> bits=256"):
        build_runtime(shared)
    assert not (tmp_path / "missing").exists()


def test_kek_rewrap_follows_the_transit_key_rotation(
    openbao: Any, tmp_path: Path, runtimes: Callable[[Settings], Runtime], capsys: pytest.CaptureFixture[str]
) -> None:
    """`jwks-service kek rewrap` with only the shipped policy: v1 -> v2, same KEK, old versions retirable."""
    token = token_file(openbao, tmp_path, POLICY_FILE.read_text())
    vault = {"addr": openbao.addr, "token_file": str(token)}
    settings = envelope_settings(tmp_path, vault)
    first = runtimes(settings)
    kek_file = Path(settings.kek_file)
    config = tmp_path / "jwks.toml"
    config.write_text(
        f'issuer = "{ISSUER}"\n[store]\nurl = "{settings.store_url}"\n'
        f'[secrets]\nkek = "vault-transit:{KEK_KEY}"\nkek_file = "{kek_file}"\n'
        f'[vault]\naddr = "{openbao.addr}"\ntoken_file = "{token}"\n'
        '[keysets.default]\nalg = "ES256"\n[keysets.hs]\nalg = "HS256"\n'
    )
    assert cli.main(["kek", "rewrap", "--config", str(config)]) == 0
    assert "already wrapped by the latest version (v1)" in capsys.readouterr().out
    root = openbao.client()
    root.secrets.transit.rotate_key(KEK_KEY)
    before = kek_file.read_text()
    assert before.startswith("vault:v1:")
    assert cli.main(["kek", "rewrap", "--config", str(config)]) == 0
    assert "v1 -> v2" in capsys.readouterr().out
    after = kek_file.read_text()
    assert after.startswith("vault:v2:") and after != before
    assert kek_file.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".kek.wrapped.*"))  # no temporary file left behind
    # Version 1 may now be retired: the service still starts and unseals the same keys.
    root.secrets.transit.update_key_configuration(KEK_KEY, min_decryption_version=2)
    again = runtimes(settings)
    assert again.kek.key == first.kek.key
    assert again.keys.snapshot.signing["default"].kid == first.keys.snapshot.signing["default"].kid
    # Outside envelope mode there is nothing to rewrap: a clear refusal, exit 2.
    plain = tmp_path / "plain.toml"
    plain.write_text(f'issuer = "{ISSUER}"\n[secrets]\nkek_file = "{tmp_path / "plain-kek"}"\n')
    assert cli.main(["kek", "rewrap", "--config", str(plain)]) == 2
    assert "rewrap is for envelope mode" in capsys.readouterr().err


def test_kek_wrap_moves_a_plaintext_deployment_into_envelope_mode(
    openbao: Any, tmp_path: Path, runtimes: Callable[[Settings], Runtime], capsys: pytest.CaptureFixture[str]
) -> None:
    token = token_file(openbao, tmp_path, POLICY_FILE.read_text())
    keysets = {"default": {"alg": "ES256"}, "hs": {"alg": "HS256"}}
    vault = {"addr": openbao.addr, "token_file": str(token)}
    plain_kek = tmp_path / "kek"
    plain = make_settings(tmp_path, keysets, vault=vault)
    first = runtimes(plain)
    client, secret = first.clients.create("svc", ["read"], ["api"], keyset="hs")
    kid = first.keys.snapshot.signing["default"].kid
    first.close()
    config = tmp_path / "plain.toml"
    config.write_text(
        f'issuer = "{ISSUER}"\n[store]\nurl = "{plain.store_url}"\n[secrets]\nkek_file = "{plain_kek}"\n'
        f'[vault]\naddr = "{openbao.addr}"\ntoken_file = "{token}"\n'
        '[keysets.default]\nalg = "ES256"\n[keysets.hs]\nalg = "HS256"\n'
    )
    out = tmp_path / "kek.wrapped"
    assert cli.main(["kek", "wrap", str(out), "--config", str(config)]) == 0
    said = capsys.readouterr().out
    assert f'kek = "vault-transit:{KEK_KEY}"' in said and "only then delete" in said
    assert out.read_text().startswith("vault:v") and out.stat().st_mode & 0o777 == 0o600
    assert plain_kek.exists()  # left for the operator
    # The same deployment in envelope mode: the same keys unseal and the client's secret still works.
    envelope = make_settings(
        tmp_path, keysets, vault=vault, secrets={"kek": f"vault-transit:{KEK_KEY}", "kek_file": str(out)}
    )
    moved = runtimes(envelope)
    assert not moved.kek.generated and moved.kek.wrapped_by
    assert moved.keys.snapshot.signing["default"].kid == kid
    http = TestClient(create_app(runtime=moved, background=False), base_url=ISSUER)
    r = http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret))
    assert r.status_code == 200, r.text
    # Refusals, each one line: an existing OUT, and a KEK that is wrapped already.
    assert cli.main(["kek", "wrap", str(out), "--config", str(config)]) == 2
    assert "exists; name a new file" in capsys.readouterr().err
    wrapped_config = tmp_path / "wrapped.toml"
    wrapped_config.write_text(
        config.read_text().replace(f'kek_file = "{plain_kek}"', f'kek = "vault-transit:{KEK_KEY}"\nkek_file = "{out}"')
    )
    assert cli.main(["kek", "wrap", str(tmp_path / "again"), "--config", str(wrapped_config)]) == 2
    assert "already wrapped" in capsys.readouterr().err
