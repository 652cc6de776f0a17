"""A keyset's rollover plan (API.md §6 "Plan"), as pure functions: what happened to each key and what
the schedule foresees for it, the next scheduled rotations, the adoption gate, and what a forced
rotation now would do.

Everything is read off the keyset, its policy and `now`, with the rules of lifecycle.py: a scheduled
rotation comes `rotation_period` after the current key began signing, and never before `next` has
been published for `prepublish`; a demoted key verifies until demotion + `verify_window`. Adoption
and the gate come in as values (adoption.py); nothing here does I/O.

A *planned* moment is one the schedule foresees and that has not happened yet (its time may be past:
a rotation held by the gate, a retirement the scheduler has not reached). Plans move: a forced
rotation, a revocation, a taint or the gate changes them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .adoption import Adoption, Fetch, Gate
from .clock import rfc3339
from .config import format_duration
from .errors import RotationRefusedError
from .lifecycle import plan_rotate
from .model import Keyset, KeysetPolicy, KeyState, KeyVersion

ROTATIONS = 3  # how many scheduled rotations a plan projects
_STATE_ORDER = {KeyState.NEXT: 0, KeyState.CURRENT: 1, KeyState.PREVIOUS: 2, KeyState.REVOKED: 3, KeyState.RETIRED: 4}


@dataclass(frozen=True, slots=True)
class Moment:
    at: float
    planned: bool  # foreseen by the schedule, not happened yet

    def as_dict(self) -> dict[str, object]:
        return {"at": rfc3339(self.at), "planned": self.planned}


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """One key's life: in the JWKS from `published`, signs from `signing` to `stop_signing`, verifies
    until `retire` (None where it does not apply: an HMAC key is never published, a revoked key
    stops verifying at `revoked_at`, a discarded `next` never signed)."""

    kid: str
    state: KeyState
    created_at: float
    tainted_at: float | None
    revoked_at: float | None
    published: Moment | None
    signing: Moment | None
    stop_signing: Moment | None
    retire: Moment | None
    share: float | None  # of the window's fetchers holding it; None: unknown, or no fetcher

    @property
    def tainted(self) -> bool:
        return self.tainted_at is not None

    def as_dict(self) -> dict[str, object]:
        def moment(m: Moment | None) -> dict[str, object] | None:
            return None if m is None else m.as_dict()

        return {
            "kid": self.kid,
            "state": self.state.value,
            "created_at": rfc3339(self.created_at),
            "tainted": self.tainted,
            "tainted_at": rfc3339(self.tainted_at),
            "revoked_at": rfc3339(self.revoked_at),
            "published": moment(self.published),
            "signing": moment(self.signing),
            "stop_signing": moment(self.stop_signing),
            "retire": moment(self.retire),
            "share": self.share,
        }


@dataclass(frozen=True, slots=True)
class Rotation:
    """A scheduled rotation: the earliest moment the scheduler promotes (`at`; past when it is due and
    the gate holds it, or the scheduler has not run), the key it promotes and the one it demotes (None:
    a key that does not exist yet, made by the rotation before)."""

    at: float
    promotes: str | None
    demotes: str | None
    waiting: bool = False  # held by the adoption gate
    latest: float | None = None  # while held: the gate's deadline, when it promotes anyway

    def as_dict(self) -> dict[str, object]:
        return {
            "at": rfc3339(self.at),
            "promotes": self.promotes,
            "demotes": self.demotes,
            "waiting": self.waiting,
            "latest": rfc3339(self.latest),
        }


@dataclass(frozen=True, slots=True)
class ForcedRotation:
    """What `keys rotate --force` (or `rotate {"force": true}`) would do now."""

    promotes: str | None  # the key that would sign (None: no next key, a fresh key would sign unseen)
    demotes: str | None
    refused_without_force: str | None  # why a rotation without force is refused now; None: it would go
    unknown_kid_fetchers: int | None  # fetchers in the window that do not hold the key that would sign
    laggards: tuple[Fetch, ...]  # the oldest of them (at most adoption.MAX_LAGGARDS)
    last_token_expires_at: float | None  # the demoted key's last token: now + token_ttl, plus the leeway
    retire_at: float | None  # the demoted key stops verifying: now + verify_window

    def as_dict(self) -> dict[str, object]:
        return {
            "promotes": self.promotes,
            "demotes": self.demotes,
            "refused_without_force": self.refused_without_force,
            "unknown_kid_fetchers": self.unknown_kid_fetchers,
            "laggards": [
                {"fetcher": f.fetcher, "revision": f.revision, "last_fetch": rfc3339(f.last_fetch)}
                for f in self.laggards
            ],
            "last_token_expires_at": rfc3339(self.last_token_expires_at),
            "retire_at": rfc3339(self.retire_at),
        }


@dataclass(frozen=True, slots=True)
class KeysetPlan:
    keyset: str
    alg: str
    now: float
    policy: KeysetPolicy
    published: bool  # asymmetric keys, in the JWKS (HMAC keysets are never published)
    keys: tuple[KeyPlan, ...]
    rotations: tuple[Rotation, ...]
    gate: Gate | None  # None: not known (no adoption records available)
    fetchers: int | None  # fetchers in the adoption window; None: not known
    forced: ForcedRotation

    def key(self, kid: str) -> KeyPlan | None:
        return next((k for k in self.keys if k.kid == kid), None)

    def as_dict(self) -> dict[str, object]:
        p = self.policy
        return {
            "keyset": self.keyset,
            "alg": self.alg,
            "generated_at": rfc3339(self.now),
            "published": self.published,
            "policy": {
                "rotation_period": format_duration(p.rotation_period),
                "prepublish": format_duration(p.prepublish),
                "token_ttl": format_duration(p.token_ttl),
                "leeway": format_duration(p.leeway),
                "verify_window": format_duration(p.verify_window),
                "adoption_gate": p.adoption_gate,
                "adoption_max_wait": format_duration(p.adoption_max_wait),
            },
            "keys": [k.as_dict() for k in self.keys],
            "rotations": [r.as_dict() for r in self.rotations],
            "gate": None if self.gate is None else self.gate.as_dict(),
            "adoption": None if self.fetchers is None else {"fetchers": self.fetchers},
            "forced_rotation_now": self.forced.as_dict(),
        }


def _activated(key: KeyVersion) -> float:
    return key.activated_at if key.activated_at is not None else key.created_at


def scheduled_rotations(
    policy: KeysetPolicy, keyset: Keyset, now: float, gate: Gate | None = None, count: int = ROTATIONS
) -> tuple[Rotation, ...]:
    """The next `count` scheduled rotations (lifecycle.rotation_due): the first when the current key
    is `rotation_period` old and `next` published for `prepublish` (a missing `next` is made at the
    scheduler's next tick); each later one `rotation_period` after the one before, and never before
    the `next` key made by the one before has been published for `prepublish`. A rotation that is due
    is projected from now (it happens at the next tick, or when the gate opens)."""
    current, nxt = keyset.current, keyset.next
    if current is None:
        return ()
    made = nxt.created_at if nxt is not None else now
    at = max(_activated(current) + policy.rotation_period, made + policy.prepublish)
    holds = gate is not None and gate.waiting and at <= now
    out = [Rotation(at, nxt.kid if nxt else None, current.kid, holds, gate.deadline if holds and gate else None)]
    step = max(policy.rotation_period, policy.prepublish)
    previous = out[0].promotes
    for _ in range(count - 1):
        at = max(at, now) + step
        out.append(Rotation(at, None, previous))
        previous = None
    return tuple(out)


def _key_plan(policy: KeysetPolicy, key: KeyVersion, rotations: tuple[Rotation, ...], share: float | None) -> KeyPlan:
    published = Moment(key.created_at, False) if key.public_jwk is not None else None
    signing = stop = retire = None
    if key.state == KeyState.NEXT:
        # It signs at the next rotation and stops at the one after.
        if rotations:
            signing = Moment(rotations[0].at, True)
        if len(rotations) > 1:
            stop = Moment(rotations[1].at, True)
            retire = Moment(rotations[1].at + policy.verify_window, True)
    elif key.state == KeyState.CURRENT:
        signing = Moment(_activated(key), False)
        if rotations:
            stop = Moment(rotations[0].at, True)
            retire = Moment(rotations[0].at + policy.verify_window, True)
    else:
        if key.activated_at is not None:
            signing = Moment(key.activated_at, False)
        if key.deactivated_at is not None:
            stop = Moment(key.deactivated_at, False)
        if key.state == KeyState.PREVIOUS and key.retire_at is not None:
            retire = Moment(key.retire_at, True)
        elif key.state == KeyState.RETIRED and key.retired_at is not None:
            retire = Moment(key.retired_at, False)
    return KeyPlan(
        key.kid, key.state, key.created_at, key.tainted_at, key.revoked_at, published, signing, stop, retire, share
    )


def _forced(policy: KeysetPolicy, keyset: Keyset, adopted: Adoption | None, now: float) -> ForcedRotation:
    current, nxt = keyset.current, keyset.next
    try:
        plan_rotate(policy, keyset, now)
        refused = None
    except RotationRefusedError as exc:
        refused = exc.description
    published = any(k.public_jwk is not None for k in keyset.keys)
    unknown: int | None = None
    laggards: tuple[Fetch, ...] = ()
    if not published:
        unknown = 0  # HMAC: verifiers introspect, no one holds a key set
    elif adopted is not None:
        if nxt is None:
            unknown = adopted.fetchers  # a fresh key signs at once: nobody has seen it
        else:
            unknown, laggards = adopted.laggard_count, adopted.laggards
    if current is None:
        return ForcedRotation(nxt.kid if nxt else None, None, refused, unknown, laggards, None, None)
    return ForcedRotation(
        nxt.kid if nxt else None,
        current.kid,
        refused,
        unknown,
        laggards,
        # A token signed just before the demotion lives token_ttl; verifiers accept it a leeway longer.
        now + policy.token_ttl + policy.leeway,
        now + policy.verify_window,  # lifecycle.apply_plan: the demoted key's retire_at
    )


def keyset_plan(
    policy: KeysetPolicy,
    keyset: Keyset,
    now: float,
    *,
    adopted: Adoption | None = None,
    gate: Gate | None = None,
) -> KeysetPlan:
    """The plan of `keyset` at `now`; `adopted` and `gate` when the adoption records are known."""
    rotations = scheduled_rotations(policy, keyset, now, gate)
    keys = sorted(keyset.keys, key=lambda k: (_STATE_ORDER[k.state], -k.created_at))
    plans = tuple(_key_plan(policy, k, rotations, adopted.share(k.kid) if adopted else None) for k in keys)
    published = any(k.public_jwk is not None for k in keyset.keys)
    return KeysetPlan(
        keyset.name,
        keyset.alg,
        now,
        policy,
        published,
        plans,
        rotations,
        gate,
        None if adopted is None else adopted.fetchers,
        _forced(policy, keyset, adopted, now),
    )


def span(seconds: float) -> str:
    """A duration for people: its two largest units, e.g. "3d 4h", "20m 5s", "0s"."""
    s = int(abs(seconds))
    for (unit, size), (small, small_size) in itertools.pairwise((("d", 86400), ("h", 3600), ("m", 60), ("s", 1))):
        if s >= size:
            rest = (s % size) // small_size
            return f"{s // size}{unit}" + (f" {rest}{small}" if rest else "")
    return f"{s}s"


def relative(at: float, now: float) -> str:
    """A moment for people, against now: "in 3d 4h", "2h 5m ago", "now"."""
    seconds = round(at - now)
    if seconds == 0:
        return "now"
    return f"in {span(seconds)}" if seconds > 0 else f"{span(seconds)} ago"
