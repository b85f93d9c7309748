"""A session's replay as typed entries, rebuilt from what Shepherd keeps: its tasks' logs and the event log.
Pure: rows in, entries out (core.sessions.history reads the rows).

Types (the Agentuity hub's replay vocabulary, and two of Shepherd's own for people's decisions):

| type | from |
|---|---|
| `user_prompt` | a task's log input: its prompt (its first `user_prompt`), then each follow-up |
| `runtime_output` | a task's log output: a line the agent printed |
| `turn` | `task.turn_started` (phase `started`), `task.turn_finished` / `task.finished` (phase `ended`) |
| `task_result` | `task.finished`: the outcome of the task's latest turn, with its evidence summary |
| `runtime_status` | any other event of a task or the session (created, queued, paused, resumed, interrupted, ...) |
| `confirmation_request` | `confirmation.requested`: a gated action waits for people (Shepherd's type) |
| `confirmation_decision` | a confirmation approved, rejected, expired, voided or decided by policy, or a vote on it
  that did not decide it yet (`decision: voted`) (Shepherd's) |

An entry's id orders entries in time: `<microseconds since 1970, 16 digits>-<e|l><row id, 12 digits><n>`, where
`e` is an event, `l` a log row and `n` the entry's place among the entries of one row (an event that ends a task
gives a `turn` and a `task_result`). Ids compare as strings in the replay's order, and the same row always gives
the same ids: a client pages with `afterId` and resumes a followed replay from the last id it saw.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from core.clock import as_utc, iso
from core.errors import ValidationFailed

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# the row: 12 digits, more once ids pass 10^12 (PostgreSQL's log ids step by 1024 a row: core.tasks.loglines)
_ID = re.compile(r"^(\d{16})-([el])(\d{12,19})(\d)$")


class Source(StrEnum):
    """Where an entry came from, named as the hub's `sourceCounts` names them."""

    DURABLE_STREAM = "durableStream"  # Shepherd keeps no durable stream of its own: always 0
    SESSION_ENTRIES = "sessionEntries"  # the tasks' logs
    EVENT_HISTORY = "eventHistory"  # the event log


class EntryType(StrEnum):
    USER_PROMPT = "user_prompt"
    RUNTIME_OUTPUT = "runtime_output"
    TURN = "turn"
    TASK_RESULT = "task_result"
    RUNTIME_STATUS = "runtime_status"
    CONFIRMATION_REQUEST = "confirmation_request"
    CONFIRMATION_DECISION = "confirmation_decision"


@dataclass(frozen=True, order=True)
class Mark:
    """An entry's place in the replay: its id, parsed. Ordered as the replay is."""

    micros: int
    kind: str  # "e" (event) sorts before "l" (log row) at the same microsecond
    row: int
    n: int = 0

    @property
    def id(self) -> str:
        return f"{self.micros:016d}-{self.kind}{self.row:012d}{self.n}"

    @property
    def time(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self.micros)

    @classmethod
    def parse(cls, text: str) -> Mark:
        match = _ID.match(text)
        if match is None:
            raise ValidationFailed("afterId: not an entry id of a replay (like 1765533600123456-l0000000000420)",
                                   code="INVALID_AFTER_ID")
        return cls(int(match.group(1)), match.group(2), int(match.group(3)), int(match.group(4)))


