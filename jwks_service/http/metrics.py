"""Prometheus metrics (prometheus-client), one registry per app.

Counters are per process (with several uvicorn workers, each reports its own; sum them in
Prometheus). Key ages and time to the next rotation are read from the in-memory snapshot at
scrape time, so they agree with what the process serves.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from ..lifecycle import Transition, next_rotation_at
from ..model import KeyState
from ..runtime import Runtime
from .tally import Tally, TallyHistogram


class _KeyCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        now = self.runtime.clock.now()
        snap = self.runtime.keys.snapshot
        age = GaugeMetricFamily(
            "jwks_key_age_seconds",
            "Seconds since the key took its state (current: activation)",
            labels=["keyset", "state"],
        )
        to_rotation = GaugeMetricFamily(
            "jwks_next_rotation_seconds", "Seconds until the scheduler rotates the keyset", labels=["keyset"]
        )
        count = GaugeMetricFamily("jwks_keys", "Keys per keyset and state", labels=["keyset", "state"])
        signing = GaugeMetricFamily(
            "jwks_keyset_can_sign", "1 when the keyset has a usable current key", labels=["keyset"]
        )
        for name, policy in self.runtime.settings.keysets.items():
            ks = snap.keysets.get(name)
            signing.add_metric([name], 1.0 if name in snap.signing else 0.0)
            if ks is None:
                continue
            for state in KeyState:
                count.add_metric([name, state.value], float(len(ks.by_state(state))))
            if ks.current is not None:
                age.add_metric([name, "current"], now - (ks.current.activated_at or ks.current.created_at))
            if ks.next is not None:
                age.add_metric([name, "next"], now - ks.next.created_at)
            at = next_rotation_at(policy, ks)
            if at is not None:
                to_rotation.add_metric([name], at - now)
        waiting = GaugeMetricFamily(
            "jwks_rotation_waiting",
            "1 while the keyset's due scheduled rotation waits for the adoption gate (reason: why)",
            labels=["keyset", "reason"],
        )
        gates = dict(self.runtime.keys.waiting)
        for name in self.runtime.settings.keysets:
            gate = gates.get(name)
            waiting.add_metric([name, gate.reason if gate else "none"], 1.0 if gate else 0.0)
        failures = CounterMetricFamily("jwks_canary_failures", "Keys that failed validation before promotion")
        failures.add_metric([], float(self.runtime.keys.canary_failures))
        yield from (age, to_rotation, count, signing, waiting, failures)


class _AdoptionCollector(Collector):
    """Adoption per keyset and kid (API.md §6) from the records this process read last (no store I/O
    at scrape time: the flush loop reads them every few seconds), and the notes this process dropped."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        fetchers = GaugeMetricFamily(
            "jwks_adoption_fetchers", "JWKS fetchers seen within the adoption window", labels=["keyset"]
        )
        share = GaugeMetricFamily(
            "jwks_adoption_share", "Share of the window's fetchers that hold the kid", labels=["keyset", "kid"]
        )
        for name in self.runtime.settings.keysets:
            adopted = self.runtime.adoption.peek(name)
            if adopted is None:
                continue
            fetchers.add_metric([name], float(adopted.fetchers))
            for key in adopted.keys:
                if key.share is not None:
                    share.add_metric([name, key.kid], key.share)
        dropped = CounterMetricFamily(
            "jwks_adoption_dropped",
            "JWKS fetches not recorded: buffer_full (max_fetchers) or per_source (max_per_source)",
            labels=["reason"],
        )
        for reason, count in self.runtime.fetches.dropped.items():
            dropped.add_metric([reason], float(count))
        yield from (fetchers, share, dropped)


class _EventsCollector(Collector):
    """Open /keys/events streams and key events fanned out by this process (http/events.EventHub)."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        subscribers = GaugeMetricFamily("jwks_event_subscribers", "Open /keys/events streams on this process")
        subscribers.add_metric([], float(self.hub.subscribers))
        published = CounterMetricFamily("jwks_key_events_published", "Key events sent to /keys/events streams")
        published.add_metric([], float(self.hub.published))
        yield from (subscribers, published)


class Metrics:
    def __init__(self, runtime: Runtime, events: Any = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # Counted per request on the event loop: plain numbers (tally.py), not prometheus-client's.
        self.tokens_issued = Tally("jwks_tokens_issued", "Access tokens issued", ["keyset", "kid"], r)
        self.signing_seconds = TallyHistogram(
            "jwks_token_signing_seconds",
            "Time to build and sign one access token",
            ["keyset"],
            (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
            r,
        )
        self.token_requests = Tally(
            "jwks_token_requests", "Token endpoint answers by outcome (ok or the OAuth error code)", ["outcome"], r
        )
        self.transitions = Counter(
            "jwks_key_transitions",
            "Key transitions made by this process (rotated, revoked, created, retired, discarded)",
            ["keyset", "event"],
            registry=r,
        )
        self.jwks_requests = Tally("jwks_jwks_requests", "JWKS requests by status (200 or 304)", ["status"], r)
        self.introspections = Tally(
            "jwks_introspections", "Introspection answers (active, inactive, or an error code)", ["outcome"], r
        )
        r.register(_KeyCollector(runtime))
        r.register(_AdoptionCollector(runtime))
        if events is not None:
            r.register(_EventsCollector(events))
        runtime.keys.listeners.append(self.on_transitions)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """``metric.labels(*labels)``, memoised: labels() validates and locks on every call, which
        showed in the token endpoint's profile (three lookups per request)."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            if len(self._children) > 10_000:  # kids change with rotations: bounded
                self._children.clear()
            found = self._children[key] = metric.labels(*labels)
        return found

    def on_transitions(self, keyset: str, revision: int, transitions: list[Transition]) -> None:
        for t in transitions:
            self.transitions.labels(keyset, t.event).inc()


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
