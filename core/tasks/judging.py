"""How a turn ended: its outcome and the reason given, judged from how its process exited, why it was stopped,
what the agent reported, a `shepherd ask` people refused and the line it ended on. Pure: no I/O."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from core.autonomy.plans import Status
from core.runners import ExitReason, RunExit
from core.tasks.state import Control, Outcome

_QUESTION_END = re.compile(r"\?[\s\"'`*_)\]]*$")


def closing_question(lines: Sequence[str]) -> str | None:
    """The question a turn ended on: its last non-blank output line, when that line asks something (it ends
    with a question mark, maybe inside quotes or markdown). An agent that asks and exits (`claude -p` with a
    question for the user, the demo agent's `[ask]`) waits for input; it has not completed the work."""
    for line in reversed(lines):
        if line.strip():
            return line.strip()[:500] if _QUESTION_END.search(line) else None
    return None


class Refusal(NamedTuple):
    """A `shepherd ask` of the turn that people rejected or let expire: what its judgement says of it."""

    action: str
    code: str
    status: str
    decided_by: str | None
    reason: str | None


@dataclass(frozen=True)
class Judgement:
    outcome: Outcome
    reason: str
    question: str | None = None  # the turn succeeded but ended asking this: it waits for input


def judge(
    exit_: RunExit, *, stop_reason: str | None = None, verdict: Outcome | None = None, verdict_line: str = "",
    refused: Refusal | None = None, last_lines: Sequence[str] = (), idle_timeout_s: float = 0.0,
    hard_timeout_s: float = 0.0,
) -> Judgement:
    """How a turn ended, from its exit, why it was stopped, what the agent reported (`verdict`), a `shepherd
    ask` of the turn that people refused, and its last lines. An exit code alone never makes a success."""
    outcome, reason = _outcome(exit_, stop_reason, verdict, verdict_line, refused, idle_timeout_s, hard_timeout_s)
    question = closing_question(last_lines) if outcome is Outcome.SUCCEEDED else None
    if question is not None:
        return Judgement(outcome, f"waiting for input: {question}", question)
    return Judgement(outcome, reason)


def _outcome(
    exit_: RunExit, stop_reason: str | None, verdict: Outcome | None, verdict_line: str,
    refused: Refusal | None, idle_timeout_s: float, hard_timeout_s: float,
) -> tuple[Outcome, str]:
    if stop_reason == "shutdown":
        return Outcome.INTERRUPTED, "Shepherd stopped while the agent was working; `send` continues it"
    if stop_reason == Control.EXCEEDED:
        return Outcome.BUDGET_EXCEEDED, "its budget was reached and people did not extend it; its processes were ended"
    if exit_.reason is ExitReason.STOPPED or stop_reason is not None:
        return Outcome.CANCELLED, "stopped on request; its processes were ended"
    if exit_.reason is ExitReason.IDLE_TIMEOUT:
        return Outcome.TIMED_OUT, f"no output for {idle_timeout_s:g} s (SHEPHERD_TASK_IDLE_TIMEOUT)"
    if exit_.reason is ExitReason.HARD_TIMEOUT:
        return Outcome.TIMED_OUT, f"ran longer than {hard_timeout_s:g} s (SHEPHERD_TASK_TIMEOUT)"
    if verdict is not None:
        return verdict, f"the agent reported: {verdict_line[:300]}"
    if refused is not None and not exit_.exit_code:
        # it asked, people said no (or nobody answered), and it went on to exit 0: not a success
        by = f" by {refused.decided_by}" if refused.status == Status.REJECTED else ""
        why = f": {refused.reason}" if refused.reason else ""
        return Outcome.DENIED, f"{refused.action} ({refused.code}) was {refused.status}{by}{why}"
    if exit_.exit_code:
        how = f"killed by signal {-exit_.exit_code}" if exit_.exit_code < 0 else f"exit code {exit_.exit_code}"
        return Outcome.FAILED, f"the agent failed ({how})"
    return Outcome.SUCCEEDED, "the agent finished its turn"
