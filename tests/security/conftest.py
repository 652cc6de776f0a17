"""Fixtures of the security suite: a real runtime (SQLite store, local keys) behind the real HTTP app.

`clock` and `http` override the function-scoped fixtures of tests/conftest.py with module-scoped
ones over a runtime of three keysets (ES256, HS256, RS256): building one costs about half a second
(RSA key generation), and the forged-token tables run a few hundred requests against it. Tests that
move the clock put it back (see `_clock_back` in test_security_rfc8725.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from jwks_service.clock import ManualClock
from jwks_service.config import build_settings
from jwks_service.http import create_app
from jwks_service.runtime import Runtime, build_runtime

ISSUER = "http://127.0.0.1:8000"
START = 1_750_000_000.0  # a fixed instant for the ManualClock; tests that move it put it back


def raw_settings(tmp: Path) -> dict[str, Any]:
    return {
        "issuer": ISSUER,
        "store": {"url": f"sqlite:///{tmp}/jwks.db"},
        "secrets": {"kek_file": f"{tmp}/kek"},
        "keysets": {
            "default": {"alg": "ES256"},
            "hmac": {"alg": "HS256"},
            "rsa": {"alg": "RS256"},
        },
    }


@pytest.fixture(scope="module")
def make_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], tuple[Runtime, ManualClock]]]:
    """Builds started runtimes on a ManualClock, each in its own directory; closes them afterwards."""
    made: list[Runtime] = []

    def make() -> tuple[Runtime, ManualClock]:
        clock = ManualClock(START)
        rt = build_runtime(build_settings(raw_settings(tmp_path_factory.mktemp("jwks"))), clock)
        made.append(rt)
        return rt, clock

    yield make
    for rt in made:
        rt.close()


@pytest.fixture(scope="module")
def runtime_and_clock(make_runtime: Callable[[], tuple[Runtime, ManualClock]]) -> tuple[Runtime, ManualClock]:
    return make_runtime()


@pytest.fixture(scope="module")
def rt(runtime_and_clock: tuple[Runtime, ManualClock]) -> Runtime:
    return runtime_and_clock[0]


@pytest.fixture(scope="module")
def clock(runtime_and_clock: tuple[Runtime, ManualClock]) -> ManualClock:
    return runtime_and_clock[1]


@pytest.fixture(scope="module")
def http(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime=rt, background=False), base_url=ISSUER) as client:
        yield client
