"""GitHub triggers gated by the project agent's level (issue 14, item 3): a start people must approve waits for
`approve CODE` said anywhere, then the executor starts it; a rejection or an expiry ends it `denied`. Review and
incident triggers run `review` and `incident` agents of the repository's project; a command on a pull request
works on the PR's own branch (or, for a fork, on a new branch off its base); the same request delivered twice
says one thing; two processes meeting a new repository at once make one project. Signed deliveries to the real
app, the loopback fake GitHub, the real store on both databases, real git."""

from __future__ import annotations

import asyncio
import copy
import subprocess
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from core.autonomy.actions import ActionsConfig, Executor
from core.clock import utcnow
from core.people.access import Principal
from core.runners.local import LocalRunner
from core.runners.workspace import prepare
from core.shepherd import Shepherd
from core.store.models import Agent, Confirmation, Outbox, Project, Task
from core.tasks.ending import plan_after_turn
from core.tasks.supervisor import RunnerConfig, TaskSupervisor
from tests.gitrepos import git, seed_repo
from tests.test_autonomy import BOB, world  # noqa: F401 (the fixture: a runner, the demo agent, a git host)
from tests.test_autonomy import World as AutonomyWorld
from tests.test_github_inbound import CONFIG, World, _world, comment, failed_check, payload


@pytest.fixture
async def github(tmp_path: Path, db_url: str) -> AsyncIterator[World]:
    async for made in _world(tmp_path, db_url, config=CONFIG):
        yield made


def opened(*, login: str = "octocat", association: str = "OWNER", fork: bool = False,
           sha: str = "e" * 40) -> dict[str, Any]:
    data = copy.deepcopy(payload("pull_request", "opened.payload.json"))
    data["repository"]["full_name"] = "acme/api"
    pr = data["pull_request"]
    pr.update(number=7, title="Add retries", body="Retries the flaky call.", draft=False,
              author_association=association, user={"login": login, "type": "User", "id": 9})
    pr["head"].update(ref="add-retries", sha=sha)
    pr["head"]["repo"]["full_name"] = "drive-by/api" if fork else "acme/api"
    pr["base"]["ref"] = "main"
    return data


def labelled() -> dict[str, Any]:
    data = copy.deepcopy(payload("issues", "labeled.payload.json"))
    data["repository"]["full_name"] = "acme/api"
    data["issue"].update(number=12, title="Crash on empty input", body="Steps: send nothing")
    data["label"]["name"] = "shepherd"
    return data


async def confirmation_of(gh: World, task: Task) -> Confirmation:
    async with gh.shepherd.db.read() as session:
        return (await session.exec(select(Confirmation).where(Confirmation.task_id == task.id))).one()


async def agent_of(gh: World, task: Task) -> Agent:
    async with gh.shepherd.db.read() as session:
        agent = await session.get(Agent, task.agent_id)
        assert agent is not None
        return agent


async def messages(gh: World, address: str) -> dict[str, str]:
    """The messages Shepherd shows on an issue or pull request: one per outbox key (a later version of a key edits
    the same message in place), with its latest text."""
    async with gh.shepherd.db.read() as session:
        rows = await session.exec(select(Outbox).where(Outbox.channel == "github", Outbox.address == address)
                                  .order_by(col(Outbox.id)))
        return {row.key: str(row.payload.get("text", "")) for row in rows}


async def one_task(gh: World) -> Task:
    [task] = await gh.tasks()
    return task


def supervisor(shepherd: Shepherd, root: Path) -> TaskSupervisor:
    """A runner as the application builds one; only its approved-actions pass is driven here."""
    config = RunnerConfig(workspace_root=root / "workspaces", poll_s=0.05, flush_s=0.05)
    return TaskSupervisor(shepherd, config, runner=LocalRunner(), executor=Executor(ActionsConfig()))


async def carry_out(gh: World, root: Path) -> None:
    """One pass of a runner's executor over the approved actions, waited for."""
    sup = supervisor(gh.shepherd, root)
    await sup.actions.run_due()
    if sup.actions.jobs:
        await asyncio.gather(*sup.actions.jobs)


