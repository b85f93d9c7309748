"""Loop mode (issue 17): a loop session's iterations run for real with the demo agent, which marks the goal through
the real `shepherd loop` launcher on the task-token callback. Without autoContinue each next iteration waits for
people (`loop.continue`); the loop ends at maxIterations, at the agent's `done` or `blocked`, or when people say no."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import col, select

from adapters.rest.agentuity_loop import routes
from adapters.rest.framework import SHEPHERD, envelope_middleware, mount
from bot.app import create_callback_app
from bot.callbacks import write_launcher
from bot.presets import agent_catalog
from core.errors import Conflict, Unauthorized
from core.people.access import Principal, Role
from core.sessions.loop import LoopStatus
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Confirmation, Event, Session, Task
from core.tasks.supervisor import TaskSupervisor
from tests.conftest import person
from tests.test_tasks import fast_config, supervisor

ALICE = person(Role.ADMIN, name="alice")


@dataclass
class World:
    shepherd: Shepherd
    sup: TaskSupervisor

    async def loop_session(self, goal: str, *, max_iterations: int = 3, auto: bool = False,
                           who: Principal = ALICE, start: bool = False) -> Session:
        """A loop session (`start`: its first iteration begun by its creation, as the hub's create does)."""
        return await self.shepherd.sessions.create(
            who, task=goal, agent="demo", workflow_mode="loop", start=start,
            loop={"goal": goal, "maxIterations": max_iterations, "autoContinue": auto, "allowDetached": False})

    async def session(self, session_id: str) -> Session:
        return await self.shepherd.loops.get(ALICE, session_id)

    async def until(self, session_id: str, test: Callable[[Session], bool], timeout: float = 20) -> Session:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            row = await self.session(session_id)
            if test(row):
                return row
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"gave up waiting: loop {row.loop_status} at {row.loop_iteration}: "
                                     f"{row.loop_summary}")
            await asyncio.sleep(0.05)

    async def until_task(self, task_id: str) -> Task:
        deadline = asyncio.get_running_loop().time() + 20
        while (task := await self.task(task_id)).outcome is None:
            assert asyncio.get_running_loop().time() < deadline, task.state_message
            await asyncio.sleep(0.05)
        return task

    async def asked(self, task_id: str) -> Confirmation:
        [conf] = [c for c in await self.shepherd.confirmations.pending(ALICE, task_id=task_id)
                  if c.action == "loop.continue"]
        return conf

    async def task(self, task_id: str) -> Task:
        return await self.shepherd.tasks.get(ALICE, task_id)

    async def inputs(self, task_id: str) -> list[str]:
        _, rows = await self.shepherd.tasks.logs(ALICE, task_id, limit=10_000)
        return [r.content for r in rows if r.type == "input"]

    async def session_events(self, session_id: str) -> list[Event]:
        async with self.shepherd.db.read() as session:
            return list(await session.exec(select(Event).where(Event.session_id == session_id)
                                           .order_by(col(Event.id))))


async def _world(url: str, tmp_path: Path) -> AsyncIterator[World]:
    db = Database(url)
    shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo", workspace_root=tmp_path / "data" / "ws")
    await shepherd.orgs.ensure("acme")
    await shepherd.orgs.ensure("globex")
    callback = web.AppRunner(create_callback_app(shepherd), access_log=None)
    await callback.setup()
    await web.TCPSite(callback, "127.0.0.1", 0).start()
    config = replace(fast_config(tmp_path / "data"), callback_url=f"http://127.0.0.1:{callback.addresses[0][1]}",
                     tool_dir=write_launcher(tmp_path / "bin"))
    sup = supervisor(shepherd, config)
    await sup.start()
    try:
        yield World(shepherd, sup)
    finally:
        await sup.stop()
        await callback.cleanup()
        await db.dispose()


