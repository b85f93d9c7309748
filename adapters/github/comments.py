"""Shepherd's messages as GitHub comments (Markdown), without I/O.

A task's news becomes one sticky comment (Prow's report comment is the model): it begins with the hidden marker
`<!-- shepherd:task:<id> -->`, by which it is found again after a restart, and it gathers one part per message
key (the task's status, each confirmation it asked, the outcome of its last turns). Each part has one writer in
core (core.channels.progress, core.autonomy.prompts); the comment only places them. The parts themselves are kept
in the comment, as a hidden state line at its end, so that a Shepherd that restarted (or another worker) edits
the comment without losing what the others wrote.

What comes from people and agents (prompts, output) cannot mention anyone, open HTML or fake a marker: `@` and `<`
are defused, and output goes into a code fence longer than any run of backticks in it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from core.channels.outbox import Message

BODY_MAX = 65_536  # GitHub refuses a longer comment body (422)
BODY_BUDGET = 60_000  # what the parts may take, leaving room for the state line's growth
LINE_MAX = 300  # one output line shown
OUTCOMES_KEPT = 3  # turns whose outcome the comment still shows
NOTES_KEPT = 5
ASKS_KEPT = 10  # approvals shown (the newest)
TEXT_MAX = 1000  # one message's text shown
_STATE = re.compile(r"<!-- shepherd:state ([A-Za-z0-9_=-]*) -->\s*\Z")


HANDLE = "shepherd"  # SHEPHERD_GITHUB_HANDLE's default

def marker(task_id: str) -> str:
    """The hidden first line of a task's sticky comment."""
    return f"<!-- shepherd:task:{task_id} -->"


def defuse(text: str) -> str:
    """Text that renders as written: no @mention pings anyone, no HTML (or hidden marker) opens, no table breaks."""
    return text.replace("<", "&lt;").replace("@", "@\u200b").replace("|", "\\|")


def fence(text: str, lang: str = "text") -> str:
    """`text` in a code block that nothing inside it can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{text}\n{ticks}"


def _lines(detail: str) -> str:
    """Output lines as shown: each cut at LINE_MAX."""
    return "\n".join(line if len(line) <= LINE_MAX else line[:LINE_MAX] + " …" for line in detail.splitlines())


def _fields(fields: dict[str, str]) -> str:
    if not fields:
        return ""
    return "\n".join(["| | |", "|---|---|", *(f"| {defuse(k)} | {defuse(v)} |" for k, v in fields.items())])


def render(message: Message, handle: str = HANDLE) -> str:
    """One message on its own: an ordinary comment (a reply, a notice), or a part of a sticky comment. `handle`:
    the word comment commands start with (SHEPHERD_GITHUB_HANDLE), which an approval's hint names."""
    if message.kind == "confirmation":
        return _confirmation(message, handle)
    if message.kind == "digest":  # a headline, then each part as a list under its bold title
        headline, _, rest = message.text.partition("\n")
        parts = [f"**{defuse(title)}**\n" + "\n".join(f"- {defuse(line.removeprefix('• '))}"
                                                        for line in body.splitlines())
                 for title, body in message.fields.items()]
        return "\n\n".join([f"**{defuse(headline)}**", *(parts or [defuse(rest.strip())])])
    blocks = [f"**{defuse(message.text)}**" if message.kind in ("progress", "outcome") else defuse(message.text)]
    if message.fields:
        blocks.append(_fields(message.fields))
    if message.detail:
        title = "latest output" if message.kind == "progress" else "last lines"
        more = f" (all of it: `{defuse(message.more)}`)" if message.more else ""
        blocks.append(f"<details><summary>{title}{more}</summary>\n\n{fence(_lines(message.detail))}\n</details>")
    return "\n\n".join(blocks)


