"""The one writer of a task's state: its status, what its agent is doing (`state`, with a message), its
outcome, evidence and finish time. Every change is a named transition below, checked against TRANSITIONS;
everything else (people's commands, the runner, confirmations, the output flusher) calls these.

    pending -> queued -> initializing -> running <-> paused -> completed | failed | cancelled
                                          running -> awaiting -> completed | failed | cancelled
    (a webhook's start, gated)  awaiting -> pending | failed (denied) | cancelled

`pending` waits for a runner to claim it; `queued` waits for capacity or for a suspended agent to be
resumed. `awaiting`: the agent's turn is over and Shepherd waits on a gated action of its own (open the
pull request) for people to decide, or carries it out once decided; no process runs and no runner slot is
held; a refusal or an expiry ends the task `denied`. A task a webhook asked for may begin there too, before
its first turn, its start being the gated action (`created_gated` -> `start_approved` -> pending, or `deny`).
A finished task has exactly one outcome with its evidence; a follow-up makes it pending again for one more
turn, and its next finish sets the outcome anew (every turn's outcome stays in the event log). The transitions
are pure: they change the row they are given, no I/O.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, case, or_
from sqlmodel import col

from core.clock import utcnow
from core.errors import Conflict
from core.store.models import Task
from core.tasks.evidence import Evidence

MAX_MESSAGE = 500  # Task.state_message


class TaskStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    INITIALIZING = "initializing"
    RUNNING = "running"
    PAUSED = "paused"
    AWAITING = "awaiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


WAITING = frozenset({TaskStatus.PENDING, TaskStatus.QUEUED})
ACTIVE = frozenset({TaskStatus.INITIALIZING, TaskStatus.RUNNING, TaskStatus.PAUSED})
FINISHED = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
GATED = frozenset({TaskStatus.AWAITING})

# Which status may follow which. A finished task goes back to pending for a follow-up turn.
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.QUEUED, TaskStatus.INITIALIZING, *FINISHED}),
    TaskStatus.QUEUED: frozenset({TaskStatus.PENDING, TaskStatus.INITIALIZING, *FINISHED}),
    TaskStatus.INITIALIZING: frozenset({TaskStatus.RUNNING, *FINISHED}),
    TaskStatus.RUNNING: frozenset({TaskStatus.PAUSED, TaskStatus.PENDING, TaskStatus.AWAITING, *FINISHED}),
    TaskStatus.PAUSED: frozenset({TaskStatus.RUNNING, *FINISHED}),
    TaskStatus.AWAITING: frozenset({TaskStatus.PENDING, *FINISHED}),
    # a finished task's next turn may wait on people first (its budget reached, a loop's next iteration)
    TaskStatus.COMPLETED: frozenset({TaskStatus.PENDING, TaskStatus.AWAITING}),
    TaskStatus.FAILED: frozenset({TaskStatus.PENDING, TaskStatus.AWAITING}),
    TaskStatus.CANCELLED: frozenset({TaskStatus.PENDING, TaskStatus.AWAITING}),
}


class LogType(StrEnum):
    INPUT = "input"
    OUTPUT = "output"


class Control(StrEnum):
    """A request for the runner that holds the task; written by whichever process took the command."""

    STOP = "stop"
    PAUSE = "pause"
    RESUME = "resume"
    DELETE = "delete"
    EXCEEDED = "budget_exceeded"  # a stop because people did not extend its budget (core.tasks.extensions)


STOPS = frozenset({Control.STOP, Control.DELETE, Control.EXCEEDED})


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    DENIED = "denied"
    BUDGET_EXCEEDED = "budget_exceeded"

    @property
    def status(self) -> TaskStatus:
        if self is Outcome.SUCCEEDED:
            return TaskStatus.COMPLETED
        if self is Outcome.CANCELLED:
            return TaskStatus.CANCELLED
        return TaskStatus.FAILED


class State(StrEnum):
    """What the agent is doing within the task's status: working, idle (waiting on input or on people),
    complete or failed. Each REST dialect words it its own way (adapters/rest)."""

    WORKING = "working"
    IDLE = "idle"
    COMPLETE = "complete"
    FAILED = "failed"


def status_of(task: Task) -> TaskStatus:
    return TaskStatus(task.status)


def is_finished(task: Task) -> bool:
    return status_of(task) in FINISHED


# Who waits on whom. A task waits on people when a gated action of its own waits for a decision
# (`awaiting`), when its running agent waits in `shepherd ask` (`wait_on_people`: state idle with the
# question, working again once people decided), or when its last turn ended on a question (completed, state
# idle, the question as its message). Every dialect reads that one fact here.
_ASKING = frozenset({TaskStatus.RUNNING, TaskStatus.COMPLETED})


def waiting_on_people(task: Task) -> bool:
    status = status_of(task)
    return status in GATED or (status in _ASKING and task.state == State.IDLE)


def held_by(task: Task, runner_id: str) -> bool:
    """Is the task's turn still this runner's (not ended or claimed elsewhere meanwhile)?"""
    return status_of(task) in ACTIVE and task.runner_id == runner_id


def check_transition(task: Task, to: TaskStatus) -> None:
    now = status_of(task)
    if to not in TRANSITIONS[now]:
        raise Conflict(f"task {task.name} is {now.value}; it cannot become {to.value}", code="INVALID_TRANSITION")


def _require(task: Task, allowed: frozenset[TaskStatus], doing: str) -> None:
    if status_of(task) not in allowed:
        raise Conflict(f"task {task.name} is {task.status}: it cannot {doing}", code="INVALID_TRANSITION")


def _say(task: Task, state: State, message: str) -> None:
    now = utcnow()
    task.state = state.value
    task.state_message = message[:MAX_MESSAGE]
    task.state_at = now
    task.updated_at = now


def _move(task: Task, to: TaskStatus, state: State, message: str) -> None:
    check_transition(task, to)
    task.status = to.value
    _say(task, state, message)


# --- the forms bulk statements take (the same rules, as SQL) --------------------------------------------


def created(now: datetime) -> dict[str, Any]:
    """A new task's state: pending, for a runner to claim."""
    return {"status": TaskStatus.PENDING.value, "state": State.IDLE.value, "state_message": "waiting for a runner",
            "state_at": now}


