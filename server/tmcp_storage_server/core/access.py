"""Who may do what to which space (DESIGN.md, "Authentication and authorization").

- ``storage:operator`` reaches every space of every app.
- ``storage:admin`` reaches every space of its own app, and manages its quotas.
- Any other token reaches its own space (``user_id == sub``) with ``storage:read`` /
  ``storage:write``, and reads its app's shared space (``user_id == ""``).
"""

from __future__ import annotations

import enum

from tmcp_storage_server.errors import PermissionDenied
from tmcp_storage_server.model import Principal, Scope, Space


class Action(enum.Enum):
    """What a call does to a space."""

    READ = Scope.READ
    WRITE = Scope.WRITE
    ADMIN = Scope.ADMIN


def authorize(principal: Principal, space: Space, action: Action) -> None:
    """Raise ``PermissionDenied`` unless ``principal`` may do ``action`` on ``space``."""
    scopes = principal.scopes
    if Scope.OPERATOR in scopes:
        return
    if space.app_id != principal.app_id:
        raise PermissionDenied(
            f"token of app {principal.app_id!r} does not reach app {space.app_id!r}",
            reason="SPACE_FORBIDDEN",
        )
    if Scope.ADMIN in scopes:
        return
    if action is Action.ADMIN:
        raise PermissionDenied("this call needs scope storage:admin", reason="SCOPE_MISSING")
    own = space.user_id == principal.subject and principal.subject != ""
    if not own and not (space.shared and action is Action.READ):
        raise PermissionDenied(
            "token does not reach this space"
            + (" (writing the shared space needs storage:admin)" if space.shared else ""),
            reason="SCOPE_MISSING" if space.shared else "SPACE_FORBIDDEN",
        )
    if action.value not in scopes:
        raise PermissionDenied(f"this call needs scope {action.value}", reason="SCOPE_MISSING")


def authorize_app(principal: Principal, app_id: str) -> None:
    """Raise unless ``principal`` administers ``app_id``."""
    if Scope.OPERATOR in principal.scopes:
        return
    if principal.app_id != app_id:
        raise PermissionDenied(
            f"token of app {principal.app_id!r} does not reach app {app_id!r}",
            reason="SPACE_FORBIDDEN",
        )
    if Scope.ADMIN not in principal.scopes:
        raise PermissionDenied("this call needs scope storage:admin", reason="SCOPE_MISSING")
