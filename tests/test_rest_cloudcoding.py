"""CloudCoding's `POST /invoke/stdout` (shared/seeds/003) over real HTTP: an SSE client reads the real stream of
demo-agent tasks run by the real runner, cloning from a git server on loopback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text
from sqlmodel import SQLModel

from adapters.rest.sse import FOLLOW_POLL, SSE_HEARTBEAT
from bot.app import create_app
from bot.presets import agent_catalog
from core.people.access import Role
from core.runners.repos import RepoRules
from core.shepherd import Shepherd
from core.store.db import Database
from core.tasks.supervisor import RunnerConfig, TaskSupervisor
from tests.conftest import person
from tests.fakes.git_http import GitHttp
from tests.gitrepos import git, seed_repo
from tests.sse import Event, events
from tests.test_tasks import supervisor

TOKEN = "ghp_0nlyF0rThisRunN0tStoredAnywhere42"
ADMIN = person(Role.ADMIN)


class Rig:
    def __init__(self, client: TestClient, shepherd: Shepherd, token: str, repo_url: str, root: Path,
                 git_server: GitHttp) -> None:
        self.client = client
        self.shepherd = shepherd
        self.token = token
        self.repo_url = repo_url
        self.root = root
        self.git_server = git_server
        self.supervisor: TaskSupervisor | None = None

    @contextlib.asynccontextmanager
    async def invoke(self, **body: Any) -> AsyncIterator[Any]:
        payload = {"repo_url": self.repo_url, "agent": "demo", **body}
        async with self.client.post("/invoke/stdout", json=payload, headers={"x-api-key": self.token}) as resp:
            yield resp

    async def stream(self, **body: Any) -> list[Event]:
        """Every event of one invocation, read to the stream's end."""
        async with self.invoke(**body) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            return [e async for e in events(resp)]

    async def refused(self, status: int, **body: Any) -> dict[str, Any]:
        async with self.invoke(**body) as resp:
            assert resp.status == status, await resp.text()
            assert resp.content_type == "application/json"
            return dict(await resp.json())

    async def finished(self, task_id: str) -> Any:
        for _ in range(600):
            task = await self.shepherd.tasks.get(ADMIN, task_id)
            if task.outcome is not None and task.status in ("completed", "failed", "cancelled"):
                return task
            await asyncio.sleep(0.05)
        raise AssertionError(f"task {task_id} did not finish")


@contextlib.asynccontextmanager
async def served(db_url: str, root: Path, *, runner: bool = True) -> AsyncIterator[Rig]:
    bare = root / "served" / "app.git"
    git("clone", "-q", "--bare", str(seed_repo(root / "seed")), str(bare), cwd=root)
    with GitHttp(root / "served") as git_server:
        git_server.publish(bare)
        db = Database(db_url)
        # the loopback git server is one an admin named exactly (SHEPHERD_REPO_HOSTS=127.0.0.1)
        shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo", workspace_root=root / "ws",
                            repos=RepoRules(hosts=("127.0.0.1",)))
        await shepherd.orgs.ensure("acme")
        app = create_app(db_url, shepherd=shepherd)
        app[SSE_HEARTBEAT] = 0.2
        app[FOLLOW_POLL] = 0.1
        client = TestClient(TestServer(app))
        await client.start_server()
        token = (await shepherd.tokens.create(org_id="acme", user="ana", scopes="read,write,approve,admin")).secret
        rig = Rig(client, shepherd, token, git_server.url("app.git"), root, git_server)
        try:
            if runner:
                config = RunnerConfig(workspace_root=root / "ws", poll_s=0.05, flush_s=0.05, idle_timeout_s=30,
                                      hard_timeout_s=60, max_tasks=8, max_tasks_per_project=8,
                                      repo_hosts=("127.0.0.1",), max_action_attempts=1)
                rig.supervisor = supervisor(shepherd, replace(config))
                await rig.supervisor.start()
            yield rig
        finally:
            if rig.supervisor is not None:
                await rig.supervisor.stop()
            await client.close()
            await db.dispose()


