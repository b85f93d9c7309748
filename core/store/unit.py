"""A unit of work (`Database.unit`): the one transaction of the writes inside it, joined only by the asyncio task
that opened it; its items (`Unit.item`), each a savepoint of its own, for work done in batches
(core.channels.conversations.Conversations.batch). The database's companion: a unit takes the database's write
turn (SQLite) and its sessions as the database's own code does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSessionTransaction
from sqlmodel.ext.asyncio.session import AsyncSession

if TYPE_CHECKING:
    from core.store.db import Database


class Unit:
    """The one transaction of a unit of work: begun by the first write inside it, joined by the writes (and, once
    begun, the reads) of the asyncio task that opened it, and of no other task."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.owner = asyncio.current_task()
        self.session: AsyncSession | None = None
        self._turn = False
        self._item: _Item | None = None  # inside `item()`: the item's savepoint and whether it wrote
        self._reader: AsyncConnection | None = None  # `Database.rows` before the transaction begins

    @property
    def wrote(self) -> bool:
        """Whether anything inside the unit has written (its transaction has begun); inside `item()`, whether
        that item has."""
        if self._item is not None:
            return self._item.wrote
        return self.session is not None

    @asynccontextmanager
    async def item(self) -> AsyncIterator[None]:
        """One item of several done in this unit (core.channels.conversations.Conversations.batch), in a savepoint
        of its own, so an item that raises undoes only itself. Before the unit's transaction has begun, an item
        that only reads opens neither (its reads run outside it) and one that writes begins its savepoint with the
        transaction; after, the savepoint begins with the item, as its reads run in the transaction too (a
        statement that fails there would otherwise abort the whole of it on PostgreSQL)."""
        outer, here = self._item, _Item()
        if self.session is not None:
            here.savepoint = await self.session.begin_nested()
        self._item = here
        try:
            yield
        except BaseException:
            if here.savepoint is not None and here.savepoint.is_active:
                await here.savepoint.rollback()
            raise
        else:
            if here.savepoint is not None and here.savepoint.is_active:
                await here.savepoint.commit()
        finally:
            self._item = outer

    async def begin(self) -> AsyncSession:
        if self.session is None:
            if asyncio.current_task() in self.db._writing:
                # the write turn is the enclosing write's: waiting for it would wait forever (and every writer
                # of the process behind it)
                raise RuntimeError("a unit of work was begun inside another write transaction in the same task")
            if self.db._write_turn is not None:
                await self.db._write_turn.acquire()
                self._turn = True
                try:
                    await self.db._commit_group()  # what writers before it wrote is committed first
                except BaseException:
                    await self.close()
                    raise
            try:
                session = await self.db._begun()
            except BaseException:
                await self.close()
                raise
            self.session = session
        if self._item is not None:
            self._item.wrote = True
            if self._item.savepoint is None:
                self._item.savepoint = await self.session.begin_nested()
        return self.session

    async def reading(self) -> AsyncConnection | None:
        """The connection the unit reads single statements on: its transaction's once begun; before that, inside
        `item()`, one connection outside any transaction, kept for the unit (a batch of items that only read checks
        one out, not one per statement). None: the caller reads on a connection of its own."""
        if self.session is not None:
            return await self.session.connection()
        if self._item is None:
            return None
        if self._reader is None:
            self._reader = await self.db._alone.connect()
        return self._reader

    async def close(self, session: AsyncSession | None = None) -> None:
        """Ends the transaction (rolled back unless committed) and gives the write turn back."""
        session = session or self.session
        try:
            if self._reader is not None:
                reader, self._reader = self._reader, None
                await reader.close()
        finally:
            try:
                if session is not None:
                    await session.close()
            finally:
                if self._turn and self.db._write_turn is not None:
                    self._turn = False
                    self.db._write_turn.release()


@dataclass
class _Item:
    savepoint: AsyncSessionTransaction | None = None
    wrote: bool = False


CURRENT_UNIT: ContextVar[Unit | None] = ContextVar("shepherd_unit_of_work", default=None)
