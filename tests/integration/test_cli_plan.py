"""`jwks-service keys plan [KEYSET] [--json]` (API.md §6 "Plan"): the admin API's document with --json,
a table and a few sections for people without; read-only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clirun import run, scratch_workdir

from jwks_service.adoption import Adoption, Fetch, KeyAdoption, gate
from jwks_service.cli.plan import print_plan
from jwks_service.clock import rfc3339
from jwks_service.config import load_settings
from jwks_service.model import Keyset, KeysetPolicy, KeyState, KeyVersion
from jwks_service.plan import keyset_plan
from jwks_service.runtime import build_runtime


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return scratch_workdir(tmp_path, monkeypatch)


def test_keys_plan_prints_each_key_the_rotations_the_gate_and_the_what_if(capsys: pytest.CaptureFixture[str]) -> None:
    rt = build_runtime(load_settings())
    summary = rt.keys.summary("default")
    rt.close()
    code, out, err = run(capsys, "keys", "plan")
    assert code == 0, err
    header = next(line for line in out.splitlines() if line.startswith("STATE"))
    assert header.split() == "STATE KID HELD BY PUBLISHED SIGNS FROM STOPS SIGNING STOPS VERIFYING".split()
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith(("next ", "current "))}
    assert set(rows) == {summary["current"], summary["next"]}
    code, doc, _ = run(capsys, "keys", "plan", "default", "--json")
    for key in json.loads(doc)["keys"]:  # the same times, in RFC 3339 and relative
        for moment in ("published", "signing", "stop_signing", "retire"):
            assert f"{key[moment]['at']} (" in rows[key["kid"]]
    assert "(in 180d)" in rows[summary["next"]]  # signs at the rotation, rotation_period from now
    assert out.count("T") and "Next scheduled rotations:" in out
    assert "1. " in out and f"{summary['next']} signs, {summary['current']} stops" in out
    assert "Adoption gate (95% of fetchers must hold next): no fetcher in the window" in out
    assert "without --force it is refused" in out and "0 fetcher(s) would meet an unknown kid" in out
    assert "its last token expires" in out and "(token_ttl + leeway)" in out


def test_keys_plan_json_is_the_admin_document(capsys: pytest.CaptureFixture[str]) -> None:
    build_runtime(load_settings()).close()
    code, out, _ = run(capsys, "keys", "plan", "default", "--json")
    assert code == 0
    plan = json.loads(out)
    assert plan["keyset"] == "default" and [k["state"] for k in plan["keys"]] == ["next", "current"]
    assert len(plan["rotations"]) == 3 and plan["adoption"] == {"fetchers": 0}
    code, out, _ = run(capsys, "keys", "plan", "--json")
    assert [p["keyset"] for p in json.loads(out)["keysets"]] == ["default"]


def test_keys_plan_of_an_unknown_keyset_or_without_a_store(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    code, _, err = run(capsys, "keys", "plan")
    assert code == 1 and "no store" in err
    assert not (workdir / "var").exists()  # read-only: nothing was created
    build_runtime(load_settings()).close()
    code, _, err = run(capsys, "keys", "plan", "nope")
    assert code == 1 and err.strip() == "jwks-service: not_found: no keyset nope (configured: default)"


def test_the_text_names_laggards_and_says_when_the_gate_holds(capsys: pytest.CaptureFixture[str]) -> None:
    t0, day = 1_800_000_000.0, 86400
    policy = KeysetPolicy("ks", "ES256", rotation_period=day, prepublish=3600, verify_window=1230, adoption_gate=0.9)
    keyset = Keyset(
        "ks",
        "ES256",
        "local",
        3,
        (
            KeyVersion("cur", "ks", "ES256", KeyState.CURRENT, t0 - day, {"kty": "EC"}, b"x", activated_at=t0),
            KeyVersion("nxt", "ks", "ES256", KeyState.NEXT, t0, {"kty": "EC"}, b"x"),
        ),
    )
    laggards = tuple(Fetch(f"svc-{i}/1", '"r1"', t0 + i) for i in range(12))
    keys = (KeyAdoption("cur", "current", 20, 1.0), KeyAdoption("nxt", "next", 8, 0.4))
    adopted = Adoption("ks", day, 20, keys, laggards, 12)

    def show(now: float) -> str:
        held = gate(policy, keyset, adopted, due_at=t0 + day, now=now)
        print_plan(keyset_plan(policy, keyset, now, adopted=adopted, gate=held))
        return capsys.readouterr().out

    out = show(t0 + 7200)
    assert "closed for now: 40% of 20 fetchers hold next, 90% needed (the rotation is due in 22h;" in out
    assert "12 fetcher(s) would meet an unknown kid" in out and 'svc-0/1  holds "r1"' in out
    assert "svc-9/1" in out and "svc-10/1" not in out and "... and 2 more" in out
    assert "it needs no --force" in out

    out = show(t0 + day + 600)
    due = rfc3339(t0 + day)
    assert f"1. {due} (due 10m ago): nxt signs, cur stops; waiting for adoption, at the latest" in out
    assert "closed for now" not in out and "waiting for adoption of next: 40% of 20 fetchers hold it" in out
