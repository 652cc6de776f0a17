"""The status page (`GET /status`, API.md §6): HTML made from the keysets' plans (plan.py) and their key
events (events.py). Public information only: kids, states, times, adoption shares; never a fetcher.

Complete without JavaScript: every keyset is rendered here, its keys on an SVG timeline and in a
table, times in RFC 3339 and relative to the moment of rendering. The script (status_assets.JS) keeps
it current. No external asset, no inline `style` attribute (the Content-Security-Policy allows none):
the SVG uses presentation attributes and classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape

from ..clock import rfc3339
from ..events import KeyEvent
from ..model import KeysetPolicy, KeyState
from ..plan import KeyPlan, KeysetPlan, Moment, relative, span
from .status_assets import CSS, JS

MAX_EVENTS = 8  # latest key events shown per keyset
MAX_ROWS = 8  # keys on a timeline
_ROW, _TOP, _AXIS, _LEFT, _RIGHT, _WIDTH = 30, 30, 26, 200, 14, 1000
_TICKS = (1, 5, 10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400, 30 * 86400)
_PHRASE = {"rotated": "now signs", "created": "published", "tainted": "marked suspect", "revoked": "revoked"}


@dataclass(frozen=True, slots=True)
class KeysetStatus:
    """One keyset as the page shows it: its plan (None: no keys yet), whether its adoption is known,
    whether a due rotation waits for adoption, and its latest events."""

    policy: KeysetPolicy
    plan: KeysetPlan | None
    adoption_known: bool
    waiting: str = ""  # why a due rotation waits (the gate's description), "" when it does not
    events: Sequence[KeyEvent] = field(default_factory=tuple)


def _when(moment: Moment | None, now: float) -> str:
    if moment is None:
        return '<td class="when muted">—</td>'
    stamp = rfc3339(moment.at)
    planned = " planned" if moment.planned else ""
    note = "planned" if moment.planned else ""
    # Planned but past: it has not happened yet (a held rotation, a retirement the scheduler has not reached).
    past_due = moment.planned and moment.at <= now
    due = ' data-due=""' if past_due else ""
    rel = ("due " if past_due else "") + relative(moment.at, now)
    return (
        f'<td class="when{planned}" title="{note}"><time datetime="{stamp}">{_short(moment.at)}</time>'
        f'<span class="rel" data-at="{moment.at:.0f}"{due}>{rel}</span></td>'
    )


def _short(at: float) -> str:
    return rfc3339(at)


def _state(key: KeyPlan) -> str:
    return "tainted" if key.tainted and key.state in (KeyState.CURRENT, KeyState.PREVIOUS) else key.state.value


def _badges(key: KeyPlan) -> str:
    out = f'<span class="badge {key.state.value}">{key.state.value}</span>'
    if key.tainted:
        out += ' <span class="badge tainted">tainted</span>'
    return out


def _share(key: KeyPlan, status: KeysetStatus) -> str:
    if key.state not in (KeyState.NEXT, KeyState.CURRENT, KeyState.PREVIOUS):
        return '<td class="share muted">—</td>'
    if status.plan is not None and not status.plan.published:
        return '<td class="share muted" title="HMAC keys are never published">—</td>'
    if not status.adoption_known or status.plan is None:
        return '<td class="share muted" title="adoption records are not available">unknown</td>'
    fetchers = status.plan.fetchers or 0
    if key.share is None:
        return '<td class="share muted">no fetcher yet</td>'
    width = round(80 * key.share)
    bar = (
        '<svg width="80" height="8" viewBox="0 0 80 8" aria-hidden="true"><rect class="track" width="80" height="8"'
        f' rx="4"/><rect class="fill" width="{width}" height="8" rx="4"/></svg>'
    )
    held = f"held by {round(key.share * fetchers)} of {fetchers} fetchers"
    return f'<td class="share" title="{held}">{bar}{key.share:.0%}</td>'


def _key_rows(status: KeysetStatus, now: float) -> str:
    assert status.plan is not None
    rows = []
    for key in status.plan.keys:
        rows.append(
            f'<tr class="key {_state(key)}" data-kid="{escape(key.kid)}" data-state="{key.state.value}">'
            f"<td>{_badges(key)}</td><td class='kid'><code>{escape(key.kid)}</code></td>{_share(key, status)}"
            f"{_when(key.published, now)}{_when(key.signing, now)}{_when(key.stop_signing, now)}"
            f"{_when(key.retire or (Moment(key.revoked_at, False) if key.revoked_at else None), now)}</tr>"
        )
    return (
        '<div class="scroll"><table class="keys"><thead><tr><th>State</th><th>Kid</th><th>Held by</th>'
        "<th>Published</th><th>Signs from</th><th>Stops signing</th><th>Stops verifying</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


class _Axis:
    """Time to x on the timeline."""

    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end

    def x(self, at: float) -> float:
        span = _WIDTH - _LEFT - _RIGHT
        return _LEFT + span * (min(max(at, self.start), self.end) - self.start) / (self.end - self.start)

    def ticks(self) -> list[tuple[float, str]]:
        span = self.end - self.start
        step = next((s for s in _TICKS if span / s <= 8), _TICKS[-1])
        fmt = "%b %d" if step >= 86400 else "%H:%M" if step >= 60 else "%H:%M:%S"
        first = math.ceil(self.start / step) * step
        return [
            (t, datetime.fromtimestamp(t, UTC).strftime(fmt)) for t in range(int(first), int(self.end) + 1, int(step))
        ]


def _window(plan: KeysetPlan, now: float) -> tuple[float, float]:
    """From half a rotation period back to past the next rotation (at least 1.25 periods ahead)."""
    period = max(plan.policy.rotation_period, 60)
    start, end = now - period / 2, now + 1.25 * period
    if plan.rotations:
        first = max(plan.rotations[0].at, now)
        end = max(end, first + (first - start) * 0.15)
    return start, end


def _segments(key: KeyPlan, end: float, now: float) -> list[tuple[str, float, float]]:
    """(kind, from, to) of a key's life: waiting (published, not signing), signing, verifying. A
    planned moment already past has not happened yet: it is drawn from now on."""

    def at(moment: Moment | None) -> float | None:
        return None if moment is None else max(moment.at, now) if moment.planned else moment.at

    retire = at(key.retire)
    stop_verify = retire if retire is not None else key.revoked_at if key.revoked_at is not None else end
    sign_from, sign_to = at(key.signing), at(key.stop_signing)
    if sign_from is None:
        return [("waiting", key.created_at, stop_verify)]
    if key.revoked_at is not None and sign_to is None:
        sign_to = key.revoked_at
    out = [("waiting", key.created_at, sign_from), ("signing", sign_from, sign_to if sign_to is not None else end)]
    if sign_to is not None:
        out.append(("verifying", sign_to, stop_verify))
    return out


def _visible(key: KeyPlan, start: float) -> bool:
    if key.state in (KeyState.NEXT, KeyState.CURRENT, KeyState.PREVIOUS):
        return True
    ended = key.retire.at if key.retire else key.revoked_at
    return ended is not None and ended >= start


def _timeline(status: KeysetStatus, now: float) -> str:
    plan = status.plan
    assert plan is not None
    start, end = _window(plan, now)
    axis = _Axis(start, end)
    keys = [k for k in plan.keys if _visible(k, start)][:MAX_ROWS]
    height = _TOP + _ROW * max(len(keys), 1) + _AXIS
    bottom = height - _AXIS
    parts = [
        f'<svg class="tl" viewBox="0 0 {_WIDTH} {height}" role="img" aria-label="timeline of the keys of '
        f'{escape(plan.keyset)}">'
    ]
    for at, label in axis.ticks():
        x = axis.x(at)
        parts.append(f'<line class="gridline" x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP - 6}" y2="{bottom}"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle">{label}</text>')
    for i, key in enumerate(keys):
        y = _TOP + i * _ROW
        state = _state(key)
        parts.append(f'<g class="row {state}" data-kid="{escape(key.kid)}">')
        if i % 2 == 0:
            parts.append(f'<rect class="band" x="0" y="{y}" width="{_WIDTH}" height="{_ROW}"/>')
        label = key.kid if len(key.kid) <= 16 else key.kid[:15] + "…"
        parts.append(f'<text x="8" y="{y + 19}">{state}</text>')
        parts.append(f'<text class="kid" x="74" y="{y + 19}">{escape(label)}<title>{escape(key.kid)}</title></text>')
        for kind, t0, t1 in _segments(key, end, now):
            for planned, a, b in ((False, t0, min(t1, now)), (True, max(t0, now), t1)):
                if b <= a or b < start or a > end:
                    continue
                x0, x1 = axis.x(a), axis.x(b)
                cls = f"seg {kind}{' planned' if planned else ''}"
                tip = f"{kind}{' (planned)' if planned else ''}: {rfc3339(a)} to {rfc3339(b)}"
                parts.append(
                    f'<rect class="{cls}" x="{x0:.1f}" y="{y + 8}" width="{max(x1 - x0, 3):.1f}" height="14"'
                    f' rx="4"><title>{tip}</title></rect>'
                )
        if key.revoked_at is not None and start <= key.revoked_at <= end:
            x = axis.x(key.revoked_at)
            parts.append(f'<line class="mark-revoked" x1="{x:.1f}" x2="{x:.1f}" y1="{y + 4}" y2="{y + 26}"/>')
        if key.tainted_at is not None and start <= key.tainted_at <= end:
            x = axis.x(key.tainted_at)
            parts.append(
                f'<path class="mark-tainted" d="M{x:.1f} {y + 2}l6 8h-12z"><title>tainted {rfc3339(key.tainted_at)}'
                "</title></path>"
            )
        parts.append("</g>")
    for n, rotation in enumerate(plan.rotations):
        at = max(rotation.at, now)
        if at > end:
            continue
        x = axis.x(at)
        later = " later" if n else ""
        parts.append(f'<line class="rot{later}" x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP - 12}" y2="{bottom}"/>')
        if n == 0:
            text = "rotation waiting" if rotation.waiting else "next rotation"
            anchor = "end" if x > _WIDTH - 120 else "start"
            dx = -6 if anchor == "end" else 6
            parts.append(
                f'<text class="rot-label" x="{x + dx:.1f}" y="{_TOP - 14}" text-anchor="{anchor}">{text}</text>'
            )
    x = axis.x(now)
    parts.append(f'<line class="now" x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP - 12}" y2="{bottom}"/>')
    parts.append(f'<text class="now-label" x="{x - 6:.1f}" y="{_TOP - 14}" text-anchor="end">now</text>')
    parts.append("</svg>")
    legend = (
        '<figcaption><span><i class="k-waiting"></i>published, not signing</span>'
        '<span><i class="k-signing"></i>signing</span><span><i class="k-verifying"></i>verifying only</span>'
        '<span><i class="k-tainted"></i>tainted</span><span><i class="k-planned"></i>planned</span>'
        '<span><i class="k-rot"></i>scheduled rotation</span></figcaption>'
    )
    return f'<figure class="timeline">{"".join(parts)}{legend}</figure>'


def _events(status: KeysetStatus, now: float) -> str:
    published = status.plan is not None and status.plan.published
    if not status.events:
        return '<h3>Latest key events</h3><p class="muted">none yet</p>'
    items = []
    for event in status.events[:MAX_EVENTS]:
        phrase = _PHRASE.get(event.type, event.type)
        if event.type == "created" and not published:
            phrase = "created (HMAC: never published)"
        items.append(
            f'<li data-event="{escape(event.id)}"><span class="rel" data-at="{event.at:.0f}"'
            f' title="{rfc3339(event.at)}">{relative(event.at, now)}</span><span class="ev {event.type}">'
            f"{event.type}</span><span><code>{escape(event.kid)}</code> {phrase}</span></li>"
        )
    return f'<h3>Latest key events</h3><ol class="events">{"".join(items)}</ol>'


def _facts(status: KeysetStatus, now: float) -> str:
    plan = status.plan
    assert plan is not None
    current = next((k for k in plan.keys if k.state == KeyState.CURRENT), None)
    facts = [
        f'<div><b>Current key</b><code class="current-kid">{escape(current.kid) if current else "none"}</code></div>'
    ]
    if plan.rotations:
        first = plan.rotations[0]
        when = (
            f'<time datetime="{rfc3339(first.at)}">{_short(first.at)}</time> '
            f'(<span class="rel" data-at="{first.at:.0f}">{relative(first.at, now)}</span>)'
        )
        if first.at <= now:
            when = f"due since {when}"
        facts.append(f'<div><b>Next rotation</b><span class="next-rotation">{when}</span></div>')
    if status.waiting:
        facts.append(f'<div><b>Waiting</b><span class="waiting-note">{escape(status.waiting)}</span></div>')
    p = plan.policy
    facts.append(
        f"<div><b>Schedule</b>every {span(p.rotation_period)}, published {span(p.prepublish)} before"
        f" signing, tokens {span(p.token_ttl)}</div>"
    )
    if status.adoption_known and plan.fetchers is not None:
        facts.append(f"<div><b>Fetchers</b>{plan.fetchers} in the adoption window</div>")
    return f'<div class="ks-facts">{"".join(facts)}</div>'


def _keyset(status: KeysetStatus, now: float) -> str:
    policy = status.policy
    name = escape(policy.name)
    head = (
        f'<div class="ks-head"><h2>{name}</h2><span class="chip">{escape(policy.alg)}</span>'
        f'<span class="chip">{escape(policy.backend)}</span></div>'
    )
    if status.plan is None:
        empty = '<p class="muted">no keys yet</p>'
        return f'<section class="keyset" id="keyset-{name}" data-keyset="{name}">{head}{empty}</section>'
    current = next((k.kid for k in status.plan.keys if k.state == KeyState.CURRENT), "")
    body = _facts(status, now) + _timeline(status, now) + _key_rows(status, now) + _events(status, now)
    return (
        f'<section class="keyset" id="keyset-{name}" data-keyset="{name}" data-current="{escape(current)}">'
        f"{head}{body}</section>"
    )


def render(issuer: str, keysets: Sequence[KeysetStatus], now: float) -> str:
    """The whole page."""
    sections = "".join(_keyset(status, now) for status in keysets)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<link rel="icon" href="data:,"><title>Signing keys · jwks-service</title>'
        f"<style>{CSS}</style></head><body>"
        f'<header class="top"><h1>Signing keys <span>{escape(issuer)}</span></h1>'
        '<div class="meta"><span id="live" class="pill" data-events="keys/events">static</span> '
        f'<span id="generated">rendered <time datetime="{rfc3339(now)}">{_short(now)}</time></span></div></header>'
        '<main><noscript><p class="muted">Without JavaScript this page does not update: reload it for the latest.'
        '</p></noscript><ol id="feed" aria-live="polite"></ol>'
        f'<div id="keysets">{sections}</div></main>'
        "<footer>Public key information only (kids, states, times, adoption shares). Machine-readable: "
        '<a href="keys/status">keys/status</a>, <a href=".well-known/jwks.json">JWKS</a>, '
        '<a href="keys/events">key events</a>.</footer>'
        f"<script>{JS}</script></body></html>"
    )
