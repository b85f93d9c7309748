"""The outbox dispatcher: delivers what core wrote to the outbox through each thread's Channel.

- Rows are claimed (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite's writer lock elsewhere) with a lease,
  so several dispatchers share the work and a crashed one's rows are picked up when its lease ends.
- A row for a message that was posted before (same thread and key) edits it in place (its MessageRef);
  of several waiting rows for one message only the newest is delivered (the others are superseded).
- A failure is retried after the platform's Retry-After or an exponential backoff (capped), for as long
  as it takes; only a permanent refusal (the chat is gone) marks the row failed. Nothing is dropped.

- Edits are paced per conversation (a Slack channel: at most one edit a second); a paced edit waits, and a
  newer version written meanwhile supersedes it, so fast-moving news becomes fewer, fresher edits.
- A thread that begins with a message (core.channels.conversations.Opening) is opened by posting that message
  (`Channel.open`); the thread then has its address, and its other rows, which waited for it, go out. The
  opening row is keyed by the item that asked for it, so processing that item again posts no second message;
  its 429s and pacing are the outbox's like any other post's.

Core wakes it through the `Wakeup` it is given (core.shepherd.Shepherd.outbox_due) when it writes rows; it polls
otherwise. Expiring confirmations and writing task news are bot.sweeper's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, update
from sqlmodel import col, select

from core.channels.outbox import REPLY_KEY, Channel, DeliveryError, Message, RowStatus
from core.clock import utcnow
from core.ids import new_node_id
from core.shepherd import Shepherd
from core.store.models import MessageRef, Outbox, Thread
from core.wakeup import Wakeup

log = logging.getLogger(__name__)

LEASE_S = 60.0
PARALLEL = 16  # threads delivered side by side in one pass
MAX_BACKOFF_S = 300.0


def backoff(attempts: int) -> float:
    return float(min(MAX_BACKOFF_S, 2 ** min(attempts, 10)))


@dataclass(frozen=True)
class _Due:
    row: Outbox
    address: str  # the thread's, as it is now
    opens: bool  # the message its thread begins with


class Dispatcher:
    name = "outbox"

    def __init__(
        self, shepherd: Shepherd, channels: list[Channel] | None = None, *, wakeup: Wakeup | None = None,
        poll_s: float = 0.5, batch: int = 50,
    ) -> None:
        self.db = shepherd.db
        self.channels = {c.name: c for c in channels or []}
        self.wakeup = wakeup or shepherd.outbox_due  # what core calls when it wrote rows
        self.poll_s = poll_s
        self.batch = batch
        self._last_edit: dict[tuple[str, str], float] = {}
        self.node_id = new_node_id()
        self._job: asyncio.Task[None] | None = None
        self._opened = False  # a pass opened a thread: its waiting rows are due at once

    async def start(self) -> None:
        self._job = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._job is not None:
            self._job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._job
        with contextlib.suppress(Exception):
            await self.deliver_due()  # what is due now still goes out

    async def _loop(self) -> None:
        while True:
            await self.wakeup.wait(self.poll_s)
            try:
                while await self.deliver_due() >= self.batch or self._opened:
                    pass
            except Exception:
                log.exception("outbox pass failed; retrying")
                await asyncio.sleep(1)

    async def deliver_due(self) -> int:
        """Claim and deliver what is due for this process's channels; returns how many rows it took."""
        self._opened = False
        if not self.channels:
            return 0
        due = await self._claim()
        # Threads go out side by side, each thread's rows in order: a slow platform call holds up only its own
        # thread, and what the deliveries record meanwhile shares the store's commits.
        threads: dict[str, list[_Due]] = {}
        for each in due:
            threads.setdefault(each.row.thread_id, []).append(each)
        lanes = asyncio.Semaphore(PARALLEL)

        async def thread(rows: list[_Due]) -> None:
            async with lanes:
                for each in rows:
                    await self._deliver(each)

        results = await asyncio.gather(*(thread(rows) for rows in threads.values()), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return len(due)

    async def _claim(self) -> list[_Due]:
        now = utcnow()
        query = (
            select(Outbox, Thread.address, Thread.opening).join(Thread, col(Thread.id) == col(Outbox.thread_id))
            .where(Outbox.status == RowStatus.PENDING.value, col(Outbox.channel).in_(list(self.channels)),
                   col(Outbox.next_at) <= now,
                   col(Outbox.claimed_until).is_(None) | (col(Outbox.claimed_until) < now),
                   # a thread that waits for its first message: only that message is due
                   or_(col(Thread.opening).is_(None), col(Thread.opening) == col(Outbox.key)))
            .order_by(col(Outbox.id)).limit(self.batch * 4)
        )
        if not self.db.is_sqlite:
            query = query.with_for_update(skip_locked=True, of=Outbox)
        async with self.db.write() as session:
            due = [_Due(row, address, opening is not None) for row, address, opening in await session.exec(query)
                   if self.channels[row.channel].accepts(address)][: self.batch]
            if due:
                await session.exec(
                    update(Outbox).where(col(Outbox.id).in_([d.row.id for d in due]))
                    .values(claimed_by=self.node_id, claimed_until=now + timedelta(seconds=LEASE_S))
                )
        return due

    async def _deliver(self, due: _Due) -> None:
        row = due.row
        channel = self.channels[row.channel]
        message = Message.from_json(row.payload)
        async with self.db.read() as session:
            newer = (await session.exec(select(Outbox.id).where(
                Outbox.thread_id == row.thread_id, Outbox.key == row.key, Outbox.status == RowStatus.PENDING.value,
                col(Outbox.id) > (row.id or 0)).limit(1))).first()
            earlier = (await session.exec(select(Outbox.id).where(
                Outbox.thread_id == row.thread_id, Outbox.key == row.key, Outbox.status == RowStatus.PENDING.value,
                col(Outbox.id) < (row.id or 0)).limit(1))).first()
            ref = (await session.exec(select(MessageRef).where(
                MessageRef.thread_id == row.thread_id, MessageRef.key == row.key))).first()
        if newer is not None:
            await self._done(row, superseded=True)  # the newest version is delivered (posted or edited in)
            return
        if ref is None and earlier is not None:
            await self._later(row, 0.5, None)  # the first version is still on its way: it must be posted first
            return
        pace = (channel.name, channel.pace_key(due.address))
        if ref is not None and channel.pace_s:
            wait = self._last_edit.get(pace, -1e9) + channel.pace_s - asyncio.get_running_loop().time()
            if wait > 0:
                await self._later(row, wait, None)  # not a failure: a newer version may yet supersede it
                return
        posted: str | None = None
        try:
            if ref is not None:
                self._last_edit[pace] = asyncio.get_running_loop().time()
                await channel.update(due.address, ref.ref, message)
            elif due.opens:
                self._last_edit[pace] = asyncio.get_running_loop().time()
                new_ref, address = await channel.open(due.address, message)
                await self._opened_at(row, new_ref, address)
            else:
                self._last_edit[pace] = asyncio.get_running_loop().time()  # its first edit waits a pace too
                posted = await channel.post(due.address, message)
        except DeliveryError as exc:
            if not exc.transient:
                await self._failed(row, exc.message, opens=due.opens, address=due.address)
            else:
                await self._later(row, exc.retry_after if exc.retry_after is not None else backoff(row.attempts),
                                  exc.message)
            return
        except Exception as exc:
            log.exception("delivering outbox row %s to %s failed", row.id, row.channel)
            await self._later(row, backoff(row.attempts), f"{type(exc).__name__}: {exc}"[:1000])
            return
        await self._done(row, ref=posted)  # after a post, its reference and "sent" in one write

    async def _done(self, row: Outbox, *, superseded: bool = False, ref: str | None = None) -> None:
        """Sent (with the platform's reference of a message posted now, one write for both)."""
        async with self.db.write() as session:
            if ref is not None:
                session.add(MessageRef(thread_id=row.thread_id, key=row.key, ref=ref))
            await session.exec(update(Outbox).where(col(Outbox.id) == row.id).values(
                status=RowStatus.SENT.value, sent_at=utcnow(), claimed_until=None,
                last_error="superseded by a newer version" if superseded else None))

    async def _later(self, row: Outbox, delay_s: float, error: str | None) -> None:
        async with self.db.write() as session:
            await session.exec(update(Outbox).where(col(Outbox.id) == row.id).values(
                attempts=row.attempts + (1 if error else 0), claimed_until=None,
                next_at=utcnow() + timedelta(seconds=max(0.0, delay_s)),
                last_error=error if error else row.last_error))

    async def _opened_at(self, row: Outbox, ref: str, address: str) -> None:
        """The thread's first message is posted: the thread is at `address` from now on, and what waited for it
        is due (addressed there, for the record)."""
        async with self.db.write() as session:
            session.add(MessageRef(thread_id=row.thread_id, key=row.key, ref=ref))
            await session.exec(update(Thread).where(col(Thread.id) == row.thread_id, col(Thread.opening) == row.key)
                               .values(address=address, opening=None))
            await session.exec(update(Outbox).where(col(Outbox.thread_id) == row.thread_id,
                                                    col(Outbox.status) == RowStatus.PENDING.value,
                                                    col(Outbox.address) == "")
                               .values(address=address))
        self._opened = True

    async def _failed(self, row: Outbox, error: str, *, opens: bool = False, address: str = "") -> None:
        log.error("outbox row %s to %s:%s refused for good: %s", row.id, row.channel, row.address, error)
        async with self.db.write() as session:
            await session.exec(update(Outbox).where(col(Outbox.id) == row.id).values(
                status=RowStatus.FAILED.value, attempts=row.attempts + 1, claimed_until=None, last_error=error[:1000]))
            if opens:
                # A thread that cannot begin stays where it was asked for (the place the command was typed): the
                # answers to the person who asked still go there (their item is settled: nothing else would tell
                # them), what else waited for the thread fails, and its task's news goes elsewhere.
                waiting = (col(Outbox.thread_id) == row.thread_id) & (col(Outbox.status) == RowStatus.PENDING.value)
                await session.exec(update(Outbox).where(waiting, col(Outbox.key).startswith(REPLY_KEY)).values(
                    address=address, claimed_until=None))
                await session.exec(update(Outbox).where(waiting, ~col(Outbox.key).startswith(REPLY_KEY)).values(
                    status=RowStatus.FAILED.value, claimed_until=None,
                    last_error=f"its thread could not begin: {error}"[:1000]))
                await session.exec(update(Thread).where(col(Thread.id) == row.thread_id).values(
                    task_id=None, opening=None))
