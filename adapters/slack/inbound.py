"""Slack in: a slack-bolt AsyncApp that turns slash commands, mentions, DMs, thread replies and button clicks
into the same commands every channel runs, and answers through the outbox.

Each item is, in this order: verified (bolt's signature check over HTTP; Socket Mode needs none), recorded in
the delivery ledger under Slack's own id (event_id, or the interaction's trigger_id), acknowledged, and only
then processed. A retry (X-Slack-Retry-Num) or a redelivery of an item done or in hand is acknowledged and
does nothing; an item whose process died is taken up again by another (`Ledger.due`). Replies and news go
out through the outbox (adapters.slack.channel), except the one message a slash command's task thread hangs
from, which has to exist before the task can be bound to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from sqlmodel import col, select

from adapters.slack.blocks import ACTION_PREFIX, escape
from adapters.slack.channel import NOT_THERE, Address, make_client
from core.access import Principal, Role
from core.channels import Message, bind_thread, enqueue, threads_for
from core.commands import build_registry
from core.errors import ShepherdError
from core.grammar import CommandRegistry, Where
from core.models import Task, Thread
from core.service import Shepherd

log = logging.getLogger(__name__)

SOURCE = "slack"
SWEEP_S = 10.0
WORKING = 4  # items processed at once by one process
YIELD_S = 2.0  # the longest the work on acknowledged items waits for a burst of new requests to be acked
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_LEADING_MENTIONS = re.compile(r"^\s*(?:<@[UW][A-Z0-9]+(?:\|[^>]*)?>[\s,:]*)+")
_QUOTES = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"})
# message subtypes that are people talking (others are edits, joins, bots, …)
_SPOKEN = (None, "", "thread_broadcast", "file_share")


class _Quiet(logging.Filter):
    """bolt reads SLACK_BOT_TOKEN from the environment by itself and then warns that our client wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "will be unused" not in record.getMessage()


_bolt_log = logging.getLogger("adapters.slack.bolt")
_bolt_log.addFilter(_Quiet())


class BadPayload(Exception):
    """A verified request we cannot read: answered 400 with what is wrong."""


@dataclass(frozen=True)
class SlackConfig:
    bot_token: str
    org_id: str
    signing_secret: str | None = None
    app_token: str | None = None
    api_url: str = "https://slack.com/api/"
    default_role: Role = Role.VIEWER
    admins: frozenset[str] = field(default_factory=frozenset)  # Slack user ids that are admins


def _text(value: Any, limit: int = 40_000) -> str:
    return value[:limit] if isinstance(value, str) else ""


def delivery_key(body: dict[str, Any]) -> str:
    """The ledger key of an item: Slack's id for it. A payload without one is malformed (BadPayload)."""
    kind = body.get("type")
    if kind == "event_callback":
        event_id = _text(body.get("event_id"), 150)
        if not event_id or not isinstance(body.get("event"), dict):
            raise BadPayload("an event_callback needs event_id and event")
        return f"event:{event_id}"
    if "command" in body:
        if not _text(body.get("user_id")) or not _text(body.get("channel_id")):
            raise BadPayload("a slash command needs user_id and channel_id")
        trigger = _text(body.get("trigger_id"), 150)
        if not trigger:  # unique per invocation; without it, the invocation's own fields
            digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:32]
            trigger = f"sha:{digest}"
        return f"command:{trigger}"
    if kind == "block_actions":
        actions = body.get("actions")
        user = body.get("user")
        if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict) \
                or not isinstance(user, dict) or not _text(user.get("id")):
            raise BadPayload("block_actions needs actions and user")
        trigger = _text(body.get("trigger_id"), 150) or f"{user['id']}:{_text(actions[0].get('action_ts'), 40)}"
        return f"action:{trigger}"
    raise BadPayload(f"unsupported payload type {str(kind)[:40]!r}")


def _authorizer(bot_token: str) -> Callable[..., Any]:
    async def authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult:
        # one workspace, one bot token: no auth.test per request (nor an event lost when that call fails)
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token=bot_token)

    return authorize


def _wants(body: dict[str, Any]) -> bool:
    """Items Shepherd acts on (others, e.g. a view submission, are left to bolt: it answers 404)."""
    return body.get("type") in ("event_callback", "block_actions") or "command" in body


