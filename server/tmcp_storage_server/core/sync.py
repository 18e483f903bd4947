"""Sync: idempotent pushes, cursor pulls, status, and conflict records.

Push rules (DESIGN.md, "Precise semantics"): ids in a request rise by exactly one
(else INVALID_ARGUMENT, before anything is applied); the first id above the client's last
applied id must be last + 1 (else OUT_OF_RANGE ``MUTATION_GAP`` with the expected id);
ids at or below it are DUPLICATE with the stored outcome. The whole push is one locked
transaction on the space: each mutation commits under its own revision, its outcome and
the client's new last id are written in the same transaction. A permanent failure
(InvalidArgument, QuotaExceeded) is REJECTED and still advances the id; anything else
(the database unavailable) rolls back everything and advances nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from tmcp_storage_server.core import validate
from tmcp_storage_server.core.access import Action, authorize
from tmcp_storage_server.core.commands import (
    MutationCommand,
    MutationReport,
    PullPage,
    PushReport,
    SyncStatus,
)
from tmcp_storage_server.core.conflicts import apply_mutation, validate_mutation
from tmcp_storage_server.core.cursor import Cursor
from tmcp_storage_server.core.ports import ChangesPage, Clock, Repository
from tmcp_storage_server.core.writes import Writer, WriteSession
from tmcp_storage_server.errors import (
    InvalidArgument,
    OutOfRange,
    PermissionDenied,
    QuotaExceeded,
    TooManyOperations,
    from_rejection,
    rejection,
)
from tmcp_storage_server.model import (
    ConflictStrategy,
    Outcome,
    Principal,
    PushResult,
    Space,
    SyncClient,
)

MAX_MUTATIONS = 1000
MAX_CLIENT_ID_BYTES = 128
PERMANENT = (InvalidArgument, QuotaExceeded)
"""Failures that a retry cannot fix: the mutation is REJECTED and its id consumed."""


def validate_client_id(client_id: str, *, required: bool = True) -> str:
    """1-128 bytes without control characters."""
    if not client_id:
        if required:
            raise InvalidArgument("client_id", "client_id is required", reason="INVALID_CLIENT_ID")
        return client_id
    if len(client_id.encode()) > MAX_CLIENT_ID_BYTES or any(
        ord(c) < 0x20 or ord(c) == 0x7F for c in client_id
    ):
        raise InvalidArgument(
            "client_id",
            f"client_id must be 1-{MAX_CLIENT_ID_BYTES} bytes without control characters",
            reason="INVALID_CLIENT_ID",
        )
    return client_id


def check_sequence(mutations: Sequence[MutationCommand]) -> None:
    """Ids are positive and rise by exactly one through the request."""
    if len(mutations) > MAX_MUTATIONS:
        raise TooManyOperations("mutations", len(mutations), MAX_MUTATIONS)
    for index, m in enumerate(mutations):
        if m.mutation_id < 1:
            raise InvalidArgument(
                "mutations.mutation_id", "mutation ids start at 1", reason="INVALID_MUTATION_ID"
            )
        if index and m.mutation_id != mutations[index - 1].mutation_id + 1:
            raise InvalidArgument(
                "mutations.mutation_id",
                "mutation ids in a push must rise by exactly one",
                reason="INVALID_MUTATION_ID",
            )


def _duplicate(mutation_id: int, key: str, stored: Outcome | None) -> MutationReport:
    if stored is None:  # compacted: the id was applied, its details are forgotten
        return MutationReport(
            PushResult.DUPLICATE, Outcome(mutation_id, PushResult.DUPLICATE, key, 0)
        )
    error = from_rejection(stored.rejection) if stored.rejection is not None else None
    return MutationReport(PushResult.DUPLICATE, stored, error=error)


class SyncService:
    """Push, Pull and GetStatus (conflict records: ``ConflictService``)."""

    def __init__(
        self,
        *,
        repository: Repository,
        writer: Writer,
        clock: Clock,
        app_strategies: Mapping[str, ConflictStrategy] | None = None,
    ) -> None:
        self._repository = repository
        self._writer = writer
        self._clock = clock
        self._app_strategies = dict(app_strategies or {})
        self.push_outcomes: Counter[PushResult] = Counter()
        """Pushed mutations by outcome, counted once their push committed (metrics)."""

    def strategy_for(self, space: Space, requested: ConflictStrategy) -> ConflictStrategy:
        """The request's strategy, else the app's configured default, else LAST_WRITE_WINS."""
        if requested is not ConflictStrategy.UNSPECIFIED:
            return requested
        return self._app_strategies.get(space.app_id, ConflictStrategy.LAST_WRITE_WINS)

    async def push(
        self,
        principal: Principal,
        space: Space,
        client_id: str,
        mutations: Sequence[MutationCommand],
        strategy: ConflictStrategy,
    ) -> PushReport:
        """Apply a client's queued mutations in order, exactly once each."""
        authorize(principal, validate.space(space), Action.WRITE)
        validate_client_id(client_id)
        check_sequence(mutations)
        chosen = self.strategy_for(space, strategy)
        # The rate limit counts mutations, duplicates included (known only under the lock).
        cost = max(1, len(mutations))
        async with self._writer.session(space, self._clock.now(), cost=cost) as session:
            client = await session.tx.sync_client(client_id)
            if client is not None and client.owner != principal.subject:
                raise PermissionDenied(
                    "client_id belongs to another user in this space", reason="CLIENT_FORBIDDEN"
                )
            last = client.last_mutation_id if client is not None else 0
            if mutations and mutations[0].mutation_id > last + 1:
                raise OutOfRange(
                    f"mutation {mutations[0].mutation_id} skips ahead; expected {last + 1}",
                    reason="MUTATION_GAP",
                    metadata={"expected_mutation_id": str(last + 1), "client_id": client_id},
                )
            reports = await self._duplicates(session, client_id, mutations, last)
            fresh = [m for m in mutations if m.mutation_id > last]
            for m in fresh:
                reports.append(await self._apply(session, m, chosen, client_id))
            await session.tx.save_outcomes(
                client_id, [r.outcome for r in reports[-len(fresh) :]] if fresh else []
            )
            last = max(last, mutations[-1].mutation_id) if mutations else last
            await session.tx.save_sync_client(
                SyncClient(
                    client_id,
                    principal.subject,
                    last,
                    session.now,
                    client.last_pull_at if client is not None else None,
                )
            )
        self.push_outcomes.update(r.result for r in reports)
        return PushReport(reports, last, session.revision, session.usage)

    async def _duplicates(
        self, session: WriteSession, client_id: str, mutations: Sequence[MutationCommand], last: int
    ) -> list[MutationReport]:
        seen = [m for m in mutations if m.mutation_id <= last]
        if not seen:
            return []
        stored = await session.tx.outcomes(client_id, seen[0].mutation_id, seen[-1].mutation_id)
        by_id = {o.mutation_id: o for o in stored}
        return [_duplicate(m.mutation_id, m.key, by_id.get(m.mutation_id)) for m in seen]

    async def _apply(
        self, session: WriteSession, m: MutationCommand, strategy: ConflictStrategy, client_id: str
    ) -> MutationReport:
        try:
            checked = validate_mutation(m, session.limits.max_value_bytes)
            return await apply_mutation(session, checked, strategy, client_id)
        except PERMANENT as exc:
            session.discard()
            outcome = Outcome(
                m.mutation_id, PushResult.REJECTED, m.key, 0, rejection=rejection(exc)
            )
            return MutationReport(PushResult.REJECTED, outcome, error=exc)

    async def pull(
        self, principal: Principal, space: Space, cursor: str, limit: int, client_id: str
    ) -> PullPage:
        """The current state of every key changed after ``cursor``, in revision order."""
        authorize(principal, validate.space(space), Action.READ)
        validate_client_id(client_id, required=False)
        position = Cursor.decode(cursor)
        size = validate.page_size(limit, default=1000, maximum=1000)
        page = await self._read(space, position, size + 1)
        reset = not position.snapshot and position.revision <= page.horizon
        if reset:
            position = Cursor.start()
            page = await self._read(space, position, size + 1)
        changes = page.changes[:size]
        has_more = len(page.changes) > size
        if has_more:
            tail = changes[-1]
            snapshot = position.snapshot and tail.revision <= page.horizon
            next_cursor = Cursor(tail.revision, tail.key, snapshot)
        else:
            next_cursor = Cursor.after_revision(page.revision)
        last_id = 0
        if client_id:
            last_id = await self._repository.mark_pulled(space, client_id, self._clock.now())
        return PullPage(changes, next_cursor.encode(), has_more, reset, last_id, page.revision)

    async def _read(self, space: Space, position: Cursor, limit: int) -> ChangesPage:
        return await self._repository.changed_since(
            space,
            revision=position.revision,
            key=position.key,
            prefix="",
            limit=limit,
            now=self._clock.now(),
        )

    async def hello(self, principal: Principal, space: Space, client_id: str) -> SyncStatus:
        """Open a Stream: the caller may write the space and owns (or will own) the id."""
        authorize(principal, validate.space(space), Action.WRITE)
        validate_client_id(client_id)
        status = await self.status(principal, space, client_id)
        if status.client is not None and status.client.owner != principal.subject:
            raise PermissionDenied(
                "client_id belongs to another user in this space", reason="CLIENT_FORBIDDEN"
            )
        return status

    async def status(self, principal: Principal, space: Space, client_id: str) -> SyncStatus:
        """The server cursor and what the server knows of a client."""
        authorize(principal, validate.space(space), Action.READ)
        validate_client_id(client_id, required=False)
        page = await self._read(space, Cursor.start(), 0)
        client = await self._repository.sync_client(space, client_id) if client_id else None
        return SyncStatus(
            page.revision,
            Cursor.after_revision(page.revision).encode(),
            client,
            page.open_conflicts,
            page.horizon,
            page.horizon_time,
        )
