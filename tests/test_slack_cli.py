"""Slack as a new user meets it: `shepherd serve` started with nothing but the Slack variables, signed
requests to its /slack/events, and what appears in Slack (a loopback fake of the Web API); a prompt decided
from a separate `shepherd console` process updates the Slack message too."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from pathlib import Path

from tests.fakes.slack_api import FakeSlack, Posted, signed_headers
from tests.procs import Home, stop

SECRET = "a-signing-secret"


def _post(home: Home, body: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{home.port}/slack/events", data=body.encode(), method="POST",
                                 headers=signed_headers(SECRET, body))
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(resp.status)


def _command(home: Home, text: str, trigger: str) -> int:
    return _post(home, urllib.parse.urlencode({
        "team_id": "T1", "channel_id": "C1", "user_id": "UADA", "user_name": "ada", "command": "/shepherd",
        "text": text, "trigger_id": trigger, "response_url": "https://hooks.slack.com/commands/T1/1/x"}))


def _buttons(posted: Posted) -> bool:
    return any(b["type"] == "actions" for b in posted.blocks or [])


async def test_serve_with_slack_settings_runs_a_task_in_a_thread_and_a_console_decision_edits_the_prompt(
    tmp_path: Path,
) -> None:
    async with FakeSlack(bot_token="xoxb-cli") as fake:
        home = Home(tmp_path, SLACK_BOT_TOKEN="xoxb-cli", SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=fake.api_url,
                    SHEPHERD_ADMINS="slack:UADA", SHEPHERD_TASK_IDLE_TIMEOUT="3")
        server = await asyncio.to_thread(home.start, "serve")
        try:
            started = time.monotonic()
            status = await asyncio.to_thread(_command, home, 'run "ship it [confirm deploy.staging]" --agent demo',
                                             "trig-1")
            assert status == 200 and time.monotonic() - started < 3  # Slack's deadline for the ack
            await fake.wait_for(lambda: any("ship it" in m.text for m in fake.messages.values()), timeout=20)
            root = next(m for m in fake.messages.values() if "ship it" in m.text and not m.thread_ts)

            def prompt() -> Posted | None:
                return next((m for m in fake.thread("C1", root.ts) if _buttons(m)), None)

            await fake.wait_for(lambda: prompt() is not None, timeout=30)
            shown = prompt()
            assert shown is not None and "deploy.staging" in shown.text
            code = shown.text.split()[1]
            # the console has the Slack variables too (another token, to tell its calls apart), but only the
            # server delivers to Slack: the console writes the outbox, the server's dispatcher edits the prompt
            home.env["SLACK_BOT_TOKEN"] = "xoxb-console"
            approved = await asyncio.to_thread(home.run, "console", "-c", f"approve {code}")
            assert "approved" in approved.stdout, approved.stdout + approved.stderr
            await fake.wait_for(lambda: not _buttons(fake.messages[("C1", shown.ts)]), timeout=20)
            assert "from console" in fake.messages[("C1", shown.ts)].text
            assert not [c for c in fake.calls if c.token == "xoxb-console"], "the console called Slack itself"
            await fake.wait_for(lambda: any("exit code" in json.dumps(m.blocks or [])
                                            for m in fake.thread("C1", root.ts)), timeout=30)
            outcome = next(m for m in fake.thread("C1", root.ts) if "exit code" in json.dumps(m.blocks or []))
            assert "succeeded" in outcome.text and "ask deploy.staging: approved" in json.dumps(outcome.blocks)
        finally:
            log = await asyncio.to_thread(stop, server)
        assert "Traceback" not in log, log
