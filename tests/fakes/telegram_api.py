"""A loopback fake of Telegram's Bot API (https://core.telegram.org/bots/api), so that the real
python-telegram-bot client runs against it (TELEGRAM_API_URL=<fake.api_url>).

    POST|GET /bot<token>/<method>     parameters as JSON, a form, or multipart (as PTB sends them)

Every answer has the Bot API's envelope: {"ok": true, "result": ...} or {"ok": false, "error_code": N,
"description": "...", "parameters": {...}}. A wrong token is a 401 `Unauthorized`; an unknown method a 404.
Tests read `calls` (every request, in order), queue what the next calls of a method meet instead
(`flood_next`: a 429 with `retry_after`; `fail_next`: any error) and `wait_for` a condition.

Methods are added in blocks below, one per part of the channel (`_m_<method>` handlers); this skeleton has
getMe only.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


@dataclass
class _Queued:
    method: str
    status: int
    description: str
    parameters: dict[str, Any] | None = None


class ApiError(Exception):
    """Raised by a handler: answered with the Bot API's error envelope."""

    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


class FakeTelegram:
    """The Bot API of one bot (`token`, `username`)."""

    def __init__(self, token: str = "4242:fake-token", *, username: str = "shepherd_bot", bot_id: int = 4242) -> None:
        self.token = token
        self.username = username
        self.bot_id = bot_id
        self.calls: list[Call] = []
        self._queued: list[_Queued] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def api_url(self) -> str:
        """The base PTB takes (`base_url`): the token and the method follow it."""
        return f"http://127.0.0.1:{self.port}/bot"

    async def __aenter__(self) -> FakeTelegram:
        app = web.Application(client_max_size=60 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- what tests use ----------------------------------------------------------------------------------

    def flood_next(self, method: str, *, retry_after: int = 1, times: int = 1) -> None:
        """The next `times` calls of `method` answer 429 "Too Many Requests: retry after N" with retry_after."""
        self._queued.extend(_Queued(method, 429, f"Too Many Requests: retry after {retry_after}",
                                    {"retry_after": retry_after}) for _ in range(times))

    def fail_next(self, method: str, status: int, description: str) -> None:
        self._queued.append(_Queued(method, status, description))

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("the fake Telegram did not see it in time")
            await asyncio.sleep(0.02)

    # --- the door ----------------------------------------------------------------------------------------

    @staticmethod
    async def _params(request: web.Request) -> dict[str, Any]:
        """The method's parameters as PTB sends them; JSON-encoded values in a form (reply_markup, lists) read."""
        params: dict[str, Any] = dict(request.query)
        if request.method != "POST" or not request.body_exists:
            return params
        ctype = request.content_type
        if ctype == "application/json":
            body = await request.json()
            params.update(body if isinstance(body, dict) else {})
            return params
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, str):
                text: Any = value
            elif isinstance(value, bytes | bytearray):
                text = bytes(value).decode(errors="replace")
            else:  # a file part: what it holds
                text = value.file.read().decode(errors="replace")
            if isinstance(text, str) and text[:1] in ("{", "["):
                try:
                    params[key] = json.loads(text)
                    continue
                except ValueError:
                    pass
            params[key] = text
        return params

    async def _dispatch(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        params = await self._params(request)
        self.calls.append(Call(method, params))
        for queued in self._queued:
            if queued.method == method:
                self._queued.remove(queued)
                return _error(queued.status, queued.description, queued.parameters)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return _error(404, "Not Found: method not found")
        try:
            result = await handler(params)
        except ApiError as exc:
            return _error(exc.status, exc.description, exc.parameters)
        return web.json_response({"ok": True, "result": result})

    # --- methods: the bot itself -------------------------------------------------------------------------

    async def _m_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": "Shepherd", "username": self.username,
                "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}

    # --- methods: tg-in (updates, webhook, command menu, callback answers) --------------------------------
    # Tests `push` updates; getUpdates hands out those at or past its offset (the offset confirms the ones before
    # it, as Telegram does), waiting up to its timeout for one; it is refused while a webhook is set.

    def push(self, update: dict[str, Any]) -> None:
        """An update Telegram has for the bot (again, when it is one already handed out: a redelivery)."""
        self.updates.pending.append(update)
        self.updates.arrived.set()

    @property
    def updates(self) -> _Updates:
        """This block's state, made on first use (the skeleton's constructor is the skeleton's)."""
        state = self.__dict__.get("_updates")
        if state is None:
            state = self.__dict__["_updates"] = _Updates()
        return state

    @property
    def webhook(self) -> dict[str, Any]:
        return self.updates.webhook

    @webhook.setter
    def webhook(self, value: dict[str, Any]) -> None:
        self.updates.webhook = value

    @property
    def commands(self) -> list[dict[str, Any]]:
        return self.updates.commands

    @property
    def answers(self) -> list[dict[str, Any]]:
        return self.updates.answers

    async def _m_getUpdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        state = self.updates
        if state.webhook.get("url"):
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook "
                                "to delete the webhook first")
        offset = params.get("offset")
        if offset is not None:
            state.pending[:] = [u for u in state.pending if u["update_id"] >= int(offset)]
        deadline = time.monotonic() + min(float(params.get("timeout") or 0), 5.0)
        while not state.pending and time.monotonic() < deadline:
            state.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.arrived.wait(), deadline - time.monotonic())
        return list(state.pending[: int(params.get("limit") or 100)])

    async def _m_setWebhook(self, params: dict[str, Any]) -> bool:
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        self.updates.webhook = dict(params)
        return True

    async def _m_deleteWebhook(self, params: dict[str, Any]) -> bool:
        self.updates.webhook = {}
        return True

    async def _m_setMyCommands(self, params: dict[str, Any]) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise ApiError(400, "Bad Request: commands must be a list of at most 100")
        for command in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(command.get("command", ""))):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        self.updates.commands[:] = commands
        return True

    async def _m_answerCallbackQuery(self, params: dict[str, Any]) -> bool:
        if len(str(params.get("text", ""))) > 200:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        if any(a["callback_query_id"] == params.get("callback_query_id") for a in self.answers):
            raise ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        self.updates.answers.append(dict(params))
        return True


    # --- methods: tg-out (sendMessage, editMessageText) --------------------------------------------------
    # Messages are kept per chat (`messages(chat_id)`), with their HTML as sent, the text as Telegram shows it and
    # their inline keyboard. Telegram's refusals as it words them: HTML it cannot parse, a text over 4096
    # characters after parsing, an edit that changes nothing, a message or chat that is not there, a chat the bot
    # was blocked in or kicked from (`gone`).

    @property
    def chats(self) -> dict[int, list[dict[str, Any]]]:
        """chat id -> its messages, oldest first."""
        return self.__dict__.setdefault("_chats", {})  # type: ignore[no-any-return]

    @property
    def gone(self) -> dict[int, tuple[int, str]]:
        """chat id -> how Telegram refuses it: (403, "Forbidden: bot was blocked by the user"), (400, "Bad Request:
        chat not found")."""
        return self.__dict__.setdefault("_gone", {})  # type: ignore[no-any-return]

    def messages(self, chat_id: int) -> list[dict[str, Any]]:
        return self.chats.get(chat_id, [])

    def _chat(self, params: dict[str, Any]) -> int:
        try:
            chat_id = int(params["chat_id"])
        except (KeyError, TypeError, ValueError):
            raise ApiError(400, "Bad Request: chat not found") from None
        if chat_id in self.gone:
            raise ApiError(*self.gone[chat_id])
        return chat_id

    @staticmethod
    def _visible(text: str, parse_mode: str | None) -> str:
        """The text as Telegram shows it (HTML parsed), or its 400 when it cannot parse it or will not take it."""
        if parse_mode not in (None, "", "HTML"):
            raise ApiError(400, f"Bad Request: unsupported parse_mode {parse_mode}")
        shown = text
        if parse_mode == "HTML":
            shown = _parse_html(text)
        if not shown.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if len(shown.encode("utf-16-le")) // 2 > 4096:
            raise ApiError(400, "Bad Request: message is too long")
        return shown

    @staticmethod
    def _markup(params: dict[str, Any]) -> dict[str, Any] | None:
        markup = params.get("reply_markup")
        if isinstance(markup, str):
            markup = json.loads(markup)
        if markup is None:
            return None
        for row in markup.get("inline_keyboard", []):
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode()) <= 64:
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        return dict(markup)

    async def _m_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat(params)
        html_text = str(params.get("text") or "")
        shown = self._visible(html_text, params.get("parse_mode"))
        kept = self.chats.setdefault(chat_id, [])
        topic = params.get("message_thread_id")
        message: dict[str, Any] = {
            "message_id": len(kept) + 1, "date": int(time.time()),
            "chat": {"id": chat_id, "type": "supergroup" if chat_id < 0 else "private"},
            "text": shown, "html": html_text, "reply_markup": self._markup(params),
            "message_thread_id": int(topic) if topic not in (None, "") else None, "edits": 0}
        kept.append(message)
        return _as_sent(message)

    async def _m_editMessageText(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat(params)
        try:
            message_id = int(params["message_id"])
        except (KeyError, TypeError, ValueError):
            raise ApiError(400, "Bad Request: message identifier is not specified") from None
        found = [m for m in self.messages(chat_id) if m["message_id"] == message_id]
        if not found:
            raise ApiError(400, "Bad Request: message to edit not found")
        html_text = str(params.get("text") or "")
        shown = self._visible(html_text, params.get("parse_mode"))
        markup = self._markup(params)  # none given: the message has none afterwards
        message = found[0]
        if message["html"] == html_text and message["reply_markup"] == markup:
            raise ApiError(400, "Bad Request: message is not modified: specified new message content and reply "
                                "markup are exactly the same as a content and reply markup of the current message")
        message.update(text=shown, html=html_text, reply_markup=markup, edits=message["edits"] + 1)
        return _as_sent(message)


def _error(status: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=status)


# --- helpers: tg-out ---------------------------------------------------------------------------------------

_HTML_TAGS = frozenset({"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a",
                        "tg-emoji", "code", "pre", "blockquote"})
_HTML_TOKEN = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)((?:\s[^<>]*)?)>"  # a tag
                         r"|&(lt|gt|amp|quot|#[0-9]+|#x[0-9a-fA-F]+);"  # an entity Telegram knows
                         r"|[<>&]")  # anything else: Telegram cannot parse it


