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


async def test_the_lines_of_one_read_are_stored_together_and_read_back_as_lines_each_with_its_own_id(
    shepherd: Shepherd,
) -> None:
    """A read of an agent's pipe is stored as one row (or a few, for a long read), not a row per line; every reader
    still gets lines: the task's log, a page of it from a cursor in the middle of a row, its tail, and a follow of
    two tasks whose reads interleave, each line once with an id of its own, in order."""
    from sqlalchemy import func, select

    from core.store.models import TaskLog
    from core.tasks.follow import read_tick
    from core.tasks.loglines import chunks

    one, two = await started_task(shepherd, status="running"), await started_task(shepherd, status="running")
    reads = {one.id: [[f"one {i}" for i in range(1500)], ["", "x" * 4500, "after a long line", ""], ["last of one"]],
             two.id: [[f"two {i}" for i in range(40)], [""] * 2100, ["last of two"]]}  # rows of 1024 lines
    output = TaskOutput(shepherd.db)
    for round_ in range(3):
        for task_id, its in reads.items():
            if round_ < len(its):
                output.add_many(task_id, its[round_])
        await output.flush()
    expected = {task_id: [line for read in its for line in read] for task_id, its in reads.items()}

    async with shepherd.db.read() as session:
        stored = (await session.exec(select(func.count()).select_from(TaskLog).where(
            TaskLog.task_id == one.id, TaskLog.type == "output"))).one()[0]
    assert stored == sum(len(list(chunks(read))) for read in reads[one.id]) < 20  # not 1,505 rows

    _, lines = await shepherd.tasks.logs(ALICE, one.id, limit=10_000)
    output_lines = [row for row in lines if row.type == "output"]
    assert [row.content for row in output_lines] == expected[one.id]
    ids = [row.id for row in lines]
    assert ids == sorted(set(ids))  # each its own, in order
    _, others = await shepherd.tasks.logs(ALICE, two.id, limit=10_000)
    assert [row.content for row in others if row.type == "output"] == expected[two.id]
    assert [row.id for row in others] == sorted({row.id for row in others})
    assert not {row.id for row in others} & set(ids)  # the tasks' rows were written side by side: no id shared

    # a page from a cursor inside a row, then the next pages, read by their own cursors
    cursor = output_lines[700].id
    paged: list[str] = []
    while True:
        _, page, more = await shepherd.tasks.log_page(ALICE, one.id, after_id=cursor, limit=333)
        paged += [row.content for row in page]
        assert len(page) == 333 or not more
        if not more:
            break
        cursor = page[-1].id
    assert paged == expected[one.id][701:]
    _, tail = await shepherd.tasks.logs(ALICE, one.id, limit=3, tail=True)
    assert [row.content for row in tail] == expected[one.id][-3:]
    _, page, more = await shepherd.tasks.log_page(ALICE, two.id, after_id=0, limit=5)  # a page ends inside a row
    assert [row.content for row in page if row.type == "output"][-3:] == expected[two.id][2:5] and more
    _, page = await shepherd.tasks.logs(ALICE, two.id, after_id=page[-1].id, limit=4)
    assert [row.content for row in page] == expected[two.id][5:9]

    # a follow of both tasks from the middle of the first read of `one`
    cursor, followed = output_lines[1200].id, []
    while True:
        tick = await read_tick(shepherd.db, [one.id, two.id], cursor, limit=2)
        assert len(tick.lines) <= 2  # a row of a thousand lines is not read whole into one tick
        followed += [(line.task_id, line.content) for line in tick.lines if line.type == "output"]
        if not tick.lines:
            break
        cursor = tick.lines[-1].id
    assert [content for task_id, content in followed if task_id == one.id] == expected[one.id][1201:]
    assert [content for task_id, content in followed if task_id == two.id] == expected[two.id]
    assert (await shepherd.tasks.get(ALICE, one.id)).log_count == one.log_count + len(expected[one.id])


