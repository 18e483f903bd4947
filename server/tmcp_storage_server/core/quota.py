"""Quota: usage reports and limit overrides."""

from __future__ import annotations

from dataclasses import dataclass

from tmcp_storage_server.core import validate
from tmcp_storage_server.core.access import Action, authorize, authorize_app
from tmcp_storage_server.core.ports import Clock, Repository
from tmcp_storage_server.core.writes import effective_limits, usage_of
from tmcp_storage_server.errors import InvalidArgument
from tmcp_storage_server.model import (
    AppUsage,
    LimitOverrides,
    Principal,
    QuotaLimits,
    QuotaUsage,
    Space,
    SpaceState,
    UsageDetail,
)


@dataclass(frozen=True, slots=True)
class SetQuotaResult:
    """The target's overrides after SetQuota, and a space target's usage."""

    overrides: LimitOverrides
    usage: QuotaUsage | None


def _check_overrides(overrides: LimitOverrides) -> None:
    for name in ("limit_bytes", "limit_keys"):
        amount = getattr(overrides, name)
        if amount is not None and amount < 0:
            raise InvalidArgument(f"limits.{name}", f"{name} must not be negative")
    if overrides.max_value_bytes is not None and not (
        0 < overrides.max_value_bytes <= validate.MAX_VALUE_BYTES
    ):
        raise InvalidArgument(
            "limits.max_value_bytes",
            f"max_value_bytes must be 1..{validate.MAX_VALUE_BYTES}",
        )


class QuotaService:
    """GetQuota, GetUsage, SetQuota and GetAppUsage."""

    def __init__(self, *, repository: Repository, defaults: QuotaLimits, clock: Clock) -> None:
        self._repository = repository
        self._defaults = defaults
        self._clock = clock

    async def usage(self, space: Space) -> tuple[QuotaUsage, int]:
        """A space's usage under its effective limits, and its revision."""
        state = await self._repository.space_state(space)
        return usage_of(state, effective_limits(self._defaults, state)), state.revision

    async def get_quota(self, principal: Principal, space: Space) -> tuple[QuotaUsage, int]:
        """Limits and usage of a space."""
        authorize(principal, validate.space(space), Action.READ)
        return await self.usage(space)

    async def get_usage(
        self, principal: Principal, space: Space, top_keys: int
    ) -> tuple[QuotaUsage, UsageDetail, int]:
        """Usage with detail: by content type, expiring, conflicts, largest keys."""
        authorize(principal, validate.space(space), Action.READ)
        top = validate.page_size(top_keys, default=10, maximum=100)
        usage, revision = await self.usage(space)
        detail = await self._repository.usage_detail(space, self._clock.now(), top)
        return usage, detail, revision

    async def set_quota(
        self,
        principal: Principal,
        *,
        app_id: str,
        user_id: str | None,
        overrides: LimitOverrides,
        reset: bool,
    ) -> SetQuotaResult:
        """Set limit overrides of an app (``user_id`` None) or of one space."""
        authorize_app(principal, app_id)
        space = validate.space(Space(app_id, user_id or ""), "target")
        _check_overrides(overrides)
        stored = await self._repository.set_overrides(app_id, user_id, overrides, reset)
        usage = (await self.usage(space))[0] if user_id is not None else None
        return SetQuotaResult(stored, usage)

    async def app_usage(self, principal: Principal, app_id: str, top_spaces: int) -> AppUsage:
        """Totals over every space of an app."""
        authorize_app(principal, app_id)
        validate.space(Space(app_id, ""), "app_id")
        top = validate.page_size(top_spaces, default=10, maximum=100)
        return await self._repository.app_usage(app_id, top)

    def usage_under(
        self, space: LimitOverrides, app: LimitOverrides, used_bytes: int, used_keys: int
    ) -> QuotaUsage:
        """Usage of a listed space under its effective limits."""
        state = SpaceState(0, used_bytes, used_keys, space, app)
        return usage_of(state, effective_limits(self._defaults, state))
