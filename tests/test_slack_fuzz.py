"""/slack/events as an attacker (or a broken proxy) meets it: whatever the headers and the body, the answer is a
4xx with a specific code or a 2xx, never a 5xx and never a traceback in the log. Unverified requests are 401
before anything of them is read; verified ones Shepherd cannot read are 400 `malformed_payload`.

The web app is the real one (slack-bolt inside, the real ledger on SQLite), the Web API a loopback fake."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from adapters.slack.inbound import SlackConfig, SlackInbound
from bot.app import SLACK, create_app
from bot.presets import agent_catalog
from core.people.access import Role
from core.shepherd import Shepherd
from core.store.db import Database
from tests.fakes.slack_api import FakeSlack

SECRET = "fuzz-signing-secret"
DEEP = 100_000


@dataclass
class Door:
    url: str
    http: aiohttp.ClientSession
    inbound: SlackInbound

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        async with self.http.post(f"{self.url}/slack/events", data=body, headers=headers) as resp:
            answer = resp.status, await resp.text()
        await self.inbound.idle()  # what was acknowledged is processed too, before the log is read
        return answer


@pytest.fixture
async def door(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Door]:
    async with FakeSlack(bot_token="xoxb-fuzz") as fake:
        db = Database(sqlite_url)
        shepherd = Shepherd(db, catalog=agent_catalog(), workspace_root=tmp_path / "ws")
        await shepherd.orgs.ensure("acme")
        config = SlackConfig(bot_token="xoxb-fuzz", org_id="acme", signing_secret=SECRET, api_url=fake.api_url,
                             default_role=Role.VIEWER)
        runner = web.AppRunner(create_app(sqlite_url, shepherd=shepherd, slack=config), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        async with aiohttp.ClientSession() as http:
            yield Door(f"http://127.0.0.1:{runner.addresses[0][1]}", http, runner.app[SLACK])
        await runner.cleanup()
        await db.dispose()


def _signed(body: bytes, content_type: str = "application/json") -> dict[str, str]:
    """Signed over the raw bytes, as Slack does (signed_headers wants text; these bodies need not be)."""
    ts = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]


# --- the findings, one by one ------------------------------------------------------------------------------

NESTED = ("[" * DEEP + "]" * DEEP).encode()


@pytest.mark.parametrize("case,body,headers,status,code", [
    ("timestamp abc", b"{}", {"X-Slack-Request-Timestamp": "abc"}, 401, "invalid_signature"),
    ("timestamp 1e3", b"{}", {"X-Slack-Request-Timestamp": "1e3"}, 401, "invalid_signature"),
    ("timestamp empty", b"{}", {"X-Slack-Request-Timestamp": ""}, 401, "invalid_signature"),
    ("signature not ascii", b"{}", {"X-Slack-Signature": "v0=\u00e9\u00e9"}, 401, "invalid_signature"),
    ("not utf-8, unsigned", b"\xff\xfe\x00garbage", {"X-Slack-Signature": "v0=00"}, 401, "invalid_signature"),
    ("nested, unsigned", NESTED, {"X-Slack-Signature": "v0=00"}, 401, "invalid_signature"),
    ("not utf-8, signed", b"\xff\xfe\x00garbage", {}, 400, "malformed_payload"),
    ("nested JSON, signed", NESTED, {}, 400, "malformed_payload"),
    ("nested in a form, signed", b"payload=" + NESTED,
     {"Content-Type": "application/x-www-form-urlencoded"}, 400, "malformed_payload"),
    ("empty, signed", b"", {}, 400, "malformed_payload"),
    ("a JSON list, signed", b"[1, 2]", {}, 400, "malformed_payload"),
    ("no type, signed", b'{"hello": "world"}', {}, 400, "malformed_payload"),
    ("event type not text, signed", json.dumps({"type": "event_callback", "event_id": "Ev1",
                                                "event": {"type": 7}}).encode(), {}, 400, "malformed_payload"),
    # Python's reader takes NaN and Infinity; PostgreSQL refused them in the ledger: a 500 before
    ("NaN in an event, signed", b'{"type": "event_callback", "event_id": "EvNaN", "event": {"type": "message", '
                                b'"x": NaN}}', {}, 400, "malformed_payload"),
    ("Infinity in a click, signed", b"payload=" + urllib.parse.quote(
        '{"type": "block_actions", "x": -Infinity}').encode(),
     {"Content-Type": "application/x-www-form-urlencoded"}, 400, "malformed_payload"),
])
async def test_bad_requests_get_a_specific_4xx(door: Door, caplog: pytest.LogCaptureFixture, case: str, body: bytes,
                                             headers: dict[str, str], status: int, code: str) -> None:
    caplog.set_level(logging.INFO)
    got, text = await door.post(body, {**_signed(body), **headers})
    assert got == status, (case, got, text)
    assert json.loads(text)["error"] == code, text
    _no_tracebacks(caplog)


# --- and whatever else ----------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
IDS = st.one_of(JSON, st.text(alphabet="UWCDT0123456789", min_size=1, max_size=12))


def _shaped() -> st.SearchStrategy[dict[str, Any]]:
    """Payloads shaped like Slack's, with anything in their fields: what gets past the signature check."""
    event = st.fixed_dictionaries({"type": st.sampled_from(["app_mention", "message", "reaction_added"]) | JSON},
                                  optional={"user": IDS, "channel": IDS, "text": JSON | st.text(max_size=60),
                                            "ts": JSON, "thread_ts": JSON, "subtype": JSON, "bot_id": JSON,
                                            "channel_type": st.sampled_from(["im", "channel"]) | JSON})
    callback = st.fixed_dictionaries({"type": st.just("event_callback")},
                                     optional={"event_id": IDS, "event": event | JSON, "team_id": JSON,
                                               "authorizations": JSON})
    click = st.fixed_dictionaries(
        {"type": st.just("block_actions")},
        optional={"user": st.fixed_dictionaries({}, optional={"id": IDS, "username": JSON}) | JSON,
                  "actions": st.lists(st.fixed_dictionaries({}, optional={
                      "action_id": st.sampled_from(["shepherd_approve", "shepherd_reject", "other"]) | JSON,
                      "value": JSON, "action_ts": JSON}) | JSON, max_size=2) | JSON,
                  "trigger_id": IDS, "container": JSON, "message": JSON, "channel": JSON, "team": JSON})
    other = st.fixed_dictionaries({"type": st.sampled_from(["url_verification", "view_submission", "shortcut",
                                                            "message_action", "block_suggestion"]) | st.text()},
                                  optional={"challenge": JSON, "user": JSON, "view": JSON, "team": JSON})
    return st.one_of(callback, click, other)


