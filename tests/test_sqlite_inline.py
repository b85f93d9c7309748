"""The SQLite driver that runs statements on the event loop and hands only a write's commit (and a wait for
another process's write lock) to a thread: what that must never cost in safety."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from core.store import sqlite_inline
from core.store.db import Database

HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
db.execute("INSERT INTO t VALUES ('other process')")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
print("releasing", flush=True)
db.execute("COMMIT")
"""


async def _table(db: Database) -> None:
    async with db.write() as session:
        await session.exec(text("CREATE TABLE IF NOT EXISTS t (v TEXT)"))


async def test_the_default_sqlite_url_gets_the_inline_driver_and_old_urls_still_work(tmp_path: Path) -> None:
    for url in (f"sqlite:///{tmp_path}/a.db", f"sqlite+aiosqlite:///{tmp_path}/b.db"):
        db = Database(url)
        try:
            assert db.engine.dialect.driver == "shepherd"
            await _table(db)
        finally:
            await db.dispose()


async def test_a_write_is_on_disk_for_any_other_reader_when_the_block_ends(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = Database(f"sqlite:///{path}")
    try:
        await _table(db)
        async with db.write() as session:
            await session.exec(text("INSERT INTO t VALUES ('mine')"))
        other = sqlite3.connect(path)
        assert other.execute("SELECT v FROM t").fetchall() == [("mine",)]
        other.close()
        with pytest.raises(RuntimeError):
            async with db.write() as session:
                await session.exec(text("INSERT INTO t VALUES ('undone')"))
                raise RuntimeError("the block failed")
        async with db.read() as session:
            assert (await session.exec(text("SELECT v FROM t"))).all() == [("mine",)]
    finally:
        await db.dispose()


async def test_while_another_process_holds_the_write_lock_reads_answer_and_the_loop_keeps_running(
    tmp_path: Path,
) -> None:
    """The other process's writer blocks our writer (as it must), but not our readers and not the event loop:
    the wait for the lock happens on a thread."""
    path = tmp_path / "s.db"
    db = Database(f"sqlite:///{path}")
    holder = None
    try:
        await _table(db)
        holder = await asyncio.create_subprocess_exec(sys.executable, "-c", HOLDER, str(path), "1.5",
                                                      stdout=asyncio.subprocess.PIPE)
        assert holder.stdout is not None
        assert (await holder.stdout.readline()).strip() == b"locked"
        released = asyncio.ensure_future(holder.stdout.readline())

        async with db.read() as session:  # the last committed state, at once
            assert (await session.exec(text("SELECT count(*) FROM t"))).scalar() == 0
        assert not released.done(), "a read waited for the other process's writer"

        ticks = 0

        async def heartbeat() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        beat = asyncio.ensure_future(heartbeat())
        async with db.write() as session:
            ticks_when_locked_in = ticks
            await session.exec(text("INSERT INTO t VALUES ('ours')"))
        beat.cancel()
        assert released.done() and (await released).strip() == b"releasing", "our writer did not wait its turn"
        assert ticks_when_locked_in >= 5, "the event loop stood still while waiting for the write lock"
        async with db.read() as session:
            rows = {v for (v,) in (await session.exec(text("SELECT v FROM t"))).all()}
        assert rows == {"other process", "ours"}
    finally:
        if holder is not None and holder.returncode is None:
            await holder.wait()
        await db.dispose()


async def test_a_task_cancelled_while_its_commit_runs_learns_it_only_when_the_commit_has_ended() -> None:
    """The connection is not touched again (a rollback as the session closes) while the thread still commits on
    it: the cancellation is held until the handed-off work is over."""
    ended = threading.Event()

    def commit() -> str:
        time.sleep(0.3)
        ended.set()
        return "committed"

    loop = asyncio.get_running_loop()
    waiter = asyncio.ensure_future(sqlite_inline._settled(loop.run_in_executor(None, commit)))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert ended.is_set(), "the cancellation overtook the commit still running on the thread"


async def test_writers_that_come_together_share_one_commit_and_one_failing_undoes_only_itself(tmp_path: Path) -> None:
    """Fifty writes at once: each is on disk when its block returns, far fewer commits (fsyncs) than writes, and
    the one that breaks a constraint is a conflict of its own while the others land."""
    from sqlalchemy import event

    from core.errors import Conflict

    db = Database(f"sqlite:///{tmp_path / 's.db'}")
    commits = 0

    def counted(_conn: object) -> None:
        nonlocal commits
        commits += 1

    try:
        async with db.write() as session:
            await session.exec(text("CREATE TABLE u (v TEXT PRIMARY KEY)"))
        event.listen(db.engine.sync_engine, "commit", counted)

        async def put(value: str) -> str:
            async with db.write() as session:
                await session.exec(text("INSERT INTO u VALUES (:v)").bindparams(v=value))
            other = sqlite3.connect(tmp_path / "s.db")  # committed by the time the block returned
            try:
                assert other.execute("SELECT 1 FROM u WHERE v = ?", (value,)).fetchone() == (1,)
            finally:
                other.close()
            return value

        values = [f"v{i}" for i in range(50)] + ["v7"]  # the last one is taken already
        results = await asyncio.gather(*(put(v) for v in values), return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] != []
        assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException))
        assert sum(isinstance(r, Conflict) for r in results) == 1
        async with db.read() as session:
            assert (await session.exec(text("SELECT count(*) FROM u"))).one()[0] == 50
        assert commits < 25, f"{commits} commits for 50 writes that came together"
    finally:
        await db.dispose()


async def test_a_unit_of_work_after_waiting_writers_commits_their_group_first(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 's.db'}")
    try:
        await _table(db)

        async def write(value: str) -> None:
            async with db.write() as session:
                await session.exec(text("INSERT INTO t VALUES (:v)").bindparams(v=value))

        async def unit() -> None:
            async with db.unit(), db.write() as session:
                seen = (await session.exec(text("SELECT count(*) FROM t"))).one()[0]
                await session.exec(text("INSERT INTO t VALUES (:v)").bindparams(v=f"unit saw {seen}"))

        await asyncio.wait_for(asyncio.gather(write("a"), write("b"), unit(), write("c")), timeout=10)
        async with db.read() as session:
            rows = [v for (v,) in (await session.exec(text("SELECT v FROM t"))).all()]
        assert sorted(rows)[:3] == ["a", "b", "c"] and any(v.startswith("unit saw") for v in rows)
    finally:
        await db.dispose()
