"""The command line: same store as the server, clear errors, JSON output."""

from __future__ import annotations

import getpass
import json
import os
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from clirun import run, scratch_workdir

from jwks_service.algorithms import ALGORITHMS
from jwks_service.backends.local import LocalBackend
from jwks_service.cli import build_parser
from jwks_service.clock import ManualClock, parse_rfc3339
from jwks_service.config import load_settings
from jwks_service.http import openapi
from jwks_service.model import AuditEvent, KeyState
from jwks_service.runtime import build_runtime, open_store


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return scratch_workdir(tmp_path, monkeypatch)


def first_start() -> None:
    """What the server's first start does here: store, KEK and keys made (read-only commands make none)."""
    build_runtime(load_settings()).close()


def test_check_config_prints_derived_windows(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check-config")
    assert code == 0
    assert "embedded defaults" in out
    assert "default  ES256  local" in out
    assert "1230s" in out or "20m30s" in out  # 15m + 30s + 5m


def test_bad_config_is_refused_with_one_line_per_problem(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    cfg = workdir / "bad.toml"
    cfg.write_text(
        '[jwks]\nmax_age = "10m"\n[keysets.a]\nalg = "HS256"\nkey_size = 128\nprepublish = "5m"\n'
        '[keysets.b]\nalg = "RS999"\n'
    )
    code, out, err = run(capsys, "check-config", "--config", str(cfg))
    assert code == 2
    assert "keysets.a.key_size" in err and "keysets.a.prepublish" in err and "keysets.b.alg" in err
    assert "Traceback" not in err and out == ""
    assert not (workdir / "var").exists()  # nothing started half-configured


def test_alg_change_with_existing_keys_is_refused(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    first_start()
    cfg = workdir / "rs.toml"
    cfg.write_text('[keysets.default]\nalg = "RS256"\n')
    code, _, err = run(capsys, "keys", "list", "--config", str(cfg))
    assert code == 2
    assert "keysets.default.alg" in err and "ES256" in err


def test_keys_list_json_and_rotation_rules(capsys: pytest.CaptureFixture[str]) -> None:
    first_start()
    code, out, err = run(capsys, "keys", "list", "--json")
    assert code == 0
    keys = json.loads(out)["keys"]
    assert sorted(k["state"] for k in keys) == ["current", "next"]
    code, _, err = run(capsys, "keys", "rotate", "default")
    assert code == 1
    assert "rotation_refused" in err and "prepublish" in err
    code, out, _ = run(capsys, "keys", "rotate", "default", "--force", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["current"] == next(k["kid"] for k in keys if k["state"] == "next")
    assert result["previous"] == next(k["kid"] for k in keys if k["state"] == "current")


def test_unknown_things_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "keys", "rotate", "nope")
    assert code == 1
    assert "no keyset nope" in err
    code, _, err = run(capsys, "keys", "revoke", "no-such-kid", "--reason", "x")
    assert code == 1
    assert "no key with kid no-such-kid" in err
    code, _, err = run(capsys, "token", "no-such-client")
    assert code == 1
    assert "no client no-such-client" in err
    code, _, err = run(capsys, "clients", "create", "x", "--scope", "bad scope\x7f", "--audience", "api")
    assert code == 1
    assert "scope" in err
    code, _, err = run(capsys, "clients", "create", "x", "--scope", "a", "--audience", "api", "--keyset", "zzz")
    assert code == 1
    assert "unknown keyset" in err


def test_clients_and_token(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "clients",
        "create",
        "svc",
        "--scope",
        "read",
        "--scope",
        "write",
        "--audience",
        "api",
        "--ttl",
        "5m",
        "--json",
    )
    assert code == 0
    created = json.loads(out)
    # The admin API's client document (API.md §3): token_ttl as a duration, times in RFC 3339.
    assert len(created["client_secret"]) >= 43 and created["token_ttl"] == "5m"
    assert created["created_at"].endswith("Z") and created["valid_secrets"] == 1
    code, out, _ = run(capsys, "clients", "list", "--json")
    listed = json.loads(out)["clients"]
    assert [c["client_id"] for c in listed] == [created["client_id"]]
    assert "client_secret" not in listed[0] and "secrets" not in listed[0]
    code, out, _ = run(capsys, "token", created["client_id"])
    assert code == 0
    assert out.count(".") == 2


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _create_client_in_the_past(days: float) -> tuple[str, float]:
    """A client whose only secret was issued `days` ago, on the CLI's default store."""
    clock = ManualClock(time.time() - days * 86400)
    rt = build_runtime(load_settings(), clock)
    try:
        client, _ = rt.clients.create("old", ["read"], ["api"])
    finally:
        rt.close()
    return client.client_id, client.created_at


def test_clients_list_shows_secret_age_and_due_date(capsys: pytest.CaptureFixture[str]) -> None:
    old_id, old_created = _create_client_in_the_past(100)
    code, out, _ = run(capsys, "clients", "create", "fresh", "--scope", "read", "--audience", "api", "--json")
    assert code == 0
    fresh_id = json.loads(out)["client_id"]
    assert run(capsys, "clients", "rotate-secret", fresh_id, "--grace", "1h")[0] == 0

    code, out, _ = run(capsys, "clients", "list", "--json")
    assert code == 0
    listed = {c["client_id"]: c for c in json.loads(out)["clients"]}
    old, fresh = listed[old_id], listed[fresh_id]
    assert old["secret_created_at"] == _rfc3339(old_created)
    assert old["secret_due_at"] == _rfc3339(old_created + 90 * 86400)
    assert old["secret_overdue"] is True and old["valid_secrets"] == 1
    assert time.time() - 60 <= parse_rfc3339(fresh["secret_created_at"]) <= time.time()
    assert fresh["secret_overdue"] is False
    assert fresh["valid_secrets"] == 2  # the old secret still works during its grace
    assert "secrets" not in old and "client_secret" not in old

    code, out, err = run(capsys, "clients", "list")
    assert code == 0
    header, *rows = out.splitlines()
    assert "SECRET_AGE" in header and "SECRET_DUE" in header
    old_row = next(r for r in rows if r.startswith(old_id))
    fresh_row = next(r for r in rows if r.startswith(fresh_id))
    assert "100d" in old_row and old_row.endswith("OVERDUE  1")
    assert "OVERDUE" not in fresh_row
    assert "1 client secret is older than clients.secret_max_age (90d)" in err

    # A longer policy (with a warning from check-config) moves the due date.
    code, out, _ = run(capsys, "clients", "list", "--json", "--config", _config("[clients]\nsecret_max_age = '200d'\n"))
    assert code == 0
    assert all(not c["secret_overdue"] for c in json.loads(out)["clients"])


def test_json_output_has_the_admin_api_field_names(capsys: pytest.CaptureFixture[str]) -> None:
    """`--json` prints what the admin API answers (views.py), so each document has the members its
    OpenAPI schema names: no field is called one thing on the command line and another over HTTP."""
    schemas = openapi.document()["components"]["schemas"]

    def members(name: str) -> set[str]:
        return set(schemas[name]["properties"])

    # A client's key source (private_key_jwt) and its secret's status (a secret) exclude each other.
    key_source, secret_status = {"jwks", "jwks_uri"}, {"secret_created_at", "secret_due_at", "secret_overdue"}
    secret_client = members("Client") - key_source
    code, out, err = run(capsys, "clients", "create", "svc", "--scope", "read", "--audience", "api", "--json")
    assert code == 0, err
    created = json.loads(out)
    assert set(created) == secret_client | {"client_secret"}
    code, out, _ = run(capsys, "clients", "list", "--json")
    assert [set(c) for c in json.loads(out)["clients"]] == [secret_client]
    code, out, _ = run(capsys, "clients", "show", created["client_id"], "--json")
    assert set(json.loads(out)) == secret_client | {"secrets"}
    uri = ("--auth", "private_key_jwt", "--jwks-uri", "https://keys.example.com/jwks.json")
    code, out, err = run(capsys, "clients", "create", "keyed", "--scope", "read", "--audience", "api", *uri, "--json")
    assert code == 0, err
    assert set(json.loads(out)) == members("Client") - secret_status - {"valid_secrets", "jwks"}
    code, out, _ = run(capsys, "clients", "rotate-secret", created["client_id"], "--grace", "1h", "--json")
    rotated = json.loads(out)
    assert set(rotated) == members("SecretResponse")
    assert 3600 - 60 <= parse_rfc3339(rotated["previous_secrets_expire_at"]) - time.time() <= 3600
    code, out, _ = run(capsys, "keys", "rotate", "default", "--force", "--json")
    # laggards: listed when adoption is known (API.md §6)
    assert members("RotateResponse") - {"laggards"} <= set(json.loads(out)) <= members("RotateResponse")
    code, out, _ = run(capsys, "keys", "list", "--json")
    keys = json.loads(out)["keys"]
    key_members = set(schemas["Keysets"]["properties"]["keysets"]["items"]["properties"]["keys"]["items"]["properties"])
    assert all(set(k) == key_members | {"keyset", "alg", "next_rotation_at"} for k in keys)
    current = next(k for k in keys if k["state"] == "current")
    code, out, err = run(capsys, "keys", "taint", current["kid"], "--reason", "suspect", "--json")
    assert code == 0, err
    tainted = json.loads(out)
    assert members("TaintKeyResponse") - {"laggards"} <= set(tainted) <= members("TaintKeyResponse")
    assert tainted["tainted"] == current["kid"] and tainted["current"] != current["kid"]
    code, out, _ = run(capsys, "keys", "list", "--json")
    after = {k["kid"]: k for k in json.loads(out)["keys"]}
    assert after[current["kid"]]["state"] == "previous" and after[current["kid"]]["tainted_at"] is not None
    code, out, _ = run(capsys, "keys", "revoke", current["kid"], "--reason", "test", "--json")
    assert members("RevokeKeyResponse") - {"laggards"} <= set(json.loads(out)) <= members("RevokeKeyResponse")
    assert json.loads(out)["current"] == tainted["current"]  # a tainted key's revocation rotates nothing more
    code, _, err = run(capsys, "keys", "taint", tainted["next"], "--reason", "x")
    assert code != 0 and "only a current or previous key" in err


def _config(text: str) -> str:
    path = Path("extra.toml")
    path.write_text(text)
    return str(path)


def test_clients_show_and_delete(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "clients", "create", "svc", "--scope", "read", "--audience", "api", "--json")
    client_id = json.loads(out)["client_id"]
    assert run(capsys, "clients", "rotate-secret", client_id, "--grace", "2h")[0] == 0

    code, out, _ = run(capsys, "clients", "show", client_id, "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["client_id"] == client_id and shown["name"] == "svc" and shown["scopes"] == ["read"]
    assert shown["valid_secrets"] == 2 and shown["secret_overdue"] is False
    assert [set(s) for s in shown["secrets"]] == [{"created_at", "expires_at", "valid"}] * 2
    assert shown["secrets"][0]["expires_at"] is not None and shown["secrets"][1]["expires_at"] is None
    assert "digest" not in out and '"client_secret"' not in out  # the member; a method may be named client_secret_basic

    code, out, _ = run(capsys, "clients", "show", client_id)
    assert code == 0
    assert f"client_id:   {client_id}" in out and "secrets:     2 valid" in out and "valid until" in out

    code, out, _ = run(capsys, "clients", "delete", client_id)
    assert code == 0 and f"deleted client {client_id}" in out
    code, out, _ = run(capsys, "clients", "list", "--json")
    assert json.loads(out)["clients"] == []
    for argv in (("clients", "show", client_id), ("clients", "delete", client_id)):
        code, out, err = run(capsys, *argv)
        assert code == 1 and out == ""
        assert f"not_found: no client {client_id}" in err

    store = open_store(load_settings())
    try:
        actions = [(e.action, e.target, e.actor) for e in store.list_audit()]
    finally:
        store.close()
    actor = f"cli:{getpass.getuser()}"  # CLI actions name the OS user
    assert ("client.delete", client_id, actor) in actions
    assert actions.count(("client.delete", client_id, actor)) == 1  # the refused second delete is not audited


def test_check_config_next_rotation_without_creating_anything(
    capsys: pytest.CaptureFixture[str], workdir: Path
) -> None:
    code, out, err = run(capsys, "check-config")
    assert code == 0
    assert "default: next rotation: (no keys yet)" in out
    assert "warning" not in err  # the embedded defaults sit inside the rotation presets
    assert not (workdir / "var").exists()  # neither store nor KEK created

    first_start()
    code, out, _ = run(capsys, "keys", "list", "--json")
    current = next(k for k in json.loads(out)["keys"] if k["state"] == "current")
    cfg = _config('[keysets.default]\nalg = "ES256"\n[keysets.hs]\nalg = "HS256"\n')
    code, out, err = run(capsys, "check-config", "--config", cfg)
    assert code == 0, err
    expected = _rfc3339(parse_rfc3339(current["activated_at"]) + 180 * 86400)
    assert (
        f"default: next rotation: {expected} (in 179d 23h" in out
        or f"default: next rotation: {expected} (in 180d" in out
    )
    assert "hs: next rotation: (no keys yet)" in out


def test_check_config_warns_outside_presets(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(
        '[clients]\nsecret_max_age = "365d"\n'
        '[keysets.default]\nalg = "ES256"\nrotation_period = "30d"\n'
        '[keysets.hs]\nalg = "HS256"\nrotation_period = "365d"\n'
        '[keysets.ok]\nalg = "HS256"\nrotation_period = "60d"\n'
    )
    code, out, err = run(capsys, "check-config", "--config", cfg)
    assert code == 0
    assert "configuration OK" in out
    warnings = err.splitlines()
    assert all(w.startswith("warning: ") for w in warnings)
    assert len(warnings) == 3
    assert any("keysets.default.rotation_period: 30d" in w for w in warnings)
    assert any("keysets.hs.rotation_period: 365d" in w for w in warnings)
    assert any("clients.secret_max_age: 365d" in w for w in warnings)


def test_check_config_refuses_an_alg_change_against_existing_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    first_start()
    code, out, err = run(capsys, "check-config", "--config", _config('[keysets.default]\nalg = "RS256"\n'))
    assert code == 2 and "configuration OK" not in out
    assert "keysets.default.alg" in err and "ES256" in err


def _dash_kid_as_next() -> str:
    """Make the default keyset's `next` key one whose kid (its RFC 7638 thumbprint) starts with '-',
    as about one key in 64 does, sealed under the CLI's own KEK: a real key, as the service makes them."""
    rt = build_runtime(load_settings())
    try:
        backend = LocalBackend(rt.kek.derive("local-keys"))
        for _ in range(5000):  # P(no '-' first in 5000 tries) = (63/64)^5000, about 1e-34
            made = backend.generate("default", ALGORITHMS["ES256"], 256)
            if made.kid.startswith("-"):
                break
        else:
            raise AssertionError("no kid starting with '-' in 5000 keys")
        ks = rt.store.get_keyset("default")
        assert ks is not None and ks.next is not None
        dash = replace(ks.next, kid=made.kid, public_jwk=made.public_jwk, sealed_private=made.sealed_private)
        keys = tuple(dash if k.state == KeyState.NEXT else k for k in ks.keys)
        rt.store.save_keyset(replace(ks, keys=keys), ks.revision)
    finally:
        rt.close()
    return made.kid


@pytest.mark.parametrize("form", ["as-typed", "after-double-dash", "option-first"])
def test_keys_revoke_takes_a_kid_that_starts_with_a_dash(capsys: pytest.CaptureFixture[str], form: str) -> None:
    kid = _dash_kid_as_next()
    argv = {
        "as-typed": ("keys", "revoke", kid, "--reason", "leaked", "--json"),
        "after-double-dash": ("keys", "revoke", "--reason", "leaked", "--json", "--", kid),
        "option-first": ("keys", "revoke", "--reason", "leaked", kid, "--json"),
    }[form]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert json.loads(out)["revoked"] == kid
    code, out, _ = run(capsys, "keys", "list", "--json")
    assert {k["kid"]: k["state"] for k in json.loads(out)["keys"]}[kid] == "revoked"


def test_values_that_start_with_a_dash_are_values(capsys: pytest.CaptureFixture[str]) -> None:
    # A client id (or a reason) that starts with '-' reaches the command, which names it.
    first_start()
    for argv in (("clients", "show", "-x1"), ("clients", "delete", "-x1"), ("token", "-x1")):
        code, out, err = run(capsys, *argv)
        assert code == 1 and out == "", err
        assert "no client -x1" in err
    code, _, err = run(capsys, "keys", "revoke", "-hx", "--reason", "-because")
    assert code == 1 and "no key with kid -hx" in err  # '-hx' is no `-h x`
    # Options still work, abbreviated too, and `--` still ends them.
    args = build_parser().parse_args(["keys", "revoke", "--reas=r", "--js", "--", "--json"])
    assert (args.kid, args.reason, args.json) == ("--json", "r", True)


def test_token_issue_is_audited_without_the_token(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "clients", "create", "svc", "--scope", "read", "--audience", "api", "--json")
    client_id = json.loads(out)["client_id"]
    code, out, err = run(capsys, "token", client_id)
    assert code == 0, err
    token = out.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    kid = jwt.get_unverified_header(token)["kid"]

    store = open_store(load_settings())
    try:
        events = [e for e in store.list_audit() if e.action == "token.issue"]
    finally:
        store.close()
    assert len(events) == 1
    event = events[0]
    assert event.target == client_id and event.outcome == "ok"
    assert event.actor == f"cli:{getpass.getuser()}"
    assert event.details["kid"] == kid and event.details["jti"] == claims["jti"]
    assert event.details["scope"] == "read" and event.details["audience"] == "api"
    assert token not in json.dumps(event.as_dict())  # never the token itself
    for part in token.split("."):
        assert part not in json.dumps(event.as_dict())


def test_cli_actions_name_the_os_user(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGNAME", "alice")
    assert run(capsys, "clients", "create", "svc", "--scope", "read", "--audience", "api")[0] == 0
    assert run(capsys, "keys", "rotate", "default", "--force")[0] == 0
    store = open_store(load_settings())
    try:
        actors = {(e.action, e.actor) for e in store.list_audit()}
    finally:
        store.close()
    assert ("client.create", "cli:alice") in actors and ("key.rotated", "cli:alice") in actors, actors


def test_audit_prune_deletes_events_past_retention(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "audit", "prune")
    assert code == 1 and "no store" in err  # never creates one
    store = open_store(load_settings())
    try:  # old events first: a prune deletes the oldest by id, up to the first one it keeps
        now = time.time()
        store.append_audit(
            [AuditEvent(at=now - 401 * 86400 - i, actor="x", action="test.old", target=str(i)) for i in range(2500)]
            + [AuditEvent(at=now - 300 * 86400, actor="x", action="test.kept", target="k")]
        )
    finally:
        store.close()
    first_start()  # its events are newer than the old ones, so they do not hold the prune back
    assert run(capsys, "keys", "list")[0] == 0
    code, out, err = run(capsys, "audit", "prune")
    assert code == 0, err
    assert out.startswith("pruned 2500 audit events older than ") and "(audit.retention 400d)" in out
    code, out, _ = run(capsys, "audit", "prune", "--config", _config('[audit]\nretention = "200d"\n'))
    assert code == 0 and out.startswith("pruned 1 audit event older than ")
    store = open_store(load_settings())
    try:
        events = store.list_audit(limit=10_000)
    finally:
        store.close()
    assert not [e for e in events if e.action.startswith("test.")]
    pruned = [e for e in events if e.action == "audit.prune"]
    assert [e.details["deleted"] for e in pruned] == [1, 2500]  # one event per command, newest first
    assert pruned[0].actor == f"cli:{getpass.getuser()}"


def test_rotate_secret_refuses_an_unbounded_grace_before_writing(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 11, defect 8: `--grace 999999999d` is refused with a message naming the bound; nothing is written."""
    code, out, _ = run(capsys, "clients", "create", "svc", "--scope", "read", "--audience", "api", "--json")
    client_id = json.loads(out)["client_id"]
    settings = load_settings()
    store = open_store(settings)
    try:
        before = store.get_client(client_id)
    finally:
        store.close()
    for grace in ("999999999d", "31d"):
        code, out, err = run(capsys, "clients", "rotate-secret", client_id, "--grace", grace)
        assert code != 0 and "--grace" in err and "30d" in err, err
        assert "Traceback" not in err and not out
    store = open_store(settings)
    try:
        assert store.get_client(client_id) == before
    finally:
        store.close()
    assert run(capsys, "clients", "rotate-secret", client_id, "--grace", "30d")[0] == 0


def test_the_cli_actor_is_the_os_user_or_else_the_uid(monkeypatch: pytest.MonkeyPatch) -> None:
    from jwks_service.cli import common

    assert common.actor() == f"cli:{getpass.getuser()}"

    def nobody() -> str:
        raise OSError("no user name")

    monkeypatch.setattr(getpass, "getuser", nobody)
    assert common.actor() == f"cli:{os.getuid()}"
