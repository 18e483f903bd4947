"""Background sweep: expired entries become tombstones with an EXPIRE change.

Reads already hide expired entries and every write sweeps its own space first; this
sweep makes expiry a change that sync clients receive even in spaces nobody writes.
"""

from __future__ import annotations

import logging

from tmcp_storage_server.core.ports import Clock, Repository
from tmcp_storage_server.core.writes import Writer
from tmcp_storage_server.model import Space

log = logging.getLogger(__name__)


class Sweeper:
    """Sweeps spaces that hold expired entries."""

    def __init__(
        self, *, repository: Repository, writer: Writer, clock: Clock, batch: int = 100
    ) -> None:
        self._repository = repository
        self._writer = writer
        self._clock = clock
        self._batch = batch

    async def sweep_once(self) -> int:
        """Sweep up to one batch of spaces; returns how many spaces were swept."""
        spaces = await self._repository.spaces_with_expired(self._clock.now(), self._batch)
        for space in spaces:
            await self.sweep(space)
        return len(spaces)

    async def sweep_all(self) -> tuple[int, int]:
        """Sweep batches until none is full: the spaces that had due entries, and how
        many entries expired."""
        spaces = entries = 0
        while True:
            due = await self._repository.spaces_with_expired(self._clock.now(), self._batch)
            for space in due:
                swept = await self.sweep(space)
                spaces += 1 if swept else 0
                entries += swept
            if len(due) < self._batch:
                return spaces, entries

    async def sweep(self, space: Space) -> int:
        """Sweep one space now; returns how many entries expired."""
        async with self._writer.session(space, self._clock.now(), cost=0) as session:
            pass  # opening a session sweeps the space (the server's own work: free)
        return len(session.saved)
