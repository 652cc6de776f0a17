"""The rollover plan (API.md §6 "Plan"), pure: fixed `now`, hand-made keysets, adoption and gates."""

from __future__ import annotations

import itertools
from dataclasses import replace

import orjson
import pytest

from jwks_service.adoption import Adoption, Fetch, Gate, KeyAdoption, gate
from jwks_service.clock import rfc3339
from jwks_service.lifecycle import apply_plan, next_rotation_at, plan_tick
from jwks_service.model import Keyset, KeysetPolicy, KeyState, KeyVersion, NewKey
from jwks_service.plan import keyset_plan, relative, scheduled_rotations

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
    verify_window=1230,
    adoption_gate=0.9,
    adoption_max_wait=2 * HOUR,
)


def _key(kid: str, state: KeyState, created_at: float, **kw: object) -> KeyVersion:
    fields: dict[str, object] = {"public_jwk": {"kty": "EC", "kid": kid}, "sealed_private": b"x", **kw}
    return KeyVersion(kid, "ks", "ES256", state, created_at, **fields)  # type: ignore[arg-type]


def _keyset(*keys: KeyVersion) -> Keyset:
    return Keyset("ks", "ES256", "local", 7, keys)


# A keyset a while after its second rotation: current activated at T0, next made then, one previous
# key still verifying, an older one retired and one revoked.
KEYSET = _keyset(
    _key("cur", KeyState.CURRENT, T0 - DAY, activated_at=T0),
    _key("nxt", KeyState.NEXT, T0),
    _key("prev", KeyState.PREVIOUS, T0 - 2 * DAY, activated_at=T0 - DAY, deactivated_at=T0, retire_at=T0 + 1230),
    _key(
        "old",
        KeyState.RETIRED,
        T0 - 3 * DAY,
        activated_at=T0 - 2 * DAY,
        deactivated_at=T0 - DAY,
        retire_at=T0 - DAY + 1230,
        retired_at=T0 - DAY + 1260,
        sealed_private=None,
    ),
    _key("bad", KeyState.REVOKED, T0 - 5 * DAY, revoked_at=T0 - 4 * DAY, sealed_private=None),
)


def _adoption(keyset: Keyset, shares: dict[str, int], fetchers: int, laggards: tuple[Fetch, ...] = ()) -> Adoption:
    keys = tuple(
        KeyAdoption(k.kid, k.state.value, shares.get(k.kid, 0), shares.get(k.kid, 0) / fetchers)
        for k in keyset.keys
        if k.state in (KeyState.NEXT, KeyState.CURRENT, KeyState.PREVIOUS)
    )
    return Adoption(keyset.name, DAY, fetchers, keys, laggards, len(laggards))


def test_each_key_has_its_past_and_planned_times() -> None:
    now = T0 + 600
    plan = keyset_plan(POLICY, KEYSET, now)
    assert [k.kid for k in plan.keys] == ["nxt", "cur", "prev", "bad", "old"]

    nxt = plan.key("nxt")
    assert nxt is not None and nxt.published is not None and nxt.signing and nxt.stop_signing and nxt.retire
    assert (nxt.published.at, nxt.published.planned) == (T0, False)
    assert (nxt.signing.at, nxt.signing.planned) == (T0 + DAY, True)  # the next rotation
    assert (nxt.stop_signing.at, nxt.stop_signing.planned) == (T0 + 2 * DAY, True)  # the one after
    assert nxt.retire.at == T0 + 2 * DAY + 1230

    cur = plan.key("cur")
    assert cur is not None and cur.signing and cur.stop_signing and cur.retire
    assert (cur.signing.at, cur.signing.planned) == (T0, False)
    assert (cur.stop_signing.at, cur.stop_signing.planned) == (T0 + DAY, True)
    assert (cur.retire.at, cur.retire.planned) == (T0 + DAY + 1230, True)

    prev = plan.key("prev")
    assert prev is not None and prev.signing and prev.stop_signing and prev.retire
    assert (prev.signing.at, prev.stop_signing.at) == (T0 - DAY, T0)
    assert not prev.signing.planned and not prev.stop_signing.planned
    assert (prev.retire.at, prev.retire.planned) == (T0 + 1230, True)

    old = plan.key("old")
    assert (
        old is not None and old.retire is not None and (old.retire.at, old.retire.planned) == (T0 - DAY + 1260, False)
    )
    bad = plan.key("bad")
    assert bad is not None and bad.revoked_at == T0 - 4 * DAY and bad.signing is None and bad.retire is None


