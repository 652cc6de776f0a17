"""The embedded store: one SQLite file in WAL mode, shared by the server and the CLI.

Compare-and-set runs inside ``BEGIN IMMEDIATE``: the write lock is taken before the revision is
read, so two processes can never both see revision N and both write N + 1.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from ..adoption import Fetch
from ..errors import RevisionConflictError, StoreError
from ..model import AuditChain, AuditEvent, Client, Keyset, event_hash
from . import MAX_LIMIT, AuditTap, chain, clamp_limit, prunable
from .codec import audit_from_dict, client_from_dict, client_to_dict, key_from_dict, key_to_dict

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('schema', 1);
CREATE TABLE IF NOT EXISTS keysets (
  name TEXT PRIMARY KEY, alg TEXT NOT NULL, backend TEXT NOT NULL, revision INTEGER NOT NULL,
  claimed_version INTEGER NOT NULL DEFAULT 0, claimed_at REAL);
CREATE TABLE IF NOT EXISTS keys (
  keyset TEXT NOT NULL, kid TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (keyset, kid));
CREATE TABLE IF NOT EXISTS clients (client_id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS revoked_tokens (jti TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE TABLE IF NOT EXISTS audit_chain (name TEXT PRIMARY KEY, id INTEGER NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS auth_failures (key TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS auth_failures_key ON auth_failures (key, at);
CREATE INDEX IF NOT EXISTS auth_failures_at ON auth_failures (at);
CREATE TABLE IF NOT EXISTS assertion_jtis (
  client_id TEXT NOT NULL, jti TEXT NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (client_id, jti));
CREATE INDEX IF NOT EXISTS assertion_jtis_expiry ON assertion_jtis (expires_at);
CREATE TABLE IF NOT EXISTS fetchers (fetcher TEXT PRIMARY KEY, revision TEXT NOT NULL, last_fetch REAL NOT NULL);
CREATE INDEX IF NOT EXISTS fetchers_last_fetch ON fetchers (last_fetch);
CREATE TABLE IF NOT EXISTS revisions (etag TEXT PRIMARY KEY, kids TEXT NOT NULL, first_seen REAL NOT NULL);
"""

# Columns added to a table after its first release: a store made before them gets them when opened.
_ADDED_COLUMNS = {
    "keysets": {"claimed_version": "INTEGER NOT NULL DEFAULT 0", "claimed_at": "REAL"},
}

# JWKS revisions whose kids are kept (the newest first recorded), as in Redis (stores/redis_adoption.py).
MAX_REVISIONS = 256

# Failure counters older than this are deleted as new ones are written (the longest window is a minute).
AUTH_FAILURE_RETENTION = 300.0


