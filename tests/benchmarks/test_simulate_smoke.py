"""bench/simulate.py: invariants of the rollover model that a wrong model would break, on tiny
populations (the full study runs 10^6 verifiers: `python bench/simulate.py`)."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import sys
from types import ModuleType

import numpy as np
import pytest
from support import PROJECT_ROOT


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("simulate", PROJECT_ROOT / "bench" / "simulate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["simulate"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


sim = _load()
ONLY = {name: tuple(1.0 if s == name else 0.0 for s in sim.STRATEGIES) for name in sim.STRATEGIES}


def _run(**kw: object) -> object:
    base = sim.Config(verifiers=600, lead=700.0, tail=300.0, seed=7)
    return sim.simulate(dataclasses.replace(base, **kw))


@pytest.mark.parametrize("cdn", [True, False])
def test_pyjwt_sees_no_failure_when_prepublish_covers_max_age_and_leeway(cdn: bool) -> None:
    # prepublish = max_age + leeway exactly: the config's lowest allowed value. PyJWKClient keeps its set
    # 300 s whatever max_age says, but refetches an unknown kid once its 30 s cooldown is over.
    r = _run(mix=ONLY["pyjwt"], cdn=cdn, max_age=120.0, prepublish=150.0)
    assert r.failing[sim.PYJWT] == 0
    assert r.failed.sum() == 0


def test_prepublish_below_max_age_fails_behind_the_cdn() -> None:
    # The same population with a next key published 30 s before it signs: POP copies up to 120 s old.
    r = _run(mix=ONLY["pyjwt"], cdn=True, max_age=120.0, prepublish=30.0)
    assert r.failing[sim.PYJWT] > 0.05 * r.counts[sim.PYJWT]


def test_fetch_once_fails_after_promotion_and_every_token_once_the_old_key_is_gone() -> None:
    r = _run(mix=ONLY["once"], cdn=True, prepublish=600.0)
    share = r.failed[sim.ONCE] / r.tokens[sim.ONCE]
    before = share[: int(r.t_sign)]
    after = share[int(r.t_drop) + 1 : r.horizon - 1]
    assert before.sum() == 0  # nothing signs with the new key yet
    assert r.failing[sim.ONCE] == r.counts[sim.ONCE]  # every one of them fails
    assert np.allclose(after, 1.0, atol=0.02)  # past retire_at every token carries the new kid


@pytest.mark.parametrize("max_age", [60.0, 300.0])
def test_the_cdn_bounds_origin_requests_by_pops_over_max_age(max_age: float) -> None:
    pops = 4
    r = _run(mix=(0.4, 0.3, 0.3, 0.0), cdn=True, pops=pops, max_age=max_age, prepublish=max_age + 30.0, verifiers=600)
    # in any window of max_age seconds each POP fetches once (plus a second for the boundary)
    window = int(max_age)
    per_window = np.convolve(r.origin, np.ones(window), mode="valid")
    assert per_window.max() <= 2 * pops
    assert r.edge.sum() > 20 * r.origin.sum()  # the verifiers' requests stop at the POPs
    without = _run(mix=(0.4, 0.3, 0.3, 0.0), cdn=False, max_age=max_age, prepublish=max_age + 30.0, verifiers=600)
    assert without.origin.sum() == without.edge.sum() > 20 * r.origin.sum()


def test_an_emergency_rotation_makes_a_spike_of_unknown_kid_refetches() -> None:
    r = _run(scenario="forced", mix=(0.5, 0.5, 0.0, 0.0), cdn=False)
    t = int(r.t_sign)
    assert r.unknown[:t].sum() == 0  # no unknown kid before the new key signs
    after = r.unknown[t : t + 300]
    assert after.sum() >= 0.5 * r.counts[:2].sum()  # most verifiers meet the new kid before their refresh
    assert r.origin[t : t + 300].max() > 3 * r.origin[: t - 1].mean()  # a herd at the origin
    # the SDK refetches (2 s cooldown) and gets the new key from the origin: no failure
    assert r.failing[sim.SDK] == 0


def test_the_run_is_deterministic_for_a_seed() -> None:
    a = _run(scenario="revoke", verifiers=200, mix=(0.1, 0.9, 0.0, 0.0))
    b = _run(scenario="revoke", verifiers=200, mix=(0.1, 0.9, 0.0, 0.0))
    assert np.array_equal(a.origin, b.origin) and np.array_equal(a.failed, b.failed)
    assert a.summary()["revoked_key_exposure_s"] == b.summary()["revoked_key_exposure_s"]


def test_stale_if_error_carries_the_sdk_through_an_origin_outage() -> None:
    outage = (-300.0, 300.0)
    kept = _run(mix=ONLY["sdk"], cdn=True, outage=outage, prepublish=900.0)
    assert kept.failing[sim.SDK] == 0
    none = _run(mix=ONLY["sdk"], cdn=True, outage=outage, prepublish=900.0, stale_if_error=0.0)
    assert none.failing[sim.SDK] > 0.9 * none.counts[sim.SDK]


def test_the_adoption_gate_waits_for_fetch_once_verifiers_only_when_it_can_see_them() -> None:
    base = sim.GateConfig(verifiers=4000, step=1800.0, seed=3)
    off = sim.gate_study(dataclasses.replace(base, gate=0.0))
    crowded = sim.gate_study(dataclasses.replace(base, max_fetchers=400))
    seen = sim.gate_study(dataclasses.replace(base, max_fetchers=10**6, window=7 * 86400.0))
    assert off["promoted_after_due_s"] == 0 and crowded["promoted_after_due_s"] == 0
    assert 0 < seen["promoted_after_due_s"] <= base.max_wait
    assert seen["once_failing_share"] < off["once_failing_share"]
    assert math.isclose(off["once_failing_share"], crowded["once_failing_share"])
