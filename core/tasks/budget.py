"""A task's budget: limits on its turns, its wall time and what it spends (issue 17). A limit reached pauses
the work and asks people to extend it by a stated amount or stop it; None is no limit."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from core.errors import ValidationFailed

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