async def test_a_page_of_a_log_of_long_reads_reads_only_the_rows_it_shows(
    shepherd: Shepherd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row holds the lines of one read (up to 1,024): a page of ten lines, or the tail of a task's page, reads
    the one or two rows that hold them, not as many rows as the page has lines (twenty rows of a thousand lines
    each for a page of ten: a client paging through the log read it whole again and again)."""
    from core.tasks import listing, service
    from core.tasks.loglines import chunks

    task = await started_task(shepherd, status="running")
    output = TaskOutput(shepherd.db)
    for read in range(20):
        output.add_many(task.id, [f"read {read} line {i}" for i in range(1000)])
        await output.flush()
    expected = [f"read {read} line {i}" for read in range(20) for i in range(1000)]
    given: list[int] = []  # how many rows each reader was handed by the store
    for name in ("log_entries", "log_tail"):
        real = getattr(listing, name)

        def counting(rows: Any, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            rows = list(rows)
            given.append(len(rows))
            return _real(rows, *args, **kwargs)

        monkeypatch.setattr(listing, name, counting)
        monkeypatch.setattr(service, name, counting, raising=False)  # wherever the pages are read

    _, first, more = await shepherd.tasks.log_page(ALICE, task.id, after_id=0, limit=10)
    outputs = [row for row in first if row.type == "output"]
    assert [row.content for row in outputs] == expected[:len(outputs)] and more
    _, page, more = await shepherd.tasks.log_page(ALICE, task.id, after_id=outputs[-1].id, limit=995)
    assert [row.content for row in page] == expected[len(outputs):len(outputs) + 995] and more  # across two rows
    _, tail = await shepherd.tasks.logs(ALICE, task.id, limit=1500, tail=True)
    assert [row.content for row in tail] == expected[-1500:]
    _, whole = await shepherd.tasks.logs(ALICE, task.id, limit=10_000)
    whole_outputs = [row.content for row in whole if row.type == "output"]
    assert len(whole) == 10_000 and whole_outputs == expected[:len(whole_outputs)]
    per_read = len(list(chunks([f"read 0 line {i}" for i in range(1000)])))  # rows a read of 1000 lines made
    stored = 20 * per_read

    def rows_for(lines: int) -> int:  # the rows a run of `lines` lines spans at most: those of the reads it touches
        return (-(-lines // 1000) + 1) * per_read

    assert given[0] == 1, given  # the first row holds the page
    assert given[1] <= rows_for(995) and given[2] <= rows_for(1500) and given[3] <= rows_for(10_000), given
    assert given[3] < stored, (given, stored)


async def test_a_follow_catching_up_on_a_log_of_long_reads_loads_only_the_rows_of_its_tick(
    shepherd: Shepherd,
) -> None:
    """A live follow (logs?follow, an invoke's stream) that starts far behind reads a tick of `limit` lines: from
    the rows that hold them, not `limit` rows of up to a thousand lines each, again for every tick."""
    from sqlalchemy import event

    from core.store.models import TaskLog
    from core.tasks.follow import read_tick

    task = await started_task(shepherd, status="running")
    output = TaskOutput(shepherd.db)
    for read in range(20):
        output.add_many(task.id, [f"read {read} line {i}" for i in range(1000)])
        await output.flush()
    loaded: list[int] = []

    def on_load(target: TaskLog, _context: Any) -> None:
        loaded.append(int(target.id or 0))

    event.listen(TaskLog, "load", on_load)
    try:
        cursor, followed, ticks = 0, [], 0
        while True:
            tick = await read_tick(shepherd.db, [task.id], cursor, limit=500)
            ticks += 1
            followed += [line.content for line in tick.lines if line.type == "output"]
            if tick.caught_up and not tick.lines:
                break
            cursor = tick.lines[-1].id if tick.lines else cursor
            assert ticks < 100
    finally:
        event.remove(TaskLog, "load", on_load)
    assert followed == [f"read {read} line {i}" for read in range(20) for i in range(1000)]
    rows = len(set(loaded))
    assert len(loaded) <= 2 * rows, (len(loaded), rows)  # each row loaded by the ticks it spans, not by every tick
