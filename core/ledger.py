"""The inbound delivery ledger: every platform item is recorded before it is acknowledged, so that

- a retry or redelivery of an item that was processed, or is being processed, does nothing;
- an item whose processing failed is processed again (on redelivery, or by `due`, with a backoff);
- an item acknowledged by a process that then died is processed by another (`due` after its lease).

Channels key items by the platform's own id: Slack's event_id or interaction trigger_id, GitHub's
X-GitHub-Delivery, Telegram's update_id. The row keeps the payload, so that processing can be repeated
from the row alone.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from core.clock import as_utc, utcnow
from core.db import Database
from core.models import Delivery

LEASE_S = 120.0  # how long one process may take over an item before another takes it back
MAX_ATTEMPTS = 5
MAX_BACKOFF_S = 600.0


class Ledger:
    def __init__(self, db: Database, *, lease_s: float = LEASE_S) -> None:
        self.db = db
        self.lease_s = lease_s

    async def receive(self, source: str, key: str, org_id: str, payload: dict[str, Any]) -> bool:
        """Record an item as it arrives. True: this caller processes it now (it is new, or it failed, or its
        processor's lease ran out). False: it is done or in hand: acknowledge it and do nothing."""
        now = utcnow()
        lease = now + timedelta(seconds=self.lease_s)
        try:
            async with self.db.write() as session:
                query = select(Delivery).where(Delivery.source == source, Delivery.key == key)
                if not self.db.is_sqlite:
                    query = query.with_for_update()
                row = (await session.exec(query)).first()
                if row is None:
                    session.add(Delivery(source=source, key=key, org_id=org_id, payload=payload, attempts=1,
                                         next_at=lease, received_at=now))
                    return True
                row.redeliveries += 1
                taken = row.status == "failed" or (row.status == "received" and as_utc(row.next_at) <= now)
                if taken:
                    row.status, row.attempts, row.next_at = "received", row.attempts + 1, lease
                session.add(row)
                return taken
        except IntegrityError:
            return False  # another process recorded the same item at the same moment: it processes it

    async def done(self, source: str, key: str) -> None:
        async with self.db.write() as session:
            await session.exec(update(Delivery).where(col(Delivery.source) == source, col(Delivery.key) == key).values(
                status="done", done_at=utcnow(), error=None))

    async def failed(self, source: str, key: str, error: str) -> None:
        """Processing failed: tried again after a backoff, up to MAX_ATTEMPTS times in all."""
        async with self.db.write() as session:
            row = (await session.exec(select(Delivery).where(Delivery.source == source, Delivery.key == key))).first()
            if row is None:
                return
            row.status, row.error = "failed", error[:1000]
            row.next_at = utcnow() + timedelta(seconds=min(MAX_BACKOFF_S, 5.0 * 2 ** row.attempts))
            session.add(row)

    async def due(self, source: str, *, limit: int = 20) -> list[Delivery]:
        """Items to process again: abandoned ones (their lease ran out) and failed ones whose backoff is over,
        each taken by a conditional update so that of several processes exactly one gets it."""
        now = utcnow()
        async with self.db.read() as session:
            rows = list(await session.exec(
                select(Delivery).where(
                    Delivery.source == source, col(Delivery.status).in_(["received", "failed"]),
                    col(Delivery.next_at) <= now, col(Delivery.attempts) < MAX_ATTEMPTS,
                ).order_by(col(Delivery.id)).limit(limit)))
        taken: list[Delivery] = []
        for row in rows:
            async with self.db.write() as session:
                result = await session.exec(
                    update(Delivery).where(col(Delivery.id) == row.id, col(Delivery.status) == row.status,
                                           col(Delivery.attempts) == row.attempts)
                    .values(status="received", attempts=row.attempts + 1,
                            next_at=now + timedelta(seconds=self.lease_s)))
                if result.rowcount == 1:
                    taken.append(row)
        return taken

    async def get(self, source: str, key: str) -> Delivery | None:
        async with self.db.read() as session:
            return (await session.exec(
                select(Delivery).where(Delivery.source == source, Delivery.key == key))).first()
