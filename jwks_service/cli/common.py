"""What every command of the CLI shares: the configuration and runtime it opens, who it audits as,
and how it lays out text for people."""

from __future__ import annotations

import argparse
import getpass
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from .. import logs
from ..config import Settings, load_settings
from ..errors import NotFoundError
from ..kek import LoadedKek
from ..runtime import Runtime, build_runtime


def human(seconds: float) -> str:
    """A duration for people: its two largest units, e.g. 12d 3h, 5h, 20m 5s, 0s."""
    s = int(abs(seconds))
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for (unit, size), (small, small_size) in itertools.pairwise(units):
        if s >= size:
            rest = (s % size) // small_size
            return f"{s // size}{unit}" + (f" {rest}{small}" if rest else "")
    return f"{s}s"


def stderr(line: str) -> None:
    print(line, file=sys.stderr)


def progress(line: str) -> None:
    stderr(f"  {line}")


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def actor() -> str:
    """Who a CLI action is audited as: the OS user (API.md §8)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no LOGNAME/USER and no password database entry: the uid
        return f"cli:{os.getuid()}"


def settings_of(args: argparse.Namespace, *, serving: bool = False) -> Settings:
    """The settings, and this process's logging set up as their `[log]` says (from the first line:
    what loading them logged is written once the format is known). A command other than `serve`
    logs warnings and errors only, whatever `[log] level` says: its answer is what it prints (its
    actions are in the audit log), not a stream of info lines on stderr."""
    with logs.held():
        settings = load_settings(args.config)
        quiet = settings.log.level in ("debug", "info") and not serving
        logs.configure(replace(settings.log, level="warning") if quiet else settings.log)
    return settings


@contextmanager
def runtime(args: argparse.Namespace, *, read_only: bool = False) -> Iterator[Runtime]:
    """The runtime the server would start with (keys created if missing), closed afterwards; with
    `read_only`, what the store holds, creating nothing (no store, no KEK, no key: API.md §8)."""
    rt = build_runtime(settings_of(args), read_only=read_only)
    try:
        if rt.kek.generated:
            stderr(generated_kek(rt.kek))
        yield rt
    finally:
        rt.close()


def generated_kek(kek: LoadedKek) -> str:
    if kek.wrapped_by:
        return (
            f"Generated a new key-encryption key, wrapped by {kek.wrapped_by}, in {kek.path} (mode 0600). Back up"
            " both: without that file and that Transit key the stored private keys cannot be read."
        )
    return (
        f"Generated a new key-encryption key in {kek.path} (mode 0600). Back it up: without it the"
        " stored private keys cannot be read."
    )


class _Document(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


D = TypeVar("D", bound=_Document)


def per_keyset(args: argparse.Namespace, read: Callable[[Runtime, str], D], show: Callable[[D], None]) -> int:
    """A read-only report of one keyset (`args.keyset`) or of each configured keyset: with `--json`,
    the admin API's document (one keyset) or ``{"keysets": [...]}``; else `show` each, a blank line apart."""
    with runtime(args, read_only=True) as rt:
        configured = rt.settings.keysets
        if args.keyset is not None and args.keyset not in configured:
            raise NotFoundError(f"no keyset {args.keyset} (configured: {', '.join(configured)})")
        docs = [read(rt, name) for name in ([args.keyset] if args.keyset is not None else list(configured))]
    if args.json:
        dicts = [d.as_dict() for d in docs]
        print(json.dumps(dicts[0] if args.keyset is not None else {"keysets": dicts}, indent=2))
        return 0
    for i, doc in enumerate(docs):
        if i:
            print()
        show(doc)
    return 0
