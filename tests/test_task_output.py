"""What agents print, stored by the output flusher (core.tasks.output) on both stores: every line once, in order, as
printed, with each task's count and latest line; on PostgreSQL through COPY, inside the flush's transaction."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from sqlalchemy import update
from sqlmodel import col

from core.clock import as_utc
from core.shepherd import Shepherd
from core.store.models import Task
from core.tasks.output import TaskOutput
from tests.test_confirmations import ALICE, started_task

LINES = ["plain", "\ttabbed and ünïcödé ✓", "x" * 5000, "", "'quotes' \"and\" \\backslashes\\ ; DROP TABLE task;"]


async def test_lines_of_several_tasks_are_stored_once_in_order_with_their_counts(
    shepherd: Shepherd, monkeypatch: pytest.MonkeyPatch
) -> None:
    copies: list[int] = []
    real = asyncpg.Connection.copy_records_to_table

    async def counted(self: asyncpg.Connection, *args: Any, **kw: Any) -> Any:
        copies.append(len(kw["records"]))
        return await real(self, *args, **kw)

    monkeypatch.setattr(asyncpg.Connection, "copy_records_to_table", counted)
    one, two = await started_task(shepherd, status="running"), await started_task(shepherd, status="running")
    async with shepherd.db.write() as session:  # one works; the other waits on people (its message stands)
        await session.exec(update(Task).where(col(Task.id) == one.id).values(state="working"))
    output = TaskOutput(shepherd.db)
    for line in LINES:
        output.add(one.id, line)
        output.add(two.id, f"two: {line}")
    await output.flush()
    output.add(one.id, "after the first flush")
    await output.flush()
    await output.flush()  # nothing new: nothing written

    _, first = await shepherd.tasks.logs(ALICE, one.id, limit=100)
    _, second = await shepherd.tasks.logs(ALICE, two.id, limit=100)
    assert [row.content for row in first if row.type == "output"] == [*LINES, "after the first flush"]
    assert [row.content for row in second if row.type == "output"] == [f"two: {line}" for line in LINES]
    stored: Task = await shepherd.tasks.get(ALICE, one.id)
    assert stored.log_count == one.log_count + len(LINES) + 1
    assert stored.state_message == "after the first flush"
    waiting = await shepherd.tasks.get(ALICE, two.id)
    assert waiting.state_message == two.state_message and waiting.log_count == two.log_count + len(LINES)
    assert stored.output_at is not None and as_utc(stored.output_at) == as_utc(first[-1].time)
    times = [as_utc(row.time) for row in first if row.type == "output"]
    assert times == sorted(times)
    if shepherd.db.dialect == "postgresql":  # the fast path ran, not its fallback
        assert copies == [2 * len(LINES), 1]
    else:
        assert copies == []


async def test_lines_whose_flush_fails_are_kept_for_the_next(
    shepherd: Shepherd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush that fails (here: the store refuses the rows once, after the counts were updated in the same
    transaction) loses nothing of what was read and counts nothing twice: the next flush stores every line."""
    import core.tasks.output as output_module

    task = await started_task(shepherd, status="running")
    output = TaskOutput(shepherd.db)
    output.add(task.id, "kept")
    real = output_module.insert_rows

    async def refused(*args: Any, **kw: Any) -> None:
        monkeypatch.setattr(output_module, "insert_rows", real)
        raise RuntimeError("the store refused the rows")

    monkeypatch.setattr(output_module, "insert_rows", refused)
    with pytest.raises(RuntimeError):
        await output.flush()
    output.add(task.id, "next")
    await output.flush()
    _, rows = await shepherd.tasks.logs(ALICE, task.id, limit=100)
    assert [row.content for row in rows if row.type == "output"] == ["kept", "next"]
    assert (await shepherd.tasks.get(ALICE, task.id)).log_count == task.log_count + 2  # the failed flush counted none


async def test_a_line_of_a_task_deleted_meanwhile_holds_up_no_other_tasks_output(shepherd: Shepherd) -> None:
    """Lines read for a task that is deleted before they are stored (its rows went with it) do not fail the flush:
    the other tasks' lines are stored with them, and so is everything after (with a foreign key from the log to the
    task, every later flush of every task had failed on that one row)."""
    task = await started_task(shepherd, status="running")
    output = TaskOutput(shepherd.db)
    output.add(task.id, "first")
    output.add("task-deleted-meanwhile", "late")
    await output.flush()
    output.add(task.id, "second")
    await output.flush()
    _, rows = await shepherd.tasks.logs(ALICE, task.id, limit=100)
    assert [row.content for row in rows if row.type == "output"] == ["first", "second"]
    assert (await shepherd.tasks.get(ALICE, task.id)).log_count == task.log_count + 2
