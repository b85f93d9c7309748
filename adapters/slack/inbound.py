"""Slack in: slash commands, mentions, DMs, thread replies and button clicks become the same commands every
channel runs, answered through the outbox. Over HTTP (/slack/events) requests are read here; in Socket Mode
slack-bolt's AsyncApp holds the connection and hands each payload to the same receiver.

Each item is, in this order: verified (the signature over the raw body, over HTTP; Socket Mode needs none),
read into the item Shepherd acts on (adapters.slack.items.parse: what it leaves alone is never recorded),
recorded in the delivery ledger under Slack's own id (event_id, or the interaction's trigger_id),
acknowledged, and only then processed, from the payload by `parse` again: live or replayed by the ledger's
sweep, an item takes the same road. A retry (X-Slack-Retry-Num) or a redelivery of an item done or in hand is
acknowledged and does nothing; an item whose process died is taken up again by another (`Ledger.due`).
Replies and news go out through the outbox (adapters.slack.channel), except the one message a slash command's
task thread hangs from, which has to exist before the task can be bound to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlmodel import col, select

from adapters.slack.blocks import moved_root_text, root_text
from adapters.slack.channel import NOT_THERE, RETRY_AFTER_MAX_S, Address, make_client
from adapters.slack.items import (
    MENTION,
    BadPayload,
    Item,
    Said,
    SlashCommand,
    Vote,
    parse,
    plain,
    read_body,
    text,
    unescape,
)
from core.access import Principal, Role
from core.channels import Message, bind_thread, enqueue, threads_for
from core.commands import build_registry
from core.errors import ShepherdError
from core.grammar import CommandRegistry, Where
from core.ledger import LEASE_S
from core.models import Task, Thread
from core.service import Shepherd

log = logging.getLogger(__name__)

SOURCE = "slack"
SWEEP_S = 10.0
WORKING = 4  # items processed at once by one process
YIELD_S = 2.0  # the longest the work on acknowledged items waits for a burst of new requests to be acked
MAX_SKEW_S = 300  # Slack's rule: a request whose timestamp is further off than this is refused
# Our own Web API calls while processing an item (the message a task's thread hangs from, a new person's name)
# wait out Slack's 429s in place, within the item's ledger lease: a rate limit is not a failure to back off from.
RATE_LIMIT_BUDGET_S = min(LEASE_S / 2, 2 * RETRY_AFTER_MAX_S)
RATE_LIMIT_TRIES = 30  # bounded by the budget first; Slack's Retry-After on chat.postMessage is a second or so
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_LEADING_MENTIONS = re.compile(r"^\s*(?:<@[UW][A-Z0-9]+(?:\|[^>]*)?>[\s,:]*)+")
_AT_NAME = re.compile(r"(?<![\w.@])@([\w][\w.\-]*)")


class _Quiet(logging.Filter):
    """bolt reads SLACK_BOT_TOKEN from the environment by itself and then warns that our client wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "will be unused" not in record.getMessage()


_bolt_log = logging.getLogger("adapters.slack.bolt")
_bolt_log.addFilter(_Quiet())


@dataclass(frozen=True)
class SlackConfig:
    bot_token: str
    org_id: str
    signing_secret: str | None = None
    app_token: str | None = None
    api_url: str = "https://slack.com/api/"
    default_role: Role = Role.VIEWER
    admins: frozenset[str] = field(default_factory=frozenset)  # Slack user ids that are admins


def signed(secret: str, raw: bytes, timestamp: str, signature: str, *, now: float | None = None) -> bool:
    """Slack's request signature: HMAC-SHA256 of `v0:{timestamp}:{raw body}`, compared in constant time, the
    timestamp within five minutes. Any header that is not what Slack sends is simply unverified (never an error)."""
    if not _TIMESTAMP.fullmatch(timestamp):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > MAX_SKEW_S:
        return False
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"v0={digest}".encode(), signature.encode("utf-8", "replace"))


