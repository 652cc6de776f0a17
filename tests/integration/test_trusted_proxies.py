"""X-Forwarded-For is believed only from the proxies named in `[http] trusted_proxies` (issue 11, defect 9).

`jwks-service serve` as a real uvicorn process. uvicorn's own defaults trust X-Forwarded-For from
127.0.0.1, so a local client (or a same-host proxy that passes the header through) could pick any
source address: dodge the failed-login throttle with a new forged address per request, or lock a
victim's address out.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest
from support import free_port, wait_until

from bench.baoserver import stop_process
from jwks_service.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "jwks_service"]
PER_ADDRESS = 50  # failed client authentications per source address and minute (API.md §3)
GRANT = {"grant_type": "client_credentials"}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., str]]:
    procs: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(**env: str) -> str:
        port = free_port()
        workdir = tmp_path / str(port)
        workdir.mkdir()
        base = f"http://127.0.0.1:{port}"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("JWKS_") and k != "FORWARDED_ALLOW_IPS"}
        environ |= {"JWKS_ISSUER": base, "JWKS_LISTEN": f"127.0.0.1:{port}", **env}
        log = (workdir / "server.log").open("wb")
        procs.append((subprocess.Popen([*CLI, "serve"], cwd=workdir, env=environ, stdout=log, stderr=log), log))
        wait_until(lambda: httpx.get(f"{base}/readyz", timeout=1).status_code == 200, timeout=30)
        return base

    yield start
    for proc, log in procs:
        stop_process(proc)
        log.close()


def failed_login(http: httpx.Client, base: str, n: int, forwarded_for: str | None) -> int:
    """One failed client authentication (a new unknown client id each time: only the per-address
    limit applies); the status code."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    r = http.post(f"{base}/oauth/token", data=GRANT, auth=(f"nobody-{n}", "wrong"), headers=headers)
    assert r.status_code in (401, 429), r.text
    return r.status_code


def test_forged_forwarded_for_from_loopback_is_ignored_by_default(serve: Callable[..., str]) -> None:
    base = serve()
    with httpx.Client(timeout=10) as http:
        codes = [failed_login(http, base, n, f"1.2.3.{n}") for n in range(PER_ADDRESS)]
        assert codes == [401] * PER_ADDRESS
        # Throttled as 127.0.0.1, whatever address the header claims.
        assert failed_login(http, base, 1000, "9.9.9.9") == 429
        assert failed_login(http, base, 1001, None) == 429


def test_trusted_proxy_forwarded_for_is_the_client_address(serve: Callable[..., str]) -> None:
    base = serve(JWKS_HTTP__TRUSTED_PROXIES="127.0.0.1")
    with httpx.Client(timeout=10) as http:
        codes = [failed_login(http, base, n, "1.2.3.4") for n in range(PER_ADDRESS)]
        assert codes == [401] * PER_ADDRESS
        assert failed_login(http, base, 1000, "1.2.3.4") == 429  # that client is throttled...
        assert failed_login(http, base, 1001, "5.6.7.8") == 401  # ...not every client behind the proxy
        assert failed_login(http, base, 1002, None) == 401  # nor the proxy itself


def test_trusted_proxies_take_networks(serve: Callable[..., str]) -> None:
    base = serve(JWKS_HTTP__TRUSTED_PROXIES="10.0.0.0/8, 127.0.0.0/8")
    with httpx.Client(timeout=10) as http:
        for n in range(PER_ADDRESS):
            failed_login(http, base, n, "1.2.3.4")
        assert failed_login(http, base, 1000, "1.2.3.4") == 429
        assert failed_login(http, base, 1001, "5.6.7.8") == 401


def test_trusted_proxies_setting_is_validated() -> None:
    from jwks_service.config import build_settings, load_settings
    from jwks_service.errors import ConfigError

    assert load_settings(environ={}).trusted_proxies == ()
    settings = load_settings(environ={"JWKS_HTTP__TRUSTED_PROXIES": "10.203.47.10, 10.0.0.0/8 ::1"})
    assert settings.trusted_proxies == ("10.203.47.10", "10.0.0.0/8", "::1")
    assert build_settings({"http": {"trusted_proxies": ["192.168.0.0/16"]}}).trusted_proxies == ("192.168.0.0/16",)
    for bad in (["proxy.example"], ["10.0.0.1/8"], "*", [5], {"a": 1}):
        with pytest.raises(ConfigError, match=r"http\.trusted_proxies"):
            build_settings({"http": {"trusted_proxies": bad}})


def test_a_jwks_fetcher_behind_a_trusted_proxy_is_named_by_the_forwarded_address(
    serve: Callable[..., str], tmp_path: Path
) -> None:
    base = serve(JWKS_HTTP__TRUSTED_PROXIES="127.0.0.1")
    port = base.rsplit(":", 1)[1]
    with httpx.Client(timeout=10) as http:
        headers = {"User-Agent": "PyJWT/2.9", "X-Forwarded-For": "203.0.113.7"}
        assert http.get(f"{base}/.well-known/jwks.json", headers=headers).status_code == 200
    store = SQLiteStore(tmp_path / port / "var" / "jwks.db")
    try:
        wait_until(lambda: [f.fetcher for f in store.list_fetches(0.0)] == ["203.0.113.7 PyJWT/2.9"], timeout=10)
    finally:
        store.close()
