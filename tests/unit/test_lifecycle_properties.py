"""Property tests of the pure lifecycle on a manual clock (DESIGN.md "Shape").

A keyset with a random, valid policy lives through random sequences of scheduler ticks, time
jumps (from seconds to several rotation periods), manual rotations (with and without force),
emergency revocations and failing canaries. Tokens signed along the way are remembered. After
every step:

- exactly one `current`, at most one `next`, unique kids, no private material in retired or
  revoked keys (`check_invariants`);
- nothing signs before `prepublish`: a key that became `current` by a scheduled or manual
  rotation had been published at least `prepublish` earlier; forced rotations, emergency
  revocations and bootstrap (fresh current keys) are the documented exceptions and are tracked;
- nothing stops verifying before `verify_window`: every token of a key that was not revoked
  verifies until its exp + leeway (retirement may come late when nobody ticks, never early);
- revoked never verifies again, retired never comes back;
- a tick does everything that is due at once (ticking again at the same moment does nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from jwks_service.config import build_settings
from jwks_service.errors import NotFoundError, RotationRefusedError, TaintRefusedError
from jwks_service.lifecycle import (
    RETAIN_RETIRED_SECONDS,
    NewKey,
    Plan,
    apply_plan,
    check_invariants,
    next_rotation_at,
    on_canary_failure,
    plan_revoke,
    plan_rotate,
    plan_taint,
    plan_tick,
    rotation_due,
)
from jwks_service.model import Keyset, KeysetPolicy, KeyState, KeyVersion

T0 = 1_800_000_000.0
DAY = 86400
EPS = 1e-6  # float slack for "published at least prepublish before" (times are sums of floats)

# Every state change the lifecycle may make (staying put is always allowed).
LEGAL = {
    KeyState.NEXT: {KeyState.CURRENT, KeyState.REVOKED, KeyState.RETIRED},  # promote | revoke | discard
    KeyState.CURRENT: {KeyState.PREVIOUS, KeyState.REVOKED},
    KeyState.PREVIOUS: {KeyState.RETIRED, KeyState.REVOKED},
    KeyState.RETIRED: {KeyState.REVOKED},
    KeyState.REVOKED: set(),
}


@dataclass(frozen=True)
class Drawn:
    policy: KeysetPolicy
    max_age: int


@st.composite
def policies(draw: st.DrawFn) -> Drawn:
    """A policy the config accepts: prepublish >= max_age + leeway, rotation_period >= prepublish."""
    max_age = draw(st.integers(1, 3600))
    leeway = draw(st.integers(0, 300))
    prepublish = max_age + leeway + draw(st.one_of(st.just(0), st.integers(0, 2 * DAY)))
    rotation = prepublish + draw(st.one_of(st.just(0), st.integers(0, 3600), st.integers(0, 30 * DAY)))
    token_ttl = draw(st.one_of(st.integers(1, 3600), st.integers(1, 7 * DAY)))
    table = {
        "alg": "ES256",
        "rotation_period": f"{rotation}s",
        "prepublish": f"{prepublish}s",
        "token_ttl": f"{token_ttl}s",
        "leeway": f"{leeway}s",
    }
    extra = draw(st.one_of(st.none(), st.integers(0, 2 * DAY)))
    if extra is not None:
        table["verify_window"] = f"{token_ttl + leeway + max_age + extra}s"
    policy = build_settings({"jwks": {"max_age": f"{max_age}s"}, "keysets": {"ks": table}}).keysets["ks"]
    assert policy.verify_window == token_ttl + leeway + max_age + (extra or 0)
    return Drawn(policy, max_age)


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.keyset = Keyset("ks", "ES256", "local", 0)
        self.kid_seq = 0
        self.tokens: list[tuple[str, float, float]] = []  # kid, iat, exp
        self.revoked: set[str] = set()
        self.tainted: set[str] = set()
        self.retired: set[str] = set()
        self.ever: set[str] = set()
        self.exempt: dict[str, str] = {}  # kid -> why it was allowed to sign without prepublish
        self.fail_canary = False

    # ----- helpers ----------------------------------------------------------------------------

    @property
    def policy(self) -> KeysetPolicy:
        return self.drawn.policy

    def fresh(self) -> NewKey:
        self.kid_seq += 1
        kid = f"k{self.kid_seq}"
        return NewKey(kid, {"kty": "EC", "kid": kid}, sealed_private=b"x")

    def run(self, plan: Plan) -> Plan:
        """What the service does with a plan: canary, new material, apply; checks every change."""
        if self.fail_canary and plan.promote is not None:
            bad = plan.promote
            plan = on_canary_failure(plan)
            self.fail_canary = False
            assert plan.promote is None
            assert plan.discard == bad
        if plan.empty:
            return plan
        extras = [name for name in ("discard", "retire", "prune") if getattr(plan, name)]
        event(" + ".join([f"plan {plan.reason}", *extras]))
        new = [self.fresh() for _ in range(plan.new_keys)]
        now = self.now
        before = {k.kid: k for k in self.keyset.keys}
        keys, transitions = apply_plan(self.policy, self.keyset, plan, new, now)
        after = {k.kid: k for k in keys}
        assert len(after) == len(keys)

        for kid, old in before.items():
            if kid not in after:
                assert old.state == KeyState.RETIRED, f"{kid} dropped while {old.state}"
                assert kid in plan.prune
                assert old.retired_at is not None
                assert old.retired_at + RETAIN_RETIRED_SECONDS <= now
                continue
            new_state = after[kid].state
            if new_state != old.state:
                assert new_state in LEGAL[old.state], f"{kid}: {old.state} -> {new_state}"
                assert [t.kid for t in transitions if t.event != "tainted"].count(kid) == 1
        for kid in after.keys() - before.keys():
            assert kid in {n.kid for n in new}
            assert kid not in self.ever, f"kid {kid} reused"
            assert after[kid].state in (KeyState.CURRENT, KeyState.NEXT)
            assert after[kid].created_at == now
        for t in transitions:
            assert after[t.kid].state == t.state

        for kid, k in after.items():
            old_state = before[kid].state if kid in before else None
            if k.state == KeyState.CURRENT and old_state != KeyState.CURRENT:
                assert k.activated_at == now
                if old_state is None:
                    assert plan.reason in ("bootstrap", "forced", "revoke", "taint"), plan.reason
                    self.exempt[kid] = f"fresh current ({plan.reason})"
                elif plan.reason in ("scheduled", "manual"):
                    assert now - k.created_at >= self.policy.prepublish - EPS, (
                        f"{kid} signs {now - k.created_at}s after it was published ({plan.reason})"
                    )
                else:
                    assert plan.reason in ("forced", "revoke", "taint"), plan.reason
                    self.exempt[kid] = plan.reason
            if k.state == KeyState.PREVIOUS and old_state == KeyState.CURRENT:
                assert k.deactivated_at == now
                assert k.retire_at == now + self.policy.verify_window
            if k.state == KeyState.RETIRED and old_state != KeyState.RETIRED:
                assert k.retired_at == now
                self.retired.add(kid)
            if k.state == KeyState.REVOKED and old_state != KeyState.REVOKED:
                assert k.revoked_at == now
                self.revoked.add(kid)

        self.ever |= after.keys()
        self.keyset = Keyset("ks", "ES256", "local", self.keyset.revision + 1, keys)
        return plan

    def sign(self) -> None:
        cur = self.keyset.current
        assert cur is not None
        assert cur.sealed_private is not None
        self.tokens.append((cur.kid, self.now, self.now + self.policy.token_ttl))

    def key(self, kid: str) -> KeyVersion | None:
        return self.keyset.find(kid)

    # ----- rules ------------------------------------------------------------------------------

    @initialize(drawn=policies())
    def bootstrap(self, drawn: Drawn) -> None:
        self.drawn = drawn
        assert plan_tick(self.policy, self.keyset, self.now).reason == "bootstrap"
        self.tick()

    @rule(
        unit=st.sampled_from(["second", "minute", "prepublish", "rotation", "verify_window", "retain"]),
        fraction=st.floats(0, 3.5, allow_nan=False, allow_infinity=False),
    )
    def advance(self, unit: str, fraction: float) -> None:
        seconds = {
            "second": 1,
            "minute": 60,
            "prepublish": self.policy.prepublish,
            "rotation": self.policy.rotation_period,
            "verify_window": self.policy.verify_window,
            "retain": RETAIN_RETIRED_SECONDS,
        }[unit]
        self.now += fraction * seconds

    @rule(moment=st.sampled_from(["rotation", "retire_at", "prepublish_gate"]))
    def advance_to_boundary(self, moment: str) -> None:
        """Jump exactly onto the moment something becomes due (the edges of every comparison)."""
        at: float | None = None
        if moment == "rotation":
            at = next_rotation_at(self.policy, self.keyset)
        elif moment == "retire_at":
            leeway = self.policy.leeway  # retirement waits one leeway past retire_at (replica clock skew)
            pending = [k.retire_at + leeway for k in self.keyset.by_state(KeyState.PREVIOUS) if k.retire_at is not None]
            at = min(pending, default=None)
        else:
            nxt = self.keyset.next
            at = None if nxt is None else nxt.created_at + self.policy.prepublish
        if at is not None and at > self.now:
            self.now = at

    @rule()
    def tick(self) -> None:
        plan = plan_tick(self.policy, self.keyset, self.now)
        assert plan.reason in ("bootstrap", "maintenance", "scheduled"), plan.reason
        self.run(plan)
        ks, now, ks_leeway = self.keyset, self.now, self.policy.leeway
        # one tick does everything that is due now
        assert plan_tick(self.policy, ks, now).empty
        assert not rotation_due(self.policy, ks, now)
        assert ks.current is not None
        assert ks.next is not None
        due = [k for k in ks.by_state(KeyState.PREVIOUS) if k.retire_at is not None and k.retire_at + ks_leeway <= now]
        assert not due
        self.sign()

    @rule()
    def issue_token(self) -> None:
        self.sign()

    @rule(force=st.booleans())
    def rotate(self, force: bool) -> None:
        before = self.keyset
        nxt = before.next
        assert nxt is not None
        young = self.now - nxt.created_at < self.policy.prepublish
        try:
            plan = plan_rotate(self.policy, before, self.now, force=force)
        except RotationRefusedError:
            assert not force
            assert young
            return
        assert not (young and not force), "rotation allowed while next younger than prepublish"
        assert plan.reason == ("forced" if young else "manual")
        assert plan.promote == nxt.kid
        old_current = before.current
        assert old_current is not None
        done = self.run(plan)
        cur = self.keyset.current
        assert cur is not None
        if done.reason == "canary_failed":
            assert cur.kid == old_current.kid
            assert self.key(nxt.kid).state == KeyState.RETIRED  # type: ignore[union-attr]
        else:
            assert cur.kid == nxt.kid
            assert self.key(old_current.kid).state == KeyState.PREVIOUS  # type: ignore[union-attr]

    @precondition(lambda self: bool(self.keyset.keys))
    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        victim = data.draw(st.sampled_from(self.keyset.keys), label="victim")
        was = victim.state
        old_current = self.keyset.current
        assert old_current is not None
        plan = plan_revoke(self.keyset, victim.kid)
        if was == KeyState.REVOKED:
            assert plan.empty
        assert plan.reason == "revoke"
        self.run(plan)
        after = self.key(victim.kid)
        assert after is not None
        assert after.state == KeyState.REVOKED
        assert after.sealed_private is None
        cur = self.keyset.current
        assert cur is not None
        if was == KeyState.CURRENT:
            assert cur.kid != victim.kid
        else:
            assert cur.kid == old_current.kid
        assert self.keyset.next is not None

    @precondition(lambda self: bool(self.keyset.keys))
    @rule(data=st.data())
    def taint(self, data: st.DataObject) -> None:
        victim = data.draw(st.sampled_from(self.keyset.keys), label="suspect")
        old_current = self.keyset.current
        assert old_current is not None
        try:
            plan = plan_taint(self.policy, self.keyset, victim.kid, self.now)
        except TaintRefusedError:
            assert victim.state not in (KeyState.CURRENT, KeyState.PREVIOUS)
            return
        assert victim.state in (KeyState.CURRENT, KeyState.PREVIOUS) or victim.tainted
        assert plan.empty == victim.tainted
        self.run(plan)
        after = self.key(victim.kid)
        assert after is not None
        assert after.tainted
        if victim.tainted:  # idempotent, whatever became of it since (revoked, retired)
            assert after == victim
            return
        assert after.state == KeyState.PREVIOUS and after.verifies
        self.tainted.add(victim.kid)
        cur = self.keyset.current
        assert cur is not None
        assert cur.kid != victim.kid
        if victim.state == KeyState.PREVIOUS:
            assert cur.kid == old_current.kid
            assert after.retire_at == victim.retire_at  # previous's retirement rules are unchanged
        assert self.keyset.next is not None

    @rule()
    def revoke_unknown(self) -> None:
        try:
            plan_revoke(self.keyset, "no-such-kid")
        except NotFoundError:
            return
        raise AssertionError("unknown kid revoked")

    @rule()
    def canary_will_fail(self) -> None:
        self.fail_canary = True

    # ----- invariants -------------------------------------------------------------------------

    @invariant()
    def structure(self) -> None:
        assert check_invariants(self.keyset.keys) == []

    @invariant()
    def nothing_signs_before_prepublish(self) -> None:
        cur = self.keyset.current
        assert cur is not None
        assert cur.activated_at is not None
        if cur.kid not in self.exempt:
            assert cur.activated_at - cur.created_at >= self.policy.prepublish - EPS

    @invariant()
    def nothing_stops_verifying_early(self) -> None:
        keep = []
        for kid, iat, exp in self.tokens:
            key = self.key(kid)
            if kid in self.revoked:
                assert key is not None
                assert not key.verifies
                continue
            if self.now <= exp + self.policy.leeway:
                assert key is not None, f"key {kid} of a live token was dropped"
                assert key.verifies, f"token of {kid} (iat {iat - T0}, exp {exp - T0}) fails at {self.now - T0}"
                keep.append((kid, iat, exp))
        self.tokens = keep

    @invariant()
    def revoked_never_verifies_again(self) -> None:
        for kid in self.revoked:
            key = self.key(kid)
            assert key is not None, f"revoked {kid} was forgotten"
            assert key.state == KeyState.REVOKED
            assert key.sealed_private is None

    @invariant()
    def tainted_never_signs_and_stays_tainted(self) -> None:
        cur = self.keyset.current
        assert cur is not None
        assert not cur.tainted
        assert cur.kid not in self.tainted
        for kid in self.tainted:
            key = self.key(kid)
            assert key is None or key.tainted, f"taint of {kid} was undone"

    @invariant()
    def retired_never_comes_back(self) -> None:
        for kid in self.retired:
            key = self.key(kid)
            assert key is None or key.state in (KeyState.RETIRED, KeyState.REVOKED)
            assert key is None or not key.verifies

    @invariant()
    def previous_keys_verify_for_the_whole_window(self) -> None:
        for k in self.keyset.by_state(KeyState.PREVIOUS):
            assert k.deactivated_at is not None
            assert k.retire_at == k.deactivated_at + self.policy.verify_window
            assert k.sealed_private is not None

    @invariant()
    def next_rotation_at_agrees_with_rotation_due(self) -> None:
        at = next_rotation_at(self.policy, self.keyset)
        assert at is not None
        assert rotation_due(self.policy, self.keyset, self.now) == (self.now >= at)


LifecycleMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)
TestLifecycle = LifecycleMachine.TestCase


@settings(max_examples=60, deadline=None)
@given(drawn=policies(), tick_fraction=st.floats(0.01, 1.0), periods=st.integers(1, 6))
def test_scheduler_alone_rotates_on_time(drawn: Drawn, tick_fraction: float, periods: int) -> None:
    """Ticking every `interval`: each key signs for rotation_period (+ at most one interval), was
    published prepublish before signing, and a previous key verifies for verify_window (+ one interval)."""
    policy = drawn.policy
    interval = tick_fraction * policy.rotation_period
    now = T0
    ks = Keyset("ks", "ES256", "local", 0)
    seq = 0
    ticks = 0
    history: dict[str, KeyVersion] = {}
    limit = T0 + periods * policy.rotation_period + min(policy.verify_window, 100 * interval) + 2 * interval
    while now <= limit:
        plan = plan_tick(policy, ks, now)
        new = []
        for _ in range(plan.new_keys):
            seq += 1
            new.append(NewKey(f"k{seq}", {"kid": f"k{seq}"}, b"x"))
        keys, _ = apply_plan(policy, ks, plan, new, now)
        ks = Keyset("ks", "ES256", "local", ks.revision + 1, keys)
        assert check_invariants(ks.keys) == []
        history.update((k.kid, k) for k in keys)  # pruned records keep their last version here
        now += interval
        ticks += 1
        assert ticks < 2_000
    rotations = 0
    for k in history.values():
        assert k.state != KeyState.REVOKED
        if k.activated_at is None:
            continue
        if k.kid != "k1":
            assert k.activated_at - k.created_at >= policy.prepublish - EPS
            rotations += 1
        if k.deactivated_at is not None:
            served = k.deactivated_at - k.activated_at
            assert policy.rotation_period <= served < policy.rotation_period + interval + EPS
        if k.state == KeyState.RETIRED:
            assert k.retired_at is not None
            assert k.deactivated_at is not None
            assert k.deactivated_at + policy.verify_window + policy.leeway <= k.retired_at
            assert k.retired_at < k.deactivated_at + policy.verify_window + policy.leeway + interval + EPS
    # each rotation comes at most rotation_period + interval after the one before, and the last tick
    # was no earlier than limit - interval
    last_tick = now - interval
    assert rotations >= math.floor((last_tick - T0) / (policy.rotation_period + interval) - EPS)
    assert rotations >= 1
    assert rotations <= math.ceil((limit - T0) / policy.rotation_period)
