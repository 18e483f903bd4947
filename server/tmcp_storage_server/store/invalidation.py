"""Invalidations between processes: the message, and the Redis subscriber that hears them.

A message says "these keys of this space changed at this revision". Every process applies
the messages of the others to its L1 (``L1Cache.invalidate``). Pub/sub delivers at most
once, so the subscriber treats any doubt as a lost message: when its connection fails
(or PING goes unanswered) it reports Redis down, and it reports Redis up again only after
it has subscribed anew, so that ``on_up`` (which flushes the L1) runs after which no
message can be missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol

import redis.asyncio as redis

from tmcp_storage_server.model import Space, record

log = logging.getLogger(__name__)

PING_EVERY = 0.5
"""Seconds between PINGs on the subscription; two unanswered ones mean Redis is down."""
RECONNECT_DELAY = 0.25
MAX_MESSAGE_BYTES = 64 * 1024


@record
class Invalidation:
    """``keys`` of ``space`` changed at ``revision``, announced by process ``origin``."""

    origin: str
    space: Space
    revision: int
    keys: tuple[str, ...]

    def encode(self) -> bytes:
        """The message on the wire."""
        body = {
            "o": self.origin,
            "a": self.space.app_id,
            "u": self.space.user_id,
            "r": self.revision,
            "k": self.keys,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Invalidation:
        """The message ``encode`` wrote; ValueError (or KeyError) when malformed."""
        body = json.loads(data)
        return cls(body["o"], Space(body["a"], body["u"]), int(body["r"]), tuple(body["k"]))


def messages(
    origin: str,
    space: Space,
    revision: int,
    keys: Sequence[str],
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> Iterator[bytes]:
    """The invalidations of ``keys``, each message at most ``max_bytes``."""
    base = len(Invalidation(origin, space, revision, ()).encode())
    chunk: list[str] = []
    size = base
    for key in keys:
        cost = len(json.dumps(key)) + 1
        if chunk and size + cost > max_bytes:
            yield Invalidation(origin, space, revision, tuple(chunk)).encode()
            chunk, size = [], base
        chunk.append(key)
        size += cost
    if chunk:
        yield Invalidation(origin, space, revision, tuple(chunk)).encode()


class Notifier(Protocol):
    """Publishes invalidations where there is no Redis to carry them."""

    max_message_bytes: int

    async def publish(self, payload: Sequence[bytes]) -> None:
        """Send the messages; ``OSError`` (ConnectionError) when unreachable."""
        ...

    async def reconnect(self) -> None:
        """Start afresh after an outage; ``OSError`` when still unreachable."""
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...


class ChannelSubscriber:
    """What every invalidation channel shares: deliver messages, and after any failure
    report the channel down, wait, and listen anew. A subclass opens one listening
    ``_session`` (which calls ``_up`` once it can no longer miss a message) and names the
    errors that mean the channel is unreachable."""

    transient: tuple[type[BaseException], ...] = (OSError, ConnectionError)

    def __init__(
        self,
        *,
        channel: str,
        on_message: Callable[[Invalidation], None],
        on_up: Callable[[], Awaitable[None]],
        on_down: Callable[[str], None],
    ) -> None:
        self._channel = channel
        self._on_message = on_message
        self._on_up = on_up
        self._on_down = on_down
        self._recheck = asyncio.Event()

    def recheck(self) -> None:
        """A publish failed elsewhere: listen anew (and so flush) before trusting it."""
        self._recheck.set()

    async def run(self) -> None:
        """Until cancelled: listen, deliver messages, and reconnect after failures."""
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except self.transient as exc:
                self._on_down(f"{type(exc).__name__}: {exc}")
            except Exception as exc:
                log.exception("invalidation channel failed")
                self._on_down(type(exc).__name__)
            await asyncio.sleep(RECONNECT_DELAY)

    async def _session(self) -> None:
        raise NotImplementedError

    async def _up(self) -> None:
        self._recheck.clear()
        await self._on_up()

    def _deliver(self, data: bytes) -> None:
        try:
            invalidation = Invalidation.decode(data)
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed invalidation message")
            return
        self._on_message(invalidation)


class RedisSubscriber(ChannelSubscriber):
    """Keeps a subscription to ``channel`` and reports Redis down and up."""

    transient = (redis.RedisError, OSError, ConnectionError)

    def __init__(
        self,
        *,
        client: redis.Redis,
        channel: str,
        on_message: Callable[[Invalidation], None],
        on_up: Callable[[], Awaitable[None]],
        on_down: Callable[[str], None],
    ) -> None:
        super().__init__(channel=channel, on_message=on_message, on_up=on_up, on_down=on_down)
        self._client = client

    async def _session(self) -> None:
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            await self._confirmed(pubsub)
            await self._up()
            await self._listen(pubsub)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _confirmed(self, pubsub: Any) -> None:
        deadline = time.monotonic() + 2 * PING_EVERY
        while time.monotonic() < deadline:
            message = await pubsub.get_message(timeout=PING_EVERY)
            if message is not None and message["type"] == "subscribe":
                return
        raise ConnectionError("subscription not confirmed")

    async def _listen(self, pubsub: Any) -> None:
        last_heard = time.monotonic()
        next_ping = last_heard + PING_EVERY
        while not self._recheck.is_set():
            message = await pubsub.get_message(timeout=PING_EVERY / 2)
            now = time.monotonic()
            if message is not None:
                last_heard = now
                if message["type"] == "message":
                    self._deliver(message["data"])
            if now >= next_ping:
                if now - last_heard > 2 * PING_EVERY + PING_EVERY / 2:
                    raise ConnectionError("Redis stopped answering PING")
                await pubsub.ping()
                next_ping = now + PING_EVERY
        raise ConnectionError("a Redis call failed")
