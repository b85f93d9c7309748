"""Tasks run for real: the demo agent (bot/demo_agent.py) as a child process group, real git
workspaces, the real store. Each test says what a user would see."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.presets import agent_catalog
from core.autonomy.actions import ActionsConfig, Executor
from core.errors import Conflict, ValidationFailed
from core.people.access import Principal, Role
from core.runners.local import LocalRunner, group_members
from core.runners.presets import AgentCatalog, Preset, custom_presets
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Agent, Org, RunnerNode, Task
from core.tasks.group import BulkWrites, GroupWrites
from core.tasks.state import TRANSITIONS, Outcome, TaskStatus, check_transition
from core.tasks.supervisor import RunnerConfig, TaskSupervisor
from tests.conftest import person
from tests.gitrepos import seed_repo

SECRETS = {
    "SLACK_BOT_TOKEN": "xoxb-secret-slack",
    "SLACK_SIGNING_SECRET": "slack-signing-secret",
    "TELEGRAM_BOT_TOKEN": "123:telegram-secret",
    "GITHUB_WEBHOOK_SECRET": "gh-webhook-secret",
    "GITHUB_PRIVATE_KEY": "-----BEGIN KEY-----",
    "SHEPHERD_DATABASE_URL": "postgresql://u:dbpassword@h/db",
    "SHEPHERD_SLACK_TOKEN": "shepherd-secret",
}


class Rig:
    """A core with a running supervisor, and helpers to wait for what a user waits for."""

    def __init__(self, shepherd: Shepherd, supervisor: TaskSupervisor, who: Principal) -> None:
        self.shepherd = shepherd
        self.sup = supervisor
        self.who = who

    async def run(self, prompt: str, **kw: Any) -> Task:
        kw.setdefault("runtime", "demo")
        return (await self.shepherd.tasks.create(self.who, prompt=prompt, **kw)).task

    async def get(self, task_id: str) -> Task:
        return await self.shepherd.tasks.get(self.who, task_id)

    async def until(self, task_id: str, test: Callable[[Task], bool], timeout: float = 20) -> Task:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            task = await self.get(task_id)
            if test(task):
                return task
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"gave up waiting: {task.status} {task.outcome} {task.state_message}")
            await asyncio.sleep(0.05)

    async def finished(self, task_id: str, timeout: float = 20) -> Task:
        return await self.until(task_id, lambda t: t.outcome is not None and not t.pending_inputs, timeout)

    async def output(self, task_id: str) -> list[str]:
        _, rows = await self.shepherd.tasks.logs(self.who, task_id, limit=10_000)
        return [r.content for r in rows if r.type == "output"]

    async def printed(self, task_id: str, text: str, timeout: float = 20) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not any(text in line for line in await self.output(task_id)):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{text!r} never printed; got {await self.output(task_id)}")
            await asyncio.sleep(0.05)


def supervisor(shepherd: Shepherd, config: RunnerConfig, executor: Executor | None = None) -> TaskSupervisor:
    """A supervisor as the application builds one: the local runner, and an executor for approved actions."""
    return TaskSupervisor(shepherd, config, runner=LocalRunner(),
                          executor=executor or Executor(ActionsConfig(git_base_url=config.git_base_url)))


def fast_config(root: Path, **kw: Any) -> RunnerConfig:
    base = RunnerConfig(workspace_root=root / "workspaces", poll_s=0.05, flush_s=0.05,
                        idle_timeout_s=20, hard_timeout_s=60, max_tasks=8)
    return replace(base, **kw)


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[RigFactory]:
    started: list[tuple[TaskSupervisor, Database]] = []

    async def make(url: str, catalog: AgentCatalog | None = None, **config: Any) -> Rig:
        db = Database(url)
        shepherd = Shepherd(db, catalog=catalog or agent_catalog(), default_agent="demo",
                            workspace_root=tmp_path / "data" / "workspaces")
        await shepherd.orgs.ensure("acme")
        await shepherd.orgs.ensure("globex")
        sup = supervisor(shepherd, fast_config(tmp_path / "data", **config))
        await sup.start()
        started.append((sup, db))
        return Rig(shepherd, sup, person(Role.ADMIN))

    yield make
    for sup, db in reversed(started):
        await sup.stop()
        await db.dispose()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A local git repository with one commit on main."""
    return seed_repo(tmp_path / "upstream", "# upstream\n")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- the state machine -------------------------------------------------------------------------------


def test_every_status_has_its_transitions_and_finished_tasks_only_reopen_for_a_follow_up() -> None:
    assert set(TRANSITIONS) == set(TaskStatus)
    for done in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED):
        # a follow-up, or people asked first (its budget reached, a loop's next iteration)
        assert TRANSITIONS[done] == {TaskStatus.PENDING, TaskStatus.AWAITING}
    task = Task(id="t", org_id="o", name="n", display_name="n", owner_id="u", owner_name="u", runtime="demo",
                prompt="p", status="completed", state="complete")
    with pytest.raises(Conflict, match="cannot become running"):
        check_transition(task, TaskStatus.RUNNING)
    for outcome in Outcome:
        assert outcome.status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


