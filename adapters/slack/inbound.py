"""Slack in: the doors. Over HTTP (/slack/events) requests are read here, without slack-bolt (whose body reader
empties a slash command whose text holds the word "payload" and fails on odd shapes); in Socket Mode bolt's
AsyncApp holds the connection and hands each payload to the same receiver.

Each request is, in this order: verified (the signature over the raw body, over HTTP; Socket Mode needs none),
read once into the item Shepherd acts on (adapters.slack.items.parse: what it leaves alone is never recorded),
and handed to the receiver (adapters.slack.receiver): recorded in the delivery ledger under Slack's own id,
acknowledged, and only then processed (adapters.slack.handlers, through core's conversation API). A retry
(X-Slack-Retry-Num) or a redelivery of an item done or in hand is acknowledged and does nothing; an item whose
process died is read again from its payload by the same `parse`, and processed the same way, by another.
Everything Shepherd says goes out through the outbox (adapters.slack.channel).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.channel import RETRY_AFTER_MAX_S, make_client
from adapters.slack.handlers import Handlers
from adapters.slack.items import BadPayload, parse, read_body, text
from adapters.slack.receiver import Receiver, Recording, Request
from core.channels.conversations import Conversations
from core.channels.ledger import LEASE_S
from core.commands.grammar import CommandRegistry
from core.commands.registry import build_registry
from core.people.access import Role
from core.shepherd import Shepherd

log = logging.getLogger(__name__)

MAX_SKEW_S = 300  # Slack's rule: a request whose timestamp is further off than this is refused
# Our one Web API call while processing an item (a new person's name, users.info) waits out Slack's 429s in
# place, within the item's ledger lease: a rate limit is not a failure to back off from.
RATE_LIMIT_BUDGET_S = min(LEASE_S / 2, 2 * RETRY_AFTER_MAX_S)
RATE_LIMIT_TRIES = 30  # bounded by the budget first
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class _Quiet(logging.Filter):
    """bolt reads SLACK_BOT_TOKEN from the environment by itself and then warns that our client wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "will be unused" not in record.getMessage()


def _bolt_log() -> logging.Logger:
    """bolt's logger, quiet about the token (installed when a bolt app is made, not when this is imported)."""
    logger = logging.getLogger("adapters.slack.bolt")
    if not any(isinstance(f, _Quiet) for f in logger.filters):
        logger.addFilter(_Quiet())
    return logger


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
        self.config = config
        # users.info for new people, waiting out Slack's 429s in place (see RATE_LIMIT_BUDGET_S)
        self.client = make_client(config.bot_token, config.api_url, http, rate_limit_tries=RATE_LIMIT_TRIES,
                                  rate_limit_budget_s=RATE_LIMIT_BUDGET_S)
        conversations = Conversations(shepherd, registry or build_registry())
        self.handlers = Handlers(conversations, config, self.client)
        self.receiver = Receiver(self.handlers.handle, shepherd.ledger, [Recording(shepherd.ledger, config.org_id)],
                                 prepare=self.handlers.prepare, batch=conversations.batch)
        self._http = http
        self.socket: Any = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.receiver.start()
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
        await self.receiver.stop()

    async def idle(self) -> None:
        """Returns when the items acknowledged so far have been processed (or given up on for now)."""
        await self.receiver.idle()

    async def sweep(self) -> int:
        """What the ledger's sweep does every few seconds, now: returns how many items it took up again."""
        return await self.receiver.sweep()

    # --- HTTP ------------------------------------------------------------------------------------

    async def handle_http(self, request: web.Request) -> web.StreamResponse:
        """POST /slack/events: events, slash commands and interactivity."""
        if not self.config.signing_secret:
            return _problem(404, "slack_not_configured", "set SLACK_SIGNING_SECRET to receive Slack requests")
        with self.receiver.acking():
            return await self._handle_http(request, self.config.signing_secret)

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
            answer = await self.receiver.receive(Request(item, payload))
            return web.Response(status=answer.status, text=answer.body)
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

    # --- Socket Mode (slack-bolt) -------------------------------------------------------------

    def _socket_app(self) -> AsyncApp:
        """The bolt app behind the Socket Mode connection: items Shepherd acts on go to the receiver (as over HTTP)
        before any listener, and so before the ack; everything else is bolt's to acknowledge."""
        client = AsyncWebClient(base_url=self.config.api_url, session=self._http, timeout=15,
                                retry_handlers=self.client.retry_handlers)
        app = AsyncApp(client=client, logger=_bolt_log(), before_authorize=self._socket_door(),
                       authorize=_authorizer(self.config.bot_token), ignoring_self_events_enabled=False,
                       request_verification_enabled=False)  # Socket Mode: no signature, an authenticated socket

        async def leave_alone() -> None:  # events Shepherd has no use for: acknowledged
            return None

        app.event(re.compile(r".*"))(leave_alone)
        return app

    def _socket_door(self) -> Callable[..., Any]:
        """bolt's request -> the receiver's: the payload read once into its item, as over HTTP."""
        async def door(body: dict[str, Any], next: Callable[..., Any]) -> Any:
            try:
                item = parse(body) if isinstance(body, dict) else None
            except BadPayload as exc:
                log.warning("Slack: a Socket Mode payload cannot be read (%s); acknowledged, not acted on", exc)
                return BoltResponse(status=200, body="")
            if item is None:
                return await next()
            with self.receiver.acking():
                answer = await self.receiver.receive(Request(item, body))
            return BoltResponse(status=answer.status, body=answer.body)

        return door
