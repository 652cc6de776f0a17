"""The SDK's JWKS cache decisions, with a manual clock (no I/O)."""

from __future__ import annotations

import random

import pytest

from jwks_service.jws import VerificationKey
from jwks_service.sdk.cache import CacheSettings, KeyCache, Refresh, parse_cache_control
from jwks_service.sdk.errors import RevokedKeyError


def key(kid: str) -> VerificationKey:
    return VerificationKey(kid, "ES256", lambda data, sig: True)


def loaded(now: float = 1000.0, cc: str | None = "public, max-age=100", **settings: float) -> KeyCache:
    cache = KeyCache(CacheSettings(**settings), rng=random.Random(1))
    cache.attempt(now)
    cache.replace(now, {"a": key("a"), "b": key("b")}, {}, '"e1"', cc)
    return cache


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("public, max-age=300, stale-if-error=3270", (300.0, 3270.0, False)),
        ("max-age=0", (0.0, None, False)),
        ("no-store", (None, None, True)),
        ("no-cache, max-age=60", (60.0, None, True)),
        ('max-age="120"', (120.0, None, False)),
        ("s-maxage=10, max-age=20", (20.0, None, False)),
        ("max-age=20, s-maxage=10", (20.0, None, False)),
        # RFC 9111 §5.2.2.10: s-maxage is for shared caches only; a verifier is a private cache.
        ("public, s-maxage=10", (None, None, False)),
        ("max-age=-5", (None, None, False)),
        ("max-age=abc", (None, None, False)),
        ("max-age=" + "9" * 40, (None, None, False)),
        (None, (None, None, False)),
        ("", (None, None, False)),
    ],
)
def test_cache_control_parsing(header: str | None, expected: tuple[float | None, float | None, bool]) -> None:
    assert parse_cache_control(header) == expected


def test_fresh_then_background_then_blocking() -> None:
    cache = loaded()
    assert cache.decide(1000.0) is Refresh.NO
    assert cache.decide(1089.9) is Refresh.NO
    assert cache.decide(1090.0) is Refresh.BACKGROUND  # the last 10% of max-age=100
    assert cache.decide(1099.9) is Refresh.BACKGROUND
    assert cache.decide(1100.0) is Refresh.BLOCKING  # expired: refresh before verifying


@pytest.mark.parametrize(
    ("cc", "ttl"),
    [
        ("max-age=0", 1.0),  # clamped up to min_ttl
        ("max-age=999999", 3600.0),  # clamped down to max_ttl
        ("no-store", 1.0),
        (None, 300.0),  # no max-age: the default
        ("max-age=42", 42.0),
    ],
)
def test_lifetime_is_max_age_clamped(cc: str | None, ttl: float) -> None:
    assert loaded(cc=cc).ttl == ttl


def test_empty_cache_blocks() -> None:
    cache = KeyCache()
    assert cache.decide(5.0) is Refresh.BLOCKING
    assert not cache.usable(5.0)


def test_not_modified_renews_lifetime_and_keeps_keys() -> None:
    cache = loaded()
    generation = cache.generation
    cache.not_modified(1095.0, "max-age=100")
    assert cache.generation == generation + 1
    assert set(cache.keys) == {"a", "b"}
    assert cache.decide(1100.0) is Refresh.NO
    assert cache.decide(1195.0) is Refresh.BLOCKING


def test_stale_if_error_serves_the_last_set_within_bound_and_backs_off() -> None:
    cache = loaded(stale_if_error=50.0, backoff_min=2.0, backoff_max=8.0)
    cache.failed(1100.0, "connection refused")
    assert cache.usable(1149.9)  # expired at 1100, stale allowed for 50 s more
    assert not cache.usable(1150.0)
    # Backing off: no new attempt before retry_at (jittered between half and all of backoff_min).
    assert 1101.0 <= cache.retry_at <= 1102.0
    assert cache.decide(cache.retry_at - 0.01) is Refresh.NO
    assert cache.decide(cache.retry_at) is Refresh.BLOCKING
    delays = []
    for _ in range(6):
        before = 1100.0
        cache.failed(before, "again")
        delays.append(cache.retry_at - before)
    assert max(delays) <= 8.0  # capped
    assert delays[-1] >= 4.0  # grown (jitter keeps at least half)


def test_server_stale_if_error_cannot_lengthen_the_bound() -> None:
    """The SDK's own stale_if_error caps what the server says (a revoked key must not verify for the
    larger of the two while refreshes fail)."""
    cache = loaded(cc="max-age=100, stale-if-error=500", stale_if_error=50.0)
    assert cache.stale_for == 50.0
    assert cache.usable(1149.9)
    assert not cache.usable(1150.0)


@pytest.mark.parametrize(
    ("cc", "stale_for"),
    [
        ("max-age=100, stale-if-error=20", 20.0),  # the server's bound, shorter than ours: taken
        ("max-age=100, stale-if-error=0", 0.0),  # "never serve me stale"
        ("max-age=100, stale-if-error=3270", 3270.0),  # the server's default, under the SDK's 1 h
        ("max-age=100, stale-if-error=86400", 3600.0),  # capped by the SDK's setting
        ("max-age=100", 3600.0),  # no header: the SDK's setting
        (None, 3600.0),
    ],
)
def test_stale_if_error_is_the_smaller_of_the_server_and_the_sdk(cc: str | None, stale_for: float) -> None:
    cache = loaded(cc=cc)
    assert cache.stale_for == stale_for
    expiry = 1000.0 + cache.ttl
    cache.failed(expiry, "connection refused")
    assert cache.usable(expiry + stale_for - 0.01)  # stale_for 0: only until expiry
    assert not cache.usable(expiry + stale_for)