# --- outcomes, with evidence ---------------------------------------------------------------------------


async def test_a_run_on_a_local_repo_succeeds_with_diff_stats(db_url: str, make_rig: RigFactory, repo: Path) -> None:
    rig = await make_rig(db_url)
    task = await rig.run("add a greeting to the README", repo=str(repo))
    assert task.status == "pending" and task.work_branch == f"shepherd/{task.name}"
    done = await rig.finished(task.id)
    assert (done.status, done.outcome, done.state) == ("completed", "succeeded", "complete")
    ev = done.evidence
    assert ev["exitCode"] == 0 and ev["durationSeconds"] > 0
    assert ev["diff"]["files"] == 2 and sorted(ev["diff"]["paths"]) == ["NOTES.md", "README.md"]
    assert ev["diff"]["insertions"] >= 3 and ev["lastLines"][-1] == "done: turn 1 finished"
    _, logs = await rig.shepherd.tasks.logs(rig.who, task.id)
    assert logs[0].type == "input" and logs[0].content == "add a greeting to the README"
    assert [r.id for r in logs] == sorted(r.id for r in logs) and "edited README.md" in [r.content for r in logs]
    workspace = Path(done.workspace or "")
    branch = subprocess.run(["git", "branch", "--show-current"], cwd=workspace, capture_output=True, text=True)
    assert branch.stdout.strip() == f"shepherd/{task.name}" and done.base_branch == "main"
    assert (repo / "README.md").read_text() == "# upstream\n", "the user's repository is never touched"
    async with rig.shepherd.db.read() as session:
        agent = await session.get(Agent, done.agent_id)
    assert agent is not None and agent.type == "task" and agent.status == "IDLE" and agent.tasks_completed == 1
    names = [e.name for e in await rig.shepherd.events.list(rig.who, limit=50) if e.task_id == task.id]
    assert {"task.created", "task.turn_started", "task.finished"} <= set(names)


async def test_a_permission_denial_with_exit_code_zero_is_not_success(sqlite_url: str, make_rig: RigFactory) -> None:
    rig = await make_rig(sqlite_url)
    done = await rig.finished((await rig.run("deploy it [deny]")).id)
    assert done.outcome == "denied" and done.status == "failed" and done.state == "failed"
    assert done.evidence["exitCode"] == 0 and "haven't granted it yet" in done.evidence["reason"]


async def test_a_failing_agent_fails_with_its_exit_code_and_last_lines(sqlite_url: str, make_rig: RigFactory) -> None:
    rig = await make_rig(sqlite_url)
    done = await rig.finished((await rig.run("compile [fail]")).id)
    assert done.outcome == "failed" and done.evidence["exitCode"] == 3
    assert any("does not compile" in line for line in done.evidence["lastLines"])
    budget = await rig.finished((await rig.run("spend [budget]")).id)
    assert budget.outcome == "budget_exceeded" and budget.evidence["exitCode"] == 0


async def test_a_hanging_agent_times_out_and_leaves_no_process(sqlite_url: str, make_rig: RigFactory) -> None:
    rig = await make_rig(sqlite_url, idle_timeout_s=1.0)
    task = await rig.run("think [hang]")
    running = await rig.until(task.id, lambda t: t.status == "running")
    assert running.pid is not None
    done = await rig.finished(task.id)
    assert done.outcome == "timed_out" and "no output for 1 s" in done.evidence["reason"]
    assert group_members(running.pid) == [] and not _alive(running.pid)


async def test_an_unusable_agent_fails_at_once_saying_what_to_install(sqlite_url: str, make_rig: RigFactory) -> None:
    catalog = agent_catalog(custom_presets({"ghost": {"command": "no-such-agent-cli run {prompt}",
                                                     "install": "pip install ghost-agent"}}))
    rig = await make_rig(sqlite_url, catalog=catalog)
    done = await rig.finished((await rig.run("anything", runtime="ghost")).id, timeout=10)
    assert done.outcome == "failed" and "no-such-agent-cli is not installed: pip install ghost-agent" in (
        done.evidence["reason"])
    assert done.turns == 0 and done.workspace is None, "nothing was prepared for an agent that cannot run"


async def test_control_characters_an_agent_prints_are_not_stored_and_stop_no_output(
        db_url: str, make_rig: RigFactory, tmp_path: Path) -> None:
    """PostgreSQL stores no NUL: one agent printing one used to fail every later batch of every task's output."""
    noisy = tmp_path / "noisy-agent"
    noisy.write_text("#!/usr/bin/env python3\nimport sys\n"
                     "if '--version' in sys.argv: print('noisy 1.0'); sys.exit(0)\n"
                     "sys.stdout.write('start\\x00end\\nbell\\x07 csi\\x9b2J del\\x7f\\ntab\\tkept\\n')\n")
    noisy.chmod(0o755)
    catalog = agent_catalog(custom_presets({"noisy": {"command": f"{noisy} {{prompt}}",
                                                     "version": f"{noisy} --version"}}))
    rig = await make_rig(db_url, catalog=catalog)
    done = await rig.finished((await rig.run("make noise", runtime="noisy")).id)
    assert done.outcome == "succeeded", done.evidence
    _, rows = await rig.shepherd.tasks.logs(rig.who, done.id)
    assert [r.content for r in rows if r.type == "output"] == ["startend", "bell csi2J del", "tab\tkept"]
    after = await rig.finished((await rig.run("then a quiet one")).id)
    _, rows = await rig.shepherd.tasks.logs(rig.who, after.id)
    assert any("done: turn 1 finished" in r.content for r in rows), "output of later tasks is still stored"


