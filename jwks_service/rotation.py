"""Rotation: the write side of the keys. Plan, make keys, validate, compare-and-set, install.

Every change to a keyset (the scheduler's tick, an administrator's rotation or revocation, a remote
version made out of band) goes through the pure lifecycle planner and lands with compare-and-set on
the keyset's revision; a writer that loses the race reloads and plans again. What it saved is
installed into the served snapshot (`snapshot.ServedKeys`) and told to the listeners.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from logging import ERROR
from typing import Any, Protocol

from . import audit
from .adoption import Adoption, Gate, gate
from .algorithms import ALGORITHMS
from .backends import AdoptsVersions, KeyBackend, RemoteVersions, RetiresRemotely
from .clock import Clock
from .config import Settings
from .errors import ConflictError, JwksServiceError, KeyValidationError, NotFoundError, RevisionConflictError
from .jws import VerificationKey
from .lifecycle import (
    Plan,
    Transition,
    apply_plan,
    next_rotation_at,
    on_canary_failure,
    plan_revoke,
    plan_rotate,
    plan_taint,
    plan_tick,
    rotation_due,
)
from .model import AuditEvent, Keyset, KeysetPolicy, KeyState, KeyVersion, NewKey
from .repeats import RepeatedFailure
from .snapshot import ServedKeys
from .stores import Store
from .tokens import access_token_claims, encode_header, encode_token, verify_access_token

log = logging.getLogger("jwks_service")

CAS_ATTEMPTS = 8
OUT_OF_BAND_CHECK_SECONDS = 10.0  # how often a remote backend is asked for versions made behind our back
# A replica claims a keyset (compare-and-set) before it makes versions in a remote backend, where a
# version made cannot be taken back. Others wait for the claim rather than make versions of their own
# (the scheduler skips the keyset until its next tick; an administrator's rotation or revocation waits up
# to CLAIM_WAIT, then goes ahead anyway). A claim older than CLAIM_SECONDS is abandoned (its replica died).
CLAIM_SECONDS = 30.0
CLAIM_WAIT = 5.0
CLAIM_POLL = 0.05


class AdoptionSource(Protocol):
    """Who holds which kid across the fleet (fetchers.AdoptionReader); blocking, store I/O."""

    def adoption(self, name: str) -> Adoption: ...


class Rotation:
    def __init__(
        self, settings: Settings, store: Store, backends: Mapping[str, KeyBackend], clock: Clock, served: ServedKeys
    ) -> None:
        self.settings = settings
        self.store = store
        self.backends = backends
        self.clock = clock
        self.served = served
        # Called after every transition this process made: (keyset, revision, transitions).
        self.listeners: list[Callable[[str, int, list[Transition]], None]] = []
        self.canary_failures = 0
        self._write_lock = threading.Lock()
        self._adoption_checked: dict[str, float] = {}
        self._tick_failures: dict[str, RepeatedFailure] = {}
        # The adoption gate (API.md §6): where adoption is read from (set by the runtime; None: no
        # gate), and the keysets whose due rotation waits for it, with the gate's latest answer.
        self.adoption_source: AdoptionSource | None = None
        self.waiting: dict[str, Gate] = {}

    def tick(self) -> list[Transition]:
        """The scheduler: apply whatever the lifecycle says is due now, for every keyset."""
        done: list[Transition] = []
        now = self.clock.now()
        for name, policy in self.settings.keysets.items():
            done.extend(self._adopt_out_of_band(name, policy, now))
            cached = self.served.snapshot.keysets.get(name)
            # Plan on the in-memory copy first: most ticks have nothing to do and touch no store.
            hold, let_through = False, None
            if cached is not None and rotation_due(policy, cached, now) and not _signing_tainted(cached):
                hold, let_through = self._gate(name, policy, cached, now)
            else:
                self.waiting.pop(name, None)
            if cached is not None and plan_tick(policy, cached, now, hold=hold).empty:
                continue
            failures = self._tick_failures.get(name)
            if failures is None:
                failures = self._tick_failures[name] = RepeatedFailure(log, f"keyset {name}: maintenance", level=ERROR)
            try:
                _, transitions = self._transition(name, partial(self._plan_tick, policy, hold), wait=False)
            except JwksServiceError as exc:
                failures.failed(exc.description, now)  # once, then a count: the tick runs every second
                self.served.maintenance_problems[name] = exc.description
                continue
            failures.succeeded(now)
            self.served.maintenance_problems.pop(name, None)
            done.extend(transitions)
            promoted = next((t.kid for t in transitions if t.state == KeyState.CURRENT), None)
            if let_through is not None and promoted is not None:  # audited by the replica that promoted
                if let_through.timed_out:
                    self._audit_gate("promotion.gate_timeout", let_through, now, promoted)
                else:
                    log.info("keyset %s: %s; promoted next", name, let_through.describe())
                    self._audit_gate("promotion.adopted", let_through, now, promoted)
        return done

    def _gate(self, name: str, policy: KeysetPolicy, keyset: Keyset, now: float) -> tuple[bool, Gate | None]:
        """Whether the due scheduled rotation of `keyset` must wait for adoption of `next`; and the
        gate when it lets the rotation through after a wait or past `adoption_max_wait` (audited by
        `tick` if this process then promotes). A wait is logged and audited once (by each replica
        that waits), when it starts."""
        source = self.adoption_source
        if source is None or policy.adoption_gate <= 0:
            return False, None
        if keyset.next is not None and keyset.next.public_jwk is None:
            return False, None  # HMAC: never published, no fetcher can hold it; the gate does not apply
        due_at = next_rotation_at(policy, keyset)
        try:
            adopted = source.adoption(name)
        except JwksServiceError as exc:
            # Adoption unknown (the store failing): wait, up to adoption_max_wait like any other wait;
            # said once when it starts, not at every tick of an outage.
            known = self.waiting.get(name)
            if known is None or known.reason != "unknown":
                log.warning("keyset %s: adoption unknown (%s); the due rotation waits", name, exc.description)
            adopted = Adoption(name, self.settings.adoption.window, 0, (), ())
            verdict = gate(policy, keyset, adopted, due_at=due_at, now=now)
            if not verdict.timed_out:
                verdict = replace(verdict, open=False, reason="unknown")
        else:
            verdict = gate(policy, keyset, adopted, due_at=due_at, now=now)
        before = self.waiting.get(name)
        if verdict.open:
            self.waiting.pop(name, None)
            return False, verdict if verdict.timed_out or before is not None else None
        self.waiting[name] = verdict
        if before is None:
            log.warning("keyset %s: rotation due; %s", name, verdict.describe())
            self._audit_gate("promotion.waiting", verdict, now, keyset.next.kid if keyset.next else name)
        return True, None

    def _audit_gate(self, action: str, verdict: Gate, now: float, target: str) -> None:
        """Audit the gate's `verdict` on promoting `target` (the next key it waited for)."""
        event = audit.event(
            now,
            "scheduler",
            action,
            target,
            keyset=verdict.keyset,
            reason=verdict.describe(),
            share=verdict.share,
            fetchers=verdict.fetchers,
            required=verdict.required,
        )
        try:
            audit.record(self.store, [event])
        except JwksServiceError as exc:
            log.warning("keyset %s: could not audit %s: %s", verdict.keyset, action, exc.description)

    def _adopt_out_of_band(self, name: str, policy: KeysetPolicy, now: float) -> list[Transition]:
        """A remote key version made behind our back (a Transit rotate, auto_rotate_period) becomes
        `next`: published now, signing no earlier than prepublish from now. We never sign with a
        version we have not published (signing pins the version), so this only keeps rotation moving."""
        backend = self.backends[policy.backend]
        cached = self.served.snapshot.keysets.get(name)
        if not isinstance(backend, RemoteVersions) or not isinstance(backend, AdoptsVersions) or cached is None:
            return []
        if now - self._adoption_checked.get(name, float("-inf")) < OUT_OF_BAND_CHECK_SECONDS:
            return []
        self._adoption_checked[name] = now
        version_of = backend.version_of
        try:
            latest = int(backend.latest_version(name))
            if latest <= _known_version(cached, version_of):
                return []

            def planner(ks: Keyset) -> Plan:
                if _known_version(ks, version_of) >= latest:
                    # Another replica adopted it already, or made it (claimed, see _claim).
                    return Plan(name, "maintenance")
                nxt = ks.next
                return Plan(name, "adopted", discard=nxt.kid if nxt is not None else None, new_next=True)

            log.warning("keyset %s: Transit version %d was made outside the service; adopting it as next", name, latest)
            alg = ALGORITHMS[policy.alg]
            _, transitions = self._transition(
                name,
                planner,
                reason="out-of-band version",
                new_key=lambda: backend.adopt(name, alg, policy.key_bits, latest),
            )
        except JwksServiceError as exc:
            log.error("keyset %s: checking for out-of-band key versions failed: %s", name, exc.description)
            return []
        return transitions

    def _plan_tick(self, policy: KeysetPolicy, hold: bool, keyset: Keyset) -> Plan:
        return plan_tick(policy, keyset, self.clock.now(), hold=hold)

    def rotate(self, name: str, *, force: bool = False, reason: str = "", actor: str = "cli") -> dict[str, Any]:
        """Rotate now; the keyset's kids by role, `previous` being the key this rotation demoted."""
        policy = self._policy(name)
        cached = self.served.snapshot.keysets.get(name)
        laggards = self.laggards(name) if cached is not None and cached.next is not None else None
        _, transitions = self._transition(
            name, lambda ks: plan_rotate(policy, ks, self.clock.now(), force=force), actor=actor, reason=reason
        )
        demoted = next((t.kid for t in transitions if t.state == KeyState.PREVIOUS), None)
        summary = self.served.summary(name, previous=demoted)
        if laggards and any(t.state == KeyState.CURRENT for t in transitions):
            summary["laggards"] = laggards  # the fetchers that did not hold the key now signing (API.md §6)
        return summary

    def laggards(self, name: str) -> list[dict[str, Any]] | None:
        """The fetchers that do not hold `name`'s next key now (API.md §6): what a rotation that
        promotes it at once (forced, or an emergency revoke or taint of `current`) reports. None when
        adoption is not known (no source, or the store failing)."""
        if self.adoption_source is None:
            return None
        try:
            laggards = self.adoption_source.adoption(name).as_dict()["laggards"]
        except JwksServiceError as exc:
            log.warning("keyset %s: adoption unknown (%s); no laggards to report", name, exc.description)
            return None
        assert isinstance(laggards, list)
        return laggards

    def laggards_if_promoting(self, kid: str) -> tuple[str, list[dict[str, Any]]] | None:
        """Before a revoke or taint of `kid`: when it is a keyset's current key with a next key (the
        action promotes that next at once), that keyset and the fetchers that do not hold next."""
        for name, keyset in self.served.snapshot.keysets.items():
            if keyset.current is not None and keyset.current.kid == kid and keyset.next is not None:
                laggards = self.laggards(name)
                return None if laggards is None else (name, laggards)
        return None

    def revoke(self, kid: str, *, reason: str, actor: str = "cli") -> tuple[Keyset, KeyVersion]:
        """Emergency revocation of a key, by kid, in whichever keyset holds it; idempotent. Confirmed
        only once the store holds it durably (store.revocation_acks), also when it was revoked already
        (a retry after an unconfirmed revocation)."""
        revoked = self._by_kid(kid, lambda ks: plan_revoke(ks, kid), actor=actor, reason=reason)
        self.store.confirm_revocation()
        return revoked

    def taint(self, kid: str, *, reason: str, actor: str = "cli") -> tuple[Keyset, KeyVersion]:
        """Mark a current or previous key as suspect (API.md §6), by kid; idempotent."""
        return self._by_kid(
            kid, lambda ks: plan_taint(self._policy(ks.name), ks, kid, self.clock.now()), actor=actor, reason=reason
        )

    def _by_kid(
        self, kid: str, planner: Callable[[Keyset], Plan], *, actor: str, reason: str
    ) -> tuple[Keyset, KeyVersion]:
        """Apply `planner` to whichever keyset holds `kid`; that keyset and key afterwards."""
        for ks in self.store.list_keysets():
            if ks.find(kid) is not None:
                keyset, _ = self._transition(ks.name, planner, actor=actor, reason=reason)
                key = keyset.find(kid)
                assert key is not None
                return keyset, key
        raise NotFoundError(f"no key with kid {kid}")

    def _policy(self, name: str) -> KeysetPolicy:
        policy = self.settings.keysets.get(name)
        if policy is None:
            raise NotFoundError(f"no keyset {name} (configured: {', '.join(self.settings.keysets)})")
        return policy

    def _transition(
        self,
        name: str,
        planner: Callable[[Keyset], Plan],
        *,
        actor: str = "scheduler",
        reason: str = "",
        new_key: Callable[[], NewKey] | None = None,
        wait: bool = True,
    ) -> tuple[Keyset, list[Transition]]:
        """Plan, make new keys (`new_key`, else the backend generates), validate, compare-and-set.

        A remote backend's versions (Vault) are made only under a claim on the keyset (see `_claim`),
        so a replica that would lose the race never makes one. Keys made for an attempt that lost the
        compare-and-set serve the next attempt rather than being made again. Without `wait`, a keyset
        another replica has claimed is left alone (the scheduler comes back at its next tick)."""
        making = _Making(_remote_versions(self.backends[self._policy(name).backend]))
        with self._write_lock:  # one writer per process; across processes compare-and-set decides
            try:
                return self._attempts(name, planner, making, actor, reason, new_key, wait)
            except BaseException:
                if making.claim is not None or making.made:
                    try:  # give the claim back now rather than make the others wait for it to go stale
                        self._settle(name, making)
                    except JwksServiceError as exc:
                        log.warning("keyset %s: could not release its claim: %s", name, exc.description)
                raise

    def _attempts(
        self,
        name: str,
        planner: Callable[[Keyset], Plan],
        making: _Making,
        actor: str,
        reason: str,
        new_key: Callable[[], NewKey] | None,
        wait: bool,
    ) -> tuple[Keyset, list[Transition]]:
        policy = self._policy(name)
        backend = self.backends[policy.backend]
        wait_until = time.monotonic() + CLAIM_WAIT
        attempts = 0
        while attempts < CAS_ATTEMPTS:
            stored = self.store.get_keyset(name) or Keyset(name, policy.alg, policy.backend, 0)
            plan = planner(stored)
            if plan.empty:
                if making.claim is not None or making.made:
                    stored = self._settle(name, making) or stored
                self.served.install_keyset(stored)
                return stored, []
            now = self.clock.now()
            # Another replica is making this keyset's remote versions: wait rather than make ours (a
            # promotion may need one too, should its canary fail).
            remote_keys = new_key is None and making.remote is not None and bool(plan.new_keys or plan.promote)
            if remote_keys and _claimed_by_another(stored, making.claim, now):
                if not wait:
                    log.info("keyset %s: another replica is making its new keys; not this tick", name)
                    self.served.install_keyset(stored)
                    return stored, []
                if time.monotonic() < wait_until:
                    time.sleep(CLAIM_POLL)
                    continue
                log.warning("keyset %s: another replica's claim outlasted %.0fs; going ahead", name, CLAIM_WAIT)
            events: list[AuditEvent] = []
            if plan.promote is not None:
                candidate = stored.find(plan.promote)
                assert candidate is not None
                failure = self._canary(backend, candidate)
                if failure:
                    self.canary_failures += 1
                    events.append(
                        audit.event(now, actor, "key.validate", candidate.kid, outcome="failed", reason=failure)
                    )
                    log.error("key %s failed validation and will not be promoted: %s", candidate.kid, failure)
                    plan = on_canary_failure(plan)
            need = plan.new_keys - len(making.made)
            if need > 0 and remote_keys:
                assert making.remote is not None
                try:
                    stored = self._claim(stored, making.remote, need, now)
                except RevisionConflictError:
                    attempts += 1
                    continue
                making.claim = _claim_of(stored)
            alg = ALGORITHMS[policy.alg]
            make = new_key or partial(backend.generate, name, alg, policy.key_bits)
            for _ in range(need):
                making.made.append(make())  # one by one: a failure leaves those made so far accounted for
            new_keys = making.made[: plan.new_keys]
            keys, transitions = apply_plan(policy, stored, plan, new_keys, now)
            if plan.new_current:
                fresh = next(k for k in keys if k.kid == new_keys[0].kid)
                failure = self._canary(backend, fresh)
                if failure:
                    self.canary_failures += 1
                    self.store.append_audit(
                        [audit.event(now, actor, "key.validate", fresh.kid, outcome="failed", reason=failure)]
                    )
                    raise KeyValidationError(f"a freshly generated key failed validation: {failure}")
            events.extend(
                audit.event(
                    now,
                    actor,
                    f"key.{t.event}",
                    t.kid,
                    reason=reason or plan.reason,
                    keyset=name,
                    state=t.state.value,
                    trigger=plan.reason,
                    **({"detail": t.detail} if t.detail else {}),
                )
                for t in transitions
            )
            held = making.holds(stored)
            updated = replace(
                stored,
                alg=policy.alg,
                backend=policy.backend,
                keys=keys,
                claimed_version=making.accounted(stored),
                claimed_at=None if held else stored.claimed_at,
            )
            try:
                saved = self.store.save_keyset(updated, stored.revision, events)
            except RevisionConflictError:
                attempts += 1
                continue  # another replica or the CLI came first: reload and plan again
            del making.made[: plan.new_keys]  # what is left is accounted for in claimed_version: never adopted
            making.claim = None if held else making.claim
            audit.log_events(events)
            self.served.install_keyset(saved)
            self._destroy(backend, stored, saved, transitions)
            for listener in self.listeners if transitions else ():
                listener(name, saved.revision, transitions)
            return saved, transitions
        raise ConflictError(f"keyset {name} kept changing under us; try again")

    def _claim(self, stored: Keyset, remote: RemoteVersions, need: int, now: float) -> Keyset:
        """Claim the keyset for making `need` remote versions: compare-and-set before any is made.

        The claim reserves the version numbers about to be made (claimed_version), so whatever
        happens next (this replica loses the race, dies, or another takes over the claim), a version
        the service made is never taken for one made outside it and adopted."""
        reserve = max(int(remote.latest_version(stored.name)), _known_version(stored, remote.version_of)) + need
        return self.store.save_keyset(replace(stored, claimed_version=reserve, claimed_at=now), stored.revision)

    def _settle(self, name: str, making: _Making) -> Keyset | None:
        """Give back the claim `making` holds, if it still does, and account for the remote versions
        it made but did not use (so they are never adopted); the stored keyset afterwards."""
        for _ in range(CAS_ATTEMPTS):
            stored = self.store.get_keyset(name)
            if stored is None:
                return None
            held = making.holds(stored)
            mark = making.accounted(stored)
            if not held and mark == stored.claimed_version:
                break
            settled = replace(stored, claimed_version=mark, claimed_at=None if held else stored.claimed_at)
            try:
                stored = self.store.save_keyset(settled, stored.revision)
            except RevisionConflictError:
                continue
            break
        else:
            return None
        making.claim, making.made[:] = None, []
        return stored

    def _destroy(self, backend: KeyBackend, before: Keyset, after: Keyset, transitions: list[Transition]) -> None:
        """Backends that hold keys elsewhere (Vault) destroy retired versions there too.
        Local keys need nothing: their sealed material left the record in the same write."""
        gone = [t.kid for t in transitions if t.event in ("retired", "revoked", "discarded")]
        if not isinstance(backend, RetiresRemotely) or not gone:
            return
        live = [k for k in after.keys if k.verifies]
        for kid in gone:
            key = before.find(kid)
            if key is None:
                continue
            try:
                backend.retire(key, live)
            except JwksServiceError as exc:  # the record is already retired; Vault catches up next time
                log.warning("could not retire key %s in its backend: %s", kid, exc.description)

    def _canary(self, backend: KeyBackend, key: KeyVersion) -> str:
        """Sign a token with the key and verify it with its published key; '' when it works."""
        try:
            header = encode_header(key.alg, key.kid)
            claims = access_token_claims(
                issuer=self.settings.issuer,
                client_id="jwks-service-canary",
                audience=self.settings.issuer,
                scope="",
                now=self.clock.now(),
                ttl=60,
            )
            token = encode_token(header, claims, backend.signer(key))
            keys = {key.kid: VerificationKey(key.kid, key.alg, backend.verifier(key))}
            verify_access_token(
                token, keys, issuer=self.settings.issuer, audiences=None, now=self.clock.now(), leeway=0
            )
        except JwksServiceError as exc:
            return exc.description
        except Exception as exc:  # a broken key must never be promoted, whatever the failure
            return f"{type(exc).__name__}: {exc}"
        return ""