def created_gated(now: datetime, message: str) -> dict[str, Any]:
    """A new task whose start is itself a gated action (a webhook asked for it, not a person): awaiting, with no
    turn yet, until its confirmation is decided (`start_approved`, or `deny`)."""
    return {"status": TaskStatus.AWAITING.value, "state": State.IDLE.value, "state_message": message[:MAX_MESSAGE],
            "state_at": now}


def claimable(runner_id: str | None = None) -> ColumnElement[bool]:
    """Which rows a runner may claim: the waiting ones; with `runner_id`, not those pinned to another runner (a
    task whose one-use credentials only that runner's process holds). The statuses are compared one by one, not
    with an IN list, whose expanding parameter an executemany cannot take (Claims.take)."""
    waiting = or_(*(col(Task.status) == s.value for s in WAITING))
    if runner_id is None:
        return waiting
    return and_(waiting, or_(col(Task.pinned_runner).is_(None), col(Task.pinned_runner) == runner_id))


def claimed(runner_id: str, now: datetime) -> dict[str, Any]:
    """The values of a claim (pending or queued -> initializing), set by one conditional update."""
    return {"status": TaskStatus.INITIALIZING.value, "state": State.WORKING.value,
            "state_message": "preparing the workspace", "state_at": now, "updated_at": now, "runner_id": runner_id,
            "pinned_runner": None}  # the pin keeps the first claim for its runner; later turns go where they go


