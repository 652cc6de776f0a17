"""Example-based tests of the pure key lifecycle (API.md §2): plans, their application, invariants."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

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
HOUR = 3600

# rotation 1d, prepublish 1h, token_ttl 15m, leeway 30s, jwks.max_age 5m -> verify_window 1230s
POLICY = KeysetPolicy(
    name="ks",
    alg="ES256",
    rotation_period=DAY,
    prepublish=HOUR,
    token_ttl=900,
    leeway=30,
    verify_window=900 + 30 + 300,
    key_bits=256,
)

_counter = itertools.count()


def new_key(kid: str | None = None) -> NewKey:
    kid = kid or f"fresh-{next(_counter)}"
    return NewKey(kid, {"kty": "EC", "kid": kid}, sealed_private=b"x")


def new_keys(plan: Plan) -> list[NewKey]:
    return [new_key() for _ in range(plan.new_keys)]


def key(kid: str, state: KeyState, created_at: float, **kw: object) -> KeyVersion:
    defaults: dict[str, object] = {"public_jwk": {"kty": "EC", "kid": kid}, "sealed_private": b"x"}
    if state == KeyState.CURRENT:
        defaults["activated_at"] = created_at
    if state in (KeyState.RETIRED, KeyState.REVOKED):
        defaults["sealed_private"] = None
    defaults.update(kw)
    return KeyVersion(kid=kid, keyset="ks", alg="ES256", state=state, created_at=created_at, **defaults)


def keyset(*keys: KeyVersion) -> Keyset:
    return Keyset("ks", "ES256", "local", revision=1, keys=tuple(keys))


def states(keys: tuple[KeyVersion, ...] | Keyset) -> dict[str, KeyState]:
    items = keys.keys if isinstance(keys, Keyset) else keys
    return {k.kid: k.state for k in items}


def apply(plan: Plan, ks: Keyset, now: float, fresh: list[NewKey] | None = None) -> Keyset:
    keys, _ = apply_plan(POLICY, ks, plan, fresh if fresh is not None else new_keys(plan), now)
    return replace(ks, keys=keys, revision=ks.revision + 1)


def steady(now: float = T0, *, current_age: float = 0, next_age: float = 0) -> Keyset:
    """A keyset with `cur` current (activated current_age ago) and `nxt` published next_age ago."""
    return keyset(
        key("cur", KeyState.CURRENT, now - current_age - DAY, activated_at=now - current_age),
        key("nxt", KeyState.NEXT, now - next_age),
    )


# ----- plan_tick ------------------------------------------------------------------------------


def test_bootstrap_creates_current_and_next() -> None:
    empty = keyset()
    plan = plan_tick(POLICY, empty, T0)
    assert plan.reason == "bootstrap"
    assert plan.new_current
    assert plan.new_next
    assert plan.new_keys == 2
    assert plan.rotates

    a, b = new_key("a"), new_key("b")
    keys, transitions = apply_plan(POLICY, empty, plan, [a, b], T0)
    assert states(keys) == {"a": KeyState.CURRENT, "b": KeyState.NEXT}
    cur = next(k for k in keys if k.kid == "a")
    nxt = next(k for k in keys if k.kid == "b")
    assert cur.activated_at == T0
    assert cur.created_at == T0
    assert nxt.activated_at is None
    assert nxt.created_at == T0
    assert cur.sealed_private == b"x"
    assert cur.public_jwk == {"kty": "EC", "kid": "a"}
    assert (cur.keyset, cur.alg) == ("ks", "ES256")
    assert [(t.event, t.kid, t.state) for t in transitions] == [
        ("created", "a", KeyState.CURRENT),
        ("created", "b", KeyState.NEXT),
    ]
    assert check_invariants(keys) == []


def test_nothing_to_do_when_fresh() -> None:
    ks = apply(plan_tick(POLICY, keyset(), T0), keyset(), T0)
    for later in (T0, T0 + 1, T0 + HOUR, T0 + DAY - 1):
        plan = plan_tick(POLICY, ks, later)
        assert plan.empty, later
        assert plan.reason == "maintenance"
        assert not plan.rotates


def test_tick_replenishes_missing_next() -> None:
    ks = keyset(key("cur", KeyState.CURRENT, T0))
    plan = plan_tick(POLICY, ks, T0 + 10)
    assert plan.new_next
    assert not plan.new_current
    assert plan.promote is None
    after = apply(plan, ks, T0 + 10)
    assert states(after) == {"cur": KeyState.CURRENT, **{after.keys[1].kid: KeyState.NEXT}}
    assert after.keys[1].created_at == T0 + 10


def test_scheduled_rotation_when_current_old_and_next_published_long_enough() -> None:
    ks = steady(current_age=DAY, next_age=HOUR)
    assert rotation_due(POLICY, ks, T0)
    plan = plan_tick(POLICY, ks, T0)
    assert plan.reason == "scheduled"
    assert plan.promote == "nxt"
    assert plan.demote == "cur"
    assert plan.new_next
    assert not plan.new_current
    after = apply(plan, ks, T0)
    assert states(after)["cur"] == KeyState.PREVIOUS
    assert states(after)["nxt"] == KeyState.CURRENT
    assert after.current is not None
    assert after.current.activated_at == T0
    assert after.next is not None
    assert after.next.kid not in ("cur", "nxt")
    assert check_invariants(after.keys) == []


def test_no_rotation_before_rotation_period() -> None:
    ks = steady(current_age=DAY - 1, next_age=DAY)
    assert not rotation_due(POLICY, ks, T0)
    assert plan_tick(POLICY, ks, T0).empty


def test_no_rotation_while_next_younger_than_prepublish() -> None:
    ks = steady(current_age=10 * DAY, next_age=HOUR - 1)
    assert not rotation_due(POLICY, ks, T0)
    assert plan_tick(POLICY, ks, T0).empty
    # one second later the prepublish gate opens
    assert plan_tick(POLICY, ks, T0 + 1).reason == "scheduled"


def test_rotation_uses_created_at_when_current_never_recorded_activation() -> None:
    ks = keyset(key("cur", KeyState.CURRENT, T0 - DAY, activated_at=None), key("nxt", KeyState.NEXT, T0 - HOUR))
    assert plan_tick(POLICY, ks, T0).reason == "scheduled"
    assert plan_tick(POLICY, ks, T0 - 1).empty


def test_retirement_happens_one_leeway_after_retire_at() -> None:
    retire_at = T0 + 500
    ks = keyset(
        key("old", KeyState.PREVIOUS, T0 - 2 * DAY, activated_at=T0 - 2 * DAY, retire_at=retire_at),
        key("cur", KeyState.CURRENT, T0 - DAY, activated_at=T0),
        key("nxt", KeyState.NEXT, T0),
    )
    # retire_at stamped by a replica whose clock may be up to `leeway` behind ours
    assert plan_tick(POLICY, ks, retire_at).empty
    assert plan_tick(POLICY, ks, retire_at + POLICY.leeway - 0.001).empty
    retire_at += POLICY.leeway
    plan = plan_tick(POLICY, ks, retire_at)
    assert plan.retire == ("old",)
    assert plan.reason == "maintenance"
    assert not plan.rotates
    keys, transitions = apply_plan(POLICY, ks, plan, [], retire_at)
    old = next(k for k in keys if k.kid == "old")
    assert old.state == KeyState.RETIRED
    assert old.retired_at == retire_at
    assert old.sealed_private is None
    assert not old.verifies
    assert [(t.event, t.kid) for t in transitions] == [("retired", "old")]


def test_prune_of_long_retired_records_only() -> None:
    retired_at = T0 - RETAIN_RETIRED_SECONDS
    ks = keyset(
        key("gone", KeyState.RETIRED, T0 - 60 * DAY, retired_at=retired_at),
        key("recent", KeyState.RETIRED, T0 - 60 * DAY, retired_at=retired_at + 1),
        key("rev", KeyState.REVOKED, T0 - 60 * DAY, revoked_at=T0 - 365 * DAY),
        key("cur", KeyState.CURRENT, T0),
        key("nxt", KeyState.NEXT, T0),
    )
    plan = plan_tick(POLICY, ks, T0)
    assert plan.prune == ("gone",)
    keys, transitions = apply_plan(POLICY, ks, plan, [], T0)
    # revoked records are kept forever: they feed the `revoked` list of /keys/status
    assert [k.kid for k in keys] == ["recent", "rev", "cur", "nxt"]
    assert transitions == []
    assert plan_tick(POLICY, replace(ks, keys=keys), T0).empty


def test_scheduled_rotation_also_retires_and_prunes() -> None:
    ks = keyset(
        key("old", KeyState.PREVIOUS, T0 - 3 * DAY, retire_at=T0 - POLICY.leeway),
        key("gone", KeyState.RETIRED, T0 - 90 * DAY, retired_at=T0 - RETAIN_RETIRED_SECONDS - 1),
        key("cur", KeyState.CURRENT, T0 - DAY),
        key("nxt", KeyState.NEXT, T0 - HOUR),
    )
    plan = plan_tick(POLICY, ks, T0)
    assert (plan.reason, plan.retire, plan.prune) == ("scheduled", ("old",), ("gone",))
    after = apply(plan, ks, T0)
    assert "gone" not in states(after)
    assert states(after)["old"] == KeyState.RETIRED
    assert states(after)["cur"] == KeyState.PREVIOUS


def test_tick_with_next_but_no_current_promotes_next() -> None:
    ks = keyset(key("nxt", KeyState.NEXT, T0))
    plan = plan_tick(POLICY, ks, T0 + 1)
    assert plan.promote == "nxt"
    assert plan.new_next
    assert not plan.new_current
    after = apply(plan, ks, T0 + 1)
    assert after.current is not None
    assert after.current.kid == "nxt"
    assert check_invariants(after.keys) == []


# ----- plan_rotate ----------------------------------------------------------------------------


def test_rotate_refused_while_next_younger_than_prepublish() -> None:
    ks = steady(next_age=HOUR - 1)
    with pytest.raises(RotationRefusedError) as info:
        plan_rotate(POLICY, ks, T0)
    assert info.value.status == 409
    assert info.value.error == "rotation_refused"
    assert "nxt" in info.value.description
    assert "prepublish" in info.value.description


def test_rotate_forced_while_next_young() -> None:
    ks = steady(next_age=10)
    plan = plan_rotate(POLICY, ks, T0, force=True)
    assert plan.reason == "forced"
    assert (plan.promote, plan.demote, plan.new_next, plan.new_current) == ("nxt", "cur", True, False)
    after = apply(plan, ks, T0)
    assert states(after)["nxt"] == KeyState.CURRENT
    assert states(after)["cur"] == KeyState.PREVIOUS


def test_rotate_manual_when_next_published_long_enough() -> None:
    ks = steady(next_age=HOUR)  # current is fresh: manual rotation ignores rotation_period
    plan = plan_rotate(POLICY, ks, T0)
    assert plan.reason == "manual"
    assert (plan.promote, plan.demote, plan.new_next) == ("nxt", "cur", True)
    # force on an old enough next is not a forced rotation: nothing was skipped
    assert plan_rotate(POLICY, ks, T0, force=True).reason == "manual"


def test_rotate_without_next_refused_unless_forced() -> None:
    ks = keyset(key("cur", KeyState.CURRENT, T0))
    with pytest.raises(RotationRefusedError):
        plan_rotate(POLICY, ks, T0)
    plan = plan_rotate(POLICY, ks, T0, force=True)
    assert plan.reason == "forced"
    assert (plan.demote, plan.new_current, plan.new_next) == ("cur", True, True)
    after = apply(plan, ks, T0)
    assert states(after)["cur"] == KeyState.PREVIOUS
    assert after.current is not None
    assert after.current.kid != "cur"
    assert after.next is not None
    assert check_invariants(after.keys) == []


def test_rotate_on_empty_keyset_bootstraps() -> None:
    plan = plan_rotate(POLICY, keyset(), T0)
    assert plan.reason == "bootstrap"
    assert plan.new_current
    assert plan.new_next


def test_rotate_carries_due_retirements() -> None:
    ks = keyset(key("old", KeyState.PREVIOUS, T0 - DAY, retire_at=T0 - POLICY.leeway), *steady(next_age=HOUR).keys)
    assert plan_rotate(POLICY, ks, T0).retire == ("old",)


# ----- plan_revoke ----------------------------------------------------------------------------


def test_revoke_current_promotes_next_and_creates_new_next() -> None:
    ks = steady(next_age=1)  # emergency: the prepublish gate does not apply
    plan = plan_revoke(ks, "cur")
    assert plan.reason == "revoke"
    assert (plan.revoke, plan.promote, plan.new_next, plan.new_current) == ("cur", "nxt", True, False)
    assert plan.demote is None
    after = apply(plan, ks, T0)
    cur = after.find("cur")
    assert cur is not None
    assert cur.state == KeyState.REVOKED
    assert cur.revoked_at == T0
    assert cur.deactivated_at == T0
    assert cur.sealed_private is None
    assert not cur.verifies
    assert after.current is not None
    assert after.current.kid == "nxt"
    assert after.next is not None
    assert after.next.kid not in ("cur", "nxt")
    assert check_invariants(after.keys) == []


def test_revoke_current_without_next_creates_fresh_current() -> None:
    ks = keyset(key("cur", KeyState.CURRENT, T0))
    plan = plan_revoke(ks, "cur")
    assert (plan.revoke, plan.new_current, plan.new_next) == ("cur", True, True)
    after = apply(plan, ks, T0)
    assert states(after)["cur"] == KeyState.REVOKED
    assert check_invariants(after.keys) == []


def test_revoke_next_creates_new_next() -> None:
    ks = steady()
    plan = plan_revoke(ks, "nxt")
    assert (plan.revoke, plan.promote, plan.new_next, plan.new_current) == ("nxt", None, True, False)
    after = apply(plan, ks, T0)
    assert states(after)["nxt"] == KeyState.REVOKED
    assert states(after)["cur"] == KeyState.CURRENT
    assert after.next is not None
    assert after.next.kid != "nxt"
    nxt = after.find("nxt")
    assert nxt is not None
    assert nxt.deactivated_at is None  # it never signed


def test_revoke_previous_just_revokes() -> None:
    ks = keyset(key("old", KeyState.PREVIOUS, T0 - DAY, retire_at=T0 + 100), *steady().keys)
    plan = plan_revoke(ks, "old")
    assert plan == Plan("ks", "revoke", revoke="old")
    assert not plan.rotates
    after = apply(plan, ks, T0)
    assert states(after) == {"old": KeyState.REVOKED, "cur": KeyState.CURRENT, "nxt": KeyState.NEXT}
    old = after.find("old")
    assert old is not None
    assert old.sealed_private is None
    assert old.revoked_at == T0


def test_revoke_already_revoked_is_idempotent() -> None:
    ks = steady()
    once = apply(plan_revoke(ks, "cur"), ks, T0)
    plan = plan_revoke(once, "cur")
    assert plan.empty
    assert plan.reason == "revoke"
    keys, transitions = apply_plan(POLICY, once, plan, [], T0 + 5)
    assert keys == once.keys
    assert transitions == []
    cur = once.find("cur")
    assert cur is not None
    assert cur.revoked_at == T0  # the first revocation's time is kept


def test_applying_a_revocation_twice_keeps_the_first() -> None:
    ks = steady()
    once = apply(plan_revoke(ks, "nxt"), ks, T0)
    keys, transitions = apply_plan(POLICY, once, Plan("ks", "revoke", revoke="nxt"), [], T0 + 60)
    nxt = next(k for k in keys if k.kid == "nxt")
    assert nxt.revoked_at == T0
    assert transitions == []


def test_revoke_unknown_kid() -> None:
    with pytest.raises(NotFoundError) as info:
        plan_revoke(steady(), "nope")
    assert info.value.status == 404
    with pytest.raises(NotFoundError):
        plan_revoke(keyset(), "nope")


# ----- on_canary_failure ----------------------------------------------------------------------


def test_canary_failure_stops_scheduled_rotation() -> None:
    ks = steady(current_age=DAY, next_age=HOUR)
    plan = on_canary_failure(plan_tick(POLICY, ks, T0))
    assert plan.reason == "canary_failed"
    assert (plan.promote, plan.demote, plan.discard, plan.new_next, plan.new_current) == (
        None,
        None,
        "nxt",
        True,
        False,
    )
    assert not plan.rotates
    keys, transitions = apply_plan(POLICY, ks, plan, [new_key("fresh")], T0)
    assert states(keys) == {"cur": KeyState.CURRENT, "nxt": KeyState.RETIRED, "fresh": KeyState.NEXT}
    bad = next(k for k in keys if k.kid == "nxt")
    assert bad.sealed_private is None
    assert bad.retired_at == T0
    assert ("discarded", "nxt", KeyState.RETIRED) in [(t.event, t.kid, t.state) for t in transitions]
    assert check_invariants(keys) == []
    # the fresh next has to be published for prepublish before the rotation is tried again
    after = replace(ks, keys=keys)
    assert plan_tick(POLICY, after, T0 + HOUR - 1).empty
    assert plan_tick(POLICY, after, T0 + HOUR).promote == "fresh"


def test_canary_failure_stops_manual_rotation() -> None:
    ks = steady(next_age=HOUR)
    plan = on_canary_failure(plan_rotate(POLICY, ks, T0))
    assert (plan.reason, plan.promote, plan.demote, plan.discard) == ("canary_failed", None, None, "nxt")
    after = apply(plan, ks, T0)
    assert after.current is not None
    assert after.current.kid == "cur"


def test_canary_failure_during_emergency_revoke_uses_fresh_current() -> None:
    ks = steady()
    plan = on_canary_failure(plan_revoke(ks, "cur"))
    assert plan.reason == "revoke"
    assert (plan.revoke, plan.promote, plan.discard, plan.new_current, plan.new_next) == (
        "cur",
        None,
        "nxt",
        True,
        True,
    )
    keys, _ = apply_plan(POLICY, ks, plan, [new_key("c2"), new_key("n2")], T0)
    assert states(keys) == {
        "cur": KeyState.REVOKED,
        "nxt": KeyState.RETIRED,
        "c2": KeyState.CURRENT,
        "n2": KeyState.NEXT,
    }
    assert check_invariants(keys) == []


def test_canary_failure_without_promotion_changes_nothing() -> None:
    plan = plan_revoke(steady(), "nxt")
    assert on_canary_failure(plan) is plan


def test_canary_failure_when_no_current_still_leaves_a_current() -> None:
    ks = keyset(key("nxt", KeyState.NEXT, T0))  # damaged store: next but no current
    plan = on_canary_failure(plan_tick(POLICY, ks, T0))
    after = apply(plan, ks, T0)
    assert check_invariants(after.keys) == []


# ----- apply_plan -----------------------------------------------------------------------------


def test_demotion_sets_retire_at_to_now_plus_verify_window() -> None:
    ks = steady(current_age=DAY, next_age=HOUR)
    now = T0 + 7.5
    after = apply(plan_tick(POLICY, ks, now), ks, now)
    prev = after.find("cur")
    assert prev is not None
    assert prev.state == KeyState.PREVIOUS
    assert prev.deactivated_at == now
    assert prev.retire_at == now + POLICY.verify_window
    assert prev.sealed_private == b"x"  # still a published, verifying key
    assert prev.verifies


def test_retire_at_follows_policy_verify_window() -> None:
    settings = build_settings({"jwks": {"max_age": "10m"}, "keysets": {"ks": {"token_ttl": "1h", "leeway": "1m"}}})
    policy = settings.keysets["ks"]
    assert policy.verify_window == 3600 + 60 + 600
    ks = steady(next_age=HOUR)
    keys, _ = apply_plan(policy, ks, plan_rotate(policy, ks, T0), [new_key()], T0)
    prev = next(k for k in keys if k.kid == "cur")
    assert prev.retire_at == T0 + 4260


def test_a_next_replaced_by_an_adopted_version_is_not_called_a_validation_failure() -> None:
    ks = steady(next_age=60)
    adopted = Plan("ks", "adopted", discard="nxt", new_next=True)
    _, transitions = apply_plan(POLICY, ks, adopted, [new_key("outside")], T0)
    discarded = next(t for t in transitions if t.event == "discarded")
    assert discarded.detail == "replaced by a backend version made outside the service"
    failed = on_canary_failure(plan_tick(POLICY, steady(current_age=400 * DAY, next_age=2 * HOUR), T0))
    _, transitions = apply_plan(POLICY, ks, failed, new_keys(failed), T0)
    assert next(t for t in transitions if t.event == "discarded").detail == "failed validation before promotion"


def test_private_material_dropped_on_retire_revoke_discard() -> None:
    ks = keyset(
        key("old", KeyState.PREVIOUS, T0 - DAY, retire_at=T0),
        key("old2", KeyState.PREVIOUS, T0 - DAY, retire_at=T0 + DAY),
        key("cur", KeyState.CURRENT, T0 - DAY),
        key("nxt", KeyState.NEXT, T0 - HOUR),
    )
    plan = replace(on_canary_failure(plan_revoke(ks, "cur")), retire=("old",))
    keys, _ = apply_plan(POLICY, ks, plan, [new_key("c"), new_key("n")], T0)
    by_kid = {k.kid: k for k in keys}
    for kid in ("old", "cur", "nxt"):
        assert by_kid[kid].sealed_private is None, kid
        assert by_kid[kid].state in (KeyState.RETIRED, KeyState.REVOKED)
    for kid in ("old2", "c", "n"):
        assert by_kid[kid].sealed_private == b"x", kid
    # public halves stay, so `keys list` and audits can still show what the key was
    assert by_kid["cur"].public_jwk == {"kty": "EC", "kid": "cur"}


@pytest.mark.parametrize("count", [0, 1, 3])
def test_wrong_number_of_new_keys(count: int) -> None:
    plan = plan_tick(POLICY, keyset(), T0)
    assert plan.new_keys == 2
    with pytest.raises(ValueError, match="new keys"):
        apply_plan(POLICY, keyset(), plan, [new_key() for _ in range(count)], T0)


def test_new_keys_for_empty_plan_refused() -> None:
    ks = steady()
    with pytest.raises(ValueError, match="new keys"):
        apply_plan(POLICY, ks, plan_tick(POLICY, ks, T0), [new_key()], T0)


def test_new_current_without_demotion_refused() -> None:
    ks = steady()
    with pytest.raises(ValueError, match="demoted or revoked"):
        apply_plan(POLICY, ks, Plan("ks", "bogus", new_current=True), [new_key()], T0)


def test_apply_plan_does_not_modify_input() -> None:
    ks = steady(current_age=DAY, next_age=HOUR)
    before = ks.keys
    apply(plan_tick(POLICY, ks, T0), ks, T0)
    assert ks.keys == before
    assert states(ks) == {"cur": KeyState.CURRENT, "nxt": KeyState.NEXT}


def test_transitions_of_scheduled_rotation() -> None:
    ks = steady(current_age=DAY, next_age=HOUR)
    plan = plan_tick(POLICY, ks, T0)
    _, transitions = apply_plan(POLICY, ks, plan, [new_key("n2")], T0)
    assert [(t.event, t.kid, t.state) for t in transitions] == [
        ("rotated", "cur", KeyState.PREVIOUS),
        ("rotated", "nxt", KeyState.CURRENT),
        ("created", "n2", KeyState.NEXT),
    ]


# ----- next_rotation_at -----------------------------------------------------------------------


def test_next_rotation_at() -> None:
    assert next_rotation_at(POLICY, keyset()) is None
    assert next_rotation_at(POLICY, keyset(key("nxt", KeyState.NEXT, T0))) is None
    # rotation_period is the later bound
    ks = steady(current_age=0, next_age=0)
    assert next_rotation_at(POLICY, ks) == T0 + DAY
    # prepublish is the later bound: the next key was published (replaced) late
    ks = keyset(key("cur", KeyState.CURRENT, T0 - DAY, activated_at=T0 - DAY), key("nxt", KeyState.NEXT, T0 - 60))
    assert next_rotation_at(POLICY, ks) == T0 - 60 + HOUR
    # without a next only rotation_period is known
    assert next_rotation_at(POLICY, keyset(key("cur", KeyState.CURRENT, T0))) == T0 + DAY


def test_next_rotation_at_agrees_with_plan_tick() -> None:
    for ks in (steady(), steady(current_age=DAY - 5, next_age=10), steady(current_age=2 * DAY, next_age=HOUR - 7)):
        at = next_rotation_at(POLICY, ks)
        assert at is not None
        assert plan_tick(POLICY, ks, at - 0.5).promote is None
        assert plan_tick(POLICY, ks, at).reason == "scheduled"


# ----- check_invariants -----------------------------------------------------------------------


def test_check_invariants_clean() -> None:
    assert check_invariants(steady().keys) == []


@pytest.mark.parametrize(
    ("keys", "fragment"),
    [
        ((), "0 current keys"),
        ((key("n", KeyState.NEXT, T0),), "0 current keys"),
        ((key("a", KeyState.CURRENT, T0), key("b", KeyState.CURRENT, T0)), "2 current keys"),
        (
            (key("a", KeyState.CURRENT, T0), key("b", KeyState.NEXT, T0), key("c", KeyState.NEXT, T0)),
            "more than one next key",
        ),
        ((key("a", KeyState.CURRENT, T0), key("a", KeyState.PREVIOUS, T0)), "duplicate kids"),
        (
            (key("a", KeyState.CURRENT, T0), key("r", KeyState.RETIRED, T0, sealed_private=b"k")),
            "r is retired but still holds private material",
        ),
        (
            (key("a", KeyState.CURRENT, T0), key("v", KeyState.REVOKED, T0, sealed_private=b"k")),
            "v is revoked but still holds private material",
        ),
    ],
)
def test_check_invariants_problems(keys: tuple[KeyVersion, ...], fragment: str) -> None:
    problems = check_invariants(keys)
    assert len(problems) == 1
    assert fragment in problems[0]


def test_check_invariants_reports_every_problem() -> None:
    keys = (
        key("a", KeyState.NEXT, T0),
        key("a", KeyState.NEXT, T0),
        key("r", KeyState.RETIRED, T0, sealed_private=b"k"),
    )
    assert len(check_invariants(keys)) == 4


# ----- plan_taint -----------------------------------------------------------------------------


def test_taint_current_demotes_it_and_promotes_next_as_revoke_does() -> None:
    ks = steady(next_age=1)  # like an emergency revocation, the prepublish gate does not apply
    plan = plan_taint(POLICY, ks, "cur", T0)
    revoke = plan_revoke(ks, "cur")
    assert (plan.promote, plan.new_next, plan.new_current) == (revoke.promote, revoke.new_next, revoke.new_current)
    assert (plan.reason, plan.taint, plan.demote, plan.revoke) == ("taint", "cur", "cur", None)
    assert plan.rotates
    keys, transitions = apply_plan(POLICY, ks, plan, new_keys(plan), T0)
    after = replace(ks, keys=keys)
    cur = after.find("cur")
    assert cur is not None
    assert (cur.state, cur.tainted_at, cur.deactivated_at) == (KeyState.PREVIOUS, T0, T0)
    assert cur.retire_at == T0 + POLICY.verify_window
    assert cur.verifies
    assert cur.sealed_private is not None  # it stays a verifying key; only revocation destroys it
    assert after.current is not None and after.current.kid == "nxt"
    assert after.next is not None and after.next.kid not in ("cur", "nxt")
    assert [(t.event, t.kid) for t in transitions if t.kid == "cur"] == [("rotated", "cur"), ("tainted", "cur")]
    assert check_invariants(after.keys) == []


def test_taint_current_without_next_makes_a_fresh_current() -> None:
    ks = keyset(key("cur", KeyState.CURRENT, T0))
    plan = plan_taint(POLICY, ks, "cur", T0)
    assert (plan.taint, plan.demote, plan.new_current, plan.new_next) == ("cur", "cur", True, True)
    after = apply(plan, ks, T0)
    assert states(after)["cur"] == KeyState.PREVIOUS
    assert after.current is not None and after.current.kid != "cur"
    assert check_invariants(after.keys) == []


def test_a_tainted_current_whose_successor_fails_its_canary_is_replaced_by_a_fresh_key() -> None:
    """A current key already tainted (found so in the store) is replaced; if next then fails its
    canary, a fresh key signs instead, as for a revocation: the tainted key never stays current."""
    ks = steady(next_age=1)
    cur = ks.find("cur")
    assert cur is not None
    ks = replace(ks, keys=tuple(k.with_(tainted_at=T0 - 1) if k.kid == "cur" else k for k in ks.keys))
    plan = on_canary_failure(plan_taint(POLICY, ks, "cur", T0))
    assert (plan.demote, plan.discard, plan.new_current) == ("cur", "nxt", True)
    after = apply(plan, ks, T0)
    assert after.current is not None and after.current.kid not in ("cur", "nxt")
    assert check_invariants(after.keys) == []


def test_taint_previous_keeps_its_retirement() -> None:
    ks = keyset(key("old", KeyState.PREVIOUS, T0 - DAY, retire_at=T0 + 100), *steady().keys)
    plan = plan_taint(POLICY, ks, "old", T0)
    assert plan == Plan("ks", "taint", taint="old")
    assert not plan.rotates
    after = apply(plan, ks, T0)
    old = after.find("old")
    assert old is not None
    assert (old.state, old.tainted_at, old.retire_at) == (KeyState.PREVIOUS, T0, T0 + 100)
    assert states(after)["cur"] == KeyState.CURRENT
    # ...and it retires as any previous key does.
    assert plan_tick(POLICY, after, T0 + 100 + POLICY.leeway).retire == ("old",)


def test_taint_is_idempotent_and_keeps_the_first_time() -> None:
    ks = steady()
    once = apply(plan_taint(POLICY, ks, "cur", T0), ks, T0)
    plan = plan_taint(POLICY, once, "cur", T0 + 5)
    assert plan.empty
    keys, transitions = apply_plan(POLICY, once, plan, [], T0 + 5)
    assert keys == once.keys
    assert transitions == []


def test_taint_refused_for_next_retired_revoked_and_unknown() -> None:
    ks = keyset(
        key("gone", KeyState.RETIRED, T0 - DAY, retired_at=T0 - 1),
        key("dead", KeyState.REVOKED, T0 - DAY, revoked_at=T0 - 1),
        *steady().keys,
    )
    for kid in ("nxt", "gone", "dead"):
        with pytest.raises(TaintRefusedError) as info:
            plan_taint(POLICY, ks, kid, T0)
        assert info.value.status == 409
    with pytest.raises(NotFoundError):
        plan_taint(POLICY, ks, "nope", T0)


def test_revoking_a_tainted_key_works_as_usual() -> None:
    ks = steady()
    tainted = apply(plan_taint(POLICY, ks, "cur", T0), ks, T0)
    plan = plan_revoke(tainted, "cur")
    assert plan == Plan("ks", "revoke", revoke="cur")  # it no longer signs: nothing to promote
    after = apply(plan, tainted, T0 + 60)
    cur = after.find("cur")
    assert cur is not None
    assert (cur.state, cur.sealed_private, cur.tainted_at) == (KeyState.REVOKED, None, T0)


def test_a_tainted_current_found_in_the_store_is_replaced_at_the_next_tick() -> None:
    ks = steady(next_age=1)
    damaged = replace(ks, keys=tuple(k.with_(tainted_at=T0 - 5) if k.kid == "cur" else k for k in ks.keys))
    plan = plan_tick(POLICY, damaged, T0)
    assert (plan.promote, plan.demote, plan.new_next) == ("nxt", "cur", True)
    after = apply(plan, damaged, T0)
    assert after.current is not None and after.current.kid == "nxt"
    cur = after.find("cur")
    assert cur is not None and cur.tainted_at == T0 - 5


def test_canary_failure_during_taint_uses_a_fresh_current() -> None:
    ks = steady()
    plan = on_canary_failure(plan_taint(POLICY, ks, "cur", T0))
    assert (plan.promote, plan.discard, plan.demote, plan.taint) == (None, "nxt", "cur", "cur")
    assert (plan.new_current, plan.new_next) == (True, True)
    after = apply(plan, ks, T0)
    assert after.current is not None and after.current.kid not in ("cur", "nxt")
    assert states(after)["cur"] == KeyState.PREVIOUS
    assert check_invariants(after.keys) == []
