"""The served snapshot: the read side of the keys, what signing, verification and the JWKS use.

`ServedKeys` holds, for every keyset, the signer of its current key with the pre-encoded header, the
verification keys and the rendered JWKS, swapped atomically on every change, so that signing and JWKS
serving never touch the store. It also holds the revocation list introspection checks, what the last
refresh found about the store, and the keysets whose remote signatures fail (readiness).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import audit
from .backends import KeyBackend, VerifiesRemotely
from .batching import RemoteSigning, SignAsyncFn
from .clock import Clock
from .config import Settings
from .crypto import SignFn
from .errors import ConfigError, JwksServiceError, NotFoundError, RevisionConflictError, StoreError
from .jwks import RenderedJWKS, render_jwks
from .jws import VerificationKey
from .model import Keyset, KeyState, KeyVersion
from .stores import Store
from .tokens import encode_header

NOT_CREATED = "keyset not created yet"

log = logging.getLogger("jwks_service")


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: str
    header_b64: bytes
    sign: SignFn
    # How a token is signed on the event loop, chosen when the key is installed (RemoteSigning):
    # through the micro-batcher or in a worker thread for a remote key; None: `sign`, in process.
    sign_async: SignAsyncFn | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the hot paths need, swapped atomically on every change."""

    keysets: Mapping[str, Keyset]
    signing: Mapping[str, SigningKey]  # keyset -> current key
    verify_keys: Mapping[str, VerificationKey]  # kid -> key, every verifying key of every keyset
    kid_keyset: Mapping[str, str]
    jwks: RenderedJWKS
    problems: Mapping[str, str] = field(default_factory=dict)  # keyset -> why it cannot sign
    tainted: frozenset[str] = frozenset()  # kids of verifying keys marked suspect (API.md §6)