# --- steering a run --------------------------------------------------------------------------------------


async def test_stop_ends_the_whole_process_group(sqlite_url: str, make_rig: RigFactory) -> None:
    rig = await make_rig(sqlite_url)
    task = await rig.run("serve forever [spawn] [long 60]")
    await rig.printed(task.id, "child tick")
    running = await rig.get(task.id)
    child = int((Path(running.workspace or "") / "child.pid").read_text())
    assert _alive(child) and running.pid is not None
    await rig.shepherd.tasks.stop(rig.who, task.id)
    done = await rig.finished(task.id)
    assert (done.status, done.outcome) == ("cancelled", "cancelled")
    assert not _alive(child) and group_members(running.pid) == []


async def test_pause_freezes_output_and_cpu_and_resume_continues(sqlite_url: str, make_rig: RigFactory) -> None:
    rig = await make_rig(sqlite_url, idle_timeout_s=2.0)
    task = await rig.run("count [long 60]")
    await rig.printed(task.id, "tick 3")
    await rig.shepherd.tasks.pause(rig.who, task.id)
    paused = await rig.until(task.id, lambda t: t.status == "paused")
    pid = paused.pid or 0
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert stat[0] == "T", "the agent's process is stopped"
    await asyncio.sleep(0.4)
    lines, cpu = len(await rig.output(task.id)), stat[11:13]
    await asyncio.sleep(2.5)  # longer than the idle timeout: silence while paused is not idleness
    assert len(await rig.output(task.id)) == lines, "no output while paused"
    assert Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13] == cpu, "no CPU while paused"
    with pytest.raises(Conflict, match="paused"):
        await rig.shepherd.tasks.send(rig.who, task.id, "hello?")
    await rig.shepherd.tasks.resume(rig.who, task.id)
    await rig.until(task.id, lambda t: t.status == "running")
    await rig.until(task.id, lambda t: t.log_count > lines + 3)
    await rig.shepherd.tasks.stop(rig.who, task.id)
    assert (await rig.finished(task.id)).outcome == "cancelled"


async def test_send_when_idle_runs_a_follow_up_turn_in_the_same_session(
    sqlite_url: str, make_rig: RigFactory
) -> None:
    rig = await make_rig(sqlite_url)
    task = await rig.run("set up the tests [ask]")
    first = await rig.finished(task.id)
    assert first.outcome == "succeeded" and "QUESTION: Which database" in first.evidence["lastLines"][-1]
    sent = await rig.shepherd.tasks.send(rig.who, task.id, "use postgres")
    assert sent.status == "pending" and sent.outcome is None
    second = await rig.until(task.id, lambda t: t.turns == 2 and t.outcome is not None)
    assert second.outcome == "succeeded"
    out = await rig.output(task.id)
    assert f"resuming session {first.session_ref} (turn 2)" in out
    assert "answer to 'Which database should the tests use?': use postgres" in out
    _, logs = await rig.shepherd.tasks.logs(rig.who, task.id)
    assert [r.content for r in logs if r.type == "input"] == ["set up the tests [ask]", "use postgres"]


async def test_send_while_busy_waits_for_the_turn_and_is_refused_before_the_first(
    sqlite_url: str, make_rig: RigFactory
) -> None:
    rig = await make_rig(sqlite_url, max_tasks=1)
    busy = await rig.run("work [long 3]")
    waiting = await rig.run("later")
    with pytest.raises(Conflict, match="has not started"):
        await rig.shepherd.tasks.send(rig.who, waiting.id, "too early")
    await rig.until(busy.id, lambda t: t.status == "running")
    queued = await rig.shepherd.tasks.send(rig.who, busy.id, "and then this")
    assert queued.status == "running" and queued.pending_inputs == ["and then this"]
    done = await rig.until(busy.id, lambda t: t.turns == 2 and t.outcome is not None)
    assert done.outcome == "succeeded" and done.pending_inputs == []
    assert (await rig.finished(waiting.id)).outcome == "succeeded"


async def test_delete_removes_task_logs_agent_and_workspace(sqlite_url: str, make_rig: RigFactory) -> None:
    rig = await make_rig(sqlite_url)
    done = await rig.finished((await rig.run("quick")).id)
    workspace = Path(done.workspace or "")
    assert workspace.is_dir()
    await rig.shepherd.tasks.delete(rig.who, done.id)
    assert not workspace.exists()
    async with rig.shepherd.db.read() as session:
        assert await session.get(Task, done.id) is None and await session.get(Agent, done.agent_id) is None
    running = await rig.run("busy [long 60]")
    await rig.until(running.id, lambda t: t.status == "running")
    pid = (await rig.get(running.id)).pid or 0
    await rig.shepherd.tasks.delete(rig.who, running.id)
    for _ in range(200):
        async with rig.shepherd.db.read() as session:
            if await session.get(Task, running.id) is None:
                break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("a running task was not deleted")
    assert group_members(pid) == []


