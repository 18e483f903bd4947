"""The in-process cache level: an LRU of reads, bounded in bytes, where newer wins.

Each item is a read of one key (its live entry, or None for "absent") at a space
revision. Items are ordered by **rank**: ``2 * revision + 1`` for a read, ``2 * revision``
for an invalidation marker (a key changed at that revision, value unknown). An item is
only ever replaced by one of the same or higher rank, so a read that started before a
write and finishes after it can never put the older value back.

Markers are kept only while a load of their key is in flight (``begin`` … ``end``): that
is the only time an older read can arrive. Should the bytes bound evict the item of a key
that is being loaded, or should ``flush`` run, the **generation** moves on and every
in-flight fill that began under the old generation is refused.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from tmcp_storage_server.model import Entry

CacheKey = tuple[str, str, str]
"""(app_id, user_id, key)."""

ITEM_OVERHEAD = 960
"""Bytes an item costs beyond its value, key and metadata: the Entry, its datetimes,
checksum and strings, the read, the cache key and the LRU slot. Measured with tracemalloc
over 20,000 items built as database rows are (own objects each, 100 B values): 1,065 B per
item, of which this formula counts 108 in value and key."""


def read_rank(revision: int) -> int:
    """The rank of a read made at ``revision``."""
    return 2 * revision + 1


def marker_rank(revision: int) -> int:
    """The rank of a change announced at ``revision``: above every read before it,
    below a read at that revision."""
    return 2 * revision


@dataclass(slots=True)
class CachedRead:
    """A read of one key: its live entry (None: absent) at a space revision, made at
    ``read_at`` and valid until ``valid_until`` (seconds since the epoch)."""

    entry: Entry | None
    revision: int
    read_at: float
    valid_until: float


@dataclass(slots=True)
class _Item:
    rank: int
    read: CachedRead | None  # None: a marker
    size: int


def _size(key: CacheKey, read: CachedRead | None) -> int:
    size = ITEM_OVERHEAD + len(key[0]) + len(key[1]) + len(key[2])
    entry = read.entry if read is not None else None
    if entry is not None:
        size += entry.size
        if entry.metadata:
            size += sum(len(k) + len(v) for k, v in entry.metadata.items())
    return size


class L1Cache:
    """Per-process LRU of ``CachedRead`` by ``CacheKey``, at most ``max_bytes``
    (0: disabled, every lookup misses and nothing is kept)."""

    def __init__(self, *, max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.generation = 0
        self.bytes = 0
        self._items: OrderedDict[CacheKey, _Item] = OrderedDict()
        self._loading: dict[CacheKey, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def lookup(self, key: CacheKey, *, max_age: float | None = None) -> CachedRead | None:
        """The cached read of ``key`` if still valid (and, when ``max_age`` is given, read
        at most that many seconds ago); None on a miss."""
        item = self._items.get(key)
        if item is None or item.read is None:
            return None
        read, now = item.read, self.clock()
        if now >= read.valid_until or (max_age is not None and now - read.read_at >= max_age):
            self._retire(key, item)
            return None
        self._items.move_to_end(key)
        return read

    def begin(self, key: CacheKey) -> int:
        """A load of ``key`` starts; returns the generation to pass to ``fill``."""
        self._loading[key] = self._loading.get(key, 0) + 1
        return self.generation

    def end(self, key: CacheKey) -> None:
        """The load begun with ``begin`` is over (filled or not)."""
        left = self._loading.pop(key) - 1
        if left:
            self._loading[key] = left
            return
        item = self._items.get(key)
        if item is not None and item.read is None:
            self._remove(key, item)

    def fill(self, key: CacheKey, read: CachedRead, *, generation: int) -> bool:
        """Keep ``read`` unless something newer is known, the generation moved on since
        the load began, or it is no longer valid. Returns whether the read is current as
        far as this cache knows (also when the cache is disabled)."""
        if generation != self.generation:
            return False
        return self.put(key, read)

    def put(self, key: CacheKey, read: CachedRead) -> bool:
        """Keep ``read`` unless an item of higher rank is cached (what the write path
        uses: its reads are the newest there are)."""
        item = self._items.get(key)
        rank = read_rank(read.revision)
        if item is not None and item.rank > rank:
            return False
        if self.max_bytes == 0:
            return True
        if read.valid_until <= self.clock():
            if item is not None:
                self._retire(key, item, rank)
            return True
        self._store(key, _Item(rank, read, _size(key, read)))
        return True

    def invalidate(self, key: CacheKey, revision: int) -> None:
        """``key`` changed at ``revision``: drop what is older; remember the revision while
        a load of the key is in flight."""
        item = self._items.get(key)
        rank = marker_rank(revision)
        if item is not None and item.rank >= rank:
            return
        if key in self._loading:
            self._store(key, _Item(rank, None, _size(key, None)))
        elif item is not None:
            self._remove(key, item)

    def flush(self) -> None:
        """Forget everything (invalidations may have been missed); in-flight fills are
        refused."""
        self._items.clear()
        self.bytes = 0
        self.generation += 1

    def _retire(self, key: CacheKey, item: _Item, rank: int | None = None) -> None:
        """An item that may no longer be served: a marker while its key is loading."""
        if key in self._loading:
            self._store(key, _Item(max(item.rank, rank or 0), None, _size(key, None)))
        else:
            self._remove(key, item)

    def _store(self, key: CacheKey, item: _Item) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        self._items[key] = item
        self.bytes += item.size
        while self.bytes > self.max_bytes and self._items:
            victim, evicted = self._items.popitem(last=False)
            self.bytes -= evicted.size
            if victim in self._loading:
                # Its rank was the guard against an older fill in flight: refuse them all.
                self.generation += 1

    def _remove(self, key: CacheKey, item: _Item) -> None:
        del self._items[key]
        self.bytes -= item.size
