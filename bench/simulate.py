"""Internet scale on paper: 10^5-10^6 simulated verifiers, one origin JWKS, a CDN, a key rollover.

    python bench/simulate.py [--verifiers 1000000] [--sweep-verifiers 100000] [--seed 1] [--quick]
    python -m bench --only simulate

An event-driven model, vectorised with numpy: each verifier sleeps until its next event (its cache
due for a refresh, or the next token whose kid its cached set lacks), and events are handled in
one-second buckets, a numpy batch per bucket. Seeded, so a run is reproducible.

The issuer (API.md §2): key k0 signs; k1 is published at `t_pub`, signs from `t_sign`; k0 stays
published until `t_drop` (scheduled and forced: retire_at = t_sign + verify_window; revoke: at
once). Tokens are presented with an age uniform in [0, token_ttl), so the share signed by k1 rises
linearly from t_sign to t_sign + token_ttl. Each verifier sees tokens as a Poisson stream (rate drawn
per verifier, lognormal around `rate`).

The CDN: `pops` points of presence, each caching the document for its `max-age` and serving a stale
copy for `stale-if-error` past it while the origin fails (RFC 5861 §4); each POP is assumed to have
demand every second (true from a few thousand verifiers per POP), so it refetches when its copy
expires. Origin requests are the POPs' fetches with a CDN, every verifier fetch without.

Verifier strategies, each as its code or documentation says (see STRATEGIES):

- ``sdk``: jwks_service.sdk (jwks_service/keycache.py): Cache-Control max-age clamped to [1 s,
  1 h]; refreshes on the first use in the last 10% of that lifetime; an unknown kid refetches at
  most once per 2 s; on failure serves its set for min(stale-if-error, 1 h) past expiry, backing off
  1 s doubling to 60 s. It ignores a CDN's ``Age`` header, so behind a CDN its copy can be up to
  2 x max-age old (modelled so).
- ``pyjwt``: PyJWT 2.15.1 ``jwt.PyJWKClient`` defaults (jwt/jwks_client.py): cache_jwk_set=True,
  lifespan=300 s whatever Cache-Control says, refetched on the first use after expiry; an unknown
  kid refetches once unless a successful fetch happened within cooldown_duration=30 s; a failed
  fetch fails the token (no stale copy once the 300 s are over).
- ``jose``: panva/jose ``createRemoteJWKSet`` documented defaults of v5 and v6 (RemoteJWKSetOptions):
  cacheMaxAge 600000 ms ("maximum time between successful HTTP requests"), cooldownDuration 30000 ms
  ("no more HTTP requests ... after a previous successful fetch"); an unknown kid reloads unless
  cooling down; Cache-Control is not read; a failed reload fails the token.
- ``once``: fetches the set when it starts and never again.

The adoption gate (API.md §6) is a separate, longer study (`gate_study`): a scheduled rotation
waits until `adoption_gate` of the fetchers seen in the adoption window hold next, at most
`adoption_max_wait`; fetch-once verifiers restart (mean uptime `uptime`) and fetch only then.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent

K0, K1 = 1, 2  # the old and the new signing key, as bits of a cached set
STRATEGIES = ("sdk", "pyjwt", "jose", "once")
SDK, PYJWT, JOSE, ONCE = range(4)
# Cache lifetime, cooldown for an unknown kid, whether a failure serves the stale set.
PYJWT_LIFESPAN = 300.0  # PyJWKClient(lifespan=300)
PYJWT_COOLDOWN = 30.0  # PyJWKClient(cooldown_duration=30): since the last successful fetch
JOSE_MAX_AGE = 600.0  # createRemoteJWKSet cacheMaxAge default, 10 min
JOSE_COOLDOWN = 30.0  # createRemoteJWKSet cooldownDuration default, 30 s
SDK_AHEAD = 0.1  # CacheSettings.ahead
SDK_COOLDOWN = 2.0  # CacheSettings.unknown_kid_cooldown
SDK_STALE_CAP = 3600.0  # CacheSettings.stale_if_error
SDK_BACKOFF = (1.0, 60.0)  # CacheSettings.backoff_min, backoff_max


@dataclass(frozen=True)
class Config:
    scenario: str = "scheduled"  # scheduled | forced | revoke
    verifiers: int = 100_000
    mix: tuple[float, float, float, float] = (0.4, 0.3, 0.2, 0.1)  # sdk, pyjwt, jose, once
    cdn: bool = True
    pops: int = 8
    max_age: float = 300.0  # [jwks] max_age
    leeway: float = 30.0
    prepublish: float = 3600.0
    token_ttl: float = 900.0
    stale_if_error: float | None = None  # None: the service's derived value (config.Settings.stale_if_error)
    next_age: float = 0.0  # forced / revoke: how long the promoted key was published before the emergency
    rate: float = 1.0  # mean tokens/s presented to one verifier
    outage: tuple[float, float] | None = None  # origin unreachable from t_sign + a to t_sign + b
    lead: float = 900.0  # simulated time before the first change
    tail: float = 600.0  # simulated time after the last change
    seed: int = 1

    @property
    def verify_window(self) -> float:  # API.md §1: token_ttl + leeway + jwks.max_age
        return self.token_ttl + self.leeway + self.max_age

    @property
    def sie(self) -> float:
        if self.stale_if_error is not None:
            return self.stale_if_error
        return max(0.0, self.prepublish - self.max_age - self.leeway)

    def times(self) -> tuple[float, float, float, float]:
        """(t_pub, t_sign, t_drop, horizon)."""
        if self.scenario == "scheduled":
            t_pub = self.lead
            t_sign = t_pub + self.prepublish
        else:
            t_sign = self.lead
            t_pub = t_sign - self.next_age
        t_drop = t_sign if self.scenario == "revoke" else t_sign + self.verify_window
        end = max(t_drop, t_sign + self.token_ttl) + self.tail
        if self.outage is not None:
            end = max(end, t_sign + self.outage[1] + self.tail)
        return t_pub, t_sign, t_drop, end


@dataclass
class Result:
    config: Config
    seconds: float  # wall time
    horizon: int
    t_pub: float
    t_sign: float
    t_drop: float
    origin: np.ndarray  # origin requests in each second
    edge: np.ndarray  # verifier requests in each second (to the CDN, or the origin without one)
    unknown: np.ndarray  # unknown-kid refetches in each second
    failed: np.ndarray  # (strategy, second): failed tokens
    tokens: np.ndarray  # (strategy,): tokens per second presented to that strategy's verifiers
    counts: np.ndarray  # (strategy,): verifiers
    failing: np.ndarray  # (strategy,): verifiers with at least one failed token
    failed_tokens: np.ndarray  # (strategy,)
    exposure: dict[str, dict[str, float]] = field(default_factory=dict)  # revoke: how long k0 kept verifying

    def summary(self) -> dict[str, Any]:
        per = {}
        for i, name in enumerate(STRATEGIES):
            if self.counts[i] == 0:
                continue
            per[name] = {
                "verifiers": int(self.counts[i]),
                "failing_share": float(self.failing[i] / self.counts[i]),
                "failed_tokens": float(self.failed_tokens[i]),
                "failed_token_share": float(self.failed_tokens[i] / max(self.tokens[i] * self.horizon, 1e-9)),
            }
        steady = self.origin[: int(self.t_pub) - 1] if self.t_pub > 60 else self.origin[:60]
        return {
            "config": dataclasses.asdict(self.config),
            "wall_seconds": round(self.seconds, 2),
            "horizon_s": self.horizon,
            "t_pub": self.t_pub,
            "t_sign": self.t_sign,
            "t_drop": self.t_drop,
            "origin_peak_rps": float(self.origin.max()),
            "origin_steady_rps": float(steady.mean()) if len(steady) else 0.0,
            "origin_requests": float(self.origin.sum()),
            "edge_peak_rps": float(self.edge.max()),
            "unknown_kid_refetches": float(self.unknown.sum()),
            "unknown_kid_peak_rps": float(self.unknown.max()),
            "strategies": per,
            "revoked_key_exposure_s": self.exposure,
        }


class Issuer:
    """The issuer's side as functions of time: the published set, the token mix, the origin's health."""

    def __init__(self, c: Config) -> None:
        self.t_pub, self.t_sign, self.t_drop, self.end = c.times()
        self.ttl = c.token_ttl
        self.outage = None if c.outage is None else (self.t_sign + c.outage[0], self.t_sign + c.outage[1])
        grid = np.arange(0.0, self.end + 2.0)
        self.grid = grid
        s1 = self.cum_new(grid)
        # Cumulative exposure to tokens whose kid a set lacks: lacking k1, lacking k0, lacking both.
        self.cum = {K1: s1, K0: grid - s1, K0 | K1: grid}

    def published(self, t: np.ndarray) -> np.ndarray:
        both = np.where(t < self.t_drop, K0 | K1, K1)
        return np.where(t < self.t_pub, K0, both).astype(np.int8)

    def share_new(self, t: np.ndarray) -> np.ndarray:
        return np.clip((t - self.t_sign) / self.ttl, 0.0, 1.0)

    def cum_new(self, t: np.ndarray) -> np.ndarray:
        """∫ share_new from 0 to t."""
        x = np.clip(t - self.t_sign, 0.0, None)
        return np.where(x < self.ttl, x * x / (2 * self.ttl), self.ttl / 2 + (x - self.ttl))

    def up(self, t: np.ndarray) -> np.ndarray:
        if self.outage is None:
            return np.ones(t.shape, dtype=bool)
        return (t < self.outage[0]) | (t >= self.outage[1])

    def next_unknown(self, held: np.ndarray, t: np.ndarray, rate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The time of the next token whose kid `held` lacks (inhomogeneous Poisson, by inversion)."""
        out = np.full(t.shape, np.inf)
        lacks = (K0 | K1) & ~held.astype(np.int64)
        for mask, cum in self.cum.items():
            sel = np.flatnonzero(lacks == mask)
            if not len(sel):
                continue
            ts = t[sel]
            target = np.interp(ts, self.grid, cum) + rng.exponential(size=len(sel)) / rate[sel]
            i = np.searchsorted(cum, target, side="right")
            ok = i < len(cum)
            i = np.clip(i, 1, len(cum) - 1)
            lo, hi = cum[i - 1], cum[i]
            frac = np.where(hi > lo, (target - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)
            out[sel] = np.where(ok, np.maximum(self.grid[i - 1] + frac, ts), np.inf)
        return out


class CDN:
    """Each POP's copy: when it was fetched from the origin (NaN: nothing servable), second by second."""

    def __init__(self, c: Config, issuer: Issuer, rng: np.random.Generator) -> None:
        horizon = int(issuer.end) + 2
        pops = c.pops
        fetched = -rng.uniform(0, c.max_age, pops)
        self.copy = np.empty((pops, horizon))
        self.requests = np.zeros(horizon)
        for s in range(horizon):
            due = s >= fetched + c.max_age
            if due.any():
                self.requests[s] += due.sum()
                if issuer.up(np.array([float(s)]))[0]:
                    fetched = np.where(due, float(s), fetched)
            servable = s < fetched + c.max_age + np.where(s >= fetched + c.max_age, c.sie, 0.0)
            self.copy[:, s] = np.where(servable, fetched, np.nan)
        # The next second at which each POP serves something again (for verifiers waiting on an error).
        ok = ~np.isnan(self.copy)
        nxt = np.full((pops, horizon + 1), np.inf)
        for s in range(horizon - 1, -1, -1):
            nxt[:, s] = np.where(ok[:, s], s, nxt[:, s + 1])
        self.next_ok = nxt


class Simulation:
    def __init__(self, c: Config) -> None:
        self.c = c
        self.rng = np.random.default_rng(c.seed)
        self.issuer = Issuer(c)
        self.horizon = int(self.issuer.end) + 1
        self.cdn = CDN(c, self.issuer, self.rng) if c.cdn else None
        n = c.verifiers
        rng = self.rng
        self.strat = rng.choice(4, size=n, p=np.array(c.mix) / sum(c.mix)).astype(np.int8)
        self.rate = c.rate * rng.lognormal(-0.5, 1.0, n)  # mean c.rate
        self.pop = rng.integers(0, c.pops, n)
        self.sdk_ttl = min(max(c.max_age, 1.0), 3600.0)
        self.sdk_stale = min(c.sie, SDK_STALE_CAP)
        self.life = np.array([self.sdk_ttl, PYJWT_LIFESPAN, JOSE_MAX_AGE, np.inf])[self.strat]
        self.held = np.full(n, K0, dtype=np.int8)
        # Steady state at t = 0: each set fetched a uniform fraction of its refresh cycle ago.
        cycle = np.where(self.strat == SDK, (1 - SDK_AHEAD) * self.sdk_ttl, self.life)
        self.got_at = -rng.uniform(0, 1, n) * np.where(np.isfinite(cycle), cycle, 1.0)
        self.last_ok = self.got_at.copy()
        self.last_attempt = self.got_at.copy()
        self.retry_at = np.full(n, -np.inf)
        self.failures = np.zeros(n, dtype=np.int16)
        self.refresh = self._next_refresh(np.arange(n), self.got_at)
        self.refresh = np.maximum(self.refresh, rng.exponential(1.0, n) / self.rate)
        self.unknown_at = np.full(n, np.inf)
        self.first_fail = np.full(n, np.inf)
        self.dropped_k0 = np.full(n, np.inf)
        self.fail_count = np.zeros(n)
        h = self.horizon + 1
        self.origin = self.cdn.requests[:h].copy() if self.cdn else np.zeros(h)
        self.edge = np.zeros(h)
        self.unknown = np.zeros(h)
        self.failed = np.zeros((4, h))
        self.dead_rate = np.zeros((4, h + 1))  # diff array: failing for every k1 token from then on
        self.down_rate = np.zeros((4, h + 1))  # diff array: failing every token (no usable set)

    # ----- helpers ---------------------------------------------------------------------------

    def _token_after(self, ids: np.ndarray, t: np.ndarray) -> np.ndarray:
        return t + self.rng.exponential(1.0, len(ids)) / self.rate[ids]

    def _next_refresh(self, ids: np.ndarray, got_at: np.ndarray) -> np.ndarray:
        s = self.strat[ids]
        due = got_at + np.where(s == SDK, (1 - SDK_AHEAD) * self.sdk_ttl, self.life[ids])
        return np.where(s == ONCE, np.inf, due)

    def _bin(self, t: np.ndarray) -> np.ndarray:
        return np.clip(t.astype(np.int64), 0, self.horizon)

    def _count(self, series: np.ndarray, t: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Add events at times `t` to a per-second series (np.add.at, an order of magnitude faster)."""
        if len(t):
            b = self._bin(t)
            lo = int(b.min())
            series[lo : int(b.max()) + 1] += np.bincount(b - lo, weights=weights)

    def fetch(self, ids: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Verifiers `ids` fetch at `t`: (succeeded, the set they got)."""
        b = self._bin(t)
        self._count(self.edge, t)
        if self.cdn is None:
            self._count(self.origin, t)
            return self.issuer.up(t), self.issuer.published(t)
        copy = self.cdn.copy[self.pop[ids], np.minimum(b, self.cdn.copy.shape[1] - 1)]
        ok = ~np.isnan(copy)
        return ok, self.issuer.published(np.where(ok, copy, 0.0))

    def resumes(self, ids: np.ndarray, t: np.ndarray) -> np.ndarray:
        """When a fetch would next succeed, for verifiers whose fetch failed at `t`."""
        if self.cdn is None:
            assert self.issuer.outage is not None
            return np.maximum(t, self.issuer.outage[1])
        b = np.minimum(self._bin(t), self.cdn.next_ok.shape[1] - 1)
        return np.maximum(t, self.cdn.next_ok[self.pop[ids], b])

    def _fail(self, ids: np.ndarray, t: np.ndarray) -> None:
        for i in np.unique(self.strat[ids]).tolist():
            self._count(self.failed[i], t[self.strat[ids] == i])
        self.first_fail[ids] = np.minimum(self.first_fail[ids], t)
        self.fail_count[ids] += 1

    def _got(self, ids: np.ndarray, t: np.ndarray, got: np.ndarray) -> None:
        lost = (self.held[ids] & K0).astype(bool) & ~(got & K0).astype(bool)
        self.dropped_k0[ids[lost]] = np.minimum(self.dropped_k0[ids[lost]], t[lost])
        self.held[ids] = got
        self.got_at[ids] = t
        self.last_ok[ids] = t
        self.failures[ids] = 0
        self.retry_at[ids] = -np.inf
        self.refresh[ids] = self._next_refresh(ids, t)

    def _fetch_failed(self, ids: np.ndarray, t: np.ndarray) -> None:
        """A failed fetch: the SDK backs off and serves its stale set while allowed; PyJWT and jose
        fail every token until a fetch succeeds (each token tries one)."""
        s = self.strat[ids]
        sdk = s == SDK
        if sdk.any():
            i, ti = ids[sdk], t[sdk]
            self.failures[i] += 1
            lo, hi = SDK_BACKOFF
            delay = np.minimum(hi, lo * 2.0 ** np.minimum(self.failures[i] - 1, 16))
            delay *= 0.5 + self.rng.random(len(i)) / 2
            self.retry_at[i] = ti + delay
            self.refresh[i] = self._token_after(i, ti + delay)
            usable_until = self.got_at[i] + self.sdk_ttl + self.sdk_stale
            gone = ti >= usable_until
            if gone.any():  # no usable set: every token fails until the retry that succeeds
                self._down(i[gone], np.maximum(usable_until[gone], ti[gone]), self.refresh[i[gone]])
        other = ~sdk
        if other.any():
            i, ti = ids[other], t[other]
            back = self._token_after(i, self.resumes(i, ti))
            expired = ti >= self.got_at[i] + self.life[i]
            self.refresh[i] = np.where(expired, back, self.refresh[i])
            if expired.any():
                self._down(i[expired], ti[expired], back[expired])
                # each failing token tried a fetch: the retries land on the CDN (or the origin)
                tries = (back[expired] - ti[expired]) * self.rate[i[expired]]
                target = self.edge if self.cdn else self.origin
                self._count(target, ti[expired], tries)

    def _down(self, ids: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
        end = np.minimum(end, self.horizon)
        keep = end > start
        ids, start, end = ids[keep], start[keep], end[keep]
        s = self.strat[ids]
        np.add.at(self.down_rate, (s, self._bin(start)), self.rate[ids])
        np.add.at(self.down_rate, (s, self._bin(end)), -self.rate[ids])
        self.first_fail[ids] = np.minimum(self.first_fail[ids], start + 1.0 / self.rate[ids])
        self.fail_count[ids] += (end - start) * self.rate[ids]

    # ----- the run ---------------------------------------------------------------------------

    def run(self, progress: Callable[[str], None] | None = None) -> Result:
        started = time.perf_counter()
        n = self.c.verifiers
        ids = np.arange(n)
        self.unknown_at = self.issuer.next_unknown(self.held, np.zeros(n), self.rate, self.rng)
        buckets: dict[int, list[np.ndarray]] = defaultdict(list)
        self._schedule(buckets, ids)
        for second in range(self.horizon):
            # An event may schedule the next one within the same second: drain the bucket.
            while parts := buckets.pop(second, None):
                ids = np.concatenate(parts)
                self._step(ids)
                self._schedule(buckets, ids)
            if progress and second % 1800 == 0:
                progress(f"{self.c.scenario}: {second}/{self.horizon} s simulated")
        return self._result(time.perf_counter() - started)

    def _schedule(self, buckets: dict[int, list[np.ndarray]], ids: np.ndarray) -> None:
        wake = np.minimum(self.refresh[ids], self.unknown_at[ids])
        ok = wake < self.horizon
        ids, sec = ids[ok], wake[ok].astype(np.int64)
        if not len(ids):
            return
        order = np.argsort(sec, kind="stable")
        ids, sec = ids[order], sec[order]
        uniq, starts = np.unique(sec, return_index=True)
        for s, part in zip(uniq.tolist(), np.split(ids, starts[1:]), strict=True):
            buckets[s].append(part)

    def _step(self, ids: np.ndarray) -> None:
        refresh, unk = self.refresh[ids], self.unknown_at[ids]
        is_refresh = refresh <= unk
        r_ids, r_t = ids[is_refresh], refresh[is_refresh]
        if len(r_ids):
            self.last_attempt[r_ids] = r_t
            ok, got = self.fetch(r_ids, r_t)
            if ok.any():
                self._got(r_ids[ok], r_t[ok], got[ok])
            if (~ok).any():
                self._fetch_failed(r_ids[~ok], r_t[~ok])
            self.unknown_at[r_ids] = self.issuer.next_unknown(self.held[r_ids], r_t, self.rate, self.rng)
        u_ids, u_t = ids[~is_refresh], unk[~is_refresh]
        if len(u_ids):
            self._unknown_token(u_ids, u_t)

    def _unknown_token(self, ids: np.ndarray, t: np.ndarray) -> None:
        iss = self.issuer
        held = self.held[ids]
        s1 = iss.share_new(t)
        lacks1 = ~(held & K1).astype(bool)
        lacks0 = ~(held & K0).astype(bool)
        w1 = np.where(lacks1, s1, 0.0)
        w0 = np.where(lacks0, 1 - s1, 0.0)
        new_kid = self.rng.random(len(ids)) * (w1 + w0) < w1
        s = self.strat[ids]
        allowed = np.select(
            [s == SDK, (s == PYJWT) | (s == JOSE)],
            [
                (t - self.last_attempt[ids] >= SDK_COOLDOWN) & (t >= self.retry_at[ids]),
                t - self.last_ok[ids] >= np.where(s == PYJWT, PYJWT_COOLDOWN, JOSE_COOLDOWN),
            ],
            False,
        )
        f_ids, f_t = ids[allowed], t[allowed]
        if len(f_ids):
            self._count(self.unknown, f_t)
            self.last_attempt[f_ids] = f_t
            ok, got = self.fetch(f_ids, f_t)
            if ok.any():
                self._got(f_ids[ok], f_t[ok], got[ok])
            if (~ok).any():
                self._fetch_failed(f_ids[~ok], f_t[~ok])
        kid = np.where(new_kid, K1, K0)
        verified = (self.held[ids] & kid).astype(bool)
        # A k0 token after a revocation is rightly refused; only a k1 token that fails is a failure.
        fails = new_kid & ~verified
        once = fails & (s == ONCE)
        if once.any():  # it never fetches again: every k1 token from now on fails
            o = ids[once]
            self._fail(o, t[once])
            np.add.at(self.dead_rate, (ONCE, self._bin(t[once]) + 1), self.rate[o])
            self.fail_count[o] += self.rate[o] * (
                np.interp(float(self.horizon), iss.grid, iss.cum[K1]) - np.interp(t[once], iss.grid, iss.cum[K1])
            )
            self.unknown_at[o] = np.inf
        rest = fails & ~once
        if rest.any():
            self._fail(ids[rest], t[rest])
        live = ~once
        if live.any():
            self.unknown_at[ids[live]] = iss.next_unknown(self.held[ids[live]], t[live], self.rate, self.rng)

    def _result(self, wall: float) -> Result:
        iss = self.issuer
        h = self.horizon + 1
        mid = np.arange(h) + 0.5
        dead = np.cumsum(self.dead_rate, axis=1)[:, :h] * iss.share_new(mid)
        down = np.cumsum(self.down_rate, axis=1)[:, :h]
        failed = self.failed + dead + down
        counts = np.bincount(self.strat, minlength=4)
        tokens = np.bincount(self.strat, weights=self.rate, minlength=4)
        failing = np.bincount(self.strat[np.isfinite(self.first_fail)], minlength=4)
        failed_tokens = np.bincount(self.strat, weights=self.fail_count, minlength=4)
        exposure: dict[str, dict[str, float]] = {}
        if self.c.scenario == "revoke":
            for i, name in enumerate(STRATEGIES):
                sel = self.strat == i
                if not sel.any():
                    continue
                held_for = self.dropped_k0[sel] - iss.t_sign
                never = ~np.isfinite(held_for)
                # A verifier that never dropped k0 ranks last: percentiles that reach it say "never" (-1).
                ranked = np.where(never, np.inf, held_for)
                p50, p99 = np.quantile(np.nan_to_num(ranked, posinf=1e18), [0.5, 0.99])
                exposure[name] = {
                    "p50": _finite(p50),
                    "p99": _finite(p99),
                    "max": _finite(float(held_for.max())),
                    "never_dropped_share": float(np.mean(never)),
                }
        return Result(
            self.c,
            wall,
            self.horizon,
            iss.t_pub,
            iss.t_sign,
            iss.t_drop,
            self.origin[:h],
            self.edge[:h],
            self.unknown[:h],
            failed,
            tokens,
            counts,
            failing,
            failed_tokens,
            exposure,
        )


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) and x < 1e17 else -1.0  # -1: never (within the simulated time)


def simulate(c: Config, progress: Callable[[str], None] | None = None) -> Result:
    return Simulation(c).run(progress)


# ----- the adoption gate (API.md §6) over days ---------------------------------------------------


@dataclass(frozen=True)
class GateConfig:
    verifiers: int = 100_000
    mix: tuple[float, float, float, float] = (0.4, 0.3, 0.2, 0.1)
    cdn: bool = False
    pops: int = 8
    max_age: float = 300.0
    prepublish: float = 3600.0
    gate: float = 0.95  # keyset adoption_gate; 0: off
    max_wait: float = 7 * 86400.0  # keyset adoption_max_wait
    window: float = 86400.0  # [adoption] window
    max_fetchers: int = 10_000  # [adoption] max_fetchers: the most recent fetchers are kept
    uptime: float = 86400.0  # mean time between restarts of a fetch-once verifier (inf: never)
    step: float = 600.0  # the scheduler's view, evaluated every `step` seconds
    seed: int = 1


def gate_study(g: GateConfig) -> dict[str, Any]:
    """When a scheduled rotation promotes next with the adoption gate, and how many fetch-once
    verifiers then lack it. Semi-analytic: refreshing strategies fetch every cycle at a random phase
    (they hold next one cycle after it is published, all within minutes: see the event simulation);
    fetch-once verifiers fetch only when they restart (exponential uptime)."""
    rng = np.random.default_rng(g.seed)
    n = g.verifiers
    strat = rng.choice(4, size=n, p=np.array(g.mix) / sum(g.mix))
    cycle = np.array([0.9 * g.max_age, PYJWT_LIFESPAN, JOSE_MAX_AGE, np.inf])[strat]
    phase = rng.uniform(0, 1, n) * np.where(np.isfinite(cycle), cycle, 1.0)
    t_pub = 0.0
    due = t_pub + g.prepublish
    end = due + g.max_wait
    once = np.flatnonzero(strat == ONCE)
    # Restarts of the fetch-once verifiers: the last one before t_pub - window, then onwards.
    span = end - (t_pub - g.window)
    k = 1 if not math.isfinite(g.uptime) else int(span / g.uptime * 2 + 20)
    back = rng.exponential(g.uptime, len(once)) if math.isfinite(g.uptime) else np.full(len(once), 1e12)
    first = t_pub - g.window - back
    if math.isfinite(g.uptime):
        starts = first[:, None] + np.concatenate(
            [np.zeros((len(once), 1)), np.cumsum(rng.exponential(g.uptime, (len(once), k)), axis=1)], axis=1
        )
    else:
        starts = first[:, None]

    def last_start(t: float) -> np.ndarray:
        i = (starts <= t).sum(axis=1) - 1
        return starts[np.arange(len(once)), np.maximum(i, 0)]

    def share(t: float) -> tuple[float, int]:
        if g.cdn:  # the origin sees the POPs only, each holding next one max-age after it is published
            return (1.0 if t >= t_pub + g.max_age else 0.0), g.pops
        last = np.where(np.isfinite(cycle), t - np.mod(t - phase, np.where(np.isfinite(cycle), cycle, 1.0)), 0.0)
        last[once] = last_start(t)
        holds = np.where(np.isfinite(cycle), last >= t_pub, False)
        holds[once] = last[once] >= t_pub
        live = np.flatnonzero(last >= t - g.window)
        if len(live) > g.max_fetchers:  # the store keeps the most recent fetchers only
            live = live[np.argpartition(-last[live], g.max_fetchers)[: g.max_fetchers]]
        return (float(holds[live].mean()) if len(live) else 1.0), len(live)

    promoted, reason, series = end, "timed out", []
    t = due
    while t <= end:
        s, fetchers = share(t)
        series.append((t - t_pub, s, fetchers))
        if g.gate <= 0 or s >= g.gate:
            promoted, reason = t, ("off" if g.gate <= 0 else "adopted")
            break
        t += g.step
    lacking = last_start(promoted) < t_pub  # fetch-once verifiers running on a set without next
    return {
        "config": dataclasses.asdict(g),
        "promoted_after_due_s": promoted - due,
        "reason": reason,
        "once_failing_share": float(lacking.mean()) if len(once) else 0.0,
        "all_failing_share": float(lacking.sum() / n),
        "share_series": series[:: max(1, len(series) // 200)],
    }


# ----- the whole study, its report and charts -----------------------------------------------------


def sweep_configs(n: int, seed: int) -> list[tuple[str, Config]]:
    """A scheduled rollover behind the CDN, one setting moved at a time."""
    base = Config(verifiers=n, seed=seed)
    out = [(f"prepublish={p:g}s", dataclasses.replace(base, prepublish=p)) for p in (60.0, 330.0, 3600.0)]
    out += [(f"max_age={m:g}s", dataclasses.replace(base, max_age=m)) for m in (60.0, 900.0)]
    # The origin unreachable for 20 minutes around the promotion, with each stale-if-error.
    for sie in (0.0, 300.0, None):
        label = "derived" if sie is None else f"{sie:g}s"
        out.append(
            (
                f"outage 20 min, stale-if-error={label}",
                dataclasses.replace(base, outage=(-600.0, 600.0), stale_if_error=sie),
            )
        )
    return out


def gate_configs(n: int, seed: int) -> list[tuple[str, GateConfig]]:
    base = GateConfig(verifiers=n, seed=seed)
    every = 10 * n  # max_fetchers large enough to keep every fetcher
    return [
        ("gate off", dataclasses.replace(base, gate=0.0)),
        ("gate 95%, max_fetchers 10,000 (default)", base),
        ("gate 95%, behind the CDN (origin sees POPs)", dataclasses.replace(base, cdn=True)),
        ("gate 95%, every fetcher kept, window 24 h", dataclasses.replace(base, max_fetchers=every)),
        ("gate 95%, every fetcher kept, window 7 d", dataclasses.replace(base, max_fetchers=every, window=7 * 86400.0)),
        (
            "gate 95%, every fetcher kept, fetch-once never restarts",
            dataclasses.replace(base, max_fetchers=every, uptime=math.inf),
        ),
    ]


def study(
    verifiers: int, sweep_verifiers: int, seed: int, progress: Callable[[str], None] = lambda _: None
) -> tuple[dict[str, Any], dict[str, Result]]:
    started = time.perf_counter()
    main: dict[str, Result] = {}
    for scenario in ("scheduled", "forced", "revoke"):
        for cdn in (True, False):
            key = f"{scenario}, {'CDN' if cdn else 'no CDN'}"
            progress(f"{key}: {verifiers:,} verifiers")
            main[key] = simulate(Config(scenario=scenario, verifiers=verifiers, cdn=cdn, seed=seed))
            progress(f"{key}: {main[key].seconds:.1f} s")
    sweep = {}
    for label, c in sweep_configs(sweep_verifiers, seed):
        progress(f"sweep {label}: {sweep_verifiers:,} verifiers")
        sweep[label] = simulate(c).summary()
    gates = {}
    for label, g in gate_configs(verifiers, seed):
        progress(f"adoption gate: {label}")
        gates[label] = gate_study(g)
    now = datetime.datetime.now(datetime.UTC)
    doc = {
        "date": now.strftime("%Y-%m-%d"),
        "time": now.isoformat(timespec="seconds"),
        "host": socket.gethostname().split(".")[0] or "host",
        "verifiers": verifiers,
        "sweep_verifiers": sweep_verifiers,
        "seed": seed,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "runs": {k: r.summary() for k, r in main.items()},
        "sweep": sweep,
        "gate": gates,
    }
    return doc, main


def _pct(x: float) -> str:
    return f"{x:.2%}" if x else "0"


def markdown(doc: dict[str, Any], charts: Sequence[str]) -> str:
    out = [
        f"# Simulation: {doc['verifiers']:,} verifiers, one origin JWKS, a CDN ({doc['date']}, {doc['host']})",
        "",
        f"`python bench/simulate.py --verifiers {doc['verifiers']} --sweep-verifiers {doc['sweep_verifiers']} "
        f"--seed {doc['seed']}`: {doc['wall_seconds']:.0f} s of wall time in all. A model, not a measurement: "
        "bench/simulate.py says what it assumes. Mix: 40% SDK, 30% PyJWT PyJWKClient, 20% jose "
        "createRemoteJWKSet, 10% fetch-once; 8 POPs; max_age 5 min, prepublish 1 h, token_ttl 15 min, "
        "leeway 30 s, 1 token/s per verifier on average.",
        "",
        "## Rollovers",
        "",
        "Failing: share of verifiers with at least one failed token (a valid token refused: unknown kid "
        "or no usable key set). Tokens signed by a revoked key that are refused are not failures.",
        "",
    ]
    head = ["run", "wall s", "origin req/s steady", "origin peak req/s", "edge peak req/s", "unknown-kid refetches"]
    head += [f"failing {s}" for s in STRATEGIES]
    rows = []
    for key, r in doc["runs"].items():
        st = r["strategies"]
        rows.append(
            [
                key,
                f"{r['wall_seconds']:.0f}",
                f"{r['origin_steady_rps']:,.2f}",
                f"{r['origin_peak_rps']:,.0f}",
                f"{r['edge_peak_rps']:,.0f}",
                f"{r['unknown_kid_refetches']:,.0f}",
            ]
            + [_pct(st[s]["failing_share"]) if s in st else "-" for s in STRATEGIES]
        )
    out.append(_table(head, rows))
    exposures = [(k, r["revoked_key_exposure_s"]) for k, r in doc["runs"].items() if r["revoked_key_exposure_s"]]
    if exposures:
        out += [
            "",
            "After a revoke, how long a verifier still accepts the revoked key (s after the revocation; "
            "p50 / p99 / max; -1: never within the run):",
            "",
        ]
        for key, e in exposures:
            cells = ", ".join(f"{s} {v['p50']:.0f} / {v['p99']:.0f} / {v['max']:.0f}" for s, v in e.items())
            out.append(f"- {key}: {cells}")
    out += [
        "",
        f"## One setting at a time (scheduled rollover behind the CDN, {doc['sweep_verifiers']:,} verifiers)",
        "",
    ]
    rows = []
    for label, r in doc["sweep"].items():
        st = r["strategies"]
        rows.append(
            [
                label,
                f"{r['origin_peak_rps']:,.0f}",
                f"{r['origin_steady_rps']:,.2f}",
                f"{r['unknown_kid_refetches']:,.0f}",
            ]
            + [_pct(st[s]["failing_share"]) if s in st else "-" for s in STRATEGIES]
        )
    out.append(
        _table(
            ["setting", "origin peak req/s", "origin steady req/s", "unknown-kid refetches"]
            + [f"failing {s}" for s in STRATEGIES],
            rows,
        )
    )
    out += [
        "",
        "prepublish below max_age + leeway (60 s here) is refused by `check-config`; it is run to show why.",
        "",
        f"## Adoption gate (API.md §6), {doc['verifiers']:,} verifiers, fetch-once restarting every 24 h on average",
        "",
    ]
    rows = [
        [
            label,
            f"{g['promoted_after_due_s'] / 3600:.1f} h",
            g["reason"],
            _pct(g["once_failing_share"]),
            _pct(g["all_failing_share"]),
        ]
        for label, g in doc["gate"].items()
    ]
    out.append(
        _table(["gate", "promotion delayed by", "why it opened", "fetch-once failing", "all verifiers failing"], rows)
    )
    out += [""] + [f"![{Path(c).stem}]({Path(c).name})" for c in charts]
    return "\n".join(out) + "\n"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def charts(main: dict[str, Result], doc: dict[str, Any], stem: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig: Any, name: str) -> None:
        path = stem.with_name(f"{stem.name}-{name}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(str(path))

    scenarios = ("scheduled", "forced", "revoke")
    fig, axes = plt.subplots(len(scenarios), 1, figsize=(10, 9))
    for ax, scenario in zip(axes, scenarios, strict=True):
        for cdn, color in (("CDN", "tab:blue"), ("no CDN", "tab:red")):
            r = main[f"{scenario}, {cdn}"]
            end = r.horizon - 1  # the last second is cut short by the end of the run
            x = (np.arange(end) - r.t_sign) / 60
            ax.plot(x, np.maximum(r.origin[:end], 0.1), color=color, lw=0.8, label=f"origin, {cdn}")
        r = main[f"{scenario}, CDN"]
        ax.plot(x, np.maximum(r.edge[:end], 0.1), color="tab:gray", lw=0.6, alpha=0.7, label="verifiers -> CDN")
        ax.axvline(0, color="k", ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylabel("requests/s")
        ax.set_title(f"{scenario}: JWKS requests per second (new key signs at 0)", fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
    axes[-1].set_xlabel("minutes from the moment the new key signs")
    save(fig, "origin")

    fig, axes = plt.subplots(len(scenarios), 2, figsize=(11, 9), sharey=True)
    for row, scenario in enumerate(scenarios):
        for col, cdn in enumerate(("CDN", "no CDN")):
            ax = axes[row][col]
            r = main[f"{scenario}, {cdn}"]
            x = (np.arange(r.failed.shape[1]) - r.t_sign) / 60
            for i, name in enumerate(STRATEGIES):
                if r.tokens[i] > 0:
                    ax.plot(x, 100 * r.failed[i] / r.tokens[i], lw=0.8, label=name)
            ax.set_title(f"{scenario}, {cdn}", fontsize=9)
            ax.set_ylim(-2, 102)
        axes[row][0].set_ylabel("% of tokens failing")
    axes[0][0].legend(fontsize=7)
    axes[-1][0].set_xlabel("minutes from the moment the new key signs")
    axes[-1][1].set_xlabel("minutes from the moment the new key signs")
    save(fig, "failures")

    fig, ax = plt.subplots(figsize=(10, 4.5))
    labels = list(doc["sweep"])
    width = 0.2
    for i, name in enumerate(STRATEGIES):
        vals = [100 * doc["sweep"][lab]["strategies"].get(name, {}).get("failing_share", 0) for lab in labels]
        ax.bar(np.arange(len(labels)) + i * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(labels)) + 1.5 * width, [lab.replace(", ", "\n") for lab in labels], fontsize=7)
    ax.set_ylabel("% of verifiers failing")
    ax.set_title("Scheduled rollover behind the CDN: one setting at a time")
    ax.legend(fontsize=8)
    save(fig, "sweep")

    fig, ax = plt.subplots(figsize=(9, 4))
    for label, g in doc["gate"].items():
        series = g["share_series"]
        if len(series) > 1:
            ax.plot([p[0] / 3600 for p in series], [100 * p[1] for p in series], label=label)
    ax.axhline(95, color="k", ls=":", lw=0.8)
    ax.set_xlabel("hours since next was published")
    ax.set_ylabel("% of counted fetchers holding next")
    ax.set_title("Adoption gate: what the origin sees while a due rotation waits")
    ax.legend(fontsize=7)
    save(fig, "gate")
    return written


def write(doc: dict[str, Any], main: dict[str, Result], out: Path) -> tuple[Path, Path, list[str]]:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"simulate-{doc['date']}-{doc['verifiers']}"
    json_path = stem.with_suffix(".json")
    json_path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    pngs = charts(main, doc, stem)
    md_path = stem.with_suffix(".md")
    md_path.write_text(markdown(doc, pngs), encoding="utf-8")
    return json_path, md_path, pngs


def run(verifiers: int, sweep_verifiers: int, seed: int, out: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """The whole study, written to `out`; returns the document (for ``python -m bench``)."""
    doc, main = study(verifiers, sweep_verifiers, seed, progress)
    json_path, md_path, pngs = write(doc, main, out)
    progress(f"wrote {json_path}, {md_path} and {len(pngs)} charts")
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/simulate.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--verifiers", type=int, default=1_000_000, help="verifiers of the main runs (default 10^6)")
    p.add_argument("--sweep-verifiers", type=int, default=100_000, help="verifiers of each sweep run (default 10^5)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "results"), help="folder for the results (default bench/results)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 10^4 verifiers, 10^4 in the sweep")
    args = p.parse_args(argv)
    if args.quick:
        args.verifiers = args.sweep_verifiers = 10_000
    doc = run(args.verifiers, args.sweep_verifiers, args.seed, Path(args.out), lambda m: print(m, file=sys.stderr))
    print(json.dumps({k: doc[k] for k in ("verifiers", "wall_seconds")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
