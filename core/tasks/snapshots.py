"""The log snapshot a paused task keeps: its last messages, at most 64 KB, in agentapi's shape.

Coder keeps one per task while its workspace is stopped and answers `logs` from it (shared/seeds/001:
"Pause frees compute and keeps a log snapshot (last messages, max 64 KB) that logs returns while
paused"). Coder's own workspace agent uploads it on the way down; Shepherd takes it itself when it pauses
a task, and a workspace agent may still upload its own (Coder's route). The shape is agentapi's
`GET /messages`: `{"messages": [{"id", "content", "role": "user"|"agent", "time"}]}`, a person's input
being a `user` message and what the agent printed after it one `agent` message.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.clock import iso, utcnow
from core.store.models import Task, TaskLog

MAX_SNAPSHOT_BYTES = 64 * 1024
MAX_MESSAGES = 10  # as Coder's agentapi module keeps on shutdown
WINDOW = 4000  # log rows read to build one (a line, or the lines of one read, each): 64 KB is rarely more
TRUNCATED = "[...content truncated, showing the last part...]\n\n"
INPUT = "input"


def _size(snapshot: dict[str, Any]) -> int:
    return len(json.dumps(snapshot).encode())  # ASCII-escaped: never less than what the store keeps


def _messages(rows: Sequence[TaskLog]) -> list[dict[str, Any]]:
    """Log lines as messages: each input one `user` message, the output lines after it one `agent` message."""
    messages: list[dict[str, Any]] = []
    for row in rows:
        role = "user" if row.type == INPUT else "agent"
        if messages and role == "agent" and messages[-1]["role"] == "agent":
            messages[-1]["content"] += "\n" + row.content
            messages[-1]["time"] = iso(row.time)
            continue
        first = (row.id or 0) - max(row.lines, 1) + 1  # a row of lines: its first line's id (core.tasks.loglines)
        messages.append({"id": first, "content": row.content, "role": role, "time": iso(row.time)})
    return messages


def build_snapshot(
    rows: Sequence[TaskLog], limit: int = MAX_SNAPSHOT_BYTES, *, partial: bool = False
) -> dict[str, Any]:
    """The last messages of these log rows (oldest first) that fit in `limit` bytes: the oldest go first,
    and a single message too big keeps its tail. `partial`: the rows may begin in the middle of a message."""
    messages = _messages(rows)
    if partial and messages:
        if len(messages) > 1:
            messages.pop(0)  # its beginning is not among the rows
        else:
            messages[0]["content"] = TRUNCATED + messages[0]["content"]
    snapshot = {"messages": messages[-MAX_MESSAGES:]}
    while len(snapshot["messages"]) > 1 and _size(snapshot) > limit:
        snapshot["messages"].pop(0)
    if snapshot["messages"] and _size(snapshot) > limit:
        last = snapshot["messages"][0]
        overhead = _size({"messages": [{**last, "content": TRUNCATED}]})
        keep = max(0, limit - overhead)
        content = last["content"]
        while keep > 0:  # characters that json.dumps writes as \uXXXX (or \n) take more than one byte each
            tail = content[-keep:]
            if overhead + len(json.dumps(tail).encode()) - 2 <= limit:
                break
            keep = keep * 3 // 4
        last["content"] = TRUNCATED + (content[-keep:] if keep else "")
    return snapshot


async def take_snapshot(session: AsyncSession, task: Task) -> None:
    """Keep the task's last messages as its snapshot (in the caller's transaction), as Coder does on pause."""
    rows = list(await session.exec(
        select(TaskLog).where(TaskLog.task_id == task.id).order_by(col(TaskLog.id).desc()).limit(WINDOW)))
    rows.reverse()
    task.log_snapshot = build_snapshot(rows, partial=len(rows) == WINDOW)
    task.snapshot_at = utcnow()


@dataclass(frozen=True)
class SnapshotEntry:
    """One message of a snapshot, as a log entry: a `user` message was input, an `agent` message output."""

    id: int
    content: str
    time: str
    type: str


def snapshot_entries(snapshot: dict[str, Any] | None) -> list[SnapshotEntry]:
    """The messages of a stored snapshot as log entries; what is not a message (an older upload of another
    shape) is left out rather than guessed at."""
    entries = []
    for message in (snapshot or {}).get("messages") or []:
        if not isinstance(message, dict):
            continue
        role, content, time, ident = (message.get(k) for k in ("role", "content", "time", "id"))
        if role not in ("user", "agent") or not isinstance(content, str) or not isinstance(time, str) \
                or not isinstance(ident, int) or isinstance(ident, bool):
            continue
        entries.append(SnapshotEntry(id=ident, content=content, time=time,
                                     type="input" if role == "user" else "output"))
    return entries