def test_stale_if_error_follows_the_latest_answer() -> None:
    """A 304 carries Cache-Control too: its stale-if-error replaces the one of the first download."""
    cache = loaded(cc="max-age=100, stale-if-error=600")
    assert cache.stale_for == 600.0
    cache.not_modified(1100.0, "max-age=100, stale-if-error=5")
    assert cache.stale_for == 5.0
    assert not cache.usable(1205.0)


def test_s_maxage_is_ignored_by_the_private_cache() -> None:
    """RFC 9111 §5.2.2.10: s-maxage applies to shared caches; the verifier keeps its own copy."""
    assert loaded(cc="public, s-maxage=10").ttl == 300.0  # the default, not 10 s
    assert loaded(cc="s-maxage=10, max-age=60").ttl == 60.0
    assert loaded(cc="max-age=60, s-maxage=3000").ttl == 60.0


def test_retry_after_from_server_is_honoured_up_to_the_cap() -> None:
    cache = loaded(backoff_max=60.0)
    cache.failed(1100.0, "503", retry_after=30.0)
    assert cache.retry_at == 1130.0
    cache.failed(1100.0, "503", retry_after=3600.0)
    assert cache.retry_at == 1160.0


def test_unknown_kid_refetch_is_rate_limited() -> None:
    cache = loaded(unknown_kid_cooldown=2.0)
    assert cache.lookup("a", 1000.5).key is not None
    assert not cache.lookup("zzz", 1001.9).refetch  # last attempt at 1000
    assert cache.lookup("zzz", 1002.0).refetch
    cache.attempt(1002.0)
    assert not cache.lookup("yyy", 1003.0).refetch
    cache.failed(1004.0, "down")  # backing off until 1004.5-1005: no refetch even after the cooldown
    assert cache.retry_at > 1004.4
    assert not cache.lookup("yyy", 1004.4).refetch
    assert cache.lookup("yyy", cache.retry_at).refetch


def test_unknown_kid_waits_for_the_backoff_after_failures() -> None:
    """While refreshes fail, an unknown kid must not bring a fetch forward: the cooldown alone (2 s)
    is shorter than the backoff, and every forged kid would otherwise cost the issuer a request."""
    cache = loaded(unknown_kid_cooldown=2.0, backoff_min=8.0, backoff_max=60.0)
    for attempt in range(1, 4):
        now = 1100.0 + attempt * 100
        cache.attempt(now)
        cache.failed(now, "down")
        backoff = cache.retry_at - now
        assert backoff >= 8.0 * 2 ** (attempt - 1) / 2  # jittered, at least half the doubled delay
        # Past the cooldown, still inside the backoff: no refetch, and no refresh at all.
        assert now + 2.0 < cache.retry_at
        assert not cache.lookup("forged", now + 2.0).refetch
        assert not cache.lookup("forged", cache.retry_at - 0.01).refetch
        assert cache.decide(cache.retry_at - 0.01) is Refresh.NO
        # The backoff over: one refetch allowed (and a blocking refresh, the set having expired).
        assert cache.lookup("forged", cache.retry_at).refetch
        assert cache.decide(cache.retry_at) is Refresh.BLOCKING


def test_revoked_kid_is_dropped_and_never_comes_back_from_a_stale_copy() -> None:
    cache = loaded()
    cache.revoke("a", 1010.0)
    assert "a" not in cache.keys
    with pytest.raises(RevokedKeyError):
        cache.lookup("a", 1010.0)
    # A stale copy of the set (an old CDN object) still lists the revoked key: it stays out.
    cache.replace(1020.0, {"a": key("a"), "c": key("c")}, {}, '"old"', "max-age=100")
    assert set(cache.keys) == {"c"}
    # Remembered for revoked_memory only.
    cache.replace(1010.0 + cache.settings.revoked_memory + 1, {"a": key("a")}, {}, None, None)
    assert "a" in cache.keys


def test_retired_kid_is_dropped() -> None:
    cache = loaded()
    cache.drop("b")
    assert set(cache.keys) == {"a"}
    assert cache.lookup("b", 1001.0).key is None  # an unknown kid, not a revoked one


def test_subscription_keeps_the_set_fresh_longer_and_ends_with_the_stream() -> None:
    cache = loaded(cc="max-age=10", subscribed_ttl=300.0)
    assert cache.decide(1010.0) is Refresh.BLOCKING
    cache.set_subscribed(True)
    assert cache.decide(1010.0) is Refresh.NO
    assert cache.decide(1269.0) is Refresh.NO
    assert cache.decide(1270.0) is Refresh.BACKGROUND
    cache.set_subscribed(False)
    assert cache.decide(1010.0) is Refresh.BLOCKING
