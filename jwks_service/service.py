"""KeyService: the one place where backends, the store and the clock meet.

It keeps an in-memory snapshot of every keyset (signer of the current key with its pre-encoded
header, verification keys, the rendered JWKS), so signing and JWKS serving never touch the store.
Changes go through the pure lifecycle planner and land with compare-and-set; a writer that loses
the race reloads and plans again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import anyio

from . import audit
from .algorithms import ALGORITHMS
from .backends import AdoptsVersions, KeyBackend, RemoteVersions, RetiresRemotely, VerifiesRemotely
from .batching import BatchFn, MicroBatcher, batch_call
from .clock import Clock
from .config import Settings
from .crypto import SignFn
from .errors import (
    ConfigError,
    ConflictError,
    InvalidTokenError,
    JwksServiceError,
    KeyValidationError,
    NotFoundError,
    RevisionConflictError,
    StoreError,
    UnavailableError,
)
from .jwks import RenderedJWKS, render_jwks
from .jws import VerificationKey
from .lifecycle import Plan, Transition, apply_plan, on_canary_failure, plan_revoke, plan_rotate, plan_tick
from .model import AuditEvent, Client, Keyset, KeysetPolicy, KeyState, KeyVersion, NewKey
from .stores import Store
from .tokens import (
    CheckedToken,
    access_token_claims,
    assemble,
    check_access_token,
    check_claims,
    encode_header,
    encode_token,
    signing_input,
    verify_access_token,
)

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
# Introspection refuses to vouch for a token when the revocation list is older than this.
REVOCATION_STALENESS = 5.0
# A revocation record outlives the token's exp by the widest leeway of any keyset plus this much: a
# keyset's leeway may be raised after the record was written, and replicas' clocks differ a little.
REVOCATION_RECORD_MARGIN = 300.0

# Runs a remote signature check off the event loop: (verify, signing input, signature) -> valid.
RemoteVerify = Callable[[Callable[[bytes, bytes], bool], bytes, bytes], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: str
    header_b64: bytes
    sign: SignFn
    # Remote backends (Vault): many inputs in one call, for the micro-batcher; None for local keys.
    sign_batch: BatchFn | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the hot paths need, swapped atomically on every change."""

    keysets: Mapping[str, Keyset]
    signing: Mapping[str, SigningKey]  # keyset -> current key
    verify_keys: Mapping[str, VerificationKey]  # kid -> key, every verifying key of every keyset
    kid_keyset: Mapping[str, str]
    jwks: RenderedJWKS
    problems: Mapping[str, str] = field(default_factory=dict)  # keyset -> why it cannot sign


@dataclass(slots=True)  # not frozen: a frozen __init__ costs ~1 µs per token (object.__setattr__ per field)
class Issued:
    token: str
    expires_in: int
    scope: str
    kid: str
    claims: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Introspected:
    claims: dict[str, Any]
    kid: str
    keyset: str


