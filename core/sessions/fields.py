"""A session's fields as people send them (the hub's create and update bodies, the chat commands), checked: a
clear 400 naming the field for anything too big, of the wrong kind, or holding a secret.

Each limit is a named constant, so the API's schema, the README and the check say the same."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core import environ
from core.errors import ValidationFailed
from core.store.models import Session
from core.textcheck import free_text, name_text

VISIBILITIES = ("private", "organization", "collaborate")
WORKFLOW_MODES = ("standard", "loop")
MAX_LABEL = 200
MAX_TAGS = 32
MAX_TAG = 64
MAX_SKILLS = 32
MAX_REPOS = 10
MAX_REPO_FIELD = 500  # each string of a repository object
MAX_ENV = 32
MAX_ENV_NAME = 128
MAX_ENV_VALUE = 2000
MAX_METADATA_BYTES = 16 * 1024
MAX_WORKSPACE_ID = 200
MAX_GOAL = 4000
MAX_ITERATIONS = 100

REPO_FIELDS = ("repoId", "type", "provider", "owner", "name", "fullName", "url", "cloneUrl", "defaultBranch",
               "branch", "ref", "commit", "path", "rootPath")
SKILL_FIELDS = ("skillId", "repo", "name", "url")
LOOP_FIELDS = ("goal", "maxIterations", "autoContinue", "allowDetached")

# Shepherd's own settings and the platforms' credentials: never set for an agent, never named in a value
_OWN_SETTINGS = re.compile(r"^(SHEPHERD_|SLACK_|TELEGRAM_|GITHUB_|DATABASE_URL$|PG)")
# a word of a name that says it holds a credential (ANTHROPIC_API_KEY, GH_TOKEN; not GIT_AUTHOR_NAME)
_SECRET_WORDS = frozenset({"KEY", "APIKEY", "TOKEN", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "PASS", "PWD",
                           "CREDENTIAL", "CREDENTIALS", "PRIVATE", "AUTH", "COOKIE", "PAT", "SESSION"})
# what credentials look like: the common providers' prefixes, a PEM block, a URL with a password in it
_SECRET_VALUE = re.compile(
    r"(sk-[A-Za-z0-9_-]{8,}|gh[pousr]_[A-Za-z0-9]{16,}|github_pat_|xox[abposr]-|xapp-|glpat-|AKIA[0-9A-Z]{12,}"
    r"|AIza[0-9A-Za-z_-]{20,}|-----BEGIN|eyJ[A-Za-z0-9_-]{10,}\.|://[^/\s:@]+:[^/\s@]+@)"
)
_REFERENCE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")  # $NAME or ${NAME}: a value naming another variable
_LONG_TOKEN = re.compile(r"[A-Za-z0-9+/=_-]{32,}")  # a long unbroken run of token characters
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class LoopSettings:
    """Loop mode's settings as the hub names them (stored in `session.loop`)."""

    goal: str
    max_iterations: int
    auto_continue: bool
    allow_detached: bool

    def stored(self) -> dict[str, Any]:
        return {"goal": self.goal, "maxIterations": self.max_iterations, "autoContinue": self.auto_continue,
                "allowDetached": self.allow_detached}

    @classmethod
    def of(cls, session: Session) -> LoopSettings:
        """A loop session's settings as stored (`session.loop`), the session's task its goal when it has none."""
        data: dict[str, Any] = session.loop or {}
        return cls(goal=str(data.get("goal") or session.task or ""),
                   max_iterations=max(1, int(data.get("maxIterations") or 1)),
                   auto_continue=bool(data.get("autoContinue")), allow_detached=bool(data.get("allowDetached")))


def label(value: str | None, fallback: str) -> str:
    text = name_text((value or "").strip(), "label")
    if len(text) > MAX_LABEL:
        raise ValidationFailed(f"label is at most {MAX_LABEL} characters", code="INVALID_LABEL")
    if text:
        return text
    first = fallback.strip().splitlines()[0] if fallback.strip() else "session"
    return first[:MAX_LABEL].replace("\t", " ")


