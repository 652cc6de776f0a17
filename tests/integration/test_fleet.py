"""Faults, measured (issue 11): three replicas behind HAProxy on one Redis, under load, while keys roll.

A real `haproxy` (Debian's package) on a loopback port fronts three `jwks-service serve --drain 2s`
replicas that share one private `redis-server` (append-only, fsync always). The keyset rotates every
4 s, and one emergency revocation goes through the admin API. A bounded load runs through the proxy
the whole time: token requests, introspection, JWKS fetches, verification with PyJWT (PyJWKClient)
and with the SDK (`jwks_service.sdk.Verifier`, subscribed to /keys/events). Meanwhile, in turn:

- a replica SIGKILLed and restarted, twice;
- Redis down for 2 s (SIGTERM, then restarted on the same port and directory) and back;
- a rolling restart of the three replicas with SIGTERM, one at a time, each ready before the next;
- Redis frozen with SIGSTOP for 3 s.

The HAProxy configuration is written from the template of tests/haproxyserver.py, which is
deploy/haproxy.cfg with loopback addresses, free ports, faster health checks and a log line per
request that names the request id, the server and HAProxy's termination state. Every fault must
cost 0 failed requests of any kind. One kind of failure cannot be avoided by any proxy setting: a
token request (POST, not safe to replay) that was written to a replica at the moment it was
SIGKILLed gets no answer, and HAProxy answers 502. Those are counted apart (as "in flight to a
killed replica", each confirmed by HAProxy's log) and are the only failures allowed.

Run alone, with the tables: `pytest -m fleet -s`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
import pytest
from haproxyserver import HAProxy
from replicas import Fleet, Policy, Replica, kid_of, percentile, promotions
from support import free_port

from jwks_service.sdk import InvalidTokenError, SDKError
from jwks_service.sdk.verifier import Verifier

pytestmark = [pytest.mark.slow, pytest.mark.fleet]

# Rotation every 4 s, so that several scheduled rotations happen during the run; prepublish 2 s >=
# max_age + leeway; tokens live 10 s.
POLICY = Policy(max_age="1s", rotation_period="4s", prepublish="2s", token_ttl="10s", leeway="1s")
DRAIN = "2s"  # serve --drain: /healthz 503 this long after SIGTERM; HAProxy needs ~1 s (inter 500ms fall 2)
WORKERS = 4  # load threads
PAUSE = 0.02  # seconds between two rounds of one load thread
MAX_ROUNDS = 20_000  # per thread: the load is bounded in count as well as in time
RUN_LIMIT = 150.0  # seconds: the whole fault sequence must end within this


# ----- the load -------------------------------------------------------------------------------------

LATE = "accepted a token of the revoked key"
KILLED = "in flight at a SIGKILLed replica"
STALE_CONNECTIONS = 0.25  # seconds after a kill in which HAProxy may still use a connection to the dead process
KINDS = ("token", "introspect", "jwks", "pyjwt", "sdk", "admin")


@dataclass
class Outcome:
    phase: str
    kind: str
    sent: float  # monotonic
    took: float
    ok: bool
    reason: str = ""  # why it failed
    rid: str = ""  # X-Request-ID (requests that went through HAProxy as such)
    status: int | None = None


@dataclass
class Revocation:
    kid: str = ""
    started: float = float("inf")  # monotonic: the admin call was sent
    done: float = float("inf")  # ... and answered


@dataclass
class Run:
    proxy: str
    fleet: Fleet
    haproxy: HAProxy
    phase: str = "start"
    stop: threading.Event = field(default_factory=threading.Event)
    outcomes: list[Outcome] = field(default_factory=list)
    phases: list[tuple[str, float, float]] = field(default_factory=list)  # (name, start, end)
    kills: list[tuple[str, float]] = field(default_factory=list)  # (replica, monotonic time of SIGKILL)
    revocation: Revocation = field(default_factory=Revocation)
    notes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # phase -> measured facts
    kids: Counter[str] = field(default_factory=Counter)
    first_signed: dict[str, float] = field(default_factory=dict)  # kid -> monotonic time of its first token

    def record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)  # list.append is atomic under the GIL

    @contextlib.contextmanager
    def fault(self, name: str) -> Iterator[None]:
        self.phase = name
        start = time.monotonic()
        try:
            yield
        finally:
            self.phases.append((name, start, time.monotonic()))

    def revoked(self, kid: str, at: float) -> bool:
        """Whether a refusal of a token of `kid` at `at` is the revocation at work, not a failure."""
        return kid == self.revocation.kid and at >= self.revocation.started


def load(run: Run, seed: int, verifier: Verifier, deadline: float) -> None:
    fleet = run.fleet
    auth = fleet.auth
    max_age = fleet.policy.seconds("max_age")
    leeway = fleet.policy.seconds("leeway")
    jwks_url = run.proxy + "/.well-known/jwks.json"
    pyjwk = jwt.PyJWKClient(jwks_url, cache_jwk_set=True, lifespan=max_age, timeout=10)
    with httpx.Client(base_url=run.proxy, timeout=10) as http:

        def call(kind: str, rid: str, method: str, path: str, **kw: object) -> tuple[httpx.Response | None, Outcome]:
            phase, sent = run.phase, time.monotonic()
            try:
                r = http.request(method, path, headers={"X-Request-ID": rid}, **kw)  # type: ignore[arg-type]
            except httpx.HTTPError as exc:
                out = Outcome(phase, kind, sent, time.monotonic() - sent, False, type(exc).__name__, rid)
                return None, out
            out = Outcome(phase, kind, sent, time.monotonic() - sent, r.status_code == 200, "", rid, r.status_code)
            if r.status_code != 200:
                try:
                    body = r.json()
                    out.reason = f"{r.status_code} {body.get('error')}: {body.get('error_description', '')}"[:120]
                except ValueError:
                    out.reason = f"{r.status_code} {r.text[:80]!r}"
            return r, out

        for n in range(MAX_ROUNDS):
            if run.stop.is_set() or time.monotonic() > deadline:
                return
            rid = f"{seed}-{n}"
            data = {"grant_type": "client_credentials", "audience": "api"}
            r, out = call("token", f"{rid}-token", "POST", "/oauth/token", data=data, auth=auth)
            token = r.json()["access_token"] if r is not None and out.ok else None
            if token is not None:
                kid = kid_of(token)
                run.kids[kid] += 1
                run.first_signed.setdefault(kid, out.sent)
                rev = run.revocation
                if kid == rev.kid and out.sent > rev.done + 1.0:
                    out.ok, out.reason = False, f"signed by the revoked key {out.sent - rev.done:.1f}s after revoking"
            run.record(out)

            _, out = call("jwks", f"{rid}-jwks", "GET", "/.well-known/jwks.json")
            run.record(out)
            if token is None:
                time.sleep(PAUSE)
                continue

            form = {"token": token}
            r, out = call("introspect", f"{rid}-introspect", "POST", "/oauth/introspect", data=form, auth=auth)
            if r is not None and out.ok:
                active = r.json().get("active") is True
                if not active and not run.revoked(kid, out.sent + out.took):
                    out.ok, out.reason = False, "200 active: false for a valid token"
                if active and kid == run.revocation.kid and out.sent > run.revocation.done + 1.0:
                    out.ok, out.reason = False, "200 active: true for a token of the revoked key"
            run.record(out)

            phase, sent = run.phase, time.monotonic()
            try:
                key = pyjwk.get_signing_key_from_jwt(token)
                jwt.decode(token, key.key, algorithms=["ES256"], audience="api", issuer=fleet.issuer, leeway=leeway)
            except jwt.PyJWTError as exc:
                done = time.monotonic()
                expected = run.revoked(kid, done)
                run.record(Outcome(phase, "pyjwt", sent, done - sent, expected, f"{type(exc).__name__}: {exc}"[:120]))
            else:
                done = time.monotonic()
                late = kid == run.revocation.kid and sent > run.revocation.done + 1.0 + max_age
                run.record(Outcome(phase, "pyjwt", sent, done - sent, not late, LATE if late else ""))

            phase, sent = run.phase, time.monotonic()
            try:
                verifier.verify(token)
            except (InvalidTokenError, SDKError) as exc:
                done = time.monotonic()
                expected = run.revoked(kid, done)
                run.record(Outcome(phase, "sdk", sent, done - sent, expected, f"{type(exc).__name__}: {exc}"[:120]))
            else:
                done = time.monotonic()
                late = kid == run.revocation.kid and sent > run.revocation.done + 1.0
                run.record(Outcome(phase, "sdk", sent, done - sent, not late, LATE if late else ""))
            time.sleep(PAUSE)


# ----- the faults -------------------------------------------------------------------------------------


def admin(run: Run, method: str, path: str, **kw: object) -> httpx.Response:
    """One admin call through the proxy (recorded as kind "admin"), with a fresh admin token."""
    fleet = run.fleet
    with httpx.Client(base_url=run.proxy, timeout=10) as http:
        sent = time.monotonic()
        data = {"grant_type": "client_credentials", "audience": fleet.issuer, "scope": "admin"}
        r = http.post("/oauth/token", data=data, auth=fleet.auth)
        run.record(Outcome(run.phase, "admin", sent, time.monotonic() - sent, r.status_code == 200, r.text[:80]))
        assert r.status_code == 200, r.text
        bearer = {"Authorization": f"Bearer {r.json()['access_token']}"}
        sent = time.monotonic()
        r = http.request(method, path, headers=bearer, **kw)  # type: ignore[arg-type]
        run.record(Outcome(run.phase, "admin", sent, time.monotonic() - sent, r.status_code == 200, r.text[:80]))
        return r


def emergency_revoke(run: Run) -> None:
    """Revoke the key that signs now (the admin API through the proxy).

    Not within prepublish of a scheduled rotation: the revocation promotes the next key at once, and
    a next key created by that rotation less than max_age + leeway ago may be missing from a cache
    fetched just before; PyJWT refetches on an unknown kid at most once per cooldown (30 s), so it
    refuses tokens of that key until its cached copy expires (12 refusals within ~1 s in one run).
    """
    fleet = run.fleet
    seen = len(run.first_signed)
    deadline = time.monotonic() + 3 * fleet.policy.seconds("rotation_period")
    while len(run.first_signed) == seen and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(fleet.policy.seconds("prepublish") + 0.2)  # the next key is older than max_age + leeway
    with httpx.Client(base_url=run.proxy, timeout=10) as http:
        data = {"grant_type": "client_credentials", "audience": "api"}
        kid = kid_of(http.post("/oauth/token", data=data, auth=fleet.auth).json()["access_token"])
    run.revocation.kid, run.revocation.started = kid, time.monotonic()
    r = admin(run, "POST", f"/admin/keys/{kid}/revoke", json={"reason": "fleet test: leaked"})
    run.revocation.done = time.monotonic()
    assert r.status_code == 200, r.text
    run.notes[run.phase].append(f"revoked {kid[:8]} in {(run.revocation.done - run.revocation.started) * 1000:.0f} ms")


def restart(run: Run, replica: Replica) -> None:
    replica.start()
    replica.wait_ready()
    back = run.haproxy.wait_status(replica.name, "UP", timeout=10)
    run.notes[run.phase].append(f"{replica.name} back in HAProxy {back:.2f}s after ready")


def kill_twice(run: Run) -> None:
    for replica in run.fleet.replicas[:2]:
        assert replica.proc is not None
        run.kills.append((replica.name, time.monotonic()))
        replica.kill()
        time.sleep(0.5)
        restart(run, replica)
        time.sleep(1.0)


def wait_all_ready(run: Run, timeout: float) -> float:
    start = time.monotonic()
    with httpx.Client(timeout=2) as http:
        for replica in run.fleet.replicas:
            while time.monotonic() - start < timeout:
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(replica.url("/readyz")).status_code == 200:
                        break
                time.sleep(0.05)
    return time.monotonic() - start


def redis_down(run: Run) -> None:
    run.fleet.redis.stop()  # SIGTERM: a clean shutdown (append-only, fsync always)
    try:
        time.sleep(2.0)
    finally:
        run.fleet.redis.start()  # the same port and directory
    run.notes[run.phase].append(f"all replicas ready {wait_all_ready(run, 10):.2f}s after Redis was back")
    time.sleep(1.0)


def rolling_restart(run: Run) -> None:
    for replica in run.fleet.replicas:
        assert replica.proc is not None
        proc = replica.proc
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out = run.haproxy.wait_status(replica.name, "DOWN", timeout=10)
        proc.wait(timeout=15)
        replica.proc = None
        run.notes[run.phase].append(
            f"{replica.name}: out of HAProxy {out:.2f}s after SIGTERM, exited after {time.monotonic() - sent:.2f}s"
        )
        restart(run, replica)


def redis_frozen(run: Run) -> None:
    proc = run.fleet.redis.proc
    assert proc is not None
    proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(3.0)
    finally:
        proc.send_signal(signal.SIGCONT)
    time.sleep(2.0)


FAULTS: list[tuple[str, Callable[[Run], None]]] = [
    ("replica SIGKILL x2", kill_twice),
    ("Redis down 2s", redis_down),
    ("rolling SIGTERM", rolling_restart),
    ("Redis SIGSTOP 3s", redis_frozen),
]


# ----- the report -------------------------------------------------------------------------------------


def classify(run: Run) -> None:
    """Mark the requests that were in flight at a replica when it was SIGKILLed.

    A killed process resets the connections whose request it had not read yet: HAProxy sees a read
    error, not an empty response, and retry-on does not apply. On a client connection that already
    carried a request, HAProxy then closes it without an answer and without a log line, so that the
    client may retry (RFC 9112 section 9.3.1: automatically only if the method is idempotent); on a
    new one it answers 502. And a token request (not replayed, see the template) that the replica had
    read gets the same treatment. Either way the request's lifetime spans the SIGKILL.
    """
    log = run.haproxy.requests()
    for o in run.outcomes:
        if o.ok or not o.rid:
            continue
        line = log.get(o.rid)
        at_kill = [name for name, at in run.kills if o.sent - 0.05 <= at <= o.sent + o.took + 0.05]
        if line is None:
            silent = o.reason == "RemoteProtocolError"
            o.reason += " (closed by HAProxy without an answer)" if silent else " (no HAProxy log line)"
            # Just after a kill HAProxy may still write a request on a pooled connection to the dead
            # process (it has not processed the connection's reset yet): the same read error.
            just_after = [name for name, at in run.kills if 0 <= o.sent - at <= STALE_CONNECTIONS]
            if silent and at_kill:
                o.reason = f"{KILLED} ({at_kill[0]}): closed by HAProxy without an answer"
            elif silent and just_after:
                o.reason = f"{KILLED} ({just_after[0]}): sent on a connection to it HAProxy had not seen die"
            elif run.kills:
                name, at = min(run.kills, key=lambda kill: abs(kill[1] - o.sent))
                o.reason += f" (sent {o.sent - at:+.3f}s after {name} was killed)"
            continue
        o.reason += f" [HAProxy: {line['srv']} {line['term']} retries {line['retries']}]"
        if o.status == 502 and line["term"].startswith("S") and line["srv"] in at_kill:
            o.reason = f"{KILLED} ({line['srv']}): 502 [HAProxy {line['term']}]"
        elif o.status is None and line["term"].startswith("S"):
            # The server side broke (S) and HAProxy closed the client's connection: the request went,
            # on a pooled connection, to a replica killed a moment before, as above.
            just_after = [name for name, at in run.kills if 0 <= o.sent - at <= STALE_CONNECTIONS]
            if line["srv"] in at_kill + just_after:
                o.reason = f"{KILLED} ({line['srv']}): connection closed [HAProxy {line['term']}]"


def unsurvivable(o: Outcome) -> bool:
    return o.reason.startswith(KILLED)


def table(run: Run) -> str:
    log = run.haproxy.requests()
    rows = [f"failed: every failure but those counted as killed ({KILLED}); latency as the client saw it"]
    for name, start, end in run.phases:
        outs = [o for o in run.outcomes if o.phase == name]
        retried = sum(1 for o in outs if o.rid in log and log[o.rid]["retries"] not in ("0", "+0"))
        live = sum(1 for o in outs if o.rid in log and log[o.rid]["be"] == "jwks_live")
        rows.append(f"\n== {name} ({end - start:.1f}s; HAProxy retried {retried} requests) ==")
        if live:
            rows.append(f"  {live} requests went to the replicas that were alive while none was ready")
        rows.append(f"{'kind':<11}{'requests':>9}{'failed':>8}{'killed':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
        for kind in KINDS:
            mine = [o for o in outs if o.kind == kind]
            if not mine:
                continue
            failed = sum(1 for o in mine if not o.ok and not unsurvivable(o))
            killed = sum(1 for o in mine if unsurvivable(o))
            took = [o.took * 1000 for o in mine]
            rows.append(
                f"{kind:<11}{len(mine):>9}{failed:>8}{killed:>8}{percentile(took, 50):>9.1f}"
                f"{percentile(took, 99):>9.1f}{max(took):>9.1f}"
            )
        reasons = Counter((o.kind, o.reason.split(" [")[0]) for o in outs if not o.ok)
        for (kind, reason), n in reasons.most_common():
            rows.append(f"  failed {kind} x{n}: {reason}")
        rows.extend(f"  {note}" for note in run.notes.get(name, []))
    return "\n".join(rows)


@pytest.fixture
def fleet_run(tmp_path: Path) -> Iterator[Run]:
    port = free_port()
    proxy = f"http://127.0.0.1:{port}"
    fleet = Fleet(tmp_path, POLICY, issuer=proxy, serve_args=["--drain", DRAIN])
    # everysec rather than always: less disk traffic on a shared CI machine. A Redis stopped with
    # SIGTERM flushes its AOF either way, and one frozen with SIGSTOP loses nothing.
    fleet.redis.appendfsync = "everysec"
    with fleet:
        haproxy = HAProxy(tmp_path, port, fleet.replicas)
        try:
            haproxy.start()
            yield Run(proxy, fleet, haproxy)
        finally:
            haproxy.stop()
            for replica in fleet.replicas:  # drain all at once; Fleet.close's SIGTERM then stops them
                if replica.proc is not None:
                    replica.proc.send_signal(signal.SIGTERM)


def test_faults_cost_no_request(fleet_run: Run) -> None:
    run, fleet = fleet_run, fleet_run.fleet
    wall_start = time.time()
    deadline = time.monotonic() + RUN_LIMIT
    verifier = Verifier(issuer=run.proxy, audience="api", leeway=fleet.policy.seconds("leeway"), events=True)
    threads = [
        threading.Thread(target=load, args=(run, seed, verifier, deadline), name=f"load-{seed}", daemon=True)
        for seed in range(WORKERS)
    ]
    try:
        with run.fault("rollover"):
            for t in threads:
                t.start()
            time.sleep(2.0)
            emergency_revoke(run)
            time.sleep(3.0)
        for name, fault in FAULTS:
            with run.fault(name):
                fault(run)
        with run.fault("after"):
            time.sleep(2.0)
    finally:
        run.stop.set()
        for t in threads:
            t.join(timeout=15)
        verifier.close()
    assert time.monotonic() < deadline, "the run took too long: the load stopped before the end"

    classify(run)
    events = [e for e in fleet.audit() if e.at >= wall_start - 1]
    scheduled = [e for e in promotions(events) if e.details.get("trigger") == "scheduled"]
    report = table(run) + (
        f"\n\nrotations during the run: {len(scheduled)} scheduled, signing kids seen {len(run.kids)}; "
        f"SDK verifier: {verifier.stats}"
    )
    print(report)
    failures = [o for o in run.outcomes if not o.ok and not unsurvivable(o)]
    killed = [o for o in run.outcomes if unsurvivable(o)]
    tail = "\n" + fleet.logs(1500)
    assert len(scheduled) >= 5, report
    assert run.revocation.done < float("inf"), report
    for name, _, _ in run.phases:
        kinds = Counter(o.kind for o in run.outcomes if o.phase == name)
        assert all(kinds[k] > 0 for k in KINDS[:5]), f"no load during {name}: {kinds}"
    assert failures == [], f"{len(failures)} failed requests:{report}{tail}"
    # At most what the load threads can have in flight at the moments of the two kills.
    assert len(killed) <= 2 * WORKERS, report
