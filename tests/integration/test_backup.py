"""`backup export` / `backup import`: one versioned file that restores a service verifying every old token."""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient
from support import ISSUER, ClientKey, basic

from jwks_service import backup as backups
from jwks_service.cli import main
from jwks_service.clock import ManualClock, rfc3339
from jwks_service.config import load_settings
from jwks_service.errors import InvalidRequestError
from jwks_service.http import create_app
from jwks_service.kek import load_kek
from jwks_service.lifecycle import check_invariants
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
    tmp_path: Path,
    name: str,
    keysets: dict[str, str] | None = None,
    kek_from: Path | None = None,
    store_url: str | None = None,
) -> Deployment:
    root = tmp_path / name
    root.mkdir()
    lines = [
        f'issuer = "{ISSUER}"',
        "[store]",
        f'url = "{store_url or f"sqlite:///{root}/jwks.db"}"',
        "[secrets]",
        f'kek_file = "{root}/kek"',
    ]
    for ks, alg in (keysets or KEYSETS).items():
        lines += [f"[keysets.{ks}]", f'alg = "{alg}"']
    (root / "jwks.toml").write_text("\n".join(lines) + "\n")
    if kek_from is not None:
        shutil.copy2(kek_from, root / "kek")
    elif store_url is not None:  # a store server: the service never generates a KEK for it
        (root / "kek").write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        (root / "kek").chmod(0o600)
    return Deployment(root)


def mac_key(kek: Path) -> bytes:
    return load_kek(str(kek), create=False).derive(backups.MAC_PURPOSE)


def retag(doc: dict[str, Any], kek: Path) -> str:
    """The file text of `doc` with a valid tag: what an exporter holding the KEK would have written
    (a buggy one, or an attacker with the KEK); the checks after the tag must still refuse it."""
    return backups.encode(doc, mac_key(kek)).decode()


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
    assert doc["format"] == "jwks-service-backup" and doc["version"] == 2 and doc["issuer"] == ISSUER
    assert isinstance(doc["tag"], str) and len(base64.urlsafe_b64decode(doc["tag"] + "=")) == 32
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
    assert "integrity tag verifies" in err and "unseals all 5 live keys" in err

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
        assert events[0].action == "backup.import" and events[0].actor == f"cli:{getpass.getuser()}"  # the OS user
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

    backup_current = next(
        k["kid"] for k in json.loads(exported.file.read_text())["keysets"][0]["keys"] if k["state"] == "current"
    )
    code, out, err = cli(capsys, "backup", "import", str(exported.file), "--config", c.config, "--force")
    assert code == 0, err
    rt = c.runtime(clock)
    try:
        # Merged: the backup's keys join the store's; the backup's current key signs, the store's own
        # current key verifies on as previous, its own next (never used) is discarded.
        stored = {k.kid: k for ks in rt.store.list_keysets() for k in ks.keys}
        assert set(stored) == exported.kids | own_kids
        default = rt.store.get_keyset("default")
        assert default is not None and default.current is not None and default.current.kid == backup_current
        own_default = [k for k in own_kids if stored[k].keyset == "default"]
        assert sorted(stored[k].state.value for k in own_default) == ["previous", "retired"]
        assert all(stored[k].sealed_private is None for k in own_kids if stored[k].state.value == "retired")
        assert "becomes previous" in err and "discarded" in err
        ids = {cl.client_id for cl in rt.store.list_clients()}
        assert ids == {own_client.client_id} | {cid for cid, _ in exported.creds.values()}
        with TestClient(create_app(runtime=rt, background=False), base_url=ISSUER) as http:
            own_previous = {k for k in own_default if stored[k].state.value == "previous"}
            assert jwks_kids(http) == exported.jwks_kids | own_previous
            body = introspect(http, *exported.creds["reader"], exported.tokens["old"])
            assert body["active"] is True
        # The backup's events were appended after the store's own, each with a new id and prev.
        assert rt.audit_log.verify().ok
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
    assert "the backup's integrity tag does not verify: the file was changed, or it was made under another KEK" in err
    assert "nothing written" in err and "Traceback" not in err
    assert not d.store.exists()  # refused before the store was even opened

    # No KEK file at all: refused too, and no new KEK is generated in its place.
    e = deployment(tmp_path, "e")
    code, _, err = cli(capsys, "backup", "import", str(exported.file), "--config", e.config)
    assert code != 0
    assert "secrets.kek_file" in err and "does not exist" in err
    assert not e.kek.exists() and not e.store.exists()