# --- the environment an agent gets --------------------------------------------------------------------------


async def test_the_agent_environment_holds_none_of_the_servers_secrets(
    sqlite_url: str, make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "agent-credential")
    rig = await make_rig(sqlite_url, pass_env=("ANTHROPIC_API_KEY",))
    done = await rig.finished((await rig.run("show me [env]")).id)
    env = json.loads((Path(done.workspace or "") / "env.json").read_text())
    dumped = json.dumps(env)
    for key, value in SECRETS.items():
        assert key not in env and value not in dumped
    assert env["SHEPHERD_TASK_ID"] == done.id and env["ANTHROPIC_API_KEY"] == "agent-credential"
    assert set(env) <= {"PATH", "HOME", "LANG", "TERM", "TZ", "TMPDIR", "ANTHROPIC_API_KEY", "SHEPHERD_TASK_ID",
                        "SHEPHERD_TASK_NAME", "SHEPHERD_WORKSPACE", "LC_CTYPE"}


async def test_a_sessions_env_reaches_its_tasks_agents(sqlite_url: str, make_rig: RigFactory) -> None:
    rig = await make_rig(sqlite_url)
    sess = await rig.shepherd.sessions.create(rig.who, label="tz work", env={"TZ": "Pacific/Auckland"})
    done = await rig.finished((await rig.run("show me [env]", session_id=sess.id)).id)
    env = json.loads((Path(done.workspace or "") / "env.json").read_text())
    assert env["TZ"] == "Pacific/Auckland" and env["SHEPHERD_TASK_ID"] == done.id
    alone = await rig.finished((await rig.run("show me [env]")).id)
    assert json.loads((Path(alone.workspace or "") / "env.json").read_text()).get("TZ") != "Pacific/Auckland"


# --- capacity, suspension, recovery ----------------------------------------------------------------------


async def test_beyond_the_cap_tasks_queue_and_say_why(sqlite_url: str, make_rig: RigFactory) -> None:
    rig = await make_rig(sqlite_url, max_tasks=1)
    first = await rig.run("first [long 30]")
    await rig.until(first.id, lambda t: t.status == "running")
    second = await rig.run("second")
    queued = await rig.until(second.id, lambda t: t.status == "queued")
    assert "the cap is 1 (SHEPHERD_MAX_TASKS)" in queued.state_message
    assert any(e.name == "task.queued" and e.task_id == second.id for e in await rig.shepherd.events.list(rig.who))
    await rig.shepherd.tasks.stop(rig.who, first.id)
    assert (await rig.finished(second.id)).outcome == "succeeded", "the freed place goes to the queued task"


async def test_a_task_of_a_suspended_agent_starts_only_after_resume(sqlite_url: str, make_rig: RigFactory) -> None:
    rig = await make_rig(sqlite_url)
    project = await rig.shepherd.projects.create(rig.who, name="api", repo=None, default_branch="main")
    agent = (await rig.shepherd.agents.create(rig.who, name="api-agent", type="project", project_id=project.id,
                                              autonomy_level=3)).agent
    await rig.shepherd.agents.act(rig.who, agent.id, "suspend")
    task = await rig.run("fix it", project="api")
    assert task.autonomy_level == 3, "a task takes its autonomy from the project agent"
    queued = await rig.until(task.id, lambda t: t.status == "queued")
    assert f"agent {agent.id} is suspended" in queued.state_message
    await asyncio.sleep(0.5)
    assert (await rig.get(task.id)).status == "queued" and (await rig.get(task.id)).turns == 0
    await rig.shepherd.agents.act(rig.who, agent.id, "resume")
    assert (await rig.finished(task.id)).outcome == "succeeded"


async def test_a_task_agent_works_while_its_turn_runs_and_a_suspension_given_meanwhile_stands(
    db_url: str, make_rig: RigFactory
) -> None:
    """The task's agent is active while a turn runs (one more message processed per turn), idle after it with one
    more task completed; suspended during the turn, it stays suspended when the turn ends."""
    rig = await make_rig(db_url)

    async def agent_of(task_id: str) -> Agent:
        async with rig.shepherd.db.read() as session:
            found = await session.get(Agent, (await rig.get(task_id)).agent_id)
        assert found is not None
        return found

    first = await rig.run("say hello")
    await rig.finished(first.id)
    done = await agent_of(first.id)
    assert (done.status, done.messages_processed, done.tasks_completed) == ("IDLE", 1, 1)

    task = await rig.run("a long job [long 30]")
    await rig.until(task.id, lambda t: t.status == "running")
    working = await agent_of(task.id)
    assert (working.status, working.messages_processed, working.tasks_completed) == ("ACTIVE", 1, 0)
    await rig.shepherd.agents.act(rig.who, working.id, "suspend")
    await rig.shepherd.tasks.stop(rig.who, task.id)
    assert (await rig.finished(task.id)).outcome == "cancelled"
    after = await agent_of(task.id)
    assert (after.status, after.messages_processed, after.tasks_completed) == ("SUSPENDED", 1, 0)
    assert after.last_activity is not None and after.last_activity >= working.last_activity


