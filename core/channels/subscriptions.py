"""Approval channels: places (a Slack channel, a Telegram chat, a GitHub issue, a console) where a project's
confirmation prompts are posted as well as in the task's own thread, and where their decisions edit them.

A subscription is a Thread bound to a project and to no task (core.channels.outbox.threads_for sends prompts to
it); one per place and project (a unique index: subscribing twice, or from two replicas at once, is one).
`unsubscribe` ends it instead of deleting it: no new prompt goes there, and the prompts it already shows still
hear their decisions, so no button is left there that looks alive after its question was answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.clock import utcnow
from core.commands.grammar import Where
from core.errors import Conflict
from core.ids import new_id
from core.people.access import Principal, Scope
from core.projects import resolve_project
from core.store.db import Database
from core.store.events import record
from core.store.models import Project, Thread

MAX_LISTED = 500


@dataclass(frozen=True)
class Subscription:
    project: str  # its name
    channel: str
    address: str
    since: datetime


class Subscriptions:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def subscribe(self, principal: Principal, place: Where, project: str) -> tuple[Project, bool]:
        """Make `place` an approval channel of `project`; returns it and whether it was not one already."""
        principal.require(Scope.APPROVE, "subscribing a place to a project's approvals")
        for attempt in range(2):
            try:
                async with self.db.write() as session:
                    proj = await resolve_project(session, principal.org_id, project)
                    thread = await self._find(session, principal.org_id, place, proj.id)
                    if thread is not None and thread.ended_at is None:
                        return proj, False
                    if thread is None:
                        thread = Thread(id=new_id("thr"), org_id=principal.org_id, channel=place.channel,
                                        address=place.address, project_id=proj.id)
                    thread.ended_at = None  # subscribed again: the same thread, its messages edited as before
                    session.add(thread)
                    await record(session, principal, "project", "project.subscribed",
                                 payload=self._payload(proj, place))
                    return proj, True
            except Conflict:  # the same subscription made at the same moment elsewhere: it is there now
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def unsubscribe(self, principal: Principal, place: Where, project: str) -> tuple[Project, bool]:
        """`place` is no longer an approval channel of `project`; returns it and whether it was one."""
        principal.require(Scope.APPROVE, "unsubscribing a place from a project's approvals")
        async with self.db.write() as session:
            proj = await resolve_project(session, principal.org_id, project)
            thread = await self._find(session, principal.org_id, place, proj.id)
            if thread is None or thread.ended_at is not None:
                return proj, False
            thread.ended_at = utcnow()
            session.add(thread)
            await record(session, principal, "project", "project.unsubscribed", payload=self._payload(proj, place))
            return proj, True

    async def list(self, principal: Principal, place: Where | None = None) -> list[Subscription]:
        """The approval channels of the org, or of one place, by project name."""
        principal.require(Scope.READ, "listing subscriptions")
        query = select(Thread, Project).join(Project, col(Project.id) == col(Thread.project_id)).where(
            Thread.org_id == principal.org_id, col(Thread.task_id).is_(None), col(Thread.ended_at).is_(None))
        if place is not None:
            query = query.where(Thread.channel == place.channel, Thread.address == place.address)
        async with self.db.read() as session:
            rows = list(await session.exec(query.order_by(col(Project.name), col(Thread.channel),
                                                          col(Thread.address)).limit(MAX_LISTED)))
        return [Subscription(p.name, t.channel, t.address, t.created_at) for t, p in rows]

    @staticmethod
    async def _find(session: AsyncSession, org_id: str, place: Where, project_id: str) -> Thread | None:
        return (await session.exec(select(Thread).where(
            Thread.org_id == org_id, Thread.channel == place.channel, Thread.address == place.address,
            Thread.project_id == project_id, col(Thread.task_id).is_(None)))).first()

    @staticmethod
    def _payload(project: Project, place: Where) -> dict[str, str]:
        return {"project": project.name, "channel": place.channel, "address": place.address}
