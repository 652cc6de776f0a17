"""Key events (`GET /keys/events`): what changed in a keyset, derived from the keyset itself. No I/O.

Every event is read off a key's own timestamps (``created_at``, ``activated_at``, ``tainted_at``,
``revoked_at``, ``retired_at``), which every replica reads from the shared store. So the events are
the same on every replica whichever revisions it happened to observe, an event id names the same event
everywhere, and a client that reconnects to another replica with ``Last-Event-ID`` gets what it
missed by asking for the events after that moment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .clock import rfc3339
from .model import Keyset, KeyVersion

# Order of events that share one instant (an emergency revocation revokes, promotes and creates in
# one write): a verifier should drop the revoked key before it hears about the replacement.
# A tainted current key is demoted in the same write: clients hear of the taint before the promotion.
EVENT_TYPES = ("revoked", "tainted", "retired", "rotated", "created")
_ORDER = {name: i for i, name in enumerate(EVENT_TYPES)}

# Events are replayed from a little before the client's last one: writers' clocks differ, and an
# event stamped slightly earlier may be observed slightly later. Clients drop ids they have seen.
REPLAY_OVERLAP = 5.0
MAX_REPLAY = 1000


@dataclass(frozen=True, slots=True)
class KeyEvent:
    type: str
    kid: str
    keyset: str
    alg: str
    at: float
    revision: int

    @property
    def micros(self) -> int:
        return round(self.at * 1_000_000)

    @property
    def id(self) -> str:
        return f"{self.micros}-{self.type}-{self.kid}"

    def sort_key(self) -> tuple[int, int, str]:
        return (self.micros, _ORDER[self.type], self.kid)

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "kid": self.kid,
            "keyset": self.keyset,
            "alg": self.alg,
            "revision": self.revision,
            "at": rfc3339(self.at, "milliseconds"),
        }


def key_events(keyset: Keyset, key: KeyVersion) -> list[KeyEvent]:
    """Everything that has happened to one key, as events stamped with the keyset's revision."""
    stamps = (
        ("created", key.created_at),
        ("rotated", key.activated_at),
        ("tainted", key.tainted_at),
        ("revoked", key.revoked_at),
        ("retired", key.retired_at),
    )
    return [KeyEvent(kind, key.kid, keyset.name, key.alg, at, keyset.revision) for kind, at in stamps if at is not None]


def keyset_events(keyset: Keyset) -> list[KeyEvent]:
    return [event for key in keyset.keys for event in key_events(keyset, key)]


def diff(old: Keyset | None, new: Keyset) -> list[KeyEvent]:
    """The events in `new` that `old` (an earlier revision of the same keyset) did not have yet."""
    seen = set() if old is None else {e.id for e in keyset_events(old)}
    return sorted((e for e in keyset_events(new) if e.id not in seen), key=KeyEvent.sort_key)


def diff_all(old: Mapping[str, Keyset], new: Mapping[str, Keyset]) -> list[KeyEvent]:
    events: list[KeyEvent] = []
    for name, keyset in new.items():
        before = old.get(name)
        if before is keyset:
            continue
        events.extend(diff(before, keyset))
    return sorted(events, key=KeyEvent.sort_key)


def parse_event_id(value: str) -> int | None:
    """The moment (in microseconds) an event id names; None when it is not one of ours."""
    head = value.split("-", 1)[0]
    if not (head.isascii() and head.isdigit()) or len(head) > 20:  # "²".isdigit(), but int("²") raises
        return None
    return int(head)


def since(keysets: Iterable[Keyset], micros: int, *, limit: int = MAX_REPLAY) -> list[KeyEvent]:
    """Events from `micros` minus the replay overlap on, oldest first, at most `limit` (the newest)."""
    start = micros - round(REPLAY_OVERLAP * 1_000_000)
    events = sorted((e for ks in keysets for e in keyset_events(ks) if e.micros >= start), key=KeyEvent.sort_key)
    return events[-limit:]