async def test_an_agent_changed_in_the_same_transaction_keeps_its_change_beside_the_turns_counters(
    db_url: str, make_rig: RigFactory
) -> None:
    """The turn's Core UPDATE of its agent does not drop a change the same transaction made to the agent's object."""
    from core.tasks.rows import agent_started

    rig = await make_rig(db_url)
    task = await rig.run("say hello")
    await rig.finished(task.id)
    agent_id = (await rig.get(task.id)).agent_id
    async with rig.shepherd.db.write() as session:
        agent = await session.get(Agent, agent_id)
        assert agent is not None
        agent.task = "changed before the UPDATE"
        session.add(agent)
        await agent_started(session, await rig.get(task.id))
    async with rig.shepherd.db.read() as session:
        after = await session.get(Agent, agent_id)
    assert after is not None
    assert (after.task, after.messages_processed, after.status) == ("changed before the UPDATE", 2, "ACTIVE")


async def test_a_queued_task_says_so_when_what_it_waits_for_changes(sqlite_url: str, make_rig: RigFactory) -> None:
    """Held first by its suspended agent, then (resumed) by the full runner: the note follows, and the runner
    goes on claiming (a queued task re-noted used to fail every pass of the supervisor's loop)."""
    rig = await make_rig(sqlite_url, max_tasks=1)
    project = await rig.shepherd.projects.create(rig.who, name="api", repo=None, default_branch="main")
    agent = (await rig.shepherd.agents.create(rig.who, name="api-agent", type="project", project_id=project.id,
                                              autonomy_level=1)).agent
    await rig.shepherd.agents.act(rig.who, agent.id, "suspend")
    busy = await rig.run("keep the runner busy [long 30]")
    await rig.until(busy.id, lambda t: t.status == "running")
    held = await rig.run("fix it", project="api")
    await rig.until(held.id, lambda t: f"agent {agent.id} is suspended" in t.state_message)
    await rig.shepherd.agents.act(rig.who, agent.id, "resume")
    queued = await rig.until(held.id, lambda t: "the cap is 1 (SHEPHERD_MAX_TASKS)" in t.state_message)
    assert queued.status == "queued"
    await rig.shepherd.tasks.stop(rig.who, busy.id)
    assert (await rig.finished(held.id)).outcome == "succeeded"


async def test_a_turn_ended_elsewhere_meanwhile_keeps_that_ending(sqlite_url: str, make_rig: RigFactory) -> None:
    """A runner that stalled long enough to be thought dead: another one ends its task `interrupted` and kills
    the agent's processes. When the stalled runner sees its turn end, that ending stands; its own account of
    the turn is only recorded."""
    stalled = await make_rig(sqlite_url, heartbeat_s=3600)
    task = await stalled.run("a long job [long 30]")
    await stalled.until(task.id, lambda t: t.status == "running")
    async with stalled.shepherd.db.write() as session:  # its heartbeat stopped a minute ago
        node = await session.get(RunnerNode, stalled.sup.node_id)
        assert node is not None
        node.heartbeat_at = node.heartbeat_at.replace(year=node.heartbeat_at.year - 1)
        session.add(node)
    other = await make_rig(sqlite_url)
    done = await other.until(task.id, lambda t: t.outcome is not None)
    assert (done.status, done.outcome) == ("failed", "interrupted") and "crash or restart" in done.evidence["reason"]

    async def discarded() -> list[Any]:
        return [e for e in await other.shepherd.events.list(other.who) if e.name == "task.turn_discarded"]

    deadline = asyncio.get_running_loop().time() + 20
    while not await discarded():
        assert asyncio.get_running_loop().time() < deadline, "the stalled runner never ended its turn"
        await asyncio.sleep(0.05)
    assert (await discarded())[0].payload["outcome"] == "failed"  # the agent was killed under it
    after = await other.get(task.id)
    assert (after.status, after.outcome, after.evidence["reason"]) == ("failed", "interrupted", done.evidence["reason"])


async def test_tasks_held_by_a_dead_runner_become_interrupted(sqlite_url: str, make_rig: RigFactory) -> None:
    db = Database(sqlite_url)
    shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo")
    await shepherd.orgs.ensure("acme")
    who = person(Role.ADMIN)
    task = (await shepherd.tasks.create(who, prompt="long job")).task
    async with db.write() as session:
        session.add(RunnerNode(id="old-runner", host=socket.gethostname(), pid=_exited_pid()))
        row = await session.get(Task, task.id)
        assert row is not None
        row.status, row.runner_id, row.turns = "running", "old-runner", 1
        session.add(row)
    await db.dispose()
    rig = await make_rig(sqlite_url)
    done = await rig.finished(task.id, timeout=5)
    assert (done.status, done.outcome) == ("failed", "interrupted")
    events = [e for e in await rig.shepherd.events.list(rig.who) if e.task_id == task.id]
    assert any(e.name == "task.interrupted" and "crash or restart" in e.payload["reason"] for e in events)


