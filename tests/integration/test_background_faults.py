"""Faults of Redis and Vault against the background work of a replica (issue 11).

- A hung Vault (SIGSTOP) stalls the scheduler, which asks Transit for key versions made out of band;
  the reload of the revocation list must go on meanwhile, so introspection of tokens of a local
  keyset keeps answering (defect 11).
- A Redis restart shorter than REVOCATION_STALENESS must not make introspection refuse to vouch:
  staleness counts from the last successful refresh, not from the first failed one.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from redisserver import RedisServer
from starlette.testclient import TestClient
from support import ISSUER, basic, make_settings

from jwks_service.clock import ManualClock
from jwks_service.errors import StoreError, UnavailableError
from jwks_service.http import create_app
from jwks_service.issuance import REVOCATION_STALENESS
from jwks_service.runtime import build_runtime

pytestmark = pytest.mark.chaos

GRANT = {"grant_type": "client_credentials"}


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.slow
def test_hung_vault_does_not_delay_the_revocation_refresh(
    openbao: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", openbao.root_token)
    vault_keyset = f"hung-{uuid.uuid4().hex[:8]}"  # the OpenBao server is shared by the session
    keysets = {"default": {"alg": "ES256"}, vault_keyset: {"alg": "ES256", "backend": "vault"}}
    rt = build_runtime(make_settings(tmp_path, keysets, vault={"addr": openbao.addr}))  # the system clock
    try:
        client, secret = rt.clients.create("svc", ["read"], ["api"])
        auth = basic(client.client_id, secret)
        with TestClient(create_app(runtime=rt), base_url=ISSUER) as http:  # with the background tasks
            token = http.post("/oauth/token", data=GRANT, headers=auth).json()["access_token"]
            assert http.post("/oauth/introspect", data={"token": token}, headers=auth).json()["active"] is True
            stop = threading.Event()
            asked: list[float] = []

            def every_tick_asks_vault() -> None:
                # The scheduler asks Vault for out-of-band versions every 10 s; make it ask at every
                # tick, so that it is stuck in Vault's timeout for the whole freeze.
                while not stop.wait(0.1):
                    asked.append(rt.keys.rotation._adoption_checked.get(vault_keyset, 0.0))
                    rt.keys.rotation._adoption_checked.clear()

            statuses: Counter[int] = Counter()
            frozen_at = time.time()
            pusher = threading.Thread(target=every_tick_asks_vault)
            with frozen(openbao.pid):
                pusher.start()
                try:
                    deadline = time.monotonic() + REVOCATION_STALENESS + 3
                    while time.monotonic() < deadline:
                        r = http.post("/oauth/introspect", data={"token": token}, headers=auth)
                        statuses[r.status_code] += 1
                        time.sleep(0.05)
                finally:
                    stop.set()
                    pusher.join()
    finally:
        rt.close()
    assert set(statuses) == {200}, f"introspection during a Vault freeze: {dict(statuses)}"
    assert max(asked) > frozen_at, "the scheduler never asked the frozen Vault: the test proves nothing"


def test_a_store_blip_shorter_than_the_staleness_limit_keeps_introspection_vouching(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path, appendfsync="always")
    redis.start()
    kek = tmp_path / "kek"
    kek.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    kek.chmod(0o600)
    clock = ManualClock(float(int(time.time())))
    rt = build_runtime(make_settings(tmp_path, store={"url": redis.url}), clock)
    try:
        client, _ = rt.clients.create("svc", ["read"], ["api"])
        token = rt.keys.issue(client, "read", "api").token
        assert rt.keys.introspect(token).claims["sub"] == client.client_id
        redis.stop()  # the same as a restart: down, and back with its data (append-only file)
        clock.advance(1)
        with pytest.raises(StoreError):
            rt.keys.refresh()
        # One failed refresh, a second after the last good one: tokens are still vouched for.
        assert rt.keys.introspect(token).claims["sub"] == client.client_id
        clock.advance(REVOCATION_STALENESS - 1.5)
        with pytest.raises(StoreError):
            rt.keys.refresh()
        assert rt.keys.introspect(token).claims["sub"] == client.client_id
        # Past the limit since the last successful refresh: no longer.
        clock.advance(1)
        with pytest.raises(UnavailableError, match="stale"):
            rt.keys.introspect(token)
        assert "store" in rt.keys.readiness()
        redis.start()
        rt.keys.refresh()
        assert rt.keys.introspect(token).claims["sub"] == client.client_id
        assert rt.keys.readiness() == {}
    finally:
        rt.close()
        redis.stop()
