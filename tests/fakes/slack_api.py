"""A loopback fake of the Slack Web API and of Socket Mode, so that the real slack_sdk `AsyncWebClient`
(`base_url=fake.api_url`) and slack_bolt's `AsyncSocketModeHandler` run against it unchanged.

    POST|GET /api/auth.test
             /api/chat.postMessage     {channel, text?, blocks?, thread_ts?}
             /api/chat.update          {channel, ts, text?, blocks?}
             /api/chat.postEphemeral   {channel, user, text?, blocks?, thread_ts?}
             /api/users.info           {user}
             /api/views.open           {trigger_id, view}
             /api/apps.connections.open                  (with the app token)
    WS       /link/?ticket=<n>                           (Socket Mode)

Arguments are read from the query string, a form body and a JSON body (merged, in that order); the token from
`Authorization: Bearer` or a `token` argument. Answers have Slack's shapes and Slack's errors (HTTP 200 with
`{"ok": false, "error": ...}`), including its block limits. Tests read `calls` (every Web API call, in order),
`messages` (what was posted, with earlier versions in `history`), `thread()` and `ephemeral_for()`; and queue
what the next calls of a method meet instead: `fail_next` (an error) and `rate_limit_next` (429 + Retry-After).
Only calls that pass the token check take one. Socket Mode: `socket_send` pushes an envelope to the connected
client, `socket_ack` returns the client's acknowledgement of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from slack_sdk.signature import SignatureVerifier

KNOWN_METHODS = frozenset({"auth.test", "chat.postMessage", "chat.update", "chat.postEphemeral", "users.info",
                           "views.open", "apps.connections.open"})
JSON_ARGS = frozenset({"blocks", "attachments", "view", "metadata"})  # JSON-encoded strings in form bodies

# Slack's limits (https://docs.slack.dev/reference/block-kit/blocks, .../block-elements/button-element)
MAX_BLOCKS = 50
MAX_TEXT = 40_000
MAX_SECTION_TEXT = 3000
MAX_SECTION_FIELD = 2000
MAX_SECTION_FIELDS = 10
MAX_HEADER_TEXT = 150
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_BUTTON_URL = 3000
MAX_ID = 255  # action_id, block_id


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str
    at: float  # time.monotonic()


@dataclass
class Posted:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] | None
    thread_ts: str | None
    user: str | None = None  # the recipient, for an ephemeral message
    ephemeral: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)  # earlier {text, blocks} versions, oldest first


@dataclass
class _Queued:
    method: str
    error: str
    retry_after: float | str | None = None  # set: a 429 with this Retry-After


class SlackError(Exception):
    """Raised by a handler to answer 200 {"ok": false, "error": error}."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def signed_headers(secret: str, body: bytes | str, *, timestamp: int | None = None,
                   content_type: str = "application/x-www-form-urlencoded") -> dict[str, str]:
    """The headers Slack sends with an HTTP request (Events API, interactivity, slash commands) for `body`."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    assert signature is not None
    return {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}


def _ok(**body: Any) -> web.Response:
    return web.json_response({"ok": True, **body})


def _err(error: str) -> web.Response:
    return web.json_response({"ok": False, "error": error})


def _text_len(obj: Any) -> int:
    """The length of a text object's text ({"type": "plain_text"|"mrkdwn", "text": ...}), 0 if absent."""
    if isinstance(obj, dict):
        return len(str(obj.get("text", "")))
    return 0


def _check_element(element: Any) -> None:
    if not isinstance(element, dict) or not element.get("type"):
        raise SlackError("invalid_blocks")
    if len(str(element.get("action_id", ""))) > MAX_ID:
        raise SlackError("invalid_blocks")
    if element["type"] == "button" and (
            _text_len(element.get("text")) > MAX_BUTTON_TEXT
            or len(str(element.get("value", ""))) > MAX_BUTTON_VALUE
            or len(str(element.get("url", ""))) > MAX_BUTTON_URL):
        raise SlackError("invalid_blocks")


def _check_blocks(blocks: Any) -> None:
    if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
        raise SlackError("invalid_blocks")
    for block in blocks:
        if not isinstance(block, dict) or not block.get("type"):
            raise SlackError("invalid_blocks")
        if len(str(block.get("block_id", ""))) > MAX_ID:
            raise SlackError("invalid_blocks")
        kind = block["type"]
        if kind == "section":
            fields = block.get("fields") or []
            if (_text_len(block.get("text")) > MAX_SECTION_TEXT or not isinstance(fields, list)
                    or len(fields) > MAX_SECTION_FIELDS or any(_text_len(f) > MAX_SECTION_FIELD for f in fields)):
                raise SlackError("invalid_blocks")
            if "accessory" in block:
                _check_element(block["accessory"])
        elif kind == "header":
            if _text_len(block.get("text")) > MAX_HEADER_TEXT:
                raise SlackError("invalid_blocks")
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list):
                raise SlackError("invalid_blocks")
            for element in elements:
                _check_element(element)
        elif kind == "input" and "element" in block:
            _check_element(block["element"])


