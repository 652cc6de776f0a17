"""The pure adoption core (API.md §6): shares, laggards, fetcher names and the promotion gate."""

from __future__ import annotations

from dataclasses import replace

from jwks_service.adoption import MAX_LAGGARDS, Fetch, Gate, adoption, fetcher_identity, gate
from jwks_service.model import Keyset, KeysetPolicy, KeyState, KeyVersion

NOW = 1_800_000_000.0
JWK = {"kty": "OKP", "crv": "Ed25519", "x": "x"}


def keyset(*, with_next: bool = True, published: bool = True) -> Keyset:
    jwk = JWK if published else None
    keys = [
        KeyVersion("prev", "ks", "EdDSA", KeyState.PREVIOUS, NOW - 9000, jwk, activated_at=NOW - 9000),
        KeyVersion("cur", "ks", "EdDSA", KeyState.CURRENT, NOW - 5000, jwk, activated_at=NOW - 4000),
    ]
    if with_next:
        keys.append(KeyVersion("nxt", "ks", "EdDSA", KeyState.NEXT, NOW - 3600, jwk))
    keys.append(KeyVersion("old", "ks", "EdDSA", KeyState.RETIRED, NOW - 20000, None))
    return Keyset("ks", "EdDSA", "local", 1, tuple(keys))


REVISIONS = {'"a"': frozenset({"prev", "cur"}), '"b"': frozenset({"prev", "cur", "nxt"})}


def test_shares_count_fetchers_in_the_window_by_the_revision_they_hold() -> None:
    fetches = [
        Fetch("svc-1", '"a"', NOW - 100),
        Fetch("svc-2", '"b"', NOW - 50),
        Fetch("svc-3", '"b"', NOW - 10),
        Fetch("gone", '"a"', NOW - 90_000),  # outside the window: not counted
        Fetch("unknown-rev", '"zz"', NOW - 5),  # a revision no longer known holds nothing
    ]
    got = adoption(keyset(), fetches, REVISIONS, now=NOW, window=86400)
    assert got.fetchers == 4
    by_kid = {k.kid: (k.state, k.holding, k.share) for k in got.keys}
    assert by_kid == {"prev": ("previous", 3, 0.75), "cur": ("current", 3, 0.75), "nxt": ("next", 2, 0.5)}
    assert "old" not in by_kid  # retired keys are not published
    assert [f.fetcher for f in got.laggards] == ["svc-1", "unknown-rev"]  # oldest fetch first
    assert got.as_dict()["laggards"][0]["last_fetch"].endswith("Z")


def test_no_fetchers_means_no_share_and_laggards_are_bounded() -> None:
    empty = adoption(keyset(), [], REVISIONS, now=NOW, window=60)
    assert empty.fetchers == 0 and all(k.share is None for k in empty.keys)
    many = [Fetch(f"f{i}", '"a"', NOW - i) for i in range(MAX_LAGGARDS + 20)]
    got = adoption(keyset(), many, REVISIONS, now=NOW, window=86400)
    assert len(got.laggards) == MAX_LAGGARDS and got.laggard_count == MAX_LAGGARDS + 20
    assert adoption(keyset(with_next=False), many, REVISIONS, now=NOW, window=86400).laggards == ()


def test_fetcher_identity_prefers_a_sane_verifier_header() -> None:
    assert fetcher_identity("orders-api/1a2b3c4d", "10.0.0.1", "PyJWT") == "orders-api/1a2b3c4d"
    assert fetcher_identity(None, "10.0.0.1", "python-httpx/0.28") == "10.0.0.1 python-httpx/0.28"
    assert fetcher_identity("bad\nname", "10.0.0.1", "ua\x00x") == "10.0.0.1 uax"
    assert fetcher_identity("x" * 500, "10.0.0.1", "y" * 500) == ("10.0.0.1 " + "y" * 120)
    assert fetcher_identity("", "::1", None) == "::1"


POLICY = KeysetPolicy("ks", "EdDSA", adoption_gate=0.95, adoption_max_wait=7 * 86400)


def gate_at(
    share_holding: int, total: int, *, policy: KeysetPolicy = POLICY, ks: Keyset | None = None, now: float = NOW
) -> Gate:
    ks = ks or keyset()
    fetches = [Fetch(f"f{i}", '"b"' if i < share_holding else '"a"', NOW - 1) for i in range(total)]
    return gate(policy, ks, adoption(ks, fetches, REVISIONS, now=NOW, window=86400), due_at=NOW - 60, now=now)


def test_the_gate_waits_below_the_share_and_opens_at_it() -> None:
    waiting = gate_at(18, 20)
    assert not waiting.open and waiting.reason == "waiting" and waiting.share == 0.9
    assert "90% of 20 fetchers" in waiting.describe() and "95% needed" in waiting.describe()
    assert waiting.deadline == NOW - 60 + 7 * 86400
    opened = gate_at(19, 20)
    assert opened.open and opened.reason == "adopted"


def test_the_gate_gives_way_after_max_wait_and_when_it_does_not_apply() -> None:
    late = gate_at(0, 20, now=NOW - 60 + 7 * 86400)
    assert late.open and late.timed_out
    assert gate_at(0, 20, policy=replace(POLICY, adoption_gate=0)).reason == "off"
    assert gate_at(0, 0).reason == "no fetchers"
    assert gate_at(0, 20, ks=keyset(with_next=False)).reason == "no next key"
    assert gate_at(0, 20, ks=keyset(published=False)).reason == "not published"
