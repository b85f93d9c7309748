"""Clean-up (core.housekeeping) on both stores, with a chosen `now`: each retention's boundary (a second before:
kept; a second after: gone), workspaces with work found nowhere else kept until the hard limit, running and waiting
tasks untouched, a follow-up after pruning answered clearly, pending and in-hand rows kept, twice is once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from bot.presets import agent_catalog
from core.channels.outbox import Message
from core.commands.registry import build_registry
from core.errors import Conflict
from core.housekeeping import CleanUp, Retention
from core.people.access import Principal, Role
from core.runners.workspace import prepare
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Agent, Delivery, Event, HeldRequest, MessageRef, Outbox, Task, Thread
from tests.conftest import person
from tests.gitrepos import git, seed_repo

DAY = 86400.0
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # when the tasks of these tests ended
SECOND = timedelta(seconds=1)
RETENTION = Retention(batch=2)  # the defaults, in batches of two: every step must go on past its first batch


@pytest.fixture
async def core(db_url: str, tmp_path: Path) -> Any:
    db = Database(db_url)
    shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo", workspace_root=tmp_path / "workspaces",
                        retention=RETENTION)
    await shepherd.orgs.ensure("acme")
    await shepherd.orgs.ensure("globex")
    yield shepherd
    await db.dispose()


async def ended_task(shepherd: Shepherd, who: Principal, *, ended: datetime | None = T0, status: str = "completed",
                     repo: Path | None = None) -> Task:
    """A task whose one turn ran in a real workspace (an empty repository, or a clone of `repo`) and ended at
    `ended` (with status `running` and no end: one still at work)."""
    task = (await shepherd.tasks.create(who, prompt="tidy up [noedit]", runtime="demo")).task
    root = shepherd.tasks.workspace_root
    assert root is not None
    path = root / task.id
    branch, sha = await prepare(path, source=str(repo) if repo else None, base_branch=None,
                                work_branch=task.work_branch or "work")
    async with shepherd.db.write() as session:
        row = await session.get(Task, task.id)
        assert row is not None
        row.status, row.state, row.turns = status, "complete" if ended else "working", 1
        row.outcome = "succeeded" if ended else None
        row.finished_at, row.workspace, row.base_branch, row.base_sha = ended, str(path), branch, sha
        session.add(row)
    return await shepherd.tasks.get(who, task.id)


def commit(path: Path, name: str) -> str:
    (path / name).write_text(f"{name}\n")
    git("add", name, cwd=path)
    git("commit", "-qm", f"add {name}", cwd=path)
    return git("rev-parse", "HEAD", cwd=path).strip()


async def events_of(shepherd: Shepherd, task_id: str) -> list[Event]:
    async with shepherd.db.read() as session:
        return list(await session.exec(select(Event).where(Event.task_id == task_id).order_by(col(Event.id))))


# --- agents -------------------------------------------------------------------------------------------------


async def test_a_finished_tasks_agent_goes_after_its_retention_and_the_task_keeps_its_history(core: Shepherd) -> None:
    admin = person(Role.ADMIN)
    done = [await ended_task(core, admin) for _ in range(3)]  # more than a batch
    running = await ended_task(core, admin, ended=None, status="running")
    suspended = await ended_task(core, admin)
    await core.agents.act(admin, suspended.agent_id or "", "suspend")
    await core.agents.act(admin, done[0].agent_id or "", "set_autonomy", {"level": 0})  # a person held it back
    own = await core.agents.create(admin, name="helper", type="task")  # someone's own agent, no task's
    other = await ended_task(core, person(Role.ADMIN, org="globex"))  # another org: the same rules

    limit = T0 + timedelta(seconds=RETENTION.agents_s)
    assert (await core.housekeeping.clean_up(limit - SECOND)).startswith("removed 0 agents")
    line = await core.housekeeping.clean_up(limit + SECOND)
    assert line.startswith("removed 4 agents"), line
    async with core.db.read() as session:
        left = {a.id for a in await session.exec(select(Agent))}
    assert not left & {t.agent_id for t in [*done, other]}
    assert {running.agent_id, suspended.agent_id, own.agent.id} <= left
    page = await core.tasks.get(admin, done[0].id)  # the task page still reads, its level the agent's last
    assert page.outcome == "succeeded" and page.autonomy_level == 0
    names = [e.name for e in await events_of(core, done[0].id)]
    assert names[0] == "task.created" and names[-1] == "agent.removed"
    assert (await core.housekeeping.clean_up(limit + 2 * SECOND)).startswith("removed 0 agents")  # twice is once


# --- workspaces ---------------------------------------------------------------------------------------------


async def test_workspaces_are_pruned_after_their_retention_but_unshared_work_waits_for_the_hard_limit(
    core: Shepherd, tmp_path: Path
) -> None:
    admin = person(Role.ADMIN)
    upstream = seed_repo(tmp_path / "upstream")
    clean = await ended_task(core, admin)
    cloned = await ended_task(core, admin, repo=upstream)
    pushed = await ended_task(core, admin, repo=upstream)  # committed and pushed to its origin
    head = commit(Path(pushed.workspace or ""), "pushed.txt")
    git("push", "-q", "origin", f"HEAD:refs/heads/{pushed.work_branch}", cwd=Path(pushed.workspace or ""))
    by_shepherd = await ended_task(core, admin, repo=upstream)  # pushed by Shepherd's own action, by URL
    head = commit(Path(by_shepherd.workspace or ""), "approved.txt")
    async with core.db.write() as session:
        row = await session.get(Task, by_shepherd.id)
        assert row is not None
        row.evidence = {"actions": [{"action": "branch.push", "code": "K7P2", "ok": True, "attempts": 1,
                                     "branch": row.work_branch, "head": head, "pushed": True}]}
        session.add(row)
    local = await ended_task(core, admin)  # a commit nobody pushed
    commit(Path(local.workspace or ""), "mine.txt")
    dirty = await ended_task(core, admin, repo=upstream)  # changes never committed
    (Path(dirty.workspace or "") / "draft.txt").write_text("half done\n")
    running = await ended_task(core, admin, ended=None, status="running")
    waiting = await ended_task(core, admin, ended=None, status="pending")

    def there(task: Task) -> bool:
        return Path(task.workspace or "").is_dir()

    retention = T0 + timedelta(seconds=RETENTION.workspaces_s)
    line = await core.housekeeping.clean_up(retention - SECOND)
    assert "pruned 0 workspaces," in line, line
    assert all(map(there, [clean, cloned, pushed, by_shepherd, local, dirty, running, waiting]))

    line = await core.housekeeping.clean_up(retention + SECOND)
    assert "pruned 4 workspaces (1 kept: uncommitted changes; 1 kept: unpushed commits)" in line, line
    assert not any(map(there, [clean, cloned, pushed, by_shepherd]))
    assert all(map(there, [local, dirty, running, waiting]))
    pruned = await events_of(core, clean.id)
    assert pruned[-1].name == "task.workspace_pruned" and pruned[-1].payload["reason"] == "retention"
    assert (await core.tasks.get(admin, clean.id)).workspace_pruned_at is not None

    hard = T0 + timedelta(seconds=RETENTION.workspace_hard_limit_s)
    assert "pruned 0 workspaces (1 kept: uncommitted changes; 1 kept: unpushed commits)" in (
        await core.housekeeping.clean_up(hard - SECOND))
    assert "pruned 2 workspaces," in await core.housekeeping.clean_up(hard + SECOND)
    assert not there(local) and not there(dirty) and there(running) and there(waiting)
    last = (await events_of(core, local.id))[-1]
    assert last.payload == {"workspace": local.workspace, "reason": "hard limit", "discarded": "unpushed commits"}
    assert "pruned 0 workspaces," in await core.housekeeping.clean_up(hard + 2 * SECOND)  # twice is once
    assert (await core.tasks.get(admin, running.id)).workspace_pruned_at is None


async def test_a_follow_up_after_pruning_is_refused_with_the_reason_and_the_task_page_says_so(
    core: Shepherd
) -> None:
    admin = person(Role.ADMIN)
    task = await ended_task(core, admin)
    before = await ended_task(core, admin)
    sent = await core.tasks.send(admin, before.id, "one more thing")  # within the retention: a follow-up runs
    assert sent.status == "pending"
    await core.housekeeping.clean_up(T0 + timedelta(seconds=RETENTION.workspaces_s + 1))
    assert Path(before.workspace or "").is_dir(), "a task waiting for its follow-up keeps its workspace"
    with pytest.raises(Conflict) as refused:
        await core.tasks.send(admin, task.id, "and now this")
    assert refused.value.code == "WORKSPACE_PRUNED" and refused.value.status == 409
    assert "its workspace was removed on 2026-03-04" in refused.value.message and "new task" in refused.value.message
    assert (await core.tasks.get(admin, task.id)).status == "completed"  # nothing changed by the refusal
    registry = build_registry()
    page = await registry.run(core, admin, ["task", task.id])
    assert "workspace removed by clean-up" in page.text and (task.workspace or "") not in page.text
    said = await registry.run(core, admin, ["send", task.id, "again"])
    assert not said.ok and "its workspace was removed" in said.text and said.data == {"code": "WORKSPACE_PRUNED"}


async def test_a_workspace_an_open_action_may_need_is_kept(core: Shepherd) -> None:
    from core.autonomy.plans import Origin, Plan, Target

    admin = person(Role.ADMIN)
    task = await ended_task(core, admin)
    async with core.db.write() as session:
        row = await session.get(Task, task.id)
        assert row is not None
        await core.confirmations.gate(
            session, org_id="acme", plan=Plan(action="deploy.staging", summary="deploy it", target=Target()),
            origin=Origin.PERSON, level=1, requester_id="u", requester_name="ana", task=row, agent_id=row.agent_id,
            project_id=None)
    assert "pruned 0 workspaces," in await core.housekeeping.clean_up(T0 + timedelta(days=40))
    assert Path(task.workspace or "").is_dir()


# --- the ledger and the outbox ---------------------------------------------------------------------------


async def test_done_deliveries_and_sent_messages_are_compacted_after_their_retention_and_nothing_else(
    core: Shepherd
) -> None:
    now = T0 + timedelta(days=30)
    cutoff = now - timedelta(seconds=RETENTION.ledger_s)
    old, recent = cutoff - SECOND, cutoff + SECOND
    async with core.db.write() as session:
        thread = Thread(id="th-1", org_id="acme", channel="console", address="ana")
        other = Thread(id="th-2", org_id="globex", channel="console", address="bob")
        session.add_all([thread, other])
        await session.flush()
        for key, status, at, org in [("old-done", "done", old, "acme"), ("recent-done", "done", recent, "acme"),
                                     ("in-hand", "received", old, "acme"), ("failed", "failed", old, "acme"),
                                     ("held", "done", old, "acme"), ("globex-old", "done", old, "globex"),
                                     ("old-done-2", "done", old, "acme")]:
            lease = datetime.now(UTC) + timedelta(hours=1)  # in hand: its processor's lease (the ledger's clock)
            session.add(Delivery(source="github", key=key, org_id=org, status=status, received_at=at,
                                 next_at=lease if status == "received" else at,
                                 done_at=at if status == "done" else None))
        session.add(HeldRequest(org_id="acme", channel="github", address="acme/api#1", source="github", key="held",
                                author="stranger"))
        message = Message(key="reply:1", text="hi").to_json()
        for n, (status, at, th) in enumerate([("sent", old, thread), ("sent", recent, thread), ("pending", old, thread),
                                              ("failed", old, thread), ("sent", old, other), ("sent", old, thread)]):
            session.add(Outbox(org_id=th.org_id, thread_id=th.id, channel="console", address=th.address,
                               key=f"m{n}", payload=message, status=status, created_at=at, next_at=at,
                               sent_at=at if status == "sent" else None))
        session.add(MessageRef(thread_id=thread.id, key="m0", ref="1.0", created_at=old))

    assert (await core.housekeeping.compact(now - 2 * SECOND)) == (0, 0)  # a second before: all kept
    assert (await core.housekeeping.compact(now)) == (3, 3)
    async with core.db.read() as session:
        kept = {d.key for d in await session.exec(select(Delivery))}
        outbox = {(o.key, o.status) for o in await session.exec(select(Outbox))}
        refs = list(await session.exec(select(MessageRef)))
    assert kept == {"recent-done", "in-hand", "failed", "held"}
    assert outbox == {("m1", "sent"), ("m2", "pending"), ("m3", "failed")}
    assert [r.key for r in refs] == ["m0"], "a posted message's ref stays: decisions edit it, replies find it"
    assert (await core.housekeeping.compact(now)) == (0, 0)  # twice is once
    # a redelivery of a compacted item after the retention is new to the ledger: processed again
    assert await core.ledger.receive("github", "old-done", "acme", {}) is True
    assert await core.ledger.receive("github", "in-hand", "acme", {}) is False


def test_the_result_line_says_what_was_done_and_what_was_kept() -> None:
    done = CleanUp(agents=3, workspaces=2, deliveries=120, outbox=340)
    done.kept["unpushed commits"] += 1
    assert done.line() == ("removed 3 agents, pruned 2 workspaces (1 kept: unpushed commits), "
                           "compacted 120 ledger and 340 outbox rows")
    assert CleanUp(agents=1, workspaces=1, elsewhere=2).line() == (
        "removed 1 agent, pruned 1 workspace (2 not on this machine), compacted 0 ledger and 0 outbox rows")