async def test_a_runner_never_interrupts_a_task_another_live_runner_claimed_since_it_looked(
    sqlite_url: str, make_rig: RigFactory,
) -> None:
    """Recovery reads the runners, then the tasks: a runner that announced itself and claimed a task in between
    looked dead to it. Decided again under the task's lock, that task is left to its live runner."""
    rig = await make_rig(sqlite_url)
    task = (await rig.shepherd.tasks.create(rig.who, prompt="fresh claim")).task
    async with rig.shepherd.db.write() as session:
        session.add(RunnerNode(id="newcomer", host=socket.gethostname(), pid=os.getpid()))
        row = await session.get(Task, task.id)
        assert row is not None
        row.status, row.runner_id, row.turns = "running", "newcomer", 1
        session.add(row)
    # what reconcile decided from its earlier read, where "newcomer" was not yet among the live runners
    await rig.sup.nodes.interrupt(lambda t: t.runner_id == "newcomer", (), "its runner looked gone",
                                  alive=lambda runner_id: True)
    assert (await rig.get(task.id)).status == "running", "a live runner's fresh claim was interrupted"
    await rig.sup.nodes.interrupt(lambda t: t.runner_id == "newcomer", (), "its runner is gone",
                                  alive=lambda runner_id: runner_id != "newcomer")
    assert (await rig.get(task.id)).outcome == "interrupted", "a dead runner's task is still recovered"


class _OvertakenRunner(LocalRunner):
    """Starts the agent, but meanwhile another runner took the task (this one was thought dead)."""

    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db

    async def start(self, spec: Any) -> Any:
        handle = await super().start(spec)
        task_id = spec.env["SHEPHERD_TASK_ID"]
        async with self.db.write() as session:
            row = await session.get(Task, task_id)
            assert row is not None
            row.runner_id = "the-other-runner"
            session.add(row)
        self.handle = handle
        return handle


async def test_a_runner_whose_task_was_taken_while_it_prepared_does_not_start_it(
    sqlite_url: str, tmp_path: Path,
) -> None:
    db = Database(sqlite_url)
    shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo")
    await shepherd.orgs.ensure("acme")
    who = person(Role.ADMIN)
    runner = _OvertakenRunner(db)
    sup = TaskSupervisor(shepherd, fast_config(tmp_path), runner=runner,
                         executor=Executor(ActionsConfig()))
    await sup.start()
    try:
        task = (await shepherd.tasks.create(who, prompt="taken [long 30]")).task
        deadline = asyncio.get_running_loop().time() + 20
        while not [e for e in await shepherd.events.list(who) if e.name == "task.turn_discarded"]:
            assert asyncio.get_running_loop().time() < deadline, "the overtaken runner went on with the turn"
            await asyncio.sleep(0.05)
        row = (await shepherd.tasks.get(who, task.id))
        assert (row.status, row.runner_id, row.turns) == ("initializing", "the-other-runner", 0)
        assert (await runner.handle.wait()) is not None, "its agent was left running"
    finally:
        await sup.stop()
        await db.dispose()


def _exited_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


async def test_two_runners_on_one_store_run_each_task_once(db_url: str, make_rig: RigFactory) -> None:
    a = await make_rig(db_url, max_tasks=3)
    b = await make_rig(db_url, max_tasks=3)
    tasks = [await a.run(f"job {i}") for i in range(6)]
    for task in tasks:
        assert (await a.finished(task.id)).outcome == "succeeded"
    starts = [e for e in await a.shepherd.events.list(a.who, limit=200) if e.name == "task.turn_started"]
    assert sorted(e.task_id or "" for e in starts) == sorted(t.id for t in tasks)
    assert b.sup.node_id != a.sup.node_id


async def test_other_orgs_do_not_see_or_steer_a_task(sqlite_url: str, make_rig: RigFactory) -> None:
    rig = await make_rig(sqlite_url)
    task = await rig.run("private [noedit]")
    other = person(Role.ADMIN, org="globex")
    from core.errors import NotFound

    for call in (rig.shepherd.tasks.get, rig.shepherd.tasks.stop, rig.shepherd.tasks.delete):
        with pytest.raises(NotFound):
            await call(other, task.id)
    assert (await rig.shepherd.tasks.list(other))[1] == 0
    viewer = person(Role.VIEWER)
    from core.errors import Forbidden

    with pytest.raises(Forbidden):
        await rig.shepherd.tasks.create(viewer, prompt="x", runtime="demo")
    operator = person(Role.OPERATOR)
    for local in ("/etc", "file:///etc", "../elsewhere"):
        with pytest.raises(Forbidden, match="admin"):
            await rig.shepherd.tasks.create(operator, prompt="x", runtime="demo", repo=local)
    from core.errors import ValidationFailed

    for bad in ("ext::sh -c id", "--upload-pack=touch /tmp/x", "a b/c"):
        with pytest.raises(ValidationFailed, match="cannot read repo"):
            await rig.shepherd.tasks.create(operator, prompt="x", runtime="demo", repo=bad)
    await rig.finished(task.id)


