"""The outbox dispatcher: delivers what core wrote to the outbox through each thread's Channel.

- Rows are claimed (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite's writer lock elsewhere) with a lease,
  so several dispatchers share the work and a crashed one's rows are picked up when its lease ends.
- A row for a message that was posted before (same thread and key) edits it in place (its MessageRef);
  of several waiting rows for one message only the newest is delivered (the others are superseded).
- A failure is retried after the platform's Retry-After or an exponential backoff (capped), for as long
  as it takes; only a permanent refusal (the chat is gone) marks the row failed. Nothing is dropped.

- Edits are paced per conversation (a Slack channel: at most one edit a second); a paced edit waits, and a
  newer version written meanwhile supersedes it, so fast-moving news becomes fewer, fresher edits.

It also expires confirmations past their time (core.confirmations.expire_due), and about once a second writes
task news for its channels' threads (core.progress): the worker's sweeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from datetime import timedelta

from sqlalchemy import update
from sqlmodel import col, select

from core.channels import Channel, DeliveryError, Message
from core.clock import utcnow
from core.models import MessageRef, Outbox
from core.service import Shepherd

log = logging.getLogger(__name__)

LEASE_S = 60.0
MAX_BACKOFF_S = 300.0


def backoff(attempts: int) -> float:
    return float(min(MAX_BACKOFF_S, 2 ** min(attempts, 10)))


class Dispatcher:
    name = "outbox"

    def __init__(
        self, shepherd: Shepherd, channels: list[Channel] | None = None, *, poll_s: float = 0.5,
        batch: int = 50, expire_every_s: float = 5.0, news_every_s: float = 1.0,
    ) -> None:
        self.shepherd = shepherd
        self.db = shepherd.db
        self.channels = {c.name: c for c in channels or []}
        self.poll_s = poll_s
        self.batch = batch
        self.expire_every_s = expire_every_s
        self.news_every_s = news_every_s
        self._news_channels = [c.name for c in channels or [] if getattr(c, "progress", False)]
        self._last_edit: dict[tuple[str, str], float] = {}
        self._last_news = 0.0
        self.node_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._wake = asyncio.Event()
        self._job: asyncio.Task[None] | None = None
        self._last_expiry = 0.0

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self.shepherd.outbox_due = self.wake
        self._job = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._job is not None:
            self._job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._job
        with contextlib.suppress(Exception):
            await self.deliver_due()  # what is due now still goes out

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s)
            self._wake.clear()
            try:
                if loop.time() - self._last_expiry >= self.expire_every_s:
                    self._last_expiry = loop.time()
                    await self.shepherd.confirmations.expire_due()
                if self._news_channels and loop.time() - self._last_news >= self.news_every_s:
                    self._last_news = loop.time()
                    await self.shepherd.progress.announce_due(self._news_channels)
                while await self.deliver_due() >= self.batch:
                    pass
            except Exception:
                log.exception("outbox pass failed; retrying")
                await asyncio.sleep(1)

    async def deliver_due(self) -> int:
        """Claim and deliver what is due for this process's channels; returns how many rows it took."""
        if not self.channels:
            return 0
        rows = await self._claim()
        for row in rows:
            await self._deliver(row)
        return len(rows)

    async def _claim(self) -> list[Outbox]:
        now = utcnow()
        query = (
            select(Outbox)
            .where(Outbox.status == "pending", col(Outbox.channel).in_(list(self.channels)),
                   col(Outbox.next_at) <= now,
                   col(Outbox.claimed_until).is_(None) | (col(Outbox.claimed_until) < now))
            .order_by(col(Outbox.id)).limit(self.batch * 4)
        )
        if not self.db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        async with self.db.write() as session:
            rows = [r for r in await session.exec(query) if self.channels[r.channel].accepts(r.address)]
            rows = rows[: self.batch]
            if rows:
                await session.exec(
                    update(Outbox).where(col(Outbox.id).in_([r.id for r in rows]))
                    .values(claimed_by=self.node_id, claimed_until=now + timedelta(seconds=LEASE_S))
                )
        return rows

    async def _deliver(self, row: Outbox) -> None:
        channel = self.channels[row.channel]
        message = Message.from_json(row.payload)
        async with self.db.read() as session:
            newer = (await session.exec(select(Outbox.id).where(
                Outbox.thread_id == row.thread_id, Outbox.key == row.key, Outbox.status == "pending",
                col(Outbox.id) > (row.id or 0)).limit(1))).first()
            earlier = (await session.exec(select(Outbox.id).where(
                Outbox.thread_id == row.thread_id, Outbox.key == row.key, Outbox.status == "pending",
                col(Outbox.id) < (row.id or 0)).limit(1))).first()
            ref = (await session.exec(select(MessageRef).where(
                MessageRef.thread_id == row.thread_id, MessageRef.key == row.key))).first()
        if newer is not None:
            await self._done(row, superseded=True)  # the newest version is delivered (posted or edited in)
            return
        if ref is None and earlier is not None:
            await self._later(row, 0.5, None)  # the first version is still on its way: it must be posted first
            return
        pace = (channel.name, channel.pace_key(row.address))
        if ref is not None and channel.pace_s:
            wait = self._last_edit.get(pace, -1e9) + channel.pace_s - asyncio.get_running_loop().time()
            if wait > 0:
                await self._later(row, wait, None)  # not a failure: a newer version may yet supersede it
                return
        try:
            if ref is not None:
                self._last_edit[pace] = asyncio.get_running_loop().time()
                await channel.update(row.address, ref.ref, message)
            else:
                self._last_edit[pace] = asyncio.get_running_loop().time()  # its first edit waits a pace too
                new_ref = await channel.post(row.address, message)
                async with self.db.write() as session:
                    session.add(MessageRef(thread_id=row.thread_id, key=row.key, ref=new_ref))
        except DeliveryError as exc:
            if exc.permanent:
                await self._failed(row, exc.message)
            else:
                await self._later(row, exc.retry_after if exc.retry_after is not None else backoff(row.attempts),
                                  exc.message)
            return
        except Exception as exc:
            log.exception("delivering outbox row %s to %s failed", row.id, row.channel)
            await self._later(row, backoff(row.attempts), f"{type(exc).__name__}: {exc}"[:1000])
            return
        await self._done(row)

    async def _done(self, row: Outbox, *, superseded: bool = False) -> None:
        async with self.db.write() as session:
            await session.exec(update(Outbox).where(col(Outbox.id) == row.id).values(
                status="sent", sent_at=utcnow(), claimed_until=None,
                last_error="superseded by a newer version" if superseded else None))

    async def _later(self, row: Outbox, delay_s: float, error: str | None) -> None:
        async with self.db.write() as session:
            await session.exec(update(Outbox).where(col(Outbox.id) == row.id).values(
                attempts=row.attempts + (1 if error else 0), claimed_until=None,
                next_at=utcnow() + timedelta(seconds=max(0.0, delay_s)),
                last_error=error if error else row.last_error))

    async def _failed(self, row: Outbox, error: str) -> None:
        log.error("outbox row %s to %s:%s refused for good: %s", row.id, row.channel, row.address, error)
        async with self.db.write() as session:
            await session.exec(update(Outbox).where(col(Outbox.id) == row.id).values(
                status="failed", attempts=row.attempts + 1, claimed_until=None, last_error=error[:1000]))
