"""Three replicas on one Redis, as real processes (issue 4: "How we will know" and its failure cases).

- a bounded load loop through 20+ scheduled rotations and one emergency revocation, every token
  verified by an outside verifier that caches the JWKS of a random replica for jwks.max_age;
- the propagation delay of a rotation (and of a revocation) from one replica to the others;
- Redis restarted under the replicas;
- a replica SIGKILLed in the middle of rotations;
- two replicas whose clocks differ by the leeway (libfaketime).

Every fleet is its own private redis-server (append-only, so a restart keeps the data) and three
`python -m jwks_service serve` processes on 127.0.0.1; all of them are stopped when the test ends.
Run with `pytest -s` to see the measured numbers.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from replicas import (
    CachingVerifier,
    Fleet,
    Policy,
    Replica,
    faketime_available,
    faketime_env,
    kid_of,
    percentile,
    promotions,
    transition_problems,
    verify_with_jwks,
)

from jwks_service.issuance import REVOCATION_STALENESS
from jwks_service.lifecycle import check_invariants
from jwks_service.model import AuditEvent, Keyset, KeyState

pytestmark = pytest.mark.slow

JWKS_PATH = "/.well-known/jwks.json"
# max_age 1s, rotation_period 1s, prepublish 1s (>= max_age + leeway), token_ttl 5s, leeway 0s.
FAST = Policy()


@pytest.fixture
def fleet_factory(tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    fleets: list[Fleet] = []

    def make(policy: Policy = FAST, **kw: Any) -> Fleet:
        workdir = tmp_path / f"fleet{len(fleets) + 1}"
        workdir.mkdir()
        fleet = Fleet(workdir, policy, **kw)
        fleets.append(fleet)
        fleet.start()
        return fleet

    yield make
    for fleet in fleets:
        fleet.close()


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll until `predicate()` is true (True) or `timeout` passes (False); exceptions propagate."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


# ----- 1. load through scheduled rotations and an emergency revocation --------------------------


@dataclass
class Revocation:
    kid: str | None = None
    victim: str | None = None  # a token of the revoked kid, issued before the revocation
    done_at: float | None = None  # monotonic time the revoke call returned


@dataclass
class LoadStats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    issued: int = 0
    verified: int = 0
    token_errors: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # valid tokens that did not verify
    revoked_rejected: int = 0  # tokens of the revoked kid that the verifier refused (as it should)
    revoked_accepted_late: list[str] = field(default_factory=list)  # ... accepted after propagation
    revoked_signed_late: list[str] = field(default_factory=list)  # signed by the revoked kid after 1 s
    victim_checks: int = 0
    kid_first_seen: dict[str, float] = field(default_factory=dict)
    fetches: int = 0
    unknown_kid_refetches: int = 0
    misses: list[tuple[float, str, str, float, bool]] = field(default_factory=list)

    def kid_changes(self) -> int:
        with self.lock:
            return len(self.kid_first_seen) - 1

    def summary(self) -> str:
        return (
            f"tokens issued {self.issued}, verified {self.verified}, failed verifications of valid tokens "
            f"{len(self.failures)}, token errors {len(self.token_errors)}, signing kids {len(self.kid_first_seen)}, "
            f"revoked-kid tokens refused {self.revoked_rejected}, revoked-kid tokens accepted after propagation "
            f"{len(self.revoked_accepted_late)} (of {self.victim_checks} re-checks of a pre-revocation token), "
            f"tokens signed by the revoked kid after 1 s {len(self.revoked_signed_late)}, JWKS fetches "
            f"{self.fetches} (of which unknown-kid refetches {self.unknown_kid_refetches})"
        )


def load_worker(
    fleet: Fleet, stats: LoadStats, rev: Revocation, stop: threading.Event, deadline: float, seed: int
) -> None:
    rng = random.Random(seed)
    max_age = fleet.policy.seconds("max_age")
    with httpx.Client(timeout=5) as http:

        def verifier() -> CachingVerifier:
            return CachingVerifier(
                lambda: [r.url(JWKS_PATH) for r in fleet.replicas],
                issuer=fleet.issuer,
                audience="api",
                max_age=max_age,
                leeway=0,
                http=http,
                rng=rng,
            )

        # One verifier for the fresh tokens, another (another service, say) that re-checks the old
        # token of the revoked kid: its refetches must not use up the first one's cooldown.
        fresh, old = verifier(), verifier()
        try:
            for _ in range(50_000):  # bounded in count as well as in time
                if stop.is_set() or time.monotonic() > deadline:
                    break
                replica = rng.choice(fleet.replicas)
                sent = time.monotonic()
                try:
                    r = fleet.token_response(replica, http=http)
                except httpx.HTTPError as exc:
                    with stats.lock:
                        stats.token_errors.append(f"{replica.name}: {exc!r}")
                    continue
                if r.status_code != 200:
                    with stats.lock:
                        stats.token_errors.append(f"{replica.name}: {r.status_code} {r.text[:200]}")
                    continue
                token = r.json()["access_token"]
                kid = kid_of(token)
                revoked_kid, revoked_at = rev.kid, rev.done_at
                with stats.lock:
                    stats.issued += 1
                    stats.kid_first_seen.setdefault(kid, time.monotonic())
                    if kid == revoked_kid and revoked_at is not None and sent > revoked_at + 1.0:
                        stats.revoked_signed_late.append(f"{replica.name} at +{sent - revoked_at:.2f}s")
                try:
                    fresh.verify(token)
                except jwt.InvalidTokenError as exc:
                    with stats.lock:
                        if kid == revoked_kid:
                            stats.revoked_rejected += 1
                        else:
                            stats.failures.append(f"token of {replica.name}, kid {kid}: {exc}")
                else:
                    with stats.lock:
                        stats.verified += 1
                        if (
                            kid == revoked_kid
                            and revoked_at is not None
                            and time.monotonic() > revoked_at + 1 + max_age
                        ):
                            stats.revoked_accepted_late.append(f"fresh token of {replica.name}")
                # An old token of the revoked kid, re-verified through this verifier's cache.
                if rev.victim is not None and revoked_at is not None and time.monotonic() > revoked_at + 1 + max_age:
                    try:
                        old.verify(rev.victim)
                    except jwt.InvalidTokenError:
                        accepted = False
                    else:
                        accepted = True
                    with stats.lock:
                        stats.victim_checks += 1
                        if accepted:
                            stats.revoked_accepted_late.append(f"victim at +{time.monotonic() - revoked_at:.2f}s")
        finally:
            with stats.lock:
                stats.fetches += fresh.fetches + old.fetches
                stats.unknown_kid_refetches += fresh.unknown_kid_refetches
                stats.misses.extend(fresh.misses)


def test_load_through_scheduled_rotations_and_an_emergency_revocation(fleet_factory: Callable[..., Fleet]) -> None:
    fleet = fleet_factory(FAST)
    max_age = fleet.policy.seconds("max_age")
    stats, rev, stop = LoadStats(), Revocation(), threading.Event()
    started = time.monotonic()
    deadline = started + 60
    wall_started = time.time()
    revoke_info: dict[str, Any] = {}
    introspect_delay: dict[str, float] = {}
    jwks_delay: dict[str, float] = {}
    fresh_jwks_accepted: list[str] = []

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(load_worker, fleet, stats, rev, stop, deadline, seed) for seed in range(3)]
        try:
            assert wait_for(lambda: stats.kid_changes() >= 10, timeout=deadline - time.monotonic(), interval=0.05), (
                f"fewer than 10 rotations in {time.monotonic() - started:.0f}s: {stats.summary()}\n{fleet.logs()}"
            )
            # Revoke the current key just after a rotation, so that no scheduled rotation races the call.
            for _ in range(5):
                seen = stats.kid_changes()
                assert wait_for(lambda seen=seen: stats.kid_changes() > seen, timeout=5), stats.summary()
                time.sleep(0.1)  # every replica has loaded the rotation by now
                target = fleet.pick()
                victim = fleet.token(target)
                admin = fleet.admin_token(target)
                kid = kid_of(victim)
                if kid_of(admin) == kid and fleet.currents(target) == [kid]:
                    break
            for replica in fleet.replicas:
                r = fleet.introspect(replica, victim)
                assert r.json().get("active") is True, f"{replica.name} before the revocation: {r.text}"
            r = fleet.admin_post(target, f"/admin/keys/{kid}/revoke", {"reason": "load test: leaked"}, token=admin)
            done = time.monotonic()
            assert r.status_code == 200, f"revoke on {target.name}: {r.status_code} {r.text}\n{fleet.logs()}"
            revoke_info = r.json()
            rev.kid, rev.victim = kid, victim
            rev.done_at = done

            # Propagation of the revocation: introspection and JWKS on every replica.
            pending = {(rep.name, what): rep for rep in fleet.replicas for what in ("introspect", "jwks")}
            with httpx.Client(timeout=2) as poll:
                limit = done + 3
                while pending and time.monotonic() < limit:
                    for (name, what), rep in list(pending.items()):
                        if what == "introspect":
                            gone = fleet.introspect(rep, victim, http=poll).json() == {"active": False}
                        else:
                            gone = kid not in fleet.kids(rep, http=poll)
                        if gone:
                            (introspect_delay if what == "introspect" else jwks_delay)[name] = time.monotonic() - done
                            del pending[(name, what)]
                    time.sleep(0.005)
            for name, what in pending:
                (introspect_delay if what == "introspect" else jwks_delay)[name] = float("inf")

            # After 1 s + max_age no verifier may accept the revoked kid: fresh JWKS from every replica.
            time.sleep(max(0.0, done + 1 + max_age - time.monotonic()))
            for replica in fleet.replicas:
                try:
                    verify_with_jwks(victim, fleet.jwks(replica), issuer=fleet.issuer, audience="api", leeway=0)
                except jwt.InvalidTokenError:
                    pass
                else:
                    fresh_jwks_accepted.append(replica.name)

            # 20 scheduled rotations (plus the one of the revocation), and a few seconds past it.
            assert wait_for(
                lambda: stats.kid_changes() >= 21 and time.monotonic() > done + 2 * (1 + max_age),
                timeout=max(0.0, deadline - time.monotonic()),
                interval=0.05,
            ), f"fewer than 21 signing-key changes within 60 s: {stats.summary()}\n{fleet.logs()}"
        finally:
            stop.set()
        for f in futures:
            f.result()
    elapsed = time.monotonic() - started

    events = [e for e in fleet.audit() if e.at >= wall_started - 1]
    promoted = promotions(events)
    scheduled = [e for e in promoted if e.details.get("trigger") == "scheduled"]
    by_revocation = [e for e in promoted if e.details.get("trigger") == "revoke"]
    # How often a verifier's cache, still fresh, lacked the kid a new token named (it then refetched):
    # after the revocation promoted a barely published next, that is expected; after a scheduled
    # rotation the prepublish window should make it (next to) never happen.
    urgent = {e.target for e in by_revocation}
    misses_urgent = sum(1 for m in stats.misses if m[1] in urgent)
    report = (
        f"load over {elapsed:.1f}s: {stats.summary()}; scheduled rotations (audit) {len(scheduled)}, "
        f"promotions by the revocation {len(by_revocation)}; a fresh cache lacked a new signing kid "
        f"{len(stats.misses)} times ({misses_urgent} for the key the revocation promoted at once, "
        f"{len(stats.misses) - misses_urgent} after scheduled rotations); revoked {kid} on {target.name} -> "
        f"{revoke_info}; "
        f"introspection inactive after {fmt_delays(introspect_delay)}; kid gone from JWKS after "
        f"{fmt_delays(jwks_delay)}"
    )
    print("\n" + report)
    tail = "\n" + fleet.logs()
    assert stats.failures == [], f"{report}\nfailures: {stats.failures[:20]}{tail}"
    assert stats.token_errors == [], f"{report}\ntoken errors: {stats.token_errors[:20]}{tail}"
    assert len(scheduled) >= 20, report + tail
    assert len(by_revocation) == 1, f"the revoked key was not current (the test revokes the current one): {report}"
    assert revoke_info["revoked"] == kid and revoke_info["current"] != kid, report
    assert stats.revoked_signed_late == [], f"{report}\n{stats.revoked_signed_late}{tail}"
    assert stats.revoked_accepted_late == [], f"{report}\n{stats.revoked_accepted_late}{tail}"
    assert stats.victim_checks > 0, report
    assert fresh_jwks_accepted == [], f"fresh JWKS of {fresh_jwks_accepted} still verify the revoked kid; {report}"
    assert max(introspect_delay.values()) < 1.0, f"introspection of the revoked kid: {report}{tail}"
    assert max(jwks_delay.values()) < 1.0, f"revoked kid in a JWKS: {report}{tail}"
    assert transition_problems(events) == [], f"{transition_problems(events)}; {report}"


def fmt_delays(delays: dict[str, float]) -> str:
    return ", ".join(f"{name} {d * 1000:.0f} ms" for name, d in sorted(delays.items())) or "-"


# ----- 2. propagation delay ---------------------------------------------------------------------

# The scheduler stays quiet (rotation_period 1h): every change is one the test makes.
CALM = Policy(rotation_period="1h")


def wait_visible(
    fleet: Fleet, http: httpx.Client, replicas: list[Replica], check: Callable[[set[str]], bool], t0: float
) -> float:
    """Seconds from t0 until every replica's JWKS satisfies `check` (polled every ~5 ms, at most 3 s)."""
    pending = list(replicas)
    last = 0.0
    while pending and time.perf_counter() - t0 < 3.0:
        for rep in list(pending):
            if check(fleet.kids(rep, http=http)):
                last = time.perf_counter() - t0
                pending.remove(rep)
        if pending:
            time.sleep(0.005)
    return last if not pending else float("inf")


