"""backup.merge_keyset: a key only moves forward in its lifecycle, whichever side is further along."""

from __future__ import annotations

from jwks_service.backup_merge import merge_keyset
from jwks_service.lifecycle import check_invariants
from jwks_service.model import Keyset, KeyState, KeyVersion

NOW = 10_000.0
WINDOW = 1_000


def key(kid: str, state: KeyState, **extra: object) -> KeyVersion:
    material = None if state in (KeyState.RETIRED, KeyState.REVOKED) else b"sealed-" + kid.encode()
    return KeyVersion(kid, "ks", "ES256", state, 1.0, sealed_private=material, **extra)  # type: ignore[arg-type]


def keyset(*keys: KeyVersion, revision: int = 7) -> Keyset:
    return Keyset("ks", "ES256", "local", revision, keys)


def states(ks: Keyset) -> dict[str, str]:
    return {k.kid: k.state.value for k in ks.keys}


def test_into_no_keyset_the_backup_is_taken_as_it_is() -> None:
    incoming = keyset(key("a", KeyState.CURRENT), key("b", KeyState.NEXT), revision=42)
    merged, notes = merge_keyset(None, incoming, NOW, WINDOW)
    assert merged.keys == incoming.keys and merged.revision == 0 and notes == []


def test_a_revocation_on_either_side_wins() -> None:
    stored = keyset(key("a", KeyState.REVOKED, revoked_at=500.0), key("b", KeyState.CURRENT), key("c", KeyState.NEXT))
    incoming = keyset(key("a", KeyState.CURRENT), key("b", KeyState.NEXT), key("c", KeyState.REVOKED, revoked_at=9.0))
    merged, notes = merge_keyset(stored, incoming, NOW, WINDOW, made_at=NOW - 3600)
    assert states(merged) == {"a": "revoked", "b": "current", "c": "revoked"}
    assert merged.revision == 7  # compare-and-set against what was read
    assert merged.find("a") == stored.find("a") and merged.find("c") == incoming.find("c")
    assert "kept key a revoked (revoked in the store at 1970-01-01T00:08:20Z; the backup has it current)" in notes
    assert "kept key b current (current in the store; the backup has it next)" in notes
    assert any(n.startswith("key c is revoked") for n in notes)
    assert not any("has no current key" in n for n in notes)


def test_retired_stays_retired_and_previous_never_signs_again() -> None:
    stored = keyset(
        key("a", KeyState.RETIRED, retired_at=600.0), key("b", KeyState.PREVIOUS), key("c", KeyState.CURRENT)
    )
    incoming = keyset(key("a", KeyState.PREVIOUS), key("b", KeyState.CURRENT), key("c", KeyState.NEXT))
    merged, _ = merge_keyset(stored, incoming, NOW, WINDOW, made_at=NOW - 3600)
    assert states(merged) == {"a": "retired", "b": "previous", "c": "current"}
    assert merged.find("a").sealed_private is None  # type: ignore[union-attr]
    assert check_invariants(merged.keys) == []


def test_unrelated_histories_keep_one_current_and_one_next() -> None:
    """A store with keys of its own: the backup's current signs; the store's verifies on as previous
    for the verify window; the store's next, which never signed, is discarded."""
    stored = keyset(key("own-cur", KeyState.CURRENT, activated_at=900.0), key("own-next", KeyState.NEXT))
    incoming = keyset(key("b-prev", KeyState.PREVIOUS), key("b-cur", KeyState.CURRENT), key("b-next", KeyState.NEXT))
    merged, notes = merge_keyset(stored, incoming, NOW, WINDOW, made_at=NOW - 3600)
    assert states(merged) == {
        "b-prev": "previous",
        "b-cur": "current",
        "b-next": "next",
        "own-cur": "previous",
        "own-next": "retired",
    }
    demoted = merged.find("own-cur")
    assert demoted is not None and demoted.retire_at == NOW + WINDOW and demoted.deactivated_at == NOW
    assert merged.find("own-next").sealed_private is None  # type: ignore[union-attr]
    assert check_invariants(merged.keys) == []
    assert any("key own-cur becomes previous" in n for n in notes)
    assert any("next key own-next is discarded" in n for n in notes)