def startable_by(runner_id: str) -> ColumnElement[bool]:
    """Which row's turn this runner may start: its claim (initializing, held by it), not ended or taken since."""
    return and_(col(Task.status) == TaskStatus.INITIALIZING.value, col(Task.runner_id) == runner_id)


def turn_started(now: datetime, *, follow_up: bool) -> dict[str, Any]:
    """The values of `start_turn` (initializing -> running), set by one conditional update (`startable_by`)."""
    return {"status": TaskStatus.RUNNING.value, "state": State.WORKING.value,
            "state_message": _turn_running(follow_up), "state_at": now, "updated_at": now}


def latest_output(line: str | ColumnElement[str]) -> ColumnElement[Any]:
    """The state message once the agent printed `line`: that line while it works, unchanged otherwise (paused,
    or waiting on people: `wait_on_people`). `line` may be a statement's parameter (`message`'s value)."""
    working = and_(col(Task.status) == TaskStatus.RUNNING.value, col(Task.state) == State.WORKING.value)
    return case((working, message(line) if isinstance(line, str) else line), else_=col(Task.state_message))


def message(text: str) -> str:
    """A state message as stored: cut to its length."""
    return text[:MAX_MESSAGE]


# --- waiting --------------------------------------------------------------------------------------------


def queue(task: Task, note: str) -> bool:
    """It waits for capacity or for a suspended agent, and says which; True when it was not queued before."""
    _require(task, WAITING, "be queued")
    if status_of(task) is TaskStatus.QUEUED:  # still queued, perhaps for another reason now
        _say(task, State.IDLE, note)
        return False
    _move(task, TaskStatus.QUEUED, State.IDLE, note)
    return True


def follow_up(task: Task, message: str = "follow-up waiting for a runner") -> None:
    """One more turn: a finished (or awaiting) task waits for a runner again, with no outcome yet."""
    _require(task, FINISHED | GATED, "take a follow-up turn")
    _move(task, TaskStatus.PENDING, State.IDLE, message)
    task.outcome = None
    task.finished_at = None


def hold(task: Task, message: str) -> None:
    """Its next turn waits on people (its budget to be extended, a loop's next iteration to be approved):
    awaiting, with no outcome yet; the turn's input waits in `pending_inputs`."""
    _require(task, FINISHED | GATED, "wait on people for its next turn")
    if status_of(task) in GATED:
        _say(task, State.IDLE, message)
        return
    _move(task, TaskStatus.AWAITING, State.IDLE, message)
    task.outcome = None
    task.finished_at = None


def cancel(task: Task, by: str) -> None:
    """People stopped a task no runner holds (waiting, or awaiting a decision)."""
    _require(task, WAITING | GATED, "be cancelled without its runner")
    _move(task, TaskStatus.CANCELLED, State.FAILED, f"cancelled by {by} before it ran")
    task.outcome = Outcome.CANCELLED.value
    task.finished_at = utcnow()
    task.pending_inputs = []


# --- a turn ---------------------------------------------------------------------------------------------


def start_turn(task: Task, *, follow_up: bool) -> None:
    """The agent's process has started."""
    _require(task, frozenset({TaskStatus.INITIALIZING}), "start a turn")
    _move(task, TaskStatus.RUNNING, State.WORKING, _turn_running(follow_up))


def _turn_running(follow_up: bool) -> str:
    return f"{'follow-up' if follow_up else 'turn 1'}: running"


def pause(task: Task) -> None:
    _require(task, frozenset({TaskStatus.RUNNING}), "be paused")
    _move(task, TaskStatus.PAUSED, State.IDLE, "paused: the agent's processes are frozen")


def resume(task: Task) -> None:
    _require(task, frozenset({TaskStatus.PAUSED}), "be resumed")
    _move(task, TaskStatus.RUNNING, State.WORKING, "resumed")


