"""SQLite writes committed together (core/store/db.py) and the inline driver (core/store/sqlite_inline.py): what an
independent review found, each failing before its fix."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from core.errors import ShepherdError
from core.store import sqlite_inline
from core.store.db import Database


async def _table(db: Database) -> None:
    async with db.write() as session:
        await session.exec(text("CREATE TABLE t (v TEXT PRIMARY KEY)"))


def _on_disk(path: Path) -> set[str]:
    other = sqlite3.connect(path)
    try:
        return {v for (v,) in other.execute("SELECT v FROM t")}
    finally:
        other.close()


async def _insert(db: Database, value: str, gate: asyncio.Event | None = None, sql: str = "INSERT") -> None:
    async with db.write() as session:
        await session.exec(text(f"{sql} INTO t VALUES (:v)").bindparams(v=value))
        if gate is not None:
            await gate.wait()


async def test_a_statement_that_ends_the_whole_transaction_never_tells_earlier_writers_of_the_group_committed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    db = Database(f"sqlite:///{path}")
    try:
        await _table(db)
        await _insert(db, "taken")
        gate = asyncio.Event()
        holder = asyncio.ensure_future(_insert(db, "held", gate))  # holds the turn: the next ones queue
        await asyncio.sleep(0.05)
        first = asyncio.ensure_future(_insert(db, "first"))
        breaker = asyncio.ensure_future(_insert(db, "taken", sql="INSERT OR ROLLBACK"))
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.wait_for(asyncio.gather(holder, first, breaker, return_exceptions=True), 10)
        on_disk = _on_disk(path)
        for value, result in zip(("held", "first"), results[:2], strict=True):
            assert (result is None) == (value in on_disk), f"{value}: told {result!r}, on disk: {value in on_disk}"
    finally:
        await db.dispose()


async def _commits_held(release: threading.Event) -> list[asyncio.Future[None]]:
    """Both commit threads busy until `release`: a commit handed off now waits, and its task can be cancelled then."""
    loop = asyncio.get_running_loop()
    return [loop.run_in_executor(sqlite_inline._COMMITS, release.wait) for _ in range(2)]


async def test_a_unit_cancelled_while_it_commits_the_waiting_group_does_not_pass_its_cancellation_to_the_writers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    db = Database(f"sqlite:///{path}")
    release = threading.Event()
    busy: list[asyncio.Future[None]] = []
    try:
        await _table(db)
        gate = asyncio.Event()
        writer = asyncio.ensure_future(_insert(db, "w", gate))  # holds the turn
        await asyncio.sleep(0.05)

        async def unit() -> None:
            async with db.unit(), db.write() as session:  # queued before the flusher: it commits the group
                await session.exec(text("INSERT INTO t VALUES ('unit')"))

        unit_job = asyncio.ensure_future(unit())
        await asyncio.sleep(0.05)
        busy = await _commits_held(release)
        gate.set()
        await asyncio.sleep(0.1)  # the unit now waits for the group's commit on the (busy) thread
        unit_job.cancel()
        await asyncio.sleep(0.05)
        release.set()
        results = await asyncio.wait_for(asyncio.gather(writer, unit_job, return_exceptions=True), 10)
        assert isinstance(results[1], asyncio.CancelledError)
        assert "w" in _on_disk(path)
        assert results[0] is None, f"the writer, never cancelled, whose row is on disk, was told {results[0]!r}"
    finally:
        release.set()
        await asyncio.gather(*busy)
        await db.dispose()


async def test_the_flusher_cancelled_while_it_commits_tells_its_writers_the_truth(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = Database(f"sqlite:///{path}")
    release = threading.Event()
    busy: list[asyncio.Future[None]] = []
    try:
        await _table(db)
        busy = await _commits_held(release)
        writer = asyncio.ensure_future(_insert(db, "w"))
        await asyncio.sleep(0.1)  # the flusher waits for the commit thread
        assert db._flusher is not None and not db._flusher.done()
        db._flusher.cancel()  # as a shutdown that cancels every task would
        await asyncio.sleep(0.05)
        release.set()
        result = (await asyncio.wait_for(asyncio.gather(writer, return_exceptions=True), 10))[0]
        assert "w" in _on_disk(path)
        assert result is None, f"the writer, never cancelled, whose row is on disk, was told {result!r}"
    finally:
        release.set()
        await asyncio.gather(*busy)
        await db.dispose()


async def test_a_writer_cancelled_while_it_waits_for_another_process_lock_leaves_no_lock_behind(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = Database(f"sqlite:///{path}")
    other = None
    try:
        await _table(db)
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another process's writer
        writer = asyncio.ensure_future(_insert(db, "w"))
        await asyncio.sleep(0.1)  # waiting for the lock on a thread
        writer.cancel()
        await asyncio.sleep(0.05)
        other.execute("COMMIT")
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(writer, 10)
        other.execute("PRAGMA busy_timeout=2000")
        other.execute("BEGIN IMMEDIATE")  # the lock is free again
        other.execute("COMMIT")
        await asyncio.wait_for(_insert(db, "after"), 10)
        assert _on_disk(path) == {"after"}
    finally:
        if other is not None:
            other.close()
        await db.dispose()


async def test_an_in_memory_sqlite_url_is_refused_with_a_clear_message() -> None:
    """One in-memory database per connection cannot be one store; it is refused by name, not with a TypeError."""
    for url in ("sqlite:///:memory:", "sqlite://"):
        with pytest.raises(ShepherdError, match="SQLite in memory is not supported"):
            Database(url)


# --- Database.direct: a hot path's statements straight on the driver's connection -----------------------------


async def test_a_direct_write_stores_what_the_orm_stores_undoes_only_itself_and_reports_conflicts(
    tmp_path: Path,
) -> None:
    from datetime import datetime

    from sqlalchemy import insert as core_insert
    from sqlmodel import select

    from core.errors import Conflict
    from core.store.models import Event, table_of

    db = Database(f"sqlite:///{tmp_path / 's.db'}")
    try:
        from sqlmodel import SQLModel

        async with db.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.create_all)
        await _table(db)
        at = datetime(2026, 12, 1, 6, 30, 15, 123456)
        event = core_insert(table_of(Event))
        row = {"org_id": "o1", "agent_id": "a1", "task_id": None, "category": "agent", "name": "agent.x",
               "actor": "user:me", "payload": {"level": 3, "note": "ünïcode"}, "occurred_at": at}

        async def good() -> None:
            async with db.direct() as sql:
                await sql.rows(event, row)

        async def bad() -> None:
            async with db.direct() as sql:
                await sql.rows(event, {**row, "name": "agent.undone"})
                await sql.rows(text("INSERT INTO t VALUES (:v)"), {"v": "dup"})
                await sql.rows(text("INSERT INTO t VALUES (:v)"), {"v": "dup"})  # a unique violation

        results = await asyncio.gather(good(), bad(), _insert(db, "beside"), return_exceptions=True)
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], Conflict) and results[1].status == 409
        async with db.read() as session:
            events = list(await session.exec(select(Event)))
        # read back by the ORM as it reads its own rows: the time and the JSON as they were given
        assert [(e.name, e.payload, e.occurred_at.replace(tzinfo=None)) for e in events] == [
            ("agent.x", {"level": 3, "note": "ünïcode"}, at)]
        assert _on_disk(tmp_path / "s.db") == {"beside"}  # the failed block's own rows undone, its neighbours kept
        # inside a unit of work a direct write is part of the unit (rolled back with it)
        with pytest.raises(RuntimeError):
            async with db.unit():
                async with db.direct() as sql:
                    await sql.rows(text("INSERT INTO t VALUES (:v)"), {"v": "in-unit"})
                raise RuntimeError("the unit fails")
        assert "in-unit" not in _on_disk(tmp_path / "s.db")
    finally:
        await db.dispose()


async def test_a_direct_statement_missing_a_value_or_taking_a_list_is_refused_not_stored_as_null(
    tmp_path: Path,
) -> None:
    from sqlalchemy import bindparam, column, table
    from sqlalchemy import insert as core_insert
    from sqlalchemy import select as core_select

    db = Database(f"sqlite:///{tmp_path / 's.db'}")
    try:
        await _table(db)
        t = table("t", column("v"))
        with pytest.raises(ValueError, match="without a value for v"):
            async with db.direct() as sql:
                await sql.rows(core_insert(t).values(v=bindparam("v")), {})
        with pytest.raises(ValueError, match="IN"):
            async with db.direct() as sql:
                await sql.rows(core_select(t.c.v).where(t.c.v.in_(bindparam("vs", expanding=True))), {"vs": ["a"]})
        assert _on_disk(tmp_path / "s.db") == set()
    finally:
        await db.dispose()
