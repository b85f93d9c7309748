"""A unit of work (core.store.db.Database.unit), on SQLite and PostgreSQL: every write inside it is one commit, seen by
others only when it ends; a write that fails inside it undoes only itself; a unit that fails writes nothing; and
no other asyncio task joins it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event
from sqlmodel import col, select

from core.errors import Conflict
from core.store.db import Database
from core.store.models import Org


async def _add(db: Database, org_id: str) -> None:
    async with db.write() as session:
        session.add(Org(id=org_id, name=org_id))


async def _orgs(db: Database) -> set[str]:
    async with db.read() as session:
        return set(await session.exec(select(Org.id).where(col(Org.id).like("u-%"))))


def _commits(db: Database) -> list[int]:
    counted = [0]

    def count(_conn: Any) -> None:
        counted[0] += 1

    event.listen(db.engine.sync_engine, "commit", count)
    return counted


async def test_the_writes_of_a_unit_are_one_commit_seen_by_others_when_it_ends(db_url: str) -> None:
    db, other = Database(db_url), Database(db_url)
    commits = _commits(db)
    try:
        async with db.unit():
            await _add(db, "u-1")
            await _add(db, "u-2")
            assert await _orgs(db) == {"u-1", "u-2"}  # inside: what it wrote so far is read too
            assert await _orgs(other) == set()  # another process sees nothing yet
        assert await _orgs(other) == {"u-1", "u-2"}
        assert commits == [1]
    finally:
        await db.dispose()
        await other.dispose()


async def test_a_write_that_fails_inside_a_unit_undoes_only_itself(db: Database) -> None:
    await _add(db, "u-taken")
    async with db.unit():
        await _add(db, "u-1")
        with pytest.raises(Conflict):
            async with db.write() as session:
                session.add(Org(id="u-2", name="u-2"))
                await session.flush()
                session.add(Org(id="u-taken", name="again"))  # a unique violation: this write is a 409
        await _add(db, "u-3")
    assert await _orgs(db) == {"u-taken", "u-1", "u-3"}


async def test_a_unit_that_raises_writes_nothing(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.unit():
            await _add(db, "u-1")
            raise RuntimeError("the answer could not be written")
    assert await _orgs(db) == set()


async def test_another_task_writes_in_its_own_transaction_never_in_the_unit(db: Database) -> None:
    other: asyncio.Task[None] | None = None
    with pytest.raises(RuntimeError):
        async with db.unit():
            await _add(db, "u-mine")
            other = asyncio.get_running_loop().create_task(_add(db, "u-theirs"))  # it inherits the context
            await asyncio.sleep(0.05)
            raise RuntimeError("undo mine")
    assert other is not None
    await other  # on SQLite it waited for the unit's write lock; it was never part of the unit
    assert await _orgs(db) == {"u-theirs"}


async def test_items_of_a_unit_undo_only_themselves_and_one_that_only_reads_begins_nothing(db_url: str) -> None:
    db = Database(db_url)
    commits = _commits(db)
    try:
        async with db.unit() as unit:
            async with unit.item():
                assert await _orgs(db) == set()
                assert not unit.wrote  # it only read: no transaction, no savepoint
            assert unit.session is None
            async with unit.item():
                await _add(db, "u-kept")
                await _add(db, "u-kept-too")
                assert unit.wrote
            with pytest.raises(RuntimeError):
                async with unit.item():
                    await _add(db, "u-undone")
                    await _add(db, "u-undone-too")
                    raise RuntimeError("the item failed after its writes")
            async with unit.item():
                assert not unit.wrote  # this item has not written, though the unit has
                assert await _orgs(db) == {"u-kept", "u-kept-too"}
        assert await _orgs(db) == {"u-kept", "u-kept-too"} and commits == [1]
    finally:
        await db.dispose()
