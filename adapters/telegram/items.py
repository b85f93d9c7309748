"""A Telegram update -> what Shepherd reads of it, without I/O: its ledger key, the place it was said at, the
command in a message's text, the vote a button carries.

The same functions read a live update (webhook or getUpdates) and one replayed from the delivery ledger, so an
update means the same thing however often it is read.
"""

from __future__ import annotations

import json
import re
from typing import Any

from telegram import Message, Update

from core.errors import ValidationFailed

SOURCE = "telegram"
ALLOWED_UPDATES = ("message", "callback_query")  # what Shepherd acts on: setWebhook's and getUpdates' filter
MAX_UPDATE_ID = 2**53  # Telegram's ids fit in a double; a larger one is not Telegram's
# /command or /command@BotName at the start of a message: Telegram's names are 1-32 of a-z, 0-9 and _
_COMMAND = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@([A-Za-z0-9_]{1,64}))?(?=\s|$)")
_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'"})
_DASHES = re.compile(r"(?<!\S)[—–](?=[a-z])")  # a phone's smart punctuation turns --repo into —repo
START = "start"  # Telegram's first message to a bot: answered with `help`, not "unknown command"
VOTES = {"approve": True, "reject": False}  # callback_data "<action>:<confirmation id>" (the contract)


class BadUpdate(ValidationFailed):
    """A request body that is not a Telegram update: answered 400 with what is wrong."""

    code = "MALFORMED_UPDATE"


def _not_json(word: str) -> Any:
    raise ValueError(f"{word} is not JSON")  # NaN, Infinity: no store keeps them, Telegram never sends them


def read_update(raw: bytes) -> dict[str, Any]:
    """The JSON object of a webhook request, with the update_id every update has."""
    try:
        payload = json.loads(raw.decode("utf-8"), parse_constant=_not_json)
    except RecursionError:
        raise BadUpdate("the JSON is nested too deeply") from None
    except (UnicodeDecodeError, ValueError):
        raise BadUpdate("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise BadUpdate("the body is not a JSON object")
    update_id = payload.get("update_id")
    if not isinstance(update_id, int) or isinstance(update_id, bool) or not 0 <= update_id < MAX_UPDATE_ID:
        raise BadUpdate("an update has a numeric update_id")
    return payload


def to_update(payload: dict[str, Any], bot: Any) -> Update:
    """python-telegram-bot's Update of a payload; BadUpdate when its fields are not Telegram's shapes."""
    try:
        update = Update.de_json(payload, bot)
    except Exception as exc:  # PTB's readers raise whatever a wrong shape gives (KeyError, TypeError, …)
        raise BadUpdate(f"the update's fields are not Telegram's ({type(exc).__name__})") from None
    if update is None:
        raise BadUpdate("the body holds no update")
    _check_shapes(update)
    return update


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_shapes(update: Update) -> None:
    """PTB's de_json takes any JSON value for a field: the fields Shepherd reads must have Telegram's types, or
    the handler would fail on them (and be tried again, for ever) instead of the request being a 400."""
    query = update.callback_query
    if query is not None:
        if not isinstance(query.id, str) or not _is_int(query.from_user.id):
            raise BadUpdate("a callback_query has a string id and a from.id number")
        if query.data is not None and not isinstance(query.data, str):
            raise BadUpdate("a callback_query's data is a string")
    message = update.message or update.edited_message
    if message is None:
        return
    for name, value in (("message_id", message.message_id), ("chat.id", message.chat.id)):
        if not _is_int(value):
            raise BadUpdate(f"a message's {name} is a number")
    if message.text is not None and not isinstance(message.text, str):
        raise BadUpdate("a message's text is a string")
    if message.from_user is not None and not _is_int(message.from_user.id):
        raise BadUpdate("a message's from.id is a number")
    if message.message_thread_id is not None and not _is_int(message.message_thread_id):
        raise BadUpdate("a message's message_thread_id is a number")
    replied = message.reply_to_message
    if replied is not None and (not _is_int(replied.message_id)
                                or (replied.from_user is not None and not _is_int(replied.from_user.id))):
        raise BadUpdate("a replied-to message has a message_id and from.id numbers")


def key_of(update: Update) -> str:
    """The delivery ledger's key: the update_id with the id of what it carries (a message's chat and id, a callback
    query's id). A redelivery has the same key; Telegram's update_id sequence may start again after a quiet week,
    and a new update with an old update_id is still a new key."""
    key = f"update:{update.update_id}"
    if update.callback_query is not None:
        return f"{key}:callback:{update.callback_query.id}"[:200]
    message = update.message or update.edited_message
    if message is not None:
        return f"{key}:{message.chat.id}.{message.message_id}"
    return key


def address_of(message: Message) -> str:
    """The thread address of where a message was said: its chat, or `<chat>:<message_thread_id>` in a forum topic."""
    if message.is_topic_message and message.message_thread_id:
        return f"{message.chat.id}:{message.message_thread_id}"
    return str(message.chat.id)


def typed(text: str) -> str:
    """What was typed, without a phone's smart punctuation: curly quotes straight, a dash before an option --."""
    return _DASHES.sub("--", text.translate(_QUOTES))


def command_text(text: str, *, bot_username: str, private: bool) -> str | None:
    """The command a message says, as the grammar reads it, or None when it says none to Shepherd.

    `/run "fix it" --repo acme/api` -> `run "fix it" --repo acme/api`; `/status@ShepherdBot` -> `status` (the
    bot's own name, any case); `/status@OtherBot` -> None (another bot's). In a private chat plain text is a
    command too; in a group only a /command is."""
    text = typed(text).strip()
    found = _COMMAND.match(text)
    if found is None:
        return text if private and text and not text.startswith("/") else None
    addressed = found.group(2)
    if addressed and addressed.casefold() != bot_username.casefold():
        return None
    name = found.group(1).lower()
    if name == START:  # what a Telegram client sends when someone opens the bot (a deep link adds a payload)
        return "help"
    return f"{name}{text[found.end():]}".strip()


def is_command(text: str) -> bool:
    return _COMMAND.match(text.strip()) is not None


def vote_of(data: str | None) -> tuple[bool, str] | None:
    """A button's callback_data -> (approve?, the confirmation id), or None when it is not Shepherd's."""
    action, sep, value = (data or "").partition(":")
    if not sep or not value or action not in VOTES:
        return None
    return VOTES[action], value
