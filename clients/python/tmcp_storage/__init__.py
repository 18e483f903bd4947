"""Python client of the TMCP mini-app storage service.

    from tmcp_storage import Client, Space, NotFound

    with Client("localhost:50051", token=token, space=Space("app", "user-1")) as client:
        client.put("profile", {"name": "Ada"})
        entry = client.get("profile")

`AsyncClient` offers the same methods as coroutines (and `list` as an async iterator).
Errors are `StorageError` subclasses, drawn in `tmcp_storage.errors`.
"""

from tmcp_storage.aio import AsyncClient
from tmcp_storage.client import Client
from tmcp_storage.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    ResourceExhausted,
    StorageError,
    Unauthenticated,
    Unavailable,
    VersionConflict,
)
from tmcp_storage.models import (
    AppUsage,
    BatchResult,
    ContentTypeUsage,
    DeleteItem,
    DeletePrefixResult,
    DeleteResult,
    Entry,
    GetItem,
    ItemResult,
    KeySize,
    PutResult,
    QuotaInfo,
    QuotaLimits,
    QuotaUsage,
    SetItem,
    Space,
    SpaceUsage,
    UsageInfo,
)
from tmcp_storage.offline import OfflineStore
from tmcp_storage.sync_models import (
    Change,
    Conflict,
    Mutation,
    MutationOutcome,
    PullResult,
    PushResult,
    Result,
    Strategy,
    SyncStatus,
    WatchEvent,
)
from tmcp_storage.tls import Tls

__all__ = [
    "AlreadyExists",
    "AppUsage",
    "AsyncClient",
    "BatchResult",
    "Change",
    "Client",
    "Conflict",
    "ContentTypeUsage",
    "DeadlineExceeded",
    "DeleteItem",
    "DeletePrefixResult",
    "DeleteResult",
    "Entry",
    "FailedPrecondition",
    "GetItem",
    "Internal",
    "InvalidArgument",
    "ItemResult",
    "KeySize",
    "Mutation",
    "MutationOutcome",
    "NotFound",
    "OfflineStore",
    "OutOfRange",
    "PermissionDenied",
    "PullResult",
    "PushResult",
    "PutResult",
    "QuotaExceeded",
    "QuotaInfo",
    "QuotaLimits",
    "QuotaUsage",
    "RateLimited",
    "ResourceExhausted",
    "Result",
    "SetItem",
    "Space",
    "SpaceUsage",
    "StorageError",
    "Strategy",
    "SyncStatus",
    "Tls",
    "Unauthenticated",
    "Unavailable",
    "UsageInfo",
    "VersionConflict",
    "WatchEvent",
]
