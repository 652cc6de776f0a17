"""jwks-service-sdk, the SDK's own distribution (sdk-dist/), installed alone in a new virtual environment.

The wheel is built from this repository with `pip wheel` (sdk-dist/sdk_build.py copies the SDK and the
core modules it imports, and setuptools builds them), then installed with only its dependencies, from the
package index pip is configured with, into a fresh venv. A script run there verifies the tokens of a real
`jwks-service serve` (run from this environment): with `Verifier` a token this test obtained, and one that
`TokenClient` obtains itself. What the SDK's modules import is checked from the source by
tests/unit/test_layers.py; here the wheel and the environment are checked as installed.
"""

from __future__ import annotations

import email.parser
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from support import PROJECT_ROOT, SDK_DIST, free_port, sdk_distribution_files, wait_until

import jwks_service
from bench.baoserver import stop_process

pytestmark = pytest.mark.slow

# Distributions of the server that must not come along, and the modules they would be imported as.
SERVER_ONLY = {
    *("jwks-service", "starlette", "uvicorn", "httptools", "uvloop", "redis", "hvac", "aiohttp", "orjson"),
    "prometheus-client",
}
SERVER_IMPORTS = ["starlette", "uvicorn", "redis", "hvac", "aiohttp", "orjson", "prometheus_client"]

DISTRIBUTIONS = """
import importlib.metadata, json
print(json.dumps([d.metadata["Name"] for d in importlib.metadata.distributions()]))
"""

VERIFY = r"""
import importlib, json, sys

issuer, client_id, client_secret, token, blocked = sys.argv[1:]
import jwks_service
from jwks_service.sdk import InvalidSignatureError, TokenClient, Verifier

report = {"package": jwks_service.__file__, "version": jwks_service.__version__}
with Verifier(issuer, "api") as verifier:
    report["given"] = verifier.verify(token)["client_id"]
    with TokenClient(issuer, client_id, client_secret, scope="read", audience="api") as client:
        obtained = client.get()
    claims = verifier.verify(obtained)
    report["obtained"] = {"client_id": claims["client_id"], "scope": claims["scope"], "new": obtained != token}
    try:
        verifier.verify(token[:-4] + ("BBBB" if token.endswith("AAAA") else "AAAA"))
    except InvalidSignatureError as exc:
        report["forged"] = type(exc).__name__
    report["jwks_requests"] = verifier.stats.jwks_requests

report["missing"] = {}
for name in ("jwks_service.service", "jwks_service.tokens", "jwks_service.http", "jwks_service.sdk.starlette"):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        report["missing"][name] = exc.name
report["loaded"] = sorted({m.split(".")[0] for m in sys.modules}.intersection(blocked.split(",")))
print(json.dumps(report))
"""


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path

    def python(self, script: str, *args: str) -> str:
        """Run `script` with the venv's interpreter, isolated (-I: no PYTHONPATH, not this directory)."""
        return run(str(self.venv / "bin" / "python"), "-I", "-c", script, *args, cwd=self.venv)


def run(*args: str, cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel built from this repository and a new venv holding it and its dependencies, nothing else."""
    tmp = tmp_path_factory.mktemp("sdk-dist")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", "wheels", str(SDK_DIST), cwd=tmp)
    (wheel,) = (tmp / "wheels").glob("*.whl")
    run(sys.executable, "-m", "venv", "venv", cwd=tmp)
    venv = tmp / "venv"
    run(str(venv / "bin" / "python"), "-I", "-m", "pip", "install", "--quiet", str(wheel), cwd=tmp)
    return Installed(wheel, venv)


def test_the_wheel_holds_the_sdk_and_the_core_modules_it_imports_unchanged(installed: Installed) -> None:
    files = sdk_distribution_files()
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = [name for name in wheel.namelist() if ".dist-info/" not in name]
        assert sorted(names) == sorted(files)
        for name, source in files.items():
            assert wheel.read(name) == source.read_bytes(), f"{name} differs from {source}"
        (metadata_name,) = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(wheel.read(metadata_name).decode())
    assert installed.wheel.name == f"jwks_service_sdk-{jwks_service.__version__}-py3-none-any.whl"
    assert "jwks_service/sdk/verifier.py" in names and "jwks_service/jws.py" in names
    server_side = ("jwks_service/service.py", "jwks_service/tokens.py", "jwks_service/http/", "jwks_service/stores/")
    assert not [name for name in names if name.startswith(server_side)]

    assert metadata["Name"] == "jwks-service-sdk"
    assert metadata["Version"] == jwks_service.__version__
    # Its dependencies are the server's `sdk` extra, and Starlette (at the server's bound) for the middleware.
    server = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    starlette = next(dep for dep in server["dependencies"] if dep.startswith("starlette"))
    expected = [*server["optional-dependencies"]["sdk"], f'{starlette}; extra == "starlette"']
    assert sorted(metadata.get_all("Requires-Dist") or []) == sorted(expected)


def test_the_venv_holds_the_sdk_and_none_of_the_server_dependencies(installed: Installed) -> None:
    names = {re.sub(r"[-_.]+", "-", name).lower() for name in json.loads(installed.python(DISTRIBUTIONS))}
    assert {"jwks-service-sdk", "httpx", "cryptography", "joserfc"} <= names
    assert not names & SERVER_ONLY


@contextmanager
def serving(workdir: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`jwks-service serve` from this environment on its embedded defaults (SQLite and KEK under workdir)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "JWKS_ISSUER": base, "JWKS_LISTEN": f"127.0.0.1:{port}"}
    with (workdir / "server.log").open("w") as log:
        command = [sys.executable, "-m", "jwks_service", "serve"]
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, timeout=20)
            yield base, env
        finally:
            stop_process(proc)
    assert proc.returncode in (0, -15), (workdir / "server.log").read_text()


def test_the_installed_sdk_verifies_and_obtains_tokens_of_a_running_service(
    installed: Installed, tmp_path: Path
) -> None:
    with serving(tmp_path) as (base, env):
        create = [sys.executable, "-m", "jwks_service", "clients", "create", "sdk-dist", "--scope", "read"]
        result = subprocess.run(
            [*create, "--audience", "api", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        client = json.loads(result.stdout)
        answer = httpx.post(
            f"{base}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client["client_id"], client["client_secret"]),
        )
        assert answer.status_code == 200, answer.text
        token = answer.json()["access_token"]
        report = json.loads(
            installed.python(
                VERIFY, base, client["client_id"], client["client_secret"], token, ",".join(SERVER_IMPORTS)
            )
        )

    # The SDK ran from the venv, not from this repository.
    assert Path(report["package"]).resolve().is_relative_to(installed.venv.resolve())
    assert report["version"] == jwks_service.__version__
    assert report["given"] == client["client_id"]
    assert report["obtained"] == {"client_id": client["client_id"], "scope": "read", "new": True}
    assert report["forged"] == "InvalidSignatureError"
    assert report["jwks_requests"] == 1
    # Nothing of the server is there; the middleware needs the `starlette` extra.
    assert report["missing"] == {
        "jwks_service.service": "jwks_service.service",
        "jwks_service.tokens": "jwks_service.tokens",
        "jwks_service.http": "jwks_service.http",
        "jwks_service.sdk.starlette": "starlette",
    }
    assert report["loaded"] == []
