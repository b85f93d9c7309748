"""The stall watchdog (core.tasks.watchdog), on SQLite and PostgreSQL, with a chosen `now`: a running task whose
agent went silent is warned once in its thread with the last line it printed, before the idle timeout ends it; not
while it prints; again after a new silence; a task waiting on people gets a note once per day. And once for real:
a demo agent that hangs is warned in its thread while it still runs, then times out."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from bot.outbox import Dispatcher
from core.clock import as_utc
from core.shepherd import Shepherd
from core.store.models import Outbox, Task
from core.tasks.output import TaskOutput
from core.tasks.watchdog import Watchdog
from tests.test_confirmations import ALICE, gate, pr_plan, started_task
from tests.test_outbox import Sink, _drain
from tests.test_tasks import RigFactory
from tests.test_tasks import make_rig as make_rig  # the fixture, shared

DAY = 86400.0


async def running(shepherd: Shepherd) -> Task:
    """A task whose agent runs (its turn began now), started from the console of alice."""
    task = await started_task(shepherd, status="running")
    async with shepherd.db.write() as session:
        await session.exec(update(Task).where(col(Task.id) == task.id).values(state="working"))
    return await shepherd.tasks.get(ALICE, task.id)


async def printed(shepherd: Shepherd, task: Task, *lines: str) -> datetime:
    """The agent prints `lines` (stored by the real output flusher); returns when, as stored."""
    output = TaskOutput(shepherd.db)
    for line in lines:
        output.add(task.id, line)
    await output.flush()
    stored = await shepherd.tasks.get(ALICE, task.id)
    assert stored.output_at is not None
    return as_utc(stored.output_at)


async def notes(shepherd: Shepherd, task: Task, prefix: str) -> list[Outbox]:
    async with shepherd.db.read() as session:
        return list(await session.exec(select(Outbox).where(col(Outbox.key).startswith(f"{prefix}:{task.id}:"))
                                       .order_by(col(Outbox.id))))


async def test_a_silent_task_is_warned_once_with_its_last_line_and_again_after_a_new_silence(
    shepherd: Shepherd,
) -> None:
    watchdog = Watchdog(shepherd.db, idle_timeout_s=600)  # warns after 300 s of silence
    task = await running(shepherd)
    last = await printed(shepherd, task, "compiling", "running the test suite")
    assert await watchdog.warn_stalled(last + timedelta(seconds=299)) == "nothing due"

    said = await watchdog.warn_stalled(last + timedelta(seconds=301))
    assert said == "warned 1 silent task, noted 0 waiting on people, 1 messages", said
    [row] = await notes(shepherd, task, "stall")
    assert (row.channel, row.address) == ("console", "alice")
    message = row.payload
    assert message["detail"] == "running the test suite"
    assert f"task {task.name} has printed nothing for 5 min" in message["text"]
    ends = (last + timedelta(seconds=600)).strftime("%H:%M UTC")
    assert f"ends its turn at {ends}" in message["text"], message["text"]

    assert await watchdog.warn_stalled(last + timedelta(seconds=400)) == "nothing due"  # once per silence
    # past the idle timeout the runner ends the turn: no warning after the fact
    assert await watchdog.warn_stalled(last + timedelta(seconds=700)) == "nothing due"

    again = await printed(shepherd, task, "still here: 3 tests left")
    assert await watchdog.warn_stalled(again + timedelta(seconds=100)) == "nothing due"  # it prints: no warning
    assert (await watchdog.warn_stalled(again + timedelta(seconds=301))).startswith("warned 1 silent task")
    rows = await notes(shepherd, task, "stall")
    assert [r.payload["detail"] for r in rows] == ["running the test suite", "still here: 3 tests left"]


async def test_a_task_that_never_printed_is_warned_from_its_turns_start(shepherd: Shepherd) -> None:
    watchdog = Watchdog(shepherd.db, idle_timeout_s=600, warn_s=120)
    task = await running(shepherd)
    began = as_utc(task.state_at)
    assert await watchdog.warn_stalled(began + timedelta(seconds=119)) == "nothing due"
    assert (await watchdog.warn_stalled(began + timedelta(seconds=121))).startswith("warned 1 silent task")
    [row] = await notes(shepherd, task, "stall")
    assert row.payload["detail"] == "(nothing printed yet)"


async def test_paused_and_asking_tasks_are_not_stalled_and_a_day_of_waiting_gets_one_note_a_day(
    shepherd: Shepherd,
) -> None:
    watchdog = Watchdog(shepherd.db, idle_timeout_s=600)
    paused = await running(shepherd)
    async with shepherd.db.write() as session:
        await session.exec(update(Task).where(col(Task.id) == paused.id).values(status="paused", state="idle"))
    asking = await running(shepherd)
    async with shepherd.db.write() as session:
        await session.exec(update(Task).where(col(Task.id) == asking.id).values(
            state="idle", state_message="waiting for approval K7P2: deploy to staging"))
    since = as_utc(asking.state_at)
    assert await watchdog.warn_stalled(since + timedelta(seconds=500)) == "nothing due"
    assert await watchdog.warn_stalled(since + timedelta(seconds=DAY - 60)) == "nothing due"

    said = await watchdog.warn_stalled(since + timedelta(seconds=DAY + 60))
    assert said == "warned 0 silent tasks, noted 1 waiting on people, 1 messages", said
    [row] = await notes(shepherd, asking, "waiting")
    assert row.payload["text"] == (f"task {asking.name} has waited on people for 24 h: waiting for approval K7P2: "
                                   "deploy to staging")
    assert await watchdog.warn_stalled(since + timedelta(seconds=2 * DAY - 60)) == "nothing due"  # once a day
    assert (await watchdog.warn_stalled(since + timedelta(seconds=2 * DAY + 60))).endswith(
        "noted 1 waiting on people, 1 messages")
    assert len(await notes(shepherd, asking, "waiting")) == 2
    assert await notes(shepherd, paused, "stall") == [] and await notes(shepherd, paused, "waiting") == []


async def test_a_task_awaiting_a_decision_for_a_day_gets_a_note(shepherd: Shepherd) -> None:
    watchdog = Watchdog(shepherd.db)
    task = await started_task(shepherd)  # awaiting its pull request's gate
    await gate(shepherd, task, pr_plan())
    since = as_utc(task.state_at)
    assert await watchdog.warn_stalled(since + timedelta(seconds=DAY - 1)) == "nothing due"
    assert (await watchdog.warn_stalled(since + timedelta(seconds=DAY + 1))).endswith("1 waiting on people, 1 messages")
    [row] = await notes(shepherd, task, "waiting")
    assert (row.channel, row.address) == ("console", "alice") and "has waited on people for 24 h" in row.payload["text"]


async def test_runs_at_once_in_two_processes_warn_once(two_cores: tuple[Shepherd, Shepherd]) -> None:
    a, b = two_cores
    task = await running(a)
    last = await printed(a, task, "thinking")
    now = last + timedelta(seconds=301)
    said = await asyncio.gather(*(Watchdog(s.db).warn_stalled(now) for s in (a, b, a, b)))
    assert said.count("nothing due") == 3, said
    assert len(await notes(a, task, "stall")) == 1


async def test_a_hanging_demo_agent_is_warned_in_its_thread_before_the_idle_timeout_ends_it(
    db_url: str, make_rig: RigFactory,  # noqa: F811  (the fixture imported above)
) -> None:
    rig = await make_rig(db_url, idle_timeout_s=6.0)
    task = await rig.run("think [hang]", thread=("console", "admin"))
    await rig.printed(task.id, "thinking very hard")
    stored = await rig.until(task.id, lambda t: t.output_at is not None)
    assert stored.output_at is not None
    watchdog = Watchdog(rig.shepherd.db, idle_timeout_s=6.0)  # as the runner's: warns after 3 s of silence
    # the scheduler would call it a few seconds from now; the job is told that time rather than waited for
    said = await watchdog.warn_stalled(as_utc(stored.output_at) + timedelta(seconds=4))
    assert said.startswith("warned 1 silent task"), said
    console = Sink(name="console")
    await _drain(Dispatcher(rig.shepherd, [console]))
    warning = [text for kind, address, text in console.delivered if "has printed nothing" in text]
    assert warning and f"task {stored.name} has printed nothing for 4 s" in warning[0], console.delivered
    async with rig.shepherd.db.read() as session:
        [row] = list(await session.exec(select(Outbox).where(col(Outbox.key).startswith(f"stall:{task.id}:"))))
    assert row.address == "admin" and "thinking very hard" in row.payload["detail"]
    assert (await rig.get(task.id)).status == "running", "warned while it still runs"
    done = await rig.finished(task.id)
    assert done.outcome == "timed_out"


def test_a_stall_warning_later_than_the_idle_timeout_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog warns only while the turn still runs (before SHEPHERD_TASK_IDLE_TIMEOUT): a STALL_WARN at or
    past it was taken, and no silent task was ever warned, without a word. Refused at start, saying why."""
    from pydantic import ValidationError

    from bot.settings import Settings

    monkeypatch.setenv("SHEPHERD_TASK_IDLE_TIMEOUT", "600")
    monkeypatch.setenv("SHEPHERD_STALL_WARN", "900")
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    assert "SHEPHERD_STALL_WARN (900 s) must be below SHEPHERD_TASK_IDLE_TIMEOUT (600 s)" in str(caught.value)
    monkeypatch.setenv("SHEPHERD_STALL_WARN", "300")
    assert Settings(_env_file=None).stall_warn == 300


async def test_many_tasks_waiting_on_people_never_hide_a_silent_running_one(
    shepherd: Shepherd, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import core.tasks.watchdog

    monkeypatch.setattr(core.tasks.watchdog, "MAX_CANDIDATES", 2)  # fewer than the tasks waiting on people
    for _ in range(3):
        waiting = await started_task(shepherd)  # awaiting their gates, older than the running one
        await gate(shepherd, waiting, pr_plan())
    task = await running(shepherd)
    last = await printed(shepherd, task, "downloading the internet")
    said = await Watchdog(shepherd.db, idle_timeout_s=600).warn_stalled(last + timedelta(seconds=301))
    assert said.startswith("warned 1 silent task"), said
    assert [r.payload["detail"] for r in await notes(shepherd, task, "stall")] == ["downloading the internet"]
