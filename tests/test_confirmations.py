"""Confirmations in core, on SQLite and PostgreSQL: who may decide, quorum, one reject, duplicates, one
decision under concurrency, expiry to a reject, the task's counters, events and outbox rows."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from core.autonomy.plans import Origin, Plan, Status, Target, plan_hash
from core.channels.conversations import bind_thread
from core.clock import utcnow
from core.errors import Conflict, Forbidden, NotFound, Unauthorized
from core.people.access import Principal, Role
from core.shepherd import Shepherd
from core.store.models import Confirmation, Event, Outbox, Task
from tests.conftest import person

ALICE = Principal.for_role("acme", "alice", Role.APPROVER, "console", user_id="user-alice")
BOB = Principal.for_role("acme", "bob", Role.APPROVER, "slack", user_id="user-bob")
CAROL = Principal.for_role("acme", "carol", Role.APPROVER, "telegram", user_id="user-carol")


async def started_task(shepherd: Shepherd, who: Principal = ALICE, status: str = "awaiting") -> Task:
    view = await shepherd.tasks.create(who, prompt="fix the flaky test", runtime="demo", repo="acme/api",
                                       thread=("console", who.name))
    async with shepherd.db.write() as session:
        await session.exec(update(Task).where(col(Task.id) == view.task.id).values(
            status=status, state="idle", turns=1, evidence={"exitCode": 0, "reason": "the agent finished its turn"}))
    return await shepherd.tasks.get(who, view.task.id)


def pr_plan(head: str = "a" * 40) -> Plan:
    target = Target(repo="acme/api", branch="shepherd/x", base="main", head=head)
    return Plan(action="pr.open", summary="open a pull request", target=target, params={"title": "x"})


async def gate(shepherd: Shepherd, task: Task, plan: Plan, *, level: int = 1,
               origin: Origin = Origin.POLICY) -> Confirmation:
    async with shepherd.db.write() as session:
        locked = await session.get(Task, task.id)
        assert locked is not None
        result = await shepherd.confirmations.gate(
            session, org_id=task.org_id, plan=plan, origin=origin, level=level, requester_id=task.owner_id,
            requester_name=task.owner_name, task=locked, agent_id=task.agent_id, project_id=task.project_id,
        )
        return result.confirmation


async def events(shepherd: Shepherd, task_id: str, prefix: str = "confirmation.") -> list[str]:
    async with shepherd.db.read() as session:
        rows = await session.exec(select(Event).where(Event.task_id == task_id).order_by(col(Event.id)))
        return [e.name for e in rows if e.name.startswith(prefix)]


async def outbox(shepherd: Shepherd, key: str) -> list[Outbox]:
    async with shepherd.db.read() as session:
        return list(await session.exec(select(Outbox).where(Outbox.key == key).order_by(col(Outbox.id))))


def test_the_plan_hash_binds_action_target_and_parameters() -> None:
    assert pr_plan().hash == pr_plan().hash
    assert pr_plan("b" * 40).hash != pr_plan().hash
    assert plan_hash("pr.open", {"a": 1}, {"x": 1}) != plan_hash("pr.open", {"a": 1}, {"x": 2})
    assert plan_hash("pr.merge", {"a": 1}, {}) != plan_hash("pr.open", {"a": 1}, {})


async def test_a_level_1_task_asks_and_an_approver_decides_once_with_counters_events_and_messages(
    shepherd: Shepherd,
) -> None:
    task = await started_task(shepherd)
    conf = await gate(shepherd, task, pr_plan(), level=1)
    assert conf.status == "pending" and conf.quorum == 1 and len(conf.code) == 4
    assert [c.code for c in await shepherd.confirmations.pending(ALICE)] == [conf.code]
    prompt = await outbox(shepherd, f"confirmation:{conf.id}")
    assert [(r.channel, r.address, r.payload["state"]) for r in prompt] == [("console", "alice", "pending")]
    assert [b["action"] for b in prompt[0].payload["buttons"]] == ["approve", "reject"]

    result = await shepherd.confirmations.vote(BOB, conf.code.lower(), approve=True, comment="looks right")
    assert result.counted and result.confirmation.status == "approved"
    assert "approved by bob from slack" in result.text
    again = await shepherd.confirmations.vote(BOB, conf.code, approve=True)
    assert not again.counted and "already decided" in again.text

    task = await shepherd.tasks.get(ALICE, task.id)
    assert (task.decision_count, task.auto_resolved_count) == (1, 0)
    assert await events(shepherd, task.id) == ["confirmation.requested", "confirmation.approved"]
    rows = await outbox(shepherd, f"confirmation:{conf.id}")
    assert [r.payload["state"] for r in rows] == ["pending", "approved"]
    assert rows[1].payload["buttons"] == []


async def test_a_level_3_task_runs_it_by_policy_and_counts_it_as_auto_resolved(shepherd: Shepherd) -> None:
    task = await started_task(shepherd)
    conf = await gate(shepherd, task, pr_plan(), level=3)
    assert conf.status == "approved" and conf.decided_via == "policy" and conf.execution == "waiting"
    task = await shepherd.tasks.get(ALICE, task.id)
    assert (task.decision_count, task.auto_resolved_count) == (1, 1)
    assert await shepherd.confirmations.pending(ALICE) == []
    assert await outbox(shepherd, f"confirmation:{conf.id}") == []  # nobody needs to be asked
    refused = await gate(shepherd, task, pr_plan("c" * 40), level=0)
    assert refused.status == "rejected" and "only observes" in (refused.reason or "")


async def test_quorum_two_refuses_the_requester_ignores_duplicates_and_needs_two_others(shepherd: Shepherd) -> None:
    task = await started_task(shepherd, ALICE)
    plan = Plan(action="deploy.production", summary="deploy to production", target=Target(repo="acme/api"))
    conf = await gate(shepherd, task, plan, level=5, origin=Origin.PERSON)
    assert conf.status == "pending" and conf.quorum == 2 and conf.risk == "critical"

    with pytest.raises(Forbidden) as own:
        await shepherd.confirmations.vote(ALICE, conf.code, approve=True)
    assert own.value.code == "SELF_APPROVAL"
    assert "needs 2 approvals from people other than the requester" in own.value.message

    first = await shepherd.confirmations.vote(BOB, conf.code, approve=True)
    assert first.counted and first.confirmation.status == "pending" and "1/2" in first.text
    dup = await shepherd.confirmations.vote(BOB, conf.code, approve=True)
    assert not dup.counted and "already counted" in dup.text
    assert (await shepherd.confirmations.get(ALICE, conf.code)).approvals == 1

    second = await shepherd.confirmations.vote(CAROL, conf.code, approve=True)
    assert second.confirmation.status == "approved" and second.confirmation.approvals == 2
    assert await events(shepherd, task.id) == [
        "confirmation.requested", "confirmation.voted", "confirmation.approved"]


async def test_one_reject_rejects_and_a_decided_confirmation_stays_decided(shepherd: Shepherd) -> None:
    task = await started_task(shepherd, ALICE)
    plan = Plan(action="deploy.production", summary="deploy", target=Target(repo="acme/api"))
    conf = await gate(shepherd, task, plan, level=3, origin=Origin.PERSON)
    await shepherd.confirmations.vote(BOB, conf.code, approve=True)
    rejected = await shepherd.confirmations.vote(CAROL, conf.code, approve=False, comment="not on a Friday")
    assert rejected.confirmation.status == "rejected"
    assert "rejected by carol from telegram" in rejected.text and "not on a Friday" in rejected.text
    with pytest.raises(Conflict) as late:
        await shepherd.confirmations.vote(person(Role.ADMIN, name="dave"), conf.code, approve=True)
    assert late.value.code == "CONFIRMATION_DECIDED" and "rejected by carol" in late.value.message


async def test_only_approvers_decide_and_other_orgs_see_nothing(shepherd: Shepherd) -> None:
    task = await started_task(shepherd)
    conf = await gate(shepherd, task, pr_plan())
    for role in (Role.VIEWER, Role.OPERATOR):
        with pytest.raises(Forbidden, match="approve scope"):
            await shepherd.confirmations.vote(person(role), conf.code, approve=True)
    outsider = person(Role.ADMIN, org="globex")
    with pytest.raises(NotFound):
        await shepherd.confirmations.vote(outsider, conf.code, approve=True)
    assert await shepherd.confirmations.pending(outsider) == []
    assert (await shepherd.confirmations.get(ALICE, conf.code)).status == "pending"


async def test_a_reject_of_the_tasks_own_gate_ends_the_task_denied(shepherd: Shepherd) -> None:
    task = await started_task(shepherd)
    conf = await gate(shepherd, task, pr_plan())
    await shepherd.confirmations.vote(BOB, conf.code, approve=False, comment="wrong approach")
    task = await shepherd.tasks.get(ALICE, task.id)
    assert (task.status, task.outcome) == ("failed", "denied")
    assert "pr.open rejected by bob from slack: wrong approach" in task.evidence["reason"]
    assert task.evidence["exitCode"] == 0  # the turn's evidence stays


async def test_expiry_rejects_ends_the_task_denied_and_updates_the_prompt(shepherd: Shepherd) -> None:
    task = await started_task(shepherd)
    conf = await gate(shepherd, task, pr_plan())
    assert await shepherd.confirmations.expire_due() == 0  # not yet: 30 minutes by default
    assert conf.expires_at - conf.created_at == timedelta(minutes=30)
    async with shepherd.db.write() as session:
        await session.exec(update(Confirmation).where(col(Confirmation.id) == conf.id)
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
    assert await shepherd.confirmations.expire_due() == 1
    assert await shepherd.confirmations.expire_due() == 0
    conf = await shepherd.confirmations.get(ALICE, conf.code)
    assert (conf.status, conf.decided_via) == ("expired", "expiry")
    task = await shepherd.tasks.get(ALICE, task.id)
    assert (task.status, task.outcome, task.decision_count) == ("failed", "denied", 1)
    assert "pr.open expired" in task.evidence["reason"]
    rows = await outbox(shepherd, f"confirmation:{conf.id}")
    assert rows[-1].payload["state"] == "expired" and "expired at" in rows[-1].payload["text"]
    with pytest.raises(Conflict, match="expired"):
        await shepherd.confirmations.vote(BOB, conf.code, approve=True)


async def test_a_vote_after_the_expiry_time_but_before_the_sweep_is_too_late(shepherd: Shepherd) -> None:
    task = await started_task(shepherd)
    conf = await gate(shepherd, task, pr_plan())
    async with shepherd.db.write() as session:
        await session.exec(update(Confirmation).where(col(Confirmation.id) == conf.id)
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
    with pytest.raises(Conflict, match="expired"):
        await shepherd.confirmations.vote(BOB, conf.code, approve=True)
    assert (await shepherd.tasks.get(ALICE, task.id)).outcome == "denied"


async def test_a_follow_up_or_a_stop_voids_what_the_task_waited_on(shepherd: Shepherd) -> None:
    task = await started_task(shepherd)
    conf = await gate(shepherd, task, pr_plan())
    await shepherd.tasks.send(ALICE, task.id, "also update the changelog")
    conf = await shepherd.confirmations.get(ALICE, conf.code)
    assert conf.status == "void" and "follow-up" in (conf.reason or "")
    assert (await shepherd.tasks.get(ALICE, task.id)).status == "pending"

    other = await started_task(shepherd)
    conf2 = await gate(shepherd, other, pr_plan("d" * 40))
    stopped = await shepherd.tasks.stop(ALICE, other.id)
    assert stopped.status == "cancelled"
    assert (await shepherd.confirmations.get(ALICE, conf2.code)).status == "void"
    with pytest.raises(Conflict, match="void"):
        await shepherd.confirmations.vote(BOB, conf2.code, approve=True)


async def test_approve_and_reject_at_the_same_moment_from_two_pools_make_one_decision(
    two_cores: tuple[Shepherd, Shepherd],
) -> None:
    """Two connection pools stand for two server processes (the CLI test runs two real ones)."""
    a, b = two_cores
    for _ in range(5):
        task = await started_task(a)
        conf = await gate(a, task, pr_plan())
        results = await asyncio.gather(
            a.confirmations.vote(BOB, conf.code, approve=True),
            b.confirmations.vote(CAROL, conf.code, approve=False),
            return_exceptions=True,
        )
        decided = await a.confirmations.get(ALICE, conf.code)
        counted = [r for r in results if not isinstance(r, BaseException) and r.counted]
        refused = [r for r in results if isinstance(r, Conflict)]
        assert len(counted) == 1 and len(refused) == 1, results
        assert counted[0].confirmation.status == decided.status
        assert decided.status in ("approved", "rejected")
        decisions = [e for e in await events(a, task.id) if e != "confirmation.requested"]
        assert decisions == [f"confirmation.{decided.status}"]
        assert (await a.tasks.get(ALICE, task.id)).decision_count == 1


async def test_a_task_token_opens_only_its_own_task_while_it_runs(shepherd: Shepherd) -> None:
    from core.autonomy.questions import new_task_token

    task = await started_task(shepherd, status="running")
    token, digest = new_task_token()
    async with shepherd.db.write() as session:
        await session.exec(update(Task).where(col(Task.id) == task.id).values(callback_hash=digest))
    other = await started_task(shepherd, status="running")
    plan = Plan(action="db.migrate", summary="run the migration")
    asked = await shepherd.questions.ask(task.id, token, plan)
    assert asked.status == "pending" and asked.risk == "high" and asked.origin == "agent"
    assert asked.requester_id == task.owner_id
    for task_id, secret in ((other.id, token), (task.id, token + "x"), (task.id, "")):
        with pytest.raises(Unauthorized) as refused:
            await shepherd.questions.ask(task_id, secret, plan)
        assert refused.value.code == "INVALID_TASK_TOKEN"
    async with shepherd.db.write() as session:
        await session.exec(update(Task).where(col(Task.id) == task.id).values(status="completed"))
    with pytest.raises(Unauthorized):
        await shepherd.questions.asked(task.id, token, asked.code)


async def test_person_requests_count_the_requesters_own_vote_when_one_decides(shepherd: Shepherd) -> None:
    task = await started_task(shepherd, ALICE, status="completed")
    plan = Plan(action="pr.merge", summary="merge #1", target=Target(repo="acme/api", head="a" * 40),
                params={"number": 1})
    gate_ = await shepherd.confirmations.request(ALICE, plan, task=task, agent=None, project_id=None)
    assert gate_.confirmation.status == "approved" and gate_.confirmation.decided_by == "alice"
    operator = person(Role.OPERATOR, name="olga")
    waits = await shepherd.confirmations.request(operator, plan, task=task, agent=None, project_id=None)
    assert waits.confirmation.status == "pending"


async def test_threads_get_the_prompt_and_a_new_thread_gets_the_decision(shepherd: Shepherd) -> None:
    task = await started_task(shepherd)
    conf = await gate(shepherd, task, pr_plan())
    async with shepherd.db.write() as session:
        await bind_thread(session, "acme", "slack", "C1:1700000000.1", task_id=task.id)
    await shepherd.confirmations.vote(BOB, conf.code, approve=True)
    rows = await outbox(shepherd, f"confirmation:{conf.id}")
    assert sorted((r.channel, r.payload["state"]) for r in rows) == [
        ("console", "approved"), ("console", "pending"), ("slack", "approved")]
    assert Status.APPROVED.value == "approved"