def test_a_keyset_left_without_a_current_key_is_reported() -> None:
    stored = keyset(key("a", KeyState.REVOKED, revoked_at=1.0))
    incoming = keyset(key("a", KeyState.CURRENT), key("b", KeyState.NEXT))
    merged, notes = merge_keyset(stored, incoming, NOW, WINDOW, made_at=NOW - 3600)
    assert states(merged) == {"a": "revoked", "b": "next"}
    assert any("keyset ks has no current key after the import" in n for n in notes)


def test_a_key_unknown_to_the_store_comes_in_retired_from_an_old_backup() -> None:
    """The store forgets retired keys RETAIN_RETIRED_SECONDS after they retire. A key that a backup
    older than that has live, and the store does not know, may have been retired here since: it
    comes in retired, never current again (found in review: it became current and signed)."""
    from jwks_service.lifecycle import RETAIN_RETIRED_SECONDS

    now = 100 * 86400.0
    stored = keyset(key("new-cur", KeyState.CURRENT, activated_at=now - 10), key("new-next", KeyState.NEXT))
    incoming = keyset(key("old-cur", KeyState.CURRENT), key("old-next", KeyState.NEXT))
    old = now - RETAIN_RETIRED_SECONDS - 1
    merged, notes = merge_keyset(stored, incoming, now, WINDOW, made_at=old)
    assert states(merged) == {"old-cur": "retired", "old-next": "retired", "new-cur": "current", "new-next": "next"}
    assert all(merged.find(k).sealed_private is None for k in ("old-cur", "old-next"))  # type: ignore[union-attr]
    assert any(n.startswith("key old-cur comes in retired") for n in notes)
    assert check_invariants(merged.keys) == []
    # A backup younger than that: nothing the store retired since can have been forgotten.
    merged, _ = merge_keyset(stored, incoming, now, WINDOW, made_at=now - RETAIN_RETIRED_SECONDS + 60)
    assert states(merged)["old-cur"] == "current"
    # Without the backup's age (unreadable): as if old.
    merged, _ = merge_keyset(stored, incoming, now, WINDOW)
    assert states(merged)["old-cur"] == "retired"


def test_a_taint_on_either_side_is_never_undone() -> None:
    stored = keyset(key("a", KeyState.PREVIOUS, tainted_at=700.0), key("b", KeyState.CURRENT), key("c", KeyState.NEXT))
    incoming = keyset(
        key("a", KeyState.CURRENT), key("b", KeyState.PREVIOUS, tainted_at=800.0), key("c", KeyState.NEXT)
    )
    merged, notes = merge_keyset(stored, incoming, NOW, WINDOW, made_at=NOW - 3600)
    assert states(merged) == {"a": "previous", "b": "previous", "c": "next"}
    assert merged.find("a").tainted_at == 700.0  # type: ignore[union-attr]
    assert merged.find("b").tainted_at == 800.0  # type: ignore[union-attr]
    # Both sides tainted: the earlier moment is kept.
    both = keyset(key("a", KeyState.PREVIOUS, tainted_at=650.0), key("b", KeyState.CURRENT), key("c", KeyState.NEXT))
    again, notes = merge_keyset(stored, both, NOW, WINDOW, made_at=NOW - 3600)
    assert again.find("a").tainted_at == 650.0  # type: ignore[union-attr]
    assert "key a stays tainted (since 1970-01-01T00:10:50Z)" in notes


def test_of_two_current_keys_an_untainted_one_signs() -> None:
    stored = keyset(key("own", KeyState.CURRENT, activated_at=900.0))
    incoming = keyset(key("theirs", KeyState.CURRENT, activated_at=950.0, tainted_at=960.0))
    merged, _ = merge_keyset(stored, incoming, NOW, WINDOW, made_at=NOW - 3600)
    assert states(merged) == {"own": "current", "theirs": "previous"}
    assert merged.find("theirs").tainted_at == 960.0  # type: ignore[union-attr]
