"""http/tally: the same exposition as prometheus-client's Counter and Histogram (less `_created`)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jwks_service.http.tally import Tally, TallyHistogram

BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.001, 0.05)


def samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_same_exposition_as_prometheus_client() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tally = Tally("t_requests", "Requests", ["outcome"], ours)
    counter = Counter("t_requests", "Requests", ["outcome"], registry=theirs)
    hist = TallyHistogram("t_seconds", "Seconds", ["keyset"], BUCKETS, ours)
    reference = Histogram("t_seconds", "Seconds", ["keyset"], buckets=BUCKETS, registry=theirs)
    for outcome in ("ok", "ok", "invalid_client", "ok"):
        tally.inc(outcome)
        counter.labels(outcome).inc()
    # on a bound (counts in that bucket), between bounds, past the last one, and zero
    for keyset, value in (("a", 0.00001), ("a", 0.00003), ("b", 0.2), ("a", 0.0), ("b", 0.05)):
        hist.observe(value, keyset)
        reference.labels(keyset).observe(value)
    assert samples(ours) == samples(theirs)


def test_label_count_is_checked() -> None:
    registry = CollectorRegistry()
    with pytest.raises(ValueError, match="label"):
        Tally("x", "X", ["a", "b"], registry).inc("only-one")
    with pytest.raises(ValueError, match="label"):
        TallyHistogram("y", "Y", ["a"], BUCKETS, registry).observe(1.0)
