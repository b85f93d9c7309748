"""Plain-text rendering shared by the text channels (console now; chat adapters may template richer)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from core.clock import as_utc, utcnow


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def duration(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def span(seconds: float) -> str:
    """A length of time as people say it in a message: `45 s`, `12 min`, `3 h`, `2 days`."""
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    hours = round(minutes / 60)
    return f"{hours} h" if hours < 48 else f"{round(hours / 24)} days"


def clock(when: datetime) -> str:
    """A time of day in UTC, as messages show it: `14:32 UTC`."""
    return as_utc(when).strftime("%H:%M UTC")


def ago(when: datetime) -> str:
    return duration(max(0, int((utcnow() - as_utc(when)).total_seconds()))) + " ago"
