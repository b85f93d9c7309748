"""core.channels.Message -> Slack Block Kit, within the limits Slack enforces (PLATFORM_RULES.md):
at most 50 blocks, section text <= 3000, at most 10 fields of <= 2000, button text <= 75, value <= 2000,
action_id <= 255. Long text is cut, and the cut says where to read all of it (`logs <task>`)."""

from __future__ import annotations

from typing import Any

from core.channels import Button, Message

SECTION_MAX = 3000
FIELD_MAX = 2000
FIELDS_MAX = 10
CONTEXT_MAX = 10
BUTTON_TEXT_MAX = 75
BUTTON_VALUE_MAX = 2000
FALLBACK_MAX = 3000  # the notification text; Slack allows 40,000 but nobody reads that in a push
ACTION_PREFIX = "shepherd_"  # action_id = shepherd_approve | shepherd_reject


def escape(text: str) -> str:
    """Slack's three control characters, so that a prompt cannot ping @channel or fake a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut(text: str, limit: int, more: str = "") -> str:
    """`text` if it fits in `limit`, else its head and a note of what was cut and where to read it."""
    if len(text) <= limit:
        return text
    note = f"… (cut {len(text) - limit} characters" + (f"; `{more}` shows all)" if more else ")")
    return text[: max(0, limit - len(note) - 20)].rstrip() + "\n" + note


def cut_tail(text: str, limit: int, more: str = "") -> str:
    """Output keeps its newest lines: the tail of `text` when it does not fit, and a note of the rest."""
    if len(text) <= limit:
        return text
    lines = text.splitlines()
    kept: list[str] = []
    size = 120  # room for the note
    for line in reversed(lines):
        if size + len(line) + 1 > limit:
            break
        kept.insert(0, line)
        size += len(line) + 1
    if not kept:  # one enormous line: its end
        kept = [lines[-1][-(limit - 120):]]
    dropped = len(lines) - len(kept)
    note = f"… {dropped} earlier line{'s' if dropped != 1 else ''}" + (f"; `{more}` shows all" if more else "")
    return note + "\n" + "\n".join(kept)


def _code(text: str, limit: int, more: str, *, tail: bool) -> str:
    body = escape(text.replace("```", "'''"))
    body = cut_tail(body, limit - 8, more) if tail else cut(body, limit - 8, more)
    return f"```{body}```"


def _section(text: str, more: str = "") -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": cut(text, SECTION_MAX, more)}}


def _context(parts: list[str]) -> dict[str, Any]:
    return {"type": "context",
            "elements": [{"type": "mrkdwn", "text": cut(p, FIELD_MAX)} for p in parts[:CONTEXT_MAX]]}


def _fields(fields: dict[str, str], skip: tuple[str, ...] = ()) -> dict[str, Any] | None:
    shown = [(k, v) for k, v in fields.items() if k not in skip and v][:FIELDS_MAX]
    if not shown:
        return None
    return {"type": "section", "fields": [
        {"type": "mrkdwn", "text": cut(f"*{escape(k)}*\n{escape(v)}", FIELD_MAX)} for k, v in shown]}


def _button(button: Button) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "button", "action_id": ACTION_PREFIX + button.action,
        "text": {"type": "plain_text", "text": button.label[:BUTTON_TEXT_MAX], "emoji": True},
        "value": button.value[:BUTTON_VALUE_MAX],
    }
    if button.style in ("primary", "danger"):
        element["style"] = button.style
    if button.confirm:
        element["confirm"] = {
            "title": {"type": "plain_text", "text": "Are you sure?"},
            "text": {"type": "mrkdwn", "text": cut(escape(button.confirm), 300)},
            "confirm": {"type": "plain_text", "text": button.label[:30]},
            "deny": {"type": "plain_text", "text": "Cancel"},
            "style": "danger" if button.style == "danger" else "primary",
        }
    return element


def render(message: Message) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks) for chat.postMessage / chat.update."""
    fallback = cut(message.text, FALLBACK_MAX, message.more)
    blocks: list[dict[str, Any]] = []
    if message.kind == "confirmation":
        pending = message.state == "pending"
        head = f"*{escape(message.text)}*" if pending else escape(message.text)
        blocks.append(_section(head, message.more))
        fields = _fields(message.fields)
        if fields:
            blocks.append(fields)
        if pending and message.buttons:
            blocks.append({"type": "actions", "block_id": f"confirmation:{message.code}"[:255],
                           "elements": [_button(b) for b in message.buttons]})
            blocks.append(_context([f"or type `approve {message.code}` / `reject {message.code} <reason>`"]))
    elif message.kind == "progress":
        blocks.append(_section(escape(message.text), message.more))
        facts = [f"{escape(k)}: {escape(v)}" for k, v in message.fields.items() if k not in ("task", "status") and v]
        if facts:
            blocks.append(_context([" · ".join(facts)]))
        if message.detail:
            blocks.append(_section(_code(message.detail, SECTION_MAX, message.more, tail=True)))
    elif message.kind == "outcome":
        blocks.append(_section(f"*{escape(message.text)}*", message.more))
        fields = _fields(message.fields, skip=("outcome",))
        if fields:
            blocks.append(fields)
        if message.detail:
            blocks.append(_section(_code(message.detail, SECTION_MAX, message.more, tail=True)))
        if message.more:
            blocks.append(_context([f"`{escape(message.more)}` shows the whole log"]))
    else:  # a command's reply, a notice
        text = message.text
        multi_line = "\n" in text.strip()
        blocks.append(_section(_code(text, SECTION_MAX, message.more, tail=False) if multi_line
                               else escape(text), message.more))
    return fallback, blocks
