"""Quota servicer: convert, call core, convert."""

from __future__ import annotations

from tmcp.storage.v1 import quota_pb2, quota_pb2_grpc

from tmcp_storage_server.api import convert
from tmcp_storage_server.api.auth import TokenVerifier
from tmcp_storage_server.api.handler import unary
from tmcp_storage_server.core.quota import QuotaService
from tmcp_storage_server.errors import InvalidArgument
from tmcp_storage_server.model import Principal


class QuotaServicer(quota_pb2_grpc.QuotaServicer):
    """``tmcp.storage.v1.Quota``."""

    def __init__(self, *, service: QuotaService, auth: TokenVerifier) -> None:
        self.service = service
        self.auth = auth

    @unary
    async def GetQuota(
        self, request: quota_pb2.GetQuotaRequest, principal: Principal
    ) -> quota_pb2.GetQuotaResponse:
        usage, revision = await self.service.get_quota(principal, convert.space(request.space))
        return quota_pb2.GetQuotaResponse(
            header=convert.header(revision),
            usage=convert.usage(usage),
            available_bytes=usage.available_bytes,
            available_keys=usage.available_keys,
        )

    @unary
    async def GetUsage(
        self, request: quota_pb2.GetUsageRequest, principal: Principal
    ) -> quota_pb2.GetUsageResponse:
        usage, detail, revision = await self.service.get_usage(
            principal, convert.space(request.space), request.top_keys
        )
        return quota_pb2.GetUsageResponse(
            header=convert.header(revision),
            usage=convert.usage(usage),
            by_content_type=[
                quota_pb2.ContentTypeUsage(content_type=c.content_type, bytes=c.bytes, keys=c.keys)
                for c in detail.by_content_type
            ],
            expiring_keys=detail.expiring_keys,
            expiring_bytes=detail.expiring_bytes,
            open_conflicts=detail.open_conflicts,
            largest_keys=[quota_pb2.KeySize(key=k, size=s) for k, s in detail.largest_keys],
        )

    @unary
    async def SetQuota(
        self, request: quota_pb2.SetQuotaRequest, principal: Principal
    ) -> quota_pb2.SetQuotaResponse:
        target = request.WhichOneof("target")
        if target is None:
            raise InvalidArgument("target", "set app_id or space")
        app_id = request.app_id if target == "app_id" else request.space.app_id
        user_id = request.space.user_id if target == "space" else None
        result = await self.service.set_quota(
            principal,
            app_id=app_id,
            user_id=user_id,
            overrides=convert.overrides_in(request.limits),
            reset=request.reset,
        )
        response = quota_pb2.SetQuotaResponse(overrides=convert.overrides_out(result.overrides))
        if result.usage is not None:
            response.usage.CopyFrom(convert.usage(result.usage))
        return response

    @unary
    async def GetAppUsage(
        self, request: quota_pb2.GetAppUsageRequest, principal: Principal
    ) -> quota_pb2.GetAppUsageResponse:
        usage = await self.service.app_usage(principal, request.app_id, request.top_spaces)
        return quota_pb2.GetAppUsageResponse(
            app_id=usage.app_id,
            spaces=usage.spaces,
            used_bytes=usage.used_bytes,
            used_keys=usage.used_keys,
            overrides=convert.overrides_out(usage.overrides),
            largest_spaces=[
                quota_pb2.SpaceUsage(
                    space=convert.space_pb(s.space),
                    usage=convert.usage(
                        self.service.usage_under(
                            s.overrides, usage.overrides, s.used_bytes, s.used_keys
                        )
                    ),
                )
                for s in usage.largest_spaces
            ],
        )