class SlackInbound:
    def __init__(
        self, shepherd: Shepherd, config: SlackConfig, *, registry: CommandRegistry | None = None,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        self.shepherd = shepherd
        self.config = config
        self.registry = registry or build_registry()
        self.client = make_client(config.bot_token, config.api_url, http)  # our own calls (names, roots)
        bolt_client = AsyncWebClient(base_url=config.api_url, session=http, timeout=15,
                                     retry_handlers=self.client.retry_handlers)
        # the ledger comes right after bolt's signature check, before bolt reads the payload any further
        self.bolt = AsyncApp(client=bolt_client, signing_secret=config.signing_secret, logger=_bolt_log,
                             before_authorize=self._recorder(), authorize=_authorizer(config.bot_token),
                             ignoring_self_events_enabled=False)
        self.verifier = SignatureVerifier(config.signing_secret) if config.signing_secret else None
        self.socket: Any = None
        self._jobs: set[asyncio.Task[None]] = set()
        self._working = asyncio.Semaphore(WORKING)
        self._acking = 0  # requests between arrival and their ack
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._settled: set[str] = set()  # items whose reply transaction also marked them done
        self._sweeper: asyncio.Task[None] | None = None
        self._wire()

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        if self.config.app_token:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            self.socket = AsyncSocketModeHandler(self.bolt, app_token=self.config.app_token, ping_interval=10)
            await self.socket.connect_async()
            log.info("Slack: connected in Socket Mode")

    async def stop(self) -> None:
        if self.socket is not None:
            with contextlib.suppress(Exception):
                await self.socket.close_async()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._jobs:  # work acknowledged and under way finishes (or is left to the ledger's sweep)
            await asyncio.wait(self._jobs, timeout=10)

    async def handle_http(self, request: web.Request) -> web.StreamResponse:
        """POST /slack/events: events, slash commands and interactivity."""
        if self.verifier is None:
            return web.json_response({"error": "slack_not_configured",
                                      "message": "set SLACK_SIGNING_SECRET to receive Slack requests"}, status=404)
        self._acking += 1
        self._quiet.clear()
        try:
            return await self._handle_http(request)
        finally:
            self._acking -= 1
            if not self._acking:
                self._quiet.set()

    async def _handle_http(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        # bolt reads the payload before it checks the signature, and trips over shapes it does not expect:
        # a verified payload Shepherd cannot read is answered 400 here, an unverified one 401 as bolt would
        problem: str | None = None
        try:
            bolt_request = await to_bolt_request(request)
            if isinstance(bolt_request.body, dict) and _wants(bolt_request.body):
                delivery_key(bolt_request.body)
        except BadPayload as exc:
            problem = str(exc)
        except Exception:
            problem = "cannot read the request body"
        if problem is not None:
            if not self.verifier.is_valid(raw, request.headers.get("X-Slack-Request-Timestamp", ""),
                                          request.headers.get("X-Slack-Signature", "")):
                return web.json_response({"error": "invalid request"}, status=401)
            return web.json_response({"error": "malformed_payload", "message": problem}, status=400)
        return await to_aiohttp_response(await self.bolt.async_dispatch(bolt_request))

    # --- bolt wiring ---------------------------------------------------------------------------

    def _wire(self) -> None:
        # bolt injects listener arguments by parameter name (bound methods' `self` confuses it): closures
        ledger = self.shepherd.ledger

        async def acked(ack: Any, body: dict[str, Any], context: Any) -> None:  # commands, buttons
            await ack()
            await self._process(context["delivery_key"], body)

        async def event(body: dict[str, Any], context: Any) -> None:  # events are acknowledged by bolt
            await self._process(context["delivery_key"], body)

        async def ignore(context: Any) -> None:  # other events: acknowledged, not acted on
            if "delivery_key" in context:
                await ledger.done(SOURCE, context["delivery_key"])

        self.bolt.command(re.compile(r".*"))(acked)
        self.bolt.event("app_mention")(event)
        self.bolt.event("message")(event)
        self.bolt.action(re.compile(rf"^{ACTION_PREFIX}(approve|reject)$"))(acked)
        self.bolt.event(re.compile(r".*"))(ignore)

    def _recorder(self) -> Callable[..., Any]:
        ledger, org_id = self.shepherd.ledger, self.config.org_id

        async def record(body: dict[str, Any], context: Any, next: Callable[..., Any]) -> Any:
            """Before any listener (and so before the ack): the item is in the ledger, or it is not acted on."""
            if not isinstance(body, dict) or not _wants(body):
                return await next()
            try:
                key = delivery_key(body)
            except BadPayload as exc:
                return BoltResponse(status=400, headers={"content-type": "application/json"},
                                    body=json.dumps({"error": "malformed_payload", "message": str(exc)}))
            if not await ledger.receive(SOURCE, key, org_id, body):
                log.info("Slack: %s was delivered before; acknowledged, not processed again", key)
                return BoltResponse(status=200, body="")
            context["delivery_key"] = key
            return await next()

        return record

    # --- processing ----------------------------------------------------------------------------

    async def _process(self, key: str, body: dict[str, Any]) -> None:
        job = asyncio.current_task()
        if job is not None:
            self._jobs.add(job)  # type: ignore[arg-type]
        try:
            async with self._working:  # a burst is worked through a few at a time, after its acks
                with contextlib.suppress(TimeoutError):  # Slack's 3 s are for acks; the work can wait (a while)
                    await asyncio.wait_for(self._quiet.wait(), YIELD_S)
                await self.handle(key, body)
        except Exception as exc:
            log.exception("Slack: processing %s failed; it will be tried again", key)
            with contextlib.suppress(Exception):
                await self.shepherd.ledger.failed(SOURCE, key, f"{type(exc).__name__}: {exc}")
        else:
            if key not in self._settled:
                await self.shepherd.ledger.done(SOURCE, key)
        finally:
            self._settled.discard(key)
            if job is not None:
                self._jobs.discard(job)  # type: ignore[arg-type]

    async def _sweep(self) -> None:
        """Items acknowledged by a process that died, or that failed: processed again, by one process."""
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                for row in await self.shepherd.ledger.due(SOURCE):
                    await self._process(row.key, row.payload)
            except Exception:
                log.exception("Slack: ledger sweep failed; trying again")

    async def handle(self, key: str, body: dict[str, Any]) -> None:
        if body.get("type") == "event_callback":
            await self._event(key, body)
        elif "command" in body:
            await self._command(key, body)
        elif body.get("type") == "block_actions":
            await self._action(key, body)

    async def _command(self, key: str, body: dict[str, Any]) -> None:
        user, channel = _text(body.get("user_id")), _text(body.get("channel_id"))
        principal = await self.principal(user, _text(body.get("user_name")))
        text = await self._readable(_text(body.get("text"))) or "help"
        reply = await self.registry.run(self.shepherd, principal, text, request_key=key)
        data = reply.data if isinstance(reply.data, dict) else {}
        if reply.ok and data.get("follow") and data.get("id"):
            # the task's news needs a thread: in this channel, the one it has, or a new one
            address = await self._task_thread(principal, str(data["id"]), channel, user,
                                              f"{_text(body.get('command')) or '/shepherd'} {text}")
        else:
            address = str(Address(channel, None, user))  # only the person who typed it sees the answer
        await self._reply(address, key, reply.text)

    async def _event(self, key: str, body: dict[str, Any]) -> None:
        event = body["event"]
        kind, subtype = event.get("type"), event.get("subtype")
        user, channel = _text(event.get("user")), _text(event.get("channel"))
        if event.get("bot_id") or subtype not in _SPOKEN or not user or not channel:
            return  # our own posts, edits, joins, other bots
        ts, thread_ts = _text(event.get("ts"), 40), _text(event.get("thread_ts"), 40)
        raw = _text(event.get("text"))
        mentioned = bool(_MENTION.search(raw))
        if kind == "message" and thread_ts and not mentioned:
            task = await self._thread_task(channel, thread_ts)
            if task is not None:  # a plain reply in a task's thread: the task's next turn
                principal = await self.principal(user)
                text = raw.translate(_QUOTES).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
                reply = await self.registry.run(self.shepherd, principal, f"send {task.id} {shlex.quote(text)}",
                                                request_key=key)
                await self._reply(f"{channel}/{thread_ts}", key, reply.text)
                return
        direct = kind == "message" and event.get("channel_type") == "im"
        if not (kind == "app_mention" or direct):
            return  # channel chatter; mentions arrive (also) as app_mention
        principal = await self.principal(user)
        text = await self._readable(_LEADING_MENTIONS.sub("", raw)) or "help"
        address = f"{channel}/{thread_ts or ts}"
        task = await self._thread_task(channel, thread_ts) if thread_ts else None  # `@Shepherd stop` there
        reply = await self.registry.run(self.shepherd, principal, text, request_key=key,
                                        where=Where(SOURCE, address, task.id if task else None))
        await self._reply(address, key, reply.text)

    async def _action(self, key: str, body: dict[str, Any]) -> None:
        action = body["actions"][0]
        user = _text(body["user"].get("id"))
        container = body.get("container") if isinstance(body.get("container"), dict) else {}
        message = body.get("message") if isinstance(body.get("message"), dict) else {}
        channel = _text(container.get("channel_id")) or _text((body.get("channel") or {}).get("id"))
        thread = _text(message.get("thread_ts"), 40) or _text(container.get("message_ts"), 40) or None
        approve = action.get("action_id") == f"{ACTION_PREFIX}approve"
        principal = await self.principal(user, _text(body["user"].get("username")))
        try:
            # the decision is announced by core to every message that shows the prompt, this one too
            await self.shepherd.confirmations.vote(principal, _text(action.get("value"), 200), approve=approve,
                                                   via=SOURCE)
            self.shepherd.outbox_due()
        except ShepherdError as exc:
            if channel:
                await self._reply(str(Address(channel, thread, user)), key, f"error: {exc.message}")

    # --- helpers -------------------------------------------------------------------------------

    async def principal(self, user: str, name: str = "") -> Principal:
        users, org = self.shepherd.users, self.config.org_id
        if not name and await users.name_of(org, SOURCE, user) is None:
            name = await self._slack_name(user)
        return await users.principal_for(org, SOURCE, user, display_name=name or user,
                                         default_role=self.config.default_role,
                                         admin=user in self.config.admins)

    async def _slack_name(self, user: str) -> str:
        """Their Slack handle, asked once, when Shepherd first meets them (users:read)."""
        try:
            answer = await self.client.users_info(user=user)
            info = answer.get("user") or {}
            profile = info.get("profile") or {}
            return str(info.get("name") or profile.get("display_name") or user)
        except Exception as exc:  # a missing scope or a hiccup must not lose the command: the id will do
            log.warning("Slack: users.info %s failed (%s); using the id as the name", user, exc)
            return user

    async def _readable(self, text: str) -> str:
        """Slack's markup back into the grammar: <@U123> becomes the person's Shepherd name, the escaped
        &, <, > and the phone's curly quotes become plain ones."""
        for user in set(_MENTION.findall(text)):
            name = (await self.principal(user)).name
            text = re.sub(rf"<@{user}(?:\|[^>]*)?>", name, text)
        text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        return text.translate(_QUOTES).strip()

    async def _thread_task(self, channel: str, thread_ts: str) -> Task | None:
        async with self.shepherd.db.read() as session:
            return (await session.exec(
                select(Task).join(Thread, col(Thread.task_id) == col(Task.id)).where(
                    Thread.org_id == self.config.org_id, Thread.channel == SOURCE,
                    Thread.address == f"{channel}/{thread_ts}")
                .order_by(col(Thread.created_at).desc()).limit(1)
            )).first()

    async def _task_thread(self, principal: Principal, task_id: str, channel: str, user: str, said: str) -> str:
        """The Slack thread in `channel` that a task's news goes to; a new one hangs from a message saying who
        asked for what."""
        said = escape(said.replace("`", "'"))[:2900]  # what they typed, shown, never a ping or a link
        async with self.shepherd.db.read() as session:
            for thread in await threads_for(session, principal.org_id, task_id=task_id):
                if thread.channel == SOURCE and Address.parse(thread.address).channel in (channel, user):
                    return thread.address
        try:
            root = await self.client.chat_postMessage(channel=channel, text=f"<@{user}> `{said}`")
        except SlackApiError as exc:
            if exc.response.get("error") not in NOT_THERE:
                raise
            # not invited to that channel: the task lives in a DM with whoever started it
            root = await self.client.chat_postMessage(
                channel=user, text=f"`{said}` (from <#{channel}>: `/invite @Shepherd` there to work in it)")
        address = f"{root['channel']}/{root['ts']}"
        async with self.shepherd.db.write() as session:
            await bind_thread(session, principal.org_id, SOURCE, address, task_id=task_id)
        return address

    async def _reply(self, address: str, key: str, text: str) -> None:
        """A command's answer, through the outbox; its key is the item's, so processing again edits it."""
        async with self.shepherd.db.write() as session:
            thread = await bind_thread(session, self.config.org_id, SOURCE, address)
            enqueue(session, [thread], Message(key=f"reply:{key}", text=text, kind="reply"))
            await self.shepherd.ledger.settle(session, SOURCE, key)  # the reply and "done" in one commit
        self._settled.add(key)
        self.shepherd.outbox_due()
