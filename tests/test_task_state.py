"""The one writer of task state: every named transition, from where it may start and from where it may not.
Pure: the transitions change a Task row in memory, so these run without a database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from core.errors import Conflict
from core.store.models import Task
from core.tasks import state as task_state
from core.tasks.evidence import DiffStats, Evidence
from core.tasks.state import ACTIVE, FINISHED, GATED, WAITING, Outcome, TaskStatus

ALL = frozenset(TaskStatus)


def task(status: TaskStatus, **kw: Any) -> Task:
    return Task(id="task-1", org_id="acme", name="fix-it", display_name="fix it", owner_id="u", owner_name="ana",
                runtime="demo", prompt="fix it", status=status.value, state="idle", **kw)


TURN = Evidence(reason="the agent finished its turn", exit_code=0, duration_s=1.25, diff=DiffStats(2, 10, 1),
                last_lines=("done",))

# transition, the statuses it starts from, the status it leads to
MOVES: list[tuple[str, Callable[[Task], object], frozenset[TaskStatus], TaskStatus]] = [
    ("queue", lambda t: task_state.queue(t, "queued: the cap"), WAITING, TaskStatus.QUEUED),
    ("start_turn", lambda t: task_state.start_turn(t, follow_up=False), frozenset({TaskStatus.INITIALIZING}),
     TaskStatus.RUNNING),
    ("pause", task_state.pause, frozenset({TaskStatus.RUNNING}), TaskStatus.PAUSED),
    ("resume", task_state.resume, frozenset({TaskStatus.PAUSED}), TaskStatus.RUNNING),
    ("finish_turn", lambda t: task_state.finish_turn(t, Outcome.SUCCEEDED, TURN), ACTIVE, TaskStatus.COMPLETED),
    ("interrupt", lambda t: task_state.interrupt(t, "the runner died"), ACTIVE, TaskStatus.FAILED),
    ("await_gate", lambda t: task_state.await_gate(t, TURN, "open a pull request"), frozenset({TaskStatus.RUNNING}),
     TaskStatus.AWAITING),
    ("settle", lambda t: task_state.settle(t, Outcome.SUCCEEDED, TURN), GATED, TaskStatus.COMPLETED),
    ("deny", lambda t: task_state.deny(t, "pr.open rejected", "K7P2"), GATED, TaskStatus.FAILED),
    ("cancel", lambda t: task_state.cancel(t, "console:ana"), WAITING | GATED, TaskStatus.CANCELLED),
    ("follow_up", task_state.follow_up, FINISHED | GATED, TaskStatus.PENDING),
]


@pytest.mark.parametrize(("name", "move", "starts", "leads_to"), MOVES, ids=[m[0] for m in MOVES])
def test_each_transition_starts_only_where_it_may_and_leads_where_it_says(
    name: str, move: Callable[[Task], object], starts: frozenset[TaskStatus], leads_to: TaskStatus,
) -> None:
    for status in sorted(ALL):
        row = task(status)
        if status in starts:
            move(row)
            assert row.status == leads_to.value, (name, status)
        else:
            with pytest.raises(Conflict) as refused:
                move(row)
            assert refused.value.code == "INVALID_TRANSITION" and row.status == status.value, (name, status)


def test_a_queued_task_whose_reason_changes_stays_queued_with_the_new_note() -> None:
    row = task(TaskStatus.PENDING)
    assert task_state.queue(row, "waiting: agent a is suspended") is True
    assert task_state.queue(row, "queued: 1 tasks running on this runner, the cap is 1") is False
    assert (row.status, row.state, row.state_message) == ("queued", "idle",
                                                          "queued: 1 tasks running on this runner, the cap is 1")


def test_a_finished_turn_keeps_its_evidence_and_lets_go_of_process_and_runner() -> None:
    row = task(TaskStatus.RUNNING, pid=42, runner_id="host:1:ab", control="stop", callback_hash="x" * 64)
    task_state.finish_turn(row, Outcome.FAILED, Evidence(reason="the agent failed (exit code 3)", exit_code=3,
                                                         duration_s=0.5))
    assert (row.status, row.outcome, row.state) == ("failed", "failed", "failed")
    assert (row.pid, row.runner_id, row.control, row.callback_hash) == (None, None, None, None)
    assert row.finished_at is not None and row.evidence["exitCode"] == 3
    assert row.state_message == "failed in 0.5 s · no files changed · exit 3 · the agent failed (exit code 3)"


def test_a_turn_that_ends_on_a_question_waits_for_input() -> None:
    row = task(TaskStatus.RUNNING)
    task_state.finish_turn(row, Outcome.SUCCEEDED, TURN, question="Which database?")
    assert (row.status, row.outcome, row.state, row.state_message) == (
        "completed", "succeeded", "idle", "Which database?")
    assert task_state.waiting_on_people(row)


def test_a_denial_keeps_the_turns_evidence_and_names_the_confirmation() -> None:
    row = task(TaskStatus.RUNNING)
    task_state.await_gate(row, TURN, "open a pull request on acme/api")
    assert (row.status, row.state_message) == ("awaiting", "turn done; open a pull request on acme/api")
    assert task_state.waiting_on_people(row)
    task_state.deny(row, "pr.open rejected by bob from slack", "K7P2")
    kept = Evidence.of(row)
    assert (row.status, row.outcome) == ("failed", "denied")
    assert (kept.reason, kept.confirmation, kept.exit_code, kept.diff.files) == (
        "pr.open rejected by bob from slack", "K7P2", 0, 2)


def test_a_follow_up_clears_the_outcome_and_a_cancel_drops_waiting_inputs() -> None:
    row = task(TaskStatus.COMPLETED, outcome="succeeded")
    task_state.follow_up(row)
    assert (row.status, row.outcome, row.finished_at, row.state_message) == (
        "pending", None, None, "follow-up waiting for a runner")
    row.pending_inputs = ["and the changelog"]
    task_state.cancel(row, "console:ana")
    assert (row.status, row.outcome, row.pending_inputs) == ("cancelled", "cancelled", [])
    assert row.state_message == "cancelled by console:ana before it ran"


def test_an_agent_asking_people_is_idle_until_they_decide() -> None:
    row = task(TaskStatus.RUNNING)
    row.state = "working"
    task_state.wait_on_people(row, "waiting for approval K7P2: run the migration")
    assert row.state == "idle" and task_state.waiting_on_people(row)
    task_state.back_to_work(row, "K7P2 approved by bob; the agent goes on")
    assert row.state == "working" and not task_state.waiting_on_people(row)


def test_held_by_is_this_runners_active_turn_only() -> None:
    assert task_state.held_by(task(TaskStatus.RUNNING, runner_id="me"), "me")
    assert not task_state.held_by(task(TaskStatus.RUNNING, runner_id="other"), "me")
    assert not task_state.held_by(task(TaskStatus.FAILED, runner_id=None), "me")
