"""A turn on a remote engine outlives the Shepherd that started it: when the worker stops (a deploy, a crash), the
unit runs on in the engine, and the next worker finds it again, follows the rest of its output, brings its work
back and reports how it really ended — not `interrupted`. Driven through TaskSupervisor with each remote runner
against its engine's fake, on both stores; the local runner's restart (interrupted, its leftovers reaped) is
tests/test_runner_nodes.py's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlmodel import select

from core.autonomy.actions import ActionsConfig, Executor
from core.errors import Conflict
from core.people.access import Principal, Role
from core.runners.presets import PYTHON, AgentCatalog, Preset
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Event
from core.tasks.supervisor import RunnerConfig, TaskSupervisor
from tests.conftest import person
from tests.runner_rigs import RIGS, Rig

LIMIT_S = 45.0
SLOW = """
import pathlib, sys, time
for i in range(80):  # 8 s: time enough for the worker to stop on a busy machine before it ends
    print(f'step {i}', flush=True)
    time.sleep(0.1)
pathlib.Path('result.txt').write_text('written after the restart\\n')
print('done, but the tests still fail', flush=True)
sys.exit(4)
"""


def agent(rig: Rig) -> Preset:
    python = getattr(rig, "python", PYTHON)  # the unit's own interpreter: an engine's image has its own
    return Preset("slow", "a slow agent", start=(python, "-c", SLOW, "{prompt}"), resume=None,
                  version=(python, "--version"), install="")


@pytest.fixture(params=sorted(k for k in RIGS if k != "local"))
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    made = await RIGS[request.param](tmp_path / "workspaces")
    made.workspace_root.mkdir(parents=True, exist_ok=True)
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
async def core(rig: Rig, db_url: str) -> AsyncIterator[tuple[Shepherd, Principal]]:
    """A Shepherd whose one agent is the slow one, in the unit's own interpreter, and an admin of its org."""
    db = Database(db_url)
    shepherd = Shepherd(db, catalog=AgentCatalog([agent(rig)]), default_agent="slow", workspace_root=rig.workspace_root)
    await shepherd.orgs.ensure("acme")
    try:
        yield shepherd, person(Role.ADMIN)
    finally:
        await db.dispose()


def supervisor(shepherd: Shepherd, rig: Rig, runner: object) -> TaskSupervisor:
    config = RunnerConfig(workspace_root=rig.workspace_root, poll_s=0.05, flush_s=0.05, idle_timeout_s=20,
                          hard_timeout_s=60, max_tasks=2)
    shepherd.tasks.runner_capabilities = runner.capabilities  # type: ignore[attr-defined]
    return TaskSupervisor(shepherd, config, runner=runner, executor=Executor(ActionsConfig()))  # type: ignore[arg-type]


async def until(check, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + LIMIT_S
    while not await check():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.1)


async def test_a_worker_restart_finds_the_remote_turn_again_and_reports_its_real_outcome(
        rig: Rig, core: tuple[Shepherd, Principal]) -> None:
    shepherd, who = core
    first = supervisor(shepherd, rig, rig.runner)
    await first.start()
    try:
        task = (await shepherd.tasks.create(who, prompt="make the tests pass", runtime="slow")).task

        async def printed(line: str) -> bool:
            _, logs = await shepherd.tasks.logs(who, task.id, limit=1000)
            return any(r.content == line for r in logs)

        await until(lambda: printed("step 3"), "the agent's first lines")
    finally:
        await first.stop()  # a deploy: the worker goes, the unit runs on
    row = await shepherd.tasks.get(who, task.id)
    assert row.status == "running" and row.outcome is None, row.state_message
    assert row.runner_kind == rig.runner.kind and row.runner_unit
    assert await rig.leftovers(task.id), "stopping the worker ended the remote unit"

    second = supervisor(shepherd, rig, await rig.new_runner())
    await second.start()
    try:
        await until(lambda: _ended(shepherd, who, task.id), "the adopted task ended")
        row = await shepherd.tasks.get(who, task.id)
        assert row.outcome == "failed" and "exit code 4" in row.state_message, row.state_message
        assert await printed("done, but the tests still fail")  # followed after the restart
        result = rig.workspace_root / task.id / "result.txt"
        assert result.read_text() == "written after the restart\n"  # its work came back into Shepherd's copy
        async with shepherd.db.read() as session:
            names = list(await session.exec(select(Event.name).where(Event.task_id == task.id)))
        assert "task.reattached" in names and "task.interrupted" not in names
    finally:
        await second.stop()


async def test_pause_is_refused_with_why_where_the_engine_cannot_freeze(
        rig: Rig, core: tuple[Shepherd, Principal]) -> None:
    if rig.runner.capabilities.pause:
        pytest.skip(f"{rig.runner.kind} pauses natively (the runner contract covers it)")
    shepherd, who = core
    sup = supervisor(shepherd, rig, rig.runner)
    await sup.start()
    try:
        task = (await shepherd.tasks.create(who, prompt="x", runtime="slow")).task

        await until(lambda: _running(shepherd, who, task.id), "the task runs")
        with pytest.raises(Conflict) as refused:
            await shepherd.tasks.pause(who, task.id)
        assert refused.value.code == "PAUSE_UNSUPPORTED" and refused.value.status == 409
        assert rig.runner.capabilities.why_no_pause in refused.value.message
        await shepherd.tasks.stop(who, task.id)
        await until(lambda: _ended(shepherd, who, task.id), "the stopped task ended")
        assert await rig.leftovers(task.id) == []
    finally:
        await sup.stop()


async def _ended(shepherd: Shepherd, who: Principal, task_id: str) -> bool:
    return (await shepherd.tasks.get(who, task_id)).outcome is not None


async def _running(shepherd: Shepherd, who: Principal, task_id: str) -> bool:
    return (await shepherd.tasks.get(who, task_id)).status == "running"




async def test_a_worker_without_shepherds_copy_of_the_workspace_ends_the_adopted_turn_and_says_why(
        rig: Rig, core: tuple[Shepherd, Principal]) -> None:
    import shutil

    shepherd, who = core
    first = supervisor(shepherd, rig, rig.runner)
    await first.start()
    try:
        task = (await shepherd.tasks.create(who, prompt="x", runtime="slow")).task

        await until(lambda: _running(shepherd, who, task.id), "the task runs")
    finally:
        await first.stop()
    shutil.rmtree(rig.workspace_root / task.id)  # another worker, whose data directory is not shared
    second = supervisor(shepherd, rig, await rig.new_runner())
    await second.start()
    try:
        await until(lambda: _ended(shepherd, who, task.id), "the adopted task ended")
        row = await shepherd.tasks.get(who, task.id)
        assert row.outcome == "interrupted" and "SHEPHERD_DATA_DIR" in row.state_message, row.state_message
        assert await rig.leftovers(task.id) == []  # not left working for nothing
    finally:
        await second.stop()
