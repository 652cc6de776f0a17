"""The key lifecycle, as pure functions: (policy, keyset, now) -> plan -> new key versions.

Every rule of API.md §2 lives here; nothing here does I/O or reads a clock. The service layer
asks for a plan, makes any new key material the plan needs (backends do that), validates keys
that are about to sign (the canary), and applies the plan with compare-and-set on the keyset's
revision, so that a transition computed by several replicas at once happens exactly once.

States: next -> current -> previous -> retired, and any of them -> revoked.
A `current` or `previous` key may also be tainted (a flag, not a state): it never signs again, and a
tainted `current` is demoted to `previous` at once, `next` taking its place as a revocation does.

    state     in JWKS  signs  verifies
    next      yes      no     yes        published at least `prepublish` before it may sign
    current   yes      yes    yes        exactly one per keyset
    previous  yes      no     yes        until retire_at = demotion + verify_window, retired one
                                         leeway later (clock skew between replicas)
    retired   no       no     no         private material destroyed
    revoked   no       no     no         from the moment of revocation
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from .errors import NotFoundError, RotationRefusedError, TaintRefusedError
from .model import Keyset, KeysetPolicy, KeyState, KeyVersion, NewKey

# Retired key records (no material left) are kept this long for `keys list` and audits, then dropped.
RETAIN_RETIRED_SECONDS = 30 * 86400


# Why a `next` key was discarded, by plan reason (the audit log's detail); a canary failure otherwise.
_DISCARDED_BECAUSE = {"adopted": "replaced by a backend version made outside the service"}


@dataclass(frozen=True, slots=True)
class Plan:
    keyset: str
    reason: str  # bootstrap | scheduled | manual | forced | revoke | taint | maintenance | canary_failed
    promote: str | None = None  # next -> current
    demote: str | None = None  # current -> previous, retire_at = now + verify_window
    revoke: str | None = None  # any -> revoked
    taint: str | None = None  # current or previous -> tainted (a tainted current is also demoted)
    discard: str | None = None  # next that failed validation -> retired
    retire: tuple[str, ...] = ()  # previous past retire_at -> retired
    prune: tuple[str, ...] = ()  # long-retired records dropped
    new_current: bool = False  # a fresh key becomes current at once (bootstrap, no usable next)
    new_next: bool = False

    @property
    def new_keys(self) -> int:
        return int(self.new_current) + int(self.new_next)

    @property
    def empty(self) -> bool:
        return not (
            self.promote
            or self.demote
            or self.revoke
            or self.taint
            or self.discard
            or self.retire
            or self.prune
            or self.new_current
            or self.new_next
        )

    @property
    def rotates(self) -> bool:
        """Whether a different key signs after this plan."""
        return bool(self.promote or self.new_current)


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of one key, for the audit log and the event stream."""

    event: str  # created | rotated | retired | revoked | tainted | discarded
    kid: str
    state: KeyState
    detail: str = ""


def _maintenance(policy: KeysetPolicy, keyset: Keyset, now: float) -> tuple[tuple[str, ...], tuple[str, ...]]:
    retire = tuple(
        k.kid
        for k in keyset.keys
        # One leeway after retire_at: replicas' clocks may differ by up to the leeway, and the
        # replica that demoted the key may have stamped retire_at with a clock behind ours.
        if k.state == KeyState.PREVIOUS and k.retire_at is not None and k.retire_at + policy.leeway <= now
    )
    prune = tuple(
        k.kid
        for k in keyset.keys
        if k.state == KeyState.RETIRED and k.retired_at is not None and k.retired_at + RETAIN_RETIRED_SECONDS <= now
    )
    return retire, prune


def rotation_due(policy: KeysetPolicy, keyset: Keyset, now: float) -> bool:
    """Scheduled rotation: current older than rotation_period and next published >= prepublish."""
    current, nxt = keyset.current, keyset.next
    if current is None or nxt is None:
        return False
    activated = current.activated_at if current.activated_at is not None else current.created_at
    return activated + policy.rotation_period <= now and nxt.created_at + policy.prepublish <= now


def next_rotation_at(policy: KeysetPolicy, keyset: Keyset) -> float | None:
    """The earliest moment the scheduler will rotate, given the keys as they are."""
    current, nxt = keyset.current, keyset.next
    if current is None:
        return None
    activated = current.activated_at if current.activated_at is not None else current.created_at
    at = activated + policy.rotation_period
    if nxt is not None:
        at = max(at, nxt.created_at + policy.prepublish)
    return at


