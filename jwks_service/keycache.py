"""The JWKS cache's state and every decision about it. No I/O: the sync and async drivers fetch; this
decides when, and what a response or a failure means. `now` is always a parameter.

Part of the core, so that both sides keep a JWK set by the same rules: the verifier SDK (the
issuer's keys; `jwks_service.sdk.cache` re-exports this module) and the server (the keys a
`private_key_jwt` client publishes at its `jwks_uri`, `client_keys`).

- Freshness: ``Cache-Control: max-age`` clamped to [min_ttl, max_ttl] (default_ttl without one;
  ``no-store`` / ``no-cache`` count as min_ttl). ``s-maxage`` is ignored: it is for shared caches
  (RFC 9111 §5.2.2.10) and a verifier keeps a private copy. ``ETag`` makes every refresh conditional.
- Refresh-ahead: from ``ahead`` (a fraction of the lifetime) before expiry, the next use starts a
  background refresh while the current set keeps serving; once expired, the next use refreshes
  before verifying (so an unsubscribed verifier drops a revoked key within max-age).
- Stale-if-error: when refreshing fails, the last good set keeps serving for the server's
  ``stale-if-error`` (RFC 5861 §4), at most ``stale_if_error`` (the SDK's cap, and its value when
  the server sends none): a key revoked while we cannot reach the issuer must not verify for longer
  than either side allows. Failed attempts back off exponentially.
- Unknown kid: at most one refetch per ``unknown_kid_cooldown`` (and none while backing off), so a
  flood of forged kids costs the issuer almost nothing.
- Events: a revoked kid is dropped at once and remembered, so a stale copy of the set (an old CDN
  object) cannot bring it back; a new kid is prefetched. While the event stream is connected the set
  stays fresh for at least ``subscribed_ttl``: changes arrive as events, not by polling.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from .errors import RevokedKeyError, TaintedKeyError
from .jws import VerificationKey


@dataclass(frozen=True, slots=True)
class CacheSettings:
    min_ttl: float = 1.0
    max_ttl: float = 3600.0
    default_ttl: float = 300.0  # when the server sends no max-age
    ahead: float = 0.1  # refresh in the background during the last 10% of the lifetime
    stale_if_error: float = 3600.0  # serve the last good set at most this long past expiry when refreshing fails
    unknown_kid_cooldown: float = 2.0
    backoff_min: float = 1.0
    backoff_max: float = 60.0
    subscribed_ttl: float = 300.0
    revoked_memory: float = 86400.0


def parse_cache_control(value: str | None) -> tuple[float | None, float | None, bool]:
    """(max-age, stale-if-error, no-store or no-cache) from a Cache-Control header.

    ``s-maxage`` is read by shared caches only (RFC 9111 §5.2.2.10): a verifier is a private cache, so
    it neither overrides nor stands in for ``max-age``."""
    max_age: float | None = None
    stale: float | None = None
    no_store = False
    for part in (value or "").split(","):
        name, _, arg = part.strip().partition("=")
        name = name.strip().lower()
        arg = arg.strip().strip('"')
        if name in ("no-store", "no-cache"):
            no_store = True
        elif name in ("max-age", "stale-if-error") and arg.isdigit() and len(arg) <= 12:
            if name == "stale-if-error":
                stale = float(arg)
            else:
                max_age = float(arg)
    return max_age, stale, no_store


class Refresh(Enum):
    NO = "no"
    BACKGROUND = "background"  # serve what we have; refresh beside
    BLOCKING = "blocking"  # refresh before answering


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the cache says about a kid right now."""

    key: VerificationKey | None
    refetch: bool  # the kid is unknown and a refetch is allowed now