def _key0(doc: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """`doc` with changes to the first key of its first keyset."""
    ks = doc["keysets"][0]
    return {**doc, "keysets": [{**ks, "keys": [{**ks["keys"][0], **changes}, *ks["keys"][1:]]}, *doc["keysets"][1:]]}


# Each mutation returns file text (refused before the tag is looked at) or a document (written with a
# valid tag, so that the structural checks behind the tag are what refuses it).
@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda doc: "{not json", "not valid JSON"),
        (lambda doc: json.dumps([1, 2]), "not a jwks-service backup"),
        (lambda doc: json.dumps({**doc, "format": "something-else"}), "not a jwks-service backup"),
        (lambda doc: json.dumps({**doc, "version": 3}), "version 3 is not supported"),
        (lambda doc: json.dumps({**doc, "version": 1}), "version 1 has no integrity tag"),
        (lambda doc: json.dumps({k: v for k, v in doc.items() if k != "tag"}), "has no integrity tag"),
        (lambda doc: {k: v for k, v in doc.items() if k != "clients"}, "missing the field 'clients'"),
        (
            lambda doc: {**doc, "keysets": [{**doc["keysets"][0], "keys": [{"keyset": "default"}]}]},
            "keyset 'default'.keys[0] is missing the field 'kid'",
        ),
        (lambda doc: {**doc, "clients": [{"client_id": "x"}]}, "clients[0] is missing the field"),
        (lambda doc: {**doc, "clients": [{**doc["clients"][0], "scopes": "read"}]}, "clients[0].scopes must be a list"),
        (
            lambda doc: {**doc, "clients": [{**doc["clients"][0], "scopes": ["read write"]}]},
            "clients[0].scopes: 'read write' is not a valid scope token",
        ),
        (
            lambda doc: {**doc, "clients": [{**doc["clients"][0], "keyset": "elsewhere"}]},
            "clients[0].keyset: unknown keyset 'elsewhere'",
        ),
        (
            lambda doc: {**doc, "clients": [{**doc["clients"][0], "secrets": [{"digest": "AAAA", "created_at": 1}]}]},
            "clients[0].secrets[0].digest must be 32 bytes",
        ),
        (
            lambda doc: {**doc, "clients": [{**doc["clients"][0], "token_endpoint_auth_method": "private_key_jwt"}]},
            "clients[0].private_key_jwt: exactly one of jwks",
        ),
        (
            lambda doc: {
                **doc,
                "clients": [
                    {
                        **doc["clients"][0],
                        "token_endpoint_auth_method": "private_key_jwt",
                        "jwks_uri": "http://keys.example.com/jwks",
                    }
                ],
            },
            "clients[0].jwks_uri: http:// only on a loopback address",
        ),
        (
            lambda doc: {
                **doc,
                "clients": [
                    {
                        **doc["clients"][0],
                        "token_endpoint_auth_method": "private_key_jwt",
                        "jwks_uri": "https://keys.example.com/jwks",
                    }
                ],
            },
            "clients[0].secrets: a private_key_jwt client has none",
        ),
        (lambda doc: {**doc, "clients": [{**doc["clients"][0], "jwks": ["k"]}]}, "clients[0].jwks must be"),
        (lambda doc: _key0(doc, created_at="x"), "keys[0].created_at must be a number"),
        (lambda doc: _key0(doc, state="odd"), "keys[0] is malformed"),
        (lambda doc: {**doc, "revoked_tokens": {"j": "soon"}}, "revoked_tokens['j'] must be a number"),
        (lambda doc: {**doc, "audit": "lots"}, "audit must be a list"),
    ],
)
def test_malformed_backups_are_refused_with_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], exported: Exported, mutate: Any, message: str
) -> None:
    doc = json.loads(exported.file.read_text())
    bad = tmp_path / "bad.json"
    changed = mutate(doc)
    bad.write_text(changed if isinstance(changed, str) else retag(changed, exported.source.kek))
    f = deployment(tmp_path, "f", kek_from=exported.source.kek)
    code, out, err = cli(capsys, "backup", "import", str(bad), "--config", f.config)
    assert code != 0 and out == ""
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not f.store.exists()