def test_propagation_delay_of_rotations_and_revocations(fleet_factory: Callable[..., Fleet]) -> None:
    fleet = fleet_factory(CALM)
    rng = random.Random(4)
    rotations: list[float] = []  # from sending the rotate call until both other replicas publish the new next
    after_reply: list[float] = []  # ... from its reply
    revocations: list[float] = []  # from sending a revoke until the kid is gone from both other JWKS
    with httpx.Client(timeout=2) as poll:
        for i in range(30):
            source = fleet.pick()
            others = [r for r in fleet.replicas if r is not source]
            token = fleet.admin_token(source)
            t0 = time.perf_counter()
            r = fleet.admin_post(
                source, "/admin/keysets/default/rotate", {"force": True, "reason": f"propagation {i}"}, token=token
            )
            replied = time.perf_counter() - t0
            assert r.status_code == 200, f"rotate on {source.name}: {r.status_code} {r.text}\n{fleet.logs()}"
            new_next, previous = r.json()["next"], r.json()["previous"]
            delay = wait_visible(fleet, poll, others, lambda kids, k=new_next: k in kids, t0)
            rotations.append(delay)
            after_reply.append(max(0.0, delay - replied))
            if i % 3 == 2:
                source = fleet.pick()
                others = [r for r in fleet.replicas if r is not source]
                token = fleet.admin_token(source)
                t0 = time.perf_counter()
                r = fleet.admin_post(source, f"/admin/keys/{previous}/revoke", {"reason": "propagation"}, token=token)
                assert r.status_code == 200, f"revoke on {source.name}: {r.status_code} {r.text}"
                revocations.append(wait_visible(fleet, poll, others, lambda kids, k=previous: k not in kids, t0))
            time.sleep(rng.uniform(0, 0.1))

    def ms(values: list[float], p: float) -> str:
        return f"{percentile(values, p) * 1000:.1f} ms"

    report = (
        f"propagation of {len(rotations)} forced rotations to both other replicas' JWKS: p50 {ms(rotations, 50)}, "
        f"p99 {ms(rotations, 99)}, max {ms(rotations, 100)} (after the reply: p50 {ms(after_reply, 50)}, "
        f"p99 {ms(after_reply, 99)}); {len(revocations)} revocations gone from both other JWKS: "
        f"p50 {ms(revocations, 50)}, p99 {ms(revocations, 99)}, max {ms(revocations, 100)}"
    )
    print("\n" + report)
    assert percentile(rotations, 99) < 1.0, report + "\n" + fleet.logs()
    assert percentile(revocations, 99) < 1.0, report + "\n" + fleet.logs()


