"""core.channels.outbox.Message -> Slack Block Kit, within the limits Slack enforces (PLATFORM_RULES.md):
at most 50 blocks, section text <= 3000, at most 10 fields of <= 2000, button text <= 75, value <= 2000,
action_id <= 255. Long text is cut, and the cut says where to read all of it (`logs <task>`).

Every text Shepherd sends to Slack is built here, and every piece of it that Shepherd did not write itself
(prompts, names, agent output, summaries, replies) goes through `escape` exactly once, in blocks and in the
notification text alike: nothing a person or an agent typed can ping (<!channel>, <@U…>) or show a disguised
link (<url|label>). The only markup that reaches Slack is Shepherd's own (`mention`, `channel_link`, bold,
code), added around text already escaped; limits are applied after escaping, without cutting an entity.
"""

from __future__ import annotations

import re
from typing import Any

from core.channels.outbox import Button, Message

SECTION_MAX = 3000
FIELD_MAX = 2000
FIELDS_MAX = 10
CONTEXT_MAX = 10
BUTTON_TEXT_MAX = 75
BUTTON_VALUE_MAX = 2000
CONFIRM_TEXT_MAX = 300
CONFIRM_BUTTON_MAX = 30
FALLBACK_MAX = 3000  # the notification text; Slack allows 40,000 but nobody reads that in a push
SAID_MAX = 2900  # what someone typed, quoted in the message a task's thread hangs from
DIGEST_PARTS = 10  # a digest's sections (it has five): far below the 50 blocks a message may have
ACTION_PREFIX = "shepherd_"  # action_id = shepherd_approve | shepherd_reject
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")
_USER_ID = re.compile(r"[UW][A-Z0-9]{1,40}")
_CHANNEL_ID = re.compile(r"[CDG][A-Z0-9]{1,40}")


def escape(text: str) -> str:
    """Slack's three control characters, so that a prompt cannot ping @channel or fake a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(escaped: str, limit: int) -> str:
    """Escaped text cut to `limit` characters without leaving half an entity (`&am`) at the end."""
    if len(escaped) <= limit:
        return escaped
    return _PARTIAL_ENTITY.sub("", escaped[:limit])


def mention(user_id: str) -> str:
    """A ping of one Slack user: Shepherd's own markup, made only of a well-formed user id."""
    return f"<@{user_id}>" if _USER_ID.fullmatch(user_id) else escape(user_id)


def channel_link(channel_id: str) -> str:
    return f"<#{channel_id}>" if _CHANNEL_ID.fullmatch(channel_id) else escape(channel_id)


def _said(said: str) -> str:
    """What someone typed, quoted as code: escaped, and unable to close the quote early."""
    return "`" + clip(escape(said.replace("`", "'")), SAID_MAX) + "`"


def root_text(user: str, said: str) -> str:
    """The message a slash command's task thread hangs from: who asked for what."""
    return f"{mention(user)} {_said(said)}"


def moved_root_text(channel: str, said: str) -> str:
    """The same, in a DM with whoever asked, when Shepherd is not in the channel they typed it in."""
    return f"{_said(said)} (from {channel_link(channel)}: `/invite @Shepherd` there to work in it)"


def moved_note(channel: str) -> str:
    """Under an answer sent to a DM because Shepherd is not in the channel it was asked in."""
    return f"(from {channel_link(channel)}: invite me there with `/invite @Shepherd` to answer in place)"


def cut(text: str, limit: int, more: str = "") -> str:
    """Escaped `text` if it fits in `limit`, else its head and a note of what was cut and where to read it
    (`more`, as core wrote it: escaped here)."""
    if len(text) <= limit:
        return text
    note = f"… (cut {len(text) - limit} characters" + (f"; `{escape(more)}` shows all)" if more else ")")
    return clip(text, max(0, limit - len(note) - 20)).rstrip() + "\n" + note


def cut_tail(text: str, limit: int, more: str = "") -> str:
    """Output keeps its newest lines: the tail of escaped `text` when it does not fit, and a note of the rest."""
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
    note = f"… {dropped} earlier line{'s' if dropped != 1 else ''}" + (f"; `{escape(more)}` shows all" if more else "")
    return note + "\n" + "\n".join(kept)


