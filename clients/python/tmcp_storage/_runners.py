"""The two ways of executing a `Call`: blocking, and on asyncio.

They differ only in how they wait (a blocking call and `time.sleep`, or `await` and
`asyncio.sleep`); the token, deadline, retry decisions and error translation come from
`Settings` and `Attempts`, so the two stay the same by construction.
"""

# `timeout` is the gRPC deadline, which the server sees and honours; asyncio.timeout
# (what ASYNC109 suggests) would only cancel the client's side.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import Message
from tmcp.storage.v1 import batch_pb2_grpc, kv_pb2_grpc, quota_pb2_grpc, sync_pb2_grpc

from tmcp_storage._settings import Settings
from tmcp_storage.calls import Call, ItemT, PagedCall, RequestT, ResponseT, ResultT, StreamCall
from tmcp_storage.errors import from_rpc_error


def _stubs(channel: grpc.Channel | grpc.aio.Channel) -> dict[str, Any]:
    return {
        "KeyValue": kv_pb2_grpc.KeyValueStub(channel),
        "Quota": quota_pb2_grpc.QuotaStub(channel),
        "Batch": batch_pb2_grpc.BatchStub(channel),
        "Sync": sync_pb2_grpc.SyncStub(channel),
    }


class BlockingRunner:
    """Executes calls on a `grpc.Channel`, blocking the calling thread."""

    def __init__(self, channel: grpc.Channel, settings: Settings) -> None:
        self._stubs = _stubs(channel)
        self._settings = settings

    def run(self, call: Call[ResponseT, ResultT], timeout: float | None) -> ResultT:
        """Execute a unary call and parse its response."""
        return call.parse(self._invoke(call.service, call.method, call.request, timeout))

    def pages(
        self, call: PagedCall[RequestT, ResponseT, ItemT], timeout: float | None
    ) -> Iterator[ItemT]:
        """Yield the items of every page; `timeout` applies to each page."""
        request: RequestT | None = call.request
        while request is not None:
            response = self._invoke(call.service, call.method, request, timeout)
            yield from call.items(response)
            request = call.next_request(request, response)

    def stream(self, call: StreamCall[ResponseT, ItemT]) -> Iterator[ItemT]:
        """Yield an item per message until the server ends the stream; closing the
        iterator cancels the call."""
        stub_method = getattr(self._stubs[call.service], call.method)
        responses = stub_method(call.request, metadata=self._settings.metadata())
        try:
            for response in responses:
                yield call.parse(response)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        finally:
            responses.cancel()

    def bidi(self, service: str, method: str, requests: Iterator[Message]) -> Any:
        """Open a bidi stream (for the offline store); the caller iterates and cancels
        the returned call, and translates its errors."""
        stub_method = getattr(self._stubs[service], method)
        return stub_method(requests, metadata=self._settings.metadata())

    def _invoke(self, service: str, method: str, request: Message, timeout: float | None) -> Any:
        stub_method = getattr(self._stubs[service], method)
        attempts = self._settings.retry.start(self._settings.call_timeout(timeout))
        while True:
            try:
                return stub_method(
                    request, timeout=attempts.timeout(), metadata=self._settings.metadata()
                )
            except grpc.RpcError as error:
                time.sleep(attempts.failed(error))


class AsyncRunner:
    """Executes calls on a `grpc.aio.Channel`."""

    def __init__(self, channel: grpc.aio.Channel, settings: Settings) -> None:
        self._stubs = _stubs(channel)
        self._settings = settings

    async def run(self, call: Call[ResponseT, ResultT], timeout: float | None) -> ResultT:
        """Execute a unary call and parse its response."""
        return call.parse(await self._invoke(call.service, call.method, call.request, timeout))

    async def pages(
        self, call: PagedCall[RequestT, ResponseT, ItemT], timeout: float | None
    ) -> AsyncIterator[ItemT]:
        """Yield the items of every page; `timeout` applies to each page."""
        request: RequestT | None = call.request
        while request is not None:
            response = await self._invoke(call.service, call.method, request, timeout)
            for item in call.items(response):
                yield item
            request = call.next_request(request, response)

    async def stream(self, call: StreamCall[ResponseT, ItemT]) -> AsyncIterator[ItemT]:
        """Yield an item per message until the server ends the stream; closing the
        iterator cancels the call."""
        stub_method = getattr(self._stubs[call.service], call.method)
        responses = stub_method(call.request, metadata=self._settings.metadata())
        try:
            async for response in responses:
                yield call.parse(response)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        finally:
            responses.cancel()

    async def _invoke(
        self, service: str, method: str, request: Message, timeout: float | None
    ) -> Any:
        stub_method = getattr(self._stubs[service], method)
        attempts = self._settings.retry.start(self._settings.call_timeout(timeout))
        while True:
            try:
                return await stub_method(
                    request, timeout=attempts.timeout(), metadata=self._settings.metadata()
                )
            except grpc.RpcError as error:
                await asyncio.sleep(attempts.failed(error))