def _parse_html(text: str) -> str:
    """Telegram's HTML parse mode, as strictly as Telegram: only its tags, properly nested; `<`, `>` and `&` only
    as tags or entities. Returns the text shown."""
    shown: list[str] = []
    open_tags: list[str] = []
    at = 0
    for token in _HTML_TOKEN.finditer(text):
        shown.append(text[at:token.start()])
        at = token.end()
        closing, tag, _attrs, entity = token.group(1), token.group(2), token.group(3), token.group(4)
        offset = len(text[:token.start()].encode())
        if tag:
            tag = tag.lower()
            if tag not in _HTML_TAGS:
                raise ApiError(400, f"Bad Request: can't parse entities: Unsupported start tag \"{tag}\" at byte "
                                    f"offset {offset}")
            if closing:
                if not open_tags or open_tags[-1] != tag:
                    raise ApiError(400, f"Bad Request: can't parse entities: Unmatched end tag at byte offset "
                                        f"{offset}, expected \"</{open_tags[-1] if open_tags else ''}>\", found "
                                        f"\"</{tag}>\"")
                open_tags.pop()
            else:
                open_tags.append(tag)
        elif entity:
            shown.append(html.unescape(token.group(0)))
        else:
            raise ApiError(400, f"Bad Request: can't parse entities: Can't find end of the entity starting at byte "
                                f"offset {offset}" if token.group(0) == "&" else
                                f"Bad Request: can't parse entities: Unexpected character {token.group(0)!r} at byte "
                                f"offset {offset}")
    shown.append(text[at:])
    if open_tags:
        raise ApiError(400, f"Bad Request: can't parse entities: Can't find end tag corresponding to start tag "
                            f"\"{open_tags[-1]}\"")
    return "".join(shown)


def _as_sent(message: dict[str, Any]) -> dict[str, Any]:
    """A kept message as the Bot API returns it (a Message object)."""
    sent = {k: v for k, v in message.items() if k not in ("html", "edits") and v is not None}
    if message["edits"]:
        sent["edit_date"] = int(time.time())
    return sent


@dataclass
class _Updates:
    """tg-in's state of the fake: updates waiting for getUpdates, the webhook, the command menu, callback answers."""

    pending: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    webhook: dict[str, Any] = field(default_factory=dict)
    commands: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)