def plan_tick(policy: KeysetPolicy, keyset: Keyset, now: float, *, hold: bool = False) -> Plan:
    """What the scheduler does now: bootstrap, scheduled rotation, retirement, replenishing `next`.

    With `hold` (the adoption gate is closed, adoption.gate), a due scheduled rotation waits: the
    rest of the maintenance goes ahead."""
    retire, prune = _maintenance(policy, keyset, now)
    current, nxt = keyset.current, keyset.next
    if current is None and nxt is None:
        return Plan(keyset.name, "bootstrap", retire=retire, prune=prune, new_current=True, new_next=True)
    if current is None:
        # Only reachable from a damaged store: sign with the published next rather than not at all.
        assert nxt is not None
        return Plan(keyset.name, "maintenance", promote=nxt.kid, retire=retire, prune=prune, new_next=True)
    if current.tainted:
        # Only reachable from a damaged store or an import: a tainted key never signs.
        return replace(plan_taint(policy, keyset, current.kid, now), retire=retire, prune=prune)
    if rotation_due(policy, keyset, now) and not hold:
        assert nxt is not None
        return Plan(
            keyset.name, "scheduled", promote=nxt.kid, demote=current.kid, retire=retire, prune=prune, new_next=True
        )
    return Plan(keyset.name, "maintenance", retire=retire, prune=prune, new_next=nxt is None)


def plan_rotate(policy: KeysetPolicy, keyset: Keyset, now: float, *, force: bool = False) -> Plan:
    """An administrator's rotation now; refused while `next` is younger than prepublish, unless forced.

    Forcing skips the prepublish gate: verifiers whose cached JWKS predates `next` may reject new
    tokens until their cache refreshes. That is the price of an immediate rollover.
    """
    current, nxt = keyset.current, keyset.next
    if current is None:
        return plan_tick(policy, keyset, now)
    retire, prune = _maintenance(policy, keyset, now)
    if nxt is None:
        if not force:
            raise RotationRefusedError(f"keyset {keyset.name} has no next key published yet; use force to rotate now")
        return Plan(
            keyset.name, "forced", demote=current.kid, retire=retire, prune=prune, new_current=True, new_next=True
        )
    age = now - nxt.created_at
    if age < policy.prepublish and not force:
        wait = policy.prepublish - age
        raise RotationRefusedError(
            f"next key {nxt.kid} of keyset {keyset.name} has been published for {int(age)}s, less than prepublish "
            f"({policy.prepublish}s); rotating now could break verifiers with a cached JWKS. Retry in {int(wait) + 1}s"
            " or force"
        )
    reason = "manual" if age >= policy.prepublish else "forced"
    return Plan(keyset.name, reason, promote=nxt.kid, demote=current.kid, retire=retire, prune=prune, new_next=True)


def plan_revoke(keyset: Keyset, kid: str) -> Plan:
    """Emergency revocation: the key stops verifying at once; a revoked `current` is replaced at once."""
    key = keyset.find(kid)
    if key is None:
        raise NotFoundError(f"no key {kid} in keyset {keyset.name}")
    if key.state == KeyState.REVOKED:
        return Plan(keyset.name, "revoke")  # idempotent: nothing more to do
    if key.state == KeyState.CURRENT:
        return _replace_current(Plan(keyset.name, "revoke", revoke=kid), keyset)
    if key.state == KeyState.NEXT:
        return Plan(keyset.name, "revoke", revoke=kid, new_next=True)
    return Plan(keyset.name, "revoke", revoke=kid)


def _replace_current(plan: Plan, keyset: Keyset) -> Plan:
    """`plan`, taking the current key out of signing at once: `next` is promoted (a fresh key signs
    when there is none) and a fresh `next` is made. Shared by revocation and taint."""
    nxt = keyset.next
    if nxt is None:
        return replace(plan, new_current=True, new_next=True)
    return replace(plan, promote=nxt.kid, new_next=True)


def plan_taint(policy: KeysetPolicy, keyset: Keyset, kid: str, now: float) -> Plan:
    """Mark a `current` or `previous` key as suspect: it never signs again but keeps verifying until its
    tokens expire (a tainted `current` becomes `previous`, retire_at = now + verify_window, and is
    replaced as a revoked one is). Idempotent; refused for a key that neither signs nor has signed."""
    key = keyset.find(kid)
    if key is None:
        raise NotFoundError(f"no key {kid} in keyset {keyset.name}")
    if key.state == KeyState.CURRENT:
        # taint=kid even when it already is (apply_plan leaves an existing taint alone), so that a
        # failed canary still replaces it with a fresh key rather than leaving a tainted key current.
        return _replace_current(Plan(keyset.name, "taint", taint=kid, demote=kid), keyset)
    if key.tainted:
        return Plan(keyset.name, "taint")  # idempotent, whatever became of it since (revoked, retired)
    if key.state != KeyState.PREVIOUS:
        raise TaintRefusedError(
            f"key {kid} of keyset {keyset.name} is {key.state.value}: only a current or previous key can be tainted"
        )
    return Plan(keyset.name, "taint", taint=kid)


