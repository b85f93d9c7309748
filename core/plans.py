"""Plans: what an action would do, and on what. A confirmation is bound to its plan's hash, so a plan that
changed (a new head, other parameters) is a new question (core.confirmations)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.policy import Risk


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
