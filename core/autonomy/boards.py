"""The approvals page's rows in one read (issue 20's dashboard): what waits for a decision and what was decided last,
with every vote cast on them and their tasks' names. Reading only: deciding is core.autonomy.confirmations'."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement
from sqlmodel import col, select

from core.autonomy.plans import Status
from core.people.access import Principal, Scope
from core.sessions.rows import shown_confirmations
from core.store.db import Database
from core.store.models import Confirmation, Task, Vote


@dataclass(frozen=True)
class Board:
    """The approvals page's rows (ApprovalBoards.of)."""

    pending: list[Confirmation]
    decided: list[Confirmation]
    votes: dict[str, list[Vote]]  # by confirmation id, in the order they were cast
    task_names: dict[str, str]  # by task id


class ApprovalBoards:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def of(self, principal: Principal, *, decided: int = 20, limit: int = 100) -> Board:
        """What an approvals page shows, in one read: the pending confirmations oldest first (at most `limit`), the
        last `decided` decisions newest first (people's, expiries and voids; not the policy's own at asking time,
        which nobody waited for), every vote cast on them, and their tasks' names."""
        principal.require(Scope.READ, "listing confirmations")
        shown: list[ColumnElement[bool]] = [col(Confirmation.org_id) == principal.org_id,
                                             *shown_confirmations(principal)]
        async with self.db.read() as session:
            pending = list(await session.exec(
                select(Confirmation).where(*shown, Confirmation.status == Status.PENDING.value)
                .order_by(col(Confirmation.created_at), col(Confirmation.id)).limit(max(1, min(limit, 500)))))
            done = list(await session.exec(
                select(Confirmation).where(*shown, Confirmation.status != Status.PENDING.value,
                                           col(Confirmation.decided_at).is_not(None),
                                           col(Confirmation.decided_via) != "policy")
                .order_by(col(Confirmation.decided_at).desc(), col(Confirmation.id).desc())
                .limit(max(0, min(decided, 100)))))
            ids = [c.id for c in pending + done]
            votes: dict[str, list[Vote]] = {i: [] for i in ids}
            if ids:
                for vote in await session.exec(select(Vote).where(col(Vote.confirmation_id).in_(ids))
                                               .order_by(col(Vote.at), col(Vote.id))):
                    votes[vote.confirmation_id].append(vote)
            task_ids = {c.task_id for c in pending + done if c.task_id}
            names = {str(i): str(n) for i, n in await session.exec(
                select(Task.id, Task.name).where(Task.org_id == principal.org_id,
                                                 col(Task.id).in_(task_ids)))} if task_ids else {}
        return Board(pending, done, votes, names)
