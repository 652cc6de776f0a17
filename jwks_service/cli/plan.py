"""`jwks-service keys plan [KEYSET] [--json]`: a keyset's rollover plan (API.md §6), as the admin API's
`GET /admin/keysets/{name}/plan` gives it (`--json`), or laid out for people: each key's times in
RFC 3339 and relative to now, the next rotations, the adoption gate, and what a forced rotation now
would do."""

from __future__ import annotations

import argparse

from ..clock import rfc3339
from ..model import KeyState
from ..plan import KeyPlan, KeysetPlan, Moment, relative, span
from ..planning import read_plan
from .common import per_keyset, print_table

MAX_LAGGARDS_SHOWN = 10


def cmd_keys_plan(args: argparse.Namespace) -> int:
    return per_keyset(args, read_plan, print_plan)


def _when(moment: Moment | None, now: float) -> str:
    if moment is None:
        return "-"
    rel = relative(moment.at, now)
    if moment.planned and moment.at <= now:
        rel = f"due {rel}"
    return f"{rfc3339(moment.at)} ({rel})"


def _share(plan: KeysetPlan, key: KeyPlan) -> str:
    if key.state not in (KeyState.NEXT, KeyState.CURRENT, KeyState.PREVIOUS) or not plan.published:
        return "-"
    if plan.fetchers is None:
        return "unknown"
    return "-" if key.share is None else f"{key.share:.0%}"


def _state(key: KeyPlan) -> str:
    return f"{key.state.value}, tainted" if key.tainted else key.state.value


def print_plan(plan: KeysetPlan) -> None:
    now, p = plan.now, plan.policy
    print(f"keyset {plan.keyset} ({plan.alg}), at {rfc3339(now)}")
    print(
        f"  rotation every {span(p.rotation_period)}, next published {span(p.prepublish)} before it signs,"
        f" tokens {span(p.token_ttl)} + leeway {span(p.leeway)}, verify window {span(p.verify_window)}"
    )
    print()
    print_table(
        [
            [
                _state(k),
                k.kid,
                _share(plan, k),
                _when(k.published, now),
                _when(k.signing, now),
                _when(k.stop_signing, now),
                _when(k.retire or (Moment(k.revoked_at, False) if k.revoked_at is not None else None), now),
            ]
            for k in plan.keys
        ],
        ["STATE", "KID", "HELD BY", "PUBLISHED", "SIGNS FROM", "STOPS SIGNING", "STOPS VERIFYING"],
    )
    print()
    print("Next scheduled rotations:")
    for n, r in enumerate(plan.rotations, 1):
        promotes = r.promotes or f"the key made by rotation {n - 1}"
        demotes = r.demotes or f"the key promoted by rotation {n - 1}"
        when = f"{rfc3339(r.at)} ({'due ' + relative(r.at, now) if r.at <= now else relative(r.at, now)})"
        held = f"; waiting for adoption, at the latest {rfc3339(r.latest)}" if r.waiting and r.latest else ""
        print(f"  {n}. {when}: {promotes} signs, {demotes} stops{held}")
    if not plan.rotations:
        print("  none: no current key")
    print()
    print(f"Adoption gate ({p.adoption_gate:.0%} of fetchers must hold next): {_gate(plan)}")
    print()
    _print_forced(plan)


def _gate(plan: KeysetPlan) -> str:
    g, now = plan.gate, plan.now
    if g is None:
        return "unknown (no adoption records)"
    if g.waiting and plan.rotations and plan.rotations[0].at > now:
        share = "n/a" if g.share is None else f"{g.share:.0%}"
        return (
            f"closed for now: {share} of {g.fetchers} fetchers hold next, {g.required:.0%} needed (the rotation is"
            f" due {relative(plan.rotations[0].at, now)}; it waits for them at most"
            f" {span(plan.policy.adoption_max_wait)})"
        )
    return g.describe()


def _print_forced(plan: KeysetPlan) -> None:
    now, forced = plan.now, plan.forced
    print("If you force a rotation now (keys rotate --force):")
    if forced.refused_without_force:
        print(f"  without --force it is refused: {forced.refused_without_force}")
    else:
        print("  it needs no --force: next has been published for prepublish")
    if forced.promotes:
        print(f"  {forced.promotes} signs at once")
    else:
        print("  a fresh key signs at once (there is no next key: no verifier has seen it)")
    if not plan.published:
        print("  no verifier holds a key set (HMAC keyset: tokens are checked by introspection)")
    elif forced.unknown_kid_fetchers is None:
        print("  fetchers that would meet an unknown kid: unknown (no adoption records)")
    else:
        print(f"  {forced.unknown_kid_fetchers} fetcher(s) would meet an unknown kid until they fetch the JWKS again")
        for lag in forced.laggards[:MAX_LAGGARDS_SHOWN]:
            print(f"    {lag.fetcher}  holds {lag.revision}, last fetch {_when(Moment(lag.last_fetch, False), now)}")
        if forced.unknown_kid_fetchers > MAX_LAGGARDS_SHOWN:
            print(f"    ... and {forced.unknown_kid_fetchers - MAX_LAGGARDS_SHOWN} more (--json lists up to 100)")
    if forced.demotes and forced.last_token_expires_at is not None and forced.retire_at is not None:
        leaves = "leaves the JWKS" if plan.published else "stops verifying"
        print(
            f"  {forced.demotes} stops signing; its last token expires"
            f" {_when(Moment(forced.last_token_expires_at, True), now)} (token_ttl + leeway),"
            f" it {leaves} {_when(Moment(forced.retire_at, True), now)}"
        )