# ----- 3. Redis restarted while the replicas serve ------------------------------------------------

OUTAGE_POLICY = Policy(token_ttl="10s")
OUTAGE_SECONDS = 3.0
# After this much outage /readyz names the store. The replicas notice at their next poll (every
# 0.25 s) once a read fails (a refused connection is retried for up to ~0.35 s); 1 s is also the
# bound the issue sets for a change to reach every replica.
DETECTION = 1.0


@dataclass
class Observation:
    at: float  # seconds since Redis went down
    replica: str
    what: str  # jwks | token | readyz | introspect
    status: int | None  # None: no HTTP answer
    body: str
    took: float = 0.0

    def __str__(self) -> str:
        return (
            f"+{self.at:.2f}s {self.replica} {self.what}: {self.status} in {self.took * 1000:.0f} ms {self.body[:160]}"
        )


@dataclass
class Outage:
    fleet: Fleet
    valid_token: str
    before: Keyset
    jwks_before: dict[str, set[str]]
    during: list[Observation] = field(default_factory=list)
    outage_tokens: list[tuple[str, str]] = field(default_factory=list)
    ready_again: dict[str, float] = field(default_factory=dict)  # seconds after Redis was back
    rotation_resumed_after: float = float("inf")
    converged_after: float = float("inf")
    currents_after: dict[str, list[str]] = field(default_factory=dict)
    kids_after: dict[str, set[str]] = field(default_factory=dict)
    after: Keyset | None = None
    outage_tokens_refused: list[str] = field(default_factory=list)
    valid_token_refused: list[str] = field(default_factory=list)  # the token of before, after recovery
    audit: list[AuditEvent] = field(default_factory=list)

    def where(self) -> str:
        return "\n".join(str(o) for o in self.during) + "\n" + self.fleet.logs()


