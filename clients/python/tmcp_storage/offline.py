"""`OfflineStore`: a local SQLite replica of one space that works offline and syncs.

    store = OfflineStore("notes.db", client, client_id="phone-1")
    store.put("note/1", {"text": "hi"})      # local at once, queued for the server
    store.sync()                             # push the queue, then pull what changed

Writes are queued with increasing mutation ids in the same local transaction as their
effect, so the queue survives a restart and a push can be repeated safely (the server
answers DUPLICATE for ids it already applied). Each queued write carries the server
version the store last saw of the key as its `base_version`, so the server detects
conflicts; the strategy decides, and conflicts the server keeps open (MANUAL) or that it
rejected reach `on_conflict`. After the push, the pull brings every key changed since the
store's cursor, the effects of its own writes included (merged values, for example).

Blocking only (it drives a `Client`); `sync()` is the Push/Pull path. Keeping a `Stream`
open (`run()`) is not built yet.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

from tmcp_storage.client import Client
from tmcp_storage.errors import NotFound, OutOfRange
from tmcp_storage.models import Entry, Space
from tmcp_storage.sync_models import Change, Mutation, MutationOutcome, Result, Strategy

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value BLOB, is_json INTEGER
        NOT NULL, content_type TEXT NOT NULL, server_version INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS queue (mutation_id INTEGER PRIMARY KEY, key TEXT NOT NULL,
        value BLOB, is_json INTEGER NOT NULL, is_delete INTEGER NOT NULL,
        base_version INTEGER)""",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
_PUSH_CHUNK = 500

ConflictHandler = Callable[[str, MutationOutcome], None]
"""Called with the key and the outcome of a mutation the server did not apply as sent
(CONFLICT kept open by MANUAL, or REJECTED)."""


def _encode(value: object) -> tuple[bytes, bool]:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), False
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(), True


def _decode(data: bytes, is_json: bool) -> Any:
    return json.loads(data) if is_json else bytes(data)


