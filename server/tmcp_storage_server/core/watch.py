"""Watch: catch-up from a cursor, then live changes, read from the log at the
subscriber's pace.

A subscriber holds only its cursor and one batch: every read is ``changed_since`` from
the cursor (one snapshot, at most ``batch`` keys), so a lost or coalesced wake-up can
delay a change but never drop it, and memory per subscriber is bounded whatever the
write rate. Wake-ups come from the change feed; a periodic poll is the safety net. The
api layer ends a subscriber whose pending message waits while it falls more than
``max_lag`` revisions behind (``lag``), and every stream at shutdown (``close``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from time import monotonic

from tmcp_storage_server.core import validate
from tmcp_storage_server.core.access import Action, authorize
from tmcp_storage_server.core.cursor import Cursor
from tmcp_storage_server.core.ports import ChangeFeed, ChangesPage, Clock, Repository
from tmcp_storage_server.errors import OutOfRange, SlowConsumer, Unavailable
from tmcp_storage_server.model import ChangedKey, Principal, Space, record


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """How watches behave."""

    heartbeat: float = 15.0
    """Seconds of silence after which a heartbeat with the cursor is sent."""
    max_lag: int = 10_000
    """Revisions a subscriber may fall behind while a message waits for it."""
    poll: float = 5.0
    """Seconds between reads without a wake-up (the safety net)."""
    batch: int = 100
    """Changed keys per read, hence per message."""


@record
class WatchEvent:
    """Changes (or a heartbeat) and the cursor that resumes after them."""

    changes: list[ChangedKey]
    cursor: str
    revision: int
    heartbeat: bool = False


class WatchService:
    """Serves Watch streams."""

    def __init__(
        self, *, repository: Repository, feed: ChangeFeed, clock: Clock, settings: WatchSettings
    ) -> None:
        self._repository = repository
        self._feed = feed
        self._clock = clock
        self.settings = settings
        self._closing = False

    def close(self) -> None:
        """End every stream (with UNAVAILABLE and its cursor) and refuse new ones."""
        self._closing = True
        self._feed.wake_all()

    async def lag(self, space: Space, cursor: str) -> int:
        """How many revisions the space is ahead of ``cursor``."""
        state = await self._repository.space_state(space)
        return max(0, state.revision - Cursor.decode(cursor).revision + 1)

    def slow(self, cursor: str) -> SlowConsumer:
        """The error that ends a subscriber that fell behind."""
        return SlowConsumer(
            f"the watcher fell more than {self.settings.max_lag} revisions behind",
            metadata={"cursor": cursor},
        )

    async def _read(self, space: Space, position: Cursor, prefix: str) -> ChangesPage:
        return await self._repository.changed_since(
            space,
            revision=position.revision,
            key=position.key,
            prefix=prefix,
            limit=self.settings.batch,
            now=self._clock.now(),
        )

    async def watch(
        self, principal: Principal, space: Space, cursor: str, prefix: str
    ) -> AsyncGenerator[WatchEvent, None]:
        """Events from ``cursor`` ("" = from now on), until the caller stops or closes."""
        authorize(principal, validate.space(space), Action.READ)
        validate.prefix(prefix, "key_prefix")
        position = Cursor.decode(cursor) if cursor else None
        with self._feed.subscribe(space) as wakeup:
            first = True
            last_sent = monotonic()
            while not self._closing:
                page = await self._read(space, position or Cursor.start(), prefix)
                if position is None:  # "from now on"
                    position = Cursor.after_revision(page.revision)
                    yield WatchEvent([], position.encode(), page.revision, heartbeat=True)
                    last_sent = monotonic()
                    continue
                if first and not position.snapshot and position.revision <= page.horizon:
                    raise OutOfRange(
                        "the cursor is older than the retained history; Pull to reset",
                        reason="CURSOR_COMPACTED",
                        metadata={"horizon_revision": str(page.horizon)},
                    )
                first = False
                full = len(page.changes) >= self.settings.batch
                if full:
                    tail = page.changes[-1]
                    position = Cursor(tail.revision, tail.key)
                else:
                    position = Cursor.after_revision(max(page.revision, position.revision - 1))
                if page.changes:
                    yield WatchEvent(page.changes, position.encode(), page.revision)
                    last_sent = monotonic()
                    if full:
                        continue
                silence = self.settings.heartbeat - (monotonic() - last_sent)
                if silence <= 0:
                    yield WatchEvent([], position.encode(), page.revision, heartbeat=True)
                    last_sent = monotonic()
                    continue
                await wakeup.wait(min(silence, self.settings.poll))
            closing = Unavailable("the server is shutting down; resume from the cursor")
            closing.metadata["cursor"] = position.encode() if position else cursor
            raise closing