def choice(value: str | None, choices: Sequence[str], what: str, default: str) -> str:
    if value is None:
        return default
    if value not in choices:
        raise ValidationFailed(f"{what} is one of {', '.join(choices)}, not {value!r}",
                               code=f"INVALID_{what.upper()}")
    return value


def tags(values: Iterable[Any] | None) -> list[str]:
    """Tags: at most MAX_TAGS, each one line of 1-MAX_TAG characters; duplicates kept once, in order."""
    out: list[str] = []
    for value in values or ():
        if not isinstance(value, str) or not value.strip() or len(value.strip()) > MAX_TAG:
            raise ValidationFailed(f"tags: each tag is 1-{MAX_TAG} characters", code="INVALID_TAGS")
        tag = name_text(value.strip(), "a tag")
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise ValidationFailed(f"tags: at most {MAX_TAGS}", code="INVALID_TAGS")
    return out


def _strings(item: Mapping[str, Any], keys: Sequence[str], what: str, code: str) -> dict[str, Any]:
    """An object of optional strings (a repository, a skill) with only the documented keys, each one line."""
    unknown = sorted(set(item) - set(keys))
    if unknown:
        raise ValidationFailed(f"{what}: unknown field {unknown[0]!r} (fields: {', '.join(keys)})", code=code)
    out: dict[str, Any] = {}
    for key in keys:
        value = item.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > MAX_REPO_FIELD:
            raise ValidationFailed(f"{what}.{key} is text of at most {MAX_REPO_FIELD} characters", code=code)
        out[key] = name_text(value, f"{what}.{key}")
    return out


