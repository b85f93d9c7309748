"""Approver reminders: a confirmation still pending `remind_after_s` after it was asked is asked again, as a new
message (not an edit of the prompt) in the task's threads and the project's approval channels, saying how long it
has waited and how long it has left, with the same Approve and Reject buttons; again every `remind_after_s` while
it is pending and before it expires.

The timer is the confirmation's own `remind_at` (set when it is asked, core.autonomy.confirmations.gate; cleared
when it is decided). The job claims the due rows (FOR UPDATE SKIP LOCKED on PostgreSQL, SQLite's writer lock
elsewhere) and writes the reminders' outbox rows and the next due time in the claim's transaction: any number of
processes may run it at once, and one that dies mid-run leaves nothing posted twice or lost. Each reminder has its
own key (`confirmation:<id>:reminder:<n>`); the decision edits every one of them (Confirmations.announce).
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import col, select

from core.autonomy.confirmations import Confirmations, next_reminder
from core.autonomy.plans import Status
from core.autonomy.prompts import reminder
from core.channels.outbox import enqueue, threads_for
from core.people.access import Principal
from core.sessions.rows import in_private_session
from core.store.db import Database
from core.store.events import record
from core.store.models import Confirmation, Task

BATCH = 100  # confirmations reminded in one transaction; more wait for the next run (it says so)


class Reminders:
    def __init__(self, db: Database, confirmations: Confirmations) -> None:
        self.db = db
        self.confirmations = confirmations

    async def remind_due(self, now: datetime, *, limit: int = BATCH) -> str:
        """Remind approvers of every pending confirmation whose reminder is due at `now` (the scheduler's
        `reminders` job); returns what it did, in a line."""
        every = self.confirmations.remind_after_s
        query = (select(Confirmation)
                 .where(col(Confirmation.remind_at) <= now, Confirmation.status == Status.PENDING.value,
                        col(Confirmation.expires_at) > now)
                 .order_by(col(Confirmation.remind_at), col(Confirmation.id)).limit(limit))
        if not self.db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        reminded = written = 0
        async with self.db.write() as session:
            for conf in list(await session.exec(query.execution_options(populate_existing=True))):
                task = await session.get(Task, conf.task_id) if conf.task_id else None
                conf.reminders += 1
                conf.remind_at = next_reminder(conf, every, now)
                session.add(conf)
                private = task is not None and await in_private_session(session, task.session_id)
                threads = await threads_for(session, conf.org_id, task_id=conf.task_id,
                                            project_id=None if private else conf.project_id)
                said = reminder(conf, task.name if task else None, conf.reminders, now)
                written += await enqueue(session, threads, said)
                await record(session, Principal.system(conf.org_id, "reminders"), "confirmation",
                             "confirmation.reminded", agent_id=conf.agent_id, task_id=conf.task_id,
                             payload={"confirmationId": conf.id, "code": conf.code, "reminder": conf.reminders,
                                      "threads": len(threads)})
                reminded += 1
        if not reminded:
            return "nothing due"
        more = " (more are due: the next run takes them)" if reminded >= limit else ""
        return f"reminded {reminded} confirmation{'s' if reminded != 1 else ''}, {written} messages{more}"
