"""Every client operation, defined once: arguments in, a `Call` out.

`Client` and `AsyncClient` hand the `Call` built here to their runner, so the request
building, the defaults and the response parsing are shared by both entry points and can
be tested without a server.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from tmcp.storage.v1 import kv_pb2, quota_pb2, types_pb2

from tmcp_storage import codec
from tmcp_storage.calls import Call, PagedCall
from tmcp_storage.models import (
    AppUsage,
    ContentTypeUsage,
    DeletePrefixResult,
    DeleteResult,
    Entry,
    KeySize,
    PutResult,
    QuotaInfo,
    QuotaLimits,
    Space,
    SpaceUsage,
    UsageInfo,
)


class Operations:
    """Builds the `Call` of each operation, filling in the default space."""

    def __init__(self, *, space: Space | None) -> None:
        self._space = space

    def space(self, space: Space | None) -> types_pb2.Space:
        """The space a call targets: the given one, else the client's default."""
        chosen = space if space is not None else self._space
        if chosen is None:
            raise ValueError("no space: pass space=Space(app_id, user_id) to the call or client")
        return codec.encode_space(chosen)

    def get(
        self, key: str, *, strong: bool, space: Space | None
    ) -> Call[kv_pb2.GetResponse, Entry]:
        """Read one entry; STRONG consistency bypasses the server's caches."""
        consistency = types_pb2.CONSISTENCY_STRONG if strong else types_pb2.CONSISTENCY_UNSPECIFIED
        request = kv_pb2.GetRequest(space=self.space(space), key=key, consistency=consistency)
        return Call(service="KeyValue", method="Get", request=request, parse=_get_entry)

    def put(
        self,
        key: str,
        value: object,
        *,
        content_type: str | None,
        expected_version: int | None,
        ttl: float | timedelta | None,
        expires_at: datetime | None,
        keep_ttl: bool,
        metadata: Mapping[str, str] | None,
        space: Space | None,
    ) -> Call[kv_pb2.PutResponse, PutResult]:
        """Create or replace an entry."""
        request = kv_pb2.PutRequest(
            space=self.space(space),
            key=key,
            value=codec.encode_value(value),
            content_type=content_type or "",
            expected_version=expected_version,
            ttl=codec.encode_ttl(ttl) if ttl is not None else None,
            expires_at=codec.encode_timestamp(expires_at) if expires_at is not None else None,
            keep_ttl=keep_ttl,
            metadata=dict(metadata) if metadata else None,
        )
        return Call(service="KeyValue", method="Put", request=request, parse=_put_result)

    def delete(
        self, key: str, *, expected_version: int | None, space: Space | None
    ) -> Call[kv_pb2.DeleteResponse, DeleteResult]:
        """Delete one key, optionally only at a given version."""
        request = kv_pb2.DeleteRequest(
            space=self.space(space), key=key, expected_version=expected_version
        )
        return Call(service="KeyValue", method="Delete", request=request, parse=_delete_result)

    def list(
        self,
        prefix: str,
        *,
        page_size: int,
        include_values: bool,
        max_bytes: int | None,
        space: Space | None,
    ) -> PagedCall[kv_pb2.ListRequest, kv_pb2.ListResponse, Entry]:
        """List the entries under a prefix in key order, page after page."""
        request = kv_pb2.ListRequest(
            space=self.space(space),
            prefix=prefix,
            page_size=page_size,
            include_values=include_values,
            max_bytes=max_bytes or 0,
        )
        return PagedCall(
            service="KeyValue",
            method="List",
            request=request,
            items=_list_entries,
            next_request=next_list_request,
        )

    def touch(
        self,
        key: str,
        *,
        ttl: float | timedelta | None,
        expires_at: datetime | None,
        clear_ttl: bool,
        space: Space | None,
    ) -> Call[kv_pb2.TouchResponse, Entry]:
        """Set, refresh or clear a key's expiry without writing a new version."""
        request = kv_pb2.TouchRequest(
            space=self.space(space),
            key=key,
            ttl=codec.encode_ttl(ttl) if ttl is not None else None,
            expires_at=codec.encode_timestamp(expires_at) if expires_at is not None else None,
            clear_ttl=clear_ttl,
        )
        return Call(service="KeyValue", method="Touch", request=request, parse=_touch_entry)

    def delete_prefix(
        self, prefix: str, *, space: Space | None
    ) -> Call[kv_pb2.DeletePrefixResponse, DeletePrefixResult]:
        """Delete every key under a prefix in one revision."""
        request = kv_pb2.DeletePrefixRequest(space=self.space(space), prefix=prefix)
        return Call(
            service="KeyValue", method="DeletePrefix", request=request, parse=_delete_prefix
        )

    def quota(self, *, space: Space | None) -> Call[quota_pb2.GetQuotaResponse, QuotaInfo]:
        """Read a space's limits and usage."""
        request = quota_pb2.GetQuotaRequest(space=self.space(space))
        return Call(service="Quota", method="GetQuota", request=request, parse=_quota_info)

    def usage(
        self, *, top_keys: int, space: Space | None
    ) -> Call[quota_pb2.GetUsageResponse, UsageInfo]:
        """Read a space's detailed usage."""
        request = quota_pb2.GetUsageRequest(space=self.space(space), top_keys=top_keys)
        return Call(service="Quota", method="GetUsage", request=request, parse=_usage_info)

    def set_quota(
        self,
        *,
        app_id: str | None,
        space: Space | None,
        limit_bytes: int | None,
        limit_keys: int | None,
        max_value_bytes: int | None,
        reset: bool,
    ) -> Call[quota_pb2.SetQuotaResponse, QuotaLimits]:
        """Set the limit overrides of an app (when `app_id` is given) or of a space."""
        limits = codec.encode_limits(
            limit_bytes=limit_bytes, limit_keys=limit_keys, max_value_bytes=max_value_bytes
        )
        if app_id is not None:
            if space is not None:
                raise ValueError("set_quota takes app_id or space, not both")
            request = quota_pb2.SetQuotaRequest(app_id=app_id, limits=limits, reset=reset)
        else:
            request = quota_pb2.SetQuotaRequest(space=self.space(space), limits=limits, reset=reset)
        return Call(service="Quota", method="SetQuota", request=request, parse=_overrides)

    def app_usage(
        self, app_id: str, *, top_spaces: int
    ) -> Call[quota_pb2.GetAppUsageResponse, AppUsage]:
        """Read the totals over every space of an app."""
        request = quota_pb2.GetAppUsageRequest(app_id=app_id, top_spaces=top_spaces)
        return Call(service="Quota", method="GetAppUsage", request=request, parse=_app_usage)