def micros(at: datetime) -> int:
    return (as_utc(at) - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class Entry:
    mark: Mark
    type: EntryType
    at: datetime
    task_id: str | None
    content: str
    data: dict[str, Any]
    source: Source

    def to_json(self) -> dict[str, Any]:
        """The wire form: every key present, camelCase."""
        return {"id": self.mark.id, "type": self.type.value, "timestamp": iso(self.at), "taskId": self.task_id,
                "content": self.content, "data": self.data, "source": self.source.value}


def log_entry(row_id: int, task_id: str, at: datetime, kind: str, content: str) -> Entry:
    """A task's log row: what people sent it (input) or a line its agent printed (output)."""
    typ = EntryType.USER_PROMPT if kind == "input" else EntryType.RUNTIME_OUTPUT
    return Entry(Mark(micros(at), "l", row_id), typ, as_utc(at), task_id, content, {}, Source.SESSION_ENTRIES)


# Events whose news the replay already tells another way: a follow-up sent (its `user_prompt` comes when its
# turn starts), a prompt changed before the start (the prompt is the first `user_prompt`), a reminder.
SILENT = frozenset({"task.input_sent", "task.input_updated", "confirmation.reminded"})
_EVIDENCE_KEYS = ("reason", "exitCode", "durationSeconds", "diff", "droppedLines", "confirmation")


def event_entries(
    row_id: int, name: str, category: str, task_id: str | None, at: datetime, payload: dict[str, Any],
) -> list[Entry]:
    """The entries one event gives: none (SILENT), one, or for a task's finish its turn's end and its result."""
    if name in SILENT:
        return []
    at = as_utc(at)
    us = micros(at)

    def entry(n: int, typ: EntryType, content: str, data: dict[str, Any]) -> Entry:
        return Entry(Mark(us, "e", row_id, n), typ, at, task_id, content, data, Source.EVENT_HISTORY)

    turn = payload.get("turn")
    if name == "task.turn_started":
        return [entry(0, EntryType.TURN, f"turn {turn} started",
                      {"phase": "started", "turn": turn, "followUp": bool(payload.get("followUp"))})]
    if name in ("task.turn_finished", "task.finished"):
        outcome = payload.get("outcome")
        ended = entry(0, EntryType.TURN, f"turn {turn} ended: {outcome}",
                      {"phase": "ended", "turn": turn, "outcome": outcome})
        if name == "task.turn_finished":  # the turn is over; the task waits for its next gated action
            return [replace_data(ended, next=payload.get("next"))]
        evidence = payload.get("evidence") or {}
        summary = {k: evidence[k] for k in _EVIDENCE_KEYS if k in evidence}
        reason = summary.get("reason") or ""
        return [ended, entry(1, EntryType.TASK_RESULT, f"{outcome}: {reason}" if reason else str(outcome),
                             {"outcome": outcome, "turn": turn, "evidence": summary,
                              "droppedInputs": payload.get("droppedInputs", 0)})]
    if category == "confirmation":
        return [_confirmation(entry, name, payload)]
    status = name.split(".", 1)[1] if "." in name else name
    return [entry(0, EntryType.RUNTIME_STATUS, f"{category} {status}",
                  {"status": status, "event": name, "payload": payload})]


def replace_data(entry: Entry, **more: Any) -> Entry:
    return Entry(entry.mark, entry.type, entry.at, entry.task_id, entry.content, {**entry.data, **more},
                 entry.source)


def _confirmation(entry: Callable[[int, EntryType, str, dict[str, Any]], Entry], name: str,
                  payload: dict[str, Any]) -> Entry:
    decision = name.split(".", 1)[1] if "." in name else name
    code, action = payload.get("code"), payload.get("action")
    data = {"decision": decision, "confirmationId": payload.get("confirmationId"), "code": code,
            "action": action, "risk": payload.get("risk"), "status": payload.get("status"),
            "reason": payload.get("reason")}
    if decision == "requested":
        return entry(0, EntryType.CONFIRMATION_REQUEST, f"{code} asks people: {action}", data)
    if decision == "voted":
        data["approvals"] = payload.get("approvals")
    return entry(0, EntryType.CONFIRMATION_DECISION, f"{code} {decision}: {action}", data)


def entries_source(counts: dict[Source, int]) -> str:
    """`entriesSource`: the sources this answer's entries came from, joined by `+` (`none` when there are none)."""
    used = [s.value for s in Source if counts.get(s)]
    return "+".join(used) if used else "none"
