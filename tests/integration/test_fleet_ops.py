"""Fleet operations, measured (issue 15): a rolling restart, and a replica added and one removed, under load
through HAProxy, cost 0 requests.

Three `jwks-service serve --drain 2s` replicas share one private `redis-server` (append-only) behind a real
`haproxy` (tests/haproxyserver.py: deploy/haproxy.cfg on loopback, checks every 500 ms). LOADERS threads
send a bounded load through the proxy the whole time, each round a token request, a JWKS fetch (which must
hold the token's kid) and an introspection of that token (which must be active). Meanwhile:

1. rolling restart: each replica in turn gets SIGTERM (serve --drain: /readyz and /healthz answer 503,
   HAProxy takes it out, then uvicorn's graceful shutdown) and a replacement starts on the same port;
   the next one goes only once the replacement is UP in HAProxy;
2. scale out: a fourth replica starts and, once ready, joins through HAProxy's runtime API (add server,
   no reload);
3. scale in: a replica leaves: maintenance in HAProxy (no new request goes there, those in flight
   finish), then SIGTERM, then del server.

Every request must succeed; the test prints, per phase, the requests, failures and latencies as the
clients saw them, and how long each step took. Run alone, with the tables: `pytest -m fleet -s -k ops`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from haproxyserver import HAProxy
from replicas import Fleet, Policy, Replica, kid_of, percentile
from support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.fleet]

POLICY = Policy(max_age="1s", rotation_period="1h", prepublish="2s", token_ttl="5m", leeway="1s")
DRAIN = "2s"  # serve --drain: more than HAProxy needs to take a replica out (fall 2 x inter 500ms + check)
LOADERS = 3  # load threads
PAUSE = 0.01  # seconds between two rounds of one load thread
MAX_ROUNDS = 20_000  # per thread: the load is bounded in count as well as in time
RUN_LIMIT = 80.0  # seconds: the operations must be done within this
KINDS = ("token", "jwks", "introspect")


@dataclass
class Outcome:
    phase: str
    kind: str
    took: float
    ok: bool
    reason: str = ""
    rid: str = ""


@dataclass
class Run:
    fleet: Fleet
    haproxy: HAProxy
    phase: str = "steady"
    stop: threading.Event = field(default_factory=threading.Event)
    outcomes: list[Outcome] = field(default_factory=list)
    phases: list[tuple[str, float]] = field(default_factory=list)  # (name, seconds)
    notes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.phase = name
        start = time.monotonic()
        try:
            yield
        finally:
            self.phases.append((name, time.monotonic() - start))


def load(run: Run, seed: int, deadline: float) -> None:
    auth = run.fleet.auth
    with httpx.Client(base_url=run.haproxy.url, timeout=10) as http:

        def call(kind: str, rid: str, method: str, path: str, **kw: object) -> httpx.Response | None:
            phase, sent = run.phase, time.monotonic()
            try:
                r = http.request(method, path, headers={"X-Request-ID": rid}, **kw)  # type: ignore[arg-type]
            except httpx.HTTPError as exc:
                run.outcomes.append(Outcome(phase, kind, time.monotonic() - sent, False, type(exc).__name__, rid))
                return None
            ok = r.status_code == 200
            reason = "" if ok else f"{r.status_code} {r.text[:100]}"
            run.outcomes.append(Outcome(phase, kind, time.monotonic() - sent, ok, reason, rid))
            return r if ok else None

        def fail(kind: str, reason: str) -> None:  # a 200 with the wrong content
            last = run.outcomes[-1]
            assert last.kind == kind
            last.ok, last.reason = False, reason

        for n in range(MAX_ROUNDS):
            if run.stop.is_set() or time.monotonic() > deadline:
                return
            rid = f"{seed}-{n}"
            data = {"grant_type": "client_credentials", "audience": "api"}
            r = call("token", f"{rid}-token", "POST", "/oauth/token", data=data, auth=auth)
            token = r.json().get("access_token") if r is not None else None
            if r is not None and not token:
                fail("token", f"200 without a token: {r.text[:100]}")
            r = call("jwks", f"{rid}-jwks", "GET", "/.well-known/jwks.json")
            if r is not None and token and kid_of(token) not in {k.get("kid") for k in r.json().get("keys", [])}:
                fail("jwks", "the JWKS lacks the kid of a token just issued")
            if token:
                form = {"token": token}
                r = call("introspect", f"{rid}-introspect", "POST", "/oauth/introspect", data=form, auth=auth)
                if r is not None and r.json().get("active") is not True:
                    fail("introspect", f"a valid token introspected as {r.text[:100]}")
            time.sleep(PAUSE)


def rolling_restart(run: Run) -> None:
    """SIGTERM each replica in turn; a replacement on the same port; the next once it is UP in HAProxy."""
    for replica in list(run.fleet.replicas):
        assert replica.proc is not None
        sent = time.monotonic()
        replica.proc.send_signal(signal.SIGTERM)
        out = run.haproxy.wait_status(replica.name, "DOWN", timeout=10)
        replica.proc.wait(timeout=20)
        replica.proc = None
        exited = time.monotonic() - sent
        replica.start()
        replica.wait_ready()
        ready = time.monotonic() - sent
        up = run.haproxy.wait_status(replica.name, "UP", timeout=10)
        run.notes[run.phase].append(
            f"{replica.name}: out of HAProxy {out:.2f}s after SIGTERM, exited at {exited:.2f}s,"
            f" replacement ready at {ready:.2f}s, UP in HAProxy {up:.2f}s later"
        )


def scale_out(run: Run) -> Replica:
    fleet = run.fleet
    first = fleet.replicas[0]
    replica = Replica("replica4", free_port(), fleet.config, fleet.workdir, first.env, first.args)
    fleet.replicas.append(replica)  # Fleet.close() stops it
    start = time.monotonic()
    replica.start()
    replica.wait_ready()
    ready = time.monotonic() - start
    joined = run.haproxy.add(replica)
    run.notes[run.phase].append(f"{replica.name}: ready {ready:.2f}s after start, UP in HAProxy {joined:.2f}s later")
    time.sleep(3.0)  # let it serve its share
    return replica


def scale_in(run: Run, replica: Replica) -> None:
    assert replica.proc is not None
    start = time.monotonic()
    idle = run.haproxy.retire(replica)
    replica.proc.send_signal(signal.SIGTERM)
    replica.proc.wait(timeout=20)
    replica.proc = None
    exited = time.monotonic() - start
    run.haproxy.delete(replica)
    run.notes[run.phase].append(
        f"{replica.name}: in maintenance with no request left after {idle:.2f}s, exited at {exited:.2f}s,"
        f" deleted from HAProxy at {time.monotonic() - start:.2f}s"
    )


def table(run: Run) -> str:
    served = Counter(line["srv"] for line in run.haproxy.requests().values())
    rows = ["fleet operations under load through HAProxy (latency as the clients saw it)"]
    for name, seconds in run.phases:
        outs = [o for o in run.outcomes if o.phase == name]
        rows.append(f"\n== {name} ({seconds:.1f}s) ==")
        rows.append(f"{'kind':<11}{'requests':>9}{'failed':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
        for kind in KINDS:
            mine = [o for o in outs if o.kind == kind]
            if not mine:
                continue
            took = [o.took * 1000 for o in mine]
            failed = sum(1 for o in mine if not o.ok)
            rows.append(
                f"{kind:<11}{len(mine):>9}{failed:>8}{percentile(took, 50):>9.1f}"
                f"{percentile(took, 99):>9.1f}{max(took):>9.1f}"
            )
        for (kind, reason), n in Counter((o.kind, o.reason) for o in outs if not o.ok).most_common():
            rows.append(f"  failed {kind} x{n}: {reason}")
        rows.extend(f"  {note}" for note in run.notes.get(name, []))
    total = len(run.outcomes)
    failed = sum(1 for o in run.outcomes if not o.ok)
    rows.append(f"\ntotal: {total} requests, {failed} failed; served by (HAProxy log): {dict(sorted(served.items()))}")
    return "\n".join(rows)


@pytest.fixture
def ops_run(tmp_path: Path) -> Iterator[Run]:
    port = free_port()
    fleet = Fleet(tmp_path, POLICY, issuer=f"http://127.0.0.1:{port}", serve_args=["--drain", DRAIN])
    fleet.redis.appendfsync = "everysec"
    with fleet:
        haproxy = HAProxy(tmp_path, port, list(fleet.replicas))
        try:
            haproxy.start()
            yield Run(fleet, haproxy)
        finally:
            haproxy.stop()
            for replica in fleet.replicas:  # drain all at once; Fleet.close's SIGTERM then stops them
                if replica.proc is not None:
                    replica.proc.send_signal(signal.SIGTERM)


def test_rolling_restart_and_scaling_cost_no_request(ops_run: Run) -> None:
    run = ops_run
    started = time.monotonic()
    deadline = started + RUN_LIMIT
    threads = [
        threading.Thread(target=load, args=(run, seed, deadline), name=f"load-{seed}", daemon=True)
        for seed in range(LOADERS)
    ]
    try:
        with run.step("steady"):
            for t in threads:
                t.start()
            time.sleep(2.0)
        with run.step("rolling restart"):
            rolling_restart(run)
        with run.step("scale out"):
            added = scale_out(run)
        with run.step("scale in"):
            scale_in(run, run.fleet.replicas[0])
        with run.step("after"):
            time.sleep(2.0)
    finally:
        run.stop.set()
        for t in threads:
            t.join(timeout=15)
    elapsed = time.monotonic() - started
    report = table(run) + f"\noperations took {elapsed:.1f}s"
    print(report)
    assert time.monotonic() < deadline, "the run took too long: the load stopped before the end"
    for name, _ in run.phases:
        kinds = Counter(o.kind for o in run.outcomes if o.phase == name)
        assert all(kinds[k] > 0 for k in KINDS), f"no load during {name}: {kinds}"
    served = Counter(line["srv"] for line in run.haproxy.requests().values())
    assert served[added.name] > 0, f"the added replica served nothing: {served}"
    assert set(run.haproxy.statuses()) == {r.name for r in run.fleet.replicas[1:]}
    failures = [o for o in run.outcomes if not o.ok]
    assert failures == [], f"{len(failures)} failed requests:\n{report}\n{run.fleet.logs(1500)}"
