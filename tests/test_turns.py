"""Judging a turn's end: the outcome and its reason from how the process exited, why it was stopped, what
the agent reported, a `shepherd ask` people refused and the line it ended on. Pure, so table-driven."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from core.runners import ExitReason, RunExit
from core.runners.presets import verdict
from core.tasks.judging import Judgement, Refusal, closing_question, judge
from core.tasks.state import Outcome
from core.tasks.turns import Turn, Turns

EXITED_0 = RunExit(ExitReason.EXITED, 0, 1.0)
EXITED_3 = RunExit(ExitReason.EXITED, 3, 1.0)
KILLED = RunExit(ExitReason.EXITED, -9, 1.0)
STOPPED = RunExit(ExitReason.STOPPED, -15, 1.0)
IDLE = RunExit(ExitReason.IDLE_TIMEOUT, -9, 600.0)
HARD = RunExit(ExitReason.HARD_TIMEOUT, -9, 3600.0)


def refused(status: str = "rejected", reason: str | None = "not now") -> Refusal:
    return Refusal(action="db.migrate", code="K7P2", status=status, decided_by="bob", reason=reason)


CASES = [
    ("a clean exit succeeds", EXITED_0, {}, Outcome.SUCCEEDED, "the agent finished its turn"),
    ("an exit code fails", EXITED_3, {}, Outcome.FAILED, "the agent failed (exit code 3)"),
    ("a signal fails", KILLED, {}, Outcome.FAILED, "the agent failed (killed by signal 9)"),
    ("people stopped it", STOPPED, {"stop_reason": "stop"}, Outcome.CANCELLED,
     "stopped on request; its processes were ended"),
    ("a stop that came as it exited still cancels", EXITED_0, {"stop_reason": "delete"}, Outcome.CANCELLED,
     "stopped on request; its processes were ended"),
    ("Shepherd stopping interrupts", STOPPED, {"stop_reason": "shutdown"}, Outcome.INTERRUPTED,
     "Shepherd stopped while the agent was working; `send` continues it"),
    ("silence times out", IDLE, {"idle_timeout_s": 600.0}, Outcome.TIMED_OUT,
     "no output for 600 s (SHEPHERD_TASK_IDLE_TIMEOUT)"),
    ("the hard limit times out", HARD, {"hard_timeout_s": 3600.0}, Outcome.TIMED_OUT,
     "ran longer than 3600 s (SHEPHERD_TASK_TIMEOUT)"),
    ("a reported denial beats exit 0", EXITED_0,
     {"verdict": Outcome.DENIED, "verdict_line": "Permission denied: you haven't granted it yet"}, Outcome.DENIED,
     "the agent reported: Permission denied: you haven't granted it yet"),
    ("a refused question and exit 0 is denied", EXITED_0, {"refused": refused()}, Outcome.DENIED,
     "db.migrate (K7P2) was rejected by bob: not now"),
    ("an expired question names no one", EXITED_0, {"refused": refused("expired", None)}, Outcome.DENIED,
     "db.migrate (K7P2) was expired"),
    ("a refused question and a failure is a failure", EXITED_3, {"refused": refused()}, Outcome.FAILED,
     "the agent failed (exit code 3)"),
    ("a success that ends asking waits for input", EXITED_0, {"last_lines": ["working", "Which database?", ""]},
     Outcome.SUCCEEDED, "waiting for input: Which database?"),
    ("a failure that ends asking is still a failure", EXITED_3, {"last_lines": ["Which database?"]},
     Outcome.FAILED, "the agent failed (exit code 3)"),
]


@pytest.mark.parametrize(("case", "exit_", "facts", "outcome", "reason"), CASES, ids=[c[0] for c in CASES])
def test_judge(case: str, exit_: RunExit, facts: dict[str, object], outcome: Outcome, reason: str) -> None:
    judged = judge(exit_, **facts)  # type: ignore[arg-type]
    assert (judged.outcome, judged.reason) == (outcome, reason)


def test_the_question_comes_with_the_judgement() -> None:
    assert judge(EXITED_0, last_lines=["**Which database should I use?**"]) == Judgement(
        Outcome.SUCCEEDED, "waiting for input: **Which database should I use?**", "**Which database should I use?**")


@pytest.mark.parametrize(("lines", "question"), [
    (["Shall I go on?"], "Shall I go on?"),
    (["Shall I go on?", "  ", ""], "Shall I go on?"),
    (['"Which one?"'], '"Which one?"'),
    (["Which one?", "done."], None),
    (["Is this a question? No."], None),
    ([], None),
])
def test_closing_question(lines: list[str], question: str | None) -> None:
    assert closing_question(lines) == question


# Each of the CLIs' own phrases for a refused tool or a spent budget, as they print them (any case), and lines
# that only come near: every phrase must still be read, now that most lines never reach the regexes.
SAID = [
    ("Claude requested permissions to write to /etc/hosts, but you haven't granted it yet.", Outcome.DENIED),
    ("Claude requested permission to use Bash", Outcome.DENIED),
    ('{"type":"result","permission_denials": [ {"tool_name":"Bash"}]}', Outcome.DENIED),
    ("Permission to use WebFetch has been denied.", Outcome.DENIED),
    ("permission to use Edit was denied", Outcome.DENIED),
    ("exec command rejected by user", Outcome.DENIED),
    ("PATCH REJECTED BY USER", Outcome.DENIED),
    ("error: sandbox denied the write", Outcome.DENIED),
    ("the call was blocked by policy", Outcome.DENIED),
    ("Auto-rejecting tool call in non-interactive mode", Outcome.DENIED),
    ("The user rejected permission to use this specific tool call.", Outcome.DENIED),
    ("There is a rule which prevents you from using this specific tool", Outcome.DENIED),
    ("Error: Reached max turns (10)", Outcome.BUDGET_EXCEEDED),
    ("exceeded USD budget of 5", Outcome.BUDGET_EXCEEDED),
    ('{"subtype":"error_max_turns"}', Outcome.BUDGET_EXCEEDED),
    ('{"subtype":"error_max_budget_usd"}', Outcome.BUDGET_EXCEEDED),
    ("Credit balance is too low", Outcome.BUDGET_EXCEEDED),
    ("You've hit your weekly limit", Outcome.BUDGET_EXCEEDED),
    ("You've hit your limit · resets 5pm", Outcome.BUDGET_EXCEEDED),
    ("Usage limit reached for today", Outcome.BUDGET_EXCEEDED),
    ("429: quota exceeded", Outcome.BUDGET_EXCEEDED),
    ("insufficient credits", Outcome.BUDGET_EXCEEDED),
    ('{"code":"insufficient_quota"}', Outcome.BUDGET_EXCEEDED),
    ("the provider rate limited you; try later", Outcome.BUDGET_EXCEEDED),
    ("granted the permission to read README.md", None),
    ("limits of the approach: none", None),
    ("line 1234 of the demo agent, nothing to see", None),
]


@pytest.mark.parametrize(("line", "outcome"), SAID)
def test_what_an_agent_says_of_refusals_and_budgets_is_read(line: str, outcome: Outcome | None) -> None:
    assert verdict(line) is outcome


class _Stored:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add_many(self, task_id: str, lines: list[str]) -> None:
        self.lines.extend(lines)


def _reads(*reads: list[str], limit: int = 100, pattern: str | None = None) -> tuple[Turn, list[str]]:
    """A turn's reads of its agent's output handled as the runner hands them over (a list of lines per read)."""
    stored = _Stored()
    turns = SimpleNamespace(config=SimpleNamespace(max_log_lines=limit), output=stored)
    turn = Turn(task_id="task-1", org_id="acme", session_pattern=pattern)
    for read in reads:
        Turns._on_lines(turns, turn, read)  # type: ignore[arg-type]
    return turn, stored.lines


def test_a_reads_lines_are_judged_as_each_line_would_be() -> None:
    turn, stored = _reads(
        ["working", "session id: 123e4567-e89b-12d3-a456-426614174000", "max", "turns ahead"],
        ['{"total_cost_usd": 0.5}', "the shell command was blocked by policy", "Error: reached max turns",
         '{"total_cost_usd": 1.25}', "session id: 00000000-0000-0000-0000-000000000000"],
        pattern=r"^session id: ([0-9a-f-]{36})",
    )
    assert turn.verdict is Outcome.DENIED and turn.verdict_line == "the shell command was blocked by policy"
    assert turn.cost == 1.25  # the last it reported
    assert turn.session_ref == "123e4567-e89b-12d3-a456-426614174000"  # the first it named
    assert stored == [*["working", "session id: 123e4567-e89b-12d3-a456-426614174000", "max", "turns ahead"],
                      '{"total_cost_usd": 0.5}', "the shell command was blocked by policy", "Error: reached max turns",
                      '{"total_cost_usd": 1.25}', "session id: 00000000-0000-0000-0000-000000000000"]
    assert list(turn.last_lines)[-1] == "session id: 00000000-0000-0000-0000-000000000000"


def test_words_split_across_two_lines_of_a_read_are_no_verdict() -> None:
    turn, _ = _reads(["we reached max", "turns of phrase", "permission", "denied is a word"])
    assert turn.verdict is None


def test_a_turn_stores_up_to_its_limit_and_counts_what_it_dropped() -> None:
    turn, stored = _reads([f"a{n}" for n in range(4)], [f"b{n}" for n in range(4)], ["c"], limit=6)
    assert stored == ["a0", "a1", "a2", "a3", "b0", "b1"]
    assert (turn.stored, turn.dropped) == (6, 3)
    assert list(turn.last_lines)[-2:] == ["b3", "c"]  # the evidence's last lines are all of them
