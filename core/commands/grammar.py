"""The command grammar: commands are specs (data); one parser, one help and one permission check
interpret them for every channel (console, Slack, Telegram, GitHub, REST).

A command arrives as what someone typed (split here, shell-like: quotes group words) or as words a channel
has split already (a Slack thread reply becomes `send <task> -- <the reply>`: its text one word, never
quoted and read again). `--` ends the options: every word after it is taken as it is.
"""

from __future__ import annotations

import difflib
import logging
import shlex
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from core.errors import ShepherdError
from core.people.access import Principal, Role

if TYPE_CHECKING:
    from core.shepherd import Shepherd

log = logging.getLogger(__name__)


class ArgKind(Enum):
    POSITIONAL = "positional"
    OPTION = "option"
    REST = "rest"  # every remaining word, e.g. filters or free text
    FLAG = "flag"  # an option without a value: present (True) or not (its default)


@dataclass(frozen=True)
class Arg:
    name: str
    help: str
    kind: ArgKind = ArgKind.POSITIONAL
    required: bool = True
    convert: Callable[[str], Any] = str
    metavar: str | None = None
    default: Any = None
    thread_task: bool = False  # omitted in a task's thread (Slack, Telegram): that task

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def usage(self) -> str:
        meta = self.metavar or self.name.upper()
        if self.kind is ArgKind.FLAG:
            return f"[{self.flag}]"
        if self.kind is ArgKind.OPTION:
            text = f"{self.flag} {meta}"
            return text if self.required else f"[{text}]"
        if self.kind is ArgKind.REST:
            return f"<{self.name}…>" if self.required else f"[{self.name}…]"
        return f"<{self.name}>" if self.required else f"[{self.name}]"


@dataclass(frozen=True)
class Reply:
    """What a command answers: text for any channel, and the data behind it for richer renderers."""

    text: str
    ok: bool = True
    data: Any = None


@dataclass(frozen=True)
class Where:
    """The thread a command came from: a task started there binds it, so its news comes back there; in a
    task's own thread, `task` is that task (`stop` there stops it)."""

    channel: str
    address: str
    task: str | None = None
    shared: bool = False  # others read what is said here (a group chat, a GitHub issue): no secret is shown there


@dataclass(frozen=True)
class CommandContext:
    shepherd: Shepherd
    principal: Principal
    registry: CommandRegistry
    where: Where | None = None
    request_key: str | None = None  # the inbound item this command came in (a retry of it acts once)
    place: Where | None = None  # the place it was said in as a whole (a Slack channel, not a thread in it)


Handler = Callable[[CommandContext, dict[str, Any]], Awaitable[Reply]]


@dataclass(frozen=True)
class CommandSpec:
    name: str  # one or two words: "agents", "agent suspend"
    summary: str
    role: Role
    handler: Handler
    args: tuple[Arg, ...] = ()
    aliases: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    details: str = ""

    @property
    def usage(self) -> str:
        return " ".join([self.name, *(a.usage() for a in self.args)])


class UsageError(ShepherdError):
    code = "USAGE"
    status = 400

    def __init__(self, message: str, *, usage: str | None = None, suggestion: str | None = None) -> None:
        text = message
        if suggestion:
            text += f" Did you mean `{suggestion}`?"
        if usage:
            text += f"\nusage: {usage}"
        super().__init__(text)
        self.suggestion = suggestion


def filter_words(words: list[str], keys: tuple[str, ...], hint: str) -> dict[str, str]:
    """`status:active limit:20` -> {"status": "active", "limit": "20"}; any other word is a usage error."""
    values: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition(":")
        if not sep or not value or key not in keys:
            raise UsageError(f"cannot read filter {word!r}: use {hint}")
        values[key] = value
    return values


def filter_limit(values: dict[str, str], default: int) -> int:
    limit = values.get("limit", str(default))
    if not limit.isdecimal() or not 1 <= int(limit) <= 500:
        raise UsageError("limit is a number from 1 to 500")
    return int(limit)


@dataclass(frozen=True)
class Invocation:
    spec: CommandSpec
    args: dict[str, Any]


