"""Writes of many turns, committed together: a hundred tasks starting at once each record that they start, and on
SQLite each commit is an fsync taken in turn (measured in `serve`: ~80 ms a commit on a busy disk, so the hundredth
task started twelve seconds after the first). What arrives while a commit is under way waits for the next one, which
takes them all.

Two shapes of it: `GroupWrites` runs each piece of work (any statements) in a savepoint of its own, so one that raises
undoes only itself; `BulkWrites` hands the whole batch of items to one function that writes them with set-based
statements (a few round trips for a hundred items, where a savepoint and a statement per item are a round trip each
on PostgreSQL). If a bulk write fails, each item is written again alone, so one bad item fails only itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession

from core.store.db import Database

log = logging.getLogger(__name__)

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 (an item)
R = TypeVar("R")
Work = Callable[[AsyncSession], Awaitable[Any]]
Answer = tuple[bool, Any]  # (written, its result) or (not, what it raised)


class _Batched(Generic[I]):
    """What arrives while a batch is written waits for the next batch, which takes it all."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._waiting: list[tuple[I, asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def _submit(self, item: I) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write())
        return await future

    async def _write(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            items = [item for item, _ in batch]
            try:
                answers = await self._together(items)
            except Exception:  # the commit failed, so nothing of the batch was written: each again, alone
                log.warning("%d writes committed together failed; each is tried alone", len(batch), exc_info=True)
                answers = [await self._alone(item) for item in items]
            for (_, future), (ok, value) in zip(batch, answers, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    async def _together(self, items: list[I]) -> list[Answer]:
        raise NotImplementedError

    async def _alone(self, item: I) -> Answer:
        raise NotImplementedError


class GroupWrites(_Batched[Work]):
    async def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """`work` done in a write transaction, shared with the work of others that came at the same time; returns
        what it returned once that transaction has committed (or raises what it raised, its writes undone)."""
        return await self._submit(work)  # type: ignore[no-any-return]

    async def _together(self, items: list[Work]) -> list[Answer]:
        answers: list[Answer] = []
        async with self.db.write() as session:
            for work in items:
                try:
                    async with session.begin_nested():
                        answers.append((True, await work(session)))
                except Exception as exc:
                    answers.append((False, exc))
        return answers

    async def _alone(self, work: Work) -> Answer:
        try:
            async with self.db.write() as session:
                return True, await work(session)
        except Exception as exc:
            return False, exc


class BulkWrites(_Batched[I], Generic[I, R]):
    def __init__(self, db: Database, write: Callable[[AsyncSession, Sequence[I]], Awaitable[Sequence[R]]]) -> None:
        super().__init__(db)
        self.write = write  # the items' rows, written together; one result per item, in their order

    async def run(self, item: I) -> R:
        """`item` written by `write` with the items that came at the same time, in one transaction; returns its
        result once that transaction has committed (or raises what writing it alone raised)."""
        return await self._submit(item)  # type: ignore[no-any-return]

    async def _together(self, items: list[I]) -> list[Answer]:
        async with self.db.write() as session:
            results = await self.write(session, items)
        return [(True, result) for result in results]

    async def _alone(self, item: I) -> Answer:
        try:
            async with self.db.write() as session:
                return True, (await self.write(session, [item]))[0]
        except Exception as exc:
            return False, exc
