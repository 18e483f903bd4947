"""The gateway's channels to its own gRPC port.

One HTTP/2 connection carries a bounded number of concurrent streams (the server's
per-connection limit), and a browser's Watch holds one for as long as the page is open.
So calls are spread over as many channels as needed, each carrying at most
``per_channel`` calls at once and each on its own connection (a local subchannel pool),
so that long watches never make other calls wait for a free stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import grpc


def upstream_channel(
    target: str, credentials: grpc.ChannelCredentials | None, max_message_bytes: int
) -> grpc.aio.Channel:
    """A channel with its own connection to the gRPC port: plaintext, or TLS with
    ``credentials`` (the one place that decides)."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)


@dataclass
class _Slot:
    channel: grpc.aio.Channel
    calls: int = 0


class Upstream:
    """Channels to one target, opened as concurrent calls need them."""

    def __init__(
        self,
        *,
        target: str,
        credentials: grpc.ChannelCredentials | None,
        max_message_bytes: int,
        per_channel: int,
    ) -> None:
        if per_channel < 1:
            raise ValueError("per_channel must be at least 1")
        self._target = target
        self._credentials = credentials
        self._max_message_bytes = max_message_bytes
        self._per_channel = per_channel
        self._slots: list[_Slot] = []

    @property
    def channels(self) -> int:
        """How many channels are open."""
        return len(self._slots)

    @contextlib.contextmanager
    def lease(self) -> Iterator[grpc.aio.Channel]:
        """A channel for one call, counted as busy until the block ends: the least busy
        one with room, else a new one."""
        slot = min(self._slots, key=lambda s: s.calls, default=None)
        if slot is None or slot.calls >= self._per_channel:
            slot = _Slot(upstream_channel(self._target, self._credentials, self._max_message_bytes))
            self._slots.append(slot)
        slot.calls += 1
        try:
            yield slot.channel
        finally:
            slot.calls -= 1

    async def close(self) -> None:
        """Close every channel (calls still open on them are cancelled)."""
        slots, self._slots = self._slots, []
        for slot in slots:
            await slot.channel.close(None)
