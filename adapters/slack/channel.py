"""Slack as a core.channels.Channel: the outbox dispatcher posts and edits through it.

Addresses: `C123/1700000000.000100` is a thread (replies carry thread_ts); `C123/1700…@U456` and `C123@U456`
are messages only U456 sees (ephemeral: Slack cannot edit those, so an edit posts again); `C123` is the
channel itself. Rate limits: slack_sdk's AsyncRateLimitErrorRetryHandler retries a 429 after Retry-After
while the call is in hand; past that, the 429's Retry-After goes back to the dispatcher, which keeps the row
and tries again then. Nothing is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.blocks import render
from core.channels import DeliveryError, Message

# Refusals that trying again cannot fix: the conversation is gone or closed to us, or the message is.
PERMANENT = frozenset({
    "channel_not_found", "is_archived", "not_in_channel", "user_not_in_channel", "msg_too_long",
    "invalid_blocks", "no_text", "message_not_found", "cant_update_message", "edit_window_closed",
    "account_inactive", "restricted_action", "user_not_found", "ekm_access_denied",
})


NOT_THERE = frozenset({"not_in_channel", "channel_not_found"})  # a conversation the bot is not a member of


def _note(text: str) -> dict[str, object]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def make_client(token: str, api_url: str, session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """A Web API client that waits out 429s (Retry-After) and retries dropped connections."""
    return AsyncWebClient(
        token=token, base_url=api_url, session=session, timeout=15,
        retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=2),
                        AsyncRateLimitErrorRetryHandler(max_retry_count=2)],
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
        retry_after = exc.response.headers.get("Retry-After") or exc.response.headers.get("retry-after")
        try:
            wait = float(retry_after) if retry_after is not None else 30.0
        except ValueError:
            wait = 30.0
        return DeliveryError(f"slack: rate limited ({error})", retry_after=wait)
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
                    note = f"(from <#{where.channel}>: invite me there with `/invite @Shepherd` to answer in place)"
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
