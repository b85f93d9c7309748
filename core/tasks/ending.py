"""The end of a turn: its outcome and evidence, in one transaction with what follows from it. A successful
turn with changes waits on the gate (a pull request or a pushed branch, as policy or people decide); one with
follow-ups waiting makes its task pending again; a task people deleted is removed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from sqlmodel.ext.asyncio.session import AsyncSession

from core.autonomy.plans import Origin, Plan, Status, Target, describe
from core.autonomy.policy import PolicyError
from core.autonomy.questions import pending_of
from core.people.access import Principal
from core.runners import RunExit
from core.runners.repos import repo_kind
from core.runners.workspace import commit_all
from core.sessions import iterations
from core.shepherd import Shepherd
from core.store.events import record
from core.store.models import Agent, Confirmation, Task
from core.tasks import extensions
from core.tasks import state as task_state
from core.tasks.evidence import DiffStats, Evidence
from core.tasks.group import GroupWrites
from core.tasks.output import TaskOutput
from core.tasks.rows import agent_after, delete_rows
from core.tasks.state import GATED, Control, Outcome, TaskStatus

if TYPE_CHECKING:
    from core.tasks.turns import Turn

log = logging.getLogger(__name__)

EVIDENCE_LINES = 10


async def plan_after_turn(task: Task, workspace: Path) -> Plan | None:
    """What a turn's changes should become: a pull request (GitHub repositories) or a pushed branch (other
    remote repositories, and a task that works on its base branch in place: a pull request's own head, whose
    pull request exists already), with the changes committed. A local path or an empty workspace keeps its
    changes."""
    if not task.repo or repo_kind(task.repo) not in ("github", "url"):
        return None
    head = await commit_all(workspace, f"{task.display_name}\n\nShepherd task {task.name} ({task.id})")
    in_place = bool(task.work_branch) and task.work_branch == task.base_branch
    action = "pr.open" if repo_kind(task.repo) == "github" and not in_place else "branch.push"
    target = Target(repo=task.repo, branch=task.work_branch or f"shepherd/{task.name}",
                    base=task.base_branch or "main", head=head)
    params: dict[str, str] = {}
    if action == "pr.open":
        params = {"title": task.display_name[:200],
                  "body": f"Opened by Shepherd for task `{task.name}`, started by {task.owner_name}.\n\n"
                          f"> {task.prompt[:2000]}"}
    return Plan(action=action, summary=describe(action, target, params), target=target, params=dict(params))


class TurnEnd:
    def __init__(self, shepherd: Shepherd, output: TaskOutput, runner_id: str, wake: Callable[[], None]) -> None:
        self.shepherd = shepherd
        self.db = shepherd.db
        self.writes = GroupWrites(self.db)  # what turns ending (or following up) together write, in one commit
        self.output = output
        self.runner_id = runner_id
        self.wake = wake

    async def finish(
        self, turn: Turn, outcome: Outcome, exit_: RunExit | None, diff: DiffStats, reason: str,
        plan: Plan | None = None, question: str | None = None,
    ) -> None:
        """End the turn with `outcome`; `exit_` is None when no agent process ran."""
        await self.output.flush()
        evidence = Evidence(
            exit_code=exit_.exit_code if exit_ else None, duration_s=exit_.duration_s if exit_ else 0.0,
            diff=diff, last_lines=tuple(turn.last_lines)[-EVIDENCE_LINES:], reason=reason, dropped_lines=turn.dropped,
        )

        async def end(session: AsyncSession) -> str | None:
            """The turn's end written; returns the workspace to remove (a task people deleted)."""
            task = await session.get(Task, turn.task_id, with_for_update=True)
            if task is None:
                return None
            system = Principal.system(task.org_id)
            deleting = task.control == Control.DELETE or turn.stop_reason == Control.DELETE
            if not deleting and not task_state.held_by(task, self.runner_id):
                # ended meanwhile by a runner that thought this one dead (or claimed again since): its word stands
                log.warning("task %s is no longer this runner's (%s): its turn's end (%s) is only recorded",
                            task.id, task.status, outcome.value)
                await record(session, system, "task", "task.turn_discarded", agent_id=task.agent_id,
                             task_id=task.id, payload={"outcome": outcome.value, "evidence": evidence.to_json()})
                return None
            # the turn is over: what its agent asked and nobody decided can no longer be waited for
            pending = await pending_of(session, task)  # read once for the questions and an extension
            await self.shepherd.questions.void_questions(session, task, f"the agent's turn ended ({outcome.value})",
                                                         pending)
            if deleting:
                workspace = task.workspace
                await delete_rows(session, task)
                await record(session, system, "task", "task.deleted", agent_id=task.agent_id, task_id=task.id)
                return workspace
            await self._settle(session, task, turn, outcome, evidence, exit_ is None, plan, question, pending)
            return None

        # with the other turns ending now, in one commit (a hundred tasks ending together were a hundred fsyncs)
        workspace = await self.writes.run(end)
        self.shepherd.output_written()  # who follows the task live (an invoke's stream, logs?follow) reads its end now
        if workspace:
            await asyncio.to_thread(self.shepherd.tasks.remove_workspace, workspace)
            await self.shepherd.tasks.discard_remote(turn.task_id)

    async def _settle(
        self, session: AsyncSession, task: Task, turn: Turn, outcome: Outcome, evidence: Evidence,
        never_ran: bool, plan: Plan | None, question: str | None, pending: list[Confirmation],
    ) -> None:
        system = Principal.system(task.org_id)
        # (before the task changes: its read would flush them, and the task be written twice)
        await extensions.void_pending(session, self.shepherd.confirmations, task, f"the turn ended ({outcome.value})",
                                      pending)
        if turn.session_ref:
            task.session_ref = turn.session_ref
        # what the turn used of its budget: its wall time (pauses left out) and what its agent reported spending
        task.run_seconds += turn.running_s()
        if turn.cost is not None:
            task.cost_usd = (task.cost_usd or 0.0) + turn.cost
        follow_ups = list(task.pending_inputs)
        # a loop task's iteration ended: the loop ends, or its next iteration follows (the changes wait for its end)
        iteration = await iterations.turn_ended(session, task, outcome, evidence)
        if iteration is not None:
            plan = None
        if plan is not None and not follow_ups and TaskStatus(task.status) is TaskStatus.RUNNING:
            # the turn is done; what it produced leaves the workspace only through the gate
            task_state.await_gate(task, evidence, plan.summary)
            session.add(task)
            await agent_after(session, task, outcome)
            await record(session, system, "task", "task.turn_finished", agent_id=task.agent_id, task_id=task.id,
                         payload={"outcome": outcome.value, "turn": task.turns, "evidence": evidence.to_json(),
                                  "next": plan.action})
            await self.gate(session, task, plan)
            return
        task_state.finish_turn(task, outcome, evidence, question=question)
        dropped_inputs = 0
        if follow_ups and (never_ran or outcome in (Outcome.CANCELLED, Outcome.INTERRUPTED)):
            # the turn never ran, or people ended it: waiting follow-ups are not delivered
            task.pending_inputs, dropped_inputs = [], len(follow_ups)
        session.add(task)
        await agent_after(session, task, outcome)
        await record(session, system, "task", "task.finished", agent_id=task.agent_id, task_id=task.id,
                     payload={"outcome": outcome.value, "turn": task.turns, "evidence": evidence.to_json(),
                              "droppedInputs": dropped_inputs})
        if iteration is not None:
            await iterations.queue(session, self.shepherd.confirmations, task, iteration)
        if task.pending_inputs and TaskStatus(task.status) not in GATED:
            # follow-ups sent while the agent worked (or the loop's next iteration): the next turn waits for a
            # runner like any other, unless its budget is used up: then people are asked to extend it
            waiting = f"{outcome.value}; next: {len(task.pending_inputs)} follow-up(s) waiting"
            if not await extensions.next_turn(session, self.shepherd.confirmations, task, waiting):
                await iterations.waiting_on_budget(session, task)

    async def gate(self, session: AsyncSession, task: Task, plan: Plan) -> None:
        """Ask the policy about an awaiting task's own next action, in the transaction that ends its turn."""
        agent = await session.get(Agent, task.agent_id) if task.agent_id else None
        level = agent.autonomy_level if agent is not None else task.autonomy_level
        try:
            gate = await self.shepherd.confirmations.gate(
                session, org_id=task.org_id, plan=plan, origin=Origin.POLICY, level=level,
                requester_id=task.owner_id, requester_name=task.owner_name, task=task, agent_id=task.agent_id,
                project_id=task.project_id,
            )
        except PolicyError as exc:  # nothing runs on a policy nobody can read; the message names the key
            task_state.settle(task, Outcome.FAILED,
                              replace(Evidence.of(task), reason=f"{plan.action} not decided: {exc.message}"))
            session.add(task)
            return
        conf = gate.confirmation
        if conf.status == Status.PENDING:
            task_state.note_gate(task, f"waiting for approval {conf.code}: {plan.summary}")
        elif conf.status == Status.APPROVED:
            task_state.note_gate(task, f"{conf.code} approved by policy (L{level}): {plan.summary}")
            self.wake()
        else:
            reason = (f"{plan.action} refused: {gate.decision.reason}; the changes stay committed on "
                      f"{plan.target.branch} in the workspace")
            task_state.settle(task, Outcome.SUCCEEDED, replace(Evidence.of(task), reason=reason,
                                                               confirmation=conf.code))
        session.add(task)