def _code(text: str, limit: int, more: str, *, tail: bool) -> str:
    body = escape(text.replace("```", "'''"))
    body = cut_tail(body, limit - 8, more) if tail else cut(body, limit - 8, more)
    return f"```{body}```"


def _section(mrkdwn: str, more: str = "") -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": cut(mrkdwn, SECTION_MAX, more)}}


def _context(parts: list[str]) -> dict[str, Any]:
    return {"type": "context",
            "elements": [{"type": "mrkdwn", "text": cut(p, FIELD_MAX)} for p in parts[:CONTEXT_MAX]]}


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": clip(escape(text), limit), "emoji": True}


def _fields(fields: dict[str, str], skip: tuple[str, ...] = ()) -> dict[str, Any] | None:
    shown = [(k, v) for k, v in fields.items() if k not in skip and v][:FIELDS_MAX]
    if not shown:
        return None
    return {"type": "section", "fields": [
        {"type": "mrkdwn", "text": cut(f"*{escape(k)}*\n{escape(v)}", FIELD_MAX)} for k, v in shown]}


def _button(button: Button) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "button", "action_id": ACTION_PREFIX + button.action,
        "text": _plain(button.label, BUTTON_TEXT_MAX),
        "value": button.value[:BUTTON_VALUE_MAX],  # an opaque id, never shown: carried back as it is
    }
    if button.style in ("primary", "danger"):
        element["style"] = button.style
    if button.confirm:
        element["confirm"] = {
            "title": _plain("Are you sure?", CONFIRM_BUTTON_MAX),
            "text": {"type": "mrkdwn", "text": cut(escape(button.confirm), CONFIRM_TEXT_MAX)},
            "confirm": _plain(button.label, CONFIRM_BUTTON_MAX),
            "deny": _plain("Cancel", CONFIRM_BUTTON_MAX),
            "style": "danger" if button.style == "danger" else "primary",
        }
    return element


def render(message: Message) -> tuple[str, list[dict[str, Any]]]:
    """(notification text, blocks) for chat.postMessage / chat.update / chat.postEphemeral."""
    text = escape(message.text)
    fallback = cut(text, FALLBACK_MAX, message.more)
    blocks: list[dict[str, Any]] = []
    if message.kind == "confirmation":
        pending = message.state == "pending"
        blocks.append(_section(f"*{text}*" if pending else text, message.more))
        fields = _fields(message.fields)
        if fields:
            blocks.append(fields)
        if pending and message.buttons:
            blocks.append({"type": "actions", "block_id": f"confirmation:{message.code}"[:255],
                           "elements": [_button(b) for b in message.buttons]})
            blocks.append(_context([escape(f"or type `approve {message.code}` / `reject {message.code} <reason>`")]))
    elif message.kind == "progress":
        blocks.append(_section(text, message.more))
        facts = [f"{escape(k)}: {escape(v)}" for k, v in message.fields.items() if k not in ("task", "status") and v]
        if facts:
            blocks.append(_context([" · ".join(facts)]))
        if message.detail:
            blocks.append(_section(_code(message.detail, SECTION_MAX, message.more, tail=True)))
    elif message.kind == "outcome":
        blocks.append(_section(f"*{text}*", message.more))
        fields = _fields(message.fields, skip=("outcome",))
        if fields:
            blocks.append(fields)
        if message.detail:
            blocks.append(_section(_code(message.detail, SECTION_MAX, message.more, tail=True)))
        if message.more:
            blocks.append(_context([f"`{escape(message.more)}` shows the whole log"]))
    elif message.kind == "digest":  # a headline, then one section per part: read as text, not code, on a phone
        headline, _, rest = message.text.partition("\n")
        fallback = cut(escape(headline), FALLBACK_MAX)
        blocks.append(_section(f"*{escape(headline)}*"))
        parts = [f"*{escape(title)}*\n{escape(body)}" for title, body in message.fields.items()]
        blocks += [_section(part, message.more) for part in (parts or [escape(rest.strip())]) if part][:DIGEST_PARTS]
    else:  # a command's reply, a notice
        multi_line = "\n" in message.text.strip()
        blocks.append(_section(_code(message.text, SECTION_MAX, message.more, tail=False) if multi_line else text,
                               message.more))
    return fallback, blocks
