"""Plans: what an action would do, and on what, and the words for a confirmation's life. A confirmation is
bound to its plan's hash, so a plan that changed (a new head, other parameters) is a new question
(core.autonomy.confirmations)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from core.autonomy.policy import Risk
from core.errors import ValidationFailed
from core.textcheck import free_text, name_text

MAX_SUMMARY = 1000
# A task's start, when a webhook (not a person) asks for it: gated like any action (ARCHITECTURE section 3). There is
# nothing to carry out but the task's move to pending (core.autonomy.executor, core.tasks.service).
START_ACTIONS = frozenset({"task.start", "review.start"})


class Status(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    VOID = "void"


class Origin(StrEnum):
    POLICY = "policy"
    PERSON = "person"
    AGENT = "agent"


class Execution(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Target:
    """What an action acts on: a repository, its branch and base, the commit approved, a pull request."""

    repo: str | None = None
    branch: str | None = None
    base: str | None = None
    head: str | None = None  # the commit people (or policy) approved: a moved branch voids the approval
    number: int | None = None  # a pull request or issue

    def to_json(self) -> dict[str, Any]:
        """As stored with a confirmation (and hashed into its plan): only what is set."""
        return {k: v for k, v in (("repo", self.repo), ("branch", self.branch), ("base", self.base),
                                  ("head", self.head), ("number", self.number)) if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Target:
        data = data or {}
        number = data.get("number")
        return cls(repo=_text(data.get("repo")), branch=_text(data.get("branch")), base=_text(data.get("base")),
                   head=_text(data.get("head")), number=int(number) if number is not None else None)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def plan_hash(action: str, target: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    canonical = json.dumps({"action": action, "target": target, "params": params}, sort_keys=True,
                           separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Plan:
    """What would run: the action, on what, with what."""

    action: str
    summary: str
    target: Target = field(default_factory=Target)
    params: dict[str, Any] = field(default_factory=dict)
    declared: Risk | None = None  # an agent's own estimate; it can only raise the policy's risk

    @property
    def hash(self) -> str:
        return plan_hash(self.action, self.target.to_json(), self.params)


def describe(action: str, target: Target, params: Mapping[str, Any]) -> str:
    """One line for a prompt: what exactly would happen."""
    repo, branch, base = target.repo or "?", target.branch or "?", target.base or "?"
    head = (target.head or "")[:10]
    if action == "pr.open":
        return f"open a pull request on {repo}: {branch} -> {base} at {head}"
    if action == "branch.push":
        return f"push {branch} at {head} to {repo}"
    if action == "pr.merge":
        return f"merge pull request #{params.get('number')} on {repo} at {head}"
    if action == "pr.comment":
        return f"comment on {repo}#{params.get('number')}: {str(params.get('body', ''))[:80]}"
    if action.startswith("deploy."):
        return f"deploy {branch} at {head} of {repo} to {action.removeprefix('deploy.')}"
    return action


def check_summary(text: str) -> str:
    text = free_text((text or "").strip(), "the summary")
    if not text or len(text) > MAX_SUMMARY:
        raise ValidationFailed(f"a summary is 1-{MAX_SUMMARY} characters", code="INVALID_SUMMARY")
    return text


def checked_plan(plan: Plan) -> Plan:
    """What people or an agent wrote into a plan (its summary, its text parameters) is text like any other:
    checked, and kept with its line breaks normalised."""
    params = {name_text(str(key), "a parameter name"): free_text(value, f"parameter {key}")
              if isinstance(value, str) else value for key, value in plan.params.items()}
    return replace(plan, summary=free_text(plan.summary, "the summary"), params=params)