class OfflineStore:
    """A local replica of one space; see the module docstring."""

    def __init__(
        self,
        path: str,
        client: Client,
        *,
        client_id: str,
        space: Space | None = None,
        strategy: Strategy = Strategy.DEFAULT,
        on_conflict: ConflictHandler | None = None,
    ) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._client = client
        self._client_id = client_id
        self._space = space
        self._strategy = strategy
        self._on_conflict = on_conflict

    def close(self) -> None:
        """Close the local database."""
        self._db.close()

    # -- local reads and writes -------------------------------------------------------

    def get(self, key: str) -> Any:
        """The local value of `key` (bytes, or the decoded JSON), or None when absent."""
        row = self._db.execute(
            "SELECT value, is_json FROM entries WHERE key = ? AND value IS NOT NULL", (key,)
        ).fetchone()
        return None if row is None else _decode(row[0], bool(row[1]))

    def items(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """Local `(key, value)` pairs under `prefix`, in key order."""
        rows = self._db.execute(
            "SELECT key, value, is_json FROM entries WHERE value IS NOT NULL"
            " AND substr(key, 1, ?) = ? ORDER BY key",
            (len(prefix), prefix),
        ).fetchall()
        for key, value, is_json in rows:
            yield key, _decode(value, bool(is_json))

    def put(self, key: str, value: object) -> None:
        """Write locally and queue the write (bytes raw, anything else JSON)."""
        data, is_json = _encode(value)
        self._write(key, data, is_json)

    def delete(self, key: str) -> None:
        """Delete locally and queue the deletion."""
        self._write(key, None, False)

    def _write(self, key: str, data: bytes | None, is_json: bool) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT server_version FROM entries WHERE key = ?", (key,)).fetchone()
            base = row[0] if row is not None else 0
            mutation_id = self._meta_int("next_mutation_id", 1)
            db.execute(
                "INSERT INTO queue VALUES (?, ?, ?, ?, ?, ?)",
                (mutation_id, key, data, int(is_json), int(data is None), base),
            )
            self._set_meta("next_mutation_id", mutation_id + 1)
            db.execute(
                "INSERT INTO entries VALUES (?, ?, ?, '', ?) ON CONFLICT (key) DO UPDATE SET"
                " value = excluded.value, is_json = excluded.is_json",
                (key, data, int(is_json), base),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @property
    def pending(self) -> int:
        """Queued writes not yet acknowledged by the server."""
        return int(self._db.execute("SELECT COUNT(*) FROM queue").fetchone()[0])

    # -- sync -------------------------------------------------------------------------

    def sync(self) -> None:
        """Push the queue, then pull every change since the store's cursor."""
        self.push()
        self.pull()

    def push(self) -> None:
        """Push queued writes in id order; acknowledged ones leave the queue."""
        while True:
            rows = self._db.execute(
                "SELECT mutation_id, key, value, is_json, is_delete, base_version FROM queue"
                " ORDER BY mutation_id LIMIT ?",
                (_PUSH_CHUNK,),
            ).fetchall()
            if not rows:
                return
            mutations = [
                Mutation(
                    mutation_id=mid,
                    key=key,
                    value=None if is_delete else _decode(value, bool(is_json)),
                    delete=bool(is_delete),
                    base_version=base,
                )
                for mid, key, value, is_json, is_delete, base in rows
            ]
            try:
                result = self._client.push(
                    self._client_id, mutations, strategy=self._strategy, space=self._space
                )
            except OutOfRange as gap:
                if gap.reason != "MUTATION_GAP":
                    raise
                # The server already applied ids below the one it expects: drop them.
                expected = int(gap.metadata.get("expected_mutation_id", "0"))
                self._db.execute("DELETE FROM queue WHERE mutation_id < ?", (expected,))
                if expected <= rows[0][0]:
                    raise
                continue
            keys = {m.mutation_id: m.key for m in mutations}
            for outcome in result.outcomes:
                self._settle(keys[outcome.mutation_id], outcome)

    def _settle(self, key: str, outcome: MutationOutcome) -> None:
        original = outcome.original_result if outcome.result == Result.DUPLICATE else None
        kept_by_server = Result.CONFLICT in (outcome.result, original)
        rejected = Result.REJECTED in (outcome.result, original)
        if kept_by_server or rejected:
            self._adopt_server(key, outcome.entry if kept_by_server else None, rejected)
            if self._on_conflict is not None:
                self._on_conflict(key, outcome)
        self._db.execute("DELETE FROM queue WHERE mutation_id = ?", (outcome.mutation_id,))

    def _adopt_server(self, key: str, entry: Entry | None, refetch: bool) -> None:
        """The server did not take our write: the key goes back to the server's state."""
        if refetch:
            try:
                entry = self._client.get(key, strong=True, space=self._space)
            except NotFound:
                entry = None
        if entry is None or not entry.has_value:
            self._db.execute("DELETE FROM entries WHERE key = ?", (key,))
            return
        self._store_entry(entry)

    def pull(self) -> None:
        """Apply every change since the cursor (a reset replaces the local state)."""
        cursor = self._meta("cursor", "")
        while True:
            page = self._client.pull(cursor, client_id=self._client_id, space=self._space)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if page.reset:
                    self._db.execute("DELETE FROM entries WHERE key NOT IN (SELECT key FROM queue)")
                for change in page.changes:
                    self._apply(change)
                self._set_meta("cursor", page.cursor)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            cursor = page.cursor
            if not page.has_more:
                return

    def _apply(self, change: Change) -> None:
        if self._db.execute("SELECT 1 FROM queue WHERE key = ?", (change.key,)).fetchone():
            return  # a local write is waiting: it goes to the server on the next push
        if change.entry is None:  # remembered, so that a re-creation has the right base
            self._db.execute(
                "INSERT INTO entries VALUES (?, NULL, 0, '', ?) ON CONFLICT (key) DO UPDATE SET"
                " value = NULL, server_version = excluded.server_version",
                (change.key, change.version),
            )
        else:
            self._store_entry(change.entry)

    def _store_entry(self, entry: Entry) -> None:
        data, is_json = _encode(entry.value)
        self._db.execute(
            "INSERT INTO entries VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
            " value = excluded.value, is_json = excluded.is_json,"
            " content_type = excluded.content_type, server_version = excluded.server_version",
            (entry.key, data, int(is_json), entry.content_type, entry.version),
        )

    # -- local metadata ---------------------------------------------------------------

    def _meta(self, name: str, default: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return default if row is None else str(row[0])

    def _meta_int(self, name: str, default: int) -> int:
        return int(self._meta(name, str(default)))

    def _set_meta(self, name: str, value: object) -> None:
        self._db.execute(
            "INSERT INTO meta VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, str(value)),
        )
