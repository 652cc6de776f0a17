"""Shared fixtures: a runtime on a manual clock in a temporary folder, and the HTTP app."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from support import ISSUER, make_settings

from jwks_service.clock import ManualClock
from jwks_service.http import create_app
from jwks_service.runtime import Runtime, build_runtime


@pytest.fixture
def clock() -> ManualClock:
    # Start at the real time, so outside verifiers (PyJWT) that read the system clock agree.
    return ManualClock(float(int(time.time())))


@pytest.fixture
def runtime_factory(tmp_path: Path, clock: ManualClock) -> Iterator[Callable[..., Runtime]]:
    """Runtimes on one store and KEK: each call is like another process of the same deployment."""
    opened: list[Runtime] = []

    def factory(keysets: dict[str, dict[str, Any]] | None = None, **extra: Any) -> Runtime:
        rt = build_runtime(make_settings(tmp_path, keysets, **extra), clock)
        opened.append(rt)
        return rt

    yield factory
    for rt in opened:
        rt.close()


@pytest.fixture
def runtime(runtime_factory: Callable[..., Runtime]) -> Runtime:
    return runtime_factory()


@pytest.fixture
def http(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime=runtime, background=False), base_url=ISSUER) as client:
        yield client
