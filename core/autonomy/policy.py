"""Graduated autonomy: which actions run by themselves, which ask people first, which are refused.

The policy is data (ARCHITECTURE section 3): a risk class per action, the level table, an always-ask
list, a quorum per risk and who may approve. Built-in defaults below; a project may override them with
a TOML file (`<SHEPHERD_POLICY_DIR>/<project>.toml`), validated here with messages that name the key.

    level  name        runs without asking          asks people first
    0      Observe     read                         nothing: everything else is refused
    1      Suggest     read                         low and above
    2      Assist      read, low                    medium and above
    3      Act         read, low, medium            high, critical
    4      Trusted     read, low, medium, high      critical
    5      Autonomous  everything but always-ask    the always-ask list
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any

from core.agents import LEVEL_NAMES, MAX_LEVEL, MIN_LEVEL
from core.errors import ValidationFailed
from core.people.access import Role


class Risk(IntEnum):
    READ = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str) -> Risk:
        try:
            return cls[str(value).strip().upper()]
        except KeyError:
            raise ValidationFailed(
                f"unknown risk {value!r}: one of {', '.join(r.label for r in cls)}", code="INVALID_RISK"
            ) from None


class Verdict(StrEnum):
    RUN = "run"  # runs now, decided by policy
    ASK = "ask"  # waits for people: a confirmation
    REFUSE = "refuse"  # never runs at this level


# The riskiest class each level runs without asking. Level 0 runs reads and refuses the rest.
AUTO_UP_TO: dict[int, Risk] = {
    0: Risk.READ, 1: Risk.READ, 2: Risk.LOW, 3: Risk.MEDIUM, 4: Risk.HIGH, 5: Risk.CRITICAL,
}

DEFAULT_ACTIONS: dict[str, Risk] = {
    # read
    "status": Risk.READ, "logs": Risk.READ, "list": Risk.READ,
    # low
    "issue.comment": Risk.LOW, "pr.comment": Risk.LOW, "tests.run": Risk.LOW, "branch.create": Risk.LOW,
    "review.start": Risk.LOW, "budget.extend": Risk.LOW, "loop.continue": Risk.LOW,
    # medium
    "branch.push": Risk.MEDIUM, "pr.open": Risk.MEDIUM, "task.start": Risk.MEDIUM,
    # high
    "pr.merge": Risk.HIGH, "deploy.staging": Risk.HIGH, "agent.restart": Risk.HIGH,
    # critical
    "deploy.production": Risk.CRITICAL, "rollback": Risk.CRITICAL, "push.force": Risk.CRITICAL,
    "secrets.change": Risk.CRITICAL,
}
DEFAULT_ALWAYS_ASK = frozenset({"deploy.production", "rollback", "push.force", "secrets.change"})
DEFAULT_QUORUM: dict[Risk, int] = {Risk.READ: 1, Risk.LOW: 1, Risk.MEDIUM: 1, Risk.HIGH: 1, Risk.CRITICAL: 2}
DEFAULT_EXPIRY_S = 30 * 60
MAX_QUORUM = 10
ACTION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")


def check_action(name: str) -> str:
    name = (name or "").strip().lower()
    if not name or len(name) > 64 or not set(name) <= ACTION_CHARS:
        raise ValidationFailed(
            f"{name!r} is not an action name: 1-64 of a-z, 0-9, '.', '_' and '-' (like pr.open)",
            code="INVALID_ACTION",
        )
    return name


@dataclass(frozen=True)
class DeployTarget:
    """How `deploy.<environment>` is carried out: a command (run in the task's workspace) or a URL
    (POSTed a JSON description of what to deploy)."""

    environment: str
    command: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class Decision:
    action: str
    risk: Risk
    level: int
    verdict: Verdict
    quorum: int
    always_ask: bool
    reason: str
    source: str  # which policy decided: "built-in" or the file


@dataclass(frozen=True)
class Policy:
    actions: dict[str, Risk] = field(default_factory=lambda: dict(DEFAULT_ACTIONS))
    always_ask: frozenset[str] = DEFAULT_ALWAYS_ASK
    quorum: dict[Risk, int] = field(default_factory=lambda: dict(DEFAULT_QUORUM))
    approver_role: Role = Role.APPROVER
    expiry_s: int = DEFAULT_EXPIRY_S
    unknown_risk: Risk = Risk.HIGH  # an action the policy does not name
    deploy: dict[str, DeployTarget] = field(default_factory=dict)
    source: str = "built-in"

    def risk_of(self, action: str, declared: Risk | None = None) -> Risk:
        """An action's risk. A caller (an agent) may declare it riskier than the policy says, never safer."""
        known = self.actions.get(action)
        if known is None:
            known = self.unknown_risk
        return max(known, declared) if declared is not None else known

    def decide(self, action: str, level: int, *, declared: Risk | None = None) -> Decision:
        action = check_action(action)
        if not MIN_LEVEL <= level <= MAX_LEVEL:
            raise ValidationFailed(f"autonomy level {level} is outside 0-5", code="INVALID_AUTONOMY_LEVEL")
        risk = self.risk_of(action, declared)
        always = action in self.always_ask and risk > Risk.READ
        quorum = self.quorum[risk]
        where = f"L{level} {LEVEL_NAMES[level]}"
        how = f"{action} is {risk.label} risk" + ("" if action in self.actions else " (not in the policy)")
        if risk is Risk.READ:
            verdict, reason = Verdict.RUN, f"{how}: reads run at every level"
        elif level == 0:
            verdict, reason = Verdict.REFUSE, f"{how}: {where} only observes; side effects are refused"
        elif always:
            verdict, reason = Verdict.ASK, f"{how} and on the always-ask list: people decide at every level"
        elif risk <= AUTO_UP_TO[level]:
            verdict, reason = Verdict.RUN, f"{how}: {where} runs up to {AUTO_UP_TO[level].label} by itself"
        else:
            verdict, reason = Verdict.ASK, (
                f"{how}: {where} runs up to {AUTO_UP_TO[level].label} by itself, so people decide"
            )
        if verdict is Verdict.ASK:
            role = self.approver_role.label
            reason += f" ({quorum} approval{'s' if quorum > 1 else ''} from role {role} or above)"
        return Decision(action, risk, level, verdict, quorum, always, reason, self.source)


DEFAULT_POLICY = Policy()


# --- policy files --------------------------------------------------------------------------------

_KEYS = {"risk", "always_ask", "quorum", "approvers", "expiry_minutes", "unknown_risk", "deploy"}


class PolicyError(ValidationFailed):
    code = "INVALID_POLICY"


def parse_policy(text: str, source: str = "policy", *, expiry_s: int = DEFAULT_EXPIRY_S) -> Policy:
    """A policy from TOML: the built-in defaults with the file's keys laid over them.

        always_ask = ["deploy.production", "rollback"]   # replaces the list
        approvers = "approver"                             # or "admin"
        expiry_minutes = 30
        unknown_risk = "high"
        [risk]                                             # merged over the defaults
        "pr.merge" = "critical"
        [quorum]
        high = 2
        [deploy.staging]
        command = "make deploy ENV=staging"
        [deploy.production]
        url = "https://deploy.example.com/hooks/production"
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    return policy_from(data, source, expiry_s=expiry_s)


def policy_from(data: dict[str, Any], source: str, *, expiry_s: int = DEFAULT_EXPIRY_S) -> Policy:
    """`expiry_s` stands unless the file names `expiry_minutes`."""
    def fail(key: str, problem: str) -> PolicyError:
        return PolicyError(f"{source}: {key}: {problem}")

    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key; the keys are {', '.join(sorted(_KEYS))}")

    def risk(key: str, value: Any) -> Risk:
        if not isinstance(value, str):
            raise fail(key, f"a risk is a string: {', '.join(r.label for r in Risk)}")
        try:
            return Risk.parse(value)
        except ValidationFailed as exc:
            raise fail(key, exc.message) from None

    def action(key: str, value: Any) -> str:
        try:
            return check_action(value if isinstance(value, str) else "")
        except ValidationFailed as exc:
            raise fail(key, exc.message) from None

    actions = dict(DEFAULT_ACTIONS)
    raw_risk = data.get("risk", {})
    if not isinstance(raw_risk, dict):
        raise fail("risk", 'a table of action = "risk", like "pr.merge" = "critical"')
    for name, value in raw_risk.items():
        actions[action(f"risk.{name}", name)] = risk(f"risk.{name}", value)

    always = DEFAULT_ALWAYS_ASK
    if "always_ask" in data:
        raw = data["always_ask"]
        if not isinstance(raw, list):
            raise fail("always_ask", 'a list of action names, like ["deploy.production"]')
        always = frozenset(action(f"always_ask[{i}]", a) for i, a in enumerate(raw))

    quorum = dict(DEFAULT_QUORUM)
    raw_quorum = data.get("quorum", {})
    if not isinstance(raw_quorum, dict):
        raise fail("quorum", "a table of risk = number, like critical = 2")
    for name, value in raw_quorum.items():
        r = risk(f"quorum.{name}", name)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_QUORUM:
            raise fail(f"quorum.{name}", f"a whole number 1-{MAX_QUORUM}")
        quorum[r] = value

    approver_role = Role.APPROVER
    if "approvers" in data:
        raw_role = data["approvers"]
        if raw_role not in ("approver", "admin"):
            raise fail("approvers", '"approver" (approvers and admins decide) or "admin" (admins only)')
        approver_role = Role.parse(raw_role)

    if "expiry_minutes" in data:
        minutes = data["expiry_minutes"]
        if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not 1 <= minutes <= 7 * 24 * 60:
            raise fail("expiry_minutes", "a number of minutes, 1 to 10080 (a week)")
        expiry_s = int(minutes * 60)

    unknown_risk = risk("unknown_risk", data["unknown_risk"]) if "unknown_risk" in data else Risk.HIGH
    if unknown_risk is Risk.READ:
        raise fail("unknown_risk", "an action the policy does not name cannot be a read")

    deploy: dict[str, DeployTarget] = {}
    raw_deploy = data.get("deploy", {})
    if not isinstance(raw_deploy, dict):
        raise fail("deploy", "a table per environment, like [deploy.staging] command = \"…\"")
    for env, spec in raw_deploy.items():
        key = f"deploy.{env}"
        action(key, key)
        if not isinstance(spec, dict) or set(spec) - {"command", "url"} or len(spec) != 1:
            raise fail(key, "give exactly one of command = \"…\" or url = \"https://…\"")
        command, url = spec.get("command"), spec.get("url")
        if command is not None and (not isinstance(command, str) or not command.strip()):
            raise fail(f"{key}.command", "a non-empty command line")
        if url is not None and (not isinstance(url, str) or not url.startswith(("https://", "http://"))):
            raise fail(f"{key}.url", "an http:// or https:// URL")
        deploy[env] = DeployTarget(env, command=command, url=url)
        actions.setdefault(key, Risk.CRITICAL if env in ("production", "prod") else Risk.HIGH)

    return Policy(actions=actions, always_ask=always, quorum=quorum, approver_role=approver_role,
                  expiry_s=expiry_s, unknown_risk=unknown_risk, deploy=deploy, source=source)


class PolicyStore:
    """Project policies from files in one folder, re-read when a file changes.

    `<dir>/<project name>.toml`; a project without a file has the built-in policy (with the configured
    expiry). A file that does not validate is an error for that project's actions, never a silent default.
    """

    def __init__(self, directory: Path | None = None, *, expiry_s: int = DEFAULT_EXPIRY_S) -> None:
        self.directory = directory
        self.default = Policy(expiry_s=expiry_s) if expiry_s != DEFAULT_EXPIRY_S else DEFAULT_POLICY
        self._cache: dict[str, tuple[float, Policy]] = {}

    def path_for(self, project: str) -> Path | None:
        if self.directory is None or not project or "/" in project or project.startswith("."):
            return None
        return self.directory / f"{project}.toml"

    def for_project(self, project: str | None) -> Policy:
        path = self.path_for(project) if project else None
        if path is None:
            return self.default
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return self.default
        cached = self._cache.get(str(path))
        if cached is not None and cached[0] == mtime:
            return cached[1]
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
        policy = parse_policy(text, source=str(path), expiry_s=self.default.expiry_s)
        self._cache[str(path)] = (mtime, policy)
        return policy

    def check_all(self) -> list[tuple[str, str | None]]:
        """Every policy file and its problem (None when it validates): for `shepherd doctor`."""
        if self.directory is None or not self.directory.is_dir():
            return []
        found: list[tuple[str, str | None]] = []
        for path in sorted(self.directory.glob("*.toml")):
            try:
                parse_policy(path.read_text(encoding="utf-8"), source=str(path))
                found.append((str(path), None))
            except (ValidationFailed, OSError, UnicodeDecodeError) as exc:
                found.append((str(path), getattr(exc, "message", str(exc))))
        return found
