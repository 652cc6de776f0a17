"""Who holds which key (API.md §6): adoption shares and the promotion gate, as pure functions.

A *fetcher* is one JWKS client (the ``JWKS-Verifier`` header, else source address + User-Agent).
The store keeps, per fetcher, the newest JWKS revision (its ETag) that fetcher is known to hold and
when it last fetched; and, per revision, the kids that revision contained. A fetcher *holds* a kid
when its revision contained it. A revision the store no longer knows holds nothing (the safe side:
its fetcher counts as a laggard until it fetches again).

Nothing here does I/O; time comes in as `now`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .clock import rfc3339
from .model import Keyset, KeysetPolicy, KeyState

MAX_LAGGARDS = 100
MAX_FETCHER_LENGTH = 200
_SANE = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,199}")


@dataclass(frozen=True, slots=True)
class Fetch:
    """One fetcher's newest known revision (the JWKS ETag, quoted as served) and its last fetch."""

    fetcher: str
    revision: str
    last_fetch: float


@dataclass(frozen=True, slots=True)
class KeyAdoption:
    kid: str
    state: str
    holding: int
    share: float | None  # holding / fetchers; None when no fetcher is in the window


@dataclass(frozen=True, slots=True)
class Adoption:
    """A keyset's adoption over the window: how many fetchers, and per published kid how many hold it."""

    keyset: str
    window: int
    fetchers: int
    keys: tuple[KeyAdoption, ...]
    laggards: tuple[Fetch, ...]  # fetchers that do not hold `next` (oldest fetch first, at most MAX_LAGGARDS)
    laggard_count: int = 0  # all of them, beyond MAX_LAGGARDS too

    def share(self, kid: str) -> float | None:
        for key in self.keys:
            if key.kid == kid:
                return key.share
        return None

    def as_dict(self) -> dict[str, object]:
        return {
            "keyset": self.keyset,
            "window": self.window,
            "fetchers": self.fetchers,
            "keys": [{"kid": k.kid, "state": k.state, "holding": k.holding, "share": k.share} for k in self.keys],
            "laggards": [
                {"fetcher": f.fetcher, "revision": f.revision, "last_fetch": rfc3339(f.last_fetch)}
                for f in self.laggards
            ],
            "laggard_count": self.laggard_count,
        }


def fetcher_identity(verifier_header: str | None, source: str, user_agent: str | None) -> str:
    """The fetcher's name: the ``JWKS-Verifier`` header when it is printable ASCII of sane length,
    else ``<source address> <User-Agent>`` (the User-Agent cut to a bounded, printable prefix)."""
    if verifier_header and _SANE.fullmatch(verifier_header):
        return verifier_header
    agent = "".join(c for c in (user_agent or "")[:120] if " " <= c <= "~")
    return f"{source} {agent}".strip()[:MAX_FETCHER_LENGTH]


PUBLISHED_STATES = (KeyState.NEXT, KeyState.CURRENT, KeyState.PREVIOUS)


def adoption(
    keyset: Keyset,
    fetches: Iterable[Fetch],
    revisions: Mapping[str, frozenset[str]],
    *,
    now: float,
    window: int,
) -> Adoption:
    """The keyset's adoption among fetchers seen within `window` before `now`."""
    live = sorted((f for f in fetches if f.last_fetch >= now - window), key=lambda f: (f.last_fetch, f.fetcher))
    total = len(live)
    empty: frozenset[str] = frozenset()
    holds = [revisions.get(f.revision, empty) for f in live]
    keys = []
    for key in keyset.keys:
        if key.state not in PUBLISHED_STATES or key.public_jwk is None:
            continue
        holding = sum(1 for kids in holds if key.kid in kids)
        keys.append(KeyAdoption(key.kid, key.state.value, holding, holding / total if total else None))
    nxt = keyset.next
    laggards: list[Fetch] = []
    if nxt is not None and nxt.public_jwk is not None:
        laggards = [f for f, kids in zip(live, holds, strict=True) if nxt.kid not in kids]
    return Adoption(keyset.name, window, total, tuple(keys), tuple(laggards[:MAX_LAGGARDS]), len(laggards))


@dataclass(frozen=True, slots=True)
class Gate:
    """Whether a scheduled rotation due at `due_at` may promote `next` now, and why (or why not)."""

    keyset: str
    open: bool
    reason: str  # "off", "not published", "no next key", "no fetchers", "adopted", "waiting", "timed out"
    required: float
    share: float | None
    fetchers: int
    due_at: float | None
    deadline: float | None  # due_at + adoption_max_wait: past it, promotion goes ahead anyway

    @property
    def waiting(self) -> bool:
        return not self.open

    @property
    def timed_out(self) -> bool:
        return self.reason == "timed out"

    def describe(self) -> str:
        share = "n/a" if self.share is None else f"{self.share:.0%}"
        if self.reason == "waiting":
            return (
                f"waiting for adoption of next: {share} of {self.fetchers} fetchers hold it, {self.required:.0%} needed"
            )
        if self.reason == "timed out":
            return f"adoption gate timed out: {share} of {self.fetchers} fetchers held next; promoted anyway"
        return {
            "off": "adoption gate off",
            "not published": "keys of this keyset are not published (HMAC): no gate",
            "no next key": "no next key to wait for",
            "no fetchers": "no fetcher in the window: nothing to wait for",
            "adopted": f"{share} of {self.fetchers} fetchers hold next (≥ {self.required:.0%})",
        }.get(self.reason, self.reason)

    def as_dict(self) -> dict[str, object]:
        return {
            "open": self.open,
            "reason": self.reason,
            "description": self.describe(),
            "required": self.required,
            "share": self.share,
            "fetchers": self.fetchers,
            "due_at": rfc3339(self.due_at),
            "deadline": rfc3339(self.deadline),
        }


def gate(policy: KeysetPolicy, keyset: Keyset, adopted: Adoption, *, due_at: float | None, now: float) -> Gate:
    """The promotion gate of API.md §6 for a scheduled rotation due at `due_at` (a forced rotation
    ignores it). Open when the gate is off, the keyset is not published (HMAC), there is no `next`,
    no fetcher is in the window, enough fetchers hold `next`, or `adoption_max_wait` has passed."""
    required = policy.adoption_gate
    nxt = keyset.next
    share = None if nxt is None else adopted.share(nxt.kid)
    deadline = None if due_at is None else due_at + policy.adoption_max_wait

    def result(is_open: bool, reason: str) -> Gate:
        return Gate(keyset.name, is_open, reason, required, share, adopted.fetchers, due_at, deadline)

    if required <= 0:
        return result(True, "off")
    if nxt is None:
        return result(True, "no next key")
    if nxt.public_jwk is None:
        return result(True, "not published")
    if adopted.fetchers == 0:
        return result(True, "no fetchers")
    if share is not None and share >= required:
        return result(True, "adopted")
    if deadline is not None and now >= deadline:
        return result(True, "timed out")
    return result(False, "waiting")


def kids_of(revisions: Mapping[str, Sequence[str]]) -> dict[str, frozenset[str]]:
    """Stored revision records (ETag -> kids) as the sets `adoption` reads."""
    return {etag: frozenset(kids) for etag, kids in revisions.items()}