class KeyCache:
    def __init__(self, settings: CacheSettings | None = None, *, rng: random.Random | None = None) -> None:
        self.settings = settings or CacheSettings()
        self.keys: Mapping[str, VerificationKey] = {}
        self.skipped: Mapping[str, str] = {}
        self.etag: str | None = None
        self.loaded = False
        self.generation = 0  # grows with every answer from the server (200 or 304)
        self.fetched_at = float("-inf")
        self.ttl = 0.0
        self.stale_for = 0.0
        self.failures = 0
        self.retry_at = float("-inf")
        self.last_attempt = float("-inf")
        self.last_error = ""
        self.revoked: dict[str, float] = {}
        self.tainted: dict[str, float] = {}  # kids the issuer marked suspect (events): still valid keys
        self.reject_tainted = False  # a verifier's choice: refuse them as if revoked
        self.subscribed = False
        self.refresh_at = float("-inf")  # the hot path's one comparison: below it, nothing to do
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not a secret

    # ----- freshness -------------------------------------------------------------------------

    @property
    def lifetime(self) -> float:
        return max(self.ttl, self.settings.subscribed_ttl) if self.subscribed else self.ttl

    @property
    def expires_at(self) -> float:
        return self.fetched_at + self.lifetime

    def _recompute(self) -> None:
        self.refresh_at = self.expires_at - self.lifetime * self.settings.ahead if self.loaded else float("-inf")

    def usable(self, now: float) -> bool:
        return self.loaded and now < self.expires_at + self.stale_for

    def decide(self, now: float) -> Refresh:
        if now < self.refresh_at:
            return Refresh.NO
        if now < self.retry_at:  # backing off after a failure: serve what we have (if anything)
            return Refresh.NO
        if self.loaded and now < self.expires_at:
            return Refresh.BACKGROUND
        return Refresh.BLOCKING

    def lookup(self, kid: str, now: float) -> Verdict:
        key = self.keys.get(kid)
        if key is not None:
            return Verdict(key, False)
        if kid in self.revoked:
            raise RevokedKeyError(f"key {kid} was revoked by the issuer")
        if self.reject_tainted and kid in self.tainted:
            raise TaintedKeyError(f"key {kid} was marked suspect by the issuer; this verifier refuses it")
        refetch = now - self.last_attempt >= self.settings.unknown_kid_cooldown and now >= self.retry_at
        return Verdict(None, refetch)

    # ----- outcomes of a fetch ---------------------------------------------------------------

    def attempt(self, now: float) -> None:
        self.last_attempt = now

    def not_modified(self, now: float, cache_control: str | None) -> None:
        self._fresh(now, cache_control)

    def replace(
        self,
        now: float,
        keys: Mapping[str, VerificationKey],
        skipped: Mapping[str, str],
        etag: str | None,
        cache_control: str | None,
    ) -> None:
        self._forget_revoked(now)
        self.keys = {kid: key for kid, key in keys.items() if kid not in self.revoked and not self._refuses(kid)}
        self.skipped = skipped
        self.etag = etag
        self.loaded = True
        self._fresh(now, cache_control)

    def pin(self, now: float, keys: Mapping[str, VerificationKey], skipped: Mapping[str, str]) -> None:
        """A fixed key set (given, never fetched): fresh for ever."""
        self.replace(now, keys, skipped, None, None)
        self.fetched_at = self.refresh_at = float("inf")

    def _fresh(self, now: float, cache_control: str | None) -> None:
        s = self.settings
        max_age, stale, no_store = parse_cache_control(cache_control)
        if no_store:
            ttl = s.min_ttl
        elif max_age is None:
            ttl = s.default_ttl
        else:
            ttl = max(s.min_ttl, min(s.max_ttl, max_age))
        self.ttl = ttl
        # The server's value is an upper bound too (it knows when a stale copy would miss a key).
        self.stale_for = s.stale_if_error if stale is None else min(stale, s.stale_if_error)
        self.fetched_at = now
        self.failures = 0
        self.retry_at = float("-inf")
        self.last_error = ""
        self.generation += 1
        self._recompute()

    def failed(self, now: float, error: str, retry_after: float | None = None) -> None:
        """A refresh failed: keep the set, back off (exponential with jitter, or the server's Retry-After)."""
        self.failures += 1
        s = self.settings
        delay = min(s.backoff_max, s.backoff_min * 2 ** min(self.failures - 1, 16))
        delay *= 0.5 + self._rng.random() / 2
        if retry_after is not None:
            delay = min(s.backoff_max, max(delay, retry_after))
        self.retry_at = now + delay
        self.last_error = error
        self.generation += 1

    # ----- events ----------------------------------------------------------------------------

    def revoke(self, kid: str, now: float) -> None:
        self.revoked[kid] = now
        if kid in self.keys:
            self.keys = {k: v for k, v in self.keys.items() if k != kid}

    def taint(self, kid: str, now: float) -> None:
        self.tainted[kid] = now
        if self._refuses(kid):
            self.drop(kid)

    def _refuses(self, kid: str) -> bool:
        return self.reject_tainted and kid in self.tainted

    def drop(self, kid: str) -> None:
        if kid in self.keys:
            self.keys = {k: v for k, v in self.keys.items() if k != kid}

    def set_subscribed(self, subscribed: bool) -> None:
        self.subscribed = subscribed
        self._recompute()

    def _forget_revoked(self, now: float) -> None:
        horizon = now - self.settings.revoked_memory
        for memory in (self.revoked, self.tainted):
            for kid in [k for k, at in memory.items() if at < horizon]:
                del memory[kid]