def wait_on_people(task: Task, message: str) -> None:
    """The running agent waits in `shepherd ask`: idle, with what it asked."""
    _require(task, frozenset({TaskStatus.RUNNING}), "wait on people while its agent runs")
    _say(task, State.IDLE, message)


def back_to_work(task: Task, message: str) -> None:
    """People decided what the running agent asked: it works again."""
    _require(task, frozenset({TaskStatus.RUNNING}), "go back to work")
    _say(task, State.WORKING, message)


def _end(task: Task, outcome: Outcome, evidence: Evidence, question: str | None = None) -> None:
    """No process, runner or callback any more; the outcome with its evidence. A successful turn that ended
    on a `question` waits for input: state idle, the question its message."""
    task.outcome = outcome.value
    task.evidence = evidence.to_json()
    task.finished_at = utcnow()
    task.pid = task.control = task.runner_id = task.callback_hash = task.runner_unit = None
    if question is not None and outcome is Outcome.SUCCEEDED:
        _move(task, outcome.status, State.IDLE, question)
    else:
        state = State.COMPLETE if outcome is Outcome.SUCCEEDED else State.FAILED
        _move(task, outcome.status, state, evidence.summary(outcome.value))


def finish_turn(task: Task, outcome: Outcome, evidence: Evidence, *, question: str | None = None) -> None:
    """The turn ended: the agent exited, was stopped or timed out, or the turn ended before the agent started
    (initializing: no workspace, an unusable agent, stopped first)."""
    _require(task, ACTIVE, "finish a turn")
    _end(task, outcome, evidence, question)


def interrupt(task: Task, reason: str) -> None:
    """Its runner is gone (a crash, a restart): the turn ends `interrupted`; waiting follow-ups are dropped."""
    _require(task, ACTIVE, "be interrupted")
    _end(task, Outcome.INTERRUPTED, Evidence(reason=reason))
    task.pending_inputs = []


def lose_pin(task: Task, reason: str) -> None:
    """A waiting task pinned to a runner that is gone (its process held the task's one-use credentials): it can
    never start as asked, so it ends `interrupted` rather than wait forever."""
    _require(task, WAITING, "lose its runner before it started")
    task.pinned_runner = None
    _end(task, Outcome.INTERRUPTED, Evidence(reason=reason))
    task.pending_inputs = []


# --- the turn's own gated action ------------------------------------------------------------------------


def await_gate(task: Task, evidence: Evidence, summary: str) -> None:
    """The turn is done and what it produced waits on the gate: no process, no runner slot."""
    _require(task, frozenset({TaskStatus.RUNNING}), "wait on its gated action")
    task.evidence = evidence.to_json()
    task.pid = task.control = task.runner_id = task.callback_hash = task.runner_unit = None
    _move(task, TaskStatus.AWAITING, State.IDLE, f"turn done; {summary}")


def note_gate(task: Task, message: str) -> None:
    """Where its gated action stands: waiting for approval, approved, held back."""
    _require(task, GATED, "report on its gated action")
    task.state_message = message[:MAX_MESSAGE]


def start_approved(task: Task, message: str) -> None:
    """Its start was approved: it waits for a runner as any new task does."""
    _require(task, GATED, "be started")
    if task.turns:
        raise Conflict(f"task {task.name} has run already: its start is not asked again", code="INVALID_TRANSITION")
    _move(task, TaskStatus.PENDING, State.IDLE, message)


def settle(task: Task, outcome: Outcome, evidence: Evidence) -> None:
    """Its gated action was carried out, failed, refused by policy or no longer possible."""
    _require(task, GATED, "settle its gated action")
    _end(task, outcome, evidence)


def deny(task: Task, reason: str, confirmation: str) -> None:
    """People rejected its gated action, or let it expire: `denied`, the turn's evidence kept."""
    _require(task, GATED, "be denied")
    _end(task, Outcome.DENIED, replace(Evidence.of(task), reason=reason, confirmation=confirmation))