# --- a gated start ------------------------------------------------------------------------------------


async def test_a_review_at_level_one_waits_for_an_approver_then_the_executor_starts_it(
        github: World, tmp_path: Path) -> None:
    await github.deliver("pull_request", opened())
    await github.idle()
    task = await one_task(github)
    assert task.status == "awaiting" and task.turns == 0
    conf = await confirmation_of(github, task)
    assert conf.action == "review.start" and conf.status == "pending" and conf.origin == "policy"
    # the pull request says what waits, with the code to type
    said = " ".join(await github.said("acme/api#7"))
    assert f"/shepherd approve {conf.code}" in said and "review.start" in said
    assert f"approval {conf.code}" in said  # the confirmation's own prompt, in the task's thread
    # a runner's pass before anyone decided starts nothing
    await carry_out(github, tmp_path)
    assert (await one_task(github)).status == "awaiting"
    # the pull request's author is trusted, but approving needs an approver: refused, still waiting
    await github.deliver("issue_comment", comment(f"/shepherd approve {conf.code}", pull=True, comment_id=3001))
    await github.idle()
    assert (await confirmation_of(github, task)).status == "pending"
    # an approver's word decides; the executor starts the task (pending: a runner claims it)
    await github.deliver("issue_comment", comment(f"/shepherd approve {conf.code}", login="octo-admin",
                                                  pull=True, comment_id=3002))
    await github.idle()
    decided = await confirmation_of(github, task)
    assert decided.status == "approved" and decided.decided_by == "octo-admin"
    await carry_out(github, tmp_path)
    task = await one_task(github)
    assert task.status == "pending" and "approved by octo-admin" in (task.state_message or "")
    assert (await confirmation_of(github, task)).execution == "done"


async def test_a_rejected_start_ends_denied_with_the_reason(github: World) -> None:
    await github.deliver("pull_request", opened())
    await github.idle()
    conf = await confirmation_of(github, await one_task(github))
    await github.deliver("issue_comment", comment(f"/shepherd reject {conf.code} not now", login="octo-admin",
                                                  pull=True, comment_id=3101))
    await github.idle()
    task = await one_task(github)
    assert task.status == "failed" and task.outcome == "denied"
    assert "review.start rejected by octo-admin" in (task.evidence or {}).get("reason", "")


async def test_an_unanswered_start_expires_denied(github: World) -> None:
    await github.deliver("issues", labelled())
    await github.idle()
    task = await one_task(github)
    assert task.status == "awaiting"
    async with github.shepherd.db.write() as session:
        conf = (await session.exec(select(Confirmation).where(Confirmation.task_id == task.id))).one()
        assert conf.action == "task.start"
        conf.expires_at = utcnow() - timedelta(seconds=1)
        session.add(conf)
    assert await github.shepherd.confirmations.expire_due() == 1
    task = await one_task(github)
    assert task.outcome == "denied" and "task.start expired" in (task.evidence or {}).get("reason", "")


async def test_a_level_that_allows_it_starts_at_once(github: World) -> None:
    await github.set_level("acme/api", 2)  # review.start is low risk: runs at level 2
    await github.deliver("pull_request", opened())
    await github.idle()
    task = await one_task(github)
    assert task.status == "pending"
    conf = await confirmation_of(github, task)
    assert conf.status == "approved" and conf.decided_by == "policy" and conf.execution == "done"
    assert any("started task" in text for text in await github.said("acme/api#7"))


async def test_a_maintainers_ok_to_run_is_their_own_approval_of_a_forks_review(github: World) -> None:
    await github.deliver("pull_request", opened(login="drive-by", association="CONTRIBUTOR", fork=True))
    await github.idle()
    assert await github.tasks() == []
    await github.deliver("issue_comment", comment("/shepherd ok-to-run", pull=True, comment_id=3201))
    await github.idle()
    task = await one_task(github)
    assert task.status == "pending" and task.owner_name == "octocat"
    assert (await agent_of(github, task)).type == "review"
    # a fork's branch is not Shepherd's to push to: a new branch off the PR's base
    assert task.base_branch == "main" and task.work_branch == f"shepherd/{task.name}"


