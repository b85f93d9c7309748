"""Confirmations: one gated action on one target, decided by policy or by people (ARCHITECTURE section 3).

A confirmation has a short code people type (`K7P2`) and is bound to a plan hash: the action, its target
(repo, branch, head SHA) and its parameters. If the target changes before the action runs, the
confirmation is void and a new one is asked. Rules, all enforced here:

- only people with the policy's approver role (approver or admin) decide;
- with a quorum above 1 the requester may not approve (the task's owner, for what its agent asks);
- one reject rejects; a second vote of the same person is ignored;
- one decision, however many clicks, channels or replicas: the row is locked while a vote is counted
  (FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE on SQLite) and a decided confirmation stays decided;
- unanswered, it expires to its safe default (rejected) after the policy's expiry (30 minutes);
- every step is an event; prompts and decisions go to the task's threads through the outbox, in the
  same transaction;
- a pending one is reminded every `remind_after_s` (core.autonomy.reminders: `remind_at` is its timer), each
  reminder a message of its own; a vote or the decision edits the prompt and every reminder posted.

Origins: `policy` (Shepherd's own gate, e.g. opening the pull request after a turn), `person` (a command
such as `merge`), `agent` (the agent asked through `shepherd ask`; the agent acts itself once approved).
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.agents import DEFAULT_LEVEL, Agents, suspensions
from core.autonomy.plans import MAX_SUMMARY, Execution, Origin, Plan, Status, checked_plan
from core.autonomy.policy import Decision, Policy, PolicyStore, Verdict
from core.autonomy.prompts import reminder, reminder_key, render
from core.autonomy.questions import note_waiting
from core.channels.outbox import RowStatus, enqueue, threads_for
from core.clock import as_utc, utcnow
from core.errors import Conflict, Forbidden, NotFound
from core.ids import new_id
from core.people.access import Principal, Role, Scope
from core.projects import Projects
from core.sessions.rows import in_private_session, shown_confirmations
from core.store.db import Database
from core.store.events import record
from core.store.models import Agent, MessageRef, Outbox, Project, Task, Thread, Vote
from core.store.models import Confirmation as Confirmation  # the record this service returns
from core.tasks import holds
from core.tasks import state as task_state
from core.tasks.holds import HELD_ACTIONS
from core.tasks.state import GATED, TaskStatus
from core.textcheck import free_text
from core.wakeup import Wakeup

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no I, L, O, 0, 1: read aloud and typed without doubt
CODE_LENGTH = 4
MAX_COMMENT = 1000
REMIND_AFTER_S = 600.0  # SHEPHERD_REMIND_AFTER's default


@dataclass(frozen=True)
class Gate:
    confirmation: Confirmation
    decision: Decision


@dataclass(frozen=True)
class VoteResult:
    confirmation: Confirmation
    counted: bool
    text: str


class Confirmations:
    def __init__(
        self, db: Database, policies: PolicyStore | None = None, *, runs_due: Wakeup | None = None,
        remind_after_s: float = REMIND_AFTER_S,
    ) -> None:
        self.db = db
        self.remind_after_s = remind_after_s  # pending this long after it was asked: reminded, and again as long
        self.policies = policies or PolicyStore()
        self.agents = Agents(db)
        self.projects = Projects(db)
        self.runs_due = runs_due or Wakeup()  # an approved action: a runner in this process carries it out now

    # --- policy ------------------------------------------------------------------------------------

    async def policy_for(self, session: AsyncSession, project_id: str | None) -> Policy:
        project = await session.get(Project, project_id) if project_id else None
        return self.policies.for_project(project.name if project else None)

    async def explain(
        self, principal: Principal, action: str, *, agent: str | None = None, level: int | None = None,
        project: str | None = None,
    ) -> tuple[Decision, Agent | None]:
        """Would `action` run, ask or be refused for this agent (or at this level), and why."""
        principal.require(Scope.READ, "explaining the policy")
        found: Agent | None = None
        project_name: str | None = None
        if agent:
            view = await self.agents.get(principal, agent)
            found, project_name = view.agent, view.project.name if view.project else None
        if project:
            project_name = (await self.projects.get(principal, project)).name
        effective = level if level is not None else (found.autonomy_level if found else DEFAULT_LEVEL)
        return self.policies.for_project(project_name).decide(action, effective), found

    # --- asking ------------------------------------------------------------------------------------

    async def gate(
        self, session: AsyncSession, *, org_id: str, plan: Plan, origin: Origin, level: int,
        requester_id: str, requester_name: str, task: Task | None = None, agent_id: str | None = None,
        project_id: str | None = None, asked: bool = False,
    ) -> Gate:
        """Decide `plan` by policy, in the caller's transaction: approved (runs), rejected (refused) or
        pending (a confirmation people decide, announced to the task's threads). `asked`: people decide at
        every level, whatever the policy would let run (whether a budget is extended, a loop goes on)."""
        policy = await self.policy_for(session, project_id)
        decision = policy.decide(plan.action, level, declared=plan.declared)
        if asked:
            decision = replace(decision, verdict=Verdict.ASK, reason=f"{plan.action}: people decide whether the "
                               f"work goes on ({decision.quorum} approval{'s' if decision.quorum > 1 else ''})")
        now = utcnow()
        conf = Confirmation(
            id=new_id("conf"), org_id=org_id, code=await self._new_code(session, org_id),
            task_id=task.id if task else None, agent_id=agent_id, project_id=project_id,
            action=decision.action, risk=decision.risk.label, level=level, origin=origin.value,
            summary=plan.summary[:MAX_SUMMARY], target=plan.target.to_json(), params=plan.params, plan_hash=plan.hash,
            requester_id=requester_id, requester_name=requester_name, quorum=decision.quorum,
            status=Status.PENDING.value, created_at=now, expires_at=now + timedelta(seconds=policy.expiry_s),
        )
        if decision.verdict is Verdict.ASK:
            conf.remind_at = next_reminder(conf, self.remind_after_s, now)
        system = Principal.system(org_id, "policy")
        if decision.verdict is not Verdict.ASK:
            approved = decision.verdict is Verdict.RUN
            conf.status = (Status.APPROVED if approved else Status.REJECTED).value
            conf.decided_by, conf.decided_via, conf.decided_at = "policy", "policy", now
            conf.reason = decision.reason[:1000]
            if approved and origin is not Origin.AGENT:
                conf.execution = Execution.WAITING.value
            if task is not None:
                task.decision_count += 1
                task.auto_resolved_count += 1
                session.add(task)
        session.add(conf)
        await session.flush()
        name = {Verdict.RUN: "confirmation.auto_approved", Verdict.REFUSE: "confirmation.refused",
                Verdict.ASK: "confirmation.requested"}[decision.verdict]
        await record(session, system, "confirmation", name, agent_id=agent_id, task_id=conf.task_id,
                     payload=self._payload(conf, reason=decision.reason))
        if decision.verdict is Verdict.ASK:
            await self.announce(session, conf, task)
        return Gate(conf, decision)

    async def request(
        self, principal: Principal, plan: Plan, *, task: Task | None, agent: Agent | None,
        project_id: str | None,
    ) -> Gate:
        """A person asks for an action by command. Their command is their own vote when they may approve
        and one vote decides (quorum 1); otherwise approvers decide, as for anything else."""
        principal.require(Scope.WRITE, f"asking for {plan.action}")
        plan = checked_plan(plan)
        requester_id = principal.identity
        async with self.db.write() as session:
            level = agent.autonomy_level if agent else 1
            gate = await self.gate(
                session, org_id=principal.org_id, plan=plan, origin=Origin.PERSON, level=level,
                requester_id=requester_id, requester_name=principal.name, task=task,
                agent_id=agent.id if agent else None, project_id=project_id,
            )
        conf = gate.confirmation
        if conf.status == Status.PENDING and conf.quorum == 1 and principal.can(Scope.APPROVE) and principal.is_person:
            with contextlib.suppress(Forbidden):  # a project whose policy lets only admins decide
                result = await self.vote(principal, conf.id, approve=True, comment="by their own command")
                return Gate(result.confirmation, gate.decision)
        return gate

    async def _new_code(self, session: AsyncSession, org_id: str) -> str:
        for _ in range(20):
            code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
            taken = (await session.exec(
                select(Confirmation.id).where(Confirmation.org_id == org_id, Confirmation.code == code))).first()
            if taken is None:
                return code
        return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH + 2))

    @staticmethod
    def _payload(conf: Confirmation, **extra: Any) -> dict[str, Any]:
        return {"confirmationId": conf.id, "code": conf.code, "action": conf.action, "risk": conf.risk,
                "status": conf.status, "origin": conf.origin, "planHash": conf.plan_hash, **extra}

    @staticmethod
    async def suspended(session: AsyncSession, agent_id: str | None, project_id: str | None) -> bool:
        """Is the agent (or its project's agent) suspended? A suspended agent runs no action."""
        held = await suspensions(session, [agent_id], [project_id])
        return held.blocker(agent_id, project_id) is not None

    # --- reading -----------------------------------------------------------------------------------

    async def pending(
        self, principal: Principal, *, task_id: str | None = None, limit: int = 100
    ) -> list[Confirmation]:
        principal.require(Scope.READ, "listing confirmations")
        query = select(Confirmation).where(Confirmation.org_id == principal.org_id,
                                           Confirmation.status == Status.PENDING.value, *shown_confirmations(principal))
        if task_id:
            query = query.where(Confirmation.task_id == task_id)
        async with self.db.read() as session:
            rows = await session.exec(query.order_by(col(Confirmation.created_at), col(Confirmation.id))
                                      .limit(max(1, min(limit, 500))))
            return list(rows)

    async def history(
        self, principal: Principal, *, status: str | None = None, task_id: str | None = None, limit: int = 100
    ) -> list[Confirmation]:
        """Decided confirmations of one status (None: every decided one), newest first."""
        principal.require(Scope.READ, "listing confirmations")
        query = select(Confirmation).where(Confirmation.org_id == principal.org_id, *shown_confirmations(principal),
                                           Confirmation.status == status if status is not None
                                           else Confirmation.status != Status.PENDING.value)
        if task_id:
            query = query.where(Confirmation.task_id == task_id)
        async with self.db.read() as session:
            rows = await session.exec(query.order_by(col(Confirmation.created_at).desc(), col(Confirmation.id).desc())
                                      .limit(max(1, min(limit, 500))))
            return list(rows)

    async def get(self, principal: Principal, ref: str) -> Confirmation:
        principal.require(Scope.READ, "reading a confirmation")
        async with self.db.read() as session:
            return await self._find(session, principal, ref)

    @staticmethod
    async def _find(session: AsyncSession, principal: Principal, ref: str, *, lock: bool = False) -> Confirmation:
        ref = (ref or "").strip()
        key = col(Confirmation.id) == ref if ref.startswith("conf-") else col(Confirmation.code) == ref.upper()
        # one asked for a task of someone else's private session is not found: not read, not decided
        query = select(Confirmation).where(Confirmation.org_id == principal.org_id, key,
                                           *shown_confirmations(principal))
        if lock:  # read again under the lock: what an earlier read of this session saw may be stale
            query = query.with_for_update().execution_options(populate_existing=True)
        conf = (await session.exec(query)).first()
        if conf is None:
            raise NotFound(f"no confirmation {ref!r}: `pending` lists the open ones", code="CONFIRMATION_NOT_FOUND")
        return conf

    async def task_name(self, conf: Confirmation) -> str | None:
        if not conf.task_id:
            return None
        async with self.db.read() as session:
            task = await session.get(Task, conf.task_id)
            return task.name if task else None

    # --- deciding ----------------------------------------------------------------------------------

    async def vote(
        self, principal: Principal, ref: str, *, approve: bool, comment: str = "", via: str | None = None
    ) -> VoteResult:
        """Count one person's vote; the confirmation is decided when one rejects or the quorum approves."""
        result = await self._vote(principal, ref, approve=approve, comment=comment, via=via)
        held = result.confirmation.action in HELD_ACTIONS and result.confirmation.status != Status.PENDING
        if result.counted and (result.confirmation.execution == Execution.WAITING or held):
            self.runs_due()  # committed: a runner in this process carries it out now, others within a second
        return result

    async def _vote(
        self, principal: Principal, ref: str, *, approve: bool, comment: str, via: str | None
    ) -> VoteResult:
        principal.require(Scope.APPROVE, "deciding a confirmation")
        principal.require_person("approving or rejecting")  # one voter per person: a token of nobody is no one
        comment = free_text((comment or "").strip(), "the comment")[:MAX_COMMENT]
        via = via or principal.channel
        voter_id = principal.identity
        async with self.db.write() as session:
            # locks in one order everywhere (the task, then its confirmation), so that a vote and a stop
            # of the same task at once wait for each other instead of deadlocking
            seen = await self._find(session, principal, ref)
            if seen.task_id:
                await session.get(Task, seen.task_id, with_for_update=True)
            conf = await self._find(session, principal, ref, lock=True)
            policy = await self.policy_for(session, conf.project_id)
            if policy.approver_role is Role.ADMIN:
                principal.require(Scope.ADMIN, f"deciding {conf.code} (this project's policy: admins decide)")
            verb = "approve" if approve else "reject"
            if conf.status != Status.PENDING or as_utc(conf.expires_at) > utcnow():
                return await self._count(session, principal, conf, approve=approve, comment=comment, via=via,
                                         voter_id=voter_id)
            # past its time and not swept yet: the expiry is the decision (committed), the vote comes too late
            await self._decide(session, conf, Status.EXPIRED, "expiry", "expiry", "no decision before it expired")
        raise Conflict(f"cannot {verb} {conf.code}: {render(conf).text}", code="CONFIRMATION_DECIDED")

    async def _count(
        self, session: AsyncSession, principal: Principal, conf: Confirmation, *, approve: bool, comment: str,
        via: str, voter_id: str,
    ) -> VoteResult:
        verb = "approve" if approve else "reject"
        if conf.status != Status.PENDING:
            same = (conf.status == Status.APPROVED) == approve and conf.status in (Status.APPROVED, Status.REJECTED)
            said = render(conf).text
            if same:
                return VoteResult(conf, False, f"already decided: {said}")
            raise Conflict(f"cannot {verb} {conf.code}: {said}", code="CONFIRMATION_DECIDED")
        if approve and conf.quorum > 1 and voter_id == conf.requester_id:
            raise Forbidden(
                f"you requested {conf.code} ({conf.action}); it needs {conf.quorum} approvals from people "
                "other than the requester", code="SELF_APPROVAL",
            )
        earlier = (await session.exec(select(Vote).where(
            Vote.confirmation_id == conf.id, Vote.voter_id == voter_id))).first()
        if earlier is not None:
            return VoteResult(conf, False, f"your vote on {conf.code} was already counted "
                                           f"({'approve' if earlier.approve else 'reject'}); "
                                           f"{conf.approvals}/{conf.quorum} approvals")
        session.add(Vote(confirmation_id=conf.id, voter_id=voter_id, voter_name=principal.name, via=via,
                         approve=approve, comment=comment))
        if not approve:
            await self._decide(session, conf, Status.REJECTED, principal.name, via, comment or None)
            return VoteResult(conf, True, render(conf).text)
        conf.approvals += 1
        if conf.approvals >= conf.quorum:
            await self._decide(session, conf, Status.APPROVED, principal.name, via, comment or None)
            return VoteResult(conf, True, render(conf).text)
        session.add(conf)
        await record(session, principal, "confirmation", "confirmation.voted", agent_id=conf.agent_id,
                     task_id=conf.task_id, payload=self._payload(conf, approvals=conf.approvals))
        await self.announce(session, conf)
        return VoteResult(conf, True, f"{conf.code}: your approval is counted, {conf.approvals}/{conf.quorum}")

    async def _decide(
        self, session: AsyncSession, conf: Confirmation, status: Status, by: str, via: str, reason: str | None
    ) -> None:
        """Settle a pending confirmation (locked by the caller): the counters, the task, the event, the news."""
        now = utcnow()
        first_decision = conf.status == Status.PENDING  # voiding an approved one is not a second decision
        conf.status, conf.decided_by, conf.decided_via, conf.decided_at = status.value, by, via, now
        conf.reason = reason
        conf.remind_at = None  # decided: nobody is reminded of it any more
        held = conf.action in HELD_ACTIONS  # nothing to carry out: the decision itself is what follows
        if status is Status.APPROVED and conf.origin != Origin.AGENT:
            conf.execution = (Execution.DONE if held else Execution.WAITING).value
        session.add(conf)
        task = await session.get(Task, conf.task_id, with_for_update=True) if conf.task_id else None
        if task is not None:
            task.decision_count += 1 if first_decision else 0
            if held:
                await holds.decided(session, self, conf, task, status, by)
            elif status in (Status.REJECTED, Status.EXPIRED) and conf.origin == Origin.POLICY \
                    and TaskStatus(task.status) in GATED:
                why = f"{conf.action} {status.value}" + (f" by {by} from {via}" if status is Status.REJECTED else "")
                if reason:
                    why += f": {reason}"
                task_state.deny(task, why, conf.code)
            elif status is Status.APPROVED and TaskStatus(task.status) in GATED:
                task_state.note_gate(task, f"{conf.code} approved by {by}: running {conf.action}")
            elif conf.origin == Origin.AGENT:
                how = f"{status.value} by {by}" if status in (Status.APPROVED, Status.REJECTED) else status.value
                await note_waiting(session, task, f"{conf.code} {how}; the agent goes on")
            session.add(task)
        system = Principal(org_id=conf.org_id, name=by, scopes=frozenset(), channel=via)
        await record(session, system, "confirmation", f"confirmation.{status.value}", agent_id=conf.agent_id,
                     task_id=conf.task_id, payload=self._payload(conf, reason=reason))
        await self.announce(session, conf, task)

    async def announce(self, session: AsyncSession, conf: Confirmation, task: Task | None = None) -> None:
        if task is None and conf.task_id:
            task = await session.get(Task, conf.task_id)
        message = render(conf, task.name if task else None)
        # a private session's question is asked in its own threads only, not in its project's shared channels
        shared = None if task is not None and await in_private_session(session, task.session_id) else conf.project_id
        threads = await threads_for(session, conf.org_id, task_id=conf.task_id, project_id=shared, key=message.key)
        await enqueue(session, threads, message)
        if conf.reminders:
            await self._announce_reminders(session, conf, task.name if task else None)

    @staticmethod
    async def _announce_reminders(session: AsyncSession, conf: Confirmation, task_name: str | None) -> None:
        """Every reminder of `conf` says what the prompt says now, where it was posted or is on its way (a
        reminder shows buttons too: none may be left looking alive once the question is answered)."""
        keys = {reminder_key(conf.id, n): n for n in range(1, conf.reminders + 1)}
        # where its reminders can be: the task's threads and the project's approval channels, ended ones too
        near = [col(Thread.task_id) == conf.task_id] if conf.task_id else []
        if conf.project_id:
            near.append((col(Thread.project_id) == conf.project_id) & col(Thread.task_id).is_(None))
        if not near:
            return
        threads = {t.id: t for t in await session.exec(select(Thread).where(Thread.org_id == conf.org_id, or_(*near)))}
        if not threads:
            return
        shown = set(await session.exec(select(MessageRef.thread_id, MessageRef.key).where(
            col(MessageRef.thread_id).in_(list(threads)), col(MessageRef.key).in_(list(keys)))))
        shown |= set(await session.exec(select(Outbox.thread_id, Outbox.key).where(
            Outbox.status == RowStatus.PENDING.value, col(Outbox.thread_id).in_(list(threads)),
            col(Outbox.key).in_(list(keys)))))
        now = utcnow()
        for thread_id, key in sorted(shown):
            await enqueue(session, [threads[thread_id]], reminder(conf, task_name, keys[key], now))

    async def void(self, session: AsyncSession, conf: Confirmation, reason: str) -> None:
        """The plan changed (a new head, a follow-up): this confirmation can no longer be acted on."""
        await self._decide(session, conf, Status.VOID, "shepherd", "shepherd", reason)

    async def void_open(self, session: AsyncSession, task: Task, reason: str) -> int:
        """Void the task's confirmations that could still lead to an action: pending ones and approved ones
        not yet executed."""
        rows = list(await session.exec(select(Confirmation).where(
            Confirmation.task_id == task.id,
            (col(Confirmation.status) == Status.PENDING.value)
            | ((col(Confirmation.status) == Status.APPROVED.value)
               & (col(Confirmation.execution) == Execution.WAITING.value)),
        ).with_for_update()))
        for conf in rows:
            conf.execution = None
            await self._decide(session, conf, Status.VOID, "shepherd", "shepherd", reason)
        return len(rows)

    async def expiry(self, now: datetime) -> str:
        """The scheduler's `expiry` job: confirmations due by `now` expire to their safe default (a reject)."""
        expired = await self.expire_due(now=now)
        return f"expired {expired} confirmation{'' if expired == 1 else 's'}" if expired else "nothing due"

    async def expire_due(self, *, now: datetime | None = None, limit: int = 100) -> int:
        """Pending confirmations past their expiry at `now` (default: the clock) become `expired` (a reject)."""
        now = now or utcnow()
        async with self.db.read() as session:
            due = list(await session.exec(select(Confirmation.id).where(
                Confirmation.status == Status.PENDING.value, col(Confirmation.expires_at) <= now,
            ).limit(limit)))
        expired = 0
        for conf_id in due:
            async with self.db.write() as session:
                seen = await session.get(Confirmation, conf_id)
                if seen is not None and seen.task_id:  # the task first, as everywhere
                    await session.get(Task, seen.task_id, with_for_update=True)
                conf = await session.get(Confirmation, conf_id, with_for_update=True, populate_existing=True)
                if conf is None or conf.status != Status.PENDING or as_utc(conf.expires_at) > now:
                    continue
                minutes = max(1, round((as_utc(conf.expires_at) - as_utc(conf.created_at)).total_seconds() / 60))
                await self._decide(session, conf, Status.EXPIRED, "expiry", "expiry",
                                   f"no decision within {minutes} min")
                expired += 1
        return expired




def next_reminder(conf: Confirmation, every_s: float, now: datetime) -> datetime | None:
    """When `conf` is next reminded: the first of created + every_s, + 2 every_s, ... after `now` (reminders
    missed while nothing ran are not made up), or None when that is not before its expiry."""
    if every_s <= 0:
        return None
    created = as_utc(conf.created_at)
    due = created + timedelta(seconds=every_s * (int((as_utc(now) - created).total_seconds() // every_s) + 1))
    return due if due < as_utc(conf.expires_at) else None