def _remote_versions(backend: KeyBackend) -> RemoteVersions | None:
    """A backend whose key versions live elsewhere (Vault Transit), where a version made cannot be
    taken back; None for a backend that makes keys in memory."""
    return backend if isinstance(backend, RemoteVersions) else None


def _signing_tainted(keyset: Keyset) -> bool:
    current = keyset.current
    return current is not None and current.tainted


def _known_version(keyset: Keyset, version_of: Callable[[KeyVersion], int | None]) -> int:
    """The newest remote version the service accounts for: one a record points at, or one it claimed."""
    return max([keyset.claimed_version, *(v for k in keyset.keys if (v := version_of(k)) is not None)])


def _claim_of(keyset: Keyset) -> tuple[int, float] | None:
    return None if keyset.claimed_at is None else (keyset.claimed_version, keyset.claimed_at)


def _claimed_by_another(keyset: Keyset, mine: tuple[int, float] | None, now: float) -> bool:
    """Another replica is making this keyset's remote versions (a live claim that is not ours). A claim
    far from our clock either way is stale: its replica died, or the clocks disagree beyond any use."""
    claim = _claim_of(keyset)
    return claim is not None and claim != mine and abs(now - claim[1]) < CLAIM_SECONDS


@dataclass(slots=True)
class _Making:
    """What one transition made across its compare-and-set attempts: keys not saved yet, and its claim."""

    remote: RemoteVersions | None
    made: list[NewKey] = field(default_factory=list)
    claim: tuple[int, float] | None = None

    def holds(self, keyset: Keyset) -> bool:
        return self.claim is not None and _claim_of(keyset) == self.claim

    def accounted(self, keyset: Keyset) -> int:
        """`keyset.claimed_version`, raised to cover the remote versions made here."""
        if self.remote is None:
            return keyset.claimed_version
        version_of = self.remote.version_of
        records = (
            KeyVersion(nk.kid, keyset.name, keyset.alg, KeyState.NEXT, 0.0, nk.public_jwk, nk.sealed_private)
            for nk in self.made
        )
        return max([keyset.claimed_version, *(v for r in records if (v := version_of(r)) is not None)])
