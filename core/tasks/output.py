"""What agents print, stored in batches: lines are buffered as they are read and written every `flush_s`,
every task's lines since the last flush in one transaction, a row per read (core.tasks.loglines). A flush that
fails keeps its lines for the next one: output that was read is not dropped on a hiccup."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import String, bindparam, func, select, update

from core.clock import utcnow
from core.store.bulk import each, insert_rows
from core.store.db import Database
from core.store.models import Task, TaskLog, table_of
from core.tasks import state as task_state
from core.tasks.loglines import chunks
from core.tasks.state import LogType

log = logging.getLogger(__name__)


class TaskOutput:
    def __init__(self, db: Database, *, flush_s: float = 0.2, written: Callable[[], None] | None = None) -> None:
        self.db = db
        self.flush_s = flush_s
        self.written = written  # told after each stored batch: live followers in this process read at once
        self._rows: list[tuple[str, datetime, list[str]]] = []  # (task id, time, the lines of one read)
        self._latest: dict[str, tuple[int, str, datetime]] = {}  # task id -> (lines added, last line, its time)
        self._lock = asyncio.Lock()
        self._now: datetime | None = None

    def _tick(self) -> None:
        self._now = None

    def add(self, task_id: str, line: str) -> None:
        """One output line of a task's agent, stored at the next flush. The lines read in one step of the event
        loop (what one read of a pipe gave) were read at one time, and are stored with that one time."""
        self.add_many(task_id, [line])

    def add_many(self, task_id: str, lines: list[str]) -> None:
        """Lines of a task read together (one read of its agent's output): stored at the next flush, with one time."""
        if not lines:
            return
        if self._now is None:
            self._now = utcnow()
            asyncio.get_running_loop().call_soon(self._tick)
        now = self._now
        self._rows.append((task_id, now, lines))
        added = self._latest[task_id][0] if task_id in self._latest else 0
        self._latest[task_id] = (added + len(lines), lines[-1], now)

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
                    counts = [{"b_id": task_id, "b_added": added, "b_at": at, "b_last": task_state.message(last)}
                              for task_id, (added, last, at) in latest.items()]
                    # one statement for every task's count (first: it begins the transaction the lines join)
                    await conn.execute(_COUNTED.values(updated_at=now), each(counts))
                    stored = _stored(rows)
                    if self.db.is_sqlite:  # each row's lines take the ids below its own (core.tasks.loglines)
                        top = (await conn.execute(_TOP)).scalar() or 0
                        ids = []
                        for row in stored:
                            top += row[-1]
                            ids.append((top, *row))
                        await insert_rows(conn, _LOG, ("id", *_COLUMNS), ids)
                    else:  # PostgreSQL's sequence steps by LINES_PER_ROW (migration 0024)
                        await insert_rows(conn, _LOG, _COLUMNS, stored)
            except Exception:
                self._rows[:0] = rows
                for task_id, (added, last, at) in latest.items():
                    before, newer, newer_at = self._latest.get(task_id, (0, last, at))
                    self._latest[task_id] = (before + added, newer, newer_at)
                raise
        if self.written is not None:
            self.written()


def _stored(reads: list[tuple[str, datetime, list[str]]]) -> list[tuple[str, datetime, str, str, int]]:
    """The rows that store these reads: (task id, time, type, content, lines), a row per read (or per chunk of a
    long one); a line with a newline of its own (no runner gives one) is a row of its own, so rows split back
    into the lines they were given."""
    kind = LogType.OUTPUT.value
    rows = []
    for task_id, at, lines in reads:
        for chunk in chunks(lines):
            content = "\n".join(chunk)
            if len(chunk) == 1 or content.count("\n") == len(chunk) - 1:
                rows.append((task_id, at, kind, content, len(chunk)))
            else:
                rows.extend((task_id, at, kind, line, 1) for line in chunk)
    return rows


_LOG = table_of(TaskLog)
_COLUMNS = ("task_id", "time", "type", "content", "lines")
_TOP = select(func.max(_LOG.c.id))
_T = table_of(Task)
_COUNTED = update(_T).where(_T.c.id == bindparam("b_id")).values(
    log_count=_T.c.log_count + bindparam("b_added"), output_at=bindparam("b_at"),
    state_message=task_state.latest_output(bindparam("b_last", type_=String())))