def _confirmation(message: Message, handle: str) -> str:
    text = defuse(message.text)
    if message.state != "pending" or not message.code:
        return f"- {text}"
    code = defuse(message.code)
    facts = ", ".join(f"{defuse(k)}: {defuse(v)}" for k, v in message.fields.items() if k != "task")
    return (f"- ✋ {text}\n  {facts}\n  approve with `/{handle} approve {code}`, refuse with "
            f"`/{handle} reject {code}` (or from any other channel)")


@dataclass
class Sticky:
    """A task's sticky comment: its GitHub id (None until posted) and its parts, by message key, in order."""

    task_id: str
    comment_id: int | None = None
    parts: dict[str, dict[str, Any]] | None = None
    handle: str = HANDLE

    def put(self, message: Message) -> None:
        """Place (or replace) `message`'s part, keeping only the latest outcomes and notes."""
        parts = dict(self.parts or {})
        parts.pop(message.key, None)
        # kept as shown: the comment holds its parts twice (shown, and in its state line), within GitHub's limit
        parts[message.key] = {**message.to_json(), "text": message.text[:TEXT_MAX], "detail": _lines(message.detail),
                              "buttons": []}
        for kind, kept in (("outcome", OUTCOMES_KEPT), ("notice", NOTES_KEPT), ("confirmation", ASKS_KEPT)):
            keys = [k for k, p in parts.items() if p.get("kind") == kind]
            for old in keys[:-kept]:
                del parts[old]
        self.parts = parts

    def body(self) -> str:
        """The comment's Markdown: the marker, the status, the approvals, the outcomes, then the state line. Output
        lines are what is left out when it would be too long for GitHub: everything else is short."""
        parts = self.parts or {}
        text, state = self._text(parts), _state(parts)
        if len(text) + len(state) > BODY_BUDGET:
            parts = {k: {**p, "detail": ""} for k, p in parts.items()}
            text, state = self._text(parts), _state(parts)
            text = text[: max(0, BODY_BUDGET - len(state))]
        return f"{text}\n\n{state}"

    def _text(self, parts: dict[str, dict[str, Any]]) -> str:
        messages = [Message.from_json(p) for p in parts.values()]
        asks = [m for m in messages if m.kind == "confirmation"][-ASKS_KEPT:]
        blocks = [marker(self.task_id), *(render(m, self.handle) for m in messages if m.kind == "progress")]
        if asks:
            blocks.append("**Approvals**\n\n" + "\n".join(render(m, self.handle) for m in asks))
        blocks += [render(m, self.handle) for m in messages if m.kind == "outcome"]
        blocks += [render(m, self.handle) for m in messages if m.kind not in ("progress", "confirmation", "outcome")]
        return "\n\n".join(blocks)

    @classmethod
    def read(cls, task_id: str, comment_id: int, body: str, handle: str = HANDLE) -> Sticky | None:
        """The sticky comment of `task_id` from a comment's body, or None when the body is not one (its first line
        is not the task's marker: a marker quoted elsewhere in a comment does not count)."""
        if not body.startswith(marker(task_id)):
            return None
        found = _STATE.search(body)
        parts: dict[str, dict[str, Any]] = {}
        if found is not None:
            try:
                data = json.loads(base64.urlsafe_b64decode(found.group(1).encode()))
                parts = {str(k): _part(v) for k, v in data.items()} if isinstance(data, dict) else {}
            except (ValueError, binascii.Error, TypeError, AttributeError):
                parts = {}  # a state line someone edited: the parts are written again as news comes
        return cls(task_id, comment_id, parts, handle)


def _part(value: object) -> dict[str, Any]:
    """One part as it was kept: a message Shepherd wrote (a part someone edited into something else is refused)."""
    if not isinstance(value, dict):
        raise ValueError("not a message")
    return Message.from_json(value).to_json()


def _state(parts: dict[str, dict[str, Any]]) -> str:
    data = base64.urlsafe_b64encode(json.dumps(parts, separators=(",", ":")).encode()).decode()
    return f"<!-- shepherd:state {data} -->"