def test_three_rotations_projected_from_each_activation() -> None:
    rotations = scheduled_rotations(POLICY, KEYSET, T0 + 600)
    assert [r.at for r in rotations] == [T0 + DAY, T0 + 2 * DAY, T0 + 3 * DAY]
    assert [(r.promotes, r.demotes) for r in rotations] == [("nxt", "cur"), (None, "nxt"), (None, None)]
    assert rotations[0].at == next_rotation_at(POLICY, KEYSET)


def test_a_young_next_key_holds_the_rotation_until_prepublish() -> None:
    # next made 10m before the current key is due: the rotation waits for its prepublish hour.
    keyset = replace(KEYSET, keys=(KEYSET.keys[0], replace(KEYSET.keys[1], created_at=T0 + DAY - 600)))
    rotations = scheduled_rotations(POLICY, keyset, T0 + 600)
    assert rotations[0].at == T0 + DAY - 600 + HOUR
    assert rotations[1].at == rotations[0].at + DAY
    # No next key at all: one is made at the scheduler's next tick (now), then published for prepublish.
    alone = _keyset(_key("cur", KeyState.CURRENT, T0, activated_at=T0 - DAY + 60))
    assert scheduled_rotations(POLICY, alone, T0)[0].at == T0 + HOUR
    assert scheduled_rotations(POLICY, _keyset(), T0) == ()


def test_a_prepublish_longer_than_the_period_spaces_the_later_rotations() -> None:
    policy = replace(POLICY, rotation_period=HOUR, prepublish=2 * HOUR)
    rotations = scheduled_rotations(policy, KEYSET, T0 + 600)
    assert rotations[0].at == T0 + 2 * HOUR
    assert [b.at - a.at for a, b in itertools.pairwise(rotations)] == [2 * HOUR, 2 * HOUR]


def _simulate(policy: KeysetPolicy, keyset: Keyset, start: float, until: float, step: int) -> list[tuple[float, str]]:
    """Run the scheduler's tick every `step` seconds; the (time, kid) of every promotion."""
    counter = itertools.count()
    promoted = []
    now = start
    while now <= until:
        plan = plan_tick(policy, keyset, now)
        fresh = [NewKey(f"k{next(counter)}", {"kty": "EC"}, b"x") for _ in range(plan.new_keys)]
        keys, _ = apply_plan(policy, keyset, plan, fresh, now)
        if plan.promote:
            promoted.append((now, plan.promote))
        keyset = replace(keyset, keys=keys, revision=keyset.revision + 1)
        now += step
    return promoted


def test_the_projection_is_what_the_scheduler_does() -> None:
    """The plan's rotations are the moments plan_tick promotes, ticking every minute."""
    for policy in (POLICY, replace(POLICY, rotation_period=HOUR, prepublish=2 * HOUR)):
        now = T0 + 600
        predicted = scheduled_rotations(policy, KEYSET, now)
        actual = _simulate(policy, KEYSET, now, predicted[-1].at + 60, 60)
        assert [t for t, _ in actual] == [r.at for r in predicted]
        assert actual[0][1] == "nxt"


def test_an_overdue_rotation_is_projected_from_now() -> None:
    now = T0 + DAY + 3 * HOUR  # due 3h ago (the scheduler was down, or the gate held it)
    rotations = scheduled_rotations(POLICY, KEYSET, now)
    assert rotations[0].at == T0 + DAY and not rotations[0].waiting
    assert rotations[1].at == now + DAY


def test_the_gate_holds_a_due_rotation_and_the_plan_says_until_when() -> None:
    now = T0 + DAY + 600
    adopted = _adoption(KEYSET, {"cur": 10, "nxt": 6, "prev": 10}, 10)
    g = gate(POLICY, KEYSET, adopted, due_at=T0 + DAY, now=now)
    assert g.waiting
    plan = keyset_plan(POLICY, KEYSET, now, adopted=adopted, gate=g)
    first = plan.rotations[0]
    assert first.waiting and first.latest == T0 + DAY + 2 * HOUR
    assert plan.as_dict()["gate"] == g.as_dict()
    # Not due yet: the gate says what it would do, the rotation is not held.
    early = keyset_plan(POLICY, KEYSET, T0 + 600, adopted=adopted, gate=g)
    assert not early.rotations[0].waiting
    # The gate open: nothing held.
    opened = Gate("ks", True, "adopted", 0.9, 0.95, 10, T0 + DAY, T0 + DAY + 2 * HOUR)
    assert not keyset_plan(POLICY, KEYSET, now, adopted=adopted, gate=opened).rotations[0].waiting


