"""A delivery acknowledged and waiting in this process (a backlog) past its ledger lease is not taken again by the
ledger's sweep: Slack's and GitHub's receivers process it once (Telegram's has its own test, found there first)."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from pathlib import Path
from typing import Any

from adapters.github.receiver import Receiver as GitHubReceiver
from adapters.github.routes import route
from adapters.slack.items import parse, read_body
from adapters.slack.receiver import Receiver as SlackReceiver
from core.channels.ledger import Ledger
from core.store.db import Database

CORPUS = Path(__file__).resolve().parent / "corpus" / "github-webhooks"


async def test_a_github_delivery_waiting_past_its_lease_is_processed_once(db: Database) -> None:
    ledger = Ledger(db, lease_s=0.0)  # every lease has run out at once: what a long backlog comes to
    payload: dict[str, Any] = json.loads((CORPUS / "issue_comment" / "created.payload.json").read_text())
    payload["comment"]["body"] = "/shepherd status"
    item = route("issue_comment", payload, "d-1")
    assert item is not None
    gate, seen = asyncio.Event(), []

    async def handle(_item: Any) -> bool:
        seen.append(_item)
        await gate.wait()
        return False

    receiver = GitHubReceiver(handle, ledger)
    assert await ledger.receive("github", "d-1", "acme", {"event": "issue_comment", "payload": payload})
    receiver.accepted("d-1", item)
    await asyncio.sleep(0.05)  # a worker has it and is busy with it
    await asyncio.wait_for(receiver.sweep(), timeout=5)  # before: processed it a second time (and waited on it)
    gate.set()
    await receiver.idle()
    assert len(seen) == 1


async def test_a_slack_item_waiting_past_its_lease_is_processed_once(db: Database) -> None:
    ledger = Ledger(db, lease_s=0.0)
    body = urllib.parse.urlencode({"team_id": "T1", "channel_id": "C1", "user_id": "U1", "user_name": "ada",
                                   "command": "/shepherd", "text": "status", "trigger_id": "trig-1"})
    payload = read_body(body, "application/x-www-form-urlencoded")
    item = parse(payload)
    assert item is not None
    gate, seen = asyncio.Event(), []

    async def handle(_item: Any) -> None:
        seen.append(_item)
        await gate.wait()

    receiver = SlackReceiver(handle, ledger, [])
    assert await ledger.receive("slack", item.key, "acme", payload)
    receiver._start(item)  # acknowledged: waiting here
    await asyncio.sleep(0.05)
    await asyncio.wait_for(receiver.sweep(), timeout=5)
    gate.set()
    await receiver.idle()
    assert len(seen) == 1
