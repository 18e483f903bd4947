"""Batch servicer: convert, call core, convert."""

from __future__ import annotations

from tmcp.storage.v1 import batch_pb2, batch_pb2_grpc, types_pb2

from tmcp_storage_server.api import convert
from tmcp_storage_server.api.auth import TokenVerifier
from tmcp_storage_server.api.handler import unary
from tmcp_storage_server.core.batch import BatchService
from tmcp_storage_server.core.commands import (
    BadOperation,
    DeleteCommand,
    GetCommand,
    ItemResult,
    Operation,
    PutCommand,
)
from tmcp_storage_server.errors import InvalidArgument, StorageError
from tmcp_storage_server.model import Principal


def _set(item: batch_pb2.BatchSetItem) -> PutCommand | BadOperation:
    try:
        return convert.put_command(item)
    except StorageError as error:  # an undecodable value fails this item only
        return BadOperation(item.key, error)


def _delete(item: batch_pb2.BatchDeleteItem) -> DeleteCommand:
    expected = item.expected_version if item.HasField("expected_version") else None
    return DeleteCommand(item.key, expected)


def _operation(op: batch_pb2.Operation) -> Operation:
    kind = op.WhichOneof("kind")
    if kind == "get":
        return GetCommand(op.get.key)
    if kind == "set":
        return _set(op.set)
    if kind == "delete":
        return _delete(op.delete)
    return BadOperation("", InvalidArgument("kind", "operation has no get, set or delete"))


def _fill(
    message: batch_pb2.BatchGetResult | batch_pb2.BatchSetResult | batch_pb2.OperationResult,
    result: ItemResult,
    *,
    with_value: bool,
) -> None:
    """An empty result of a response, filled in place: key, status and entry."""
    message.key = result.key
    convert.fill_status(message.status, result.error)
    if result.entry is not None:
        convert.fill_entry(message.entry, result.entry, with_value=with_value)


class BatchServicer(batch_pb2_grpc.BatchServicer):
    """``tmcp.storage.v1.Batch``."""

    def __init__(self, *, service: BatchService, auth: TokenVerifier) -> None:
        self.service = service
        self.auth = auth

    @unary
    async def BatchGet(
        self, request: batch_pb2.BatchGetRequest, principal: Principal
    ) -> batch_pb2.BatchGetResponse:
        result = await self.service.batch_get(
            principal,
            convert.space(request.space),
            list(request.keys),
            strong=request.consistency == types_pb2.CONSISTENCY_STRONG,
        )
        response = batch_pb2.BatchGetResponse()
        response.header.revision = result.revision
        add = response.results.add
        for r in result.results:
            message = add(found=r.found)
            _fill(message, r, with_value=True)
        return response

    @unary
    async def BatchSet(
        self, request: batch_pb2.BatchSetRequest, principal: Principal
    ) -> batch_pb2.BatchSetResponse:
        items = [_set(item) for item in request.items]
        result = await self.service.batch_set(
            principal, convert.space(request.space), items, request.atomic
        )
        response = batch_pb2.BatchSetResponse(
            usage=convert.usage(result.usage) if result.usage else None
        )
        response.header.revision = result.revision
        add = response.results.add
        for r in result.results:
            _fill(add(), r, with_value=False)
        return response

    @unary
    async def BatchDelete(
        self, request: batch_pb2.BatchDeleteRequest, principal: Principal
    ) -> batch_pb2.BatchDeleteResponse:
        items = [_delete(item) for item in request.items]
        result = await self.service.batch_delete(
            principal, convert.space(request.space), items, request.atomic
        )
        response = batch_pb2.BatchDeleteResponse(
            usage=convert.usage(result.usage) if result.usage else None
        )
        response.header.revision = result.revision
        add = response.results.add
        for r in result.results:
            message = add(key=r.key, deleted=r.deleted)
            convert.fill_status(message.status, r.error)
        return response

    @unary
    async def Execute(
        self, request: batch_pb2.ExecuteRequest, principal: Principal
    ) -> batch_pb2.ExecuteResponse:
        operations = [_operation(op) for op in request.operations]
        result = await self.service.execute(
            principal, convert.space(request.space), operations, request.atomic
        )
        response = batch_pb2.ExecuteResponse(
            usage=convert.usage(result.usage) if result.usage else None
        )
        response.header.revision = result.revision
        add = response.results.add
        for r, op in zip(result.results, operations, strict=True):
            message = add(found=r.found, deleted=r.deleted)
            # a get returns the value; a set returns the entry without it
            _fill(message, r, with_value=isinstance(op, GetCommand))
        return response