# --- the same request twice says one thing (and starts one task) -----------------------------------------


@pytest.mark.parametrize("level", [0, 1])
async def test_a_second_failed_check_of_one_commit_repeats_nothing(github: World, level: int) -> None:
    await github.set_level("acme/api", level)
    await github.deliver("check_run", failed_check("d" * 40))
    await github.deliver("check_run", failed_check("d" * 40))  # another check of the same commit
    await github.idle()
    task = await one_task(github)
    shown = await messages(github, "acme/api#2")
    replies = [text for key, text in shown.items() if key.startswith("reply:")]
    assert len(replies) == 1
    if level == 0:  # Observe: refused, and said why
        assert task.outcome == "denied" and "refused" in replies[0]
    else:
        assert task.status == "awaiting" and "/shepherd approve" in replies[0]


# --- agent types ---------------------------------------------------------------------------------------


async def test_each_trigger_runs_its_agent_type_in_the_repositorys_project(github: World) -> None:
    await github.set_level("acme/api", 3)
    await github.deliver("issues", labelled())
    await github.deliver("pull_request", opened())
    await github.deliver("check_run", failed_check("a" * 40))
    await github.idle()
    project = await github.shepherd.projects.of_repo("acme", "acme/api")
    types: dict[str, str] = {}
    for task in await github.tasks():
        agent = await agent_of(github, task)
        assert agent.project_id == project.id and task.project_id == project.id
        assert task.status == "pending"
        types[agent.type] = task.prompt
    assert set(types) == {"task", "review", "incident"}
    assert "Crash on empty input" in types["task"] and "Review pull request" in types["review"]
    assert "Investigate the failed check run" in types["incident"]
    # the agent list says what each is for
    async with github.shepherd.db.read() as session:
        names = set(await session.exec(select(Agent.type).where(col(Agent.id).startswith("agent-review"))))
    assert names == {"review"}


# --- pull request branches ---------------------------------------------------------------------------------


def pull(*, fork: bool) -> dict[str, Any]:
    """GET /repos/acme/api/pulls/7 as GitHub answers it (the fake serves what is seeded)."""
    return {"number": 7, "state": "open", "url": "https://api.github.com/repos/acme/api/pulls/7",
            "head": {"ref": "add-retries", "sha": "f" * 40, "label": "x:add-retries",
                     "repo": {"full_name": "drive-by/api" if fork else "acme/api"}},
            "base": {"ref": "release-2", "sha": "0" * 40, "repo": {"full_name": "acme/api"}}}


async def test_a_command_on_a_same_repository_pull_request_works_on_its_head_branch(github: World) -> None:
    github.fake.pulls[("acme/api", 7)] = pull(fork=False)
    await github.deliver("issue_comment", comment("/shepherd fix the lint errors", pull=True))
    await github.idle()
    task = await one_task(github)
    assert task.base_branch == "add-retries" and task.work_branch == "add-retries"
    assert any(r.path == "/repos/acme/api/pulls/7" for r in github.fake.requests)
    # a pull request whose head is the default branch itself: never pushed onto in place
    github.fake.pulls[("acme/api", 8)] = {**pull(fork=False), "number": 8,
                                          "head": {**pull(fork=False)["head"], "ref": "master"}}
    await github.deliver("issue_comment", comment("/shepherd fix it", pull=True, number=8, comment_id=1002))
    await github.idle()
    [other] = [t for t in await github.tasks() if t.id != task.id]
    assert other.base_branch == "master" and other.work_branch == f"shepherd/{other.name}"


async def test_a_command_on_a_fork_pull_request_works_on_a_new_branch_off_its_base(github: World) -> None:
    github.fake.pulls[("acme/api", 7)] = pull(fork=True)
    await github.deliver("issue_comment", comment("/shepherd fix the lint errors", pull=True))
    await github.idle()
    task = await one_task(github)
    assert task.base_branch == "release-2" and task.work_branch == f"shepherd/{task.name}"


async def test_an_incident_fix_goes_on_its_own_branch_never_onto_the_pull_requests(github: World) -> None:
    await github.set_level("acme/api", 3)
    await github.deliver("check_run", failed_check("a" * 40, branch="changes"))
    await github.idle()
    task = await one_task(github)
    assert task.base_branch == "changes" and task.work_branch.startswith("shepherd/")