class ServedKeys:
    def __init__(self, settings: Settings, store: Store, backends: Mapping[str, KeyBackend], clock: Clock) -> None:
        self.settings = settings
        self.store = store
        self.backends = backends
        self.clock = clock
        # How each remote key signs on the event loop, chosen as it is installed.
        self.remote_signing = RemoteSigning(settings.vault.max_batch)
        # Swapped, never changed: read it once per request.
        self.snapshot = Snapshot({}, {}, {}, {}, render_jwks([]))
        self.revoked: dict[str, float] = {}  # jti -> until when its revocation is kept
        self.revoked_loaded_at = float("-inf")  # the last refresh that read the store successfully
        # Keysets whose remote backend failed their last signature (cleared by the next success).
        self.degraded: dict[str, str] = {}
        # Why the scheduler's last maintenance of a keyset failed (rotation.Rotation.tick), e.g. why a
        # keyset could not be created: readiness names it.
        self.maintenance_problems: dict[str, str] = {}
        self._seen_revision = -1
        self._store_problem = ""  # why the last refresh could not read the store ("" when it could)
        self._installs = 0  # bumped by every install, so a slow refresh does not install older keysets
        self._install_lock = threading.Lock()

    def check_store_against_config(self) -> None:
        """Refuse a configured alg or backend that differs from a keyset's existing keys."""
        problems = []
        for ks in self.store.list_keysets():
            policy = self.settings.keysets.get(ks.name)
            live = [k for k in ks.keys if k.verifies]
            if policy is None or not live:
                continue
            if policy.alg != ks.alg:
                problems.append(
                    f"keysets.{ks.name}.alg: is {policy.alg} but the keyset holds {ks.alg} keys; an alg cannot change"
                    " while keys exist (use a new keyset name)"
                )
            if policy.backend != ks.backend:
                problems.append(
                    f"keysets.{ks.name}.backend: is {policy.backend} but the keyset's keys live in {ks.backend}"
                )
        if problems:
            raise ConfigError("\n".join(problems))

    def refresh(self, *, force: bool = False) -> bool:
        """Reload from the store if anything changed there; True when something did.

        When the store cannot be read, signing and the JWKS go on from memory, and introspection
        goes on vouching for tokens until the revocation list is REVOCATION_STALENESS (issuance)
        older than the last successful refresh (a Redis restart of a second or two is not an
        outage to clients).
        """
        installs = self._installs
        try:
            revision = self.store.revision()
            if revision == self._seen_revision and not force:
                self.revoked_loaded_at = self.clock.now()
                self._store_problem = ""
                return False
            keysets = {ks.name: ks for ks in self.store.list_keysets() if ks.name in self.settings.keysets}
            for name, served in self.snapshot.keysets.items():
                if name not in keysets and served.revision > 0:
                    keysets[name] = self._reseed(served)
            revoked = self.store.revoked_tokens(self.clock.now())
        except StoreError as exc:
            self._store_problem = exc.description
            raise
        self.revoked = revoked
        self.revoked_loaded_at = self.clock.now()
        self._store_problem = ""
        # The scheduler and admin calls install what they wrote from other threads; when one did while
        # this refresh was reading, what was read may be older: leave the revision unseen, and the
        # next refresh reads again.
        if self._install(keysets, unless_installed_since=installs):
            self._seen_revision = revision
        return True

    def _reseed(self, served: Keyset) -> Keyset:
        """The store lost a keyset we serve (e.g. Redis restarted without persistence): write back
        the keys we hold rather than let the scheduler make new ones and orphan every live token."""
        now = self.clock.now()
        event = audit.event(
            now,
            "scheduler",
            "keyset.reseed",
            served.name,
            reason="the store no longer held this keyset",
            kids=[k.kid for k in served.keys],
        )
        log.error("store lost keyset %s; writing back the %d keys this replica serves", served.name, len(served.keys))
        try:
            saved = self.store.save_keyset(replace(served, revision=0), 0, [event])
        except RevisionConflictError:  # another replica put it back first
            again = self.store.get_keyset(served.name)
            return again if again is not None else served
        audit.log_events([event])
        return saved

    def remember_revoked(self, jti: str, keep_until: float) -> None:
        """A revocation this process wrote: in force here at once, before the next refresh reads it."""
        self.revoked[jti] = keep_until

    def _install(self, keysets: Mapping[str, Keyset], *, unless_installed_since: int | None = None) -> bool:
        with self._install_lock:
            if unless_installed_since is not None and unless_installed_since != self._installs:
                return False
            self._installs += 1
            self._install_locked(keysets)
            return True

    def install_keyset(self, keyset: Keyset) -> None:
        """Serve one keyset as this process read or wrote it; the others as the newest snapshot has
        them (read under the lock, so a refresh installed meanwhile is not undone). A copy older than
        the one served is dropped: the reload and the scheduler run in separate threads, and a stale
        copy would undo, say, another replica's emergency revocation until the next store change."""
        with self._install_lock:
            served = self.snapshot.keysets.get(keyset.name)
            if served is not None and served.revision > keyset.revision:
                return
            self._installs += 1
            self._install_locked({**self.snapshot.keysets, keyset.name: keyset})

    def _install_locked(self, keysets: Mapping[str, Keyset]) -> None:
        old = self.snapshot
        signing: dict[str, SigningKey] = {}
        verify_keys: dict[str, VerificationKey] = {}
        kid_keyset: dict[str, str] = {}
        problems: dict[str, str] = {}
        for name, ks in keysets.items():
            backend = self.backends[ks.backend]
            for key in ks.keys:
                if not key.verifies:
                    continue
                try:
                    verify_keys[key.kid] = old.verify_keys.get(key.kid) or _verification_key(backend, key)
                except JwksServiceError as exc:
                    log.error("key %s of keyset %s cannot verify: %s", key.kid, name, exc.description)
                    continue
                kid_keyset[key.kid] = name
                if key.state == KeyState.CURRENT and not key.tainted:  # a tainted key never signs
                    prior = old.signing.get(name)
                    if prior is not None and prior.kid == key.kid:
                        signing[name] = prior
                        continue
                    try:
                        sign = backend.signer(key)
                        signing[name] = SigningKey(
                            key.kid,
                            key.alg,
                            encode_header(key.alg, key.kid),
                            sign,
                            self.remote_signing.for_key(backend, key, sign),
                        )
                    except JwksServiceError as exc:
                        problems[name] = f"current key {key.kid} cannot sign: {exc.description}"
            if name not in signing and name not in problems:
                problems[name] = "no current key"
        for name in self.settings.keysets:
            if name not in keysets:
                problems[name] = NOT_CREATED
        tainted = frozenset(k.kid for ks in keysets.values() for k in ks.keys if k.tainted and k.kid in kid_keyset)
        jwks = render_jwks(keysets.values())
        self.snapshot = Snapshot(keysets, signing, verify_keys, kid_keyset, jwks, problems, tainted)

    def summary(self, name: str, previous: str | None = None) -> dict[str, Any]:
        """The kids of a keyset by role, as the admin API and the CLI report them. Without `previous`
        (the key a rotation just demoted), the most recently demoted previous key by our clock."""
        ks = self.snapshot.keysets.get(name) or self.store.get_keyset(name)
        if ks is None:
            raise NotFoundError(f"no keyset {name}")
        if previous is None:
            demoted = sorted(ks.by_state(KeyState.PREVIOUS), key=lambda k: k.deactivated_at or 0.0)
            previous = demoted[-1].kid if demoted else None
        return {
            "keyset": name,
            "current": ks.current.kid if ks.current else None,
            "previous": previous,
            "next": ks.next.kid if ks.next else None,
        }

    def readiness(self) -> dict[str, str]:
        """Problems that make this replica unready: {} when ready. No I/O (it runs on the event loop,
        for anyone): the store's state is what the last refresh found."""
        problems: dict[str, str] = {}
        if self._store_problem:
            problems["store"] = self._store_problem
        for name, problem in self.snapshot.problems.items():
            cause = self.maintenance_problems.get(name)
            problems[name] = f"{problem}: {cause}" if cause and problem == NOT_CREATED else problem
        problems.update({name: f"degraded: {why}" for name, why in self.degraded.items()})
        return problems


def _verification_key(backend: KeyBackend, key: KeyVersion) -> VerificationKey:
    remote = isinstance(backend, VerifiesRemotely) and backend.verifies_remotely(key)
    return VerificationKey(key.kid, key.alg, backend.verifier(key), remote=remote)