def run_outage(fleet: Fleet) -> Outage:
    r1 = fleet.replicas[0]
    seen: set[str] = set()

    def rotated_twice() -> bool:
        seen.update(fleet.currents(r1))
        return len(seen) >= 3

    assert wait_for(rotated_twice, timeout=10, interval=0.1), f"no rotations before the outage\n{fleet.logs()}"
    valid = fleet.token(r1)
    for replica in fleet.replicas:
        r = fleet.introspect(replica, valid)
        assert r.json().get("active") is True, f"{replica.name}: {r.text}"
    with fleet.store() as store:
        before = store.get_keyset("default")
    assert before is not None
    out = Outage(fleet, valid, before, {rep.name: fleet.kids(rep) for rep in fleet.replicas})

    fleet.redis.stop()
    down = time.monotonic()
    try:
        with httpx.Client(timeout=3) as http:
            for _ in range(1000):
                if time.monotonic() - down > OUTAGE_SECONDS:
                    break
                for rep in fleet.replicas:
                    for what in ("jwks", "token", "readyz", "introspect"):
                        at = time.monotonic() - down
                        try:
                            if what == "jwks":
                                r = http.get(rep.url(JWKS_PATH))
                            elif what == "token":
                                r = fleet.token_response(rep, http=http)
                            elif what == "readyz":
                                r = http.get(rep.url("/readyz"))
                            else:
                                r = fleet.introspect(rep, valid, http=http)
                        except httpx.HTTPError as exc:
                            took = time.monotonic() - down - at
                            out.during.append(Observation(at, rep.name, what, None, repr(exc), took))
                            continue
                        took = time.monotonic() - down - at
                        out.during.append(Observation(at, rep.name, what, r.status_code, r.text, took))
                        if what == "token" and r.status_code == 200:
                            out.outage_tokens.append((rep.name, r.json()["access_token"]))
    finally:
        fleet.redis.start()
    up = time.monotonic()

    for rep in fleet.replicas:
        if wait_for(lambda rep=rep: fleet.http.get(rep.url("/readyz")).status_code == 200, timeout=10, interval=0.05):
            out.ready_again[rep.name] = time.monotonic() - up
    known = {k.kid for k in before.keys}
    if wait_for(lambda: any(k not in known for k in fleet.currents(r1)), timeout=8, interval=0.05):
        out.rotation_resumed_after = time.monotonic() - up
    # Tokens signed from memory during the outage verify against the JWKS now served.
    for name, token in out.outage_tokens:
        for rep in fleet.replicas:
            try:
                verify_with_jwks(token, fleet.jwks(rep), issuer=fleet.issuer, audience="api", leeway=0)
            except jwt.InvalidTokenError as exc:
                out.outage_tokens_refused.append(f"token of {name} against {rep.name}: {exc}")

    # Converged: every replica serves the same JWKS and current key as the store holds, at one moment.
    with fleet.store() as store:

        def same_everywhere() -> bool:
            out.kids_after = {rep.name: fleet.kids(rep) for rep in fleet.replicas}
            out.currents_after = {rep.name: fleet.currents(rep) for rep in fleet.replicas}
            out.after = store.get_keyset("default")
            if out.after is None or out.after.current is None:
                return False
            published = {k.kid for k in out.after.keys if k.verifies}
            return all(kids == published for kids in out.kids_after.values()) and all(
                c == [out.after.current.kid] for c in out.currents_after.values()
            )

        t0 = time.monotonic()
        if wait_for(same_everywhere, timeout=5, interval=0.01):
            out.converged_after = time.monotonic() - t0
    for rep in fleet.replicas:
        try:
            verify_with_jwks(valid, fleet.jwks(rep), issuer=fleet.issuer, audience="api", leeway=0)
        except jwt.InvalidTokenError as exc:
            out.valid_token_refused.append(f"{rep.name}: {exc}")
    out.audit = fleet.audit()
    return out


@pytest.fixture(scope="class")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    with Fleet(tmp_path_factory.mktemp("outage"), OUTAGE_POLICY) as fleet:
        result = run_outage(fleet)
        print(
            f"\nRedis outage of {OUTAGE_SECONDS:.0f}s: {len(result.during)} requests; "
            + ", ".join(
                f"{what} {sum(1 for o in result.during if o.what == what and o.status == 200)}/"
                f"{sum(1 for o in result.during if o.what == what)} answered 200 (slowest "
                f"{max((o.took for o in result.during if o.what == what), default=0) * 1000:.0f} ms)"
                for what in ("jwks", "token", "readyz", "introspect")
            )
            + f"; ready again after {fmt_delays(result.ready_again)}; rotation resumed after "
            f"{result.rotation_resumed_after:.2f}s; replicas agreed {result.converged_after:.2f}s later"
        )
        yield result