class _Write:
    """The connection inside a write transaction, and whether its audit events go with it."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.audited = False


def _event(row: tuple[object, ...]) -> AuditEvent:
    """An audit row (id, data) as the event."""
    return audit_from_dict({**json.loads(str(row[1])), "id": int(str(row[0]))})


class SQLiteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self.audit_tap = AuditTap()
        try:
            fresh = str(self.path) != ":memory:" and not self.path.exists()
            if fresh:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # Sealed keys and secret digests live here: readable by the service's user only.
                self.path.touch(mode=0o600, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
            self._add_columns()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from None

    def _add_columns(self) -> None:
        """Columns added since a table's first release, for a store made before them; checked inside
        the write lock, so two processes opening an old store at once add each column once."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for table, columns in _ADDED_COLUMNS.items():
                present = {str(row[1]) for row in self._db.execute(f"PRAGMA table_info({table})")}
                for name, kind in columns.items():
                    if name not in present:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            self._db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise

    @contextmanager
    def _write(self, audit: Sequence[AuditEvent] = ()) -> Iterator[_Write]:
        """One write transaction; the body sets `write.audited` to have `audit` appended with it (and
        published once committed)."""
        write = _Write(self._db)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite store is not writable: {exc}") from None
            try:
                yield write
                stored = self._insert_audit(self._db, audit) if write.audited else []
                self._db.execute("UPDATE meta SET value = value + 1 WHERE name = 'revision'")
                self._db.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"SQLite write failed: {exc}") from None
                raise
        self.audit_tap.publish(stored)

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite read failed: {exc}") from None

    def revision(self) -> int:
        return int(str(self._read("SELECT value FROM meta WHERE name = 'revision'")[0][0]))

    _KEYSET_COLUMNS = "name, alg, backend, revision, claimed_version, claimed_at"

    def _keyset(self, row: tuple[object, ...]) -> Keyset:
        name, alg, backend, revision, claimed_version, claimed_at = row
        rows = self._read("SELECT data FROM keys WHERE keyset = ?", (name,))
        keys = sorted((key_from_dict(json.loads(str(r[0]))) for r in rows), key=lambda k: (k.created_at, k.kid))
        return Keyset(
            str(name),
            str(alg),
            str(backend),
            int(str(revision)),
            tuple(keys),
            int(str(claimed_version)),
            None if claimed_at is None else float(str(claimed_at)),
        )

    def get_keyset(self, name: str) -> Keyset | None:
        rows = self._read(f"SELECT {self._KEYSET_COLUMNS} FROM keysets WHERE name = ?", (name,))  # noqa: S608 - constant
        return self._keyset(rows[0]) if rows else None

    def list_keysets(self) -> list[Keyset]:
        rows = self._read(f"SELECT {self._KEYSET_COLUMNS} FROM keysets ORDER BY name")  # noqa: S608 - constant
        return [self._keyset(r) for r in rows]

    def save_keyset(self, keyset: Keyset, expected_revision: int, audit: Sequence[AuditEvent] = ()) -> Keyset:
        new_revision = expected_revision + 1
        with self._write(audit) as write:
            db = write.db
            row = db.execute("SELECT revision FROM keysets WHERE name = ?", (keyset.name,)).fetchone()
            stored = row[0] if row else 0
            if stored != expected_revision:
                raise RevisionConflictError(
                    f"keyset {keyset.name} is at revision {stored}, not {expected_revision}: another writer came first"
                )
            db.execute(
                "INSERT INTO keysets (name, alg, backend, revision, claimed_version, claimed_at) "
                "VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET alg = excluded.alg, backend = excluded.backend, "
                "revision = excluded.revision, claimed_version = excluded.claimed_version, "
                "claimed_at = excluded.claimed_at",
                (keyset.name, keyset.alg, keyset.backend, new_revision, keyset.claimed_version, keyset.claimed_at),
            )
            db.execute("DELETE FROM keys WHERE keyset = ?", (keyset.name,))
            db.executemany(
                "INSERT INTO keys (keyset, kid, data) VALUES (?, ?, ?)",
                [(keyset.name, k.kid, json.dumps(key_to_dict(k))) for k in keyset.keys],
            )
            write.audited = True
        return replace(keyset, revision=new_revision)

    def get_client(self, client_id: str) -> Client | None:
        rows = self._read("SELECT data FROM clients WHERE client_id = ?", (client_id,))
        return client_from_dict(json.loads(str(rows[0][0]))) if rows else None

    def list_clients(self) -> list[Client]:
        rows = self._read("SELECT data FROM clients ORDER BY client_id")
        return sorted((client_from_dict(json.loads(str(r[0]))) for r in rows), key=lambda c: c.created_at)

    def list_clients_after(self, after: str, limit: int) -> list[Client]:
        rows = self._read(
            "SELECT data FROM clients WHERE client_id > ? ORDER BY client_id LIMIT ?", (after, clamp_limit(limit))
        )
        return [client_from_dict(json.loads(str(r[0]))) for r in rows]

    def save_client(self, client: Client, expected_revision: int, audit: Sequence[AuditEvent] = ()) -> Client:
        return self._write_client(client, expected_revision, audit)

    def put_client(self, client: Client, audit: Sequence[AuditEvent] = ()) -> None:
        self._write_client(client, None, audit)

    def _write_client(self, client: Client, expected: int | None, audit: Sequence[AuditEvent]) -> Client:
        with self._write(audit) as write:
            db = write.db
            row = db.execute("SELECT data FROM clients WHERE client_id = ?", (client.client_id,)).fetchone()
            stored = client_from_dict(json.loads(str(row[0]))).revision if row else 0
            if expected is not None and stored != expected:
                raise RevisionConflictError(
                    f"client {client.client_id} is at revision {stored}, not {expected}: another writer came first"
                )
            saved = replace(client, revision=stored + 1)
            db.execute(
                "INSERT INTO clients (client_id, data) VALUES (?, ?) "
                "ON CONFLICT (client_id) DO UPDATE SET data = excluded.data",
                (client.client_id, json.dumps({**client_to_dict(saved), "revision": saved.revision})),
            )
            write.audited = True
        return saved

    def delete_client(self, client_id: str, audit: Sequence[AuditEvent] = ()) -> bool:
        with self._write(audit) as write:
            deleted = write.db.execute("DELETE FROM clients WHERE client_id = ?", (client_id,)).rowcount > 0
            write.audited = deleted
        return deleted

    def revoke_token(self, jti: str, expires_at: float) -> None:
        with self._write() as write:
            write.db.execute(
                "INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?) "
                "ON CONFLICT (jti) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)",
                (jti, expires_at),
            )

    def confirm_revocation(self) -> None:
        """One file, written in a committed transaction: nothing more to wait for."""

    def revoked_tokens(self, now: float) -> dict[str, float]:
        rows = self._read("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > ?", (now,))
        return {str(j): float(str(e)) for j, e in rows}

    @contextmanager
    def _housekeeping(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that leaves the revision alone (counters, the jti cache, pruning)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise StoreError(f"SQLite write failed: {exc}") from None

    def record_auth_failure(self, keys: Sequence[str], now: float) -> None:
        with self._housekeeping() as db:
            db.executemany("INSERT INTO auth_failures (key, at) VALUES (?, ?)", [(k, now) for k in keys])
            db.execute("DELETE FROM auth_failures WHERE at < ?", (now - AUTH_FAILURE_RETENTION,))

    def remember_jti(self, client_id: str, jti: str, expires_at: float, now: float) -> bool:
        with self._housekeeping() as db:
            db.execute("DELETE FROM assertion_jtis WHERE expires_at <= ?", (now,))
            added = db.execute(
                "INSERT OR IGNORE INTO assertion_jtis (client_id, jti, expires_at) VALUES (?, ?, ?)",
                (client_id, jti, expires_at),
            ).rowcount
        return added == 1

    def auth_failures(self, keys: Sequence[str], since: float) -> dict[str, tuple[int, float]]:
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        rows = self._read(
            f"SELECT key, count(*), min(at) FROM auth_failures WHERE key IN ({marks}) AND at > ? GROUP BY key",  # noqa: S608 - placeholders only
            (*keys, since),
        )
        return {str(k): (int(str(n)), float(str(t))) for k, n, t in rows}

    def failing_keys(self, since: float, limit: int) -> set[str] | None:
        rows = self._read(
            "SELECT DISTINCT key FROM auth_failures WHERE at > ? LIMIT ?", (since, clamp_limit(limit + 1))
        )
        return {str(r[0]) for r in rows} if len(rows) <= limit else None

    def record_fetches(
        self,
        fetches: Sequence[Fetch],
        revisions: Mapping[str, Sequence[str]],
        now: float,
        window: int,
        max_fetchers: int,
    ) -> None:
        with self._housekeeping() as db:
            db.executemany(
                "INSERT INTO fetchers (fetcher, revision, last_fetch) VALUES (?, ?, ?) ON CONFLICT (fetcher)"
                " DO UPDATE SET revision = excluded.revision, last_fetch = excluded.last_fetch"
                " WHERE excluded.last_fetch > fetchers.last_fetch",
                [(f.fetcher, f.revision, f.last_fetch) for f in fetches],
            )
            db.executemany(
                "INSERT OR IGNORE INTO revisions (etag, kids, first_seen) VALUES (?, ?, ?)",
                [(etag, json.dumps(list(kids)), now) for etag, kids in revisions.items()],
            )
            db.execute("DELETE FROM fetchers WHERE last_fetch < ?", (now - window,))
            # The oldest go first; among equal times the smallest name, as a Redis sorted set orders them.
            db.execute(
                "DELETE FROM fetchers WHERE fetcher IN (SELECT fetcher FROM fetchers"
                " ORDER BY last_fetch DESC, fetcher DESC LIMIT -1 OFFSET ?)",
                (max(0, max_fetchers),),
            )
            db.execute(
                "DELETE FROM revisions WHERE etag IN (SELECT etag FROM revisions"
                " ORDER BY first_seen DESC, etag DESC LIMIT -1 OFFSET ?)",
                (MAX_REVISIONS,),
            )

    def list_fetches(self, since: float) -> list[Fetch]:
        rows = self._read(
            "SELECT fetcher, revision, last_fetch FROM fetchers WHERE last_fetch >= ? ORDER BY last_fetch, fetcher",
            (since,),
        )
        return [Fetch(str(f), str(r), float(str(t))) for f, r, t in rows]

    def list_revisions(self) -> dict[str, list[str]]:
        rows = self._read("SELECT etag, kids FROM revisions")
        return {str(etag): [str(k) for k in json.loads(str(kids))] for etag, kids in rows}

    def is_empty(self) -> bool:
        rows = self._read(
            "SELECT (SELECT count(*) FROM keysets) + (SELECT count(*) FROM clients)"
            " + (SELECT count(*) FROM revoked_tokens) + (SELECT count(*) FROM audit)"
        )
        return int(str(rows[0][0])) == 0

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        with self._write(events) as write:
            write.audited = True

    @staticmethod
    def _insert_audit(db: sqlite3.Connection, events: Sequence[AuditEvent]) -> list[AuditEvent]:
        """Inside the write transaction (BEGIN IMMEDIATE holds the write lock): read the chain's
        head, number and link the events after it, and move the head."""
        if not events:
            return []
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
        last_id = int(row[0]) if row else 0
        head = db.execute("SELECT id, hash FROM audit_chain WHERE name = 'last'").fetchone()
        if head is not None:
            last_hash = str(head[1])
        else:  # a store from before the chain: link to its newest event, if it still has it
            newest = db.execute("SELECT id, data FROM audit WHERE id = ?", (last_id,)).fetchone()
            last_hash = event_hash(_event(newest)) if newest else ""
        stored = chain(events, last_id, last_hash)
        for e in stored:
            payload = e.as_dict()
            payload.pop("id")
            db.execute("INSERT INTO audit (id, at, data) VALUES (?, ?, ?)", (e.id, e.at, json.dumps(payload)))
        db.execute(
            "INSERT INTO audit_chain (name, id, hash) VALUES ('last', ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET id = excluded.id, hash = excluded.hash",
            (stored[-1].id, event_hash(stored[-1])),
        )
        db.execute(
            "INSERT OR IGNORE INTO audit_chain (name, id, hash) VALUES ('first', ?, ?)", (stored[0].id, stored[0].prev)
        )
        return stored

    def list_audit(
        self, since: float | None = None, limit: int = 100, before_id: int | None = None
    ) -> list[AuditEvent]:
        rows = self._read(
            "SELECT id, data FROM audit WHERE at >= ? AND id < ? ORDER BY id DESC LIMIT ?",
            (
                since if since is not None else float("-inf"),
                before_id if before_id is not None else MAX_LIMIT,
                clamp_limit(limit),
            ),
        )
        return [_event(r) for r in rows]

    def list_audit_after(self, after_id: int, limit: int = 1000) -> list[AuditEvent]:
        rows = self._read("SELECT id, data FROM audit WHERE id > ? ORDER BY id LIMIT ?", (after_id, clamp_limit(limit)))
        return [_event(r) for r in rows]

    def audit_chain(self) -> AuditChain:
        ends = {str(n): (int(str(i)), str(h)) for n, i, h in self._read("SELECT name, id, hash FROM audit_chain")}
        first, last = ends.get("first", (0, "")), ends.get("last", (0, ""))
        return AuditChain(first[0], first[1], last[0], last[1])

    def prune_audit(self, before: float, limit: int = 1000) -> int:
        if limit <= 0:
            return 0
        with self._housekeeping() as db:
            oldest = db.execute("SELECT id, data FROM audit ORDER BY id LIMIT ?", (clamp_limit(limit),))
            run = prunable([_event(r) for r in oldest.fetchall()], before)
            if run:
                newest = run[-1]
                db.execute("DELETE FROM audit WHERE id <= ?", (newest.id,))
                # The first event kept must carry the newest pruned one's hash (once the chain began).
                db.execute(
                    "UPDATE audit_chain SET id = ?, hash = ? WHERE name = 'first' AND id <= ?",
                    (newest.id + 1, event_hash(newest), newest.id),
                )
        return len(run)

    def close(self) -> None:
        with self._lock:
            self._db.close()
