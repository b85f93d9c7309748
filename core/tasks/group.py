"""Writes of many turns, committed together: a hundred tasks starting at once each record that they start, and on
SQLite each commit is an fsync taken in turn (measured in `serve`: ~80 ms a commit on a busy disk, so the hundredth
task started twelve seconds after the first). What arrives while a commit is under way waits for the next one, which
takes them all: each piece of work in a savepoint of its own, so one that raises undoes only itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession

from core.store.db import Database

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[AsyncSession], Awaitable[Any]]


class GroupWrites:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._waiting: list[tuple[Work, asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """`work` done in a write transaction, shared with the work of others that came at the same time; returns
        what it returned once that transaction has committed (or raises what it raised, its writes undone)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._waiting.append((work, future))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write())
        return await future

    async def _write(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                answers = await self._together(batch)
            except Exception:  # the commit failed, so nothing of the batch was written: each again, alone
                log.warning("%d writes committed together failed; each is tried alone", len(batch), exc_info=True)
                answers = [await self._alone(work) for work, _ in batch]
            for (_, future), (ok, value) in zip(batch, answers, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    async def _together(self, batch: list[tuple[Work, asyncio.Future[Any]]]) -> list[tuple[bool, Any]]:
        answers: list[tuple[bool, Any]] = []
        async with self.db.write() as session:
            for work, _ in batch:
                try:
                    async with session.begin_nested():
                        answers.append((True, await work(session)))
                except Exception as exc:
                    answers.append((False, exc))
        return answers

    async def _alone(self, work: Work) -> tuple[bool, Any]:
        try:
            async with self.db.write() as session:
                return True, await work(session)
        except Exception as exc:
            return False, exc
