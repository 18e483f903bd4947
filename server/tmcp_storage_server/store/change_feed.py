"""Change feeds: wake the watchers of a space after a commit.

``LocalChangeFeed`` wakes subscribers in this process. ``PostgresChangeFeed`` adds
PostgreSQL LISTEN/NOTIFY so that commits in any process reach every process: the
statement that saves a space's writes NOTIFYs ``CHANNEL`` with the space (sent at COMMIT,
in the same transaction: no statement of its own), ``notify`` wakes local subscribers at
once, and a listener connection turns notifications into local wake-ups. Wake-ups carry no data:
subscribers always re-read the changes log from their cursor, and poll it now and then,
so a lost notification (a dropped listener connection) delays a change, never drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import psycopg

from tmcp_storage_server.model import Space

log = logging.getLogger(__name__)

CHANNEL = "tmcp_storage_changes"
SEPARATOR = "\x1f"
"""Between app and user in a notification's payload."""
_RECONNECT_DELAY = 1.0


class _Signal:
    """One subscriber's wake-up flag."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        return True


class LocalChangeFeed:
    """Wakes subscribers of this process."""

    def __init__(self) -> None:
        self._subscribers: dict[Space, set[_Signal]] = {}

    @contextlib.contextmanager
    def subscribe(self, space: Space) -> Iterator[_Signal]:
        """A wake-up signal for ``space`` while the block runs."""
        signal = _Signal()
        self._subscribers.setdefault(space, set()).add(signal)
        try:
            yield signal
        finally:
            subscribers = self._subscribers.get(space)
            if subscribers is not None:
                subscribers.discard(signal)
                if not subscribers:
                    del self._subscribers[space]

    def wake(self, space: Space) -> None:
        """Wake this process's subscribers of ``space``."""
        for signal in self._subscribers.get(space, ()):
            signal.set()

    def notify(self, space: Space) -> None:
        """A commit to ``space``: wake its subscribers."""
        self.wake(space)

    def wake_all(self) -> None:
        """Wake everyone (shutdown)."""
        for subscribers in self._subscribers.values():
            for signal in subscribers:
                signal.set()

    async def stop(self) -> None:
        """Nothing runs in the background of a local feed."""

    @property
    def subscriber_count(self) -> int:
        """How many subscribers are registered (for metrics and tests)."""
        return sum(len(s) for s in self._subscribers.values())


class PostgresChangeFeed(LocalChangeFeed):
    """Local wake-ups plus LISTEN across processes (the repository's commits NOTIFY)."""

    def __init__(self, *, url: str) -> None:
        super().__init__()
        self._url = url
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start the listener."""
        self._tasks = [asyncio.create_task(self._listen(), name="feed-listen")]

    async def stop(self) -> None:
        """Stop the listener."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url,
                    autocommit=True,
                    connect_timeout=5,
                    application_name="tmcp-storage-feed",
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.wake_all()  # reconnected: notifications may have been missed
                    async for note in conn.notifies():
                        app_id, _, user_id = note.payload.partition(SEPARATOR)
                        self.wake(Space(app_id, user_id))
            except psycopg.Error as exc:
                log.warning("change feed: listener lost (%s); reconnecting", exc)
                await asyncio.sleep(_RECONNECT_DELAY)
