"""Telegram as a new user meets it (issue 15's acceptance): `shepherd serve` started with the Slack, Telegram and
GitHub variables, each pointing at its loopback fake (tests/fakes/), and the updates Telegram would send.

- An approver subscribes a Telegram group to a project; a task started from Slack at level 1 asks for its pull
  request; the group gets the prompt with Approve/Reject; a viewer's `/approve CODE` and tap are refused; the
  approver's tap is answered, the pull request opens on (fake) GitHub, and the Telegram and the Slack prompt both
  say "approved by ... from telegram" with their buttons gone.
- The webhook refuses a request without the right secret; a redelivered update acts once; a flood-wait on
  sendMessage delays an answer, it does not lose it.
- Polling (no webhook secret): `/run` in a private chat streams one status message edited in place and an outcome;
  a reply to the status message is the task's next turn.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.fakes.github_api import FakeGitHub
from tests.fakes.slack_api import FakeSlack, Posted, signed_headers
from tests.fakes.telegram_api import FakeTelegram
from tests.gitrepos import github_host
from tests.procs import Home, stop

SLACK_SECRET = "a-signing-secret"
TG_SECRET = "tg-cli-secret_7"
GH_TOKEN = "ghp_tg_cli_token"
APPROVER, VIEWER, MEMBER = 5001, 5003, 5002  # Telegram user ids
GROUP = -100424242
NAMES = {APPROVER: "tessa", VIEWER: "vic", MEMBER: "milo"}
_ids = itertools.count(1000)


# --- what Telegram sends ---------------------------------------------------------------------------------


def _user(uid: int) -> dict[str, Any]:
    return {"id": uid, "is_bot": False, "first_name": NAMES[uid].title(), "username": NAMES[uid]}


def _chat(chat_id: int) -> dict[str, Any]:
    if chat_id > 0:
        return {"id": chat_id, "type": "private", "first_name": NAMES.get(chat_id, "P")}
    return {"id": chat_id, "type": "supergroup", "title": "ops"}


def _message(text: str, *, sender: int, chat: int, reply_to: dict[str, Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"message_id": next(_ids), "date": int(time.time()), "from": _user(sender),
                           "chat": _chat(chat), "text": text}
    if text.startswith("/"):
        msg["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    if reply_to is not None:  # a reply to one of the bot's messages, as Telegram nests it
        msg["reply_to_message"] = {"message_id": reply_to["message_id"], "date": reply_to["date"],
                                   "chat": _chat(chat), "text": reply_to["text"],
                                   "from": {"id": 4242, "is_bot": True, "first_name": "Shepherd",
                                            "username": "shepherd_bot"}}
    return {"update_id": next(_ids), "message": msg}


def _tap(data: str, *, sender: int, shown: dict[str, Any]) -> dict[str, Any]:
    return {"update_id": next(_ids), "callback_query": {
        "id": f"cq-{next(_ids)}", "from": _user(sender), "chat_instance": "ci-ops", "data": data,
        "message": {"message_id": shown["message_id"], "date": shown["date"], "chat": _chat(shown["chat"]["id"]),
                    "text": shown["text"]}}}


def _webhook(home: Home, update: dict[str, Any], secret: str | None = TG_SECRET) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    req = urllib.request.Request(f"http://127.0.0.1:{home.port}/telegram/webhook", method="POST",
                                 data=json.dumps(update).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return int(err.code), json.loads(err.read() or b"null")


def _slack_command(home: Home, text: str, trigger: str) -> int:
    body = urllib.parse.urlencode({
        "team_id": "T1", "channel_id": "C1", "user_id": "UADA", "user_name": "ada", "command": "/shepherd",
        "text": text, "trigger_id": trigger, "response_url": "https://hooks.slack.com/commands/T1/1/x"})
    req = urllib.request.Request(f"http://127.0.0.1:{home.port}/slack/events", data=body.encode(), method="POST",
                                 headers=signed_headers(SLACK_SECRET, body))
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(resp.status)


def _buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    markup = message.get("reply_markup") or {}
    return [b for row in markup.get("inline_keyboard", []) for b in row]


def _slack_buttons(posted: Posted) -> bool:
    return any(b["type"] == "actions" for b in posted.blocks or [])


def _said(fake: FakeTelegram, chat: int, words: str) -> list[dict[str, Any]]:
    return [m for m in fake.messages(chat) if words in m["text"]]


def _answer(fake: FakeTelegram, query: dict[str, Any]) -> dict[str, Any] | None:
    wanted = query["callback_query"]["id"]
    return next((a for a in fake.answers if a.get("callback_query_id") == wanted), None)


# --- 1 and 3: webhook mode -------------------------------------------------------------------------------


async def test_a_slack_task_asks_a_subscribed_telegram_group_whose_tap_opens_the_pull_request(
    tmp_path: Path,
) -> None:
    hosts = github_host(tmp_path)
    (tmp_path / "home").mkdir()
    async with FakeSlack(bot_token="xoxb-tg") as slack, FakeTelegram() as tg, \
            FakeGitHub(GH_TOKEN, git_root=hosts) as github:
        home = Home(tmp_path / "home", SLACK_BOT_TOKEN="xoxb-tg", SLACK_SIGNING_SECRET=SLACK_SECRET,
                    SLACK_API_URL=slack.api_url, TELEGRAM_BOT_TOKEN=tg.token, TELEGRAM_API_URL=tg.api_url,
                    TELEGRAM_WEBHOOK_SECRET=TG_SECRET, SHEPHERD_PUBLIC_URL="https://shepherd.example.com",
                    SHEPHERD_GITHUB_TOKEN=GH_TOKEN, SHEPHERD_GITHUB_API_URL=github.base_url,
                    SHEPHERD_GIT_BASE_URL=str(hosts), SHEPHERD_ORG="acme", SHEPHERD_DEFAULT_AGENT="demo",
                    SHEPHERD_ADMINS=f"slack:UADA,telegram:{APPROVER}", SHEPHERD_TASK_IDLE_TIMEOUT="5")
        server = await asyncio.to_thread(home.start, "serve")
        try:
            await tg.wait_for(lambda: bool(tg.webhook) and bool(tg.commands), timeout=20)
            assert tg.webhook["url"] == "https://shepherd.example.com/telegram/webhook"
            assert tg.webhook["secret_token"] == TG_SECRET

            # the door: no secret, a wrong one: refused, and nothing of it is acted on
            sneaky = _message("/project create evil --repo acme/api", sender=APPROVER, chat=APPROVER)
            assert (await asyncio.to_thread(_webhook, home, sneaky, None))[0] == 401
            assert (await asyncio.to_thread(_webhook, home, sneaky, "guess"))[0] == 403

            # the approver subscribes the group to the project (made in Slack); said twice (a redelivery): once
            assert await asyncio.to_thread(_slack_command, home, "project create api --repo acme/api", "t-1") == 200
            subscribe = _message("/subscribe api", sender=APPROVER, chat=GROUP)
            for _ in range(2):
                assert (await asyncio.to_thread(_webhook, home, subscribe))[0] == 200
            await tg.wait_for(lambda: bool(_said(tg, GROUP, "approval channel of api")), timeout=20)

            # a flood-wait on the next sendMessage: the next answer comes late, not never
            tg.flood_next("sendMessage", retry_after=1)
            listed = _message("/subscriptions", sender=APPROVER, chat=GROUP)
            assert (await asyncio.to_thread(_webhook, home, listed))[0] == 200

            # a task started from Slack at level 1 asks for its pull request, in Slack and in the Telegram group
            status = await asyncio.to_thread(_slack_command, home,
                                             'run "add a greeting to the README" --repo acme/api --level 1', "t-2")
            assert status == 200
            await tg.wait_for(lambda: any(_buttons(m) for m in tg.messages(GROUP)), timeout=60)
            prompt = next(m for m in tg.messages(GROUP) if _buttons(m))
            assert "pr.open" in prompt["text"] or "pull request" in prompt["text"], prompt["text"]
            labels = {b["text"]: b["callback_data"] for b in _buttons(prompt)}
            assert set(labels) == {"Approve", "Reject"}, labels
            code = next(w for w in prompt["text"].split() if len(w) == 4 and w.isalnum() and w.isupper())

            # the flood-waited answer came too, once, and after the wait
            await tg.wait_for(lambda: len(tg.called("sendMessage")) >= 2)
            flooded = tg.called("sendMessage")[1].params["text"]  # the 429's
            await tg.wait_for(lambda: sum(s.params["text"] == flooded for s in tg.called("sendMessage")) >= 2)
            assert len(_said(tg, GROUP, "approval channel of api")) == 1, "the redelivered /subscribe acted twice"
            sends = tg.called("sendMessage")
            # the 429, then the same message once, after retry_after (the task's prompt, another thread of the same
            # group, may go out first: it waited for the same flood control)
            again = [s for s in sends[2:] if s.params["text"] == sends[1].params["text"]]
            assert len(again) == 1 and again[0].at - sends[1].at >= 0.9, [s.params["text"] for s in sends]

            root = next(m for m in slack.messages.values() if "add a greeting" in m.text and not m.thread_ts)
            await slack.wait_for(lambda: any(_slack_buttons(m) for m in slack.thread("C1", root.ts)), timeout=30)
            slack_prompt = next(m for m in slack.thread("C1", root.ts) if _slack_buttons(m))

            # a viewer may neither type the approval nor tap it
            await asyncio.to_thread(_webhook, home, _message(f"/approve {code}", sender=VIEWER, chat=GROUP))
            await tg.wait_for(lambda: bool(_said(tg, GROUP, "needs the approve scope")), timeout=20)
            viewer_tap = _tap(labels["Approve"], sender=VIEWER, shown=prompt)
            await asyncio.to_thread(_webhook, home, viewer_tap)
            await tg.wait_for(lambda: _answer(tg, viewer_tap) is not None, timeout=20)
            refused = _answer(tg, viewer_tap)
            assert refused is not None and refused.get("show_alert") in (True, "true"), refused
            assert not github.pulls and _buttons(tg.messages(GROUP)[prompt["message_id"] - 1])

            # the approver taps Approve: answered, the pull request opens, both prompts say so without buttons
            tap = _tap(labels["Approve"], sender=APPROVER, shown=prompt)
            assert (await asyncio.to_thread(_webhook, home, tap))[0] == 200
            await tg.wait_for(lambda: _answer(tg, tap) is not None, timeout=20)
            answered = _answer(tg, tap)
            assert answered is not None and "approved" in str(answered.get("text")), answered
            await tg.wait_for(lambda: not _buttons(tg.messages(GROUP)[prompt["message_id"] - 1]), timeout=20)
            edited = tg.messages(GROUP)[prompt["message_id"] - 1]
            assert "approved by tessa from telegram" in edited["text"], edited["text"]
            await slack.wait_for(lambda: not _slack_buttons(slack.messages[("C1", slack_prompt.ts)]), timeout=20)
            assert "approved by tessa from telegram" in slack.messages[("C1", slack_prompt.ts)].text

            await tg.wait_for(lambda: ("acme/api", 1) in github.pulls, timeout=60)
            assert len(github.pulls) == 1, github.pulls

            # the same tap again (Telegram redelivering the update): nothing new
            answers = len(tg.answers)
            await asyncio.to_thread(_webhook, home, tap)
            await asyncio.sleep(0.5)
            assert len(tg.answers) == answers and len(github.pulls) == 1
        finally:
            log = await asyncio.to_thread(stop, server)
            print(log, json.dumps(tg.chats, indent=1), [(m.text, m.thread_ts) for m in slack.messages.values()],
                  sep="\n")  # shown when the test fails
        assert "Traceback" not in log, log
        assert tg.token not in log and GH_TOKEN not in log


# --- 2: polling mode ---------------------------------------------------------------------------------------


async def test_run_from_a_telegram_chat_streams_one_status_message_and_a_reply_is_the_next_turn(
    tmp_path: Path,
) -> None:
    async with FakeTelegram() as tg:
        home = Home(tmp_path, TELEGRAM_BOT_TOKEN=tg.token, TELEGRAM_API_URL=tg.api_url,
                    SHEPHERD_ADMINS=f"telegram:{MEMBER}", SHEPHERD_TASK_IDLE_TIMEOUT="5")
        server = await asyncio.to_thread(home.start, "serve")
        try:
            tg.push(_message('/run "say hello" --agent demo --name hello', sender=MEMBER, chat=MEMBER))
            await tg.wait_for(lambda: bool(_said(tg, MEMBER, "succeeded")), timeout=60)

            def status_messages() -> list[dict[str, Any]]:
                return [m for m in tg.messages(MEMBER) if m["html"].startswith("<b>") and "hello:" in m["text"]]

            # one status message (a quick turn's states may all be coalesced into its first post: it is paced)
            await tg.wait_for(lambda: bool(status_messages()), timeout=20)
            status = status_messages()
            assert len(status) == 1, json.dumps(tg.messages(MEMBER), indent=1)
            outcomes = _said(tg, MEMBER, "succeeded")
            first_outcomes = len(outcomes)

            # a person reads it before replying: Shepherd learns a posted message's id from Telegram's answer and
            # records it in the write after the post, so a reply pushed the instant the fake saw the post (faster
            # than any phone shows it) can find it not yet known on a busy machine, and reads as a command
            await asyncio.sleep(1.0)
            tg.push(_message("now say goodbye", sender=MEMBER, chat=MEMBER, reply_to=status[0]))
            await tg.wait_for(lambda: len(_said(tg, MEMBER, "succeeded")) > first_outcomes, timeout=60)
            tasks = await asyncio.to_thread(home.run, "console", "-c", "tasks")
            listed = [line for line in tasks.stdout.splitlines() if line.startswith("task-")]
            assert len(listed) == 1 and " hello " in listed[0], tasks.stdout  # one task: the reply was its turn
            assert len(status_messages()) == 1, json.dumps(tg.messages(MEMBER), indent=1)
            # the same status message, edited in place for the next turn
            await tg.wait_for(lambda: "turn: 2" in status_messages()[0]["text"], timeout=20)
            assert status_messages()[0]["message_id"] == status[0]["message_id"] and status_messages()[0]["edits"] > 0
        finally:
            log = await asyncio.to_thread(stop, server)
            print(log, json.dumps(tg.chats, indent=1), sep="\n")  # shown when the test fails
        assert "Traceback" not in log, log
        assert tg.token not in log
