"""KeyService: the keys of every keyset as the edges, the CLI and the runtime use them.

A facade over three parts, each owning its data:

- `snapshot.ServedKeys`, the read side: the in-memory snapshot that signing, verification and the
  JWKS use, its refresh from the store, the revocation list, and readiness;
- `rotation.Rotation`, the write side: the scheduler's tick, rotation and revocation of keys
  (plan, make, validate, compare-and-set), and adoption of remote versions made out of band;
- `issuance.Issuance`, the hot path: tokens, introspection, token revocation.

The parts' methods are bound here once, so that a call through the facade costs no more than one to
the part itself.
"""

from __future__ import annotations

from collections.abc import Mapping

from .backends import KeyBackend
from .clock import Clock
from .config import Settings
from .issuance import Issuance
from .lifecycle import Transition
from .rotation import Rotation
from .snapshot import ServedKeys, Snapshot
from .stores import Store


class KeyService:
    """`settings`, `store`, `backends` and `clock` are what the parts were built with: to put a
    different store or backend under one part (a test's fault injection), set it on that part."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        backends: Mapping[str, KeyBackend],
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.store = store
        self.backends = backends
        self.clock = clock
        self.served = ServedKeys(settings, store, backends, clock)
        self.remote_signing = self.served.remote_signing  # its micro-batcher, for tests and benchmarks
        self.rotation = Rotation(settings, store, backends, clock, self.served)
        self.issuance = Issuance(settings, store, clock, self.served)
        # The read side.
        self.check_store_against_config = self.served.check_store_against_config
        self.refresh = self.served.refresh
        self.summary = self.served.summary
        self.readiness = self.served.readiness
        self.degraded = self.served.degraded  # keyset -> why its remote signatures fail
        # The write side.
        self.tick = self.rotation.tick
        self.rotate = self.rotation.rotate
        self.revoke = self.rotation.revoke
        self.taint = self.rotation.taint
        self.listeners = self.rotation.listeners  # called after every transition this process made
        self.waiting = self.rotation.waiting  # keyset -> the adoption gate a due rotation waits for
        self.laggards_if_promoting = self.rotation.laggards_if_promoting
        # The hot path.
        self.issue = self.issuance.issue
        self.issue_async = self.issuance.issue_async
        self.introspect = self.issuance.introspect
        self.introspect_async = self.issuance.introspect_async
        self.revocation_record_expiry = self.issuance.revocation_record_expiry
        self.revoke_token = self.issuance.revoke_token

    @property
    def snapshot(self) -> Snapshot:
        return self.served.snapshot

    @property
    def canary_failures(self) -> int:
        return self.rotation.canary_failures

    def start(self) -> list[Transition]:
        """Validate against the store, create missing keysets and keys, load everything."""
        self.check_store_against_config()
        transitions = self.tick()
        self.refresh(force=True)
        return transitions
