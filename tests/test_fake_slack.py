"""The Slack fake (tests/fakes/slack_api.py) against the real slack_sdk and slack_bolt clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.say.async_say import AsyncSay
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_api import FakeSlack, signed_headers

BOT = "xoxb-test"
APP = "xapp-test"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=BOT, app_token=APP) as slack:
        yield slack


def client(fake: FakeSlack, token: str = BOT, *, retries: bool = False) -> AsyncWebClient:
    if retries:
        handlers = [AsyncConnectionErrorRetryHandler(), AsyncRateLimitErrorRetryHandler(max_retry_count=2)]
        return AsyncWebClient(token=token, base_url=fake.api_url, retry_handlers=handlers)
    return AsyncWebClient(token=token, base_url=fake.api_url)


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


async def test_auth_test(fake: FakeSlack) -> None:
    resp = await client(fake).auth_test()
    assert resp["user_id"] == "U0BOT" and resp["bot_id"] == "B0BOT" and resp["team_id"] == "T1"
    assert fake.calls_to("auth.test")[0].token == BOT


async def test_post_update_ephemeral_round_trip(fake: FakeSlack) -> None:
    web = client(fake)
    posted = await web.chat_postMessage(channel="C1", text="hello", blocks=[section("*hello*")])
    ts = posted["ts"]
    assert posted["channel"] == "C1" and posted["message"]["text"] == "hello"
    assert fake.messages[("C1", ts)].blocks == [section("*hello*")]

    updated = await web.chat_update(channel="C1", ts=ts, text="bye", blocks=[section("*bye*")])
    assert updated["ts"] == ts and updated["text"] == "bye"
    msg = fake.messages[("C1", ts)]
    assert (msg.text, msg.blocks) == ("bye", [section("*bye*")])
    assert msg.history == [{"text": "hello", "blocks": [section("*hello*")]}]

    eph = await web.chat_postEphemeral(channel="C1", user="U7", text="psst", thread_ts=ts)
    assert eph["message_ts"] > ts
    [mine] = fake.ephemeral_for("U7")
    assert (mine.channel, mine.text, mine.user, mine.ephemeral, mine.thread_ts) == ("C1", "psst", "U7", True, ts)
    assert fake.ephemeral_for("U8") == []
    with pytest.raises(SlackApiError) as err:
        await web.chat_update(channel="C1", ts=eph["message_ts"], text="x")
    assert err.value.response["error"] == "cant_update_message"
    assert [c.method for c in fake.calls] == ["chat.postMessage", "chat.update", "chat.postEphemeral", "chat.update"]
    assert fake.calls[0].args["channel"] == "C1" and fake.calls[0].token == BOT


async def test_thread(fake: FakeSlack) -> None:
    web = client(fake)
    root = (await web.chat_postMessage(channel="C1", text="root"))["ts"]
    await web.chat_postMessage(channel="C1", text="one", thread_ts=root)
    await web.chat_postMessage(channel="C2", text="elsewhere", thread_ts=root)
    await web.chat_postEphemeral(channel="C1", user="U1", text="hidden", thread_ts=root)
    await web.chat_postMessage(channel="C1", text="two", thread_ts=root)
    assert [m.text for m in fake.thread("C1", root)] == ["one", "two"]
    assert fake.thread("C1", "1.0") == []


async def test_message_not_found(fake: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as err:
        await client(fake).chat_update(channel="C1", ts="1700000000.999900", text="x")
    assert err.value.response["error"] == "message_not_found"


async def test_tokens(fake: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as err:
        await client(fake, "xoxb-wrong").chat_postMessage(channel="C1", text="x")
    assert err.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as err:
        await AsyncWebClient(base_url=fake.api_url).auth_test()
    assert err.value.response["error"] == "not_authed"
    with pytest.raises(SlackApiError) as err:  # the bot token does not open Socket Mode connections
        await client(fake).apps_connections_open(app_token=BOT)
    assert err.value.response["error"] == "invalid_auth"
    opened = await client(fake).apps_connections_open(app_token=APP)
    assert opened["url"].startswith(fake.base_url.replace("http://", "ws://") + "/link/?ticket=")
    assert fake.calls_to("apps.connections.open")[-1].token == APP
    assert fake.messages == {}


async def test_rate_limit_is_retried_once_and_lands_once(fake: FakeSlack) -> None:
    fake.rate_limit_next("chat.postMessage", retry_after=1)
    resp = await client(fake, retries=True).chat_postMessage(channel="C1", text="once")
    assert len(fake.calls_to("chat.postMessage")) == 2
    assert list(fake.messages) == [("C1", resp["ts"])]


async def test_rate_limit_exhausted(fake: FakeSlack) -> None:
    fake.rate_limit_next("auth.test", retry_after=0, times=3)
    with pytest.raises(SlackApiError) as err:
        await client(fake, retries=True).auth_test()
    assert err.value.response.status_code == 429 and err.value.response["error"] == "ratelimited"
    assert err.value.response.headers.get("Retry-After") == "0"
    assert len(fake.calls_to("auth.test")) == 3


async def test_fail_next(fake: FakeSlack) -> None:
    fake.fail_next("chat.postMessage", "not_in_channel")
    web = client(fake)
    with pytest.raises(SlackApiError) as err:
        await web.chat_postMessage(channel="C1", text="x")
    assert err.value.response["error"] == "not_in_channel"
    await web.chat_postMessage(channel="C1", text="x")
    assert len(fake.messages) == 1


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"channel": "C1", "text": "fallback", "blocks": [section("x" * 3001)]}, "invalid_blocks"),
    ({"channel": "C1", "text": "fallback", "blocks": [section("x")] * 51}, "invalid_blocks"),
    ({"channel": "C1", "text": "fallback", "blocks": [{"type": "actions", "elements": [
        {"type": "button", "text": {"type": "plain_text", "text": "x" * 76}, "action_id": "a"}]}]}, "invalid_blocks"),
    ({"channel": "C1", "text": "fallback", "blocks": [{"type": "actions", "elements": [
        {"type": "button", "text": {"type": "plain_text", "text": "ok"}, "value": "v" * 2001}]}]}, "invalid_blocks"),
    ({"channel": "C1", "text": "fallback", "blocks": [{**section("x"), "accessory": {
        "type": "button", "text": {"type": "plain_text", "text": "ok"}, "action_id": "a" * 256}}]}, "invalid_blocks"),
    ({"channel": "C1", "text": "x" * 40_001}, "msg_too_long"),
    pytest.param({"channel": "C1", "text": ""}, "no_text",
                 marks=pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")),
    ({"channel": "", "text": "x"}, "channel_not_found"),
    ({"channel": "C-archived", "text": "x"}, "is_archived"),
])
async def test_post_validation(fake: FakeSlack, kwargs: dict[str, Any], error: str) -> None:
    fake.archived_channels.add("C-archived")
    with pytest.raises(SlackApiError) as err:
        await client(fake).chat_postMessage(**kwargs)
    assert err.value.response["error"] == error
    assert fake.messages == {}


async def test_update_validates_blocks(fake: FakeSlack) -> None:
    web = client(fake)
    ts = (await web.chat_postMessage(channel="C1", text="x", blocks=[section("x")]))["ts"]
    with pytest.raises(SlackApiError) as err:
        await web.chat_update(channel="C1", ts=ts, text="x", blocks=[section("x" * 3001)])
    assert err.value.response["error"] == "invalid_blocks"
    assert fake.messages[("C1", ts)].history == []
    await web.chat_update(channel="C1", ts=ts, text="only text")  # blocks left out are kept, as Slack does
    assert fake.messages[("C1", ts)].blocks == [section("x")]


async def test_users_views_unknown(fake: FakeSlack) -> None:
    fake.users["U7"] = "alice"
    web = client(fake)
    user = (await web.users_info(user="U7"))["user"]  # a GET with query parameters
    assert (user["id"], user["name"], user["profile"]["display_name"]) == ("U7", "alice", "alice")
    with pytest.raises(SlackApiError) as err:
        await web.users_info(user="U404")
    assert err.value.response["error"] == "user_not_found"
    view = await web.views_open(trigger_id="1.2.x", view={"type": "modal", "callback_id": "cb", "blocks": []})
    assert view["view"]["id"] == "V1" and view["view"]["callback_id"] == "cb"
    with pytest.raises(SlackApiError) as err:
        await web.api_call("chat.nonsense", json={"x": 1})
    assert err.value.response["error"] == "unknown_method"


async def test_form_encoded_blocks(fake: FakeSlack) -> None:
    resp = await client(fake).api_call("chat.postMessage", data={
        "channel": "C1", "text": "form", "blocks": json.dumps([section("from a form")])})
    assert fake.messages[("C1", resp["ts"])].blocks == [section("from a form")]


async def test_wait_for_times_out_with_the_calls(fake: FakeSlack) -> None:
    await client(fake).auth_test()
    with pytest.raises(AssertionError, match="auth.test"):
        await fake.wait_for(lambda: False, timeout=0.1)


def test_signed_headers() -> None:
    body = "token=x&command=%2Fshepherd"
    headers = signed_headers("s3cret", body, timestamp=1_700_000_000)
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert headers["X-Slack-Request-Timestamp"] == "1700000000"
    assert headers["X-Slack-Signature"].startswith("v0=")
    verifier = SignatureVerifier("s3cret")
    assert verifier.is_valid(body, "1700000000", headers["X-Slack-Signature"]) is False  # too old
    fresh = signed_headers("s3cret", body.encode())
    assert verifier.is_valid(body, fresh["X-Slack-Request-Timestamp"], fresh["X-Slack-Signature"])


SLASH = {"envelope_id": "e1", "type": "slash_commands", "accepts_response_payload": True,
         "payload": {"command": "/shepherd", "text": "help", "user_id": "U1", "channel_id": "C1", "team_id": "T1",
                     "response_url": "https://hooks.slack.com/commands/T1/1/x", "trigger_id": "1.2.x"}}


async def test_socket_mode_round_trip(fake: FakeSlack) -> None:
    sm = SocketModeClient(app_token=APP, web_client=AsyncWebClient(token=BOT, base_url=fake.api_url))
    seen: list[SocketModeRequest] = []

    async def listener(c: SocketModeClient, req: SocketModeRequest) -> None:
        seen.append(req)
        await c.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id, payload={"text": "ok"}))

    sm.socket_mode_request_listeners.append(listener)  # type: ignore[arg-type]
    try:
        await sm.connect()
        await asyncio.wait_for(fake.socket_connected.wait(), 5)
        await fake.socket_send(SLASH)
        ack = await fake.socket_ack("e1")
    finally:
        await sm.close()
    assert ack == {"envelope_id": "e1", "payload": {"text": "ok"}}
    assert seen[0].type == "slash_commands" and seen[0].payload["command"] == "/shepherd"
    assert fake.calls_to("apps.connections.open")[0].token == APP
    await fake.wait_for(lambda: not fake.socket_connected.is_set(), timeout=5)


async def test_bolt_socket_mode_handler(fake: FakeSlack) -> None:
    app = AsyncApp(client=AsyncWebClient(token=BOT, base_url=fake.api_url), signing_secret="unused")

    @app.command("/shepherd")
    async def shepherd(ack: AsyncAck, say: AsyncSay, command: dict[str, Any]) -> None:
        await ack(text="on it")
        await say(f"you said {command['text']}")

    handler = AsyncSocketModeHandler(app, app_token=APP)
    try:
        await handler.connect_async()
        await fake.socket_send(SLASH)
        ack = await fake.socket_ack("e1")
        await fake.wait_for(lambda: any(m.text == "you said help" for m in fake.messages.values()), timeout=5)
    finally:
        await handler.close_async()
    assert ack == {"envelope_id": "e1", "payload": {"text": "on it"}}
