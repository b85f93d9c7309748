"""Slack as a core.channels.outbox.Channel: the outbox dispatcher posts and edits through it.

Addresses: `C123/1700000000.000100` is a thread (replies carry thread_ts); `C123/1700…@U456` and `C123@U456`
are messages only U456 sees (ephemeral: Slack cannot edit those, so an edit posts again); `C123` is the
channel itself. A thread is opened (`open`) at `C123@U456`: a message in C123 saying who asked for what (or in
a DM with U456 when Shepherd is not in C123), the thread its replies.

Rate limits: a 429 is tried again after exactly the Retry-After Slack sent (`RetryAfter`) while the call is in
hand; past a couple of tries, the 429's Retry-After goes back to the dispatcher, which keeps the row and tries
again then. Nothing is dropped.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.blocks import moved_note, moved_root_text, render, root_text
from core.channels.outbox import DeliveryError, Message

# Refusals that trying again cannot fix: the conversation is gone or closed to us, or the message is.
PERMANENT = frozenset({
    "channel_not_found", "is_archived", "not_in_channel", "user_not_in_channel", "msg_too_long",
    "invalid_blocks", "no_text", "message_not_found", "cant_update_message", "edit_window_closed",
    "account_inactive", "restricted_action", "user_not_found", "ekm_access_denied",
})


NOT_THERE = frozenset({"not_in_channel", "channel_not_found"})  # a conversation the bot is not a member of


RATE_LIMIT_TRIES = 2  # 429s waited out inside one call of the outbox (then the dispatcher waits, holding nothing)
RETRY_AFTER_MAX_S = 60.0  # the longest one wait for Slack's Retry-After; Slack's own are seconds
RETRY_AFTER_DEFAULT_S = 30.0  # a 429 without a (readable) Retry-After, which Slack does not send


def retry_after(headers: Mapping[str, str | Sequence[str]], default: float = RETRY_AFTER_DEFAULT_S) -> float:
    """Seconds to wait, from a 429's Retry-After (seconds, as Slack sends it), within [0, RETRY_AFTER_MAX_S]."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is not None and not isinstance(value, str):
        value = value[0] if value else None
    try:
        wait = float(value) if value is not None else default
    except ValueError:
        wait = default
    if math.isnan(wait):
        wait = default
    return min(max(wait, 0.0), RETRY_AFTER_MAX_S)


class RetryAfter(AsyncRetryHandler):
    """Tries a call that met a 429 again after exactly the Retry-After Slack sent (slack_sdk's own handler adds up
    to a second at random and fails on a fractional value), at most `max_retry_count` times and, all waits
    together, `budget_s` seconds: past that, the 429 is the caller's to handle."""

    def __init__(self, max_retry_count: int = RATE_LIMIT_TRIES, *, budget_s: float = RETRY_AFTER_MAX_S) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.budget_s = budget_s

    @staticmethod
    def _wait(response: HttpResponse | None) -> float:
        return retry_after(response.headers, default=1.0) if response is not None else 1.0

    async def _can_retry_async(self, *, state: RetryState, request: HttpRequest,
                               response: HttpResponse | None = None, error: Exception | None = None) -> bool:
        if response is None or response.status_code != 429:
            return False
        waited = float((state.custom_values or {}).get("rate_limit_waited", 0.0))
        return waited + self._wait(response) <= self.budget_s

    async def prepare_for_next_attempt_async(self, *, state: RetryState, request: HttpRequest,
                                             response: HttpResponse | None = None,
                                             error: Exception | None = None) -> None:
        wait = self._wait(response)
        state.custom_values = {**(state.custom_values or {}),
                               "rate_limit_waited": float((state.custom_values or {}).get("rate_limit_waited", 0.0))
                               + wait}
        state.next_attempt_requested = True
        await asyncio.sleep(wait)
        state.increment_current_attempt()