def on_canary_failure(plan: Plan) -> Plan:
    """The key `plan.promote` failed validation: it is discarded and never signs.

    A scheduled or manual rotation then does not happen (the current key keeps signing and a fresh
    next is prepared); an emergency revocation of the current key uses a fresh key instead.
    """
    if plan.promote is None:
        return plan
    if plan.revoke is not None or plan.taint is not None or plan.demote is None:
        # Nothing else would sign (an emergency, or a keyset found without a current key): use a fresh key.
        return replace(plan, promote=None, discard=plan.promote, new_current=True, new_next=True)
    return replace(plan, reason="canary_failed", promote=None, demote=None, discard=plan.promote, new_next=True)


def apply_plan(
    policy: KeysetPolicy,
    keyset: Keyset,
    plan: Plan,
    new_keys: Sequence[NewKey],
    now: float,
) -> tuple[tuple[KeyVersion, ...], list[Transition]]:
    """The key versions after `plan`, and what changed. `new_keys` supplies plan.new_keys keys in order."""
    if len(new_keys) != plan.new_keys:
        raise ValueError(f"plan needs {plan.new_keys} new keys, got {len(new_keys)}")
    transitions: list[Transition] = []
    out: list[KeyVersion] = []
    for key in keyset.keys:
        kid = key.kid
        if kid in plan.prune:
            continue
        if kid == plan.revoke and key.state != KeyState.REVOKED:
            key = key.with_(
                state=KeyState.REVOKED,
                revoked_at=now,
                deactivated_at=now if key.state == KeyState.CURRENT else key.deactivated_at,
                sealed_private=None,
            )
            transitions.append(Transition("revoked", kid, KeyState.REVOKED))
        elif kid == plan.discard:
            key = key.with_(state=KeyState.RETIRED, retired_at=now, sealed_private=None)
            why = _DISCARDED_BECAUSE.get(plan.reason, "failed validation before promotion")
            transitions.append(Transition("discarded", kid, KeyState.RETIRED, why))
        elif kid == plan.promote:
            key = key.with_(state=KeyState.CURRENT, activated_at=now)
            transitions.append(Transition("rotated", kid, KeyState.CURRENT))
        elif kid == plan.demote:
            key = key.with_(state=KeyState.PREVIOUS, deactivated_at=now, retire_at=now + policy.verify_window)
            transitions.append(Transition("rotated", kid, KeyState.PREVIOUS))
        elif kid in plan.retire:
            key = key.with_(state=KeyState.RETIRED, retired_at=now, sealed_private=None)
            transitions.append(Transition("retired", kid, KeyState.RETIRED))
        if kid == plan.taint and not key.tainted:
            key = key.with_(tainted_at=now)
            transitions.append(Transition("tainted", kid, key.state))
        out.append(key)
    fresh = list(new_keys)
    if plan.new_current:
        if not plan.revoke and keyset.current is not None and plan.demote is None:
            raise ValueError("a new current key needs the old one demoted or revoked")
        nk = fresh.pop(0)
        out.append(_fresh(keyset, nk, KeyState.CURRENT, now))
        transitions.append(Transition("created", nk.kid, KeyState.CURRENT))
    if plan.new_next:
        nk = fresh.pop(0)
        out.append(_fresh(keyset, nk, KeyState.NEXT, now))
        transitions.append(Transition("created", nk.kid, KeyState.NEXT))
    return tuple(out), transitions


def _fresh(keyset: Keyset, nk: NewKey, state: KeyState, now: float) -> KeyVersion:
    return KeyVersion(
        kid=nk.kid,
        keyset=keyset.name,
        alg=keyset.alg,
        state=state,
        created_at=now,
        public_jwk=nk.public_jwk,
        sealed_private=nk.sealed_private,
        activated_at=now if state == KeyState.CURRENT else None,
    )


def check_invariants(keys: Sequence[KeyVersion]) -> list[str]:
    """Structural rules every stored keyset obeys after bootstrap; used by tests and `readyz`."""
    problems = []
    currents = [k for k in keys if k.state == KeyState.CURRENT]
    if len(currents) != 1:
        problems.append(f"{len(currents)} current keys (exactly one expected)")
    if len([k for k in keys if k.state == KeyState.NEXT]) > 1:
        problems.append("more than one next key")
    kids = [k.kid for k in keys]
    if len(set(kids)) != len(kids):
        problems.append("duplicate kids")
    for k in keys:
        if k.state in (KeyState.RETIRED, KeyState.REVOKED) and k.sealed_private is not None:
            problems.append(f"{k.kid} is {k.state} but still holds private material")
    return problems
