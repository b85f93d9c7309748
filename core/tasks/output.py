"""What agents print, stored in batches: lines are buffered as they are read and written every `flush_s`,
every task's lines since the last flush in one transaction. A flush that fails keeps its lines for the
next one: output that was read is not dropped on a hiccup."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.engine import Dialect
from sqlmodel import col

from core.clock import utcnow
from core.store.db import Database
from core.store.models import Task, TaskLog
from core.tasks import state as task_state
from core.tasks.state import LogType

log = logging.getLogger(__name__)


class TaskOutput:
    def __init__(self, db: Database, *, flush_s: float = 0.2, written: Callable[[], None] | None = None) -> None:
        self.db = db
        self.flush_s = flush_s
        self.written = written  # told after each stored batch: live followers in this process read at once
        self._rows: list[tuple[str, datetime, str]] = []  # (task id, time, line)
        self._latest: dict[str, tuple[int, str, datetime]] = {}  # task id -> (lines added, last line, its time)
        self._lock = asyncio.Lock()
        self._now: datetime | None = None

    def _tick(self) -> None:
        self._now = None

    def add(self, task_id: str, line: str) -> None:
        """One output line of a task's agent, stored at the next flush. The lines read in one step of the event
        loop (what one read of a pipe gave) were read at one time, and are stored with that one time."""
        if self._now is None:
            self._now = utcnow()
            asyncio.get_running_loop().call_soon(self._tick)
        self._rows.append((task_id, self._now, line))
        added = self._latest[task_id][0] if task_id in self._latest else 0
        self._latest[task_id] = (added + 1, line, self._now)

    async def run(self) -> None:
        """Flush forever (a background job)."""
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await self.flush()
            except Exception:
                log.exception("storing task output failed; retrying")

    async def flush(self) -> None:
        """Store what was buffered: the lines, each task's line count, and its latest line as its message and
        when it was printed (`output_at`: the stall watchdog, core.tasks.watchdog, reads the silence from it)."""
        async with self._lock:
            if not self._rows:
                return
            rows, self._rows = self._rows, []
            latest, self._latest = self._latest, {}
            now = utcnow()
            try:
                async with self.db.write() as session:
                    conn = await session.connection()
                    await conn.exec_driver_sql(*_driver_insert(conn.dialect, rows))
                    for task_id, (added, last, at) in latest.items():
                        await session.exec(update(Task).where(col(Task.id) == task_id).values(
                            log_count=col(Task.log_count) + added, updated_at=now, output_at=at,
                            state_message=task_state.latest_output(last),
                        ))
            except Exception:
                self._rows[:0] = rows
                for task_id, (added, last, at) in latest.items():
                    before, newer, newer_at = self._latest.get(task_id, (0, last, at))
                    self._latest[task_id] = (before + added, newer, newer_at)
                raise
        if self.written is not None:
            self.written()


_COMPILED: dict[tuple[str, str], tuple[str, tuple[str, ...] | None, Any]] = {}  # by dialect and paramstyle


def _driver_insert(dialect: Dialect, rows: list[tuple[str, datetime, str]]) -> tuple[str, Any]:
    """The log rows' INSERT as the driver's own executemany: the statement compiled once per dialect (in its
    paramstyle), each time converted by the column type's own bind processor, nothing else done per row. Through
    SQLAlchemy's executemany each row paid for its parameters to be built and processed again (about 20 µs a row
    in a profile of 100 tasks x 2000 lines; most of what storing a line cost)."""
    key = (dialect.name, dialect.paramstyle)
    compiled = _COMPILED.get(key)
    if compiled is None:
        table = TaskLog.__table__  # type: ignore[attr-defined]
        statement = insert(table).inline().compile(dialect=dialect, column_keys=["task_id", "time", "type", "content"])
        order = tuple(statement.positiontup) if statement.positional and statement.positiontup else None
        compiled = _COMPILED[key] = (str(statement), order, table.c.time.type._cached_bind_processor(dialect))
    sql, order, processor = compiled
    kind = LogType.OUTPUT.value
    if processor is not None:  # once per time: the lines of one read share theirs
        seen: dict[datetime, Any] = {}
        rows = [(task_id, seen[at] if at in seen else seen.setdefault(at, processor(at)), line)
                for task_id, at, line in rows]
    if order is None:  # a named paramstyle
        return sql, [{"task_id": task_id, "time": at, "type": kind, "content": line} for task_id, at, line in rows]
    if order == ("task_id", "time", "type", "content"):
        return sql, [(task_id, at, kind, line) for task_id, at, line in rows]
    at_place = {"task_id": 0, "time": 1, "content": 2}
    return sql, [tuple(kind if name == "type" else row[at_place[name]] for name in order) for row in rows]
