"""A keyset's plan (plan.py) with what is known of its adoption, for `GET /admin/keysets/{name}/plan`,
`jwks-service keys plan` and the status page. Blocking (the adoption records live in the store): call
it from a worker thread, never the event loop.

The adoption records are read through `runtime.adoption` (`adoption(name) -> Adoption`,
`gate(name) -> Gate`). Where a runtime has none, or the store does not answer, the plan is made
without them: its adoption and gate are then unknown, never guessed.
"""

from __future__ import annotations

import logging
from typing import Protocol

from .adoption import Adoption, Gate
from .errors import JwksServiceError, NotFoundError
from .plan import KeysetPlan, keyset_plan
from .runtime import Runtime

log = logging.getLogger("jwks_service")


class AdoptionReader(Protocol):
    def adoption(self, name: str) -> Adoption: ...

    def gate(self, name: str) -> Gate: ...


def adoption_reader(runtime: Runtime) -> AdoptionReader | None:
    """The runtime's reader of adoption records, if it has one."""
    reader: AdoptionReader | None = getattr(runtime, "adoption", None)
    return reader


def read_adoption(runtime: Runtime, name: str, *, with_gate: bool = True) -> tuple[Adoption | None, Gate | None]:
    """The keyset's adoption and gate (blocking); (None, None) when they cannot be read."""
    reader = adoption_reader(runtime)
    if reader is None:
        return None, None
    try:
        return reader.adoption(name), reader.gate(name) if with_gate else None
    except JwksServiceError as exc:
        log.warning("keyset %s: adoption records unavailable: %s", name, exc.description)
        return None, None


def read_plan(runtime: Runtime, name: str) -> KeysetPlan:
    """The plan of keyset `name` now, with its adoption and gate when they can be read (blocking).
    NotFoundError for a keyset that is not configured, or has no keys yet."""
    policy = runtime.settings.keysets.get(name)
    if policy is None:
        raise NotFoundError(f"no keyset {name} (configured: {', '.join(runtime.settings.keysets)})")
    keyset = runtime.keys.snapshot.keysets.get(name)
    if keyset is None:
        raise NotFoundError(f"keyset {name} has no keys yet: the server creates them when it starts")
    adopted, gate = read_adoption(runtime, name)
    return keyset_plan(policy, keyset, runtime.clock.now(), adopted=adopted, gate=gate)