class TestRedisRestartedUnderTheReplicas:
    def test_jwks_is_served_from_memory(self, outage: Outage) -> None:
        jwks = [o for o in outage.during if o.what == "jwks"]
        assert jwks, outage.where()
        bad = [str(o) for o in jwks if o.status != 200]
        assert bad == [], "\n".join(bad) + outage.where()
        for o in jwks:
            kids = {k["kid"] for k in json.loads(o.body)["keys"]}
            assert outage.before.current is not None
            assert outage.before.current.kid in kids, f"{o}: the current key left the JWKS during the outage"

    def test_tokens_are_signed_from_memory(self, outage: Outage) -> None:
        tokens = [o for o in outage.during if o.what == "token"]
        bad = [str(o) for o in tokens if o.status != 200]
        assert tokens and bad == [], f"{len(bad)} of {len(tokens)} token requests failed:\n" + "\n".join(bad[:12])
        assert outage.outage_tokens_refused == [], outage.outage_tokens_refused

    def test_readyz_names_the_store(self, outage: Outage) -> None:
        # /readyz does no I/O: it reports what the replica's last reload found.
        readyz = [o for o in outage.during if o.what == "readyz"]
        bad = [str(o) for o in readyz if o.at >= DETECTION and (o.status != 503 or "store" not in o.body)]
        assert readyz and bad == [], "\n".join(bad) + outage.where()
        assert any(o.status == 503 and "store" in o.body for o in readyz), outage.where()

    def test_introspection_vouches_through_an_outage_shorter_than_the_staleness_limit(self, outage: Outage) -> None:
        """The revocation list read before the outage is at most OUTAGE_SECONDS old: within
        REVOCATION_STALENESS, introspection answers as usual (past it, 503: test_background_faults)."""
        assert OUTAGE_SECONDS + DETECTION < REVOCATION_STALENESS
        intro = [o for o in outage.during if o.what == "introspect"]
        active = [o for o in intro if o.status == 200 and json.loads(o.body).get("active") is True]
        print(f"\nintrospection during the outage: {len(intro)} calls, {len(active)} active")
        bad = [str(o) for o in intro if o not in active]
        assert intro and bad == [], "\n".join(bad) + outage.where()

    def test_ready_again_and_rotation_resumes(self, outage: Outage) -> None:
        fleet = outage.fleet
        assert len(outage.ready_again) == len(fleet.replicas), f"{outage.ready_again}\n{fleet.logs()}"
        assert max(outage.ready_again.values()) < 5.0, f"{outage.ready_again}\n{fleet.logs()}"
        assert outage.rotation_resumed_after < 5.0, f"no new current key after Redis came back\n{fleet.logs()}"

    def test_no_key_lost_or_duplicated(self, outage: Outage) -> None:
        assert outage.converged_after < 5.0, (
            f"replicas and store disagree: {outage.kids_after} {outage.currents_after} {outage.after}"
        )
        for name, currents in outage.currents_after.items():
            assert len(currents) == 1, f"{name}: {currents}"
        after = outage.after
        assert after is not None
        assert check_invariants(after.keys) == [], check_invariants(after.keys)
        order = [KeyState.NEXT, KeyState.CURRENT, KeyState.PREVIOUS, KeyState.RETIRED]
        for key in outage.before.keys:
            now = after.find(key.kid)
            assert now is not None, f"{key.kid} ({key.state}) was lost"
            if now.state != KeyState.REVOKED and key.state != KeyState.REVOKED:
                assert order.index(now.state) >= order.index(key.state), f"{key.kid}: {key.state} -> {now.state}"
        assert transition_problems(outage.audit) == [], transition_problems(outage.audit)
        # A token signed before the outage (and not expired) still verifies everywhere.
        assert outage.valid_token_refused == [], f"{outage.valid_token_refused}\n{outage.fleet.logs()}"


def test_redis_restarted_empty_gets_the_served_keys_back(fleet_factory: Callable[..., Fleet]) -> None:
    """A Redis that comes back without its data (no persistence): the replicas write back the keys
    they serve, so no key is lost, live tokens still verify and rotation goes on from those keys."""
    fleet = fleet_factory(OUTAGE_POLICY)
    r1 = fleet.replicas[0]
    seen: set[str] = set()

    def rotated() -> bool:
        seen.update(fleet.currents(r1))
        return len(seen) >= 2

    assert wait_for(rotated, timeout=10, interval=0.1), fleet.logs()
    valid = fleet.token(r1)
    with fleet.store() as store:
        before = store.get_keyset("default")
    assert before is not None
    fleet.redis.stop()
    fleet.redis.wipe()
    fleet.redis.start()
    back = time.monotonic()
    with fleet.store() as store:
        assert wait_for(lambda: store.get_keyset("default") is not None, timeout=5, interval=0.02), fleet.logs()
        rewritten = time.monotonic() - back
        after = store.get_keyset("default")
        reseeds = [e for e in store.list_audit(limit=1000) if e.action == "keyset.reseed"]
    assert after is not None
    lost = [f"{k.kid} ({k.state})" for k in before.keys if after.find(k.kid) is None]
    print(
        f"\nRedis restarted empty: keyset written back after {rewritten:.2f}s by {len(reseeds)} replica(s), "
        f"{len(before.keys)} keys before, {len(after.keys)} after, lost {lost}"
    )
    assert lost == [], f"keys lost: {lost}\n{fleet.logs()}"
    assert len(reseeds) == 1, reseeds
    assert check_invariants(after.keys) == [], check_invariants(after.keys)
    for replica in fleet.replicas:
        verify_with_jwks(valid, fleet.jwks(replica), issuer=fleet.issuer, audience="api", leeway=0)
    known = {k.kid for k in before.keys}
    assert wait_for(lambda: any(k not in known for k in fleet.currents(r1)), timeout=5, interval=0.05), (
        f"no rotation after the write-back\n{fleet.logs()}"
    )
    with fleet.store() as store:
        final = store.get_keyset("default")
    assert final is not None and check_invariants(final.keys) == []
    assert all(final.find(kid) is not None for kid in known)
    # Not written back: clients (and token revocations, and the audit log) were only in the store.
    statuses = {rep.name: fleet.token_response(rep).status_code for rep in fleet.replicas}
    print(f"token requests of a client registered before the data loss: {statuses}")