def test_damaged_key_material_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], exported: Exported
) -> None:
    """Public keys swapped between two records (under a valid tag): each kid is recomputed from its
    public key, and each live key must unseal to the private half of its public key."""
    doc = json.loads(exported.file.read_text())
    keys = doc["keysets"][0]["keys"]
    keys[0]["public_jwk"], keys[1]["public_jwk"] = keys[1]["public_jwk"], keys[0]["public_jwk"]
    bad = tmp_path / "swapped.json"
    bad.write_text(retag(doc, exported.source.kek))
    i = deployment(tmp_path, "i", kek_from=exported.source.kek)
    code, _, err = cli(capsys, "backup", "import", str(bad), "--config", i.config)
    assert code != 0
    assert f"key {keys[0]['kid']} of keyset default: its kid is not the RFC 7638 thumbprint of its public key" in err
    assert not i.store.exists()

    # Kids made to match the swapped keys: then the sealed private keys do not match.
    for key in keys[:2]:
        key["kid"] = key["public_jwk"]["kid"]
    bad.write_text(retag(doc, exported.source.kek))
    code, _, err = cli(capsys, "backup", "import", str(bad), "--config", i.config)
    assert code != 0 and "Traceback" not in err
    assert f"key {keys[0]['kid']} of keyset default" in err and "nothing written" in err
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
    key = mac_key(exported.source.kek)
    doc = backups.load(exported.file.read_bytes())
    backups.verify(doc, key)
    parsed = backups.parse(doc)
    again = backups.load(backups.encode(backups.to_document(parsed), key))
    backups.verify(again, key)
    assert backups.parse(again) == parsed
    assert parsed.counts()["keys"] == 5 and parsed.counts()["clients"] == 3
    with pytest.raises(InvalidRequestError, match="integrity tag does not verify"):
        backups.verify(again, bytes(32))


# ----- issue 11, defect 1: a tampered backup must not publish an attacker's key -----------------


def attacker_key(kid_from: str = "thumbprint") -> tuple[ec.EllipticCurvePrivateKey, dict[str, Any]]:
    """An ES256 key of the attacker's and its public JWK, with kid = its RFC 7638 thumbprint."""
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    thumb = base64.urlsafe_b64encode(
        hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest()
    )
    kid = thumb.decode().rstrip("=")
    return private, {**members, "kid": kid, "alg": "ES256", "use": "sig"}