async def test_tasks_starting_together_ask_the_agent_for_its_version_once(tmp_path: Path) -> None:
    asked = tmp_path / "asked"
    counted = Preset("counted", "Counted", start=("true",), resume=None, install="nothing to install",
                     version=("sh", "-c", f"echo asked >> {asked}; sleep 0.2; echo counted 1.0"))
    catalog = AgentCatalog([counted])
    answers = await asyncio.gather(*(catalog.check("counted") for _ in range(20)))
    assert {(a.usable, a.detail) for a in answers} == {(True, "counted 1.0")}
    assert asked.read_text().splitlines() == ["asked"]  # one process, not one per task


async def test_turns_starting_together_record_it_in_one_commit_and_a_failing_one_undoes_only_itself(
    db_url: str,
) -> None:
    db = Database(db_url)
    try:
        commits = [0]
        event.listen(db.engine.sync_engine, "commit", lambda _conn: commits.__setitem__(0, commits[0] + 1))
        writes = GroupWrites(db)

        def made(name: str, *, then_fail: bool = False) -> Callable[[AsyncSession], Awaitable[str]]:
            async def work(session: AsyncSession) -> str:
                session.add(Org(id=name, name=name))
                await session.flush()
                if then_fail:
                    raise RuntimeError(f"{name} broke after writing")
                return name
            return work

        results = await asyncio.gather(writes.run(made("one")), writes.run(made("two", then_fail=True)),
                                       writes.run(made("three")), return_exceptions=True)
        assert results[0] == "one" and results[2] == "three" and isinstance(results[1], RuntimeError)
        assert commits == [1]
        async with db.read() as session:
            assert sorted(await session.exec(select(Org.id))) == ["one", "three"]
    finally:
        await db.dispose()


async def test_items_written_in_bulk_share_a_commit_and_a_failing_one_fails_only_itself(db_url: str) -> None:
    """A bulk write that fails is not lost for the others: each item is written again alone, and only the bad one
    raises (what a hundred first turns recorded with set-based statements rely on)."""
    db = Database(db_url)
    try:
        commits = [0]
        event.listen(db.engine.sync_engine, "commit", lambda _conn: commits.__setitem__(0, commits[0] + 1))

        async def write(session: AsyncSession, names: Sequence[str]) -> list[str]:
            for name in names:
                session.add(Org(id=name, name=name))
            await session.flush()  # (a duplicate id fails the whole statement)
            return [f"made {name}" for name in names]

        writes = BulkWrites(db, write)
        first = await asyncio.gather(writes.run("one"), writes.run("two"))
        assert first == ["made one", "made two"] and commits == [1]
        again = await asyncio.gather(writes.run("three"), writes.run("one"), writes.run("four"),
                                     return_exceptions=True)
        assert again[0] == "made three" and again[2] == "made four" and isinstance(again[1], Conflict)
        async with db.read() as session:
            assert sorted(await session.exec(select(Org.id))) == ["four", "one", "three", "two"]
    finally:
        await db.dispose()


async def test_first_turns_starting_together_are_each_recorded_once_with_their_input_first(
    db_url: str, make_rig: RigFactory
) -> None:
    """Many tasks starting at once (their first turns written together, set-based): each one running once, turn 1,
    its prompt the first line of its log, one turn_started event, its agent active with one message processed."""
    rig = await make_rig(db_url, max_tasks=12)
    tasks = await asyncio.gather(*(rig.run(f"job {n} [lines 3]") for n in range(12)))
    for task in tasks:
        done = await rig.finished(task.id)
        assert (done.outcome, done.turns, done.runner_kind) == ("succeeded", 1, "local")
        assert done.started_at is not None and done.workspace and done.base_sha
        _, logs = await rig.shepherd.tasks.logs(rig.who, task.id)
        assert (logs[0].type, logs[0].content) == ("input", task.prompt)
        assert [row.type for row in logs[1:]].count("input") == 0 and done.log_count == len(logs)
        async with rig.shepherd.db.read() as session:
            agent = await session.get(Agent, done.agent_id)
        assert agent is not None and (agent.messages_processed, agent.tasks_completed) == (1, 1)
    started = [e for e in await rig.shepherd.events.list(rig.who, limit=500) if e.name == "task.turn_started"]
    assert sorted(e.task_id or "" for e in started) == sorted(t.id for t in tasks)
    assert {(e.payload["turn"], e.payload["followUp"]) for e in started} == {(1, False)}
    assert all(isinstance(e.payload["pid"], int) for e in started)


def test_an_entry_of_shepherd_agents_named_like_a_built_in_preset_replaces_its_command() -> None:
    presets = custom_presets({"codex": {"command": "python3 bot/demo_agent.py {prompt}"}})
    catalog = AgentCatalog(presets)
    assert catalog.get("codex").start == ("python3", "bot/demo_agent.py", "{prompt}")
    assert catalog.names().count("codex") == 1
    with pytest.raises(ValidationFailed):
        custom_presets({"Codex!": {"command": "x {prompt}"}})


