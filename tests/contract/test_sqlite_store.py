"""SQLiteStore beyond the conformance suite: a store file made by an earlier release opens and works."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

from jwks_service.model import Keyset, KeyState, KeyVersion
from jwks_service.stores.codec import key_to_dict
from jwks_service.stores.sqlite import SQLiteStore

# The keysets table as the first release made it (before the claim columns).
OLD_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (name, value) VALUES ('revision', 3), ('schema', 1);
CREATE TABLE keysets (name TEXT PRIMARY KEY, alg TEXT NOT NULL, backend TEXT NOT NULL, revision INTEGER NOT NULL);
CREATE TABLE keys (keyset TEXT NOT NULL, kid TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (keyset, kid));
INSERT INTO keysets VALUES ('default', 'ES256', 'vault', 3);
"""


def test_a_store_from_before_the_claim_columns_opens_and_keeps_its_keysets(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    key = KeyVersion("a", "default", "ES256", KeyState.CURRENT, 1000.0, {"kty": "EC"}, b"ref")
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
        db.execute("INSERT INTO keys VALUES ('default', 'a', ?)", (json.dumps(key_to_dict(key)),))
    stores = [SQLiteStore(path), SQLiteStore(path)]  # two processes opening it: each column is added once
    try:
        loaded = stores[0].get_keyset("default")
        assert loaded == Keyset("default", "ES256", "vault", 3, (key,), 0, None)
        saved = stores[1].save_keyset(replace(loaded, claimed_version=4, claimed_at=1.5), 3)
        assert stores[0].get_keyset("default") == saved and saved.claimed_version == 4
    finally:
        for s in stores:
            s.close()
