"""`backup export` / `backup import`: one versioned file that restores a service verifying every old token."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from starlette.testclient import TestClient
from support import ISSUER, basic

from jwks_service import backup as backups
from jwks_service.cli import main
from jwks_service.clock import ManualClock
from jwks_service.config import load_settings
from jwks_service.http import create_app
from jwks_service.runtime import Runtime, build_runtime, open_store


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("JWKS_"):
            monkeypatch.delenv(name)


@dataclass
class Deployment:
    """A folder with a configuration file, its store and its KEK: one installation of the service."""

    root: Path

    @property
    def config(self) -> str:
        return str(self.root / "jwks.toml")

    @property
    def store(self) -> Path:
        return self.root / "jwks.db"

    @property
    def kek(self) -> Path:
        return self.root / "kek"

    def runtime(self, clock: ManualClock) -> Runtime:
        return build_runtime(load_settings(self.config), clock)


KEYSETS = {"default": "ES256", "hs": "HS256"}


def deployment(
    tmp_path: Path, name: str, keysets: dict[str, str] | None = None, kek_from: Path | None = None
) -> Deployment:
    root = tmp_path / name
    root.mkdir()
    lines = [
        f'issuer = "{ISSUER}"',
        "[store]",
        f'url = "sqlite:///{root}/jwks.db"',
        "[secrets]",
        f'kek_file = "{root}/kek"',
    ]
    for ks, alg in (keysets or KEYSETS).items():
        lines += [f"[keysets.{ks}]", f'alg = "{alg}"']
    (root / "jwks.toml").write_text("\n".join(lines) + "\n")
    if kek_from is not None:
        shutil.copy2(kek_from, root / "kek")
    return Deployment(root)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def get_token(http: TestClient, client_id: str, secret: str) -> str:
    r = http.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(client_id, secret))
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def introspect(http: TestClient, client_id: str, secret: str, token: str) -> dict[str, Any]:
    r = http.post("/oauth/introspect", data={"token": token}, headers=basic(client_id, secret))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def jwks_kids(http: TestClient) -> set[str]:
    return {k["kid"] for k in http.get("/.well-known/jwks.json").json()["keys"]}


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


@dataclass
class Exported:
    source: Deployment
    file: Path
    kids: set[str]  # every stored key of every keyset
    jwks_kids: set[str]  # the published ones
    tokens: dict[str, str]  # name -> token
    creds: dict[str, tuple[str, str]]  # name -> (client_id, secret)


@pytest.fixture
def exported(tmp_path: Path, clock: ManualClock, capsys: pytest.CaptureFixture[str]) -> Exported:
    """Deployment A with clients, tokens from two keys, a revoked token and a rotated secret, exported."""
    a = deployment(tmp_path, "a")
    rt = a.runtime(clock)
    try:
        reader, reader_secret = rt.clients.create("reader", ["read", "introspect"], ["api"])
        writer, writer_secret = rt.clients.create("writer", ["write"], ["api"])
        hmac, hmac_secret = rt.clients.create("hmac", ["read"], ["api"], keyset="hs")
        with TestClient(create_app(runtime=rt, background=False), base_url=ISSUER) as http:
            old = get_token(http, reader.client_id, reader_secret)
            revoked = get_token(http, writer.client_id, writer_secret)
            hs_token = get_token(http, hmac.client_id, hmac_secret)
            rt.keys.rotate("default", force=True, reason="before the backup")
            new = get_token(http, reader.client_id, reader_secret)
            assert kid_of(old) != kid_of(new)
            r = http.post("/oauth/revoke", data={"token": revoked}, headers=basic(writer.client_id, writer_secret))
            assert r.status_code == 200
            assert introspect(http, writer.client_id, writer_secret, revoked) == {"active": False}
            _, rotated_secret = rt.clients.rotate_secret(reader.client_id, 3600, actor="test")
            published = jwks_kids(http)
            assert len(published) == 3  # previous, current, next of the ES256 keyset; HMAC keys never
        kids = {k.kid for ks in rt.store.list_keysets() for k in ks.keys}
        assert len(kids) == 5
    finally:
        rt.close()
    file = tmp_path / "backup.json"
    code, _, err = cli(capsys, "backup", "export", str(file), "--config", a.config)
    assert code == 0, err
    assert "keysets: 2 keysets, 5 keys" in err and "clients: 3 clients" in err
    assert "revoked tokens: 1 token" in err and "audit: " in err
    return Exported(
        a,
        file,
        kids,
        published,
        {"old": old, "new": new, "revoked": revoked, "hs": hs_token},
        {
            "reader": (reader.client_id, reader_secret),
            "reader-rotated": (reader.client_id, rotated_secret),
            "writer": (writer.client_id, writer_secret),
            "hmac": (hmac.client_id, hmac_secret),
        },
    )


def test_round_trip_into_a_fresh_store_verifies_every_token(
    tmp_path: Path, clock: ManualClock, capsys: pytest.CaptureFixture[str], exported: Exported
) -> None:
    assert stat.S_IMODE(exported.file.stat().st_mode) == 0o600
    doc = json.loads(exported.file.read_text())
    assert doc["format"] == "jwks-service-backup" and doc["version"] == 1 and doc["issuer"] == ISSUER
    assert doc["created_at"].endswith("Z")
    assert {k["kid"] for ks in doc["keysets"] for k in ks["keys"]} == exported.kids
    assert [(ks["name"], ks["alg"]) for ks in doc["keysets"]] == [("default", "ES256"), ("hs", "HS256")]
    for ks in doc["keysets"]:
        for key in ks["keys"]:
            assert key["public_jwk"] is None or "d" not in key["public_jwk"]  # private material only sealed
            assert key["sealed_private"] and base64.b64decode(key["sealed_private"])
    assert all("secrets" in c and "client_secret" not in c for c in doc["clients"])
    assert list(doc["revoked_tokens"]) == [
        jwt.decode(exported.tokens["revoked"], options={"verify_signature": False})["jti"]
    ]
    ats = [e["at"] for e in doc["audit"]]
    assert ats == sorted(ats) and doc["audit"][0]["action"] == "key.created"  # oldest first

    b = deployment(tmp_path, "b", kek_from=exported.source.kek)
    code, out, err = cli(capsys, "backup", "import", str(exported.file), "--config", b.config)
    assert code == 0, err
    assert "imported 2 keysets (5 keys), 3 clients, 1 revoked token" in out
    assert "unseals all 5 live keys" in err

    rt = b.runtime(clock)  # a normal start: loads the imported keys, creates nothing
    try:
        assert {k.kid for ks in rt.store.list_keysets() for k in ks.keys} == exported.kids
        with TestClient(create_app(runtime=rt, background=False), base_url=ISSUER) as http:
            assert jwks_kids(http) == exported.jwks_kids
            reader_id, reader_secret = exported.creds["reader"]
            for name in ("old", "new"):
                token = exported.tokens[name]
                body = introspect(http, reader_id, reader_secret, token)
                assert body["active"] is True and body["kid"] == kid_of(token), name
            body = introspect(http, *exported.creds["hmac"], exported.tokens["hs"])
            assert body["active"] is True and body["keyset"] == "hs"
            writer_id, writer_secret = exported.creds["writer"]
            assert introspect(http, writer_id, writer_secret, exported.tokens["revoked"]) == {"active": False}
            # Clients authenticate with their old secrets (both during the grace of a rotation).
            fresh = get_token(http, *exported.creds["reader-rotated"])
            assert kid_of(fresh) == kid_of(exported.tokens["new"])
            assert get_token(http, reader_id, reader_secret)
            assert get_token(http, writer_id, writer_secret)
            r = http.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(writer_id, "nope"))
            assert r.status_code == 401
        events = rt.store.list_audit(limit=1000)
        assert events[0].action == "backup.import" and events[0].actor == "cli"
        assert events[0].details["keys"] == 5 and events[0].details["clients"] == 3
        assert {"client.create", "client.rotate_secret", "key.created", "key.rotated"} <= {e.action for e in events}
    finally:
        rt.close()


def test_import_into_a_non_empty_store_needs_force(
    tmp_path: Path, clock: ManualClock, capsys: pytest.CaptureFixture[str], exported: Exported
) -> None:
    c = deployment(tmp_path, "c", kek_from=exported.source.kek)
    rt = c.runtime(clock)  # bootstraps keys of its own
    try:
        own_client, _ = rt.clients.create("local", ["read"], ["api"])
        own_kids = {k.kid for ks in rt.store.list_keysets() for k in ks.keys}
    finally:
        rt.close()
    assert own_kids.isdisjoint(exported.kids)

    code, out, err = cli(capsys, "backup", "import", str(exported.file), "--config", c.config)
    assert code != 0 and out == ""
    assert "not empty" in err and "--force" in err and "Traceback" not in err
    store = open_store(load_settings(c.config))
    try:
        assert {k.kid for ks in store.list_keysets() for k in ks.keys} == own_kids  # untouched
    finally:
        store.close()

    code, out, err = cli(capsys, "backup", "import", str(exported.file), "--config", c.config, "--force")
    assert code == 0, err
    rt = c.runtime(clock)
    try:
        assert {k.kid for ks in rt.store.list_keysets() for k in ks.keys} == exported.kids  # replaced
        ids = {cl.client_id for cl in rt.store.list_clients()}
        assert ids == {own_client.client_id} | {cid for cid, _ in exported.creds.values()}
        with TestClient(create_app(runtime=rt, background=False), base_url=ISSUER) as http:
            assert jwks_kids(http) == exported.jwks_kids
            body = introspect(http, *exported.creds["reader"], exported.tokens["old"])
            assert body["active"] is True
    finally:
        rt.close()


def test_import_under_another_kek_is_refused_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], exported: Exported
) -> None:
    d = deployment(tmp_path, "d")
    d.kek.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    d.kek.chmod(0o600)
    code, out, err = cli(capsys, "backup", "import", str(exported.file), "--config", d.config)
    assert code != 0 and out == ""
    assert "different KEK" in err and "nothing written" in err and "Traceback" not in err
    assert not d.store.exists()  # refused before the store was even opened

    # No KEK file at all: refused too, and no new KEK is generated in its place.
    e = deployment(tmp_path, "e")
    code, _, err = cli(capsys, "backup", "import", str(exported.file), "--config", e.config)
    assert code != 0
    assert "secrets.kek_file" in err and "does not exist" in err
    assert not e.kek.exists() and not e.store.exists()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda doc: "{not json", "not valid JSON"),
        (lambda doc: json.dumps([1, 2]), "not a jwks-service backup"),
        (lambda doc: json.dumps({**doc, "format": "something-else"}), "not a jwks-service backup"),
        (lambda doc: json.dumps({**doc, "version": 2}), "version 2 is not supported"),
        (lambda doc: json.dumps({k: v for k, v in doc.items() if k != "clients"}), "missing the field 'clients'"),
        (
            lambda doc: json.dumps({**doc, "keysets": [{**doc["keysets"][0], "keys": [{"keyset": "default"}]}]}),
            "keyset 'default'.keys[0] is missing the field 'kid'",
        ),
        (lambda doc: json.dumps({**doc, "clients": [{"client_id": "x"}]}), "clients[0] is missing the field"),
        (
            lambda doc: json.dumps({**doc, "clients": [{**doc["clients"][0], "scopes": "read"}]}),
            "clients[0].scopes must be a list",
        ),
        (
            lambda doc: json.dumps(
                {
                    **doc,
                    "keysets": [{**doc["keysets"][0], "keys": [{**doc["keysets"][0]["keys"][0], "created_at": "x"}]}],
                }
            ),
            "keys[0].created_at must be a number",
        ),
        (
            lambda doc: json.dumps(
                {**doc, "keysets": [{**doc["keysets"][0], "keys": [{**doc["keysets"][0]["keys"][0], "state": "odd"}]}]}
            ),
            "keys[0] is malformed",
        ),
        (lambda doc: json.dumps({**doc, "revoked_tokens": {"j": "soon"}}), "revoked_tokens['j'] must be a number"),
        (lambda doc: json.dumps({**doc, "audit": "lots"}), "audit must be a list"),
    ],
)
def test_malformed_backups_are_refused_with_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], exported: Exported, mutate: Any, message: str
) -> None:
    doc = json.loads(exported.file.read_text())
    bad = tmp_path / "bad.json"
    bad.write_text(mutate(doc))
    f = deployment(tmp_path, "f", kek_from=exported.source.kek)
    code, out, err = cli(capsys, "backup", "import", str(bad), "--config", f.config)
    assert code != 0 and out == ""
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not f.store.exists()


def test_damaged_key_material_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], exported: Exported
) -> None:
    doc = json.loads(exported.file.read_text())
    keys = doc["keysets"][0]["keys"]
    keys[0]["public_jwk"], keys[1]["public_jwk"] = keys[1]["public_jwk"], keys[0]["public_jwk"]
    bad = tmp_path / "swapped.json"
    bad.write_text(json.dumps(doc))
    i = deployment(tmp_path, "i", kek_from=exported.source.kek)
    code, _, err = cli(capsys, "backup", "import", str(bad), "--config", i.config)
    assert code != 0
    assert f"key {keys[0]['kid']} of keyset default does not verify its own signature" in err
    assert not i.store.exists()


def test_keysets_must_be_configured_with_the_same_alg(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], exported: Exported
) -> None:
    g = deployment(tmp_path, "g", keysets={"other": "ES256"}, kek_from=exported.source.kek)
    code, _, err = cli(capsys, "backup", "import", str(exported.file), "--config", g.config)
    assert code != 0
    assert "keyset default of the backup is not configured here" in err and "nothing written" in err
    h = deployment(tmp_path, "h", keysets={"default": "RS256", "hs": "HS256"}, kek_from=exported.source.kek)
    code, _, err = cli(capsys, "backup", "import", str(exported.file), "--config", h.config)
    assert code != 0
    assert "keysets.default.alg" in err and "ES256" in err
    assert not g.store.exists() and not h.store.exists()


def test_export_never_overwrites_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], exported: Exported
) -> None:
    before = exported.file.read_bytes()
    code, _, err = cli(capsys, "backup", "export", str(exported.file), "--config", exported.source.config)
    assert code != 0
    assert "exists" in err and "--force" in err
    assert exported.file.read_bytes() == before

    other = tmp_path / "other.json"
    other.write_text("keep me")
    other.chmod(0o644)
    code, _, err = cli(capsys, "backup", "export", str(other), "--config", exported.source.config)
    assert code != 0 and other.read_text() == "keep me"
    code, _, err = cli(capsys, "backup", "export", str(other), "--config", exported.source.config, "--force")
    assert code == 0, err
    assert json.loads(other.read_text())["format"] == "jwks-service-backup"
    assert stat.S_IMODE(other.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []  # no temp files left


def test_export_needs_an_existing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = deployment(tmp_path, "empty")
    code, _, err = cli(capsys, "backup", "export", str(tmp_path / "x.json"), "--config", empty.config)
    assert code != 0 and "no store" in err
    assert not empty.store.exists() and not (tmp_path / "x.json").exists()


def test_document_round_trips_through_parse(exported: Exported) -> None:
    parsed = backups.parse(exported.file.read_bytes())
    assert backups.parse(backups.encode(backups.to_document(parsed))) == parsed
    assert parsed.counts()["keys"] == 5 and parsed.counts()["clients"] == 3