def split(text: str) -> list[str]:
    """What someone typed, as words: shell-like, quotes group words."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"cannot read that command: {exc} (close your quotes).") from None


def _close(word: str, options: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(word.lower(), list(options), n=1, cutoff=0.6)
    return found[0] if found else None


@dataclass
class CommandRegistry:
    specs: dict[str, CommandSpec] = field(default_factory=dict)
    _names: dict[str, CommandSpec] = field(default_factory=dict)

    def add(self, spec: CommandSpec) -> CommandSpec:
        for word in (spec.name, *spec.aliases):
            if word in self._names:
                raise ValueError(f"command name {word!r} registered twice")
            self._names[word] = spec
        self.specs[spec.name] = spec
        return spec

    def known(self, word: str) -> bool:
        """Whether `word` names a command (or an alias): a channel that takes free words (a GitHub comment) tells
        a command from an instruction by it."""
        return word.lower() in self._names

    def __iter__(self) -> Any:
        return iter(self.specs.values())

    # --- parsing -----------------------------------------------------------------------------

    def parse(self, said: str | Sequence[str], *, thread_task: str | None = None) -> Invocation:
        """The command in what was typed (a string) or in words already split (a list, taken as they are)."""
        words = split(said) if isinstance(said, str) else list(said)
        if not words:
            raise UsageError("empty command. Try `help`.")
        head2 = " ".join(words[:2]).lower()
        if len(words) >= 2 and head2 in self._names:
            spec, rest = self._names[head2], words[2:]
        elif words[0].lower() in self._names:
            spec, rest = self._names[words[0].lower()], words[1:]
        else:
            guess = _close(head2, self._names) if len(words) >= 2 else None
            guess = guess or _close(words[0], self._names)
            raise UsageError(f"unknown command `{words[0]}`.", suggestion=guess)
        try:
            return Invocation(spec, self._bind(spec, rest, thread_task))
        except UsageError as exc:
            # `agent suspnd x` reads as `agent <id>` with a stray word: point at the sibling meant.
            siblings = [n for n in self.specs if n.startswith(spec.name + " ")]
            if siblings and rest and exc.suggestion is None:
                guess = _close(f"{spec.name} {rest[0]}", siblings)
                if guess:
                    raise UsageError(str(exc).split("\nusage:")[0], suggestion=guess) from None
            raise

    def _bind(self, spec: CommandSpec, words: list[str], thread_task: str | None = None) -> dict[str, Any]:
        options = {a.flag: a for a in spec.args if a.kind in (ArgKind.OPTION, ArgKind.FLAG)}
        positionals = [a for a in spec.args if a.kind is ArgKind.POSITIONAL]
        rest_arg = next((a for a in spec.args if a.kind is ArgKind.REST), None)
        values: dict[str, Any] = {}
        loose: list[str] = []
        i = 0
        while i < len(words):
            word = words[i]
            if word == "--":  # the end of the options: what follows is taken as it is
                loose += words[i + 1:]
                break
            if word.startswith("--") and len(word) > 2:
                flag, sep, inline = word.partition("=")
                arg = options.get(flag)
                if arg is None:
                    raise UsageError(
                        f"`{spec.name}` has no option {flag}.", usage=spec.usage, suggestion=_close(flag, options)
                    )
                if arg.kind is ArgKind.FLAG:
                    if sep:
                        raise UsageError(f"{flag} takes no value.", usage=spec.usage)
                    values[arg.name] = True
                    i += 1
                    continue
                if inline:
                    raw = inline
                elif i + 1 < len(words):
                    i += 1
                    raw = words[i]
                else:
                    raise UsageError(f"{flag} needs a value.", usage=spec.usage)
                values[arg.name] = self._convert(spec, arg, raw)
            else:
                loose.append(word)
            i += 1
        if thread_task and rest_arg is None:
            # in a task's thread the task may go unsaid: `stop`, `logs --tail 5`, `deploy staging`
            missing = len([a for a in positionals if a.required]) - len(loose)
            for arg in positionals:
                if missing > 0 and arg.thread_task:
                    values[arg.name] = thread_task
                    missing -= 1
            positionals = [a for a in positionals if a.name not in values]
        for arg in positionals:
            if loose:
                values[arg.name] = self._convert(spec, arg, loose.pop(0))
        if rest_arg is not None:
            values[rest_arg.name] = loose
            loose = []
        if loose:
            raise UsageError(f"unexpected {' '.join(loose)!r}.", usage=spec.usage)
        for arg in spec.args:
            if arg.name not in values or values[arg.name] in (None, []):
                if arg.required:
                    raise UsageError(f"`{spec.name}` needs {arg.usage()}.", usage=spec.usage)
                values.setdefault(arg.name, arg.default)
        return values

    @staticmethod
    def _convert(spec: CommandSpec, arg: Arg, raw: str) -> Any:
        try:
            return arg.convert(raw)
        except ShepherdError as exc:
            raise UsageError(exc.message, usage=spec.usage) from None
        except ValueError:
            raise UsageError(f"{arg.usage()} cannot be {raw!r}: {arg.help}.", usage=spec.usage) from None

    # --- help --------------------------------------------------------------------------------

    def help(self, topic: str | None = None, principal: Principal | None = None) -> str:
        if topic:
            spec = self._names.get(topic.lower())
            if spec is None:
                raise UsageError(f"no command `{topic}`.", suggestion=_close(topic, self._names))
            lines = [f"{spec.usage}", f"  {spec.summary}", f"  needs role: {spec.role.label}"]
            if spec.details:
                lines.append(f"  {spec.details}")
            for arg in spec.args:
                lines.append(f"  {arg.usage():<24} {arg.help}")
            if spec.aliases:
                lines.append(f"  aliases: {', '.join(spec.aliases)}")
            for example in spec.examples:
                lines.append(f"  e.g. {example}")
            return "\n".join(lines)
        width = max(len(s.usage) for s in self.specs.values())
        lines = ["Commands (`help <command>` for details):"]
        for spec in self.specs.values():
            mark = "" if principal is None or principal.can(spec.role.scope) else "  (needs " + spec.role.label + ")"
            lines.append(f"  {spec.usage:<{width}}  {spec.summary}{mark}")
        return "\n".join(lines)

    # --- running -----------------------------------------------------------------------------

    async def run(
        self, shepherd: Shepherd, principal: Principal, said: str | Sequence[str], *, where: Where | None = None,
        request_key: str | None = None, place: Where | None = None,
    ) -> Reply:
        """Parse (what was typed, or words already split), check permission, execute. Errors become a reply:
        never a traceback in a channel."""
        try:
            invocation = self.parse(said, thread_task=where.task if where else None)
            principal.require(invocation.spec.role.scope, f"`{invocation.spec.name}`")
            ctx = CommandContext(shepherd=shepherd, principal=principal, registry=self, where=where,
                                 request_key=request_key, place=place or where)
            return await invocation.spec.handler(ctx, invocation.args)
        except ShepherdError as exc:
            return Reply(text=f"error: {exc.message}", ok=False, data={"code": exc.code})
        except Exception:
            ref = uuid.uuid4().hex[:8]
            log.exception("command failed (ref %s): %r", ref, said)
            return Reply(text=f"error: something went wrong on our side (ref {ref}); it is logged.", ok=False)