class FakeSlack:
    """Slack's Web API for one workspace, one bot and one app, in memory; every channel exists."""

    def __init__(self, *, bot_token: str = "xoxb-test", app_token: str = "xapp-test", team_id: str = "T1",
                 bot_user_id: str = "U0BOT", bot_id: str = "B0BOT") -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], Posted] = {}
        self.users: dict[str, str] = {bot_user_id: "shepherd"}  # id -> name, for users.info
        self.archived_channels: set[str] = set()
        self.acks: dict[str, dict[str, Any]] = {}  # envelope_id -> the client's ack frame
        self.socket_frames: list[Any] = []  # every JSON frame a Socket Mode client sent, in order
        self.socket_connected = asyncio.Event()
        self.api_url = ""
        self.base_url = ""
        self._queued: list[_Queued] = []
        self._ts_counter = 0
        self._views = 0
        self._tickets = 0
        self._sockets: list[web.WebSocketResponse] = []
        self._runner: web.AppRunner | None = None

    # --- control ------------------------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def thread(self, channel: str, thread_ts: str) -> list[Posted]:
        """The replies in a thread (not the root, not ephemeral messages), in the order they were posted."""
        return [m for m in self.messages.values()
                if m.channel == channel and m.thread_ts == thread_ts and m.ts != thread_ts and not m.ephemeral]

    def ephemeral_for(self, user: str) -> list[Posted]:
        return [m for m in self.messages.values() if m.ephemeral and m.user == user]

    def rate_limit_next(self, method: str, *, retry_after: float | str = 1, times: int = 1) -> None:
        """The next `times` calls of `method` answer 429, Retry-After and {"ok": false, "error": "ratelimited"}."""
        self._queued.extend(_Queued(method, "ratelimited", retry_after) for _ in range(times))

    def fail_next(self, method: str, error: str, *, times: int = 1) -> None:
        """The next `times` calls of `method` answer 200 {"ok": false, "error": error}."""
        self._queued.extend(_Queued(method, error) for _ in range(times))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                last = "\n".join(f"  {c.method} {c.args!r}" for c in self.calls[-10:]) or "  (none)"
                raise AssertionError(f"condition not met within {timeout}s; the last Slack API calls:\n{last}")
            await asyncio.sleep(0.02)

    async def socket_send(self, envelope: dict[str, Any]) -> None:
        """Sends one JSON frame to the latest Socket Mode connection (waiting up to 5 s for one)."""
        try:
            await asyncio.wait_for(self.socket_connected.wait(), 5.0)
        except TimeoutError:
            raise AssertionError("no Socket Mode client connected within 5s") from None
        await self._sockets[-1].send_str(json.dumps(envelope))

    async def socket_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The frame the client sent back for `envelope_id` ({"envelope_id": ..., "payload"?: ...})."""
        deadline = time.monotonic() + timeout
        while envelope_id not in self.acks:
            if time.monotonic() >= deadline:
                raise AssertionError(f"no ack for envelope {envelope_id!r} within {timeout}s; "
                                     f"acks so far: {sorted(self.acks)}")
            await asyncio.sleep(0.01)
        return self.acks[envelope_id]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/link/", self._link)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self.api_url = f"{self.base_url}/api/"

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- the Web API --------------------------------------------------------------------------

    async def _args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = json.loads(await request.read() or b"{}")
                except ValueError:
                    body = None
                if isinstance(body, dict):
                    args.update(body)
            elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                args.update({k: v for k, v in form.items() if isinstance(v, str)})
        for key in JSON_ARGS:
            value = args.get(key)
            if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
                with contextlib.suppress(ValueError):
                    args[key] = json.loads(value)
        return args

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        args = await self._args(request)
        scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
        token = str(args.pop("token", "") or (bearer if scheme.lower() == "bearer" else ""))
        self.calls.append(Call(method, args, token, time.monotonic()))
        if method not in KNOWN_METHODS:
            return _err("unknown_method")
        if not token:
            return _err("not_authed")
        if token != (self.app_token if method == "apps.connections.open" else self.bot_token):
            return _err("invalid_auth")
        queued = next((q for q in self._queued if q.method == method), None)
        if queued is not None:
            self._queued.remove(queued)
            if queued.retry_after is not None:
                return web.json_response({"ok": False, "error": queued.error}, status=429,
                                         headers={"Retry-After": str(queued.retry_after)})
            return _err(queued.error)
        handler: Callable[[dict[str, Any]], web.Response] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "users.info": self._users_info,
            "views.open": self._views_open,
            "apps.connections.open": self._connections_open,
        }[method]
        try:
            return handler(args)
        except SlackError as exc:
            return _err(exc.error)

    def _next_ts(self) -> str:
        self._ts_counter += 100
        return f"{1_700_000_000 + self._ts_counter // 1_000_000}.{self._ts_counter % 1_000_000:06d}"

    def _content(self, args: dict[str, Any], *, required: bool = True) -> tuple[str, list[dict[str, Any]] | None]:
        """The validated text and blocks of a message."""
        channel = str(args.get("channel") or "")
        if not channel:
            raise SlackError("channel_not_found")
        if channel in self.archived_channels:
            raise SlackError("is_archived")
        text = str(args.get("text") or "")
        blocks = args.get("blocks")
        if required and not text and not blocks:
            raise SlackError("no_text")
        if blocks is not None:
            _check_blocks(blocks)
        if len(text) > MAX_TEXT:
            raise SlackError("msg_too_long")
        return text, blocks

    def _auth_test(self, args: dict[str, Any]) -> web.Response:
        return _ok(url="https://acme.slack.com/", team="Acme", user=self.users.get(self.bot_user_id, "shepherd"),
                   team_id=self.team_id, user_id=self.bot_user_id, bot_id=self.bot_id, is_enterprise_install=False)

    def _post_message(self, args: dict[str, Any]) -> web.Response:
        text, blocks = self._content(args)
        channel, ts = str(args["channel"]), self._next_ts()
        thread_ts = str(args["thread_ts"]) if args.get("thread_ts") else None
        self.messages[(channel, ts)] = Posted(channel, ts, text, blocks, thread_ts)
        message: dict[str, Any] = {"type": "message", "text": text, "user": self.bot_user_id, "bot_id": self.bot_id,
                                   "ts": ts, "team": self.team_id}
        if blocks is not None:
            message["blocks"] = blocks
        if thread_ts:
            message["thread_ts"] = thread_ts
        return _ok(channel=channel, ts=ts, message=message)

    def _update(self, args: dict[str, Any]) -> web.Response:
        channel, ts = str(args.get("channel") or ""), str(args.get("ts") or "")
        if not channel:
            raise SlackError("channel_not_found")
        posted = self.messages.get((channel, ts))
        if posted is None:
            raise SlackError("message_not_found")
        if posted.ephemeral:
            raise SlackError("cant_update_message")
        text, blocks = self._content(args, required=False)
        posted.history.append({"text": posted.text, "blocks": posted.blocks})
        if "text" in args:  # as Slack does, an argument left out keeps its earlier value
            posted.text = text
        if "blocks" in args:
            posted.blocks = blocks
        message: dict[str, Any] = {"type": "message", "text": posted.text, "user": self.bot_user_id,
                                   "bot_id": self.bot_id}
        if posted.blocks is not None:
            message["blocks"] = posted.blocks
        return _ok(channel=channel, ts=ts, text=posted.text, message=message)

    def _post_ephemeral(self, args: dict[str, Any]) -> web.Response:
        text, blocks = self._content(args)
        user = str(args.get("user") or "")
        if not user:
            raise SlackError("user_not_found")
        channel, ts = str(args["channel"]), self._next_ts()
        thread_ts = str(args["thread_ts"]) if args.get("thread_ts") else None
        self.messages[(channel, ts)] = Posted(channel, ts, text, blocks, thread_ts, user=user, ephemeral=True)
        return _ok(message_ts=ts)

    def _users_info(self, args: dict[str, Any]) -> web.Response:
        user = str(args.get("user") or "")
        name = self.users.get(user)
        if name is None:
            raise SlackError("user_not_found")
        return _ok(user={"id": user, "team_id": self.team_id, "name": name, "real_name": name, "deleted": False,
                         "is_bot": user == self.bot_user_id,
                         "profile": {"display_name": name, "real_name": name}})

    def _views_open(self, args: dict[str, Any]) -> web.Response:
        if not args.get("trigger_id"):
            raise SlackError("invalid_trigger_id")
        view = args.get("view")
        if not isinstance(view, dict):
            raise SlackError("invalid_arguments")
        self._views += 1
        return _ok(view={"id": f"V{self._views}", "team_id": self.team_id, "type": view.get("type", "modal"),
                         "callback_id": view.get("callback_id", ""),
                         "private_metadata": view.get("private_metadata", ""),
                         "blocks": view.get("blocks", []), "state": {"values": {}}, "hash": f"1.{self._views}"})

    def _connections_open(self, args: dict[str, Any]) -> web.Response:
        self._tickets += 1
        return _ok(url=f"{self.base_url.replace('http://', 'ws://')}/link/?ticket={self._tickets}")

    # --- Socket Mode --------------------------------------------------------------------------

    async def _link(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, timeout=2.0)
        await ws.prepare(request)
        await ws.send_str(json.dumps({"type": "hello", "num_connections": 1, "debug_info": {"host": "fake"},
                                      "connection_info": {"app_id": "A1"}}))
        self._sockets.append(ws)
        self.socket_connected.set()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    frame = json.loads(msg.data)
                except ValueError:
                    continue
                self.socket_frames.append(frame)
                if isinstance(frame, dict) and "envelope_id" in frame:
                    self.acks[str(frame["envelope_id"])] = frame
        finally:
            self._sockets.remove(ws)
            if not self._sockets:
                self.socket_connected.clear()
        return ws