@pytest.fixture
async def rig(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with served(sqlite_url, tmp_path) as r:
        yield r


# --- parallel tasks, read to the end -------------------------------------------------------------------------

async def test_two_parallel_tasks_stream_interleaved_stdout_and_both_outcomes(db_url: str, tmp_path: Path) -> None:
    async with served(db_url, tmp_path) as rig:
        got = await rig.stream(parallel_tasks=[
            {"prompt": "count [long 3] [noedit]", "task_name": "error-handling"},
            {"prompt": "count too [long 3] [noedit]", "task_name": "testing"},
        ])
        first = got[0]
        assert first.event == "updates" and first.data["thread_id"].startswith("sess_")
        assert set(first.data) >= {"thread_id", "run_id", "messages", "stream_events"}
        session_id = first.data["thread_id"]
        runs = {r["task_name"]: r["run_id"] for r in first.data["runs"]}
        assert set(runs) == {"error-handling", "testing"}

        custom = [e.data for e in got if e.event == "custom"]
        assert all(set(c) >= {"task_name", "stdout"} for c in custom)
        order = [c["task_name"] for c in custom if c["stdout"].startswith("tick")]
        assert order.count("error-handling") >= 3 and order.count("testing") >= 3
        # really at once: the ticks of each task arrive between ticks of the other (3 s each, so a start
        # delayed by a busy machine still overlaps)
        switches = sum(1 for a, b in zip(order, order[1:], strict=False) if a != b)
        assert switches >= 2, order

        ended = [e.data for e in got[1:-1] if e.event == "updates"]
        assert {e["run_id"] for e in ended} == set(runs.values())
        for e in ended:
            assert e["thread_id"] == session_id and e["stream_events"] == []
            assert e["messages"][0]["type"] == "ai" and "finished" in e["messages"][0]["content"]
        last = got[-1]
        assert last.event == "updates" and last.data["done"] is True
        outcomes = {t["task_name"]: (t["status"], t["outcome"]) for t in last.data["tasks"]}
        assert outcomes == {"error-handling": ("completed", "succeeded"), "testing": ("completed", "succeeded")}
        assert all(t["summary"] and t["evidence"]["exit_code"] == 0 for t in last.data["tasks"])
        for task_id in runs.values():  # the tasks of one session
            task = await rig.shepherd.tasks.get(ADMIN, task_id)
            assert task.session_id == session_id and task.repo == rig.repo_url
        session = await rig.shepherd.sessions.get(ADMIN, session_id)
        assert session.origin == {"channel": "cloudcoding"}
        # its tasks are the parallel ones, no third one for the session's own task
        assert sorted(t.id for t in await rig.shepherd.sessions.tasks_of(ADMIN, session_id)) == sorted(runs.values())


async def test_without_a_repository_the_tasks_work_in_empty_workspaces(rig: Rig) -> None:
    """How a new user tries the stream with no repository at hand: the demo agent, no repo_url."""
    rig.repo_url = None  # type: ignore[assignment]
    body = {"repo_url": None, "parallel_tasks": [{"prompt": "one [lines 2]", "task_name": "one"},
                                                 {"prompt": "two [lines 2]", "task_name": "two"}]}
    got = await rig.stream(**body)
    last = got[-1].data
    assert last["done"] is True
    assert {t["task_name"]: t["outcome"] for t in last["tasks"]} == {"one": "succeeded", "two": "succeeded"}
    assert {e.data["task_name"] for e in got if e.event == "custom"} == {"one", "two"}
    refused = await rig.refused(400, repo_url=None, github_token=TOKEN, messages=[{"type": "human", "content": "x"}])
    assert refused["code"] == "INVALID_REPO" and TOKEN not in str(refused)


async def test_a_quiet_agent_gets_heartbeats_and_a_single_task_streams_too(rig: Rig) -> None:
    comments: list[str] = []
    async with rig.invoke(messages=[{"type": "system", "content": "be brief"},
                                    {"type": "human", "content": "wait [sleep 0.8] [noedit]"}]) as resp:
        got = [e async for e in events(resp, comments=comments)]
    assert "keep-alive" in comments
    assert [c.data["stdout"] for c in (e for e in got if e.event == "custom")][:1] != []
    task_id = got[0].data["runs"][0]["run_id"]
    task = await rig.shepherd.tasks.get(ADMIN, task_id)
    assert task.prompt == "wait [sleep 0.8] [noedit]"  # the human turn is the prompt
    assert got[-1].data["tasks"][0]["outcome"] == "succeeded"


async def test_a_client_that_leaves_does_not_stop_the_tasks(rig: Rig) -> None:
    async with rig.invoke(parallel_tasks=[{"prompt": "a [long 1.5] [noedit]", "task_name": "a"},
                                          {"prompt": "b [long 1.5] [noedit]", "task_name": "b"}]) as resp:
        stream = events(resp)
        first = await anext(stream)
        while (await anext(stream)).event != "custom":
            pass
        resp.close()  # the client goes away mid-stream
    for run in first.data["runs"]:
        task = await rig.finished(run["run_id"])
        assert task.outcome == "succeeded" and task.session_id == first.data["thread_id"]
        _, logs = await rig.shepherd.tasks.logs(ADMIN, task.id)
        assert any(log.content.startswith("tick") for log in logs)


# --- the one-use token ---------------------------------------------------------------------------------------

async def test_the_github_token_is_used_for_the_clone_and_the_push_and_is_nowhere_else(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    got = await rig.stream(github_token=TOKEN, messages=[{"type": "human", "content": "look [env]"}])
    ended = got[-1].data["tasks"][0]
    # env.json is a change: the turn is over and its push waits for people, which the end of the stream says
    assert ended["status"] == "awaiting" and "waiting for approval" in ended["summary"], ended
    task_id = got[0].data["runs"][0]["run_id"]
    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert any(r.get("authorization") == f"Basic {basic}" for r in rig.git_server.requests), "the clone carried it"

    task = await rig.shepherd.tasks.get(ADMIN, task_id)
    workspace = Path(task.workspace or "")
    env = json.loads((workspace / "env.json").read_text())
    assert all(TOKEN not in v and basic not in v for v in env.values()), "never in the agent's environment"
    config = (workspace / ".git" / "config").read_text()
    assert TOKEN not in config and basic not in config, "never in the workspace's git config"
    assert task.pinned_runner is None  # the pin held until the first claim only
    assert rig.shepherd.run_tokens.holds(task_id), "kept for the push"

    rig.git_server.requests.clear()
    (conf,) = await rig.shepherd.confirmations.pending(ADMIN, task_id=task_id)
    await rig.shepherd.confirmations.vote(ADMIN, conf.code, approve=True)
    await rig.finished(task_id)  # the loopback server cannot take a push (dumb HTTP): it was tried with the token
    assert any(r.get("authorization") == f"Basic {basic}" and "receive-pack" in r["path"]
               for r in rig.git_server.requests), rig.git_server.requests

    assert TOKEN not in caplog.text and basic not in caplog.text, "never logged"
    async with rig.shepherd.db.read() as session:
        conn = await session.connection()
        for table in SQLModel.metadata.sorted_tables:
            for row in (await conn.execute(text(f'SELECT * FROM "{table.name}"'))).all():
                assert TOKEN not in repr(row) and basic not in repr(row), f"stored in table {table.name}"
    for _ in range(200):  # the task has finished: the process forgets the token
        if not rig.shepherd.run_tokens.holds(task_id):
            break
        await asyncio.sleep(0.05)
    assert not rig.shepherd.run_tokens.holds(task_id)


async def test_a_process_that_runs_no_tasks_refuses_a_token_with_why(sqlite_url: str, tmp_path: Path) -> None:
    async with served(sqlite_url, tmp_path, runner=False) as idle:
        body = await idle.refused(503, github_token=TOKEN, messages=[{"type": "human", "content": "x"}])
        assert body["code"] == "RUNNER_NOT_HERE" and "github_token" in body["error"]
        async with idle.shepherd.db.read() as session:
            conn = await session.connection()
            assert (await conn.execute(text("SELECT count(*) FROM session"))).scalar() == 0


async def test_a_task_pinned_to_a_process_that_is_gone_ends_instead_of_waiting(rig: Rig) -> None:
    view = await rig.shepherd.tasks.create(ADMIN, prompt="x [noedit]", runtime="demo", pin_runner="node-gone")
    assert rig.supervisor is not None
    await rig.supervisor.nodes.reconcile(rig.supervisor.turns.running)
    task = await rig.finished(view.task.id)
    assert task.outcome == "interrupted" and "held its GitHub token" in task.evidence["reason"]
    assert task.turns == 0, "no other runner started it without its token"


# --- bad input: JSON before any stream -----------------------------------------------------------------------

@pytest.mark.parametrize(("body", "code", "words"), [
    ({}, "INVALID_INVOKE", "exactly one of messages"),
    ({"messages": [{"type": "human", "content": "a"}], "parallel_tasks": [{"prompt": "b", "task_name": "b"}]},
     "INVALID_INVOKE", "exactly one of messages"),
    ({"messages": []}, "INVALID_INVOKE", "messages is empty"),
    ({"messages": [{"type": "ai", "content": "hello"}]}, "INVALID_INVOKE", "no human turn"),
    ({"messages": [{"type": "robot", "content": "x"}]}, "INVALID_INVOKE", "type: human|ai|system"),
    ({"messages": "fix it"}, "INVALID_INVOKE", "messages is a list"),
    ({"parallel_tasks": []}, "INVALID_INVOKE", "1-10 tasks"),
    ({"parallel_tasks": [{"prompt": "a", "task_name": "x"}, {"prompt": "b", "task_name": "x"}]},
     "INVALID_INVOKE", "its own task_name"),
    ({"parallel_tasks": [{"prompt": f"p{i}", "task_name": f"t{i}"} for i in range(11)]}, "INVALID_INVOKE",
     "1-10 tasks"),
    ({"parallel_tasks": [{"prompt": " ", "task_name": "x"}]}, "INVALID_INVOKE", "a prompt is"),
    ({"repo_url": "acme/api", "messages": [{"type": "human", "content": "x"}]}, "INVALID_REPO", "https URL"),
    ({"repo_url": "https://evil.example/a/b.git", "messages": [{"type": "human", "content": "x"}]},
     "REPO_HOST_NOT_ALLOWED", "SHEPHERD_REPO_HOSTS"),
    ({"repo_url": 7, "messages": [{"type": "human", "content": "x"}]}, "INVALID_REPO", "https URL"),
    ({"github_token": 12, "messages": [{"type": "human", "content": "x"}]}, "INVALID_TOKEN", "a string"),
    ({"github_token": "two words", "messages": [{"type": "human", "content": "x"}]}, "INVALID_TOKEN", "no spaces"),
    ({"agent": "nope", "messages": [{"type": "human", "content": "x"}]}, "UNKNOWN_AGENT", "unknown agent"),
    ({"haiku": "yes", "messages": [{"type": "human", "content": "x"}]}, "VALIDATION_ERROR", "haiku"),
    # checked before the session and the first tasks are made: a refused request must start no agent
    ({"branch": "-x", "messages": [{"type": "human", "content": "x"}]}, "INVALID_BRANCH", "branch name"),
    ({"parallel_tasks": [{"prompt": "a", "task_name": "ok"}, {"prompt": "b", "task_name": "x\ny"}]},
     "VALIDATION_ERROR", "line break"),
])
async def test_bad_input_is_a_json_400_before_the_stream(rig: Rig, body: dict[str, Any], code: str,
                                                          words: str) -> None:
    answer = await rig.refused(400, **body)
    assert answer["code"] == code and words in answer["error"], answer
    async with rig.shepherd.db.read() as session:  # nothing was started
        conn = await session.connection()
        assert (await conn.execute(text("SELECT count(*) FROM task"))).scalar() == 0
        assert (await conn.execute(text("SELECT count(*) FROM session"))).scalar() == 0


async def test_an_unknown_thread_is_a_404_and_no_token_is_a_401(rig: Rig) -> None:
    answer = await rig.refused(404, thread_id="sess_0000000000000000",
                               messages=[{"type": "human", "content": "x"}])
    assert answer["code"] == "SESSION_NOT_FOUND"
    async with rig.client.post("/invoke/stdout", json={"repo_url": rig.repo_url}) as resp:
        assert resp.status == 401


async def test_a_token_goes_only_over_https(sqlite_url: str, tmp_path: Path) -> None:
    async with served(sqlite_url, tmp_path) as rig:
        rig.shepherd.tasks.repos = RepoRules(hosts=("*",))  # allowed only by a pattern: not an admin's own server
        answer = await rig.refused(400, github_token=TOKEN, repo_url="http://1.1.1.1/a/b.git",
                                   messages=[{"type": "human", "content": "x"}])
        assert answer["code"] == "INVALID_REPO" and "only over https" in answer["error"]


# --- continuing a session; the cheaper model -----------------------------------------------------------------

async def test_thread_id_continues_the_session_and_haiku_picks_the_cheaper_model(rig: Rig) -> None:
    first = await rig.stream(haiku=True, messages=[{"type": "human", "content": "start [noedit]"}])
    session_id, task_id = first[0].data["thread_id"], first[0].data["runs"][0]["run_id"]
    assert any(e.data["stdout"] == "model: haiku" for e in first if e.event == "custom")

    again = await rig.stream(thread_id=session_id, messages=[{"type": "human", "content": "and more [noedit]"}])
    assert again[0].data["thread_id"] == session_id and again[0].data["runs"][0]["run_id"] == task_id
    said = [e.data["stdout"] for e in again if e.event == "custom"]
    assert any("resuming session" in s for s in said) and not any(s.startswith("reading the prompt: start")
                                                                  for s in said), "only the new turn's output"
    assert again[-1].data["tasks"][0]["outcome"] == "succeeded"
    assert (await rig.shepherd.tasks.get(ADMIN, task_id)).turns == 2

    more = await rig.stream(thread_id=session_id, parallel_tasks=[{"prompt": "side [noedit]", "task_name": "side"}])
    new_id = more[0].data["runs"][0]["run_id"]
    assert new_id != task_id and (await rig.shepherd.tasks.get(ADMIN, new_id)).session_id == session_id


async def test_haiku_on_an_agent_without_a_cheaper_model_is_said(rig: Rig) -> None:
    rig.shepherd.catalog.presets["demo"] = replace(rig.shepherd.catalog.presets["demo"], cheap=())
    got = await rig.stream(haiku=True, messages=[{"type": "human", "content": "go [noedit]"}])
    assert any("no cheaper model" in m["content"] for m in got[0].data["messages"])
    assert not any(e.data["stdout"].startswith("model:") for e in got if e.event == "custom")
