"""Batch operations (BatchGet, BatchSet, BatchDelete, Execute) as `Call`s.

Like `operations`, pure: requests built and responses parsed here, executed by a runner.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.rpc import status_pb2
from tmcp.storage.v1 import batch_pb2, types_pb2

from tmcp_storage import codec
from tmcp_storage.calls import Call
from tmcp_storage.errors import StorageError, build_error, decode_detail, grpc_code
from tmcp_storage.models import BatchResult, DeleteItem, Entry, GetItem, ItemResult, SetItem

Operation = GetItem | SetItem | DeleteItem


def item_error(status: status_pb2.Status) -> StorageError | None:
    """The error of one batch item, or None when its status is OK."""
    if status.code == 0:
        return None
    details = [decode_detail(d) for d in status.details]
    return build_error(grpc_code(status.code), status.message, details)


def _set_item(item: SetItem) -> batch_pb2.BatchSetItem:
    return batch_pb2.BatchSetItem(
        key=item.key,
        value=codec.encode_value(item.value),
        content_type=item.content_type or "",
        expected_version=item.expected_version,
        ttl=codec.encode_ttl(item.ttl) if item.ttl is not None else None,
        expires_at=codec.encode_timestamp(item.expires_at) if item.expires_at else None,
        keep_ttl=item.keep_ttl,
        metadata=dict(item.metadata) if item.metadata else None,
    )


def _delete_item(item: DeleteItem | str) -> batch_pb2.BatchDeleteItem:
    if isinstance(item, str):
        return batch_pb2.BatchDeleteItem(key=item)
    return batch_pb2.BatchDeleteItem(key=item.key, expected_version=item.expected_version)


def _operation(op: Operation) -> batch_pb2.Operation:
    if isinstance(op, GetItem):
        return batch_pb2.Operation(get=batch_pb2.GetOperation(key=op.key))
    if isinstance(op, SetItem):
        return batch_pb2.Operation(set=_set_item(op))
    return batch_pb2.Operation(delete=_delete_item(op))


def _entry(
    message: batch_pb2.BatchGetResult | batch_pb2.BatchSetResult | batch_pb2.OperationResult,
) -> Entry | None:
    return codec.decode_entry(message.entry) if message.HasField("entry") else None


def batch_get(
    space: types_pb2.Space, keys: Sequence[str], *, strong: bool
) -> Call[batch_pb2.BatchGetResponse, BatchResult]:
    """Read many keys: one result per key, in order."""
    consistency = types_pb2.CONSISTENCY_STRONG if strong else types_pb2.CONSISTENCY_UNSPECIFIED
    request = batch_pb2.BatchGetRequest(space=space, keys=list(keys), consistency=consistency)

    def parse(response: batch_pb2.BatchGetResponse) -> BatchResult:
        results = tuple(
            ItemResult(r.key, item_error(r.status), entry=_entry(r), found=r.found)
            for r in response.results
        )
        return BatchResult(results, response.header.revision)

    return Call(service="Batch", method="BatchGet", request=request, parse=parse)


def batch_set(
    space: types_pb2.Space, items: Sequence[SetItem], *, atomic: bool
) -> Call[batch_pb2.BatchSetResponse, BatchResult]:
    """Write many entries."""
    request = batch_pb2.BatchSetRequest(
        space=space, items=[_set_item(i) for i in items], atomic=atomic
    )

    def parse(response: batch_pb2.BatchSetResponse) -> BatchResult:
        results = tuple(
            ItemResult(r.key, item_error(r.status), entry=_entry(r)) for r in response.results
        )
        return BatchResult(results, response.header.revision, codec.decode_usage(response.usage))

    return Call(service="Batch", method="BatchSet", request=request, parse=parse)


def batch_delete(
    space: types_pb2.Space, items: Sequence[DeleteItem | str], *, atomic: bool
) -> Call[batch_pb2.BatchDeleteResponse, BatchResult]:
    """Delete many keys (plain strings delete unconditionally)."""
    request = batch_pb2.BatchDeleteRequest(
        space=space, items=[_delete_item(i) for i in items], atomic=atomic
    )

    def parse(response: batch_pb2.BatchDeleteResponse) -> BatchResult:
        results = tuple(
            ItemResult(r.key, item_error(r.status), deleted=r.deleted) for r in response.results
        )
        return BatchResult(results, response.header.revision, codec.decode_usage(response.usage))

    return Call(service="Batch", method="BatchDelete", request=request, parse=parse)


def execute(
    space: types_pb2.Space, operations: Sequence[Operation], *, atomic: bool
) -> Call[batch_pb2.ExecuteResponse, BatchResult]:
    """Mixed get/set/delete in order; atomic reads see the batch's earlier writes."""
    request = batch_pb2.ExecuteRequest(
        space=space, operations=[_operation(op) for op in operations], atomic=atomic
    )

    def parse(response: batch_pb2.ExecuteResponse) -> BatchResult:
        results = tuple(
            ItemResult(
                r.key, item_error(r.status), entry=_entry(r), found=r.found, deleted=r.deleted
            )
            for r in response.results
        )
        return BatchResult(results, response.header.revision, codec.decode_usage(response.usage))

    return Call(service="Batch", method="Execute", request=request, parse=parse)
