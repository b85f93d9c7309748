"""A Slack click is only what it says: Shepherd's Approve approves, its Reject rejects, and nothing else decides
anything, live or replayed by the ledger's sweep. What Shepherd does not act on is never recorded."""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from adapters.slack.inbound import SlackInbound
from adapters.slack.items import Said, SlashCommand, Vote, parse
from bot.app import SLACK
from core.store.models import Confirmation, Delivery
from tests import test_slack
from tests.fakes.slack_api import Posted
from tests.test_slack import ADMIN, SlackWorld, _actions

slack = test_slack.slack  # the fixture: the web app, the fake Slack, a task runner


def _click_payload(prompt: Posted, action_id: str, *, trigger: str, value: str | None = None) -> dict[str, Any]:
    """The block_actions Slack sends for a click on a button with `action_id` under `prompt`."""
    button = _actions(prompt)[0]["elements"][0]
    return {
        "type": "block_actions", "user": {"id": ADMIN, "username": "ada", "team_id": "T1"}, "api_app_id": "A1",
        "token": "legacy", "trigger_id": trigger, "team": {"id": "T1", "domain": "acme"},
        "container": {"type": "message", "message_ts": prompt.ts, "channel_id": prompt.channel, "is_ephemeral": False},
        "channel": {"id": prompt.channel, "name": "dev"},
        "message": {"type": "message", "ts": prompt.ts, "thread_ts": prompt.thread_ts, "text": prompt.text},
        "response_url": "https://hooks.slack.com/actions/T1/1/x",
        "actions": [{"action_id": action_id, "block_id": "b", "type": "button",
                     "value": button["value"] if value is None else value, "action_ts": str(time.time())}],
    }


async def _prompt(slack: SlackWorld) -> tuple[Posted, Confirmation]:
    await slack.command('run "add a greeting" --agent demo --repo acme/api --level 1')
    root = await slack.root_for("add a greeting")
    prompt = await slack.in_thread(root, lambda m: bool(_actions(m)), "approval prompt")
    async with slack.shepherd.db.read() as session:
        [conf] = list(await session.exec(select(Confirmation).where(Confirmation.status == "pending")))
    return prompt, conf


async def _all_due(slack: SlackWorld) -> None:
    """As two minutes later: every lease in the ledger has run out (the sweep takes what is unfinished)."""
    async with slack.shepherd.db.write() as session:
        await session.exec(update(Delivery).values(next_at=col(Delivery.received_at)))


async def _status(slack: SlackWorld, conf: Confirmation) -> str:
    async with slack.shepherd.db.read() as session:
        found = await session.get(Confirmation, conf.id)
    assert found is not None
    return found.status


async def test_a_foreign_button_is_not_recorded_and_the_sweep_decides_nothing(slack: SlackWorld) -> None:
    prompt, conf = await _prompt(slack)
    inbound: SlackInbound = slack.app[SLACK]
    for action_id in ("other_app_button", "shepherd_", "shepherd_approve_later", "SHEPHERD_REJECT", "shepherd_stop"):
        payload = _click_payload(prompt, action_id, trigger=f"foreign-{action_id}")
        status, text = await slack.send(urllib.parse.urlencode({"payload": json.dumps(payload)}))
        assert status == 404 and json.loads(text)["error"] == "not_handled", (action_id, status, text)
        assert await slack.shepherd.ledger.get("slack", f"action:foreign-{action_id}") is None
    await _all_due(slack)
    await inbound.sweep()
    await inbound.idle()
    assert await _status(slack, conf) == "pending"
    assert _actions(slack.fake.messages[(prompt.channel, prompt.ts)]), "the prompt still waits for people"


