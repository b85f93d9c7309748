"""What a task's turn and its actions leave behind, as types: the evidence behind an outcome, the record of
an action Shepherd carried out. Stored as JSON (Task.evidence, Confirmation.result) with the keys existing
rows have; `to_json` and `from_json` are the only places that know those keys."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.store.models import Task

MAX_DIFF_PATHS = 20  # the changed files' paths a DiffStats names (its counts go on past them)


@dataclass(frozen=True)
class DiffStats:
    files: int = 0
    insertions: int = 0
    deletions: int = 0
    paths: tuple[str, ...] = ()

    def describe(self) -> str:
        if not self.files:
            return "no files changed"
        noun = "file" if self.files == 1 else "files"
        return f"{self.files} {noun} changed, +{self.insertions} -{self.deletions}"

    def to_json(self) -> dict[str, Any]:
        return {"files": self.files, "insertions": self.insertions, "deletions": self.deletions,
                "paths": list(self.paths)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> DiffStats:
        data = data or {}
        return cls(int(data.get("files") or 0), int(data.get("insertions") or 0), int(data.get("deletions") or 0),
                   tuple(str(p) for p in data.get("paths") or ()))


@dataclass(frozen=True)
class ActionResult:
    """What came of an action that was carried out."""

    branch: str | None = None
    head: str | None = None
    pushed: bool = False
    number: int | None = None  # the pull request
    url: str | None = None
    created: bool | None = None  # False: the pull request was open already
    merge_commit: str | None = None
    hook_status: int | None = None  # a deploy hook's HTTP answer
    hook_response: str | None = None
    exit_code: int | None = None  # a deploy command's
    last_lines: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        pairs: tuple[tuple[str, Any], ...] = (
            ("branch", self.branch), ("head", self.head), ("pushed", self.pushed or None), ("number", self.number),
            ("url", self.url), ("created", self.created), ("mergeCommit", self.merge_commit),
            ("status", self.hook_status), ("response", self.hook_response), ("exitCode", self.exit_code),
            ("lastLines", list(self.last_lines) or None),
        )
        return {k: v for k, v in pairs if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ActionResult:
        return cls(
            branch=_str(data.get("branch")), head=_str(data.get("head")), pushed=bool(data.get("pushed")),
            number=_int(data.get("number")), url=_str(data.get("url")),
            created=None if data.get("created") is None else bool(data["created"]),
            merge_commit=_str(data.get("mergeCommit")), hook_status=_int(data.get("status")),
            hook_response=_str(data.get("response")), exit_code=_int(data.get("exitCode")),
            last_lines=tuple(str(x) for x in data.get("lastLines") or ()),
        )


_RESULT_KEYS = frozenset({"branch", "head", "pushed", "number", "url", "created", "mergeCommit", "status", "response",
                          "exitCode", "lastLines"})


@dataclass(frozen=True)
class ActionRecord:
    """Carrying out one approved confirmation: how often it was tried, and what came of it. While it waits to
    be tried again, `last_error` says why and `retry_at` (epoch seconds) when; `error` is a failure for good."""

    attempts: int = 0
    result: ActionResult | None = None
    error: str | None = None
    last_error: str | None = None
    retry_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"attempts": self.attempts}
        if self.last_error is not None:
            data["lastError"] = self.last_error
        if self.retry_at is not None:
            data["retryAt"] = self.retry_at
        if self.error is not None:
            data["error"] = self.error
        if self.result is not None:
            data.update(self.result.to_json())
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ActionRecord:
        data = data or {}
        retry_at = data.get("retryAt")
        return cls(
            attempts=int(data.get("attempts") or 0),
            result=ActionResult.from_json(data) if _RESULT_KEYS & data.keys() else None,
            error=_str(data.get("error")), last_error=_str(data.get("lastError")),
            retry_at=float(retry_at) if retry_at is not None else None,
        )

    def line(self, action: str) -> str:
        """What came of it, for chat."""
        if self.error:
            return f"{action} failed: {self.error}"
        r = self.result or ActionResult()
        if action == "pr.open" and r.url:
            return f"pull request #{r.number} {'opened' if r.created is not False else 'already open'}: {r.url}"
        if action == "branch.push":
            return f"pushed {r.branch} at {(r.head or '')[:10]}"
        if action == "pr.merge":
            return f"merged #{r.number} as {(r.merge_commit or '')[:10]}"
        if action == "pr.comment":
            return f"commented: {r.url}"
        if action.startswith("deploy.") and r.hook_status is not None:
            return f"{action}: done ({json.dumps(r.hook_status)})"
        return f"{action}: done"


@dataclass(frozen=True)
class TaskAction:
    """An action of the task's own (its pull request, its push), as its evidence keeps it."""

    action: str
    code: str
    ok: bool
    record: ActionRecord = field(default_factory=ActionRecord)

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "code": self.code, "ok": self.ok, **self.record.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskAction:
        return cls(action=str(data.get("action") or ""), code=str(data.get("code") or ""), ok=bool(data.get("ok")),
                   record=ActionRecord.from_json(data))

    def describe(self) -> str:
        """Where it led: the pull request's address, the error, or done / failed."""
        r = self.record
        return (r.result.url if r.result and r.result.url else None) or r.error or ("done" if self.ok else "failed")


