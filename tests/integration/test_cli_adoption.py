"""`jwks-service keys adoption [KEYSET] [--json]`: the store's adoption records, as the admin API shows them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from clirun import run, scratch_workdir

from jwks_service.adoption import Fetch
from jwks_service.config import load_settings
from jwks_service.runtime import build_runtime, open_store


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return scratch_workdir(tmp_path, monkeypatch)


def test_keys_adoption_prints_holders_and_laggards(capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings()
    rt = build_runtime(settings)
    keyset = rt.keys.snapshot.keysets["default"]
    etag = rt.keys.snapshot.jwks.etag
    rt.close()
    assert keyset.current is not None and keyset.next is not None
    now = time.time()
    store = open_store(settings)
    store.record_fetches(
        [Fetch("orders-api/1a2b3c4d", etag, now - 60), Fetch("10.0.0.7 PyJWT/2.9", '"older"', now - 120)],
        {etag: [keyset.current.kid, keyset.next.kid], '"older"': [keyset.current.kid]},
        now=now,
        window=settings.adoption.window,
        max_fetchers=settings.adoption.max_fetchers,
    )
    store.close()

    code, out, _ = run(capsys, "keys", "adoption", "default", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["fetchers"] == 2
    assert {k["kid"]: k["holding"] for k in doc["keys"]} == {keyset.current.kid: 2, keyset.next.kid: 1}
    assert [g["fetcher"] for g in doc["laggards"]] == ["10.0.0.7 PyJWT/2.9"]

    code, out, _ = run(capsys, "keys", "adoption")
    assert code == 0
    assert "keyset default: 2 fetchers in the last 1d" in out
    assert "50.0%" in out and "100.0%" in out
    assert "10.0.0.7 PyJWT/2.9" in out and "orders-api/1a2b3c4d" not in out  # laggards only

    code, out, _ = run(capsys, "keys", "adoption", "--json")
    assert [d["keyset"] for d in json.loads(out)["keysets"]] == ["default"]


def test_keys_adoption_names_an_unknown_keyset(capsys: pytest.CaptureFixture[str]) -> None:
    build_runtime(load_settings()).close()
    code, out, err = run(capsys, "keys", "adoption", "nope")
    assert code != 0 and out == ""
    assert "nope" in err and "Traceback" not in err
