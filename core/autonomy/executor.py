"""Carrying out approved actions: claim an approved confirmation (one runner wins), run it through
core.autonomy.actions.Executor, and settle it: done, failed, tried again later with backoff (`after_attempt`, pure),
or void when its target moved (a task's own action is then planned and gated anew)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import replace
from pathlib import Path

from sqlalchemy import update
from sqlmodel import col, select

from core.autonomy.actions import ActionError, Executor, PlanChanged
from core.autonomy.plans import START_ACTIONS, Execution, Origin, Plan, Status
from core.clock import utcnow
from core.people.access import Principal
from core.runners.workspace import WorkspaceError
from core.shepherd import Shepherd
from core.store.events import record
from core.store.models import Agent, Confirmation, Task
from core.tasks import state as task_state
from core.tasks.config import RunnerConfig
from core.tasks.ending import TurnEnd, plan_after_turn
from core.tasks.evidence import ActionRecord, ActionResult, Evidence, TaskAction
from core.tasks.state import GATED, Outcome, TaskStatus

log = logging.getLogger(__name__)

NEEDS_WORKSPACE = ("branch.push", "pr.open", "deploy.")
WINDOW = 500  # approved actions looked at per pass: those this runner must skip cannot starve the rest
BACKOFF_S = 5.0


def after_attempt(
    before: ActionRecord, *, result: ActionResult | None, error: ActionError | None, max_attempts: int, now: float
) -> tuple[Execution, ActionRecord]:
    """Where an action stands after one more attempt: done, failed for good, or waiting to be tried again
    (at the host's Retry-After, else after 5 s, 10 s, 20 s …) while attempts remain."""
    attempts = before.attempts + 1
    if error is None:
        return Execution.DONE, ActionRecord(attempts=attempts, result=result)
    if error.transient and attempts < max_attempts:
        wait = error.retry_after or BACKOFF_S * 2 ** (attempts - 1)
        return Execution.WAITING, ActionRecord(attempts=attempts, last_error=error.message, retry_at=now + wait)
    return Execution.FAILED, ActionRecord(attempts=attempts, error=error.message)


class ApprovedActions:
    """The approved actions this runner carries out, each at most once at a time across all runners."""

    def __init__(self, shepherd: Shepherd, executor: Executor, config: RunnerConfig, ending: TurnEnd,
                 runner_id: str) -> None:
        self.shepherd = shepherd
        self.db = shepherd.db
        self.executor = executor
        self.config = config
        self.ending = ending
        self.runner_id = runner_id
        self.jobs: set[asyncio.Task[None]] = set()
        self._executing: set[str] = set()

    def _here(self, task: Task | None) -> bool:
        return task is not None and self.config.holds_workspace(task.workspace)

    async def run_due(self) -> None:
        """Claim approved actions this runner can carry out (those needing a workspace: where it lives)."""
        now = utcnow().timestamp()
        async with self.db.read() as session:
            due = list(await session.exec(
                select(Confirmation).where(Confirmation.status == Status.APPROVED.value,
                                           Confirmation.execution == Execution.WAITING.value)
                .order_by(col(Confirmation.decided_at), col(Confirmation.id)).limit(WINDOW)
            ))
            for conf in due:
                if conf.id in self._executing or (ActionRecord.from_json(conf.result).retry_at or 0) > now:
                    continue
                task = await session.get(Task, conf.task_id) if conf.task_id else None
                if conf.action.startswith(NEEDS_WORKSPACE) and not self._here(task):
                    continue
                if await self.shepherd.confirmations.suspended(session, conf.agent_id, conf.project_id):
                    await self._note_held(conf, task)
                    continue
                async with self.db.write() as claim:
                    won = await claim.exec(
                        update(Confirmation)
                        .where(col(Confirmation.id) == conf.id, col(Confirmation.execution) == Execution.WAITING.value)
                        .values(execution=Execution.RUNNING.value, executor=self.runner_id)
                    )
                if won.rowcount != 1:
                    continue
                self._executing.add(conf.id)
                job = asyncio.get_running_loop().create_task(self._execute(conf.id))
                self.jobs.add(job)
                job.add_done_callback(self.jobs.discard)

    async def _note_held(self, conf: Confirmation, task: Task | None) -> None:
        if task is None or TaskStatus(task.status) not in GATED:
            return
        note = f"{conf.code} approved; waiting: its agent is suspended (`agent resume` lets {conf.action} run)"
        if task.state_message == note:
            return
        async with self.db.write() as session:
            locked = await session.get(Task, task.id, with_for_update=True)
            if locked is not None and TaskStatus(locked.status) in GATED:
                task_state.note_gate(locked, note)
                session.add(locked)

    async def _execute(self, conf_id: str) -> None:
        try:
            await self._carry_out(conf_id)
        except Exception:
            log.exception("carrying out confirmation %s failed; handing it back to be tried again", conf_id)
            with contextlib.suppress(Exception):
                async with self.db.write() as session:
                    await session.exec(
                        update(Confirmation)
                        .where(col(Confirmation.id) == conf_id, col(Confirmation.executor) == self.runner_id,
                               col(Confirmation.execution) == Execution.RUNNING.value)
                        .values(execution=Execution.WAITING.value, executor=None)
                    )
        finally:
            self._executing.discard(conf_id)

    async def _carry_out(self, conf_id: str) -> None:
        async with self.db.read() as session:
            conf = await session.get(Confirmation, conf_id)
            if conf is None:
                return
            task = await session.get(Task, conf.task_id) if conf.task_id else None
            policy = await self.shepherd.confirmations.policy_for(session, conf.project_id)
        result: ActionResult | None = None
        error: ActionError | None = None
        try:
            tokens, task_id = self.shepherd.run_tokens, task.id if task is not None else ""
            result = await self.executor.execute(
                conf, task, policy, repos=self.config.repos,
                # a one-use token handed over with the task's request, held in this process (core.runners.run_tokens)
                held=lambda url: tokens.git_config(task_id, url))
        except ActionError as exc:
            error = exc
        except Exception as exc:
            ref = uuid.uuid4().hex[:8]
            log.exception("action %s of %s failed inside Shepherd (ref %s)", conf.action, conf.code, ref)
            error = ActionError(f"Shepherd failed while carrying it out ({type(exc).__name__}, ref {ref})")
        replan: Plan | None = None
        started = False
        if isinstance(error, PlanChanged) and conf.origin == Origin.POLICY and task is not None and self._here(task):
            with contextlib.suppress(WorkspaceError):
                replan = await plan_after_turn(task, Path(task.workspace or ""))
        async with self.db.write() as session:
            # the task first, then its confirmation: the order every other writer locks them in
            task = await session.get(Task, task.id, with_for_update=True, populate_existing=True) if task else None
            conf = await session.get(Confirmation, conf_id, with_for_update=True, populate_existing=True)
            if conf is None or conf.execution != Execution.RUNNING or conf.executor != self.runner_id:
                return  # handed to another runner meanwhile (this one was thought dead): its result stands
            gated = task is not None and conf.origin == Origin.POLICY and TaskStatus(task.status) in GATED
            system = Principal.system(conf.org_id)
            if isinstance(error, PlanChanged):
                conf.execution = None
                await self.shepherd.confirmations.void(session, conf, error.message)
                if gated and task is not None:
                    if replan is not None:
                        await self.ending.gate(session, task, replan)
                    else:
                        task_state.settle(task, Outcome.FAILED, replace(Evidence.of(task), reason=error.message))
                        session.add(task)
                return
            execution, done = after_attempt(ActionRecord.from_json(conf.result), result=result, error=error,
                                            max_attempts=self.config.max_action_attempts, now=utcnow().timestamp())
            conf.result = done.to_json()
            if execution is Execution.WAITING:
                conf.execution, conf.executor = execution.value, None
                session.add(conf)
                await record(session, system, "action", "action.retrying", agent_id=conf.agent_id,
                             task_id=conf.task_id, payload={"code": conf.code, "action": conf.action,
                                                            "attempt": done.attempts, "error": done.last_error})
                return
            conf.execution, conf.executor = execution.value, None
            session.add(conf)
            await record(session, system, "action", "action.failed" if error else "action.executed",
                         agent_id=conf.agent_id, task_id=conf.task_id,
                         payload={"code": conf.code, "action": conf.action, "result": conf.result})
            if gated and task is not None and conf.action in START_ACTIONS and error is None and not task.turns:
                # an approved start: the task waits for a runner like any new one (the runner starts it)
                task_state.start_approved(task, f"{conf.code} approved by {conf.decided_by}: waiting for a runner")
                session.add(task)
                started = True
            elif gated and task is not None:
                evidence = Evidence.of(task)
                actions = (*evidence.actions, TaskAction(conf.action, conf.code, ok=error is None, record=done))
                task_state.settle(task, Outcome.FAILED if error else Outcome.SUCCEEDED,
                                  replace(evidence, reason=done.line(conf.action), actions=actions))
                session.add(task)
            if error is None and conf.action.startswith("deploy.") and conf.agent_id:
                agent = await session.get(Agent, conf.agent_id)
                if agent is not None:
                    agent.deploys_triggered += 1
                    session.add(agent)
            if conf.decided_via != "policy":  # people saw the prompt: it now shows the result too
                await self.shepherd.confirmations.announce(session, conf, task)
        if started:
            self.shepherd.runs_due()  # committed: a runner in this process claims it now
