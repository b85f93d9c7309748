"""Graduated autonomy end to end: the demo agent works in a real clone, Shepherd gates what leaves the
workspace, pushes to a real local bare repository and opens pull requests on a loopback fake of the
GitHub API through the real gidgethub client. Prompts and decisions reach a thread through the outbox."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.deploy.hook import HttpDeployHook
from adapters.github.auth import GitHubAuth
from adapters.github.forge import GitHubForge
from adapters.rest.coder import CoderTask, coder_task
from adapters.rest.eliza import coding_task
from bot.app import create_callback_app
from bot.callbacks import write_launcher
from bot.outbox import Dispatcher
from bot.presets import agent_catalog
from core.autonomy.actions import ActionsConfig, Executor
from core.autonomy.plans import Status
from core.autonomy.policy import PolicyStore
from core.channels.outbox import DeliveryError, Message
from core.errors import Conflict
from core.people.access import Principal, Role
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Confirmation, Task
from core.tasks.supervisor import TaskSupervisor
from tests.fakes.github_api import FakeGitHub
from tests.gitrepos import git, github_host
from tests.test_tasks import fast_config, supervisor

GH_TOKEN = "ghs_test_token_for_the_fake"
ALICE = Principal.for_role("acme", "alice", Role.ADMIN, "console", user_id="user-alice")
BOB = Principal.for_role("acme", "bob", Role.APPROVER, "slack", user_id="user-bob")


@dataclass
class Recorder:
    """A Channel that remembers what it was asked to show (and can fail on demand)."""

    name: str = "console"
    posts: list[tuple[str, Message]] = field(default_factory=list)
    updates: list[tuple[str, str, Message]] = field(default_factory=list)
    fail_next: list[DeliveryError] = field(default_factory=list)
    progress: bool = False
    pace_s: float = 0.0

    def pace_key(self, address: str) -> str:
        return address

    def accepts(self, address: str) -> bool:
        return address == "alice"

    async def post(self, address: str, message: Message) -> str:
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.posts.append((address, message))
        return f"ref-{len(self.posts)}"

    async def update(self, address: str, ref: str, message: Message) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.updates.append((address, ref, message))

    def texts(self) -> list[str]:
        return [m.text for _, m in self.posts] + [m.text for _, _, m in self.updates]


@dataclass
class World:
    shepherd: Shepherd
    sup: TaskSupervisor
    channel: Recorder
    github: FakeGitHub
    remote: Path  # the bare repository behind acme/api

    async def run(self, prompt: str, level: int, **kw: Any) -> Task:
        view = await self.shepherd.tasks.create(ALICE, prompt=prompt, runtime="demo", repo="acme/api", level=level,
                                                thread=("console", "alice"), **kw)
        return view.task

    async def until(self, task_id: str, test: Any, timeout: float = 30) -> Task:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            task = await self.shepherd.tasks.get(ALICE, task_id)
            if test(task):
                return task
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"gave up: {task.status} {task.outcome} {task.state_message}")
            await asyncio.sleep(0.05)

    async def pending_for(self, task_id: str, timeout: float = 30) -> Confirmation:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            rows = await self.shepherd.confirmations.pending(ALICE, task_id=task_id)
            if rows:
                return rows[0]
            if asyncio.get_running_loop().time() > deadline:
                task, rows = await self.shepherd.tasks.logs(ALICE, task_id)
                raise AssertionError(f"no confirmation asked: {task.status} {task.state_message} "
                                     f"{[r.content for r in rows]}")
            await asyncio.sleep(0.05)

    def branch_head(self, branch: str) -> str | None:
        out = subprocess.run(["git", "rev-parse", "--verify", "-q", f"refs/heads/{branch}"], cwd=self.remote,
                             capture_output=True, text=True)
        return out.stdout.strip() or None

    def pull_posts(self) -> list[dict[str, Any]]:
        return [r.body for r in self.github.requests if r.method == "POST" and r.path.endswith("/pulls")]


@pytest.fixture
async def world(tmp_path: Path, sqlite_url: str) -> AsyncIterator[World]:
    hosts = github_host(tmp_path)

    db = Database(sqlite_url)
    shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo",
                        workspace_root=tmp_path / "data" / "workspaces",
                        policies=PolicyStore(tmp_path / "policies"))
    await shepherd.orgs.ensure("acme")
    github = FakeGitHub(token=GH_TOKEN, git_root=hosts)
    base_url = await github.start()
    callback = web.AppRunner(create_callback_app(shepherd), access_log=None)
    await callback.setup()
    site = web.TCPSite(callback, "127.0.0.1", 0)
    await site.start()
    http = aiohttp.ClientSession()
    config = replace(fast_config(tmp_path / "data"), git_base_url=str(hosts), idle_timeout_s=3,
                     callback_url=f"http://127.0.0.1:{callback.addresses[0][1]}",
                     tool_dir=write_launcher(tmp_path / "bin"))
    executor = Executor(ActionsConfig(git_base_url=str(hosts)),
                        GitHubForge(GitHubAuth(http, token=GH_TOKEN, base_url=base_url)), HttpDeployHook(http))
    sup = supervisor(shepherd, config, executor)
    channel = Recorder()
    dispatcher = Dispatcher(shepherd, [channel], poll_s=0.05)
    await sup.start()
    await dispatcher.start()
    try:
        yield World(shepherd, sup, channel, github, hosts / "acme" / "api.git")
    finally:
        await dispatcher.stop()
        await sup.stop()
        await http.close()
        await callback.cleanup()
        await github.stop()
        await db.dispose()


async def test_level_1_asks_before_the_pull_request_and_approval_pushes_and_opens_it(world: World) -> None:
    task = await world.run("add a greeting to the README", level=1)
    conf = await world.pending_for(task.id)
    assert (conf.action, conf.risk, conf.quorum) == ("pr.open", "medium", 1)
    assert conf.target["branch"] == f"shepherd/{task.name}" and conf.target["base"] == "main"
    waiting = await world.shepherd.tasks.get(ALICE, task.id)
    assert waiting.status == "awaiting" and conf.code in waiting.state_message
    assert world.branch_head(f"shepherd/{task.name}") is None  # nothing left the workspace yet
    assert world.pull_posts() == []
    await world.until(task.id, lambda t: any(conf.code in x for x in world.channel.texts()), timeout=5)
    prompt = world.channel.posts[0][1]
    assert prompt.state == "pending" and "open a pull request on acme/api" in prompt.text

    await world.shepherd.confirmations.vote(BOB, conf.code, approve=True)
    done = await world.until(task.id, lambda t: t.outcome is not None)
    assert (done.status, done.outcome) == ("completed", "succeeded"), done.evidence
    assert world.branch_head(f"shepherd/{task.name}") == conf.target["head"]
    assert git("show", "--stat", "--format=%s", conf.target["head"], cwd=world.remote).startswith(
        "add a greeting to the README")
    [pr] = world.pull_posts()
    assert (pr["head"], pr["base"], pr["title"]) == (f"shepherd/{task.name}", "main", "add a greeting to the README")
    action = done.evidence["actions"][0]
    assert action["action"] == "pr.open" and action["number"] == 1 and action["url"].endswith("/pull/1")
    assert (done.decision_count, done.auto_resolved_count) == (1, 0)
    await world.until(task.id, lambda t: any("pull request #1" in m.text for _, _, m in world.channel.updates))
    final = world.channel.updates[-1]
    assert final[1] == "ref-1" and "approved by bob from slack" in final[2].text  # the prompt, edited in place


async def test_level_3_opens_the_pull_request_without_asking_and_counts_it_auto_resolved(world: World) -> None:
    task = await world.run("add a greeting", level=3)
    done = await world.until(task.id, lambda t: t.outcome is not None)
    assert done.outcome == "succeeded", done.evidence
    assert (done.decision_count, done.auto_resolved_count) == (1, 1)
    assert len(world.pull_posts()) == 1
    assert world.branch_head(f"shepherd/{task.name}") is not None
    assert await world.shepherd.confirmations.pending(ALICE) == []
    assert world.channel.posts == []  # nobody was asked


async def test_level_0_refuses_the_pull_request_and_keeps_the_work_in_the_workspace(world: World) -> None:
    task = await world.run("add a greeting", level=0)
    done = await world.until(task.id, lambda t: t.outcome is not None)
    assert done.outcome == "succeeded"
    assert "pr.open refused" in done.evidence["reason"] and "only observes" in done.evidence["reason"]
    assert world.branch_head(f"shepherd/{task.name}") is None and world.pull_posts() == []


async def test_a_suspended_agent_runs_no_action_until_it_is_resumed(world: World) -> None:
    task = await world.run("add a greeting", level=1)
    conf = await world.pending_for(task.id)
    assert task.agent_id
    await world.shepherd.agents.act(ALICE, task.agent_id, "suspend")
    await world.shepherd.confirmations.vote(BOB, conf.code, approve=True)
    held = await world.until(task.id, lambda t: "suspended" in t.state_message)
    assert held.status == "awaiting"
    await asyncio.sleep(1.0)
    assert world.pull_posts() == [] and world.branch_head(f"shepherd/{task.name}") is None
    await world.shepherd.agents.act(ALICE, task.agent_id, "resume")
    done = await world.until(task.id, lambda t: t.outcome is not None)
    assert done.outcome == "succeeded" and len(world.pull_posts()) == 1


async def test_a_changed_workspace_voids_the_approval_and_asks_again(world: World) -> None:
    task = await world.run("add a greeting", level=1)
    first = await world.pending_for(task.id)
    workspace = Path((await world.shepherd.tasks.get(ALICE, task.id)).workspace or "")
    (workspace / "sneaky.txt").write_text("changed after the prompt\n")
    await world.shepherd.confirmations.vote(BOB, first.code, approve=True)
    second = await world.pending_for(task.id)
    assert second.code != first.code and second.target["head"] != first.target["head"]
    voided = await world.shepherd.confirmations.get(ALICE, first.code)
    assert voided.status == Status.VOID and "moved" in (voided.reason or "")
    assert world.pull_posts() == [] and world.branch_head(f"shepherd/{task.name}") is None
    await world.shepherd.confirmations.vote(BOB, second.code, approve=True)
    done = await world.until(task.id, lambda t: t.outcome is not None)
    assert done.outcome == "succeeded"
    assert world.branch_head(f"shepherd/{task.name}") == second.target["head"]
    assert done.decision_count == 2  # two approvals; voiding the first was not a third decision


async def test_a_github_outage_is_retried_and_the_pull_request_opened_once(world: World) -> None:
    world.github.fail_next(status=502)
    task = await world.run("add a greeting", level=3)
    done = await world.until(task.id, lambda t: t.outcome is not None, timeout=40)
    assert done.outcome == "succeeded", done.evidence
    assert done.evidence["actions"][0]["attempts"] == 2
    failed = [r for r in world.github.requests if r.path.endswith("/pulls")][0]
    assert failed.method == "GET"  # the outage hit the look-up for an open pull request
    assert len(world.pull_posts()) == 1 and len(world.github.pulls) == 1


async def test_shepherd_ask_blocks_the_agent_until_approved_and_outlasts_the_idle_timeout(world: World) -> None:
    task = await world.run("deploy it [confirm deploy.staging] [noedit]", level=1)
    conf = await world.pending_for(task.id)
    assert (conf.action, conf.risk, conf.origin) == ("deploy.staging", "high", "agent")
    await asyncio.sleep(4)  # longer than the 3 s idle timeout: a task waiting for people is not idle
    running = await world.shepherd.tasks.get(ALICE, task.id)
    assert running.status == "running", running.state_message
    await world.shepherd.confirmations.vote(BOB, conf.code, approve=True)
    done = await world.until(task.id, lambda t: t.outcome is not None)
    assert done.outcome == "succeeded"
    _, rows = await world.shepherd.tasks.logs(ALICE, task.id)
    assert "ask deploy.staging: approved" in [r.content for r in rows]
    assert (done.decision_count, done.auto_resolved_count) == (1, 0)


async def test_shepherd_ask_exits_1_on_reject_and_the_policy_answers_at_once_when_it_may(world: World) -> None:
    task = await world.run("[confirm db.migrate] [confirm pr.comment] [noedit]", level=2)
    conf = await world.pending_for(task.id)
    assert conf.action == "db.migrate"  # unknown to the policy: high risk, so L2 asks
    await world.shepherd.confirmations.vote(BOB, conf.code, approve=False, comment="not now")
    done = await world.until(task.id, lambda t: t.outcome is not None)
    lines = [r.content for r in (await world.shepherd.tasks.logs(ALICE, task.id))[1]]
    assert "ask db.migrate: rejected" in lines
    assert "ask pr.comment: approved" in lines  # low risk at L2: policy decided without people
    assert (done.decision_count, done.auto_resolved_count) == (2, 1)
    # it went on and exited 0, but what it asked people for was refused: not a success (README: `denied`)
    assert (done.status, done.outcome, done.evidence["exitCode"]) == ("failed", "denied", 0)
    assert done.evidence["reason"] == f"db.migrate ({conf.code}) was rejected by bob: not now"


async def test_a_question_whose_turn_ended_is_void_and_a_late_decision_decides_nothing(world: World) -> None:
    task = await world.run("deploy it [confirm deploy.staging] [noedit]", level=1)
    conf = await world.pending_for(task.id)
    await world.shepherd.tasks.stop(ALICE, task.id)
    done = await world.until(task.id, lambda t: t.outcome is not None)
    assert done.outcome == "cancelled"
    asked = await world.shepherd.confirmations.get(ALICE, conf.code)
    assert asked.status == "void" and "turn ended" in (asked.reason or "")
    assert not await world.shepherd.confirmations.pending(ALICE, task_id=task.id)
    with pytest.raises(Conflict):
        await world.shepherd.confirmations.vote(BOB, conf.code, approve=True)


async def test_an_agent_waiting_in_shepherd_ask_shows_as_waiting_on_people_in_every_dialect(world: World) -> None:
    task = await world.run("deploy it [confirm deploy.staging] [long 3] [noedit]", level=1)
    conf = await world.pending_for(task.id)
    question = f"waiting for approval {conf.code}: the demo agent wants to deploy.staging"
    waiting = await world.until(task.id, lambda t: t.state == "idle")
    assert (waiting.status, waiting.state_message) == ("running", question)
    coder = CoderTask.model_validate(coder_task(world.shepherd, waiting), strict=False)
    assert (coder.status, coder.current_state.state, coder.current_state.message) == ("active", "idle", question)
    assert coding_task(waiting).status == "blocked"
    await asyncio.sleep(0.5)  # output flushed meanwhile ("asking people before …") does not hide the question
    assert (await world.shepherd.tasks.get(ALICE, task.id)).state_message == question

    await world.shepherd.confirmations.vote(BOB, conf.code, approve=True)
    working = await world.until(task.id, lambda t: t.state == "working" and "tick" in t.state_message)
    assert working.status == "running" and coding_task(working).status == "active"
    assert coder_task(world.shepherd, working)["current_state"]["state"] == "working"
    done = await world.until(task.id, lambda t: t.outcome is not None)
    assert done.outcome == "succeeded"


async def test_a_turn_that_ends_on_a_question_waits_for_its_answer_before_anything_leaves(world: World) -> None:
    task = await world.run("pick a database [ask]", level=3)  # L3 opens pull requests by itself
    asked = await world.until(task.id, lambda t: t.outcome is not None)
    question = "QUESTION: Which database should the tests use?"
    assert (asked.status, asked.outcome, asked.state, asked.state_message) == (
        "completed", "succeeded", "idle", question)
    assert asked.evidence["reason"] == f"waiting for input: {question}"
    coder = CoderTask.model_validate(coder_task(world.shepherd, asked), strict=False)
    assert (coder.status, coder.current_state.state, coder.current_state.message) == ("active", "idle", question)
    assert coding_task(asked).status == "blocked"
    assert world.pull_posts() == [] and await world.shepherd.confirmations.pending(ALICE) == []

    await world.shepherd.tasks.send(ALICE, task.id, "PostgreSQL")
    done = await world.until(task.id, lambda t: t.turns == 2 and t.outcome is not None)
    assert (done.state, done.outcome) == ("complete", "succeeded") and coding_task(done).status == "completed"
    assert len(world.pull_posts()) == 1, "the answered turn's work is what the pull request carries"


async def test_a_failed_delivery_is_retried_and_nothing_is_lost(world: World) -> None:
    world.channel.fail_next.append(DeliveryError("rate limited", retry_after=0.3))
    task = await world.run("add a greeting", level=1)
    conf = await world.pending_for(task.id)
    await world.until(task.id, lambda t: len(world.channel.posts) == 1, timeout=10)
    assert conf.code in world.channel.posts[0][1].text


async def _wait_done(world: World, code: str, timeout: float = 20) -> Confirmation:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        conf = await world.shepherd.confirmations.get(ALICE, code)
        if conf.execution in ("done", "failed"):
            return conf
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{code} never carried out: {conf.status} {conf.execution} {conf.result}")
        await asyncio.sleep(0.05)


async def test_people_ask_for_comment_merge_and_deploys_each_gated_by_the_agents_level(
    world: World, tmp_path: Path
) -> None:
    hook_calls: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        hook_calls.append(await request.json())
        return web.json_response({"deployment": 7}, status=201)

    app = web.Application()
    app.router.add_post("/deploy", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    marker = tmp_path / "deployed-staging.txt"
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "api.toml").write_text(
        f'[deploy.staging]\ncommand = "echo $SHEPHERD_DEPLOY_SHA $SHEPHERD_DEPLOY_ENVIRONMENT > {marker}"\n'
        f'[deploy.production]\nurl = "http://127.0.0.1:{runner.addresses[0][1]}/deploy"\n')
    try:
        from core.commands.registry import build_registry

        registry = build_registry()
        await world.shepherd.projects.create(ALICE, name="api", repo="acme/api", default_branch="main")
        task = await world.run("add a greeting", level=3, project="api")
        done = await world.until(task.id, lambda t: t.outcome is not None)
        assert done.outcome == "succeeded", done.evidence
        head = done.evidence["actions"][0]["head"]

        reply = await registry.run(world.shepherd, ALICE, f"comment {task.name} nice work")
        assert reply.ok and "approved by policy" in reply.text, reply.text  # low risk: L3 runs it
        assert (await _wait_done(world, reply.data["code"])).execution == "done"
        assert world.github.comments[-1]["body"] == "nice work"

        operator = Principal.for_role("acme", "olga", Role.OPERATOR, "console", user_id="user-olga")
        waits = await registry.run(world.shepherd, operator, f"merge {task.name}")
        assert waits.ok and waits.data["status"] == "pending"  # high risk at L3: people decide
        await world.shepherd.confirmations.vote(BOB, waits.data["code"], approve=True)
        merged = await _wait_done(world, waits.data["code"])
        assert merged.execution == "done" and merged.result["mergeCommit"]
        assert world.github.pulls[("acme/api", 1)]["merged"] is True

        staging = await registry.run(world.shepherd, ALICE, f"deploy staging {task.name}")
        assert staging.data["status"] == "approved" and "approved by alice" in staging.text  # her own vote
        assert (await _wait_done(world, staging.data["code"])).execution == "done"
        assert marker.read_text().split() == [head, "staging"]

        prod = await registry.run(world.shepherd, ALICE, f"deploy production {task.name}")
        assert prod.data["status"] == "pending"  # critical, always asks, quorum 2
        with pytest.raises(Exception, match="other than the requester"):
            await world.shepherd.confirmations.vote(ALICE, prod.data["code"], approve=True)
        await world.shepherd.confirmations.vote(BOB, prod.data["code"], approve=True)
        carol = Principal.for_role("acme", "carol", Role.APPROVER, "telegram", user_id="user-carol")
        await world.shepherd.confirmations.vote(carol, prod.data["code"], approve=True)
        shipped = await _wait_done(world, prod.data["code"])
        assert shipped.execution == "done", shipped.result
        assert hook_calls == [{"environment": "production", "repo": "acme/api", "branch": f"shepherd/{task.name}",
                               "sha": head, "task": task.name, "confirmation": prod.data["code"],
                               "approvedBy": "carol"}]
        agent = await world.shepherd.agents.get(ALICE, task.agent_id or "")
        assert agent.agent.deploys_triggered == 2

        unknown = await registry.run(world.shepherd, ALICE, f"deploy qa {task.name}")
        failed = await _wait_done(world, unknown.data["code"])
        assert failed.execution == "failed" and "no deploy is configured for 'qa'" in failed.result["error"]
    finally:
        await runner.cleanup()


async def test_a_broken_policy_file_fails_the_task_with_the_key_named_and_nothing_leaves(
    world: World, tmp_path: Path
) -> None:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "web.toml").write_text('[risk]\n"pr.open" = "sometimes"\n')
    await world.shepherd.projects.create(ALICE, name="web", repo="acme/api", default_branch="main")
    task = await world.run("add a greeting", level=5, project="web")
    done = await world.until(task.id, lambda t: t.outcome is not None)
    assert done.outcome == "failed"
    assert "pr.open not decided" in done.evidence["reason"] and "risk.pr.open: unknown risk" in done.evidence["reason"]
    assert world.pull_posts() == [] and world.branch_head(f"shepherd/{task.name}") is None


async def test_githubs_retry_after_sets_when_the_action_is_tried_again(world: World) -> None:
    world.github.secondary_rate_limit_next(retry_after=2)
    task = await world.run("add a greeting", level=3)
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        found = await world.shepherd.confirmations.history(ALICE, status="approved", task_id=task.id)
        if found and found[0].result.get("lastError"):
            conf = found[0]
            break
        assert asyncio.get_running_loop().time() < deadline, [c.result for c in found]
        await asyncio.sleep(0.05)
    assert "secondary rate limit" in conf.result["lastError"]
    assert conf.result["retryAt"] - conf.decided_at.timestamp() >= 2  # GitHub's word, not our 5 s backoff
    done = await world.until(task.id, lambda t: t.outcome is not None, timeout=30)
    assert done.outcome == "succeeded" and done.evidence["actions"][0]["attempts"] == 2