def _note(text: str) -> dict[str, object]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def make_client(token: str, api_url: str, session: aiohttp.ClientSession | None = None, *,
                rate_limit_tries: int = RATE_LIMIT_TRIES, rate_limit_budget_s: float = RETRY_AFTER_MAX_S,
                ) -> AsyncWebClient:
    """A Web API client that retries dropped connections and waits out 429s for their Retry-After (at most
    `rate_limit_tries` times and `rate_limit_budget_s` seconds in all per call)."""
    return AsyncWebClient(
        token=token, base_url=api_url, session=session, timeout=15,
        retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=2),
                        RetryAfter(rate_limit_tries, budget_s=rate_limit_budget_s)],
    )


@dataclass(frozen=True)
class Address:
    channel: str
    thread_ts: str | None = None
    user: str | None = None  # only this user sees it

    @classmethod
    def parse(cls, address: str) -> Address:
        base, _, user = address.partition("@")
        channel, _, ts = base.partition("/")
        return cls(channel, ts or None, user or None)

    def __str__(self) -> str:
        text = self.channel + (f"/{self.thread_ts}" if self.thread_ts else "")
        return text + (f"@{self.user}" if self.user else "")


def delivery_error(exc: SlackApiError) -> DeliveryError:
    status = exc.response.status_code
    error = str(exc.response.get("error") or f"HTTP {status}")
    if status == 429:
        return DeliveryError(f"slack: rate limited ({error})", retry_after=retry_after(exc.response.headers))
    return DeliveryError(f"slack: {error}", permanent=error in PERMANENT)


class SlackChannel:
    name = "slack"
    progress = True
    pace_s = 1.0  # edits: at most one a second per Slack channel (chat.update's tier)

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    def accepts(self, address: str) -> bool:
        return True  # one bot token reaches every conversation the app is in

    def pace_key(self, address: str) -> str:
        return Address.parse(address).channel

    async def post(self, address: str, message: Message) -> str:
        where = Address.parse(address)
        text, blocks = render(message)
        try:
            if where.user:
                try:
                    answer = await self.client.chat_postEphemeral(
                        channel=where.channel, user=where.user, text=text, blocks=blocks, thread_ts=where.thread_ts)
                except SlackApiError as exc:
                    if exc.response.get("error") not in NOT_THERE:
                        raise
                    # a slash command in a channel Shepherd was not invited to: the answer goes to a DM
                    note = moved_note(where.channel)
                    answer = await self.client.chat_postMessage(channel=where.user, text=f"{text}\n{note}",
                                                                blocks=[*blocks, _note(note)])
                    return f"ephemeral:{answer.get('ts', '')}"
                return f"ephemeral:{answer.get('message_ts', '')}"
            answer = await self.client.chat_postMessage(
                channel=where.channel, text=text, blocks=blocks, thread_ts=where.thread_ts,
                unfurl_links=False, unfurl_media=False)
        except SlackApiError as exc:
            raise delivery_error(exc) from None
        return str(answer["ts"])

    async def update(self, address: str, ref: str, message: Message) -> None:
        if ref.startswith("ephemeral:"):
            await self.post(address, message)  # an ephemeral message cannot be edited: say it again
            return
        text, blocks = render(message)
        try:
            await self.client.chat_update(channel=Address.parse(address).channel, ts=ref, text=text, blocks=blocks)
        except SlackApiError as exc:
            raise delivery_error(exc) from None

    async def open(self, address: str, message: Message) -> tuple[str, str]:
        """The message a slash command's task thread hangs from, `message.text` being what was typed: in the
        channel, mentioning who typed it; in a DM with them when Shepherd is not in the channel."""
        where = Address.parse(address)
        try:
            try:
                answer = await self.client.chat_postMessage(channel=where.channel,
                                                            text=root_text(where.user or "", message.text))
            except SlackApiError as exc:
                if exc.response.get("error") not in NOT_THERE or not where.user:
                    raise
                answer = await self.client.chat_postMessage(channel=where.user,
                                                            text=moved_root_text(where.channel, message.text))
        except SlackApiError as exc:
            raise delivery_error(exc) from None
        return str(answer["ts"]), f"{answer['channel']}/{answer['ts']}"
