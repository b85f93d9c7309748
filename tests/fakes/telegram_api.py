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


@dataclass
class _Updates:
    """tg-in's state of the fake: updates waiting for getUpdates, the webhook, the command menu, callback answers."""

    pending: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    webhook: dict[str, Any] = field(default_factory=dict)
    commands: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)


def _error(status: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=status)
