"""`jwks-service keys adoption [KEYSET] [--json]`: who holds which key (API.md §6), read from the store's
records, which every replica writes. With `--json`, the admin API's document (one keyset) or
``{"keysets": [...]}`` (every keyset); without, a table per keyset and its laggards."""

from __future__ import annotations

import argparse

from ..adoption import Adoption
from ..clock import rfc3339
from ..config import format_duration
from .common import per_keyset, print_table


def cmd_keys_adoption(args: argparse.Namespace) -> int:
    return per_keyset(args, lambda rt, name: rt.adoption.adoption(name), _print)


def _share(share: float | None) -> str:
    return "-" if share is None else f"{share:.1%}"


def _print(a: Adoption) -> None:
    plural = "" if a.fetchers == 1 else "s"
    print(f"keyset {a.keyset}: {a.fetchers} fetcher{plural} in the last {format_duration(a.window)}")
    if a.keys:
        print_table(
            [[k.kid, k.state, str(k.holding), _share(k.share)] for k in a.keys], ["KID", "STATE", "HOLDING", "SHARE"]
        )
    else:
        print("no published keys (an HMAC keyset: nothing to fetch)")
    if not a.laggard_count:
        return
    shown = len(a.laggards)
    more = f", the {shown} oldest shown" if shown < a.laggard_count else ""
    print(f"laggards (not holding next: {a.laggard_count}{more}):")
    rows = [[f.fetcher, f.revision, rfc3339(f.last_fetch) or "-"] for f in a.laggards]
    print_table(rows, ["FETCHER", "REVISION", "LAST FETCH"])
