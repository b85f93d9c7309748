"""The inbound delivery ledger: every platform item is recorded before it is acknowledged, so that

- a retry or redelivery of an item that was processed, or is being processed, does nothing;
- an item whose processing failed is processed again (on redelivery, or by `due`, with a backoff);
- an item acknowledged by a process that then died is processed by another (`due` after its lease).

Channels key items by the platform's own id: Slack's event_id or interaction trigger_id, GitHub's
X-GitHub-Delivery, Telegram's update_id. The row keeps the payload, so that processing can be repeated
from the row alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, insert, tuple_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.clock import as_utc, utcnow
from core.errors import Conflict
from core.store.bulk import each
from core.store.db import Database
from core.store.models import Delivery


class ItemStatus(StrEnum):
    """Where an inbound item stands in the ledger."""

    RECEIVED = "received"  # recorded and being processed (by whoever holds its lease)
    DONE = "done"
    FAILED = "failed"  # processed and failed: tried again after a backoff


LEASE_S = 120.0  # how long one process may take over an item before another takes it back
MAX_ATTEMPTS = 5
MAX_BACKOFF_S = 600.0

_Item = tuple[str, str, str, dict[str, Any], "asyncio.Future[bool]"]
# An item settled, built once: every inbound item that did something ends with it
_SETTLE = update(Delivery).where(
    col(Delivery.source) == bindparam("b_source"), col(Delivery.key) == bindparam("b_key"),
).values(status=ItemStatus.DONE.value, done_at=bindparam("b_done_at"), error=None)


def _taken(status: str, next_at: datetime, now: datetime) -> bool:
    """Whether a known item is processed again when it comes again: it failed, or its lease ran out (the process
    that took it died)."""
    return status == ItemStatus.FAILED or (status == ItemStatus.RECEIVED and as_utc(next_at) <= now)


def _new_row(source: str, key: str, org_id: str, payload: dict[str, Any], now: datetime,
             lease: datetime) -> dict[str, Any]:
    """A new item's row, every column given (the INSERT is a Core statement: no model defaults)."""
    return {"source": source, "key": key, "org_id": org_id, "payload": payload, "status": ItemStatus.RECEIVED.value,
            "attempts": 1, "redeliveries": 0, "next_at": lease, "error": None, "received_at": now, "done_at": None}


_D = Delivery.__table__  # type: ignore[attr-defined]
_KEY = (col(Delivery.source) == bindparam("b_source"), col(Delivery.key) == bindparam("b_key"))
_FIND = select(col(Delivery.status), col(Delivery.next_at)).where(*_KEY)
_FIND_MANY = select(col(Delivery.source), col(Delivery.key), col(Delivery.status), col(Delivery.next_at)).where(
    tuple_(col(Delivery.source), col(Delivery.key)).in_(bindparam("b_keys", expanding=True))).with_for_update()
_ADD = insert(_D)
_AGAIN = update(Delivery).where(*_KEY).values(redeliveries=col(Delivery.redeliveries) + 1)
_TAKE = update(Delivery).where(*_KEY).values(
    redeliveries=col(Delivery.redeliveries) + 1, status=ItemStatus.RECEIVED.value,
    attempts=col(Delivery.attempts) + 1, next_at=bindparam("b_lease", type_=_D.c.next_at.type))


