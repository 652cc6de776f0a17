"""`[vault] ca_file` and `namespace` against a real OpenBao with TLS (`bao server -dev-tls`, its own CA)
and a namespace (`bao namespace create`); and what a missing Transit mount looks like (API.md §8).

Transit is enabled in the namespace `team-a` only: the root namespace has no Transit engine.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import make_settings

from bench.baoserver import bao_binary, free_port, stop_process
from jwks_service.algorithms import ALGORITHMS
from jwks_service.backends.vault import VaultBackend
from jwks_service.config import VaultSettings
from jwks_service.errors import ConfigError, UnavailableError
from jwks_service.http.wellknown import public_problems
from jwks_service.runtime import build_runtime
from jwks_service.vault_auth import VaultAuth
from jwks_service.vaultapi import VaultMountError, VaultRequest

NAMESPACE = "team-a"


@dataclass
class TlsBao:
    addr: str
    ca_file: str
    token: str


@pytest.fixture(scope="module")
def tls_bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBao]:
    workdir = tmp_path_factory.mktemp("bao-tls")
    port, token = free_port(), "root-" + secrets.token_urlsafe(12)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["HOME"] = str(workdir)
    args = [
        bao_binary(),
        "server",
        "-dev",
        "-dev-tls",
        f"-dev-tls-cert-dir={workdir}",
        f"-dev-root-token-id={token}",
        f"-dev-listen-address=127.0.0.1:{port}",
        "-dev-no-store-token",
    ]
    with (workdir / "bao.log").open("ab") as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        ca = workdir / "vault-ca.pem"
        addr = f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                context = __import__("ssl").create_default_context(cafile=str(ca))
                with urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=1, context=context) as r:  # noqa: S310
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("bao server -dev-tls did not start:\n" + (workdir / "bao.log").read_text()[-2000:])
            time.sleep(0.1)
        cli_env = {**env, "BAO_ADDR": addr, "BAO_TOKEN": token, "BAO_CACERT": str(ca)}
        for command in (["namespace", "create", NAMESPACE], ["secrets", "enable", f"-ns={NAMESPACE}", "transit"]):
            subprocess.run([bao_binary(), *command], env=cli_env, check=True, capture_output=True, timeout=30)
        yield TlsBao(addr, str(ca), token)
    finally:
        stop_process(proc)


def auth(bao: TlsBao, **settings: Any) -> VaultAuth:
    return VaultAuth(
        VaultSettings(addr=bao.addr, **settings), needed_by="test", environ={"VAULT_TOKEN": bao.token}, timeout=5
    )


def test_ca_file_and_namespace_reach_transit_in_the_namespace_on_both_drivers(tls_bao: TlsBao) -> None:
    vault = auth(tls_bao, ca_file=tls_bao.ca_file, namespace=NAMESPACE)
    try:
        vault.login(strict=True)
        backend = VaultBackend(vault.client)
        new = backend.generate("ns", ALGORITHMS["ES256"], 256)  # httpx: keys are made in the namespace's Transit
        assert new.public_jwk is not None and new.public_jwk["kty"] == "EC"
        # aiohttp, the batched signing path: same CA, same namespace header.
        answer = asyncio.run(vault.client.acall(VaultRequest.get("transit/keys/jwks-ns", replayable=True)))
        assert answer["data"]["name"] == "jwks-ns"
    finally:
        vault.close()


def test_without_the_ca_file_the_certificate_is_refused(tls_bao: TlsBao) -> None:
    vault = auth(tls_bao)
    try:
        with pytest.raises(UnavailableError, match="unreachable"):
            vault.client.call(VaultRequest.get("sys/health", replayable=True))
    finally:
        vault.close()


def test_an_unreadable_ca_file_is_a_configuration_error(tls_bao: TlsBao, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"vault.ca_file: cannot load .*nope.pem"):
        auth(tls_bao, ca_file=str(tmp_path / "nope.pem"))


def test_a_missing_transit_mount_is_named_once_and_by_readyz(
    tls_bao: TlsBao, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The root namespace has no Transit engine: the error says so (not "keyset not created yet"
    alone), /readyz names it, and the scheduler logs it once however often it tries."""
    monkeypatch.setenv("VAULT_TOKEN", tls_bao.token)
    settings = make_settings(
        tmp_path, {"v": {"alg": "ES256", "backend": "vault"}}, vault={"addr": tls_bao.addr, "ca_file": tls_bao.ca_file}
    )
    vault = auth(tls_bao, ca_file=tls_bao.ca_file)
    try:
        vault.login(strict=True)
        with pytest.raises(VaultMountError, match=r"^vault: transit engine not mounted at transit/"):
            VaultBackend(vault.client).generate("v", ALGORITHMS["ES256"], 256)
    finally:
        vault.close()
    rt = build_runtime(settings)
    try:
        for _ in range(5):
            rt.keys.tick()
        problem = rt.keys.readiness()["v"]
        assert problem.startswith("keyset not created yet: vault: transit engine not mounted at transit/"), problem
        assert public_problems({"v": problem}) == {
            "v": "not created yet (vault: transit engine not mounted at transit/ (enable it: bao secrets enable"
            " -path=transit transit))"
        }
        lines = [r.getMessage() for r in caplog.records if "not mounted" in r.getMessage()]
        assert len(lines) == 1, lines
    finally:
        rt.close()
