"""Approval channels and linked identities in Slack, end to end (the real web app, slack-bolt, the outbox through
slack_sdk to the loopback fake Slack, the demo agent): a channel subscribed with `/shepherd subscribe` gets the
prompt of a task started from the console, the console's decision edits it there, `unsubscribe` stops it; `link`
from the console and `/shepherd link <code>` in Slack make one person who votes once."""

from __future__ import annotations

from sqlmodel import col, select

from adapters.console.repl import console_principal
from core.channels.conversations import Conversations, Where
from core.commands.registry import build_registry
from core.store.models import Confirmation, Outbox
from tests import test_slack
from tests.test_slack import ADMIN, MEMBER, SlackWorld, _actions, _all_text

slack = test_slack.slack  # the fixture: the web app, the fake Slack, a task runner


async def _pending(world: SlackWorld, task_name: str) -> Confirmation:
    async def found() -> Confirmation | None:
        async with world.shepherd.db.read() as session:
            return (await session.exec(select(Confirmation).where(
                Confirmation.status == "pending", col(Confirmation.summary).contains(task_name)))).first()

    await world.until_task(lambda t: t.name == task_name and t.status == "awaiting")
    conf = await found()
    assert conf is not None
    return conf


async def test_a_subscribed_slack_channel_gets_a_console_tasks_prompt_and_its_decision(slack: SlackWorld) -> None:
    console, _ = await console_principal(slack.shepherd, "acme", "ops")
    talk = Conversations(slack.shepherd, build_registry())
    here = Where("console", "ops")
    assert (await talk.command(console, "project create api --repo acme/api", where=here)).ok
    status, _ = await slack.command("subscribe api", user=ADMIN, channel="C2")
    assert status == 200
    await slack.ephemeral(ADMIN, "approval channel of api")

    started = await talk.command(console, 'run "add a greeting" --agent demo --project api --level 1 --name greet',
                                 where=here)
    assert started.ok, started.text
    conf = await _pending(slack, "greet")
    await slack.fake.wait_for(lambda: any(_actions(m) and conf.code in _all_text(m) for m in slack.roots("C2")))
    prompt = next(m for m in slack.roots("C2") if _actions(m) and conf.code in _all_text(m))
    assert "pr.open" in _all_text(prompt)

    decided = await talk.command(console, f"approve {conf.code}", where=here)
    assert decided.ok, decided.text
    await slack.fake.wait_for(lambda: not _actions(slack.fake.messages[("C2", prompt.ts)]))
    assert "approved by ops from console" in slack.fake.messages[("C2", prompt.ts)].text
    await slack.fake.wait_for(lambda: bool(slack.github.pulls), timeout=30)

    status, _ = await slack.command("unsubscribe api", user=ADMIN, channel="C2")
    await slack.ephemeral(ADMIN, "no longer come here")
    again = await talk.command(console, 'run "add a farewell" --agent demo --project api --level 1 --name bye',
                               where=here)
    assert again.ok, again.text
    later = await _pending(slack, "bye")
    async with slack.shepherd.db.read() as session:
        rows = list(await session.exec(select(Outbox).where(Outbox.key == f"confirmation:{later.id}")))
    assert [r.channel for r in rows] == ["console"]  # the task's own thread only: C2 hears no more
    assert not any(later.code in _all_text(m) for m in slack.roots("C2"))


async def test_link_from_the_console_then_in_slack_makes_one_voter(slack: SlackWorld) -> None:
    console, _ = await console_principal(slack.shepherd, "acme", "ops")
    talk = Conversations(slack.shepherd, build_registry())
    reply = await talk.command(console, "link", where=Where("console", "ops"))
    code = reply.text.split("your link code: ")[1].split(" ")[0]
    await slack.command(f"link {code}", user=MEMBER, name="mo")
    linked = await slack.ephemeral(MEMBER, "linked")
    assert "you are ops in slack and console now" in linked.text

    await slack.command('run "add a greeting" --agent demo --repo acme/api --level 1 --name hello', user=ADMIN)
    root = await slack.root_for("add a greeting")
    prompt = await slack.in_thread(root, lambda m: bool(_actions(m)), "approval prompt")
    status, _ = await slack.click(prompt, "approve", user=MEMBER)  # mo is the console's ops now: an admin
    assert status == 200
    await slack.fake.wait_for(lambda: not _actions(slack.fake.messages[(prompt.channel, prompt.ts)]))
    assert "approved by ops from slack" in slack.fake.messages[(prompt.channel, prompt.ts)].text