class Ledger:
    def __init__(self, db: Database, *, lease_s: float = LEASE_S) -> None:
        self.db = db
        self.lease_s = lease_s
        self._waiting: list[_Item] = []
        self._writer: asyncio.Task[None] | None = None

    async def receive(self, source: str, key: str, org_id: str, payload: dict[str, Any]) -> bool:
        """Record an item as it arrives. True: this caller processes it now (it is new, or it failed, or its
        processor's lease ran out). False: it is done or in hand: acknowledge it and do nothing.

        Items arriving together are recorded together: one transaction (one fsync) for every item that came in
        while the previous batch was being written, so a burst costs a few commits, not one per item."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((source, key, org_id, payload, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_batches())
        return await future

    async def _write_batches(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                answers = await self._record(batch)
            except Conflict:  # another process recorded one of them at the same moment: one at a time
                answers = []
                for item in batch:
                    try:
                        answers.append((await self._record([item]))[0])
                    except Conflict:
                        answers.append(False)  # the other process has it
                    except Exception as exc:
                        answers.append(exc)
            except Exception as exc:
                answers = [exc] * len(batch)
            for (*_, future), answer in zip(batch, answers, strict=True):
                if future.done():
                    continue
                if isinstance(answer, BaseException):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    async def _record(self, batch: list[_Item]) -> list[bool | BaseException]:
        now = utcnow()
        lease = now + timedelta(seconds=self.lease_s)
        if self.db.is_sqlite:
            return await self._record_inline(batch, now, lease)
        # PostgreSQL: the batch's known rows in one statement, locked; the new ones in one INSERT; a known one
        # changed by an UPDATE of its own (a redelivery: rare). Core statements: an ORM object and its flush per
        # item were most of a burst's cost.
        answers: list[bool | BaseException] = []
        async with self.db.write() as session:
            conn = await session.connection()
            known: dict[tuple[str, str], tuple[str, datetime]] = {
                (source, key): (status, next_at) for source, key, status, next_at in await conn.execute(
                    _FIND_MANY, {"b_keys": [(source, key) for source, key, *_ in batch]})}
            new: dict[tuple[str, str], dict[str, Any]] = {}
            for source, key, org_id, payload, _ in batch:
                if (source, key) in new:  # a second copy of an item new in this batch: in hand
                    new[(source, key)]["redeliveries"] += 1
                    answers.append(False)
                    continue
                if (source, key) not in known:
                    new[(source, key)] = _new_row(source, key, org_id, payload, now, lease)
                    answers.append(True)
                    continue
                taken = _taken(*known[(source, key)], now)
                where = {"b_source": source, "b_key": key}
                await conn.execute(_TAKE if taken else _AGAIN, {**where, "b_lease": lease} if taken else where)
                if taken:
                    known[(source, key)] = (ItemStatus.RECEIVED.value, lease)
                answers.append(taken)
            if new:  # in key order: two processes inserting overlapping keys take their locks in one order
                await conn.execute(_ADD, [new[k] for k in sorted(new)])
        return answers

    async def _record_inline(self, batch: list[_Item], now: datetime, lease: datetime) -> list[bool | BaseException]:
        """`_record` on SQLite, each item's statements straight on the driver (Database.direct): one writer holds
        the store, so each key is looked up alone (an index probe of microseconds) and its row written at once, a
        second copy of the same item in the batch seeing the first. A burst of acks paid an ORM object and its flush
        per item before."""
        answers: list[bool | BaseException] = []
        fresh: set[tuple[str, str]] = set()  # new in this batch: a second copy is in hand (as on PostgreSQL)
        async with self.db.direct() as sql:
            for source, key, org_id, payload, _ in batch:
                where = {"b_source": source, "b_key": key}
                found = await sql.first(_FIND, where)
                if found is None:
                    await sql.rows(_ADD, _new_row(source, key, org_id, payload, now, lease))
                    fresh.add((source, key))
                    answers.append(True)
                    continue
                status, next_at = found
                if isinstance(next_at, str):  # as SQLite stores it (Direct gives rows as the driver does)
                    next_at = datetime.fromisoformat(next_at)
                taken = (source, key) not in fresh and _taken(status, next_at, now)
                await sql.rows(_TAKE if taken else _AGAIN, {**where, "b_lease": lease} if taken else where)
                answers.append(taken)
        return answers

    async def settle(self, session: AsyncSession, source: str, key: str) -> None:
        """Mark an item done inside the caller's transaction (the one that wrote its effect or its reply). A Core
        statement on the session's connection: through the session, an UPDATE first looks for the rows it changes
        among the ORM objects the session holds (synchronize_session), which grows with a batch of items."""
        await self.settle_many(session, [(source, key)])

    async def settle_many(self, session: AsyncSession, items: Sequence[tuple[str, str]]) -> None:
        """`settle` for several items (source, key) at once: one statement, run for each."""
        if items:
            now = utcnow()
            conn = await session.connection()
            await conn.execute(_SETTLE, each([{"b_source": source, "b_key": key, "b_done_at": now}
                                              for source, key in items]))

    async def done(self, source: str, key: str) -> None:
        async with self.db.write() as session:
            await self.settle(session, source, key)

    async def done_many(self, source: str, keys: list[str]) -> None:
        """Several items there was nothing to do for, settled in one transaction (one fsync for a burst)."""
        if not keys:
            return
        async with self.db.write() as session:
            conn = await session.connection()
            await conn.execute(update(Delivery).where(col(Delivery.source) == source, col(Delivery.key).in_(keys))
                               .values(status=ItemStatus.DONE.value, done_at=utcnow(), error=None))

    async def failed(self, source: str, key: str, error: str) -> None:
        """Processing failed: tried again after a backoff, up to MAX_ATTEMPTS times in all."""
        async with self.db.write() as session:
            row = (await session.exec(select(Delivery).where(Delivery.source == source, Delivery.key == key))).first()
            if row is None:
                return
            row.status, row.error = ItemStatus.FAILED.value, error[:1000]
            row.next_at = utcnow() + timedelta(seconds=min(MAX_BACKOFF_S, 5.0 * 2 ** row.attempts))
            session.add(row)

    async def due(self, source: str, *, limit: int = 20) -> list[Delivery]:
        """Items to process again: abandoned ones (their lease ran out) and failed ones whose backoff is over,
        each taken by a conditional update so that of several processes exactly one gets it."""
        now = utcnow()
        async with self.db.read() as session:
            rows = list(await session.exec(
                select(Delivery).where(
                    Delivery.source == source,
                    col(Delivery.status).in_([ItemStatus.RECEIVED.value, ItemStatus.FAILED.value]),
                    col(Delivery.next_at) <= now, col(Delivery.attempts) < MAX_ATTEMPTS,
                ).order_by(col(Delivery.id)).limit(limit)))
        taken: list[Delivery] = []
        for row in rows:
            async with self.db.write() as session:
                result = await session.exec(
                    update(Delivery).where(col(Delivery.id) == row.id, col(Delivery.status) == row.status,
                                           col(Delivery.attempts) == row.attempts)
                    .values(status=ItemStatus.RECEIVED.value, attempts=row.attempts + 1,
                            next_at=now + timedelta(seconds=self.lease_s)))
                if result.rowcount == 1:
                    taken.append(row)
        return taken

    async def get(self, source: str, key: str) -> Delivery | None:
        async with self.db.read() as session:
            return (await session.exec(
                select(Delivery).where(Delivery.source == source, Delivery.key == key))).first()
