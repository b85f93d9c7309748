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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import insert, or_, update
from sqlmodel import col, select

from core.channels.outbox import REPLY_KEY, Channel, DeliveryError, Message, RowStatus
from core.clock import utcnow
from core.ids import new_node_id
from core.shepherd import Shepherd
from core.store.models import MessageRef, Outbox, Thread, table_of
from core.wakeup import Wakeup

log = logging.getLogger(__name__)

LEASE_S = 60.0
PARALLEL = 16  # threads delivered side by side in one pass
MAX_BACKOFF_S = 300.0
_ADD_REF = insert(table_of(MessageRef))


def backoff(attempts: int) -> float:
    return float(min(MAX_BACKOFF_S, 2 ** min(attempts, 10)))


@dataclass(frozen=True)
class _Due:
    row: Outbox
    address: str  # the thread's, as it is now
    opens: bool  # the message its thread begins with
    ref: str | None = None  # the message's platform ref, when a version of it was posted before
    superseded: bool = False  # a newer version of the message waits: that one is delivered, not this
    waits: bool = False  # an earlier version, not yet posted, is on its way elsewhere: it must be posted first


class _Sent:
    """The posts of a pass waiting to be recorded: written together by one writer while the lanes go on posting,
    each write taking every post made meanwhile. A crash before a post is recorded posts it again (the outbox is
    at least once); the window is one write wide."""

    def __init__(self, write: Callable[[list[tuple[Outbox, str]]], Awaitable[None]]) -> None:
        self._write = write
        self._waiting: list[tuple[Outbox, str]] = []
        self._writer: asyncio.Task[None] | None = None

    def add(self, row: Outbox, ref: str) -> None:
        self._waiting.append((row, ref))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._waiting:
            posts, self._waiting = self._waiting, []
            await self._write(posts)

    async def written(self) -> None:
        """Every post added is recorded (raises what a write raised: the rows stay claimed until their lease ends,
        and are posted again then)."""
        while self._writer is not None:
            writer = self._writer
            await writer
            if writer is self._writer:
                return


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
        # thread. A thread's next row does not wait for the previous one's "sent" to be on disk: those records
        # share the store's commits, and the pass ends when all of them are written (a crash before that posts
        # those few messages again: the outbox's at-least-once window, one commit wide).
        threads: dict[str, list[_Due]] = {}
        for each in due:
            threads.setdefault(each.row.thread_id, []).append(each)
        lanes = asyncio.Semaphore(PARALLEL)
        sent = _Sent(self._sent)

        async def thread(rows: list[_Due]) -> None:
            async with lanes:
                for each in rows:
                    await self._deliver(each, sent)

        results = await asyncio.gather(*(thread(rows) for rows in threads.values()), return_exceptions=True)
        await sent.written()
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
            claimed = [(row, address, opening is not None) for row, address, opening in await session.exec(query)
                       if self.channels[row.channel].accepts(address)][: self.batch]
            if not claimed:
                return []
            ids = [row.id for row, _, _ in claimed]
            await session.exec(update(Outbox).where(col(Outbox.id).in_(ids))
                               .values(claimed_by=self.node_id, claimed_until=now + timedelta(seconds=LEASE_S)))
            # What each row's delivery depends on, for the whole claim at once (not three reads per row): the
            # messages posted before (an edit, not a post), and the other versions of each message still waiting.
            threads = {row.thread_id for row, _, _ in claimed}
            keys = {row.key for row, _, _ in claimed}
            refs = {(t, k): ref for t, k, ref in await session.exec(
                select(MessageRef.thread_id, MessageRef.key, MessageRef.ref)
                .where(col(MessageRef.thread_id).in_(threads), col(MessageRef.key).in_(keys)))}
            versions: dict[tuple[str, str], list[int]] = {}
            for row_id, t, k in await session.exec(
                    select(Outbox.id, Outbox.thread_id, Outbox.key)
                    .where(col(Outbox.thread_id).in_(threads), col(Outbox.key).in_(keys),
                           Outbox.status == RowStatus.PENDING.value)):
                versions.setdefault((t, k), []).append(int(row_id or 0))
        mine = set(ids)
        due = []
        for row, address, opens in claimed:
            others = versions.get((row.thread_id, row.key), [])
            row_id = row.id or 0
            due.append(_Due(
                row, address, opens, ref=refs.get((row.thread_id, row.key)),
                superseded=any(other > row_id for other in others),
                # an earlier version claimed here is superseded by this one, never posted: it does not count
                waits=any(other < row_id and other not in mine for other in others)))
        return due

    async def _deliver(self, due: _Due, sent: _Sent) -> None:
        """Delivers one row; a post's "sent" goes to `sent` (written while the thread's next row goes out)."""
        row, ref = due.row, due.ref
        channel = self.channels[row.channel]
        message = Message.from_json(row.payload)
        if due.superseded:
            await self._done(row, superseded=True)  # the newest version is delivered (posted or edited in)
            return
        if ref is None and due.waits:
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
                await channel.update(due.address, ref, message)
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
        if posted is None:
            await self._done(row)
        else:
            sent.add(row, posted)  # its reference and "sent" in one write, with those of the posts beside it

    async def _done(self, row: Outbox, *, superseded: bool = False, ref: str | None = None) -> None:
        """Sent (with the platform's reference of a message posted now, one write for both)."""
        async with self.db.write() as session:
            if ref is not None:
                session.add(MessageRef(thread_id=row.thread_id, key=row.key, ref=ref))
            await session.exec(update(Outbox).where(col(Outbox.id) == row.id).values(
                status=RowStatus.SENT.value, sent_at=utcnow(), claimed_until=None,
                last_error="superseded by a newer version" if superseded else None))

    async def _sent(self, posts: list[tuple[Outbox, str]]) -> None:
        """Posted: each message's reference and its row sent, for several posts in one write."""
        now = utcnow()
        async with self.db.write() as session:
            conn = await session.connection()  # Core rows: an ORM object per reference cost an INSERT each
            await conn.execute(_ADD_REF, [{"thread_id": row.thread_id, "key": row.key, "ref": ref, "created_at": now}
                                          for row, ref in posts])
            await conn.execute(update(Outbox).where(col(Outbox.id).in_([row.id for row, _ in posts])).values(
                status=RowStatus.SENT.value, sent_at=now, claimed_until=None, last_error=None))

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
