"""Sessions: create and read. A session groups tasks toward one piece of work (ARCHITECTURE section 2)."""

from __future__ import annotations

import secrets
from typing import Any

from core.clock import utcnow
from core.errors import ValidationFailed
from core.people.access import Principal, Scope
from core.sessions.rows import find_session
from core.store.db import Database
from core.store.events import record
from core.store.models import Session as Session  # the record this service returns
from core.tasks.budget import Budget
from core.tasks.steering import MAX_PROMPT, owner_of
from core.textcheck import free_text


def new_session_id() -> str:
    return f"sess_{secrets.token_hex(8)}"


class Sessions:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, principal: Principal, *, task: str = "", label: str | None = None, agent: str | None = None,
        budget: Budget | None = None, origin: dict[str, Any] | None = None,
    ) -> Session:
        principal.require(Scope.WRITE, "creating a session")
        task = free_text((task or "").strip(), "the task")
        if len(task) > MAX_PROMPT:
            raise ValidationFailed(f"a session's task is at most {MAX_PROMPT} characters", code="INVALID_TASK")
        label = free_text((label or "").strip(), "the label") or (task.splitlines()[0] if task else "session")
        owner_id, owner_name = owner_of(principal)
        limits = budget or Budget()
        now = utcnow()
        row = Session(
            id=new_session_id(), org_id=principal.org_id, label=label[:200], task=task, default_agent=agent,
            owner_id=owner_id, owner_name=owner_name, origin=origin or {}, max_turns=limits.max_turns,
            max_minutes=limits.max_minutes, max_cost=limits.max_cost, created_at=now, updated_at=now,
            last_activity_at=now,
        )
        async with self.db.write() as session:
            session.add(row)
            await record(session, principal, "session", "session.created", session_id=row.id,
                         payload={"label": row.label, "workflowMode": row.workflow_mode})
        return row

    async def get(self, principal: Principal, session_id: str) -> Session:
        principal.require(Scope.READ, "reading sessions")
        async with self.db.read() as session:
            return await find_session(session, principal.org_id, session_id)
