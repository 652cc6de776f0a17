"""schemathesis against the real app, with the document it serves at /openapi.json (issue 11, "Interfaces").

Every operation gets generated requests, valid and invalid (schemathesis's examples, coverage and
fuzzing phases), sent to the ASGI app in process: the app `create_app` builds, with its middleware,
fast paths and error handlers. The checks: no 5xx; every status, content type, header and body as
the document says; 405 with a true `Allow` for other methods; 401 without credentials. Admin calls
carry a bearer token of an admin client and OAuth calls a client's credentials, and about half the
cases name an existing client or key in their path, so the fuzzer reaches the handlers and not only
the 401s and 404s.

Bounded: `MAX_EXAMPLES` generated cases per operation in the fuzzing phase (the coverage phase adds
its own, deterministic ones), no per-example deadline (a loaded machine is slow, not wrong), and a
fixed seed so that a run is repeatable; set `FUZZ_SEED` to explore others.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from support import ISSUER

from jwks_service.clock import ManualClock
from jwks_service.config import build_settings
from jwks_service.http import create_app, openapi
from jwks_service.runtime import Runtime, build_runtime

MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    unsupported_method,
    allow_header_conformance,
    ignored_auth,
    missing_required_header,
]
KEYSETS = {"default": {"alg": "ES256"}, "hmac": {"alg": "HS256"}, "ed": {"alg": "EdDSA"}, "rsa": {"alg": "RS256"}}


class Target:
    """The app, genuine credentials, and the resources a generated case may be pointed at."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.app = create_app(runtime=runtime, background=False)
        admin, _ = runtime.clients.create("fuzz-admin", ["admin", "introspect"], [ISSUER])
        self.admin_bearer = "Bearer " + runtime.keys.issue(admin, "admin introspect", ISSUER).token
        client, secret = runtime.clients.create("fuzz-client", ["read", "write"], ["api"])
        self.client_id = client.client_id
        self.client_basic = "Basic " + base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()

    def victim(self) -> str:
        """A client whose secret admin calls may rotate, or which they may delete (then a new one)."""
        for client in self.runtime.store.list_clients():
            if client.name == "fuzz-victim":
                return client.client_id
        return self.runtime.clients.create("fuzz-victim", ["read"], ["api"])[0].client_id

    def prepare(self, case: Case) -> dict[str, str]:
        """Genuine credentials for the operation, and for about half the cases an existing resource in
        the path (a function of the generated case, so that Hypothesis can replay and shrink it).

        A form that brings its own `client_secret` is tried as client_secret_post; otherwise Basic,
        with the form's `client_id` (if any) made to agree. Keys are revoked in the `ed` keyset only:
        the tokens used here are signed by `default`, which the fuzzer may rotate (they still verify)."""
        params = case.path_parameters or {}
        if len(str(params)) % 2:
            if "client_id" in params:
                params["client_id"] = self.victim()
            current = self.runtime.keys.snapshot.keysets["ed"].current
            if "kid" in params and current is not None:
                params["kid"] = current.kid
        if case.path.startswith("/admin/"):
            return {"Authorization": self.admin_bearer}
        if case.path.startswith("/oauth/"):
            form = case.body if isinstance(case.body, dict) else {}
            if "client_secret" in form:
                return {}
            if "client_id" in form:
                form["client_id"] = self.client_id
            return {"Authorization": self.client_basic}
        return {}


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    raw: dict[str, Any] = {
        "issuer": ISSUER,
        "store": {"url": f"sqlite:///{tmp}/jwks.db"},
        "secrets": {"kek_file": str(tmp / "kek")},
        "keysets": KEYSETS,
    }
    runtime = build_runtime(build_settings(raw), ManualClock(float(int(time.time()))))
    try:
        yield Target(runtime)
    finally:
        runtime.close()


# The document as data (test_openapi.py checks that the app serves exactly this); the app is the
# fixture's, set on each case's schema before the call.
schema = schemathesis.openapi.from_dict(openapi.document())
schema.config.seed = int(os.environ.get("FUZZ_SEED", "20261129"))
# /keys/events never ends: read up to its first event (`ready`, or the first replayed one), then hang up.
schema.config.max_stream_events = 1
schema.config.request_timeout = 10


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_to_the_document(case: Case, fuzz_target: Target) -> None:
    # The app is the fixture's: on the operation for the call, on its schema for the probes of
    # some checks (ignored_auth sends the request again without credentials).
    case.operation.app = case.operation.schema.app = fuzz_target.app
    case.call_and_validate(headers=fuzz_target.prepare(case), checks=CHECKS)