# ----- 4. a replica SIGKILLed in the middle of rotations ------------------------------------------


@dataclass
class KillRound:
    mode: str
    victim: str
    survivors_agree_after: float = float("inf")
    survivor_currents: dict[str, list[str]] = field(default_factory=dict)
    store_problems: list[str] = field(default_factory=list)
    rotated_after_kill: bool = False
    rotate_call: str = ""

    def ok(self) -> bool:
        return (
            self.survivors_agree_after < 3.0
            and all(len(c) == 1 for c in self.survivor_currents.values())
            and self.store_problems == []
            and self.rotated_after_kill
        )


def test_replica_sigkilled_in_the_middle_of_rotations(fleet_factory: Callable[..., Fleet]) -> None:
    """Kill -9 one replica while the schedulers rotate every second (and once right after it took an
    admin rotate call); the survivors and the store keep exactly one current, rotation goes on, and
    no token names a kid that a survivor's JWKS lacks at that moment."""
    fleet = fleet_factory(FAST)
    lock = threading.Lock()
    alive = {r.name for r in fleet.replicas}
    violations: list[str] = []
    token_errors: list[str] = []
    counts = {"tokens": 0, "jwks_checks": 0}
    stop = threading.Event()
    deadline = time.monotonic() + 60

    def up() -> list[Replica]:
        with lock:
            return [r for r in fleet.replicas if r.name in alive]

    def checker(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=3) as http:
            for _ in range(20_000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                replicas = up()
                rep = rng.choice(replicas)
                try:
                    r = fleet.token_response(rep, http=http)
                except httpx.HTTPError as exc:
                    with lock:
                        if rep.name in alive:
                            token_errors.append(f"{rep.name}: {exc!r}")
                    continue
                if r.status_code != 200:
                    token_errors.append(f"{rep.name}: {r.status_code} {r.text[:200]}")
                    continue
                kid = kid_of(r.json()["access_token"])
                for other in replicas:
                    try:
                        kids = fleet.kids(other, http=http)
                    except (httpx.HTTPError, AssertionError):
                        continue  # killed meanwhile
                    with lock:
                        counts["jwks_checks"] += 1
                        if kid not in kids and other.name in alive:
                            violations.append(f"token of {rep.name} names {kid}, missing from {other.name}'s JWKS")
                with lock:
                    counts["tokens"] += 1

    rounds: list[KillRound] = []
    rng = random.Random(9)
    plan = [("scheduled", 0.0), ("admin rotate", 0.0), ("scheduled", 0.0), ("admin rotate", 0.004)]
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(checker, seed) for seed in range(2)]
        try:
            for mode, delay in plan:
                victim = fleet.pick(up())
                survivors = [r for r in fleet.replicas if r is not victim]
                rnd = KillRound(f"{mode} +{delay * 1000:.0f} ms" if mode != "scheduled" else mode, victim.name)
                rounds.append(rnd)
                call: list[str] = []
                caller: threading.Thread | None = None
                if mode == "scheduled":
                    # Kill close to the moment the next scheduled rotation is due (1 s after the last one).
                    before = fleet.currents(survivors[0])
                    wait_for(lambda s=survivors[0], b=before: fleet.currents(s) != b, timeout=3)
                    time.sleep(rng.uniform(0.9, 1.1))
                else:
                    token = fleet.admin_token(victim)

                    def rotate(victim: Replica = victim, token: str = token, call: list[str] = call) -> None:
                        try:
                            r = fleet.admin_post(
                                victim, "/admin/keysets/default/rotate", {"force": True}, token=token, timeout=3
                            )
                            call.append(f"{r.status_code} {r.text[:200]}")
                        except httpx.HTTPError as exc:
                            call.append(repr(exc))

                    caller = threading.Thread(target=rotate)
                    caller.start()
                    time.sleep(delay)
                with lock:
                    alive.discard(victim.name)
                victim.kill()
                if caller is not None:
                    caller.join(timeout=5)
                    rnd.rotate_call = call[0] if call else "no answer"
                killed = time.monotonic()

                def agree(rnd: KillRound = rnd, survivors: list[Replica] = survivors) -> bool:
                    rnd.survivor_currents = {s.name: fleet.currents(s) for s in survivors}
                    first = next(iter(rnd.survivor_currents.values()))
                    return len(first) == 1 and all(c == first for c in rnd.survivor_currents.values())

                if wait_for(agree, timeout=3):
                    rnd.survivors_agree_after = time.monotonic() - killed
                with fleet.store() as store:
                    ks = store.get_keyset("default")
                    rnd.store_problems = check_invariants(ks.keys) if ks else ["no keyset"]
                current = rnd.survivor_currents[survivors[0].name]
                rnd.rotated_after_kill = wait_for(
                    lambda s=survivors[0], c=current: fleet.currents(s) != c, timeout=3, interval=0.05
                )
                victim.start()
                victim.wait_ready()
                with lock:
                    alive.add(victim.name)
        finally:
            stop.set()
        for f in futures:
            f.result()

    with fleet.store() as store:
        final = store.get_keyset("default")
    events = fleet.audit()
    report = (
        f"{len(rounds)} kills: "
        + "; ".join(
            f"{r.mode} of {r.victim} (rotate call: {r.rotate_call or '-'}) -> survivors agreed on one current after "
            f"{r.survivors_agree_after:.2f}s, rotation went on: {r.rotated_after_kill}"
            for r in rounds
        )
        + f"; forced rotations that landed before their replica died: "
        f"{sum(1 for e in promotions(events) if e.details.get('trigger') == 'forced')} of "
        f"{sum(1 for r in rounds if r.rotate_call)}"
        + f"; {counts['tokens']} tokens checked against {counts['jwks_checks']} JWKS of live replicas, "
        f"{len(violations)} kids missing, {len(token_errors)} token errors; promotions "
        f"{len(promotions(events))}"
    )
    print("\n" + report)
    tail = "\n" + fleet.logs()
    assert all(r.ok() for r in rounds), f"{report}\n{[r for r in rounds if not r.ok()]}{tail}"
    assert violations == [], f"{report}\n{violations[:20]}{tail}"
    assert token_errors == [], f"{report}\n{token_errors[:20]}{tail}"
    assert counts["tokens"] > 100, report
    assert final is not None and check_invariants(final.keys) == [], report
    assert transition_problems(events) == [], f"{transition_problems(events)}; {report}"