def _problem(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


def _authorizer(bot_token: str) -> Callable[..., Any]:
    async def authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult:
        # one workspace, one bot token: no auth.test per request (nor an event lost when that call fails)
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token=bot_token)

    return authorize


class SlackInbound:
    def __init__(
        self, shepherd: Shepherd, config: SlackConfig, *, registry: CommandRegistry | None = None,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        self.shepherd = shepherd
        self.config = config
        self.registry = registry or build_registry()
        # our own calls (names, thread roots), which wait out Slack's 429s in place (see RATE_LIMIT_BUDGET_S)
        self.client = make_client(config.bot_token, config.api_url, http, rate_limit_tries=RATE_LIMIT_TRIES,
                                  rate_limit_budget_s=RATE_LIMIT_BUDGET_S)
        self._http = http
        self.socket: Any = None
        self._jobs: set[asyncio.Task[None]] = set()
        self._working = asyncio.Semaphore(WORKING)
        self._acking = 0  # requests between arrival and their ack
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._settled: set[str] = set()  # items whose reply transaction also marked them done
        self._sweeper: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        if self.config.app_token:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            self.socket = AsyncSocketModeHandler(self._socket_app(), app_token=self.config.app_token,
                                                 ping_interval=10)
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
        if not self.config.signing_secret:
            return _problem(404, "slack_not_configured", "set SLACK_SIGNING_SECRET to receive Slack requests")
        self._acking += 1
        self._quiet.clear()
        try:
            return await self._handle_http(request, self.config.signing_secret)
        finally:
            self._acking -= 1
            if not self._acking:
                self._quiet.set()

    async def _handle_http(self, request: web.Request, secret: str) -> web.StreamResponse:
        raw = await request.read()
        # Verified first, on the raw bytes: nothing of an unverified request is read.
        if not signed(secret, raw, request.headers.get("X-Slack-Request-Timestamp", ""),
                      request.headers.get("X-Slack-Signature", "")):
            return _problem(401, "invalid_signature", "the request is not signed by Slack with this app's signing "
                                                      "secret, or its timestamp is more than 5 minutes off")
        try:
            payload = read_body(raw.decode("utf-8"), request.content_type)
            item = parse(payload)
        except UnicodeDecodeError:
            return _problem(400, "malformed_payload", "the body is not UTF-8")
        except BadPayload as exc:
            return _problem(400, "malformed_payload", str(exc))
        if item is not None:
            await self._receive(item, payload)
            return web.Response(status=200)
        # What Shepherd leaves alone is answered here, not by bolt, whose readers trip over unexpected shapes.
        kind = payload.get("type")
        if "ssl_check" in payload:  # Slack checking the slash command's certificate
            return web.Response(status=200)
        if kind == "url_verification":  # Slack checking the Request URL when it is saved
            return web.json_response({"challenge": text(payload.get("challenge"), 200)})
        if kind in ("event_callback", "app_rate_limited"):  # events Shepherd has no use for: Slack wants a 2xx
            return web.Response(status=200)
        return _problem(404, "not_handled", f"Shepherd does not act on {str(kind)[:40]!r} payloads (its own "
                                            "buttons, events and slash commands only)")

    async def idle(self) -> None:
        """Returns when the items acknowledged so far have been processed (or given up on for now)."""
        while self._jobs:
            await asyncio.wait(set(self._jobs))

    async def _receive(self, item: Item, payload: dict[str, Any]) -> None:
        """Before the ack: the item is recorded in the ledger and its processing starts (after the ack), or, done or
        in hand already, it is acknowledged and nothing more."""
        if await self.shepherd.ledger.receive(SOURCE, item.key, self.config.org_id, payload):
            self._start(item.key, payload)
        else:
            log.info("Slack: %s was delivered before; acknowledged, not processed again", item.key)

    # --- Socket Mode (slack-bolt) -------------------------------------------------------------

    def _socket_app(self) -> AsyncApp:
        """The bolt app behind the Socket Mode connection: items Shepherd acts on are received (as over HTTP)
        before any listener, and so before the ack; everything else is bolt's to acknowledge."""
        client = AsyncWebClient(base_url=self.config.api_url, session=self._http, timeout=15,
                                retry_handlers=self.client.retry_handlers)
        app = AsyncApp(client=client, logger=_bolt_log, before_authorize=self._socket_receiver(),
                       authorize=_authorizer(self.config.bot_token), ignoring_self_events_enabled=False,
                       request_verification_enabled=False)  # Socket Mode: no signature, an authenticated socket

        async def leave_alone() -> None:  # events Shepherd has no use for: acknowledged
            return None

        app.event(re.compile(r".*"))(leave_alone)
        return app

    def _socket_receiver(self) -> Callable[..., Any]:
        async def receive(body: dict[str, Any], next: Callable[..., Any]) -> Any:
            try:
                item = parse(body) if isinstance(body, dict) else None
            except BadPayload as exc:
                log.warning("Slack: a Socket Mode payload cannot be read (%s); acknowledged, not acted on", exc)
                return BoltResponse(status=200, body="")
            if item is None:
                return await next()
            await self._receive(item, body)
            return BoltResponse(status=200, body="")

        return receive

    # --- processing ----------------------------------------------------------------------------

    def _start(self, key: str, body: dict[str, Any]) -> None:
        job = asyncio.get_running_loop().create_task(self._process(key, body))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _process(self, key: str, body: dict[str, Any]) -> None:
        """One recorded item, live or replayed: read from its payload by `parse`, as when it was recorded."""
        try:
            async with self._working:  # a burst is worked through a few at a time, after its acks
                with contextlib.suppress(TimeoutError):  # Slack's 3 s are for acks; the work can wait (a while)
                    await asyncio.wait_for(self._quiet.wait(), YIELD_S)
                item = parse(body)
                if item is None:  # recorded by an earlier Shepherd that recorded more: nothing to do
                    log.info("Slack: %s is not an item Shepherd acts on; settled without acting", key)
                else:
                    await self.handle(item)
        except BadPayload as exc:  # the same payload will not read better next time
            log.warning("Slack: %s cannot be read (%s); settled without acting", key, exc)
            await self.shepherd.ledger.done(SOURCE, key)
        except Exception as exc:
            log.exception("Slack: processing %s failed; it will be tried again", key)
            with contextlib.suppress(Exception):
                await self.shepherd.ledger.failed(SOURCE, key, f"{type(exc).__name__}: {exc}")
        else:
            if key not in self._settled:
                await self.shepherd.ledger.done(SOURCE, key)
        finally:
            self._settled.discard(key)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                await self.sweep()
            except Exception:
                log.exception("Slack: ledger sweep failed; trying again")

    async def sweep(self) -> int:
        """Items acknowledged by a process that died, or that failed: processed again, by one process, the way
        they were processed live. Returns how many were taken."""
        rows = await self.shepherd.ledger.due(SOURCE)
        for row in rows:
            await self._process(row.key, row.payload)
        return len(rows)

    async def handle(self, item: Item) -> None:
        if isinstance(item, SlashCommand):
            await self._command(item)
        elif isinstance(item, Said):
            await self._said(item)
        else:
            await self._vote(item)

    async def _command(self, item: SlashCommand) -> None:
        principal = await self.principal(item.user, item.user_name)
        text = await self._readable(item.text, principal) or "help"
        reply = await self.registry.run(self.shepherd, principal, text, request_key=item.key)
        data = reply.data if isinstance(reply.data, dict) else {}
        if reply.ok and data.get("follow") and data.get("id"):
            # the task's news needs a thread: in this channel, the one it has, or a new one
            address = await self._task_thread(principal, str(data["id"]), item.channel, item.user,
                                              f"{item.command} {text}")
        else:
            address = str(Address(item.channel, None, item.user))  # only the person who typed it sees the answer
        await self._reply(address, item.key, reply.text)

    async def _said(self, item: Said) -> None:
        if not item.mention and item.thread_ts and not item.mentions_someone:
            task = await self._thread_task(item.channel, item.thread_ts)
            if task is not None:  # a plain reply in a task's thread: the task's next turn
                principal = await self.principal(item.user)
                said = await self._readable(item.text, principal, names=False)
                reply = await self.registry.run(self.shepherd, principal, f"send {task.id} {shlex.quote(said)}",
                                                request_key=item.key)
                await self._reply(f"{item.channel}/{item.thread_ts}", item.key, reply.text)
                return
        if not (item.mention or item.direct):
            return  # a reply in a thread that is not a task's
        principal = await self.principal(item.user)
        text = await self._readable(_LEADING_MENTIONS.sub("", item.text), principal) or "help"
        address = f"{item.channel}/{item.thread_ts or item.ts}"
        task = await self._thread_task(item.channel, item.thread_ts) if item.thread_ts else None  # `@Shepherd stop`
        reply = await self.registry.run(self.shepherd, principal, text, request_key=item.key,
                                        where=Where(SOURCE, address, task.id if task else None))
        await self._reply(address, item.key, reply.text)

    async def _vote(self, item: Vote) -> None:
        principal = await self.principal(item.user, item.user_name)
        try:
            # the decision is announced by core to every message that shows the prompt, this one too
            await self.shepherd.confirmations.vote(principal, item.confirmation, approve=item.approve, via=SOURCE)
            self.shepherd.outbox_due()
        except ShepherdError as exc:
            if item.channel:
                await self._reply(str(Address(item.channel, item.thread, item.user)), item.key,
                                  f"error: {exc.message}")

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

    async def _readable(self, text: str, principal: Principal, *, names: bool = True) -> str:
        """Slack's markup back into what was typed (items.plain), with each mentioned person (<@U123|dave>,
        what Slack sends) as their Shepherd name, met for the first time if need be; and, for commands
        (`names`), a plain @dave (from a manifest without should_escape) as the one known person it can mean."""
        people = {user: (await self.principal(user, unescape(label))).name
                  for user, label in set(MENTION.findall(text))}
        said = plain(text, people).strip()
        if names and _AT_NAME.search(said):
            said = await self._known_names(said, principal)
        return said

    async def _known_names(self, text: str, principal: Principal) -> str:
        """@dave -> @<the Shepherd name> when exactly one known person can be meant: the name itself, or else
        the one name equal to it but for case or for the suffix a clash of names gave it."""
        try:
            known = [user.name for user, _ in await self.shepherd.users.list(principal)]
        except ShepherdError:
            return text

        def resolve(match: re.Match[str]) -> str:
            typed = match.group(1)
            if typed in known:
                return match.group(0)
            folded = typed.casefold()
            same = [n for n in known if n.casefold() == folded or n.casefold().startswith(f"{folded}@{SOURCE}:")]
            return f"@{same[0]}" if len(same) == 1 else match.group(0)

        return _AT_NAME.sub(resolve, text)

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
        asked for what (posted here, not by the outbox: the task is bound to it before this item is done)."""
        async with self.shepherd.db.read() as session:
            for thread in await threads_for(session, principal.org_id, task_id=task_id):
                if thread.channel == SOURCE and Address.parse(thread.address).channel in (channel, user):
                    return thread.address
        try:
            root = await self.client.chat_postMessage(channel=channel, text=root_text(user, said))
        except SlackApiError as exc:
            if exc.response.get("error") not in NOT_THERE:
                raise
            # not invited to that channel: the task lives in a DM with whoever started it
            root = await self.client.chat_postMessage(channel=user, text=moved_root_text(channel, said))
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
