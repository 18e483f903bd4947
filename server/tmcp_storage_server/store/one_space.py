"""``Repository.transaction`` in terms of ``transactions``, for every repository."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Generic, Protocol, TypeVar

from tmcp_storage_server.model import Space

T_co = TypeVar("T_co", covariant=True)
T = TypeVar("T")


class _Transactions(Protocol[T_co]):
    def transactions(
        self, requests: Mapping[Space, Sequence[str]]
    ) -> AbstractAsyncContextManager[Mapping[Space, T_co]]: ...


class OneSpaceMixin(Generic[T]):
    """Adds ``transaction(space, keys)``: ``transactions`` with one space."""

    @asynccontextmanager
    async def transaction(
        self: _Transactions[T], space: Space, keys: Sequence[str] = ()
    ) -> AsyncIterator[T]:
        """A write transaction on ``space`` alone (see ``transactions``)."""
        async with self.transactions({space: keys}) as spaces:
            yield spaces[space]