# ----- 5. clocks that differ by the leeway --------------------------------------------------------

SKEW_POLICY = Policy(max_age="1s", rotation_period="3s", prepublish="3s", token_ttl="3s", leeway="2s")
SKEW = "+2s"  # replica3's clock runs this far ahead (libfaketime)
# Two manual (forced) rotations on replica1, whose clock is 2 s behind replica3's: each at the first
# scheduled rotation after this many seconds into the run (then on the next whole second). The run
# goes on until every token signed before the last one has expired (AFTER_MANUAL), at most RUN_LIMIT.
MANUAL_AT = (6.0, 12.0)
AFTER_MANUAL = 5.5
RUN_LIMIT = 30.0


@dataclass
class SkewRun:
    fleet: Fleet
    skew_measured: float
    window: float = 0.0
    tokens: int = 0
    checks: int = 0
    first_signed: dict[str, float] = field(default_factory=dict)  # kid -> monotonic time first seen signing
    violations: list[tuple[str, str, str]] = field(default_factory=list)  # (kid, jwks replica, text)
    manual: list[dict[str, Any]] = field(default_factory=list)  # the rotate replies
    audit: list[AuditEvent] = field(default_factory=list)
    wall_start: float = 0.0

    def story(self, kid: str) -> str:
        """The audited life of a key, times relative to the start of the run (each stamped by the
        clock of the replica that made the change)."""
        return f"{kid[:8]}: " + ", ".join(
            f"{e.action} {e.details.get('state', '')} ({e.details.get('trigger', '')}) at +{e.at - self.wall_start:.2f}"
            for e in self.audit
            if e.target == kid
        )

    def intervals(self) -> list[tuple[str, float]]:
        """(kid, seconds since the key before it started signing), in order; not for the first key,
        which was already signing when the run began."""
        order = sorted(self.first_signed.items(), key=lambda item: item[1])
        return [(kid, t - before) for (_, before), (kid, t) in itertools.pairwise(order)][1:]

    def forced(self, state: str) -> set[str]:
        """Kids that the manual rotations made `state` (current or previous), as the audit log says."""
        return {
            e.target
            for e in self.audit
            if e.action == "key.rotated" and e.details.get("trigger") == "forced" and e.details.get("state") == state
        }


