"""Digests (`digest <cron>|off`, issue 16) on SQLite and PostgreSQL: the command in a place, and the job that posts
the digests due, called with a chosen `now` (no sleeping through schedules): one new message per fire time, once
across processes, missed fire times coalesced, nothing posted when nothing changed, and what a digest tells."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from core.channels.conversations import Conversations, Where
from core.channels.outbox import Message
from core.commands.registry import build_registry
from core.people.access import Role
from core.schedule.cron import CronError, parse
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Outbox, Task, TaskLog
from tests import test_slack
from tests.conftest import person
from tests.test_confirmations import gate, pr_plan
from tests.test_slack import ADMIN, SlackWorld, _all_text

slack = test_slack.slack  # the fixture: the web app, the fake Slack, a task runner

T0 = datetime(2026, 3, 2, 9, 0, 30, tzinfo=UTC)  # a Monday
C1 = Where("slack", "C1")
OPS = person(Role.OPERATOR, name="ops")


def talk(shepherd: Shepherd) -> Conversations:
    return Conversations(shepherd, build_registry())


async def digests_at(shepherd: Shepherd, where: Where) -> list[Message]:
    """The digests the outbox has for `where`, oldest first."""
    async with shepherd.db.read() as session:
        rows = await session.exec(select(Outbox).where(
            Outbox.channel == where.channel, Outbox.address == where.address, col(Outbox.key).startswith("digest:"))
            .order_by(col(Outbox.id)))
        return [Message.from_json(r.payload) for r in rows]


async def a_task(shepherd: Shepherd, name: str, status: str, *, org: str = "acme", project: str | None = None,
                 **values: object) -> Task:
    """A task of `org` put in `status` (its runner's and people's doings are other tests' business)."""
    owner = person(Role.ADMIN, org=org)
    view = await shepherd.tasks.create(owner, prompt=f"work on {name}", runtime="demo", name=name, project=project)
    state = {"running": "working", "awaiting": "idle"}.get(status, "complete")
    async with shepherd.db.write() as session:
        await session.exec(update(Task).where(col(Task.id) == view.task.id).values(
            status=status, state=state, **values))
    return await shepherd.tasks.get(owner, view.task.id)


async def printed(shepherd: Shepherd, task: Task, line: str) -> None:
    async with shepherd.db.write() as session:
        session.add(TaskLog(task_id=task.id, type="output", content=line))


# --- the schedule ---------------------------------------------------------------------------------------------


def test_a_crontab_reads_as_crontab_does() -> None:
    sunday = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert parse("0 9 * * 1").next_after(sunday) == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # 1 is Monday
    assert parse("0 9 * * 0").next_after(sunday) == datetime(2026, 3, 8, 9, 0, tzinfo=UTC)  # 0 and 7: Sunday
    assert parse("0 9 * * 7").next_after(sunday) == datetime(2026, 3, 8, 9, 0, tzinfo=UTC)
    assert parse("30 17 * * 5-7").next_after(sunday) == datetime(2026, 3, 1, 17, 30, tzinfo=UTC)
    assert parse("0 9 * * mon-fri").next_after(datetime(2026, 3, 6, 10, 0, tzinfo=UTC)) == \
        datetime(2026, 3, 9, 9, 0, tzinfo=UTC)  # Friday after nine: Monday
    assert parse("*/10 * * * * *").next_after(T0) == T0 + timedelta(seconds=10)  # seconds first: Shepherd's own
    assert parse("0 9 * * *", "Europe/Berlin").next_after(sunday) == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def test_a_day_of_month_and_a_day_of_week_both_given_fire_on_either_as_in_crontab() -> None:
    """crontab(5): "if both fields are restricted, the command runs when either field matches". A user who asks
    for the 1st and the 15th and every Monday gets all three, not only the Mondays that fall on a 1st or a 15th
    (CronTrigger alone ANDs the two fields: `0 9 1,15 * 1` would next fire in June)."""
    sunday = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    both = parse("0 9 1,15 * 1")
    assert both.next_after(sunday) == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # the Monday
    assert both.next_after(datetime(2026, 3, 9, 10, 0, tzinfo=UTC)) == datetime(2026, 3, 15, 9, 0, tzinfo=UTC)
    assert parse("0 0 30 2 1").next_after(sunday) == datetime(2027, 2, 1, 0, 0, tzinfo=UTC)  # Mondays of February
    # a `*`-led field is not a restriction (crontab's own rule): then both must match, as before
    assert parse("0 9 */2 * 1").next_after(sunday) == datetime(2026, 3, 3 + 6, 9, 0, tzinfo=UTC)
    assert parse("0 9 * * 7-7").next_after(sunday) == datetime(2026, 3, 1, 9, 0, tzinfo=UTC) + timedelta(days=7)


@pytest.mark.parametrize(("cron", "says"), [
    ("61 * * * *", "minute field `61`"), ("* 24 * * *", "hour field `24`"), ("* * 0 * *", "day of month field `0`"),
    ("* * * 13 *", "month field `13`"), ("* * * * 8", "day of week field `8`"), ("* * * * fri-mon", "day of week"),
    ("*/0 * * * *", "minute field"), ("61 * * * * *", "second field `61`"), ("* * * *", "has 4"),
    ("hourly", "5 fields"), ("0 0 30 2 *", "never"),
])
def test_a_bad_schedule_names_what_is_wrong(cron: str, says: str) -> None:
    with pytest.raises(CronError) as caught:
        parse(cron).next_after(T0)
    assert says in caught.value.message, caught.value.message


# --- the command ----------------------------------------------------------------------------------------------


async def test_digest_sets_replaces_shows_and_stops_a_places_digest(shepherd: Shepherd) -> None:
    ana = await talk(shepherd).person("acme", "slack", "UANA", name="ana", default_role=Role.OPERATOR)
    here = Where("slack", "C1/1.1")
    none = await talk(shepherd).command(ana, "digest", where=here, place=C1)
    assert none.ok and "no digest" in none.text

    made = await talk(shepherd).command(ana, "digest */5 * * * *", where=here, place=C1)
    assert made.ok, made.text
    assert "next at" in made.text and "UTC" in made.text and "`*/5 * * * *`" in made.text
    shown = await talk(shepherd).command(ana, "digest", place=C1)
    assert "*/5 * * * *" in shown.text and "next at" in shown.text

    replaced = await talk(shepherd).command(ana, "digest 0 9 * * 1-5", place=C1)
    assert replaced.ok, replaced.text
    listed = await shepherd.digests.list(ana)
    assert [(d.place, d.cron) for d in listed] == [(("slack", "C1"), "0 9 * * 1-5")]  # replaced: one per place
    assert listed[0].next_fire_at.hour == 9 and listed[0].last_fired_at is None
    schedules = await talk(shepherd).command(ana, "schedules", place=C1)  # every digest of the org, with its next run
    assert "slack C1" in schedules.text and "0 9 * * 1-5 (UTC)" in schedules.text, schedules.text
    assert [(d["channel"], d["address"], d["last_posted"]) for d in schedules.data["digests"]] == [
        ("slack", "C1", None)] and schedules.data["digests"][0]["next_run"].endswith("T09:00:00Z")

    stopped = await talk(shepherd).command(ana, "digest off", place=C1)
    assert stopped.ok and "no longer posts here" in stopped.text
    assert await shepherd.digests.list(ana) == []
    again = await talk(shepherd).command(ana, "digest off", place=C1)
    assert again.ok and "nothing to stop" in again.text


async def test_a_bad_cron_is_an_error_naming_the_field(shepherd: Shepherd) -> None:
    reply = await talk(shepherd).command(OPS, "digest 0 25 * * *", place=C1)
    assert not reply.ok and "hour field `25`" in reply.text and "0-23" in reply.text
    assert await shepherd.digests.list(OPS) == []


async def test_a_viewer_may_look_but_not_set_a_digest(shepherd: Shepherd) -> None:
    vi = await talk(shepherd).person("acme", "slack", "UVI", name="vi", default_role=Role.VIEWER)
    refused = await talk(shepherd).command(vi, "digest */5 * * * *", place=C1)
    assert not refused.ok and "operator" in refused.text
    assert (await talk(shepherd).command(OPS, "digest */5 * * * *", place=C1)).ok
    assert not (await talk(shepherd).command(vi, "digest off", place=C1)).ok
    shown = await talk(shepherd).command(vi, "digest", place=C1)
    assert not shown.ok  # `digest` is an operator's command, showing included
    assert len(await shepherd.digests.list(vi)) == 1


# --- the job: once, coalesced, only news ----------------------------------------------------------------------


async def test_a_due_digest_is_posted_once_however_often_the_job_runs(shepherd: Shepherd) -> None:
    await a_task(shepherd, "fix-auth", "running")
    view = await shepherd.digests.set(OPS, C1, "*/1 * * * *", now=T0)
    assert view.next_fire_at == datetime(2026, 3, 2, 9, 1, tzinfo=UTC)
    assert await shepherd.digests.post_due(T0 + timedelta(seconds=20)) == "nothing due"
    now = T0 + timedelta(seconds=31)
    assert await shepherd.digests.post_due(now) == "posted 1 digest"
    assert await shepherd.digests.post_due(now) == "nothing due"
    posted = await digests_at(shepherd, C1)
    assert [m.key for m in posted] == [f"digest:{view.id}:2026-03-02T09:01:00+00:00"]
    listed = (await shepherd.digests.list(OPS))[0]
    assert listed.last_fired_at == datetime(2026, 3, 2, 9, 1, tzinfo=UTC)
    assert listed.next_fire_at == datetime(2026, 3, 2, 9, 2, tzinfo=UTC)


async def test_two_processes_running_the_job_at_once_post_it_once(two_cores: tuple[Shepherd, Shepherd]) -> None:
    a, b = two_cores
    await a_task(a, "fix-auth", "running")
    for n in range(5):  # several digests due at once: each is claimed by one process or the other
        await a.digests.set(OPS, Where("slack", f"C{n}"), "*/1 * * * *", now=T0)
    now = T0 + timedelta(seconds=45)
    results = await asyncio.gather(a.digests.post_due(now), b.digests.post_due(now), a.digests.post_due(now),
                                   b.digests.post_due(now))
    async with a.db.read() as session:
        keys = list(await session.exec(select(Outbox.key).where(col(Outbox.key).startswith("digest:"))))
    assert len(keys) == 5 and len(set(keys)) == 5, (keys, results)


async def test_missed_fire_times_coalesce_into_one_digest(shepherd: Shepherd,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    await a_task(shepherd, "fix-auth", "running")
    view = await shepherd.digests.set(OPS, C1, "*/1 * * * *", now=T0)
    with caplog.at_level(logging.WARNING, logger="core.digests.service"):
        assert await shepherd.digests.post_due(T0 + timedelta(minutes=10, seconds=5)) == "posted 1 digest"
    assert [m.key for m in await digests_at(shepherd, C1)] == [f"digest:{view.id}:2026-03-02T09:10:00+00:00"]
    assert "9 fire time(s) missed" in caplog.text
    assert (await shepherd.digests.list(OPS))[0].next_fire_at == datetime(2026, 3, 2, 9, 11, tzinfo=UTC)


async def test_nothing_is_posted_when_nothing_changed(shepherd: Shepherd) -> None:
    await shepherd.digests.set(OPS, C1, "*/1 * * * *", now=T0)
    first = T0 + timedelta(seconds=30)
    # the place's first digest comes anyway: whoever set it in a quiet channel sees that it works
    assert await shepherd.digests.post_due(first) == "posted 1 digest"
    [hello] = await digests_at(shepherd, C1)
    assert "all quiet" in hello.text, hello.text
    assert await shepherd.digests.post_due(first + timedelta(minutes=1)) == \
        "posted 0 digests, 1 with nothing new not posted"  # still quiet: nothing new
    await a_task(shepherd, "fix-auth", "running")
    assert await shepherd.digests.post_due(first + timedelta(minutes=2)) == "posted 1 digest"
    assert await shepherd.digests.post_due(first + timedelta(minutes=3)) == \
        "posted 0 digests, 1 with nothing new not posted"  # the same task, still running: nothing new
    await a_task(shepherd, "add-docs", "awaiting")
    assert await shepherd.digests.post_due(first + timedelta(minutes=4)) == "posted 1 digest"
    posted = await digests_at(shepherd, C1)
    assert len(posted) == 3 and "add-docs" in posted[2].text and "fix-auth" in posted[2].text
    assert (await shepherd.digests.list(OPS))[0].last_fired_at == datetime(2026, 3, 2, 9, 5, tzinfo=UTC)


async def test_a_finish_stamped_before_the_last_digest_but_seen_after_it_is_reported_once(shepherd: Shepherd) -> None:
    """A task's end is stamped (`finished_at`, the finishing process's clock) before its transaction commits; a
    digest that read in between, or a runner whose clock is a little behind the scheduler's, sets "reported until"
    past a finish it never saw. That finish was then reported by no digest at all. It is told by the next one, and
    by no later one."""
    await shepherd.digests.set(OPS, C1, "*/1 * * * *", now=T0)
    first = T0 + timedelta(seconds=30)  # 09:01
    await a_task(shepherd, "fix-auth", "running")
    assert await shepherd.digests.post_due(first) == "posted 1 digest"
    # committed now, but stamped two seconds before the digest above read the tasks
    await a_task(shepherd, "add-docs", "completed", outcome="completed", finished_at=first - timedelta(seconds=2))
    assert await shepherd.digests.post_due(first + timedelta(minutes=1)) == "posted 1 digest"
    assert await shepherd.digests.post_due(first + timedelta(minutes=2)) == \
        "posted 0 digests, 1 with nothing new not posted"  # told once
    posted = await digests_at(shepherd, C1)
    assert [("add-docs" in m.text) for m in posted] == [False, True]


async def test_digest_always_posts_all_quiet(db: Database) -> None:
    shepherd = Shepherd(db, digest_always=True)
    await shepherd.orgs.ensure("acme")
    await shepherd.digests.set(OPS, C1, "*/1 * * * *", now=T0)
    assert await shepherd.digests.post_due(T0 + timedelta(minutes=1)) == "posted 1 digest"
    assert await shepherd.digests.post_due(T0 + timedelta(minutes=2)) == "posted 1 digest"
    posted = await digests_at(shepherd, C1)
    assert len(posted) == 2 and all("all quiet" in m.text for m in posted)
    assert posted[0].key != posted[1].key  # a new message each time, never an edit of the last


# --- what a digest tells --------------------------------------------------------------------------------------


async def test_a_digest_tells_running_waiting_finished_pending_and_suspended(shepherd: Shepherd) -> None:
    admin = person(Role.ADMIN)
    await shepherd.projects.create(admin, name="api", repo="acme/api")
    await a_task(shepherd, "done-before", "completed", outcome="completed", finished_at=T0 - timedelta(minutes=5))
    await shepherd.digests.set(OPS, C1, "*/15 * * * *", now=T0)
    now = T0 + timedelta(minutes=15)
    running = await a_task(shepherd, "fix-auth", "running")
    await printed(shepherd, running, "collecting tests")
    await printed(shepherd, running, "12 passed, 1 failed")
    gated = await a_task(shepherd, "open-pr", "awaiting", project="api", state_at=now - timedelta(minutes=42))
    await a_task(shepherd, "add-docs", "completed", outcome="completed", finished_at=now - timedelta(minutes=3),
                 evidence={"exitCode": 0})
    await a_task(shepherd, "flaky", "failed", outcome="failed", finished_at=now - timedelta(minutes=2),
                 evidence={"exitCode": 2})
    conf = await gate(shepherd, gated, pr_plan())
    async with shepherd.db.write() as session:
        from core.store.models import Confirmation
        await session.exec(update(Confirmation).where(col(Confirmation.id) == conf.id).values(
            created_at=now - timedelta(minutes=25), expires_at=now + timedelta(minutes=5)))
    agent = await shepherd.agents.create(admin, name="api-agent", type="project", project_id=(
        await shepherd.projects.get(admin, "api")).id)
    await shepherd.agents.act(admin, agent.agent.id, "suspend")

    assert await shepherd.digests.post_due(now) == "posted 1 digest"
    [digest] = await digests_at(shepherd, C1)
    assert digest.kind == "digest"
    assert digest.text.splitlines()[0].startswith("📋 Digest · Mon 09:15 UTC · 1 running, 1 waiting on people, "
                                                  "2 finished, 1 pending confirmations, 1 agents suspended")
    sections = digest.fields
    assert sections["Running (1)"] == "• fix-auth: 12 passed, 1 failed"  # its latest line
    assert sections["Waiting on people (1)"].startswith("• open-pr: waiting 42m")
    finished = sections["Finished since the last digest (2)"]
    assert "✅ add-docs: completed" in finished and "❌ flaky: failed" in finished and "exit 2" in finished
    assert "done-before" not in digest.text  # finished before the digest began
    assert sections["Pending confirmations (1)"] == f"• {conf.code} pr.open: asked 25m00s ago, expires in 5m00s"
    assert sections["Agents suspended (1)"] == "• api-agent (project)"

    # the next digest: "finished since the last digest" begins where this one ended
    await a_task(shepherd, "later", "completed", outcome="completed", finished_at=now + timedelta(minutes=5))
    assert await shepherd.digests.post_due(now + timedelta(minutes=15)) == "posted 1 digest"
    second = (await digests_at(shepherd, C1))[1]
    assert "later" in second.text and "add-docs" not in second.text


async def test_another_orgs_tasks_never_appear(shepherd: Shepherd) -> None:
    await a_task(shepherd, "globex-secret", "running", org="globex")
    await a_task(shepherd, "acme-work", "running")
    await shepherd.digests.set(OPS, C1, "*/1 * * * *", now=T0)
    globex = person(Role.OPERATOR, org="globex")
    await shepherd.digests.set(globex, Where("slack", "G1"), "*/1 * * * *", now=T0)
    assert await shepherd.digests.post_due(T0 + timedelta(minutes=1)) == "posted 2 digests"
    [ours] = await digests_at(shepherd, C1)
    assert "acme-work" in ours.text and "globex-secret" not in ours.text
    [theirs] = await digests_at(shepherd, Where("slack", "G1"))
    assert "globex-secret" in theirs.text and "acme-work" not in theirs.text
    assert [d.place for d in await shepherd.digests.list(OPS)] == [("slack", "C1")]


async def test_a_project_scoped_place_sees_only_its_project(shepherd: Shepherd) -> None:
    admin = person(Role.ADMIN)
    await shepherd.projects.create(admin, name="api", repo="acme/api")
    await shepherd.projects.create(admin, name="web", repo="acme/web")
    await a_task(shepherd, "api-fix", "running", project="api")
    await a_task(shepherd, "web-fix", "running", project="web")
    await a_task(shepherd, "loose", "running")
    issue = Where("github", "acme/api#7")
    made = await talk(shepherd).command(OPS, "digest */1 * * * *", where=issue)  # an issue: its repository's project
    assert made.ok and "project api" in made.text, made.text
    scoped = await talk(shepherd).command(OPS, "digest */1 * * * * --project web", place=C1)
    assert scoped.ok, scoped.text
    await shepherd.digests.post_due(datetime.now(UTC) + timedelta(minutes=1, seconds=1))
    [on_issue] = await digests_at(shepherd, issue)
    assert "api-fix" in on_issue.text and "web-fix" not in on_issue.text and "loose" not in on_issue.text
    assert on_issue.text.startswith("📋 Digest · api ·")
    [in_channel] = await digests_at(shepherd, C1)
    assert "web-fix" in in_channel.text and "api-fix" not in in_channel.text and "loose" not in in_channel.text
    elsewhere = await talk(shepherd).command(OPS, "digest */1 * * * *", where=Where("github", "acme/nope#1"))
    assert not elsewhere.ok and "acme/nope" in elsewhere.text
    # an issue is read by whoever reads its repository: it is never pointed at another project's work
    other = await talk(shepherd).command(OPS, "digest */1 * * * * --project web", where=issue)
    assert not other.ok and "covers that repository's project only" in other.text, other.text
    same = await talk(shepherd).command(OPS, "digest */1 * * * * --project api", where=issue)
    assert same.ok, same.text


# --- end to end -----------------------------------------------------------------------------------------------


async def test_a_slack_channels_digest_is_posted_there(slack: SlackWorld) -> None:
    status, _ = await slack.command("digest */1 * * * *", user=ADMIN, channel="C1")
    assert status == 200
    await slack.ephemeral(ADMIN, "next at")
    ada = await talk(slack.shepherd).person("acme", "slack", ADMIN, name="ada", default_role=Role.ADMIN)
    await a_task(slack.shepherd, "fix-auth", "running")
    assert await slack.shepherd.digests.post_due(datetime.now(UTC) + timedelta(minutes=1)) == "posted 1 digest"
    slack.shepherd.outbox_due()
    await slack.fake.wait_for(lambda: any("Digest" in m.text for m in slack.roots("C1")))
    posted = next(m for m in slack.roots("C1") if "Digest" in m.text)
    assert "fix-auth" in _all_text(posted) and "```" not in _all_text(posted)  # sections as text, not code
    [view] = await slack.shepherd.digests.list(ada)
    assert view.last_posted_at is not None


def test_each_channel_shows_a_digest_as_text_under_its_headline() -> None:
    from adapters.github.comments import render as github_render
    from adapters.slack.blocks import render as slack_render
    from adapters.telegram.render import render as telegram_render

    sections = {"Running (1)": "• fix-<auth>: 3 passed @here", "Agents suspended (1)": "• api-agent (project)"}
    digest = Message(key="digest:dig-1:2026-03-02T09:00:00+00:00", kind="digest", fields=sections,
                     text="📋 Digest · Mon 09:00 UTC · 1 running, 1 agents suspended\n\n" +
                          "\n\n".join(f"{t}\n{b}" for t, b in sections.items()))
    fallback, blocks = slack_render(digest)
    assert fallback == "📋 Digest · Mon 09:00 UTC · 1 running, 1 agents suspended"  # the notification: the headline
    texts = [b["text"]["text"] for b in blocks]
    assert texts[1] == "*Running (1)*\n• fix-&lt;auth&gt;: 3 passed @here" and "```" not in "".join(texts)
    html = telegram_render(digest).text
    assert html.startswith("<b>📋 Digest") and "<b>Running (1)</b>\n• fix-&lt;auth&gt;: 3 passed" in html
    markdown = github_render(digest)
    assert "**Running (1)**\n- fix-&lt;auth>: 3 passed @\u200bhere" in markdown  # a list; nobody is pinged


def test_an_unknown_time_zone_is_refused_at_start() -> None:
    from pydantic import ValidationError

    from bot.settings import Settings

    with pytest.raises(ValidationError) as caught:
        Settings(timezone="Mars/Olympus_Mons")
    assert "unknown time zone 'Mars/Olympus_Mons'" in str(caught.value)
    assert Settings(timezone="Europe/Berlin").timezone == "Europe/Berlin"