def next_list_request(
    request: kv_pb2.ListRequest, response: kv_pb2.ListResponse
) -> kv_pb2.ListRequest | None:
    """The request for the next page of a listing, or None after the last page."""
    if not response.next_page_token:
        return None
    following = kv_pb2.ListRequest()
    following.CopyFrom(request)
    following.page_token = response.next_page_token
    return following


def _get_entry(response: kv_pb2.GetResponse) -> Entry:
    return codec.decode_entry(response.entry)


def _put_result(response: kv_pb2.PutResponse) -> PutResult:
    return PutResult(
        entry=codec.decode_entry(response.entry),
        usage=codec.decode_usage(response.usage),
        revision=response.header.revision,
    )


def _delete_result(response: kv_pb2.DeleteResponse) -> DeleteResult:
    return DeleteResult(
        deleted=response.deleted,
        usage=codec.decode_usage(response.usage),
        revision=response.header.revision,
    )


def _list_entries(response: kv_pb2.ListResponse) -> list[Entry]:
    return [codec.decode_entry(entry) for entry in response.entries]


def _touch_entry(response: kv_pb2.TouchResponse) -> Entry:
    return codec.decode_entry(response.entry)


def _delete_prefix(response: kv_pb2.DeletePrefixResponse) -> DeletePrefixResult:
    return DeletePrefixResult(
        deleted_count=response.deleted_count,
        usage=codec.decode_usage(response.usage),
        revision=response.header.revision,
    )


def _quota_info(response: quota_pb2.GetQuotaResponse) -> QuotaInfo:
    usage = response.usage
    return QuotaInfo(
        used_bytes=usage.used_bytes,
        limit_bytes=usage.limit_bytes,
        used_keys=usage.used_keys,
        limit_keys=usage.limit_keys,
        max_value_bytes=usage.max_value_bytes,
        available_bytes=response.available_bytes,
        available_keys=response.available_keys,
        revision=response.header.revision,
    )


def _usage_info(response: quota_pb2.GetUsageResponse) -> UsageInfo:
    return UsageInfo(
        usage=codec.decode_usage(response.usage),
        by_content_type=tuple(
            ContentTypeUsage(content_type=item.content_type, bytes=item.bytes, keys=item.keys)
            for item in response.by_content_type
        ),
        expiring_keys=response.expiring_keys,
        expiring_bytes=response.expiring_bytes,
        open_conflicts=response.open_conflicts,
        largest_keys=tuple(KeySize(key=item.key, size=item.size) for item in response.largest_keys),
        revision=response.header.revision,
    )


def _overrides(response: quota_pb2.SetQuotaResponse) -> QuotaLimits:
    return codec.decode_limits(response.overrides)


def _app_usage(response: quota_pb2.GetAppUsageResponse) -> AppUsage:
    return AppUsage(
        app_id=response.app_id,
        spaces=response.spaces,
        used_bytes=response.used_bytes,
        used_keys=response.used_keys,
        overrides=codec.decode_limits(response.overrides),
        largest_spaces=tuple(
            SpaceUsage(space=codec.decode_space(item.space), usage=codec.decode_usage(item.usage))
            for item in response.largest_spaces
        ),
    )
