"""A Slack payload -> the item Shepherd acts on, parsed once, without I/O.

`parse` is the only router of Slack items: the delivery ledger records an item only when `parse` returns one.
A live request is parsed once, at the door, and that item is processed; an item replayed from the ledger is
parsed from its stored payload by this same function. So a payload means the same thing however often it is
read, and what `parse` leaves alone (events Shepherd has no use for, buttons that are not Shepherd's, other
interactivity) is never recorded and never decides anything.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from adapters.slack.blocks import ACTION_PREFIX
from core.errors import ValidationFailed

# A Shepherd button's action_id -> whether the click approves. Only these two decide; nothing else does.
VOTES = {f"{ACTION_PREFIX}approve": True, f"{ACTION_PREFIX}reject": False}
ID_MAX = 150  # event_id, trigger_id: Slack's are a few dozen characters
TS_MAX = 40
TEXT_MAX = 40_000
# message subtypes that are people talking (others are edits, joins, bots, …)
SPOKEN = (None, "", "thread_broadcast", "file_share")
MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|([^>]*))?>")  # <@U123> or, escaped, <@U123|name>


class BadPayload(ValidationFailed):
    """A verified payload of a kind Shepherd acts on that lacks what it needs: answered 400 with what is wrong."""

    code = "MALFORMED_PAYLOAD"


@dataclass(frozen=True)
class SlashCommand:
    key: str  # the ledger key
    user: str
    user_name: str
    channel: str
    command: str  # /shepherd
    text: str


@dataclass(frozen=True)
class Said:
    """A mention of Shepherd, a direct message, or a reply in a thread (which may be a task's)."""

    key: str
    user: str
    channel: str
    ts: str
    thread_ts: str  # "" outside a thread
    text: str
    mention: bool  # an app_mention event
    direct: bool  # in a direct message with Shepherd
    mentions_someone: bool  # the text mentions a person (a reply that does is not a turn for the task)


@dataclass(frozen=True)
class Vote:
    """A click on a confirmation's Approve or Reject button."""

    key: str
    user: str
    user_name: str
    channel: str  # where to answer a refusal ("" if Slack did not say)
    thread: str | None
    confirmation: str  # the opaque id the button carries
    approve: bool


Item = SlashCommand | Said | Vote


def text(value: Any, limit: int = TEXT_MAX) -> str:
    """A string field of a payload ("" when absent or not a string), at most `limit` characters."""
    return value[:limit] if isinstance(value, str) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse(body: dict[str, Any]) -> Item | None:
    """The item in a Slack payload, or None when Shepherd leaves the payload alone.
    Raises BadPayload for a payload of a kind Shepherd acts on that lacks what it needs."""
    kind = body.get("type")
    if kind == "event_callback":
        return _event(body)
    if "command" in body:
        return _command(body)
    if kind == "block_actions":
        return _click(body)
    return None


def _event(body: dict[str, Any]) -> Said | None:
    event_id, event = text(body.get("event_id"), ID_MAX), body.get("event")
    if not event_id or not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise BadPayload("an event_callback needs event_id and an event with a type")
    kind, subtype = event["type"], event.get("subtype")
    user, channel = text(event.get("user")), text(event.get("channel"))
    if kind not in ("app_mention", "message") or event.get("bot_id") or subtype not in SPOKEN \
            or not user or not channel:
        return None  # other events, our own posts, edits, joins, other bots
    said = text(event.get("text"))
    thread_ts = text(event.get("thread_ts"), TS_MAX)
    item = Said(key=f"event:{event_id}", user=user, channel=channel, ts=text(event.get("ts"), TS_MAX),
                thread_ts=thread_ts, text=said, mention=kind == "app_mention",
                direct=kind == "message" and event.get("channel_type") == "im",
                mentions_someone=MENTION.search(said) is not None)
    if item.mention or item.direct or (thread_ts and not item.mentions_someone):
        return item
    # channel chatter, and messages that mention Shepherd (those arrive again as app_mention)
    return None


def _command(body: dict[str, Any]) -> SlashCommand:
    user, channel = text(body.get("user_id")), text(body.get("channel_id"))
    if not user or not channel:
        raise BadPayload("a slash command needs user_id and channel_id")
    trigger = text(body.get("trigger_id"), ID_MAX)
    if not trigger:  # unique per invocation; without it, the invocation's own fields
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:32]
        trigger = f"sha:{digest}"
    return SlashCommand(key=f"command:{trigger}", user=user, user_name=text(body.get("user_name")), channel=channel,
                        command=text(body.get("command"), 100) or "/shepherd", text=text(body.get("text")))