class KeyService:
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
        # Called after every transition this process made: (keyset, revision, transitions).
        self.listeners: list[Callable[[str, int, list[Transition]], None]] = []
        self._write_lock = threading.Lock()
        self._seen_revision = -1
        self._snapshot = Snapshot({}, {}, {}, {}, render_jwks([]))
        self._revoked: dict[str, float] = {}
        self._revoked_loaded_at = float("-inf")  # the last refresh that read the store successfully
        self._store_problem = ""  # why the last refresh could not read the store ("" when it could)
        self._installs = 0  # bumped by every _install, so a slow refresh does not install older keysets
        self._install_lock = threading.Lock()
        self.canary_failures = 0
        self._batcher: MicroBatcher | None = None
        self._adoption_checked: dict[str, float] = {}
        # Keysets whose remote backend failed their last signature (cleared by the next success).
        self.degraded: dict[str, str] = {}

    # ----- start-up and reloading -------------------------------------------------------------

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

    def start(self) -> list[Transition]:
        """Validate against the store, create missing keysets and keys, load everything."""
        self.check_store_against_config()
        transitions = self.tick()
        self.refresh(force=True)
        return transitions

    def refresh(self, *, force: bool = False) -> bool:
        """Reload from the store if anything changed there; True when something did.

        When the store cannot be read, signing and the JWKS go on from memory, and introspection
        goes on vouching for tokens until the revocation list is REVOCATION_STALENESS older than the
        last successful refresh (a Redis restart of a second or two is not an outage to clients).
        """
        installs = self._installs
        try:
            revision = self.store.revision()
            if revision == self._seen_revision and not force:
                self._revoked_loaded_at = self.clock.now()
                self._store_problem = ""
                return False
            keysets = {ks.name: ks for ks in self.store.list_keysets() if ks.name in self.settings.keysets}
            for name, served in self._snapshot.keysets.items():
                if name not in keysets and served.revision > 0:
                    keysets[name] = self._reseed(served)
            revoked = self.store.revoked_tokens(self.clock.now())
        except StoreError as exc:
            self._store_problem = exc.description
            raise
        self._revoked = revoked
        self._revoked_loaded_at = self.clock.now()
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

    def _install(self, keysets: Mapping[str, Keyset], *, unless_installed_since: int | None = None) -> bool:
        with self._install_lock:
            if unless_installed_since is not None and unless_installed_since != self._installs:
                return False
            self._installs += 1
            self._install_locked(keysets)
            return True

    def _install_keyset(self, keyset: Keyset) -> None:
        """Serve one keyset as this process read or wrote it; the others as the newest snapshot has
        them (read under the lock, so a refresh installed meanwhile is not undone). A copy older than
        the one served is dropped: the reload and the scheduler run in separate threads, and a stale
        copy would undo, say, another replica's emergency revocation until the next store change."""
        with self._install_lock:
            served = self._snapshot.keysets.get(keyset.name)
            if served is not None and served.revision > keyset.revision:
                return
            self._installs += 1
            self._install_locked({**self._snapshot.keysets, keyset.name: keyset})

    def _install_locked(self, keysets: Mapping[str, Keyset]) -> None:
        old = self._snapshot
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
                if key.state == KeyState.CURRENT:
                    prior = old.signing.get(name)
                    if prior is not None and prior.kid == key.kid:
                        signing[name] = prior
                        continue
                    try:
                        signing[name] = SigningKey(
                            key.kid,
                            key.alg,
                            encode_header(key.alg, key.kid),
                            backend.signer(key),
                            batch_call(backend, key),
                        )
                    except JwksServiceError as exc:
                        problems[name] = f"current key {key.kid} cannot sign: {exc.description}"
            if name not in signing and name not in problems:
                problems[name] = "no current key"
        for name in self.settings.keysets:
            if name not in keysets:
                problems[name] = "keyset not created yet"
        self._snapshot = Snapshot(keysets, signing, verify_keys, kid_keyset, render_jwks(keysets.values()), problems)

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    # ----- transitions ------------------------------------------------------------------------

    def tick(self) -> list[Transition]:
        """The scheduler: apply whatever the lifecycle says is due now, for every keyset."""
        done: list[Transition] = []
        now = self.clock.now()
        for name, policy in self.settings.keysets.items():
            done.extend(self._adopt_out_of_band(name, policy, now))
            cached = self._snapshot.keysets.get(name)
            # Plan on the in-memory copy first: most ticks have nothing to do and touch no store.
            if cached is not None and plan_tick(policy, cached, now).empty:
                continue
            try:
                _, transitions = self._transition(name, partial(self._plan_tick, policy), wait=False)
            except JwksServiceError as exc:
                log.error("scheduled maintenance of keyset %s failed: %s", name, exc.description)
                continue
            done.extend(transitions)
        return done

    def _adopt_out_of_band(self, name: str, policy: KeysetPolicy, now: float) -> list[Transition]:
        """A remote key version made behind our back (a Transit rotate, auto_rotate_period) becomes
        `next`: published now, signing no earlier than prepublish from now. We never sign with a
        version we have not published (signing pins the version), so this only keeps rotation moving."""
        backend = self.backends[policy.backend]
        cached = self._snapshot.keysets.get(name)
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

    def _plan_tick(self, policy: KeysetPolicy, keyset: Keyset) -> Plan:
        return plan_tick(policy, keyset, self.clock.now())

    def rotate(self, name: str, *, force: bool = False, reason: str = "", actor: str = "cli") -> dict[str, Any]:
        """Rotate now; the keyset's kids by role, `previous` being the key this rotation demoted."""
        policy = self._policy(name)
        _, transitions = self._transition(
            name, lambda ks: plan_rotate(policy, ks, self.clock.now(), force=force), actor=actor, reason=reason
        )
        demoted = next((t.kid for t in transitions if t.state == KeyState.PREVIOUS), None)
        return self.summary(name, previous=demoted)

    def revoke(self, kid: str, *, reason: str, actor: str = "cli") -> tuple[Keyset, KeyVersion]:
        """Emergency revocation of a key, by kid, in whichever keyset holds it; idempotent."""
        for ks in self.store.list_keysets():
            if ks.find(kid) is not None:
                keyset, _ = self._transition(ks.name, lambda k: plan_revoke(k, kid), actor=actor, reason=reason)
                revoked = keyset.find(kid)
                assert revoked is not None
                return keyset, revoked
        raise NotFoundError(f"no key with kid {kid}")

    def summary(self, name: str, previous: str | None = None) -> dict[str, Any]:
        """The kids of a keyset by role, as the admin API and the CLI report them. Without `previous`
        (the key a rotation just demoted), the most recently demoted previous key by our clock."""
        ks = self._snapshot.keysets.get(name) or self.store.get_keyset(name)
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
                self._install_keyset(stored)
                return stored, []
            now = self.clock.now()
            # Another replica is making this keyset's remote versions: wait rather than make ours (a
            # promotion may need one too, should its canary fail).
            remote_keys = new_key is None and making.remote is not None and bool(plan.new_keys or plan.promote)
            if remote_keys and _claimed_by_another(stored, making.claim, now):
                if not wait:
                    log.info("keyset %s: another replica is making its new keys; not this tick", name)
                    self._install_keyset(stored)
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
            self._install_keyset(saved)
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

    # ----- tokens -----------------------------------------------------------------------------

    def _claims(self, client: Client, scope: str, audience: str) -> tuple[int, dict[str, Any]]:
        """The token's lifetime and RFC 9068 claims (the client's TTL, capped by its keyset's)."""
        policy = self.settings.keysets.get(client.keyset)
        if policy is None:
            raise UnavailableError(f"keyset {client.keyset} cannot sign right now", retry_after=5)
        # A comparison instead of min(): this runs once per token (see bench/sign.py).
        ttl = client.token_ttl if client.token_ttl < policy.token_ttl else policy.token_ttl
        claims = access_token_claims(
            issuer=self.settings.issuer,
            client_id=client.client_id,
            audience=audience,
            scope=scope,
            now=self.clock.now(),
            ttl=ttl,
        )
        return ttl, claims

    def issue(self, client: Client, scope: str, audience: str) -> Issued:
        signing = self._snapshot.signing.get(client.keyset)
        if signing is None:
            raise UnavailableError(f"keyset {client.keyset} cannot sign right now", retry_after=5)
        ttl, claims = self._claims(client, scope, audience)
        return Issued(encode_token(signing.header_b64, claims, signing.sign), ttl, scope, signing.kid, claims)

    async def issue_async(self, client: Client, scope: str, audience: str) -> Issued:
        """`issue` for the event loop: a remote key's signature goes through the micro-batcher (or,
        with vault.max_batch = 1, its own call in a worker thread); the keyset is marked degraded
        while its signatures fail."""
        signing = self._snapshot.signing.get(client.keyset)
        if signing is None or signing.sign_batch is None:
            return self.issue(client, scope, audience)
        try:
            if self.settings.vault.max_batch == 1:
                # Batching off: one Transit call per token through the key's own signer, as many at
                # once as the thread pool allows: a service without batching.
                issued = await anyio.to_thread.run_sync(self.issue, client, scope, audience)
            else:
                issued = await self._issue_batched(signing, client, scope, audience)
        except UnavailableError as exc:
            self.degraded[client.keyset] = exc.description
            raise
        self.degraded.pop(client.keyset, None)
        return issued

    async def _issue_batched(self, signing: SigningKey, client: Client, scope: str, audience: str) -> Issued:
        assert signing.sign_batch is not None
        if self._batcher is None:
            self._batcher = MicroBatcher(max_batch=self.settings.vault.max_batch)
        ttl, claims = self._claims(client, scope, audience)
        data = signing_input(signing.header_b64, claims)
        signature = await self._batcher.sign(signing.kid, signing.sign_batch, data)
        return Issued(assemble(data, signature), ttl, scope, signing.kid, claims)

    def _check(self, token: str) -> tuple[CheckedToken, str]:
        """Everything introspection checks but the signature (CPU only), and the token's keyset."""
        now = self.clock.now()
        snap = self._snapshot
        leeway = max((p.leeway for p in self.settings.keysets.values()), default=0)
        checked = check_access_token(
            token, snap.verify_keys, issuer=self.settings.issuer, audiences=None, now=now, leeway=leeway
        )
        keyset = snap.kid_keyset[checked.key.kid]
        policy = self.settings.keysets[keyset]
        claims = checked.claims
        # Checked above with the widest leeway of any keyset; now hold it to its own keyset's rules.
        check_claims(claims, issuer=self.settings.issuer, audiences=None, now=now, leeway=policy.leeway)
        if float(claims["exp"]) - float(claims["iat"]) > policy.token_ttl:
            raise InvalidTokenError("token lives longer than its keyset allows")
        if now - self._revoked_loaded_at > REVOCATION_STALENESS:
            raise UnavailableError("revocation state is stale; cannot vouch for tokens", retry_after=1)
        if claims["jti"] in self._revoked:
            raise InvalidTokenError("token revoked")
        return checked, keyset

    def introspect(self, token: str) -> Introspected:
        """Verify one of our access tokens for RFC 7662; InvalidTokenError for anything inactive.
        Blocking for a Vault HMAC key: on the event loop, `introspect_async`."""
        checked, keyset = self._check(token)
        key = checked.key
        if not key.verify(checked.signing_input, checked.signature):
            raise InvalidTokenError("signature does not verify")
        return Introspected(checked.claims, key.kid, keyset)

    async def introspect_async(self, token: str, remote: RemoteVerify | None = None) -> Introspected:
        """`introspect` for the event loop. Every cheap check comes first; the signature is checked
        last, here for a local key (CPU only), else through `remote` (default: a worker thread),
        bounded by the backend's request timeout."""
        checked, keyset = self._check(token)
        key = checked.key
        if not key.remote:
            valid = key.verify(checked.signing_input, checked.signature)
        elif remote is not None:
            valid = await remote(key.verify, checked.signing_input, checked.signature)
        else:
            valid = await anyio.to_thread.run_sync(key.verify, checked.signing_input, checked.signature)
        if not valid:
            raise InvalidTokenError("signature does not verify")
        return Introspected(checked.claims, key.kid, keyset)

    def revocation_record_expiry(self, token_exp: float) -> float:
        """Until when a revocation of a token expiring at `token_exp` is kept: introspection accepts
        a token up to exp + leeway (RFC 7519 §4.1.4), so the record must outlive every such window."""
        leeway = max((p.leeway for p in self.settings.keysets.values()), default=0)
        return token_exp + leeway + REVOCATION_RECORD_MARGIN

    def revoke_token(self, jti: str, token_exp: float) -> None:
        """RFC 7009: the token is inactive from now on, on every replica, for as long as any could accept it."""
        keep_until = self.revocation_record_expiry(token_exp)
        self.store.revoke_token(jti, keep_until)
        self._revoked[jti] = keep_until

    def readiness(self) -> dict[str, str]:
        """Problems that make this replica unready: {} when ready. No I/O (it runs on the event loop,
        for anyone): the store's state is what the last refresh found."""
        problems: dict[str, str] = {}
        if self._store_problem:
            problems["store"] = self._store_problem
        problems.update(self._snapshot.problems)
        problems.update({name: f"degraded: {why}" for name, why in self.degraded.items()})
        return problems


def _verification_key(backend: KeyBackend, key: KeyVersion) -> VerificationKey:
    remote = isinstance(backend, VerifiesRemotely) and backend.verifies_remotely(key)
    return VerificationKey(key.kid, key.alg, backend.verifier(key), remote=remote)


def _remote_versions(backend: KeyBackend) -> RemoteVersions | None:
    """A backend whose key versions live elsewhere (Vault Transit), where a version made cannot be
    taken back; None for a backend that makes keys in memory."""
    return backend if isinstance(backend, RemoteVersions) else None


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
