"""The contract between operations and runners: a call described as data.

An operation (see `operations`) is written once as a `Call` or a `PagedCall`: which RPC,
the request, and how to read the response. A runner (see `_runners`) executes it, either
blocking or on asyncio, adding the token, deadline and retries. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)
ResultT = TypeVar("ResultT")
ItemT = TypeVar("ItemT")


@dataclass(frozen=True, kw_only=True)
class Call(Generic[ResponseT, ResultT]):
    """One unary RPC: the stub and method to call, the request, how to read the reply."""

    service: str
    """The stub: `KeyValue` or `Quota`."""
    method: str
    """The stub's method name, e.g. `Get`."""
    request: Message
    """The request message, complete."""
    parse: Callable[[ResponseT], ResultT]
    """Turns the response into what the client method returns."""


@dataclass(frozen=True, kw_only=True)
class PagedCall(Generic[RequestT, ResponseT, ItemT]):
    """A paged RPC, called again with the next request until there is none."""

    service: str
    """The stub: `KeyValue` or `Quota`."""
    method: str
    """The stub's method name, e.g. `List`."""
    request: RequestT
    """The request for the first page."""
    items: Callable[[ResponseT], Iterable[ItemT]]
    """The items of one page, in order."""
    next_request: Callable[[RequestT, ResponseT], RequestT | None]
    """The request for the page after this one, or None after the last page."""


@dataclass(frozen=True, kw_only=True)
class StreamCall(Generic[ResponseT, ItemT]):
    """A server-streaming RPC: every message is parsed into one item. No deadline (a
    stream lasts until the caller stops reading) and no retries (resume from a cursor)."""

    service: str
    """The stub: `Sync`."""
    method: str
    """The stub's method name, e.g. `Watch`."""
    request: Message
    """The request message, complete."""
    parse: Callable[[ResponseT], ItemT]
    """Turns one message into one item."""
