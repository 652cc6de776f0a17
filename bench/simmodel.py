"""The rollover model of bench/simulate.py (which says what it models and why): the issuer, the CDN,
the verifiers' strategies as an event-driven numpy simulation, and the adoption gate over days."""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