def test_what_if_forced_now_names_the_laggards_and_the_last_token() -> None:
    now = T0 + 2 * HOUR  # next published 2h ago: a rotation now needs no force
    laggards = (Fetch("billing/1", '"r6"', T0 - 300), Fetch("10.0.0.9 curl/8", '"r5"', T0 - 100))
    adopted = _adoption(KEYSET, {"cur": 10, "nxt": 8, "prev": 10}, 10, laggards)
    plan = keyset_plan(POLICY, KEYSET, now, adopted=adopted)
    forced = plan.forced
    assert (forced.promotes, forced.demotes) == ("nxt", "cur")
    assert forced.unknown_kid_fetchers == 2 and forced.laggards == laggards
    assert forced.last_token_expires_at == now + 900 + 30  # token_ttl + leeway
    assert forced.retire_at == now + 1230  # verify_window, as apply_plan stamps retire_at
    assert forced.refused_without_force is None
    nxt = plan.key("nxt")
    assert nxt is not None and nxt.share == 0.8


def test_what_if_says_when_a_rotation_without_force_is_refused() -> None:
    keyset = replace(KEYSET, keys=(KEYSET.keys[0], replace(KEYSET.keys[1], created_at=T0 + 300)))
    forced = keyset_plan(POLICY, keyset, T0 + 600).forced
    assert forced.refused_without_force is not None and "prepublish" in forced.refused_without_force
    assert forced.unknown_kid_fetchers is None and forced.laggards == ()  # adoption unknown


def test_what_if_without_a_next_key_every_fetcher_meets_the_fresh_kid() -> None:
    alone = _keyset(_key("cur", KeyState.CURRENT, T0, activated_at=T0))
    adopted = _adoption(alone, {"cur": 12}, 12)
    forced = keyset_plan(POLICY, alone, T0 + 60, adopted=adopted).forced
    assert forced.promotes is None and forced.demotes == "cur" and forced.unknown_kid_fetchers == 12
    assert forced.refused_without_force is not None and "no next key" in forced.refused_without_force


def test_an_hmac_keyset_has_no_fetchers_to_strand() -> None:
    hmac = Keyset(
        "h",
        "HS256",
        "local",
        3,
        (
            KeyVersion("c", "h", "HS256", KeyState.CURRENT, T0, None, b"x", activated_at=T0),
            KeyVersion("n", "h", "HS256", KeyState.NEXT, T0, None, b"x"),
        ),
    )
    plan = keyset_plan(replace(POLICY, name="h", alg="HS256"), hmac, T0 + 2 * HOUR)
    assert not plan.published and plan.forced.unknown_kid_fetchers == 0
    assert all(k.published is None for k in plan.keys)


def test_the_document_is_json_with_rfc3339_times() -> None:
    now = T0 + 600
    laggards = (Fetch("billing/1", '"r6"', T0 - 300),)
    adopted = _adoption(KEYSET, {"cur": 4, "nxt": 3, "prev": 4}, 4, laggards)
    doc = keyset_plan(POLICY, KEYSET, now, adopted=adopted).as_dict()
    assert orjson.loads(orjson.dumps(doc)) == doc
    assert doc["keyset"] == "ks" and doc["generated_at"] == rfc3339(now) and doc["adoption"] == {"fetchers": 4}
    assert doc["policy"] == {
        "rotation_period": "1d",
        "prepublish": "1h",
        "token_ttl": "15m",
        "leeway": "30s",
        "verify_window": "1230s",
        "adoption_gate": 0.9,
        "adoption_max_wait": "2h",
    }
    keys = {k["kid"]: k for k in doc["keys"]}  # type: ignore[attr-defined]
    assert keys["nxt"]["signing"] == {"at": rfc3339(T0 + DAY), "planned": True}
    assert keys["cur"]["share"] == 1.0
    assert [r["at"] for r in doc["rotations"]] == [rfc3339(T0 + n * DAY) for n in (1, 2, 3)]  # type: ignore[attr-defined]
    forced = doc["forced_rotation_now"]
    assert forced["laggards"] == [{"fetcher": "billing/1", "revision": '"r6"', "last_fetch": rfc3339(T0 - 300)}]  # type: ignore[index]
    assert forced["last_token_expires_at"] == rfc3339(now + 930)  # type: ignore[index]


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (0, "now"),
        (0.4, "now"),
        (5, "in 5s"),
        (-7200, "2h ago"),
        (3 * DAY + 4 * HOUR + 59, "in 3d 4h"),
        (-61, "1m 1s ago"),
    ],
)
def test_relative(delta: float, text: str) -> None:
    assert relative(T0 + delta, T0) == text
