"""Agent CLIs Shepherd knows how to drive, and custom ones from settings.

A preset says how to start a first turn, how to run a follow-up turn in the same session (the resume
form), how to ask for the version (a CLI that cannot answer `--version` within 5 s is not usable) and
what to tell a person who does not have it. Templates are argument lists, never shell text: a prompt
is one argument, whatever it contains.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ValidationFailed
from core.tasks.state import Outcome

VERSION_TIMEOUT_S = 5.0
CHECK_TTL_S = 60.0
PLACEHOLDERS = ("{prompt}", "{session}", "{workspace}", "{task}")
# The interpreter itself, not a virtualenv's link to it: what a sandbox shows of a Python program (the demo
# agent, the `shepherd ask` launcher) is this installation, not Shepherd's virtualenv.
PYTHON = os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable)


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    start: tuple[str, ...]
    resume: tuple[str, ...] | None  # None: a follow-up starts the command afresh with the new input
    version: tuple[str, ...]
    install: str
    session_pattern: str | None = None  # when the CLI names its own session in its output
    cheap: tuple[str, ...] = ()  # the options that pick its cheaper model (CloudCoding's `haiku`); () when none

    def own_words(self, *, follow_up: bool) -> tuple[str, ...]:
        """The command's words that come from configuration, not from a prompt or a task: what a sandbox
        may look at on the host to run it (its program, a script it names)."""
        template = self.resume if follow_up and self.resume else self.start
        return tuple(t for t in template if not any(p in t for p in PLACEHOLDERS))

    def argv(self, *, prompt: str, session: str, workspace: Path, task: str, follow_up: bool,
             cheap: bool = False) -> list[str]:
        template = self.resume if follow_up and self.resume else self.start
        if cheap and self.cheap:  # the options go before the prompt's word, where every CLI reads options
            at = next(i for i, t in enumerate(template) if "{prompt}" in t)
            template = (*template[:at], *self.cheap, *template[at:])
        values = {"{prompt}": prompt, "{session}": session, "{workspace}": str(workspace), "{task}": task}
        out = []
        for token in template:
            for key, value in values.items():
                token = token.replace(key, value)
            out.append(token)
        return out


BUILTIN_PRESETS: tuple[Preset, ...] = (
    Preset(
        "claude", "Claude Code",
        start=("claude", "-p", "--session-id", "{session}", "{prompt}"),
        resume=("claude", "-p", "--resume", "{session}", "{prompt}"),
        version=("claude", "--version"),
        cheap=("--model", "haiku"),
        install="curl -fsSL https://claude.ai/install.sh | bash (or npm install -g @anthropic-ai/claude-code), "
                "then log in once with `claude` or pass ANTHROPIC_API_KEY through SHEPHERD_AGENT_ENV",
    ),
    Preset(
        "codex", "OpenAI Codex CLI",
        start=("codex", "exec", "--sandbox", "workspace-write", "{prompt}"),
        resume=("codex", "exec", "--sandbox", "workspace-write", "resume", "{session}", "{prompt}"),
        version=("codex", "--version"),
        install="npm install -g @openai/codex, then `codex login` or pass OPENAI_API_KEY through "
                "SHEPHERD_AGENT_ENV",
        session_pattern=r"^session id: ([0-9a-f-]{36})",
    ),
    Preset(
        "opencode", "OpenCode",
        start=("opencode", "run", "{prompt}"),
        resume=("opencode", "run", "--continue", "{prompt}"),
        version=("opencode", "--version"),
        install="npm install -g opencode-ai, then `opencode auth login`",
    ),
    Preset(
        "aider", "Aider",
        start=("aider", "--yes-always", "--no-pretty", "--no-check-update", "--message", "{prompt}"),
        resume=("aider", "--yes-always", "--no-pretty", "--no-check-update", "--restore-chat-history",
                "--message", "{prompt}"),
        version=("aider", "--version"),
        install="python -m pip install aider-install && aider-install, and pass your model's API key "
                "through SHEPHERD_AGENT_ENV",
    ),
)

_CUSTOM_NAME = re.compile(r"^[a-z][a-z0-9_-]{1,31}$")


def custom_presets(spec: Mapping[str, Any]) -> list[Preset]:
    """SHEPHERD_AGENTS: {"name": {"command": "mycli run {prompt}", "resume": "…", "version": "mycli -V"}}."""
    presets = []
    for name, body in spec.items():  # a built-in preset's name is allowed: the entry replaces that preset's command
        where = f"SHEPHERD_AGENTS[{name!r}]"
        if not _CUSTOM_NAME.match(name):
            raise ValidationFailed(f"{where}: a custom agent name is 2-32 lower-case characters (a-z, 0-9, _ and -), "
                                   "starting with a letter")
        if not isinstance(body, Mapping) or not isinstance(body.get("command"), str):
            raise ValidationFailed(f"{where}: needs a \"command\" string, e.g. \"mycli run {{prompt}}\"")
        unknown = set(body) - {"command", "resume", "version", "install"}
        if unknown:
            raise ValidationFailed(f"{where}: unknown keys {sorted(unknown)}")

        def split(key: str, body: Mapping[str, Any] = body, where: str = where) -> tuple[str, ...] | None:
            value = body.get(key)
            if value is None:
                return None
            if not isinstance(value, str) or not value.strip():
                raise ValidationFailed(f"{where}.{key}: a command line")
            try:
                return tuple(shlex.split(value))
            except ValueError as exc:
                raise ValidationFailed(f"{where}.{key}: {exc}") from None

        start = split("command")
        assert start is not None
        if any(p in start[0] for p in PLACEHOLDERS):
            raise ValidationFailed(f"{where}.command: the program is configuration: no placeholder in its first word")
        if not any("{prompt}" in t for t in start):
            raise ValidationFailed(f"{where}.command: must contain {{prompt}}")
        resume = split("resume")
        if resume is not None and any(p in resume[0] for p in PLACEHOLDERS):
            raise ValidationFailed(f"{where}.resume: the program is configuration: no placeholder in its first word")
        if resume is not None and not any("{prompt}" in t for t in resume):
            raise ValidationFailed(f"{where}.resume: must contain {{prompt}}")
        presets.append(Preset(
            name, f"custom: {body['command']}", start=start, resume=resume,
            version=split("version") or (start[0], "--version"),
            install=str(body.get("install") or f"install {start[0]} on the runner's PATH"),
        ))
    return presets


@dataclass(frozen=True)
class Availability:
    name: str
    usable: bool
    detail: str  # the version it printed, or what is wrong and how to fix it


class AgentCatalog:
    """The agents this runner can start, each checked with `--version` before use (cached a minute)."""

    def __init__(self, custom: Sequence[Preset] = ()) -> None:
        self.presets = {p.name: p for p in (*BUILTIN_PRESETS, *custom)}
        self._checked: dict[str, tuple[float, Availability]] = {}
        self._checking: dict[str, asyncio.Lock] = {}  # one check of an agent at a time; the others use its answer

    def names(self) -> list[str]:
        return list(self.presets)

    def get(self, name: str) -> Preset:
        try:
            return self.presets[name]
        except KeyError:
            raise ValidationFailed(
                f"unknown agent {name!r}: one of {', '.join(self.presets)}", code="UNKNOWN_AGENT"
            ) from None

    async def check(self, name: str, *, fresh: bool = False) -> Availability:
        preset = self.get(name)
        cached = self._checked.get(name)
        if cached and not fresh and time.monotonic() - cached[0] < CHECK_TTL_S:
            return cached[1]
        # A hundred tasks claimed at once all find the cache empty: they wait for one `--version`, not a hundred
        # (each a process of the agent's own; the demo agent's is a Python start-up, ~50 ms of CPU).
        async with self._checking.setdefault(name, asyncio.Lock()):
            cached = self._checked.get(name)
            if cached and not fresh and time.monotonic() - cached[0] < CHECK_TTL_S:
                return cached[1]
            result = await self._version(preset)
            self._checked[name] = (time.monotonic(), result)
            return result

    @staticmethod
    async def _version(preset: Preset) -> Availability:
        program = preset.version[0]
        try:
            proc = await asyncio.create_subprocess_exec(
                *preset.version, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )
        except (FileNotFoundError, PermissionError):
            return Availability(preset.name, False, f"{program} is not installed: {preset.install}")
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=VERSION_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return Availability(
                preset.name, False, f"`{' '.join(preset.version[-2:])}` did not answer in {VERSION_TIMEOUT_S:.0f} s"
            )
        text = out.decode(errors="replace").strip().splitlines()
        if proc.returncode != 0:
            last = text[-1] if text else ""
            return Availability(preset.name, False, f"`{program} --version` failed (exit {proc.returncode}) {last}"
                                f": {preset.install}")
        return Availability(preset.name, True, text[0][:200] if text else "ok")


# --- reading what an agent says about itself ------------------------------------------------------
# An exit code alone does not say a task succeeded: agents in print mode exit 0 after a tool use was
# refused, or after their credit ran out. These phrases come from the CLIs' own messages.

_DENIAL = re.compile(
    r"haven't granted it yet|requested permissions? to (?:use|read from|write to|edit)"
    r"|permission_denials\"\s*:\s*\[\s*\{|permission to use \S+ (?:has been|was) denied"
    r"|\b(?:exec command|patch) rejected by user|sandbox denied|blocked by policy|auto-rejecting"
    r"|user rejected permission to use this specific tool call|rule which prevents you from using this specific tool",
    re.IGNORECASE,
)
_BUDGET = re.compile(
    r"reached max turns|exceeded usd budget|error_max_(?:turns|budget_usd)|credit balance is too low"
    r"|hit your (?:usage |session |weekly )?limit|usage limit reached|quota exceeded|insufficient credits"
    r"|insufficient_quota|rate limited you",
    re.IGNORECASE,
)


# Every phrase above holds one of these words. Case-insensitive alternations cost the regex engine a try at every
# position (about 60 µs on a 100-character line here, the largest cost of an output line); a plain substring test
# on the case-folded line costs a microsecond or two and sends only the rare line that could match to the regexes.
HINTS = ("grant", "permission", "reject", "denied", "blocked", "prevents", "max turns", "budget", "error_max_",
         "credit", "limit", "quota")


def hinted(text: str) -> bool:
    """Whether `text` (a line, or many joined) holds a word of HINTS: else no line of it is a verdict."""
    folded = text.casefold()
    for hint in HINTS:  # noqa: SIM110 (a plain loop: half the time of any() over a generator)
        if hint in folded:
            return True
    return False


def verdict(line: str) -> Outcome | None:
    """`denied` or `budget_exceeded` when an output line says so, else None."""
    if not hinted(line):
        return None
    if _DENIAL.search(line):
        return Outcome.DENIED
    if _BUDGET.search(line):
        return Outcome.BUDGET_EXCEEDED
    return None


# What a turn cost, where the agent says so: Claude Code's JSON result (`--output-format json`, or the last line of
# `stream-json`) carries `"total_cost_usd": 0.0123`, the cost of that run. The first cheap test keeps the regex off
# nearly every line.
_COST = re.compile(r'"total_cost_usd"\s*:\s*([0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)')
MAX_REPORTED_COST = 1_000_000.0


COST_HINT = "total_cost_usd"  # in every line that reports a cost: else no line of a text does


def reported_cost(line: str) -> float | None:
    """The dollars an output line reports the turn cost, or None when it reports none."""
    if COST_HINT not in line:
        return None
    match = _COST.search(line)
    if match is None:
        return None
    value = float(match.group(1))
    return value if 0 <= value <= MAX_REPORTED_COST else None
