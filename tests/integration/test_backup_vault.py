"""Backups of Vault-backed keysets, against a real OpenBao dev server: a key record's public key must be
the one Transit holds for the version it points at."""

from __future__ import annotations

import base64
import json
import os
import secrets
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient
from support import ISSUER, basic

from jwks_service import backup as backups
from jwks_service.cli import main
from jwks_service.clock import ManualClock
from jwks_service.config import load_settings
from jwks_service.crypto import public_jwk_from_public_key
from jwks_service.http import create_app
from jwks_service.kek import load_kek
from jwks_service.runtime import build_runtime


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, openbao: Any) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("JWKS_", "VAULT_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VAULT_TOKEN", openbao.root_token)


def deployment(root: Path, keyset: str, addr: str, kek: bytes) -> str:
    root.mkdir()
    (root / "kek").write_text(base64.b64encode(kek).decode() + "\n")
    (root / "kek").chmod(0o600)
    config = root / "jwks.toml"
    config.write_text(
        f'issuer = "{ISSUER}"\n[store]\nurl = "sqlite:///{root}/jwks.db"\n[secrets]\nkek_file = "{root}/kek"\n'
        f'[vault]\naddr = "{addr}"\n[keysets.{keyset}]\nalg = "ES256"\nbackend = "vault"\n'
    )
    return str(config)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_vault_keys_are_checked_against_transit(
    tmp_path: Path, openbao: Any, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"bk-{uuid.uuid4().hex[:8]}"
    kek = secrets.token_bytes(32)
    a = deployment(tmp_path / "a", name, openbao.addr, kek)
    rt = build_runtime(load_settings(a), clock)
    try:
        client, secret = rt.clients.create("svc", ["read"], ["api"], keyset=name)
        with TestClient(create_app(runtime=rt, background=False), base_url=ISSUER) as http:
            r = http.post(
                "/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(client.client_id, secret)
            )
            token = r.json()["access_token"]
    finally:
        rt.close()
    file = tmp_path / "backup.json"
    code, _, err = cli(capsys, "backup", "export", str(file), "--config", a)
    assert code == 0, err

    # The backup's public key replaced by an attacker's, under a valid tag: Transit disagrees.
    doc = json.loads(file.read_text())
    current = next(k for k in doc["keysets"][0]["keys"] if k["state"] == "current")
    jwk, kid = public_jwk_from_public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    current.update(kid=kid, public_jwk={**jwk, "kid": kid, "alg": "ES256", "use": "sig"})
    bad = tmp_path / "planted.json"
    bad.write_text(
        backups.encode(doc, load_kek(str(tmp_path / "a" / "kek"), create=False).derive("backup-mac")).decode()
    )
    b = deployment(tmp_path / "b", name, openbao.addr, kek)
    code, out, err = cli(capsys, "backup", "import", str(bad), "--config", b)
    assert code != 0 and out == ""
    assert f"key {kid} of keyset {name}: its public key is not the one Vault Transit holds for jwks-{name}" in err
    assert "nothing written" in err and "Traceback" not in err
    assert not (tmp_path / "b" / "jwks.db").exists()

    # The untouched backup imports, checked against Transit, and the old token verifies.
    code, out, err = cli(capsys, "backup", "import", str(file), "--config", b)
    assert code == 0, err
    assert "Vault Transit holds all 2 live keys" in err
    rt = build_runtime(load_settings(b), clock)
    try:
        with TestClient(create_app(runtime=rt, background=False), base_url=ISSUER) as http:
            keys = jwt.PyJWKSet.from_dict(http.get("/.well-known/jwks.json").json())
            key = next(k for k in keys.keys if k.key_id == jwt.get_unverified_header(token)["kid"])
            assert (
                jwt.decode(token, key, algorithms=["ES256"], audience="api", issuer=ISSUER)["sub"] == client.client_id
            )
            r = http.post("/oauth/introspect", data={"token": token}, headers=basic(client.client_id, secret))
            assert r.json()["active"] is True
    finally:
        rt.close()


def test_envelope_mode_backups_are_tagged_with_the_unwrapped_kek(
    tmp_path: Path, openbao: Any, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """secrets.kek = "vault-transit:...": export and import unwrap the KEK with Transit to tag and check."""
    root = tmp_path / "env"
    root.mkdir()
    config = root / "jwks.toml"
    config.write_text(
        f'issuer = "{ISSUER}"\n[store]\nurl = "sqlite:///{root}/jwks.db"\n[secrets]\n'
        f'kek = "vault-transit:jwks-kek-{uuid.uuid4().hex[:8]}"\nkek_file = "{root}/kek.wrapped"\n'
        f'[vault]\naddr = "{openbao.addr}"\n[keysets.default]\nalg = "ES256"\n'
    )
    rt = build_runtime(load_settings(str(config)), clock)  # makes the wrapped KEK
    try:
        client, secret = rt.clients.create("svc", ["read"], ["api"])
        auth = basic(client.client_id, secret)
        with TestClient(create_app(runtime=rt, background=False), base_url=ISSUER) as http:
            token = http.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=auth).json()[
                "access_token"
            ]
    finally:
        rt.close()
    file = tmp_path / "backup.json"
    code, _, err = cli(capsys, "backup", "export", str(file), "--config", str(config))
    assert code == 0, err

    edited = json.loads(file.read_text())
    edited["clients"][0]["scopes"].append("admin")
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    (root / "jwks.db").unlink()
    code, _, err = cli(capsys, "backup", "import", str(tmp_path / "edited.json"), "--config", str(config))
    assert code != 0 and "integrity tag does not verify" in err
    assert not (root / "jwks.db").exists()

    code, _, err = cli(capsys, "backup", "import", str(file), "--config", str(config))
    assert code == 0, err
    rt = build_runtime(load_settings(str(config)), clock)
    try:
        with TestClient(create_app(runtime=rt, background=False), base_url=ISSUER) as http:
            assert http.post("/oauth/introspect", data={"token": token}, headers=auth).json()["active"] is True
    finally:
        rt.close()
