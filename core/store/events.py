"""The append-only event log: written in the same transaction as the change it describes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.clock import utcnow
from core.people.access import Principal, Scope
from core.store.bulk import each
from core.store.db import Database
from core.store.models import Event, table_of


async def record(
    session: AsyncSession,
    principal: Principal,
    category: str,
    name: str,
    *,
    agent_id: str | None = None,
    task_id: str | None = None,
    session_id: str | None = None,
    payload: dict[str, Any] | None = None,
) -> None:
    """An event, written at once in the session's transaction with one Core INSERT: every turn's start and end
    writes one, and an ORM object per event cost more to build and flush than the statement (bench/README.md)."""
    await record_rows(session, [event_row(principal, category, name, agent_id=agent_id, task_id=task_id,
                                          session_id=session_id, payload=payload)])


def event_row(
    principal: Principal, category: str, name: str, *, agent_id: str | None = None, task_id: str | None = None,
    session_id: str | None = None, payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An event's row, for `record_rows`."""
    return {"org_id": principal.org_id, "agent_id": agent_id, "task_id": task_id, "session_id": session_id,
            "category": category, "name": name, "actor": principal.actor, "payload": payload or {},
            "occurred_at": utcnow()}


async def record_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Events (`event_row`), written in the session's transaction with one INSERT: many rows in one statement."""
    if rows:
        await (await session.connection()).execute(_RECORD, each(rows))


_RECORD = insert(table_of(Event))


class Events:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def list(
        self, principal: Principal, *, agent_id: str | None = None, limit: int = 50, before_id: int | None = None
    ) -> list[Event]:
        """Newest first."""
        principal.require(Scope.READ, "reading events")
        query = select(Event).where(Event.org_id == principal.org_id)
        if agent_id:
            query = query.where(Event.agent_id == agent_id)
        if before_id:
            query = query.where(col(Event.id) < before_id)
        async with self.db.read() as session:
            rows = await session.exec(query.order_by(col(Event.id).desc()).limit(max(1, min(limit, 500))))
            return list(rows)