@dataclass(frozen=True)
class Evidence:
    """Why a task ended as it did: what a person needs to trust (or doubt) the outcome."""

    reason: str = ""
    exit_code: int | None = None
    duration_s: float | None = None  # none: no agent process ran (an interruption, a refusal)
    diff: DiffStats = field(default_factory=DiffStats)
    last_lines: tuple[str, ...] = ()
    dropped_lines: int = 0  # output beyond the stored maximum (SHEPHERD_TASK_LOG_LINES)
    confirmation: str | None = None  # the code of the confirmation that decided the outcome
    actions: tuple[TaskAction, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"exitCode": self.exit_code}
        if self.duration_s is not None:
            data["durationSeconds"] = round(self.duration_s, 3)
        data.update({"diff": self.diff.to_json(), "lastLines": list(self.last_lines), "reason": self.reason})
        if self.dropped_lines:
            data["droppedLines"] = self.dropped_lines
        if self.confirmation is not None:
            data["confirmation"] = self.confirmation
        if self.actions:
            data["actions"] = [a.to_json() for a in self.actions]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Evidence:
        data = data or {}
        duration = data.get("durationSeconds")
        return cls(
            reason=str(data.get("reason") or ""), exit_code=_int(data.get("exitCode")),
            duration_s=float(duration) if duration is not None else None, diff=DiffStats.from_json(data.get("diff")),
            last_lines=tuple(str(x) for x in data.get("lastLines") or ()),
            dropped_lines=int(data.get("droppedLines") or 0), confirmation=_str(data.get("confirmation")),
            actions=tuple(TaskAction.from_json(a) for a in data.get("actions") or () if isinstance(a, Mapping)),
        )

    @classmethod
    def of(cls, task: Task) -> Evidence:
        return cls.from_json(task.evidence)

    def summary(self, outcome: str) -> str:
        """One line for chat: `succeeded in 3.2 s · 2 files changed, +10 -1 · exit 0 · the reason`."""
        parts = [outcome + (f" in {self.duration_s:.1f} s" if self.duration_s is not None else ""),
                 self.diff.describe()]
        if self.exit_code is not None:
            parts.append(f"exit {self.exit_code}")
        if self.reason:
            parts.append(self.reason)
        return " · ".join(parts)

    def pull_request(self) -> int | None:
        """The number of the pull request the task's own actions opened last."""
        return next((a.record.result.number for a in reversed(self.actions)
                     if a.action == "pr.open" and a.record.result and a.record.result.number), None)

    def pushed_head(self) -> str | None:
        """The commit the task's own actions pushed last."""
        return next((a.record.result.head for a in reversed(self.actions)
                     if a.record.result and a.record.result.head), None)


def evidence_summary(task: Task) -> str:
    """One line for chat: the outcome (or status) and the evidence behind it."""
    return Evidence.of(task).summary(task.outcome or task.status)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