def plant_attacker_key(doc: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The backup with its current ES256 key replaced by the attacker's: public key published, no
    sealed private key (the attacker signs with their own copy)."""
    private, jwk = attacker_key()
    keys = doc["keysets"][0]["keys"]
    current = next(k for k in keys if k["state"] == "current")
    current.update(kid=jwk["kid"], public_jwk=jwk, sealed_private=None)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return doc, pem.decode()


def _add_admin(doc: dict[str, Any]) -> dict[str, Any]:
    doc["clients"][0]["scopes"].append("admin")
    return doc


def _edit_audit(doc: dict[str, Any]) -> dict[str, Any]:
    doc["audit"][1]["actor"] = "nobody"
    return doc


def _add_x5u(doc: dict[str, Any]) -> dict[str, Any]:
    doc["keysets"][0]["keys"][0]["public_jwk"]["x5u"] = "https://attacker.example/chain.pem"
    return doc


def _forget_revocation(doc: dict[str, Any]) -> dict[str, Any]:
    doc["revoked_tokens"] = {}
    return doc


@pytest.mark.parametrize(
    "tamper",
    [
        lambda doc: plant_attacker_key(doc)[0],
        _add_admin,
        _edit_audit,
        _add_x5u,
        _forget_revocation,
        lambda doc: {**doc, "tag": "\u00e9" * 43},
        lambda doc: {**doc, "tag": ""},
    ],
    ids=["attacker-key", "admin-scope", "audit-event", "x5u", "revocation-dropped", "non-ascii-tag", "empty-tag"],
)
def test_a_tampered_backup_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], exported: Exported, tamper: Any
) -> None:
    """Any change to an exported file, even one that keeps the JSON valid, fails the integrity tag."""
    doc = tamper(json.loads(exported.file.read_text()))
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(doc, indent=1))
    t = deployment(tmp_path, "t", kek_from=exported.source.kek)
    code, out, err = cli(capsys, "backup", "import", str(bad), "--config", t.config)
    assert code != 0 and out == "", err
    assert (
        "the backup's integrity tag does not verify: the file was changed, or it was made under another KEK;"
        " nothing written" in err
    )
    assert "Traceback" not in err and not t.store.exists()


def test_an_attacker_key_under_a_valid_tag_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], exported: Exported
) -> None:
    """Behind the tag, a live local key must unseal to the private half of its public key: a key
    record without sealed material (or with a kid that is not its thumbprint) is refused."""
    doc, _ = plant_attacker_key(json.loads(exported.file.read_text()))
    kid = next(k["kid"] for k in doc["keysets"][0]["keys"] if k["state"] == "current")
    bad = tmp_path / "planted.json"
    bad.write_text(retag(doc, exported.source.kek))
    t = deployment(tmp_path, "t", kek_from=exported.source.kek)
    code, out, err = cli(capsys, "backup", "import", str(bad), "--config", t.config)
    assert code != 0 and out == ""
    assert f"key {kid} of keyset default is current but holds no private key" in err and "nothing written" in err
    assert not t.store.exists()

    # A record that does not verify any more (revoked) must still carry its own kid.
    doc = json.loads(exported.file.read_text())
    doc["keysets"][0]["keys"][0].update(state="revoked", revoked_at=doc["keysets"][0]["keys"][0]["created_at"])
    doc["keysets"][0]["keys"][0]["sealed_private"] = None
    doc["keysets"][0]["keys"][0]["kid"] = "not-a-thumbprint"
    bad.write_text(retag(doc, exported.source.kek))
    code, _, err = cli(capsys, "backup", "import", str(bad), "--config", t.config)
    assert code != 0
    assert "key not-a-thumbprint of keyset default: its kid is not the RFC 7638 thumbprint" in err
    assert not t.store.exists()

    # An HMAC key never has a public key, so none can be published through one.
    doc = json.loads(exported.file.read_text())
    _, jwk = attacker_key()
    doc["keysets"][1]["keys"][0]["public_jwk"] = jwk
    bad.write_text(retag(doc, exported.source.kek))
    code, _, err = cli(capsys, "backup", "import", str(bad), "--config", t.config)
    assert code != 0
    assert "of keyset hs: an HS256 key has no public key" in err
    assert not t.store.exists()


def test_extra_jwk_members_are_refused_at_import_and_never_published(
    tmp_path: Path, clock: ManualClock, capsys: pytest.CaptureFixture[str], exported: Exported
) -> None:
    doc = _add_x5u(json.loads(exported.file.read_text()))
    kid = doc["keysets"][0]["keys"][0]["kid"]
    bad = tmp_path / "x5u.json"
    bad.write_text(retag(doc, exported.source.kek))
    t = deployment(tmp_path, "t", kek_from=exported.source.kek)
    code, _, err = cli(capsys, "backup", "import", str(bad), "--config", t.config)
    assert code != 0
    assert f"key {kid} of keyset default: its public JWK has members the service never writes: x5u" in err
    assert not t.store.exists()

    # Written into the store some other way, such members never reach the JWKS either.
    rt = exported.source.runtime(clock)
    try:
        ks = rt.store.get_keyset("default")
        assert ks is not None
        extra = {"x5u": "https://attacker.example/chain.pem", "x5c": ["AAAA"], "jku": "https://a.example", "d": "AA"}
        keys = tuple(k.with_(public_jwk={**k.public_jwk, **extra}) if k.public_jwk is not None else k for k in ks.keys)
        rt.store.save_keyset(replace(ks, keys=keys), ks.revision)
        rt.keys.refresh(force=True)
        with TestClient(create_app(runtime=rt, background=False), base_url=ISSUER) as http:
            published = http.get("/.well-known/jwks.json").json()["keys"]
        assert {k["kid"] for k in published} == exported.jwks_kids
        for jwk in published:
            assert set(jwk) == {"kty", "crv", "x", "y", "kid", "alg", "use"}, jwk
    finally:
        rt.close()


# ----- issue 11, defect 2: a revocation survives every import -------------------------------------


def states(store_keysets: list[Any]) -> dict[str, str]:
    return {k.kid: k.state.value for ks in store_keysets for k in ks.keys}


def test_import_force_never_brings_a_revoked_key_back(
    tmp_path: Path, clock: ManualClock, capsys: pytest.CaptureFixture[str], exported: Exported
) -> None:
    """The backup was made before an emergency revocation: importing it with --force keeps the key
    revoked, keeps every revoked-token record, and says so; the keyset keeps exactly one current key."""
    a = exported.source
    leaked = kid_of(exported.tokens["new"])
    rt = a.runtime(clock)
    try:
        rt.keys.revoke(leaked, reason="leaked")
        revoked_at = rt.store.get_keyset("default").find(leaked).revoked_at  # type: ignore[union-attr]
        with TestClient(create_app(runtime=rt, background=False), base_url=ISSUER) as http:
            late = get_token(http, *exported.creds["writer"])
            r = http.post("/oauth/revoke", data={"token": late}, headers=basic(*exported.creds["writer"]))
            assert r.status_code == 200
        late_jti = jwt.decode(late, options={"verify_signature": False})["jti"]
        # The writer's secret leaked too: rotated with no grace, the old one stops at once.
        writer_id, _ = exported.creds["writer"]
        _, writer_secret = rt.clients.rotate_secret(writer_id, 0, actor="test")
        before = states(rt.store.list_keysets())
        events_before = len(rt.store.list_audit(limit=10_000))
    finally:
        rt.close()
    assert before[leaked] == "revoked"

    code, _, err = cli(capsys, "backup", "import", str(exported.file), "--config", a.config, "--force")
    assert code == 0, err
    assert (
        f"kept key {leaked} revoked (revoked in the store at {rfc3339(revoked_at)}; the backup has it current)" in err
    )

    store = open_store(load_settings(a.config))
    try:
        after = states(store.list_keysets())
        assert after[leaked] == "revoked"
        assert after == before  # the store was further along for every key the backup knows
        assert late_jti in store.revoked_tokens(clock.now())
        # A backup of this very store: no event is written twice, only the import's own.
        assert len(store.list_audit(limit=10_000)) == events_before + 1
    finally:
        store.close()
    assert f"kept client {writer_id} as the store has it" in err
    rt = a.runtime(clock)  # a normal start
    try:
        for ks in rt.store.list_keysets():
            assert check_invariants(ks.keys) == [], ks.name
        with TestClient(create_app(runtime=rt, background=False), base_url=ISSUER) as http:
            assert leaked not in jwks_kids(http)
            reader = exported.creds["reader"]
            assert introspect(http, *reader, exported.tokens["new"]) == {"active": False}
            assert kid_of(get_token(http, *reader)) != leaked
            assert introspect(http, writer_id, writer_secret, late) == {"active": False}
            old_secret = basic(*exported.creds["writer"])
            r = http.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=old_secret)
            assert r.status_code == 401  # the secret rotated out after the backup stays out
    finally:
        rt.close()


def test_import_that_leaves_no_current_key_is_repaired_at_start(
    tmp_path: Path, clock: ManualClock, capsys: pytest.CaptureFixture[str], exported: Exported
) -> None:
    """The store lost every key but the revoked ones; the backup has the revoked key as current and
    nothing else that may sign. After the import the keyset has no current key; the next start makes
    one (as an emergency revocation would), and exactly one."""
    a = exported.source
    doc = json.loads(exported.file.read_text())
    leaked = kid_of(exported.tokens["new"])
    backup_next = next(k["kid"] for k in doc["keysets"][0]["keys"] if k["state"] == "next")
    rt = a.runtime(clock)
    try:
        rt.keys.revoke(leaked, reason="leaked")
        rt.keys.revoke(backup_next, reason="leaked too")  # promoted by the first revocation
        ks = rt.store.get_keyset("default")
        assert ks is not None
        only_revoked = tuple(k for k in ks.keys if k.state.value == "revoked")
        rt.store.save_keyset(replace(ks, keys=only_revoked), ks.revision)
    finally:
        rt.close()

    code, _, err = cli(capsys, "backup", "import", str(exported.file), "--config", a.config, "--force")
    assert code == 0, err
    assert f"kept key {leaked} revoked" in err and f"kept key {backup_next} revoked" in err
    assert "keyset default has no current key after the import" in err
    store = open_store(load_settings(a.config))
    try:
        imported = store.get_keyset("default")
        assert imported is not None and imported.current is None
    finally:
        store.close()

    rt = a.runtime(clock)
    try:
        ks = rt.store.get_keyset("default")
        assert ks is not None and check_invariants(ks.keys) == []
        assert ks.current is not None and ks.current.kid not in (leaked, backup_next)
        assert ks.find(leaked).state.value == "revoked"  # type: ignore[union-attr]
        with TestClient(create_app(runtime=rt, background=False), base_url=ISSUER) as http:
            published = jwks_kids(http)
            assert leaked not in published and backup_next not in published
            reader = exported.creds["reader"]
            assert introspect(http, *reader, exported.tokens["old"])["active"] is True  # previous: still verifies
            assert introspect(http, *reader, exported.tokens["new"]) == {"active": False}
            assert kid_of(get_token(http, *reader)) == ks.current.kid
    finally:
        rt.close()


# ----- issue 11, defect 13: export -> wipe -> import on every store --------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store for deployment "a": SQLite in its folder, or a Redis database of its own (wiped before
    and after; the service's namespace is fixed, so the test takes database 9 of the server)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/a/jwks.db"
        return
    url = str(request.getfixturevalue("redis_url")).rsplit("/", 1)[0] + "/9"
    wipe_redis(url)
    yield url
    wipe_redis(url)


def wipe_redis(url: str) -> None:
    r = redis.Redis.from_url(url)
    try:
        keys = list(r.scan_iter(match="{jwks}:*", count=1000))
        if keys:
            r.delete(*keys)
    finally:
        r.close()


def test_export_wipe_import_round_trip_on_every_store(
    tmp_path: Path, clock: ManualClock, capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    a = deployment(tmp_path, "a", store_url=store_url)
    rt = a.runtime(clock)
    try:
        reader, reader_secret = rt.clients.create("reader", ["read", "introspect"], ["api"])
        hmac_client, hmac_secret = rt.clients.create("hmac", ["read"], ["api"], keyset="hs")
        with TestClient(create_app(runtime=rt, background=False), base_url=ISSUER) as http:
            old = get_token(http, reader.client_id, reader_secret)
            hs_token = get_token(http, hmac_client.client_id, hmac_secret)
            rt.keys.rotate("default", force=True, reason="before the backup")
            new = get_token(http, reader.client_id, reader_secret)
            gone = get_token(http, reader.client_id, reader_secret)
            r = http.post("/oauth/revoke", data={"token": gone}, headers=basic(reader.client_id, reader_secret))
            assert r.status_code == 200
            jwks_before = http.get("/.well-known/jwks.json").json()
        keysets = {ks.name: ks.keys for ks in rt.store.list_keysets()}
        clients = {c.client_id: c for c in rt.store.list_clients()}
        revoked = rt.store.revoked_tokens(clock.now())
        events = [e.as_dict() | {"id": 0} for e in rt.store.list_audit(limit=10_000)]
        assert len(revoked) == 1 and len(clients) == 2 and len(events) >= 8
    finally:
        rt.close()

    file = tmp_path / "backup.json"
    code, _, err = cli(capsys, "backup", "export", str(file), "--config", a.config)
    assert code == 0, err
    assert f"audit: {len(events)} events" in err

    if store_url.startswith("sqlite:"):
        for path in a.root.glob("jwks.db*"):
            path.unlink()
    else:
        wipe_redis(store_url)
    store = open_store(load_settings(a.config))
    try:
        assert store.is_empty()
    finally:
        store.close()

    code, out, err = cli(capsys, "backup", "import", str(file), "--config", a.config)
    assert code == 0, err
    assert f"imported 2 keysets (5 keys), 2 clients, 1 revoked token, {len(events)} audit events" in out

    store = open_store(load_settings(a.config))
    try:
        assert {ks.name: ks.keys for ks in store.list_keysets()} == keysets
        assert {c.client_id: c for c in store.list_clients()} == clients
        assert store.revoked_tokens(clock.now()) == revoked
        after = [e.as_dict() | {"id": 0} for e in store.list_audit(limit=10_000)]
        assert after[0]["action"] == "backup.import" and after[1:] == events
    finally:
        store.close()
    # Restored into an empty store, the events are chained again in their order: the chain verifies.
    code, out, err = cli(capsys, "audit", "verify", "--config", a.config)
    assert code == 0, err
    assert f"audit log verified: {len(events) + 1} events" in out

    rt = a.runtime(clock)
    try:
        with TestClient(create_app(runtime=rt, background=False), base_url=ISSUER) as http:
            jwks = http.get("/.well-known/jwks.json").json()
            assert jwks == jwks_before
            keys = jwt.PyJWKSet.from_dict(jwks)
            for token in (old, new):
                key = next(k for k in keys.keys if k.key_id == kid_of(token))
                claims = jwt.decode(token, key, algorithms=["ES256"], audience="api", issuer=ISSUER)
                assert claims["client_id"] == reader.client_id
                assert introspect(http, reader.client_id, reader_secret, token)["active"] is True
            assert introspect(http, hmac_client.client_id, hmac_secret, hs_token)["active"] is True
            assert introspect(http, reader.client_id, reader_secret, gone) == {"active": False}
            assert get_token(http, hmac_client.client_id, hmac_secret)
    finally:
        rt.close()


def test_import_force_never_brings_a_deleted_client_back(
    tmp_path: Path, clock: ManualClock, capsys: pytest.CaptureFixture[str], exported: Exported
) -> None:
    """A client deleted after the backup (say, because its secret leaked) stays deleted through an
    import with --force, and the import says so (found in review: it came back with its old secret)."""
    a = exported.source
    writer_id, writer_secret = exported.creds["writer"]
    rt = a.runtime(clock)
    try:
        rt.clients.delete(writer_id, actor="test")
    finally:
        rt.close()
    code, _, err = cli(capsys, "backup", "import", str(exported.file), "--config", a.config, "--force")
    assert code == 0, err
    assert f"skipped client {writer_id}: it was deleted in this store at" in err
    rt = a.runtime(clock)
    try:
        assert rt.store.get_client(writer_id) is None
        with TestClient(create_app(runtime=rt, background=False), base_url=ISSUER) as http:
            r = http.post(
                "/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(writer_id, writer_secret)
            )
            assert r.status_code == 401
            assert get_token(http, *exported.creds["reader"])  # the other clients are as they were
    finally:
        rt.close()


def test_private_key_jwt_clients_round_trip(
    tmp_path: Path, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """A client without a secret keeps its keys (inline) and its jwks_uri through export and import."""
    key = ClientKey("backup-key")
    a = deployment(tmp_path, "a")
    rt = a.runtime(clock)
    try:
        inline, _ = rt.clients.create(
            "inline", ["read"], ["api"], auth_method="private_key_jwt", jwks={"keys": [key.jwk]}
        )
        by_uri, _ = rt.clients.create(
            "by-uri", ["read"], ["api"], auth_method="private_key_jwt", jwks_uri="https://keys.example.com/jwks"
        )
    finally:
        rt.close()
    file = tmp_path / "backup.json"
    assert cli(capsys, "backup", "export", str(file), "--config", a.config)[0] == 0
    b = deployment(tmp_path, "b", kek_from=a.kek)
    code, _, err = cli(capsys, "backup", "import", str(file), "--config", b.config)
    assert code == 0, err
    rt = b.runtime(clock)
    try:
        assert rt.clients.read(inline.client_id) == inline and rt.clients.read(by_uri.client_id) == by_uri
        with TestClient(create_app(runtime=rt, background=False), base_url=ISSUER) as http:
            form = {
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": key.assertion(inline.client_id, ISSUER, clock.now()),
            }
            assert http.post("/oauth/token", data=form).status_code == 200
    finally:
        rt.close()