async def test_a_foreign_click_left_in_the_ledger_by_an_older_shepherd_decides_nothing_when_swept(
    slack: SlackWorld,
) -> None:
    prompt, conf = await _prompt(slack)
    inbound: SlackInbound = slack.app[SLACK]
    # what the review found: a row recorded for a click on someone else's button, its lease run out
    payload = _click_payload(prompt, "other_app_button", trigger="old-row")
    assert await slack.shepherd.ledger.receive("slack", "action:old-row", "acme", payload)
    await _all_due(slack)
    assert await inbound.sweep() >= 1
    await inbound.idle()
    assert await _status(slack, conf) == "pending"
    row = await slack.shepherd.ledger.get("slack", "action:old-row")
    assert row is not None and row.status == "done"  # settled: never taken up again
    assert _actions(slack.fake.messages[(prompt.channel, prompt.ts)])


async def test_a_replayed_approve_still_approves(slack: SlackWorld) -> None:
    prompt, conf = await _prompt(slack)
    inbound: SlackInbound = slack.app[SLACK]
    # acknowledged by a process that then died before acting on it
    payload = _click_payload(prompt, "shepherd_approve", trigger="died-before")
    assert await slack.shepherd.ledger.receive("slack", "action:died-before", "acme", payload)
    await _all_due(slack)
    assert await inbound.sweep() >= 1
    await inbound.idle()
    assert await _status(slack, conf) == "approved"
    await slack.fake.wait_for(lambda: not _actions(slack.fake.messages[(prompt.channel, prompt.ts)]))
    assert "approved by ada from slack" in slack.fake.messages[(prompt.channel, prompt.ts)].text


async def test_a_live_reject_rejects(slack: SlackWorld) -> None:
    prompt, conf = await _prompt(slack)
    status, _ = await slack.click(prompt, "reject", user=ADMIN)
    assert status == 200
    await slack.fake.wait_for(lambda: not _actions(slack.fake.messages[(prompt.channel, prompt.ts)]))
    assert await _status(slack, conf) == "rejected"


# --- what parse, the one router, makes of each kind of payload ------------------------------------------------

def _event(**event: Any) -> dict[str, Any]:
    return {"type": "event_callback", "event_id": "Ev1",
            "event": {"type": "message", "user": "U1", "channel": "C1", "ts": "1.1", "text": "hi", **event}}


def _block_actions(action_id: str) -> dict[str, Any]:
    return {"type": "block_actions", "user": {"id": "U1"}, "trigger_id": "t1",
            "actions": [{"action_id": action_id, "value": "conf-1"}]}


@pytest.mark.parametrize("payload,kind", [
    (_block_actions("shepherd_approve"), Vote),
    (_block_actions("shepherd_reject"), Vote),
    (_block_actions("other_app_button"), None),
    (_block_actions("shepherd_approved"), None),
    ({"command": "/shepherd", "user_id": "U1", "channel_id": "C1", "text": "help"}, SlashCommand),
    (_event(type="app_mention", text="<@U0BOT> help"), Said),
    (_event(channel_type="im"), Said),  # a direct message
    (_event(thread_ts="1.0"), Said),  # a reply in a thread: maybe a task's
    (_event(), None),  # channel chatter
    (_event(thread_ts="1.0", text="<@U0BOT> stop"), None),  # comes again as app_mention
    (_event(subtype="message_changed"), None),
    (_event(bot_id="B1", channel_type="im"), None),  # a bot, ourselves included
    (_event(type="reaction_added"), None),
    (_event(type="member_joined_channel"), None),
    ({"type": "view_submission", "user": {"id": "U1"}, "view": {"callback_id": "x"}}, None),
    ({"type": "shortcut", "callback_id": "x"}, None),
    ({"type": "message_action", "callback_id": "x"}, None),
    ({"type": "url_verification", "challenge": "c"}, None),
])
def test_parse_routes_what_shepherd_acts_on_and_nothing_else(payload: dict[str, Any], kind: type | None) -> None:
    item = parse(payload)
    assert (type(item) if item is not None else None) is kind
    if isinstance(item, Vote):
        assert item.approve is (payload["actions"][0]["action_id"] == "shepherd_approve")