async def test_a_task_in_place_clones_the_branch_and_its_end_is_a_push_there(tmp_path: Path) -> None:
    upstream = seed_repo(tmp_path / "upstream", "# upstream\n")
    subprocess.run(["git", "-C", str(upstream), "branch", "add-retries"], check=True)
    workspace = tmp_path / "ws"
    branch, sha = await prepare(workspace, source=str(upstream), base_branch="add-retries",
                                work_branch="add-retries")
    assert branch == "add-retries"
    current = subprocess.run(["git", "-C", str(workspace), "branch", "--show-current"], check=True,
                             capture_output=True, text=True).stdout.strip()
    assert current == "add-retries"
    (workspace / "fix.txt").write_text("fixed\n")
    task = Task(id="task-1", org_id="acme", name="fix-lint-1a2b", display_name="fix lint", owner_id="u",
                owner_name="octocat", runtime="demo", prompt="fix lint", repo="acme/api",
                base_branch="add-retries", work_branch="add-retries")
    plan = await plan_after_turn(task, workspace)
    assert plan is not None and plan.action == "branch.push"
    assert plan.target.branch == "add-retries" and plan.target.head != sha
    # a task on its own branch still ends in a pull request
    task.work_branch = "shepherd/fix-lint-1a2b"
    other = await plan_after_turn(task, workspace)
    assert other is not None and other.action == "pr.open" and other.target.base == "add-retries"


# --- projects from repositories -----------------------------------------------------------------------------


async def test_two_processes_meeting_a_new_repository_at_once_make_one_project(
        two_cores: tuple[Shepherd, Shepherd]) -> None:
    a, b = two_cores
    for n in range(4):
        repo = f"acme/service-{n}"
        first, second = await asyncio.gather(a.projects.of_repo("acme", repo), b.projects.of_repo("acme", repo))
        assert first.id == second.id
        async with a.db.read() as session:
            made = list(await session.exec(select(Project).where(Project.repo == repo)))
            agents = list(await session.exec(select(Agent).where(Agent.type == "project",
                                                                 Agent.project_id == first.id)))
        assert [p.name for p in made] == [f"service-{n}"] and len(agents) == 1


# --- end to end: a gated start, then a turn on the pull request's own branch, then a push there ------------


async def test_an_approved_start_runs_on_the_branch_in_place_and_pushes_there(
        world: AutonomyWorld) -> None:  # noqa: F811 (test_autonomy's fixture)
    """A review agent a webhook asked for at level 1, through the real runner, the demo agent, a real clone and a
    real push: approved, it starts; it works on the pull request's branch; its end is a push onto that branch (no
    pull request opened), approved in its turn."""
    git("branch", "add-retries", "main", cwd=world.remote)
    project = await world.shepherd.projects.of_repo("acme", "acme/api")
    system = Principal.system("acme", "github")
    view = await world.shepherd.tasks.create(
        system, prompt="add a greeting to the README", runtime="demo", project=project.id, branch="add-retries",
        in_place=True, agent_type="review", gate="review.start", thread=("console", "alice"))
    task, start = view.task, view.confirmation
    assert task.status == "awaiting" and start is not None and start.status == "pending"
    await world.until(task.id, lambda t: any(start.code in x for x in world.channel.texts()), timeout=5)
    await world.shepherd.confirmations.vote(BOB, start.code, approve=True)
    push = await world.pending_for(task.id)  # the turn ran; what it made waits on the gate
    assert push.action == "branch.push" and push.target["branch"] == "add-retries"
    await world.shepherd.confirmations.vote(BOB, push.code, approve=True)
    done = await world.until(task.id, lambda t: t.outcome is not None)
    assert (done.status, done.outcome) == ("completed", "succeeded"), done.evidence
    assert world.branch_head("add-retries") == push.target["head"]
    assert world.branch_head(f"shepherd/{task.name}") is None and world.pull_posts() == []
    assert (done.decision_count, done.auto_resolved_count) == (2, 0)
