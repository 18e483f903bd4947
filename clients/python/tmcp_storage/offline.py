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

`run(stop)` keeps a `Stream` open instead: queued writes are pushed as they are made,
live changes are applied as they arrive (the store's own echoes included: they carry the
server's version), and a lost connection is reopened with backoff from the stored cursor.
Blocking only (it drives a `Client`); the store may be used from other threads while
`run()` works in its own.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from tmcp.storage.v1 import sync_pb2

from tmcp_storage.client import Client
from tmcp_storage.errors import NotFound, OutOfRange, RateLimited, StorageError, from_rpc_error
from tmcp_storage.models import Entry, Space
from tmcp_storage.sync_models import Change, Mutation, MutationOutcome, Result, Strategy
from tmcp_storage.sync_operations import (
    decode_change,
    decode_outcome,
    decode_status,
    encode_mutation,
)

log = logging.getLogger(__name__)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value BLOB, is_json INTEGER
        NOT NULL, content_type TEXT NOT NULL, server_version INTEGER NOT NULL,
        expires_at REAL)""",
    """CREATE TABLE IF NOT EXISTS queue (mutation_id INTEGER PRIMARY KEY, key TEXT NOT NULL,
        value BLOB, is_json INTEGER NOT NULL, is_delete INTEGER NOT NULL,
        base_version INTEGER, ttl REAL)""",
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


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    def call(self: OfflineStore, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    call.__doc__ = method.__doc__
    call.__name__ = method.__name__
    return call


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
        self._lock = threading.RLock()
        self._live: _Live | None = None
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
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

    @_locked
    def get(self, key: str) -> Any:
        """The local value of `key` (bytes, or the decoded JSON), or None when absent."""
        row = self._db.execute(
            "SELECT value, is_json FROM entries WHERE key = ? AND value IS NOT NULL"
            " AND (expires_at IS NULL OR expires_at > ?)",
            (key, time.time()),
        ).fetchone()
        return None if row is None else _decode(row[0], bool(row[1]))

    @_locked
    def expires_at(self, key: str) -> datetime | None:
        """When the local entry of `key` expires (None: never, or absent). After a sync
        it is the server's expiry."""
        row = self._db.execute(
            "SELECT expires_at FROM entries WHERE key = ? AND value IS NOT NULL", (key,)
        ).fetchone()
        return None if row is None or row[0] is None else datetime.fromtimestamp(row[0], UTC)

    def items(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """Local `(key, value)` pairs under `prefix`, in key order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, value, is_json FROM entries WHERE value IS NOT NULL"
                " AND (expires_at IS NULL OR expires_at > ?)"
                " AND substr(key, 1, ?) = ? ORDER BY key",
                (time.time(), len(prefix), prefix),
            ).fetchall()
        for key, value, is_json in rows:
            yield key, _decode(value, bool(is_json))

    @_locked
    def put(self, key: str, value: object, *, ttl: float | timedelta | None = None) -> None:
        """Write locally and queue the write (bytes raw, anything else JSON). With `ttl`
        the entry expires that long after this call, here and on the server (which
        counts from when the write reaches it)."""
        data, is_json = _encode(value)
        seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
        if seconds is not None and seconds <= 0:
            raise ValueError("ttl must be positive")
        self._write(key, data, is_json, seconds)

    @_locked
    def delete(self, key: str) -> None:
        """Delete locally and queue the deletion."""
        self._write(key, None, False)

    def _write(self, key: str, data: bytes | None, is_json: bool, ttl: float | None = None) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT server_version FROM entries WHERE key = ?", (key,)).fetchone()
            base = row[0] if row is not None else 0
            mutation_id = self._meta_int("next_mutation_id", 1)
            db.execute(
                "INSERT INTO queue VALUES (?, ?, ?, ?, ?, ?, ?)",
                (mutation_id, key, data, int(is_json), int(data is None), base, ttl),
            )
            self._set_meta("next_mutation_id", mutation_id + 1)
            expires_at = None if ttl is None else time.time() + ttl
            db.execute(
                "INSERT INTO entries VALUES (?, ?, ?, '', ?, ?) ON CONFLICT (key) DO UPDATE SET"
                " value = excluded.value, is_json = excluded.is_json,"
                " expires_at = excluded.expires_at",
                (key, data, int(is_json), base, expires_at),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._push_live()

    @property
    def pending(self) -> int:
        """Queued writes not yet acknowledged by the server."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM queue").fetchone()[0])

    # -- sync -------------------------------------------------------------------------

    def sync(self) -> None:
        """Push the queue, then pull every change since the store's cursor."""
        self.push()
        self.pull()

    @_locked
    def push(self) -> None:
        """Push queued writes in id order; acknowledged ones leave the queue."""
        while True:
            mutations = self._queued()
            if not mutations:
                return
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
                if expected <= mutations[0].mutation_id:
                    raise
                continue
            keys = {m.mutation_id: m.key for m in mutations}
            for outcome in result.outcomes:
                self._settle(keys[outcome.mutation_id], outcome)

    def _queued(self) -> list[Mutation]:
        rows = self._db.execute(
            "SELECT mutation_id, key, value, is_json, is_delete, base_version, ttl FROM queue"
            " ORDER BY mutation_id LIMIT ?",
            (_PUSH_CHUNK,),
        ).fetchall()
        return [
            Mutation(
                mutation_id=mid,
                key=key,
                value=None if is_delete else _decode(value, bool(is_json)),
                delete=bool(is_delete),
                base_version=base,
                ttl=ttl,
            )
            for mid, key, value, is_json, is_delete, base, ttl in rows
        ]

    def _settle(self, key: str, outcome: MutationOutcome) -> None:
        original = outcome.original_result if outcome.result == Result.DUPLICATE else None
        kept_by_server = Result.CONFLICT in (outcome.result, original)
        rejected = Result.REJECTED in (outcome.result, original)
        if kept_by_server or rejected:
            self._adopt_server(key, outcome.entry if kept_by_server else None, rejected)
            if self._on_conflict is not None:
                self._on_conflict(key, outcome)
        self._db.execute("DELETE FROM queue WHERE mutation_id = ?", (outcome.mutation_id,))

    @_locked
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

    @_locked
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

    def _apply_all(self, changes: list[Change], cursor: str, *, reset: bool = False) -> None:
        """Apply changes and store the cursor after them, in one local transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if reset:
                self._db.execute("DELETE FROM entries WHERE key NOT IN (SELECT key FROM queue)")
            for change in changes:
                self._apply(change)
            self._set_meta("cursor", cursor)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _apply(self, change: Change) -> None:
        if self._db.execute("SELECT 1 FROM queue WHERE key = ?", (change.key,)).fetchone():
            return  # a local write is waiting: it goes to the server on the next push
        if change.entry is None:  # remembered, so that a re-creation has the right base
            self._db.execute(
                "INSERT INTO entries VALUES (?, NULL, 0, '', ?, NULL) ON CONFLICT (key) DO UPDATE"
                " SET value = NULL, server_version = excluded.server_version, expires_at = NULL",
                (change.key, change.version),
            )
        else:
            self._store_entry(change.entry)

    def _store_entry(self, entry: Entry) -> None:
        data, is_json = _encode(entry.value)
        expires_at = entry.expires_at.timestamp() if entry.expires_at is not None else None
        self._db.execute(
            "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
            " value = excluded.value, is_json = excluded.is_json,"
            " content_type = excluded.content_type, server_version = excluded.server_version,"
            " expires_at = excluded.expires_at",
            (entry.key, data, int(is_json), entry.content_type, entry.version, expires_at),
        )

    # -- live sync over Stream ---------------------------------------------------------

    def run(
        self, stop: threading.Event, *, retry_delay: float = 0.5, max_delay: float = 10.0
    ) -> None:
        """Keep a Stream open until `stop` is set, reconnecting with backoff."""
        delay = retry_delay
        while not stop.is_set():
            try:
                self._stream_once(stop)
                delay = retry_delay
            except StorageError as exc:
                log.info("offline store: stream ended (%s); reconnecting", exc.reason or exc)
                if isinstance(exc, RateLimited):  # reconnect no sooner than the server asks
                    delay = max(delay, exc.retry_after)
            if stop.wait(delay):
                return
            delay = min(delay * 2, max_delay)

    def _stream_once(self, stop: threading.Event) -> None:
        with self._lock:
            if not self._meta("cursor", ""):
                self.pull()  # a Stream's empty cursor means "from now on": catch up first
            cursor = self._meta("cursor", "")
        live = _Live()
        live.send(
            sync_pb2.StreamRequest(
                hello=sync_pb2.StreamHello(
                    space=self._client._ops.space(self._space),
                    client_id=self._client_id,
                    cursor=cursor,
                    strategy=_STRATEGY_NUMBERS[Strategy(self._strategy)],
                )
            )
        )
        call = self._client._runner.bidi("Sync", "Stream", live.requests())
        ended = threading.Event()
        threading.Thread(target=_cancel_on, args=(stop, ended, call), daemon=True).start()
        try:
            for response in call:
                self._on_response(live, response)
        except grpc.RpcError as error:
            if not stop.is_set():
                raise from_rpc_error(error) from error
        finally:
            with self._lock:
                self._live = None
            ended.set()
            live.close()

    def _on_response(self, live: _Live, response: sync_pb2.StreamResponse) -> None:
        kind = response.WhichOneof("kind")
        with self._lock:
            if kind == "ready":
                self._live = live
            elif kind == "push_result":
                self._on_pushed(live, response.push_result)
            elif kind == "changes":
                changes = [decode_change(c) for c in response.changes.changes]
                self._apply_all(changes, response.changes.cursor)
        self._push_live()

    def _on_pushed(self, live: _Live, result: sync_pb2.StreamPushResult) -> None:
        keys, live.in_flight = live.in_flight, {}
        if result.HasField("status"):
            error = decode_status(result.status)
            if error.reason != "MUTATION_GAP":
                raise error
            expected = int(error.metadata.get("expected_mutation_id", "0"))
            self._db.execute("DELETE FROM queue WHERE mutation_id < ?", (expected,))
            return
        for message in result.outcomes:
            outcome = decode_outcome(message)
            self._settle(keys.get(outcome.mutation_id, ""), outcome)

    def _push_live(self) -> None:
        """On an open Stream with no push in flight: push what is queued."""
        with self._lock:
            live = self._live
            if live is None or live.in_flight:
                return
            mutations = self._queued()
            if not mutations:
                return
            live.push_id += 1
            live.in_flight = {m.mutation_id: m.key for m in mutations}
            push = sync_pb2.StreamPush(
                push_id=live.push_id, mutations=[encode_mutation(m) for m in mutations]
            )
            live.send(sync_pb2.StreamRequest(push=push))

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


_STRATEGY_NUMBERS = {
    Strategy.DEFAULT: sync_pb2.CONFLICT_STRATEGY_UNSPECIFIED,
    Strategy.LAST_WRITE_WINS: sync_pb2.CONFLICT_STRATEGY_LAST_WRITE_WINS,
    Strategy.MERGE: sync_pb2.CONFLICT_STRATEGY_MERGE,
    Strategy.MANUAL: sync_pb2.CONFLICT_STRATEGY_MANUAL,
    Strategy.KEEP_BOTH: sync_pb2.CONFLICT_STRATEGY_KEEP_BOTH,
}


class _Live:
    """The request side of one open Stream, and the push in flight on it."""

    def __init__(self) -> None:
        self._queue: queue.Queue[sync_pb2.StreamRequest | None] = queue.Queue()
        self.push_id = 0
        self.in_flight: dict[int, str] = {}

    def send(self, request: sync_pb2.StreamRequest) -> None:
        self._queue.put(request)

    def close(self) -> None:
        self._queue.put(None)

    def requests(self) -> Iterator[sync_pb2.StreamRequest]:
        while (request := self._queue.get()) is not None:
            yield request


def _cancel_on(stop: threading.Event, ended: threading.Event, call: Any) -> None:
    while not ended.is_set():
        if stop.wait(0.1):
            call.cancel()
            return