def _click(body: dict[str, Any]) -> Vote | None:
    actions, user = body.get("actions"), _dict(body.get("user"))
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict) or not text(user.get("id")):
        raise BadPayload("block_actions needs actions and user")
    action = actions[0]
    approve = VOTES.get(text(action.get("action_id"), 300))
    if approve is None:
        return None  # not Shepherd's button: it decides nothing
    trigger = text(body.get("trigger_id"), ID_MAX) or f"{user['id']}:{text(action.get('action_ts'), TS_MAX)}"
    container, message = _dict(body.get("container")), _dict(body.get("message"))
    channel = text(container.get("channel_id")) or text(_dict(body.get("channel")).get("id"))
    thread = text(message.get("thread_ts"), TS_MAX) or text(container.get("message_ts"), TS_MAX) or None
    return Vote(key=f"action:{trigger}", user=text(user.get("id")), user_name=text(user.get("username")),
                channel=channel, thread=thread, confirmation=text(action.get("value"), 200), approve=approve)


_LINK = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")
_QUOTES = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"})


def unescape(value: str) -> str:
    """Slack's three entities back into characters (the inverse of blocks.escape)."""
    return value.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def plain(value: str, names: dict[str, str]) -> str:
    """What someone typed, from Slack's markup: <@U123|dave> becomes `names[U123]` (else dave), <#C1|dev> #dev,
    <!here> @here, <https://x.example|x.example> the link as typed, the escaped &, <, > and a phone's curly
    quotes plain ones. Slack sends text this way in events, and in slash commands with should_escape."""

    def unwrap(match: re.Match[str]) -> str:
        target, label = match.group(1), unescape(match.group(2) or "")
        if target[:2] in ("@U", "@W"):
            return names.get(target[1:]) or label or target[1:]
        if target.startswith("#"):
            return "#" + (label or target[1:])
        if target.startswith("!"):  # <!here>, <!channel>, <!subteam^S1|@team>, <!date^…|fallback>
            return label or "@" + target[1:].split("^")[0]
        url = unescape(target)
        if not label or label == url.split(":", 1)[-1].lstrip("/"):
            return label or url  # autolinked as typed: x.example, mailto's address, a pasted URL
        return f"{label} ({url})"

    return unescape(_LINK.sub(unwrap, value)).translate(_QUOTES)


def _not_json(word: str) -> Any:
    """NaN and Infinity: Python's reader takes them, the standard does not, and no store keeps them (PostgreSQL
    refuses them in the delivery ledger's JSON). Slack never sends them."""
    raise ValueError(f"{word} is not JSON")


def read_body(body: str, content_type: str) -> dict[str, Any]:
    """The payload of an HTTP request from Slack: JSON (events), a form (slash commands), or a form whose
    `payload` field is JSON (interactivity). BadPayload when it is none of these."""
    try:
        if content_type == "application/json" or body.startswith("{"):
            payload = json.loads(body, parse_constant=_not_json)
        else:
            form = dict(parse_qsl(body, keep_blank_values=True))
            payload = json.loads(form["payload"], parse_constant=_not_json) if "payload" in form else form
    except RecursionError:
        raise BadPayload("the JSON is nested too deeply") from None
    except ValueError:
        raise BadPayload("the body is not the JSON or the form Slack sends") from None
    if not isinstance(payload, dict) or not payload:
        raise BadPayload("the body holds no Slack payload")
    if not isinstance(payload.get("type"), str) and "command" not in payload and "ssl_check" not in payload:
        raise BadPayload("a Slack payload has a type (events, interactivity) or a command")
    return payload