async def test_first_turns_written_together_start_only_what_this_runner_holds_and_each_once(db_url: str) -> None:
    """The bulk write of first turns, given a batch as a runner can make one: two tasks it holds (one of them listed
    twice), one claimed by another runner meanwhile and one cancelled. Only the two start, once each, with every
    column a turn's start records."""
    from core.tasks.starts import FirstTurn, first_turns

    db = Database(db_url)
    try:
        shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo")
        await shepherd.orgs.ensure("acme")
        who = person(Role.ADMIN)
        tasks = [(await shepherd.tasks.create(who, prompt=f"job {n}", runtime="demo")).task for n in range(4)]
        holders = {tasks[0].id: "runner-1", tasks[1].id: "runner-1", tasks[2].id: "runner-2", tasks[3].id: "runner-1"}
        async with db.write() as session:
            for task_id, runner in holders.items():
                await session.exec(update(Task).where(col(Task.id) == task_id).values(
                    status="cancelled" if task_id == tasks[3].id else "initializing", runner_id=runner))
        for task in tasks:  # as the runner prepared them
            task.workspace, task.base_branch, task.base_sha = f"/ws/{task.id}", "main", "a" * 40
        starts = [FirstTurn(task=task, pid=1000 + n, runner_kind="local", unit=f"unit-{n}",
                            session_ref=f"session-{n}", text=task.prompt) for n, task in enumerate(tasks)]
        async with db.write() as session:
            answers = await first_turns("runner-1")(session, [starts[0], starts[1], starts[0], starts[2], starts[3]])
        assert answers == [1, 1, None, None, None]
        for n in (0, 1):
            row = await shepherd.tasks.get(who, tasks[n].id)
            assert (row.status, row.state, row.state_message, row.turns, row.log_count) == (
                "running", "working", "turn 1: running", 1, 1)
            assert (row.pid, row.runner_kind, row.runner_unit, row.session_ref) == (
                1000 + n, "local", f"unit-{n}", f"session-{n}")
            assert (row.workspace, row.base_branch, row.base_sha) == (f"/ws/{row.id}", "main", "a" * 40)
            assert row.started_at is not None and row.state_at is not None
            _, logs = await shepherd.tasks.logs(who, row.id)
            assert [(r.type, r.content) for r in logs] == [("input", f"job {n}")]
        for n, status in ((2, "initializing"), (3, "cancelled")):
            untouched = await shepherd.tasks.get(who, tasks[n].id)
            assert (untouched.status, untouched.turns, untouched.pid) == (status, 0, None)
        started = [e for e in await shepherd.events.list(who, limit=100) if e.name == "task.turn_started"]
        assert sorted(e.task_id or "" for e in started) == sorted([tasks[0].id, tasks[1].id])
    finally:
        await db.dispose()


async def test_claims_taken_together_go_each_to_one_runner_with_the_token_whose_hash_is_stored(
    shepherd: Shepherd,
) -> None:
    """Two runners take the same waiting tasks at once (one executemany each, read back by the hash each
    wrote): every waiting task goes to exactly one of them, each token given out is the one whose hash its task holds,
    and a task that is not waiting (cancelled) or pinned to another runner is taken by neither."""
    import hashlib

    from core.tasks.claims import Claims

    db, who = shepherd.db, person(Role.ADMIN)
    tasks = [(await shepherd.tasks.create(who, prompt=f"job {n}", runtime="demo")).task for n in range(8)]
    cancelled, pinned = tasks[6], tasks[7]
    async with db.write() as session:
        await session.exec(update(Task).where(col(Task.id) == cancelled.id).values(status="cancelled"))
        await session.exec(update(Task).where(col(Task.id) == pinned.id).values(pinned_runner="runner-3"))
    ids = [t.id for t in tasks]
    one, two = Claims(db, "runner-1"), Claims(db, "runner-2")
    # both oldest first, as the supervisor takes them (two transactions locking the same rows in opposite orders
    # could deadlock on PostgreSQL, as two runners' claims never do)
    got_one, got_two = await asyncio.gather(one.take(ids), two.take(ids))
    assert not set(got_one) & set(got_two)
    assert set(got_one) | set(got_two) == set(ids[:6])
    assert await one.take(ids) == {}  # nothing is waiting any more
    for runner, got in (("runner-1", got_one), ("runner-2", got_two)):
        for task_id, claimed in got.items():
            row = await shepherd.tasks.get(who, task_id)
            assert (row.status, row.runner_id) == ("initializing", runner)
            assert row.callback_hash == hashlib.sha256(claimed.token.encode()).hexdigest()
            # the task handed to its turn is the row as claimed (its prompt, and the claim's own changes)
            assert (claimed.task.id, claimed.task.prompt, claimed.task.status, claimed.task.runner_id) == \
                (task_id, row.prompt, "initializing", runner)
    for task_id, status in ((cancelled.id, "cancelled"), (pinned.id, "pending")):
        row = await shepherd.tasks.get(who, task_id)
        assert (row.status, row.runner_id) == (status, None)