WORDS = st.sampled_from(["help", "status", "pending", "approve ZZZZ", "role <@U1|x> admin", "role @x admin",
                         "tasks", "&lt;!channel&gt; <https://x.example|x>"]) | st.text(max_size=60)


def _command() -> st.SearchStrategy[dict[str, str]]:
    """Slash commands, most of them well formed: these are acted on (viewers: mostly refused, in a reply)."""
    user = st.text(alphabet="U0123456789", min_size=1, max_size=8)
    return st.fixed_dictionaries({"command": st.just("/shepherd"), "user_id": user | st.just(""),
                                  "channel_id": st.text(alphabet="CD0123456789", min_size=1, max_size=8),
                                  "text": WORDS, "trigger_id": st.text(max_size=20)},
                                 optional={"user_name": st.text(max_size=10)})


def _said() -> st.SearchStrategy[dict[str, Any]]:
    """Well-formed mentions and direct messages, with anything for text."""
    event = st.fixed_dictionaries({"type": st.sampled_from(["app_mention", "message"]),
                                   "user": st.text(alphabet="U0123456789", min_size=1, max_size=8),
                                   "channel": st.text(alphabet="CD0123456789", min_size=1, max_size=8),
                                   "text": WORDS, "ts": st.just("1700000000.000100"),
                                   "channel_type": st.sampled_from(["im", "channel"])},
                                  optional={"thread_ts": st.just("1700000000.000100")})
    return st.fixed_dictionaries({"type": st.just("event_callback"), "event_id": st.uuids().map(str),
                                  "event": event})


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    kind = draw(st.sampled_from(["json", "json", "form", "form", "payload", "bytes", "text"]))
    if kind == "json":
        body = json.dumps(draw(_shaped() | _said() | JSON)).encode()
        content_type = "application/json"
    elif kind == "form":
        body = urllib.parse.urlencode(draw(_command())).encode()
        content_type = "application/x-www-form-urlencoded"
    elif kind == "payload":
        body = urllib.parse.urlencode({"payload": json.dumps(draw(_shaped() | JSON))}).encode()
        content_type = "application/x-www-form-urlencoded"
    elif kind == "bytes":
        body = draw(st.binary(max_size=200))
        content_type = draw(st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain"]))
    else:
        body = draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
        content_type = draw(st.sampled_from(["application/json", "application/x-www-form-urlencoded", ""]))
    headers = _signed(body, content_type) if draw(st.booleans()) or kind in ("json", "payload", "form") else {}
    if draw(st.integers(0, 7)) == 0:  # now and then, headers that are not what Slack sends
        headers["X-Slack-Request-Timestamp"] = draw(st.sampled_from(["", "abc", "1e3", "-1", "9" * 30, "٣٣"])
                                                    | st.text(alphabet="0123456789 .-+e", max_size=14))
    if draw(st.integers(0, 7)) == 0:
        headers["X-Slack-Signature"] = draw(st.text(max_size=80).filter(lambda s: "\n" not in s and "\r" not in s))
    if draw(st.integers(0, 9)) == 0:
        headers["X-Slack-Retry-Num"] = draw(st.text(alphabet="0123456789x", max_size=3))
    return body, headers


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=requests())
async def test_no_request_gets_a_5xx_or_a_traceback(door: Door, caplog: pytest.LogCaptureFixture,
                                                   request: tuple[bytes, dict[str, str]]) -> None:
    body, headers = request
    caplog.set_level(logging.INFO)
    try:
        status, text = await door.post(body, headers)
    except ValueError:  # a header value aiohttp itself refuses to send (the request never left)
        return
    assert status < 500, (status, text, body[:200], headers)
    event(f"answered {status}")  # --hypothesis-show-statistics: how many got past the signature, were acted on
    if status == 401:
        assert json.loads(text)["error"] == "invalid_signature"
    elif status == 400:
        assert json.loads(text)["error"] == "malformed_payload"
    _no_tracebacks(caplog)