def skills(values: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    out = []
    for i, item in enumerate(values or ()):
        skill = _strings(item, SKILL_FIELDS, f"skills[{i}]", "INVALID_SKILLS")
        if not skill.get("skillId") or not skill.get("repo"):
            raise ValidationFailed(f"skills[{i}]: skillId and repo are required", code="INVALID_SKILLS")
        out.append(skill)
    if len(out) > MAX_SKILLS:
        raise ValidationFailed(f"skills: at most {MAX_SKILLS}", code="INVALID_SKILLS")
    return out


def repos(primary: Mapping[str, Any] | None, more: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """The session's repositories, the primary first (`repo`, else the first of `repos`); the primary given again
    in `repos` is kept once."""
    out: list[dict[str, Any]] = []
    items = ([("repo", primary)] if primary is not None else []) + [(f"repos[{i}]", r)
                                                                     for i, r in enumerate(more or ())]
    for what, item in items:
        repo = _strings(item, REPO_FIELDS, what, "INVALID_REPO")
        if not repo:
            raise ValidationFailed(f"{what}: an empty repository", code="INVALID_REPO")
        if repo not in out:
            out.append(repo)
    if len(out) > MAX_REPOS:
        raise ValidationFailed(f"repos: at most {MAX_REPOS}", code="INVALID_REPO")
    return out


def repo_ref(repo: Mapping[str, Any]) -> str | None:
    """What a task clones for a repository object: fullName, owner/name, else its clone URL."""
    if repo.get("fullName"):
        return str(repo["fullName"])
    if repo.get("owner") and repo.get("name"):
        return f"{repo['owner']}/{repo['name']}"
    return str(repo["cloneUrl"]) if repo.get("cloneUrl") else None


def metadata(value: Mapping[str, Any] | None) -> dict[str, Any]:
    data = dict(value or {})
    size = len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise ValidationFailed(f"metadata is at most {MAX_METADATA_BYTES} bytes as JSON, not {size}",
                               code="INVALID_METADATA")
    return data


def workspace_id(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.strip() or len(value) > MAX_WORKSPACE_ID:
        raise ValidationFailed(f"workspaceId is 1-{MAX_WORKSPACE_ID} characters", code="INVALID_WORKSPACE")
    return name_text(value.strip(), "workspaceId")


def _secret_name(name: str) -> bool:
    return bool(_OWN_SETTINGS.match(name)) or any(word in _SECRET_WORDS for word in name.upper().split("_"))


def env(values: Mapping[str, Any] | None, allowed: Iterable[str]) -> dict[str, str]:
    """Variables for the session's agents: names from the agent environment's allowlist (core.environ.AGENT and
    the operator's SHEPHERD_AGENT_ENV) only, values free text; never a credential (by its name, by its looks, or by
    naming one of Shepherd's own settings), since the session's env is stored and shown to whoever reads it."""
    names = set(environ.AGENT) | set(allowed)
    out: dict[str, str] = {}
    for name, value in (values or {}).items():
        if not _ENV_NAME.match(name) or len(name) > MAX_ENV_NAME:
            raise ValidationFailed(f"env: {name[:MAX_ENV_NAME]!r} is not a variable name", code="INVALID_ENV")
        if _secret_name(name):
            raise ValidationFailed(f"env: {name} names a secret or one of Shepherd's settings: a session's env is "
                                   "stored and shown, so it never holds credentials (an operator passes those "
                                   "with SHEPHERD_AGENT_ENV)", code="ENV_SECRET")
        if name not in names:
            raise ValidationFailed(f"env: {name} is not in the agent environment's allowlist: one of "
                                   f"{', '.join(sorted(names))} (an operator adds names with SHEPHERD_AGENT_ENV)",
                                   code="ENV_NOT_ALLOWED")
        if not isinstance(value, str) or len(value) > MAX_ENV_VALUE:
            raise ValidationFailed(f"env: {name} is text of at most {MAX_ENV_VALUE} characters", code="INVALID_ENV")
        text = free_text(value, f"env {name}")
        referenced = [ref for ref in _REFERENCE.findall(text) if _secret_name(ref)]
        if _SECRET_VALUE.search(text) or _LONG_TOKEN.search(text) or referenced:
            raise ValidationFailed(f"env: the value of {name} looks like a secret (a credential, or a reference to "
                                   "one): a session's env is stored and shown, so it never holds credentials",
                                   code="ENV_SECRET")
        out[name] = text
    if len(out) > MAX_ENV:
        raise ValidationFailed(f"env: at most {MAX_ENV} variables", code="INVALID_ENV")
    return out


def loop(value: Mapping[str, Any] | None, mode: str) -> LoopSettings | None:
    """Loop settings, only (and always) in loop mode: a goal (the task when it is unset) and 1-MAX_ITERATIONS."""
    if mode != "loop":
        if value:
            raise ValidationFailed("loop settings need workflowMode loop", code="INVALID_LOOP")
        return None
    data = dict(value or {})
    unknown = sorted(set(data) - set(LOOP_FIELDS))
    if unknown:
        raise ValidationFailed(f"loop: unknown field {unknown[0]!r} (fields: {', '.join(LOOP_FIELDS)})",
                               code="INVALID_LOOP")
    goal = data.get("goal")
    if goal is not None and (not isinstance(goal, str) or len(goal) > MAX_GOAL):
        raise ValidationFailed(f"loop.goal is text of at most {MAX_GOAL} characters", code="INVALID_LOOP")
    iterations = data.get("maxIterations", 10)
    if isinstance(iterations, bool) or not isinstance(iterations, (int, float)) or iterations != int(iterations) \
            or not 1 <= iterations <= MAX_ITERATIONS:
        raise ValidationFailed(f"loop.maxIterations is a whole number from 1 to {MAX_ITERATIONS}",
                               code="INVALID_LOOP")
    flags = {}
    for key in ("autoContinue", "allowDetached"):
        flag = data.get(key, False)
        if not isinstance(flag, bool):
            raise ValidationFailed(f"loop.{key} is true or false", code="INVALID_LOOP")
        flags[key] = flag
    return LoopSettings(free_text((goal or "").strip(), "loop.goal"), int(iterations), flags["autoContinue"],
                        flags["allowDetached"])
