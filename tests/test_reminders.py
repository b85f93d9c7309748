"""Approver reminders (core.autonomy.reminders), on SQLite and PostgreSQL, with a chosen `now`: a confirmation still
pending SHEPHERD_REMIND_AFTER after it was asked is asked again, as a new message, in its project's approval
channels and its task's thread; again after twice that; never once decided or expired; once however many times and
processes run the job; and its decision edits every copy, delivered through the real outbox dispatcher."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from adapters.console.repl import console_principal
from bot.outbox import Dispatcher
from bot.presets import agent_catalog
from core.channels.conversations import Where
from core.clock import as_utc, utcnow
from core.housekeeping import Retention
from core.people.access import Principal, Role
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Confirmation, Event, Outbox, Task
from tests.test_confirmations import gate, pr_plan
from tests.test_outbox import Sink, _drain
from tests.test_places import SLACK_C2, project_task, slack_person, talk

R = 600.0  # the default SHEPHERD_REMIND_AFTER; the default expiry is 1800 s: reminders at +600 and +1200 only


async def asked(shepherd: Shepherd) -> tuple[Principal, Principal, Task, Confirmation]:
    """A task of project `api` started from the console, its pull request waiting on a confirmation, and a Slack
    channel subscribed to the project's approvals."""
    console, _ = await console_principal(shepherd, "acme", "ops")
    ana = await slack_person(shepherd, "UANA", "ana", Role.APPROVER)
    task = await project_task(shepherd, console)
    assert (await talk(shepherd).command(ana, "subscribe api", place=SLACK_C2)).ok
    return console, ana, task, await gate(shepherd, task, pr_plan())


def at(conf: Confirmation, seconds: float) -> datetime:
    return as_utc(conf.created_at) + timedelta(seconds=seconds)


async def reminders(shepherd: Shepherd, conf: Confirmation) -> list[tuple[str, str, str, str]]:
    """The reminder rows written: (channel, address, key, state), in order."""
    async with shepherd.db.read() as session:
        rows = await session.exec(select(Outbox).where(col(Outbox.key).startswith(f"confirmation:{conf.id}:"))
                                  .order_by(col(Outbox.id)))
        return [(r.channel, r.address, r.key, r.payload["state"]) for r in rows]


async def test_reminded_after_the_interval_not_before_and_again_after_twice_it_in_both_places(
    shepherd: Shepherd,
) -> None:
    _, _, task, conf = await asked(shepherd)
    assert await shepherd.reminders.remind_due(at(conf, R - 1)) == "nothing due"
    assert await reminders(shepherd, conf) == []

    said = await shepherd.reminders.remind_due(at(conf, R + 1))
    assert said == "reminded 1 confirmation, 2 messages", said
    first = f"confirmation:{conf.id}:reminder:1"
    assert await reminders(shepherd, conf) == [("console", "ops", first, "pending"), ("slack", "C2", first, "pending")]
    async with shepherd.db.read() as session:
        row = (await session.exec(select(Outbox).where(Outbox.key == first))).first()
    assert row is not None
    text = row.payload["text"]
    assert text.startswith(f"reminder: approval {conf.code}") and "waited 10 min" in text, text
    assert "expires in 20 min" in text and row.payload["fields"]["task"] == task.name
    assert [(b["action"], b["value"]) for b in row.payload["buttons"]] == [("approve", conf.id), ("reject", conf.id)]

    assert await shepherd.reminders.remind_due(at(conf, R + 5)) == "nothing due"  # once per interval
    assert await shepherd.reminders.remind_due(at(conf, 2 * R + 1)) == "reminded 1 confirmation, 2 messages"
    second = f"confirmation:{conf.id}:reminder:2"
    assert [key for _, _, key, _ in await reminders(shepherd, conf)] == [first, first, second, second]
    # the next would fall on its expiry: there is none, and past it nothing is reminded
    assert await shepherd.reminders.remind_due(at(conf, 3 * R - 1)) == "nothing due"
    assert await shepherd.reminders.remind_due(at(conf, 3 * R + 60)) == "nothing due"
    async with shepherd.db.read() as session:
        names = [e.name for e in await session.exec(select(Event).where(Event.task_id == task.id))]
    assert names.count("confirmation.reminded") == 2


async def test_a_late_run_reminds_once_and_keeps_to_the_intervals(shepherd: Shepherd) -> None:
    """Nothing ran for a while (a failover): one reminder now, not one for every interval missed."""
    _, _, _, conf = await asked(shepherd)
    assert await shepherd.reminders.remind_due(at(conf, 2 * R + 30)) == "reminded 1 confirmation, 2 messages"
    assert await shepherd.reminders.remind_due(at(conf, 2 * R + 60)) == "nothing due"
    async with shepherd.db.read() as session:
        row = await session.get(Confirmation, conf.id)
    assert row is not None and row.reminders == 1 and row.remind_at is None  # 3R is its expiry


