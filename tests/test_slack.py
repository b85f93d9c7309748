"""Slack end to end: signed requests to the real web app's /slack/events (slack-bolt inside), the real task
supervisor running the demo agent, the outbox dispatcher posting through the real slack_sdk client to a
loopback fake of the Slack Web API (tests/fakes/slack_api.py), and GitHub actions against the fake GitHub."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlmodel import select

from adapters.github.auth import GitHubAuth
from adapters.github.forge import GitHubForge
from adapters.slack.channel import SlackChannel, make_client, retry_after
from adapters.slack.inbound import SlackConfig
from bot.app import SLACK, create_app
from bot.callbacks import write_launcher
from bot.outbox import Dispatcher
from bot.presets import agent_catalog
from bot.sweeper import Sweeper
from core.autonomy.actions import ActionsConfig, Executor
from core.autonomy.policy import PolicyStore
from core.commands.registry import build_registry
from core.people.access import Principal, Role
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Delivery, Outbox, Task, Thread
from tests.fakes.github_api import FakeGitHub
from tests.fakes.slack_api import FakeSlack, Posted, signed_headers
from tests.gitrepos import github_host
from tests.test_tasks import fast_config, supervisor

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-test"
GH_TOKEN = "ghs_test_token_for_the_fake"
ADMIN, MEMBER, BYSTANDER = "UADMIN", "UMEMBER", "UVIEW"
CONSOLE = Principal.for_role("acme", "ops", Role.ADMIN, "console")


@dataclass
class SlackWorld:
    shepherd: Shepherd
    fake: FakeSlack
    github: FakeGitHub
    http: aiohttp.ClientSession
    url: str
    app: web.Application

    async def send(self, body: str, *, content_type: str = "application/x-www-form-urlencoded",
                   headers: dict[str, str] | None = None, secret: str = SECRET,
                   timestamp: int | None = None) -> tuple[int, str]:
        sent = {**signed_headers(secret, body, timestamp=timestamp, content_type=content_type), **(headers or {})}
        async with self.http.post(f"{self.url}/slack/events", data=body.encode(), headers=sent) as resp:
            return resp.status, await resp.text()

    async def command(self, text: str, *, user: str = ADMIN, name: str = "ada", channel: str = "C1",
                      trigger: str | None = None) -> tuple[int, str]:
        form = {"token": "legacy", "team_id": "T1", "team_domain": "acme", "channel_id": channel,
                "channel_name": "dev", "user_id": user, "user_name": name, "command": "/shepherd", "text": text,
                "api_app_id": "A1", "response_url": "https://hooks.slack.com/commands/T1/1/x",
                "trigger_id": trigger or f"trig-{time.monotonic_ns()}"}
        return await self.send(urllib.parse.urlencode(form))

    async def event(self, event: dict[str, Any], *, event_id: str, retry: int | None = None) -> tuple[int, str]:
        body = {"token": "legacy", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
                "event_id": event_id, "event_time": int(time.time()),
                "authorizations": [{"team_id": "T1", "user_id": "U0BOT", "is_bot": True}],
                "event": {"event_ts": event.get("ts", "1.0"), **event}}
        headers = {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"} if retry else None
        return await self.send(json.dumps(body), content_type="application/json", headers=headers)

    async def click(self, posted: Posted, action: str, *, user: str = ADMIN, trigger: str | None = None
                    ) -> tuple[int, str]:
        button = next(e for b in posted.blocks or [] if b["type"] == "actions" for e in b["elements"]
                      if e["action_id"] == f"shepherd_{action}")
        payload = {
            "type": "block_actions", "user": {"id": user, "username": "ada", "team_id": "T1"},
            "api_app_id": "A1", "token": "legacy", "trigger_id": trigger or f"click-{time.monotonic_ns()}",
            "container": {"type": "message", "message_ts": posted.ts, "channel_id": posted.channel,
                          "is_ephemeral": False},
            "team": {"id": "T1", "domain": "acme"}, "channel": {"id": posted.channel, "name": "dev"},
            "message": {"type": "message", "ts": posted.ts, "thread_ts": posted.thread_ts, "text": posted.text,
                        "blocks": posted.blocks},
            "response_url": "https://hooks.slack.com/actions/T1/1/x",
            "actions": [{"action_id": button["action_id"], "block_id": "b", "type": "button",
                         "value": button["value"], "action_ts": str(time.time())}],
        }
        return await self.send(urllib.parse.urlencode({"payload": json.dumps(payload)}))

    # --- what Slack now shows --------------------------------------------------------------------

    def roots(self, channel: str = "C1") -> list[Posted]:
        return [m for m in self.fake.messages.values() if m.channel == channel and not m.thread_ts
                and not m.ephemeral]

    async def root_for(self, words: str, channel: str = "C1") -> Posted:
        await self.fake.wait_for(lambda: any(words in m.text for m in self.roots(channel)))
        return next(m for m in self.roots(channel) if words in m.text)

    async def in_thread(self, root: Posted, test: Any, what: str, timeout: float = 30) -> Posted:
        def found() -> Posted | None:
            return next((m for m in self.fake.thread(root.channel, root.ts) if test(m)), None)

        try:
            await self.fake.wait_for(lambda: found() is not None, timeout=timeout)
        except AssertionError:
            shown = [m.text for m in self.fake.thread(root.channel, root.ts)]
            raise AssertionError(f"no {what} in the thread; it shows {shown}") from None
        posted = found()
        assert posted is not None
        return posted

    async def ephemeral(self, user: str, words: str) -> Posted:
        await self.fake.wait_for(lambda: any(words in m.text for m in self.fake.ephemeral_for(user)))
        return next(m for m in self.fake.ephemeral_for(user) if words in m.text)

    async def tasks(self) -> list[Task]:
        async with self.shepherd.db.read() as session:
            return list(await session.exec(select(Task).where(Task.org_id == "acme")))

    async def until_task(self, test: Any, timeout: float = 30) -> Task:
        deadline = time.monotonic() + timeout
        while True:
            for task in await self.tasks():
                if test(task):
                    return task
            if time.monotonic() > deadline:
                raise AssertionError(f"no such task: {[(t.name, t.status) for t in await self.tasks()]}")
            await asyncio.sleep(0.05)


def _actions(posted: Posted) -> list[dict[str, Any]]:
    return [b for b in posted.blocks or [] if b["type"] == "actions"]


def _all_text(posted: Posted) -> str:
    return json.dumps(posted.blocks or []) + posted.text


@pytest.fixture
async def slack(tmp_path: Path, sqlite_url: str) -> AsyncIterator[SlackWorld]:
    async with FakeSlack(bot_token=BOT_TOKEN) as fake:
        fake.users.update({ADMIN: "ada", MEMBER: "mo", BYSTANDER: "vi"})
        hosts = github_host(tmp_path)
        db = Database(sqlite_url)
        shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo",
                            workspace_root=tmp_path / "data" / "workspaces", policies=PolicyStore(tmp_path / "pol"))
        await shepherd.orgs.ensure("acme")
        github = FakeGitHub(token=GH_TOKEN, git_root=hosts)
        github_url = await github.start()
        config = SlackConfig(bot_token=BOT_TOKEN, org_id="acme", signing_secret=SECRET, api_url=fake.api_url,
                             default_role=Role.OPERATOR, admins=frozenset({ADMIN}))
        app = create_app(sqlite_url, shepherd=shepherd, slack=config)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        http = aiohttp.ClientSession()
        run_config = replace(fast_config(tmp_path / "data"), git_base_url=str(hosts), idle_timeout_s=5,
                             callback_url=url, tool_dir=write_launcher(tmp_path / "bin"))
        forge = GitHubForge(GitHubAuth(http, token=GH_TOKEN, base_url=github_url))
        executor = Executor(ActionsConfig(git_base_url=str(hosts)), forge)
        sup = supervisor(shepherd, run_config, executor)
        dispatcher = Dispatcher(shepherd, [SlackChannel(make_client(BOT_TOKEN, fake.api_url, http))], poll_s=0.05)
        sweeper = Sweeper(shepherd, news_channels=["slack"], news_every_s=0.2)
        await sup.start()
        await dispatcher.start()
        await sweeper.start()
        try:
            yield SlackWorld(shepherd, fake, github, http, url, app)
        finally:
            await sweeper.stop()
            await dispatcher.stop()
            await sup.stop()
            await runner.cleanup()
            await http.close()
            await github.stop()
            await db.dispose()


# --- the acceptance path ---------------------------------------------------------------------------


async def test_run_acks_then_one_status_message_is_edited_as_the_agent_works_then_the_outcome(
    slack: SlackWorld,
) -> None:
    status, body = await slack.command('run "count to three [long 2]" --agent demo')
    assert status == 200 and body == ""  # acknowledged at once; the work comes after
    root = await slack.root_for("count to three")
    assert "<@UADMIN>" in root.text
    reply = await slack.in_thread(root, lambda m: m.text.startswith("started task"), "reply")
    assert "demo" in reply.text
    status_msg = await slack.in_thread(root, lambda m: m.ts > reply.ts and "exit code" not in _all_text(m),
                                       "status message")
    outcome = await slack.in_thread(root, lambda m: "exit code" in _all_text(m), "outcome")
    await slack.fake.wait_for(lambda: "succeeded" in slack.fake.messages[("C1", status_msg.ts)].text)
    status_msg = slack.fake.messages[("C1", status_msg.ts)]
    assert "succeeded" in outcome.text
    assert "tick" in _all_text(outcome)  # its evidence: the last lines the agent printed
    statuses = [m for m in slack.fake.thread(root.channel, root.ts) if m.ts == status_msg.ts]
    assert len(statuses) == 1, "one status message per task"
    versions = [v["text"] for v in status_msg.history] + [status_msg.text]
    assert any("running" in v or "tick" in v for v in versions), versions  # it was edited while working
    assert len(versions) >= 3
    # debounced: never two edits of one channel within a second
    edits = [c.at for c in slack.fake.calls_to("chat.update") if c.args.get("channel") == "C1"]
    assert all(b - a >= 0.95 for a, b in zip(edits, edits[1:], strict=False)), edits
    [task] = await slack.tasks()
    assert task.outcome == "succeeded"
    async with slack.shepherd.db.read() as session:
        [thread] = list(await session.exec(select(Thread).where(Thread.task_id == task.id)))
    assert (thread.channel, thread.address) == ("slack", f"C1/{root.ts}")


async def test_approve_button_runs_the_action_and_replaces_the_buttons_everywhere(slack: SlackWorld) -> None:
    await slack.command('run "add a greeting" --agent demo --repo acme/api --level 1')
    root = await slack.root_for("add a greeting")
    prompt = await slack.in_thread(root, lambda m: bool(_actions(m)), "approval prompt")
    assert "pr.open" in _all_text(prompt)
    elements = _actions(prompt)[0]["elements"]
    assert [e["action_id"] for e in elements] == ["shepherd_approve", "shepherd_reject"]
    assert elements[0]["value"].startswith("conf-")  # an opaque id, not the code people type
    status, _ = await slack.click(prompt, "approve", user=ADMIN)
    assert status == 200
    await slack.fake.wait_for(lambda: bool(slack.github.pulls), timeout=30)
    await slack.fake.wait_for(lambda: not _actions(slack.fake.messages[(prompt.channel, prompt.ts)]))
    decided = slack.fake.messages[(prompt.channel, prompt.ts)]
    assert "approved by ada from slack at" in decided.text
    await slack.fake.wait_for(lambda: "pull request" in slack.fake.messages[(prompt.channel, prompt.ts)].text)


async def test_a_prompt_decided_from_the_console_updates_the_slack_message(slack: SlackWorld) -> None:
    await slack.command('run "add a greeting" --agent demo --repo acme/api --level 1')
    root = await slack.root_for("add a greeting")
    prompt = await slack.in_thread(root, lambda m: bool(_actions(m)), "approval prompt")
    [pending] = await slack.shepherd.confirmations.pending(CONSOLE)
    reply = await build_registry().run(slack.shepherd, CONSOLE, f"reject {pending.code} not today")
    assert reply.ok, reply.text
    await slack.fake.wait_for(lambda: not _actions(slack.fake.messages[(prompt.channel, prompt.ts)]))
    decided = slack.fake.messages[(prompt.channel, prompt.ts)]
    assert "rejected by ops from console at" in decided.text and "not today" in decided.text
    assert not slack.github.pulls


async def test_a_click_by_someone_who_may_not_approve_is_refused_to_them_alone(slack: SlackWorld) -> None:
    await slack.command('run "add a greeting" --agent demo --repo acme/api --level 1')
    root = await slack.root_for("add a greeting")
    prompt = await slack.in_thread(root, lambda m: bool(_actions(m)), "approval prompt")
    await slack.click(prompt, "approve", user=MEMBER)  # an operator: may run tasks, not approve
    refusal = await slack.ephemeral(MEMBER, "error")
    assert "approver" in refusal.text
    assert _actions(slack.fake.messages[(prompt.channel, prompt.ts)]), "the prompt still waits"
    assert not slack.github.pulls


# --- retries, signatures, malformed input ------------------------------------------------------------


async def test_a_retried_event_never_creates_a_second_task(slack: SlackWorld) -> None:
    event = {"type": "app_mention", "user": ADMIN, "text": '<@U0BOT> run "retry me" --agent demo',
             "ts": "1700000100.000100", "channel": "C1"}
    first = slack.event(event, event_id="Ev1")
    retry = slack.event(event, event_id="Ev1", retry=1)  # while the first is still in hand
    assert [s for s, _ in await asyncio.gather(first, retry)] == [200, 200]
    await slack.until_task(lambda t: t.outcome == "succeeded")
    assert (await slack.event(event, event_id="Ev1", retry=2))[0] == 200  # after it was done
    await asyncio.sleep(0.3)
    assert len(await slack.tasks()) == 1
    row = await slack.shepherd.ledger.get("slack", "event:Ev1")
    assert row is not None and (row.status, row.redeliveries) == ("done", 2)
    replies = [m for m in slack.fake.thread("C1", "1700000100.000100") if m.text.startswith("started task")]
    assert len(replies) == 1


async def test_a_retried_slash_command_or_click_acts_once(slack: SlackWorld) -> None:
    await asyncio.gather(*(slack.command('run "once only" --agent demo', trigger="T-same") for _ in range(3)))
    await slack.until_task(lambda t: t.outcome == "succeeded")
    assert len(await slack.tasks()) == 1


@pytest.mark.parametrize("case", ["bad signature", "stale", "missing headers", "other secret"])
async def test_bad_or_stale_signatures_are_refused_with_401(slack: SlackWorld, case: str) -> None:
    body = urllib.parse.urlencode({"command": "/shepherd", "text": 'run "x"', "user_id": ADMIN, "channel_id": "C1",
                                   "trigger_id": "t"})
    if case == "bad signature":
        status, _ = await slack.send(body, headers={"X-Slack-Signature": "v0=" + "0" * 64})
    elif case == "stale":
        status, _ = await slack.send(body, timestamp=int(time.time()) - 301)
    elif case == "missing headers":
        async with slack.http.post(f"{slack.url}/slack/events", data=body,
                                   headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
            status = resp.status
    else:
        status, _ = await slack.send(body, secret="not-the-secret")
    assert status == 401
    await asyncio.sleep(0.2)
    assert await slack.tasks() == []
    async with slack.shepherd.db.read() as session:
        assert list(await session.exec(select(Delivery))) == []


@pytest.mark.parametrize("body,content_type", [
    ("{not json", "application/json"),
    (json.dumps({"type": "event_callback", "event": {"type": "app_mention"}}), "application/json"),  # no event_id
    (json.dumps({"type": "event_callback", "event_id": "Ev9", "event": "text"}), "application/json"),
    (urllib.parse.urlencode({"command": "/shepherd", "text": "status"}), "application/x-www-form-urlencoded"),
    (urllib.parse.urlencode({"payload": "{broken"}), "application/x-www-form-urlencoded"),
    (urllib.parse.urlencode({"payload": json.dumps({"type": "block_actions", "actions": []})}),
     "application/x-www-form-urlencoded"),
    (json.dumps({"type": "mystery"}), "application/json"),
    ("", "application/json"),
])
async def test_malformed_payloads_get_a_4xx_never_a_5xx(slack: SlackWorld, body: str, content_type: str) -> None:
    status, text = await slack.send(body, content_type=content_type)
    assert 400 <= status < 500, (status, text)


async def test_slack_answers_url_verification(slack: SlackWorld) -> None:
    status, text = await slack.send(json.dumps({"type": "url_verification", "challenge": "c-123", "token": "x"}),
                                    content_type="application/json")
    assert status == 200 and json.loads(text) == {"challenge": "c-123"}


# --- rate limits -------------------------------------------------------------------------------------


async def test_a_429_with_retry_after_delays_delivery_and_loses_nothing(slack: SlackWorld) -> None:
    # more 429s than the SDK's own retries: the dispatcher keeps the row and tries after Retry-After
    slack.fake.rate_limit_next("chat.postEphemeral", retry_after=1, times=4)
    await slack.command("status")
    answer = await slack.ephemeral(ADMIN, "agents")
    assert len([m for m in slack.fake.ephemeral_for(ADMIN) if m.text == answer.text]) == 1
    tries = slack.fake.calls_to("chat.postEphemeral")
    assert len(tries) == 5
    assert tries[-1].at - tries[0].at >= 3.0  # each 429 was waited out (Retry-After: 1), none dropped
    for _ in range(100):  # the row is marked sent just after the post
        async with slack.shepherd.db.read() as session:
            [row] = list(await session.exec(select(Outbox).where(Outbox.channel == "slack")))
        if row.status != "pending":
            break
        await asyncio.sleep(0.05)
    assert row.status == "sent" and row.attempts == 1  # one failed try of the outbox (after the SDK's 3)


async def test_the_message_a_task_thread_hangs_from_waits_out_429s_through_the_outbox(slack: SlackWorld) -> None:
    # posted by the outbox like any message: each 429 is waited out for exactly its Retry-After (in the call,
    # then by the dispatcher); the item was done when its effect and answer were written, and never fails over to
    # the ledger's backoff (the review saw 13-22 s when the adapter posted it itself)
    slack.fake.rate_limit_next("chat.postMessage", retry_after=1, times=3)
    await slack.command('run "a rate limited start" --agent demo', trigger="T-429")
    root = await slack.root_for("a rate limited start")
    tries = [c for c in slack.fake.calls_to("chat.postMessage") if "a rate limited start" in str(c.args.get("text"))]
    assert len(tries) == 4, [c.args for c in tries]
    assert all(b.at - a.at >= 0.95 for a, b in zip(tries, tries[1:], strict=False))  # Retry-After: 1, honoured
    await slack.in_thread(root, lambda m: m.text.startswith("started task"), "reply")
    row = await slack.shepherd.ledger.get("slack", "command:T-429")
    assert row is not None and (row.status, row.attempts, row.error) == ("done", 1, None)


@pytest.mark.parametrize("header,wait", [
    ("1", 1.0), ("0.5", 0.5), ("30", 30.0), (None, 30.0), ("soon", 30.0), ("nan", 30.0), ("-3", 0.0),
    ("86400", 60.0), ("inf", 60.0),
])
def test_retry_after_is_read_as_slack_sends_it_and_bounded(header: str | None, wait: float) -> None:
    assert retry_after({"Retry-After": header} if header is not None else {}) == wait
    assert retry_after({"retry-after": [header]} if header is not None else {}) == wait  # slack_sdk's shape


async def test_a_fractional_retry_after_is_waited_out_too(slack: SlackWorld) -> None:
    client = make_client(BOT_TOKEN, slack.fake.api_url, slack.http)
    slack.fake.rate_limit_next("chat.postMessage", retry_after="0.5", times=2)
    await client.chat_postMessage(channel="C7", text="hello")  # slack_sdk's own handler fails on int("0.5")
    tries = slack.fake.calls_to("chat.postMessage")
    assert len(tries) == 3 and all(b.at - a.at >= 0.45 for a, b in zip(tries, tries[1:], strict=False))


# --- conversations ---------------------------------------------------------------------------------


async def test_a_plain_reply_in_a_task_thread_is_a_follow_up_turn(slack: SlackWorld) -> None:
    await slack.command('run "first turn" --agent demo')
    root = await slack.root_for("first turn")
    await slack.in_thread(root, lambda m: "turn: 1" in _all_text(m) and "succeeded" in m.text, "outcome 1")
    # as typed: a reply that reads like options, or holds quotes, is one argument, never quoted and read again
    said = 'now the second --agent claude, "quoted" &amp; it\'s fine'  # Slack escapes &, < and >
    await slack.event({"type": "message", "user": MEMBER, "text": said, "ts": "1700000200.0001",
                       "thread_ts": root.ts, "channel": "C1", "channel_type": "channel"}, event_id="EvF")
    task = await slack.until_task(lambda t: t.turns == 2 and t.outcome == "succeeded")
    _, logs = await slack.shepherd.tasks.logs(CONSOLE, task.id)
    assert [r.content for r in logs if r.type == "input"][-1] == said.replace("&amp;", "&")
    await slack.fake.wait_for(lambda: len([m for m in slack.fake.thread("C1", root.ts)
                                           if "exit code" in _all_text(m)]) == 2)  # one outcome per turn


async def test_chatter_in_a_channel_and_our_own_posts_are_ignored(slack: SlackWorld) -> None:
    await slack.event({"type": "message", "user": MEMBER, "text": "run \"nope\"", "ts": "1.1", "channel": "C1",
                       "channel_type": "channel"}, event_id="EvC")
    await slack.event({"type": "message", "bot_id": "B0BOT", "user": "U0BOT", "text": "status", "ts": "1.2",
                       "channel": "D1", "channel_type": "im"}, event_id="EvB")
    await asyncio.sleep(0.5)
    assert await slack.tasks() == []
    assert not slack.fake.calls_to("chat.postMessage")


async def test_a_mention_runs_a_command_and_answers_in_its_thread(slack: SlackWorld) -> None:
    await slack.event({"type": "app_mention", "user": MEMBER, "text": "<@U0BOT> tasks", "ts": "1700000300.0001",
                       "channel": "C1"}, event_id="EvM")
    answer = await slack.in_thread(Posted("C1", "1700000300.0001", "", None, None, None, False, []),
                                   lambda m: "no tasks" in m.text, "reply")
    assert answer.thread_ts == "1700000300.0001"


async def test_a_direct_message_is_a_command(slack: SlackWorld) -> None:
    await slack.event({"type": "message", "user": MEMBER, "text": "help run", "ts": "1700000400.0001",
                       "channel": "D1", "channel_type": "im"}, event_id="EvD")
    answer = await slack.in_thread(Posted("D1", "1700000400.0001", "", None, None, None, False, []),
                                   lambda m: "run" in m.text and "--agent" in m.text, "help")
    assert answer.channel == "D1"


async def test_new_people_get_the_configured_role_and_admins_set_roles(slack: SlackWorld) -> None:
    await slack.command("pending", user=BYSTANDER, name="vi")
    await slack.ephemeral(BYSTANDER, "nothing")
    users = dict((u.name, u.role) for u, _ in await slack.shepherd.users.list(CONSOLE))
    assert users["vi"] == "operator"  # SlackConfig.default_role
    await slack.command(f"role <@{BYSTANDER}|vi> approver", user=MEMBER, name="mo")
    await slack.ephemeral(MEMBER, "needs")  # only an admin may
    await slack.command(f"role <@{BYSTANDER}|vi> approver", user=ADMIN, name="ada")
    await slack.ephemeral(ADMIN, "vi is now approver")
    users = dict((u.name, u.role) for u, _ in await slack.shepherd.users.list(CONSOLE))
    assert users == {"vi": "approver", "mo": "operator", "ada": "admin"}


async def test_role_for_someone_shepherd_has_not_met_takes_the_id_slack_sends(slack: SlackWorld) -> None:
    # what Slack sends for `/shepherd role @dave operator` with should_escape: true (users.info knows no dave here:
    # the name comes with the mention)
    await slack.command("role <@U0ABC123|dave> operator", user=ADMIN, name="ada")
    await slack.ephemeral(ADMIN, "dave is now operator")
    await slack.command("pending", user="U0ABC123", name="dave")  # dave writes for the first time: it is him
    await slack.ephemeral("U0ABC123", "nothing")
    people = {u.name: (u.role, chans) for u, chans in await slack.shepherd.users.list(CONSOLE)}
    assert people["dave"] == ("operator", ["slack"]) and len([n for n in people if "dave" in n]) == 1


async def test_a_plain_at_name_is_the_one_known_person_it_can_mean(slack: SlackWorld) -> None:
    # from an app installed with the older manifest (should_escape: false), Slack sends what was typed
    for user, name in (("USAM1", "sam"), ("USAM2", "SAM"), (BYSTANDER, "vi")):
        await slack.command("pending", user=user, name=name)
        await slack.ephemeral(user, "nothing")
    await slack.command("role @Vi approver", user=ADMIN, name="ada")
    await slack.ephemeral(ADMIN, "vi is now approver")
    await slack.command("role @Sam approver", user=ADMIN, name="ada")  # sam or SAM: not guessed
    await slack.ephemeral(ADMIN, "not found")
    await slack.command("role @sam approver", user=ADMIN, name="ada")
    await slack.ephemeral(ADMIN, "sam is now approver")
    roles = {u.name: u.role for u, _ in await slack.shepherd.users.list(CONSOLE)}
    assert (roles["vi"], roles["sam"], roles["SAM"]) == ("approver", "approver", "operator")


async def test_long_output_is_cut_within_block_kit_limits_and_says_where_the_rest_is(slack: SlackWorld) -> None:
    await slack.command('run "spill [lines 400]" --agent demo')
    root = await slack.root_for("spill")
    outcome = await slack.in_thread(root, lambda m: "exit code" in _all_text(m), "outcome")
    text = _all_text(outcome)
    assert "shows all" in text or "shows the whole log" in text
    assert not [c for c in slack.fake.calls if c.method.startswith("chat.")
                and c.args.get("blocks") and len(json.dumps(c.args["blocks"])) > 12000]


async def test_a_slash_command_processed_again_posts_no_second_root_and_one_answer(slack: SlackWorld) -> None:
    await slack.command('run "only one root" --agent demo', trigger="T-again")
    root = await slack.root_for("only one root")
    await slack.in_thread(root, lambda m: m.text.startswith("started task"), "reply")
    await slack.app[SLACK].idle()
    # as if its process had died before its ack reached Slack: the ledger takes the item up again
    async with slack.shepherd.db.write() as session:
        row = (await session.exec(select(Delivery).where(Delivery.key == "command:T-again"))).one()
        row.status, row.next_at = "failed", row.received_at
        session.add(row)
    assert await slack.app[SLACK].sweep() == 1
    await slack.until_task(lambda t: t.outcome == "succeeded")
    await asyncio.sleep(0.5)  # the outbox has long been woken for anything the replay wrote
    assert [m.ts for m in slack.roots() if "only one root" in m.text] == [root.ts]
    assert len([m for m in slack.fake.thread("C1", root.ts) if m.text.startswith("started task")]) == 1
    assert len(await slack.tasks()) == 1


async def test_ledger_items_left_by_a_dead_process_are_processed_again(slack: SlackWorld) -> None:
    inbound = slack.app[SLACK]
    body = {"type": "event_callback", "event_id": "EvLost", "team_id": "T1",
            "event": {"type": "app_mention", "user": ADMIN, "text": '<@U0BOT> run "picked up later" --agent demo',
                      "ts": "1700000500.0001", "channel": "C1"}}
    ledger = slack.shepherd.ledger
    assert await ledger.receive("slack", "event:EvLost", "acme", body)  # acknowledged, then the process died
    async with slack.shepherd.db.write() as session:
        row = (await session.exec(select(Delivery).where(Delivery.key == "event:EvLost"))).one()
        row.next_at = row.received_at  # its lease is over
        session.add(row)
    assert await inbound.sweep() == 1  # what the sweep does every few seconds, now
    await slack.until_task(lambda t: "picked up later" in t.prompt)
    assert (await ledger.get("slack", "event:EvLost")).status == "done"  # type: ignore[union-attr]


# --- Socket Mode ------------------------------------------------------------------------------------


async def test_socket_mode_receives_commands_and_events_over_a_websocket_and_acks_them(slack: SlackWorld) -> None:
    """With SLACK_APP_TOKEN the app dials Slack (here the fake's loopback websocket) instead of being called."""
    config = SlackConfig(bot_token=BOT_TOKEN, org_id="acme", app_token=slack.fake.app_token,
                         api_url=slack.fake.api_url, default_role=Role.OPERATOR, admins=frozenset({ADMIN}))
    runner = web.AppRunner(create_app("unused", shepherd=slack.shepherd, slack=config), access_log=None)
    await runner.setup()  # starts the Socket Mode connection (no web site needed)
    try:
        await asyncio.wait_for(slack.fake.socket_connected.wait(), 10)
        command = {"command": "/shepherd", "text": 'run "over the socket" --agent demo', "user_id": ADMIN,
                   "user_name": "ada", "channel_id": "C2", "team_id": "T1", "trigger_id": "sock-1",
                   "response_url": "https://hooks.slack.com/commands/T1/1/x"}
        await slack.fake.socket_send({"envelope_id": "env-1", "type": "slash_commands",
                                      "accepts_response_payload": True, "payload": command})
        assert (await slack.fake.socket_ack("env-1"))["envelope_id"] == "env-1"
        root = await slack.root_for("over the socket", channel="C2")
        await slack.in_thread(root, lambda m: "exit code" in _all_text(m), "outcome")
        mention = {"type": "event_callback", "team_id": "T1", "event_id": "EvSock",
                   "event": {"type": "app_mention", "user": MEMBER, "text": "<@U0BOT> tasks", "ts": "1700000900.1",
                             "channel": "C2"}}
        for attempt in (0, 1):  # Slack redelivers an envelope it saw no ack for: acted on once
            await slack.fake.socket_send({"envelope_id": f"env-ev-{attempt}", "type": "events_api",
                                          "accepts_response_payload": False, "retry_attempt": attempt,
                                          "retry_reason": "timeout" if attempt else "", "payload": mention})
            await slack.fake.socket_ack(f"env-ev-{attempt}")
        await slack.fake.wait_for(lambda: any("over-the-socket" in m.text
                                              for m in slack.fake.thread("C2", "1700000900.1")))
        await asyncio.sleep(0.3)
        assert len(slack.fake.thread("C2", "1700000900.1")) == 1
        assert len(await slack.tasks()) == 1
    finally:
        await runner.cleanup()


async def test_a_channel_shepherd_was_not_invited_to_gets_its_answers_in_a_dm(slack: SlackWorld) -> None:
    slack.fake.fail_next("chat.postEphemeral", "not_in_channel")
    await slack.command("help", channel="C9")
    await slack.fake.wait_for(lambda: any("invite me there" in m.text for m in slack.roots(ADMIN)))
    slack.fake.fail_next("chat.postMessage", "not_in_channel")
    await slack.command('run "somewhere private" --agent demo', channel="C9")
    root = await slack.root_for("somewhere private", channel=ADMIN)  # the DM with whoever started it
    assert "/invite @Shepherd" in root.text
    await slack.in_thread(root, lambda m: "exit code" in _all_text(m), "outcome")
    async with slack.shepherd.db.read() as session:
        failed = list(await session.exec(select(Outbox).where(Outbox.status == "failed")))
    assert failed == []


async def test_in_a_task_thread_a_mention_may_leave_the_task_unsaid(slack: SlackWorld) -> None:
    await slack.command('run "say tick [long 1]" --agent demo')
    root = await slack.root_for("say tick")
    outcome = await slack.in_thread(root, lambda m: "exit code" in _all_text(m), "outcome")
    await slack.event({"type": "app_mention", "user": MEMBER, "text": "<@U0BOT> logs --tail 3",
                       "ts": "1700000600.0001", "thread_ts": root.ts, "channel": "C1"}, event_id="EvT")
    answer = await slack.in_thread(root, lambda m: m.ts > outcome.ts and "tick" in m.text, "the task's logs")
    assert "error" not in answer.text