@pytest.fixture
async def world(sqlite_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async for w in _world(sqlite_url, tmp_path):
        yield w


@pytest.fixture
async def world_on_both(db_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async for w in _world(db_url, tmp_path):
        yield w


async def test_without_auto_continue_each_next_iteration_is_asked_and_the_loop_ends_at_three(
    world_on_both: World,
) -> None:
    w = world_on_both
    row = await w.loop_session("tidy the notes", start=True)  # created as the hub's POST /hub/session does
    [task] = await w.shepherd.sessions.tasks_of(ALICE, row.id)
    assert (await w.session(row.id)).loop_status in ("starting", "running")
    assert (await w.shepherd.loops.start(ALICE, row.id)).id == task.id, "starting it again finds the same loop"
    for n in (1, 2):
        waiting = await w.until(row.id, lambda s, n=n: s.loop_status == "awaiting_input" and s.loop_iteration == n)
        assert waiting.loop_checkpoint_at is not None and waiting.loop_next_action == f"iteration {n + 1} of 3"
        assert "finished" in (waiting.loop_summary or "")
        conf = await w.asked(task.id)
        assert f"run iteration {n + 1}?" in conf.summary and (await w.task(task.id)).status == "awaiting"
        await w.shepherd.confirmations.vote(ALICE, conf.code, approve=True)
    done = await w.until(row.id, lambda s: s.loop_status == "completed")
    assert done.loop_iteration == 3 and "ended at the limit: 3 iterations" in (done.loop_summary or "")
    ended = await w.task(task.id)
    assert (ended.turns, ended.outcome) == (3, "succeeded")
    assert await w.shepherd.confirmations.pending(ALICE, task_id=task.id) == [], "nothing asked after the last"
    prompts = await w.inputs(task.id)
    assert [p.splitlines()[0] for p in prompts] == [f"Loop iteration {n} of 3." for n in (1, 2, 3)]
    assert "Goal: tidy the notes" in prompts[2] and "Last iteration's summary" in prompts[2]
    names = [e.name for e in await w.session_events(row.id)]
    assert names.count("loop.awaiting_input") == 2 and names[-1] == "loop.completed" and "loop.started" in names


async def test_with_auto_continue_it_runs_to_the_limit_or_to_the_agents_done(world: World) -> None:
    to_limit = await world.loop_session("keep going", auto=True)
    early = await world.loop_session("stop at two [loop-done 2]", max_iterations=5, auto=True)
    first = await world.shepherd.loops.start(ALICE, to_limit.id)
    second = await world.shepherd.loops.start(ALICE, early.id)

    full = await world.until(to_limit.id, lambda s: s.loop_status == "completed")
    assert full.loop_iteration == 3 and (await world.task(first.id)).turns == 3
    assert "ended at the limit" in (full.loop_summary or "")

    marked = await world.until(early.id, lambda s: s.loop_status == "completed")
    assert marked.loop_iteration == 2 and marked.loop_summary == "the demo agent is done at iteration 2"
    assert (await world.task(second.id)).turns == 2, "no iteration after the agent said done"
    assert await world.shepherd.confirmations.pending(ALICE) == [], "autoContinue asks nobody"


async def test_the_agent_marks_the_loop_blocked_with_what_a_person_must_do(world: World) -> None:
    row = await world.loop_session("needs access [loop-blocked 1]", auto=True)
    task = await world.shepherd.loops.start(ALICE, row.id)
    blocked = await world.until(row.id, lambda s: s.loop_status == "blocked")
    assert (blocked.loop_iteration, blocked.loop_next_action) == (1, "a person must grant access")
    assert blocked.loop_summary == "the demo agent is blocked at iteration 1"
    assert (await world.task(task.id)).turns == 1


async def test_rejecting_the_next_iteration_cancels_the_loop_and_ends_its_task(world: World) -> None:
    row = await world.loop_session("one step at a time")
    task = await world.shepherd.loops.start(ALICE, row.id)
    await world.until(row.id, lambda s: s.loop_status == "awaiting_input")
    conf = await world.asked(task.id)
    await world.shepherd.confirmations.vote(ALICE, conf.code, approve=False, comment="good enough")
    cancelled = await world.session(row.id)
    assert (cancelled.loop_status, cancelled.loop_iteration) == ("cancelled", 1)
    ended = await world.task(task.id)
    assert (ended.status, ended.outcome, ended.turns) == ("cancelled", "cancelled", 1)
    assert "rejected by alice" in ended.evidence["reason"]


async def test_a_follow_up_while_the_next_iteration_is_asked_does_not_run_it_unapproved(world: World) -> None:
    row = await world.loop_session("one step at a time")
    task = await world.shepherd.loops.start(ALICE, row.id)
    await world.until(row.id, lambda s: s.loop_status == "awaiting_input")
    conf = await world.asked(task.id)
    with pytest.raises(Conflict) as refused:  # not taken (and then lost, or run as the unapproved iteration)
        await world.shepherd.tasks.send(ALICE, task.id, "a person says hi")
    assert refused.value.code == "LOOP_AWAITING" and conf.code in str(refused.value)
    assert (await world.task(task.id)).status == "awaiting"
    assert [c.code for c in await world.shepherd.confirmations.pending(ALICE, task_id=task.id)] == [conf.code]
    assert (await world.session(row.id)).loop_iteration == 1, "iteration 2 waits for people"
    assert len(await world.inputs(task.id)) == 1


async def test_a_loop_iteration_is_a_turn_of_the_tasks_budget(world: World) -> None:
    row = await world.loop_session("budgeted", auto=True)
    async with world.shepherd.db.write() as session:
        stored = await session.get(Session, row.id)
        assert stored is not None
        stored.max_turns = 1
        session.add(stored)
    task = await world.shepherd.loops.start(ALICE, row.id)
    waiting = await world.until(row.id, lambda s: s.loop_status == "awaiting_input")
    assert waiting.loop_next_action == "extend the budget (budget.extend) or stop"
    [conf] = await world.shepherd.confirmations.pending(ALICE, task_id=task.id)
    assert conf.action == "budget.extend"
    await world.shepherd.confirmations.vote(ALICE, conf.code, approve=True)
    await world.until(row.id, lambda s: s.loop_iteration == 2 and s.loop_status in ("running", "awaiting_input"))


async def test_the_loop_route_shows_every_key_and_refuses_other_orgs(world: World) -> None:
    app = web.Application(middlewares=[envelope_middleware])
    app[SHEPHERD] = world.shepherd
    mount(app, routes)
    client = TestClient(TestServer(app))
    await client.start_server()
    # an admin's token: the sessions here are private ones of ALICE (a principal of the tests, not this user)
    token = (await world.shepherd.tokens.create(org_id="acme", user="alice", scopes="read,write,admin")).secret
    other = (await world.shepherd.tokens.create(org_id="globex", user="gus", scopes="read")).secret

    async def get(path: str, secret: str = token) -> tuple[int, Any]:
        async with client.get(path, headers={"Authorization": f"Bearer {secret}"}) as resp:
            return resp.status, await resp.json()

    try:
        row = await world.loop_session("tidy", max_iterations=2, auto=True)
        status, idle = await get(f"/hub/session/{row.id}/loop")
        assert status == 200 and idle == {
            "sessionId": row.id, "workflowMode": "loop",
            "loop": {"goal": "tidy", "maxIterations": 2, "autoContinue": True, "allowDetached": False,
                     "status": "idle", "iteration": 0, "summary": None, "nextAction": None,
                     "lastCheckpointAt": None}}
        await world.shepherd.loops.start(ALICE, row.id)
        await world.until(row.id, lambda s: s.loop_status == "completed")
        _, done = await get(f"/hub/session/{row.id}/loop?orgId=acme")
        assert done["loop"]["status"] == "completed" and done["loop"]["iteration"] == 2
        assert done["loop"]["lastCheckpointAt"].endswith("Z") and "ended at the limit" in done["loop"]["summary"]

        standard = await world.shepherd.sessions.create(ALICE, task="just work")
        _, plain = await get(f"/hub/session/{standard.id}/loop")
        assert plain == {"sessionId": standard.id, "workflowMode": "standard", "loop": None}
        assert (await get(f"/hub/session/{row.id}/loop", other))[0] == 404
        # a private session's loop (its goal, the agent's summaries) is hidden from the rest of the org too
        bob = (await world.shepherd.tokens.create(org_id="acme", user="bob", scopes="read,write")).secret
        status, body = await get(f"/hub/session/{row.id}/loop", bob)
        assert status == 404 and body["code"] == "SESSION_NOT_FOUND"
        status, body = await get(f"/hub/session/{row.id}/loop?orgId=globex")
        assert status == 403 and body["code"] == "ORG_MISMATCH"
        assert (await get("/hub/session/sess_nope/loop"))[1]["code"] == "SESSION_NOT_FOUND"
    finally:
        await client.close()


async def test_only_a_loop_tasks_own_token_marks_its_loop(world: World) -> None:
    plain = (await world.shepherd.tasks.create(ALICE, prompt="iteration 1 of 1 [loop-done 1]", runtime="demo")).task
    await world.until_task(plain.id)
    _, rows = await world.shepherd.tasks.logs(ALICE, plain.id, limit=1000)
    said = [r.content for r in rows]
    assert "loop done at iteration 1: not marked (exit 3)" in said, said
    assert any("not a session's loop task" in line for line in said), "the agent hears why"
    row = await world.loop_session("marked by a stranger")
    await world.shepherd.loops.start(ALICE, row.id)
    with pytest.raises(Unauthorized):
        await world.shepherd.loops.mark(plain.id, "sht_forged", status=LoopStatus.COMPLETED, summary="done")


async def test_the_loop_is_paused_with_its_task_and_cancelled_when_people_stop_it(world: World) -> None:
    row = await world.loop_session("count slowly [long 30]", auto=True)
    task = await world.shepherd.loops.start(ALICE, row.id)
    await world.until(row.id, lambda s: s.loop_status == "running")
    await world.shepherd.tasks.pause(ALICE, task.id)
    await world.until(row.id, lambda s: s.loop_status == "paused")
    await world.shepherd.tasks.resume(ALICE, task.id)
    await world.until(row.id, lambda s: s.loop_status == "running")
    await world.shepherd.tasks.stop(ALICE, task.id)
    stopped = await world.until(row.id, lambda s: s.loop_status == "cancelled")
    assert stopped.loop_iteration == 1 and (await world.until_task(task.id)).outcome == "cancelled"