async def test_no_reminder_once_decided_or_expired(shepherd: Shepherd) -> None:
    console, _, _, conf = await asked(shepherd)
    decided = await talk(shepherd).command(console, f"approve {conf.code}", where=Where("console", "ops"))
    assert decided.ok, decided.text
    assert await shepherd.reminders.remind_due(at(conf, R + 1)) == "nothing due"

    other = await gate(shepherd, await project_task_again(shepherd, console), pr_plan("b" * 40))
    async with shepherd.db.write() as session:  # its time is up (the sweep has not run yet)
        await session.exec(update(Confirmation).where(col(Confirmation.id) == other.id)
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
    assert await shepherd.reminders.remind_due(at(other, R + 1)) == "nothing due"
    assert await shepherd.confirmations.expire_due() == 1
    assert await shepherd.reminders.remind_due(at(other, R + 1)) == "nothing due"
    assert await reminders(shepherd, conf) == [] and await reminders(shepherd, other) == []


async def project_task_again(shepherd: Shepherd, owner: Principal) -> Task:
    view = await shepherd.tasks.create(owner, prompt="another fix", runtime="demo", project="api",
                                       thread=("console", owner.name))
    async with shepherd.db.write() as session:
        await session.exec(update(Task).where(col(Task.id) == view.task.id).values(
            status="awaiting", state="idle", turns=1, evidence={"exitCode": 0}))
    return await shepherd.tasks.get(owner, view.task.id)


async def test_runs_at_once_in_two_processes_remind_once(two_cores: tuple[Shepherd, Shepherd]) -> None:
    a, b = two_cores
    await b.orgs.ensure("acme")
    _, _, _, conf = await asked(a)
    now = at(conf, R + 1)
    said = await asyncio.gather(a.reminders.remind_due(now), b.reminders.remind_due(now),
                                a.reminders.remind_due(now), b.reminders.remind_due(now))
    assert sorted(said)[-1] == "reminded 1 confirmation, 2 messages" and said.count("nothing due") == 3, said
    assert len(await reminders(a, conf)) == 2


async def test_the_decision_edits_the_prompt_and_every_reminder_where_it_was_posted(shepherd: Shepherd) -> None:
    """Through the real dispatcher: the Slack channel and the console each got the prompt and two reminders as
    new messages; one click on a reminder's Approve decides, and all three messages in both places say so."""
    _, ana, _, conf = await asked(shepherd)
    slack, console = Sink(name="slack"), Sink(name="console")
    dispatcher = Dispatcher(shepherd, [slack, console])
    await _drain(dispatcher)
    await shepherd.reminders.remind_due(at(conf, R + 1))
    await _drain(dispatcher)
    await shepherd.reminders.remind_due(at(conf, 2 * R + 1))
    await _drain(dispatcher)
    for sink, address in ((slack, "C2"), (console, "ops")):
        assert [kind for kind, _, _ in sink.delivered] == ["post", "post", "post"], sink.delivered
        assert {a for _, a, _ in sink.delivered} == {address}
        assert [t.split(";")[0] for _, _, t in sink.delivered] == [
            f"approval {conf.code} ({conf.risk}): open a pull request",
            f"reminder: approval {conf.code} ({conf.risk}) has waited 10 min for a decision",
            f"reminder: approval {conf.code} ({conf.risk}) has waited 20 min for a decision"]
    async with shepherd.db.read() as session:
        clicked = (await session.exec(select(Outbox).where(
            Outbox.key == f"confirmation:{conf.id}:reminder:2", Outbox.channel == "slack"))).one()
    approve = next(b for b in clicked.payload["buttons"] if b["action"] == "approve")
    result = await shepherd.confirmations.vote(ana, approve["value"], approve=True, via="slack")
    assert result.counted and result.confirmation.status == "approved"
    await _drain(dispatcher)
    for sink in (slack, console):
        edits = sink.delivered[3:]
        assert sorted(kind for kind, _, _ in edits) == ["update m1", "update m2", "update m3"], edits
        assert all(f"{conf.code} approved by ana from slack" in text for _, _, text in edits), edits
    assert await shepherd.reminders.remind_due(at(conf, 3 * R - 1)) == "nothing due"


@pytest.mark.parametrize("name", ["REMIND_AFTER", "WAITING_NOTE_AFTER", "AGENT_RETENTION", "WORKSPACE_RETENTION",
                                  "WORKSPACE_HARD_LIMIT", "LEDGER_RETENTION", "STALL_WARN", "CLEANUP_SCHEDULE"])
@pytest.mark.parametrize("value", ["inf", "1e300", "nan"])
def test_a_duration_too_large_for_a_date_is_refused_at_start(name: str, value: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`SHEPHERD_REMIND_AFTER=inf` (someone turning reminders off) was taken, and then every gated action raised
    an OverflowError (no pull request could be asked for); a retention of 1e300 made every clean-up raise, and
    WAITING_NOTE_AFTER=inf every stall run (inf * 0 days is nan). Refused at start, naming the setting."""
    from pydantic import ValidationError

    from bot.settings import Settings

    monkeypatch.setenv(f"SHEPHERD_{name}", value)
    if name == "WORKSPACE_HARD_LIMIT":  # it must stay at least the retention: that rule is not what is tested
        monkeypatch.setenv("SHEPHERD_WORKSPACE_RETENTION", "60")
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    assert name.lower() in str(caught.value)


async def test_reminders_at_the_longest_interval_allowed_still_let_actions_be_asked(db: Database) -> None:
    from bot.settings import MAX_DURATION_S

    shepherd = Shepherd(db, catalog=agent_catalog(), remind_after_s=MAX_DURATION_S,
                        waiting_note_s=MAX_DURATION_S, retention=Retention(*(4 * [float(MAX_DURATION_S)])))
    await shepherd.orgs.ensure("acme")
    _, _, _, conf = await asked(shepherd)
    assert conf.remind_at is None  # no reminder before its expiry
    now = utcnow()
    assert await shepherd.reminders.remind_due(now) == "nothing due"
    assert await shepherd.watchdog.warn_stalled(now) == "nothing due"
    assert "removed 0 agents" in await shepherd.housekeeping.clean_up(now)
