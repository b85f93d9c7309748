"""A task's budget: limits on its turns, its wall time and what it spends (issue 17). A limit reached pauses
the work and asks people to extend it by a stated amount or stop it; None is no limit."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from core.errors import ValidationFailed
from core.store.models import Task

MAX_TURNS = 1000
MAX_MINUTES = 7 * 24 * 60.0
MAX_COST = 100_000.0


@dataclass(frozen=True)
class Budget:
    max_turns: int | None = None
    max_minutes: float | None = None
    max_cost: float | None = None

    @property
    def empty(self) -> bool:
        return self.max_turns is None and self.max_minutes is None and self.max_cost is None

    def over(self, other: Budget) -> Budget:
        """This budget where it sets a limit, `other`'s where it does not (a task's own over its session's)."""
        return Budget(
            self.max_turns if self.max_turns is not None else other.max_turns,
            self.max_minutes if self.max_minutes is not None else other.max_minutes,
            self.max_cost if self.max_cost is not None else other.max_cost,
        )


def _number(value: Any, what: str, top: float, *, whole: bool) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValidationFailed(f"{what} is a number, not {value!r}", code="INVALID_BUDGET")
    try:
        number = float(value) if not isinstance(value, (int, float)) else value
    except (TypeError, ValueError):
        raise ValidationFailed(f"{what} is a number, not {value!r}", code="INVALID_BUDGET") from None
    if not math.isfinite(number) or number <= 0 or number > top:
        raise ValidationFailed(f"{what} is more than 0 and at most {top:g}, not {value!r}", code="INVALID_BUDGET")
    if whole and number != int(number):
        raise ValidationFailed(f"{what} is a whole number, not {value!r}", code="INVALID_BUDGET")
    return number


def checked_budget(max_turns: Any = None, max_minutes: Any = None, max_cost: Any = None) -> Budget:
    """Limits as people type them (a command's words, a JSON field), checked: a clear 400 for a bad one."""
    turns = _number(max_turns, "--max-turns", MAX_TURNS, whole=True)
    return Budget(
        None if turns is None else int(turns),
        _number(max_minutes, "--max-minutes", MAX_MINUTES, whole=False),
        _number(max_cost, "--max-cost", MAX_COST, whole=False),
    )


# --- reading a task's budget ---------------------------------------------------------------------------

EXTEND_ACTION = "budget.extend"  # the confirmation that asks people to extend a reached limit, or stop


class Limit(StrEnum):
    TURNS = "turns"
    MINUTES = "minutes"
    COST = "cost"


def reached_before_turn(task: Task) -> Limit | None:
    """The limit that keeps a task's next turn from starting: its turns all used, its minutes all run, or what
    its agent reported spending at or over its cost limit. None: the turn may start."""
    if task.max_turns is not None and task.turns >= task.max_turns:
        return Limit.TURNS
    if task.max_minutes is not None and task.run_seconds >= task.max_minutes * 60:
        return Limit.MINUTES
    if task.max_cost is not None and (task.cost_usd or 0.0) >= task.max_cost:
        return Limit.COST
    return None


def minutes_reached(task: Task, running_s: float) -> bool:
    """Has the running turn (`running_s` of it, pauses left out) with the turns before used its minutes?"""
    return task.max_minutes is not None and task.run_seconds + running_s >= task.max_minutes * 60


def limit_value(task: Task, limit: Limit) -> float:
    value = {Limit.TURNS: task.max_turns, Limit.MINUTES: task.max_minutes, Limit.COST: task.max_cost}[limit]
    assert value is not None, f"{limit} has no limit"
    return float(value)


def amount(limit: Limit, value: float) -> str:
    """An amount of a limit as people read it: `2 turns`, `30 min`, `$1.00`."""
    if limit is Limit.TURNS:
        return f"{value:g} turn{'' if value == 1 else 's'}"
    if limit is Limit.MINUTES:
        return f"{value:g} min"
    return f"${value:.2f}"


def raised(task: Task, limit: Limit, by: float) -> None:
    """People extended `limit` by `by` (the amount their confirmation stated)."""
    if limit is Limit.TURNS:
        task.max_turns = (task.max_turns or 0) + int(by)
    elif limit is Limit.MINUTES:
        task.max_minutes = (task.max_minutes or 0.0) + by
    else:
        task.max_cost = (task.max_cost or 0.0) + by


def burn_down(task: Task, running_s: float = 0.0) -> list[str]:
    """How much of its budget a task has used, limit by limit: `turn 2/3`, `$0.42 of $1.00`, `12 of 30 min`.
    Without limits: what it used that is worth telling (its cost, when its agent reported one)."""
    parts: list[str] = []
    if task.max_turns is not None:
        parts.append(f"turn {task.turns}/{task.max_turns}")
    if task.max_cost is not None:
        parts.append(f"${task.cost_usd or 0.0:.2f} of ${task.max_cost:.2f}")
    elif task.cost_usd:
        parts.append(f"${task.cost_usd:.2f} spent")
    if task.max_minutes is not None:
        used = (task.run_seconds + running_s) / 60
        parts.append(f"{used:.0f} of {task.max_minutes:g} min" if used >= 1 or task.max_minutes >= 2
                     else f"{used * 60:.0f} of {task.max_minutes * 60:.0f} s")
    return parts
