"""A real `jwks-service serve` on a free loopback port with a configuration of its own, and Debian's
chromium driven by Playwright: for the status page's browser test and docs/status-page.png."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from support import free_port, wait_until

from bench.baoserver import stop_process

CHROMIUM = Path("/usr/bin/chromium")
CLI = [sys.executable, "-m", "jwks_service"]


class Served:
    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.base = f"http://127.0.0.1:{port}"
        self.config = workdir / "jwks.toml"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("JWKS_")}

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [*CLI, *args, "--config", str(self.config)],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"{args} failed: {result.stderr}")
        return result.stdout

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json"))

    def summary(self, keyset: str = "default") -> dict[str, str]:
        """The kid in each state of `keyset` (as `keys list` shows it)."""
        return {k["state"]: k["kid"] for k in self.cli_json("keys", "list")["keys"] if k["keyset"] == keyset}


@contextmanager
def serving(workdir: Path, keysets: str, before: Callable[[Served], None] | None = None) -> Iterator[Served]:
    """`jwks-service serve` with the keysets `keysets` (TOML tables), SQLite and a KEK in `workdir`;
    `before(server)` runs once the configuration is written, before the server starts."""
    srv = Served(workdir, free_port())
    srv.config.write_text(
        f'issuer = "{srv.base}"\nlisten = "{srv.base.removeprefix("http://")}"\n'
        f'[store]\nurl = "sqlite:///{workdir}/jwks.db"\n[secrets]\nkek_file = "{workdir}/kek"\n{keysets}'
    )
    if before is not None:
        before(srv)
    log = (workdir / "server.log").open("w")
    proc = subprocess.Popen(
        [*CLI, "serve", "--config", str(srv.config)], cwd=workdir, env=srv.env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_until(lambda: _ready(srv.base), timeout=30)
        yield srv
    finally:
        stop_process(proc)
        log.close()


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