def run_skew(fleet: Fleet) -> SkewRun:
    normal, skewed = fleet.replicas[0], fleet.replicas[2]
    sent = time.time()
    token = fleet.token(skewed)
    # iat is replica3's clock in whole seconds: iat - sent > skew - 1.
    run = SkewRun(fleet, skew_measured=jwt.decode(token, options={"verify_signature": False})["iat"] - sent)
    leeway = float(fleet.policy.seconds("leeway"))
    live: list[tuple[str, str, str, float]] = []  # (replica, token, kid, exp)
    rng = random.Random(5)
    wall_start = time.time()
    start = time.monotonic()
    next_check = start

    with httpx.Client(timeout=3) as http:

        def issue(rep: Replica) -> None:
            r = fleet.token_response(rep, http=http)
            assert r.status_code == 200, f"{rep.name}: {r.status_code} {r.text}\n{fleet.logs()}"
            tok = r.json()["access_token"]
            kid = kid_of(tok)
            live.append((rep.name, tok, kid, float(jwt.decode(tok, options={"verify_signature": False})["exp"])))
            run.first_signed.setdefault(kid, time.monotonic())
            run.tokens += 1

        armed: int | None = None  # number of signing kids seen when the next manual rotation was armed
        for _ in range(10_000):
            now = time.monotonic()
            if now - start > RUN_LIMIT:
                break
            if len(run.manual) == len(MANUAL_AT) and now - start > run.manual[-1]["at"] + AFTER_MANUAL:
                break
            if len(run.manual) < len(MANUAL_AT) and now - start > MANUAL_AT[len(run.manual)] and armed is None:
                armed = len(run.first_signed)
            if armed is not None and len(run.first_signed) > armed:
                # A scheduled rotation (by replica3, which is always first) has just happened. Just
                # after a whole second of the wall clock, replica3 signs tokens whose exp (whole
                # seconds of its clock, 2 s ahead) is as late as it gets: ~5 s from now. Then replica1
                # demotes that key, stamping retire_at with its own clock.
                time.sleep((1.02 - time.time() % 1) % 1)
                for _ in range(3):
                    issue(skewed)
                r = fleet.admin_post(normal, "/admin/keysets/default/rotate", {"force": True, "reason": "skew"})
                assert r.status_code == 200, f"{r.status_code} {r.text}\n{fleet.logs()}"
                run.manual.append({**r.json(), "at": round(time.monotonic() - start, 2)})
                armed = None
            issue(rng.choice(fleet.replicas))
            if time.monotonic() >= next_check:
                # Every live token's kid is in the JWKS of every replica, and one token per kid
                # verifies against each (PyJWT, with the leeway).
                next_check = time.monotonic() + 0.1
                docs = {rep.name: fleet.jwks(rep, http=http) for rep in fleet.replicas}
                wall = time.time()
                live = [t for t in live if wall < t[3] - 0.05]
                for jname, doc in docs.items():
                    kids = {k["kid"] for k in doc["keys"]}
                    verified: set[str] = set()
                    for name, tok, kid, exp in live:
                        run.checks += 1
                        if kid not in kids:
                            text = (
                                f"token of {name} names {kid}, gone from {jname}'s JWKS {exp - wall:.2f}s before exp"
                                f" (at +{wall - wall_start:.2f}s)"
                            )
                            run.violations.append((kid, jname, text))
                            continue
                        if kid in verified:
                            continue
                        verified.add(kid)
                        try:
                            verify_with_jwks(tok, doc, issuer=fleet.issuer, audience="api", leeway=leeway)
                        except jwt.InvalidTokenError as exc:
                            run.violations.append((kid, jname, f"token of {name} refused by {jname}: {exc}"))
            time.sleep(0.03)
    run.window = time.monotonic() - start
    run.audit = [e for e in fleet.audit() if e.at >= wall_start - 5]
    run.wall_start = wall_start
    return run


@pytest.fixture(scope="class")
def skew_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SkewRun]:
    if not faketime_available():
        pytest.skip(
            "libfaketime is not installed (Debian/Ubuntu: apt-get install faketime): it runs a replica 2 s ahead"
        )
    with Fleet(tmp_path_factory.mktemp("skew"), SKEW_POLICY, replica_env={2: faketime_env(SKEW)}) as fleet:
        run = run_skew(fleet)
        kinds = Counter(e.details.get("trigger") for e in promotions(run.audit))
        print(
            f"\nclock skew {run.skew_measured:+.2f}s on replica3, {run.window:.1f}s: {run.tokens} tokens, "
            f"{run.checks} token x JWKS checks, {len(run.violations)} refusals before exp; promotions {dict(kinds)}; "
            f"signing-key intervals {', '.join(f'{i:.2f}' for _, i in run.intervals())}s; manual rotation "
            f"{run.manual}"
        )
        for kid in dict.fromkeys(kid for kid, _, _ in run.violations):
            print(f"refused before exp: {run.story(kid)}")
        yield run


class TestClocksSkewedByTheLeeway:
    def test_the_skew_is_real(self, skew_run: SkewRun) -> None:
        assert 1.0 < skew_run.skew_measured <= 2.5, skew_run.skew_measured

    def test_no_double_rotation(self, skew_run: SkewRun) -> None:
        policy = skew_run.fleet.policy
        problems = transition_problems(skew_run.audit)
        assert problems == [], problems
        scheduled = [e for e in promotions(skew_run.audit) if e.details.get("trigger") == "scheduled"]
        period, leeway = policy.seconds("rotation_period"), policy.seconds("leeway")
        # A replica ahead by the leeway may rotate up to `leeway` early, never twice in a row. (The
        # manual rotation may come at any moment: the interval that ends with it does not count.)
        intervals = [i for kid, i in skew_run.intervals() if kid not in skew_run.forced("current")]
        assert intervals and min(intervals) >= period - leeway - 0.3, (intervals, skew_run.fleet.logs())
        most = skew_run.window / (period - leeway) + 1
        least = skew_run.window / (period + 1.5) - 1
        assert least <= len(scheduled) <= most, (len(scheduled), least, most, intervals)

    def test_no_early_retirement_after_scheduled_rotations(self, skew_run: SkewRun) -> None:
        demoted = skew_run.forced("previous")
        bad = [text for kid, _, text in skew_run.violations if kid not in demoted]
        assert bad == [], "\n".join(bad[:20]) + "\n" + skew_run.fleet.logs()

    def test_no_early_retirement_after_a_manual_rotation_on_the_slower_replica(self, skew_run: SkewRun) -> None:
        demoted = skew_run.forced("previous")
        bad = [text for kid, _, text in skew_run.violations if kid in demoted]
        assert len(skew_run.manual) == len(MANUAL_AT) == len(demoted), (skew_run.manual, demoted)
        assert bad == [], f"{len(bad)} refusals of tokens of {sorted(demoted)}:\n" + "\n".join(bad[:20])

    def test_the_rotate_reply_names_the_key_it_demoted(self, skew_run: SkewRun) -> None:
        replied = [m["previous"] for m in skew_run.manual]
        demoted = [
            e.target
            for e in skew_run.audit
            if e.action == "key.rotated"
            and e.details.get("trigger") == "forced"
            and e.details.get("state") == "previous"
        ]
        assert replied == demoted, "\n".join(skew_run.story(kid) for kid in {*replied, *demoted})
