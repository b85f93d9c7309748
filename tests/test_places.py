"""Approval channels (`subscribe`) and one person across channels (`link`), on SQLite and PostgreSQL, through the
commands every channel runs (core.channels.conversations) with people as the channels make them
(`Conversations.person`: a Slack member, a Telegram user) and the console's own user."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlmodel import col, select

from adapters.console.repl import console_principal
from core.autonomy.plans import Origin, Plan, Target
from core.channels.conversations import Conversations, Where
from core.commands.registry import build_registry
from core.people.access import Principal, Role
from core.shepherd import Shepherd
from core.store.models import Identity, LinkCode, Outbox, Task, User
from tests.test_confirmations import gate, pr_plan

SLACK_C2 = Where("slack", "C2")
TG_CHAT = Where("telegram", "-100200")


def talk(shepherd: Shepherd) -> Conversations:
    return Conversations(shepherd, build_registry())


async def slack_person(shepherd: Shepherd, member: str, name: str, role: Role) -> Principal:
    return await talk(shepherd).person("acme", "slack", member, name=name, default_role=role)


async def telegram_person(shepherd: Shepherd, user_id: str, name: str, role: Role) -> Principal:
    return await talk(shepherd).person("acme", "telegram", user_id, name=name, default_role=role)


async def project_task(shepherd: Shepherd, owner: Principal) -> Task:
    """A task of project `api` started from the console, waiting on its pull request's gate."""
    await shepherd.projects.create(owner, name="api", repo="acme/api")
    view = await shepherd.tasks.create(owner, prompt="fix the flaky test", runtime="demo", project="api",
                                       thread=("console", owner.name))
    async with shepherd.db.write() as session:
        await session.exec(update(Task).where(col(Task.id) == view.task.id).values(
            status="awaiting", state="idle", turns=1, evidence={"exitCode": 0}))
    return await shepherd.tasks.get(owner, view.task.id)


async def sent(shepherd: Shepherd, where: Where, key: str) -> list[str]:
    """The states of the messages with `key` the outbox has for `where`, in order."""
    async with shepherd.db.read() as session:
        rows = await session.exec(select(Outbox).where(
            Outbox.channel == where.channel, Outbox.address == where.address, Outbox.key == key)
            .order_by(col(Outbox.id)))
        return [r.payload.get("state", "") for r in rows]


# --- subscribe ------------------------------------------------------------------------------------------------


async def test_a_subscribed_place_gets_the_projects_prompts_and_their_decisions(shepherd: Shepherd) -> None:
    console, _ = await console_principal(shepherd, "acme", "ops")
    ana = await slack_person(shepherd, "UANA", "ana", Role.APPROVER)
    task = await project_task(shepherd, console)
    reply = await talk(shepherd).command(ana, "subscribe api", where=Where("slack", "C2/1.1"), place=SLACK_C2)
    assert reply.ok and "approval channel of api" in reply.text, reply.text
    again = await talk(shepherd).command(ana, "subscribe api", place=SLACK_C2)
    assert again.ok and "already" in again.text  # idempotent: one subscription

    conf = await gate(shepherd, task, pr_plan())
    key = f"confirmation:{conf.id}"
    assert await sent(shepherd, SLACK_C2, key) == ["pending"]  # once, though subscribed twice
    assert await sent(shepherd, Where("console", "ops"), key) == ["pending"]  # and in the task's own thread

    decided = await talk(shepherd).command(console, f"approve {conf.code}", where=Where("console", "ops"))
    assert decided.ok, decided.text
    assert await sent(shepherd, SLACK_C2, key) == ["pending", "approved"]  # the decision edits it there

    listed = await talk(shepherd).command(ana, "subscriptions", place=SLACK_C2)
    assert "approval channel of: api" in listed.text
    everywhere = await talk(shepherd).command(ana, "subscriptions --all")
    assert "api" in everywhere.text and "C2" in everywhere.text


async def test_a_task_run_on_a_projects_repository_is_that_projects_task(shepherd: Shepherd) -> None:
    """`run --repo acme/api` without --project: the task belongs to the project naming acme/api, so its prompts
    reach the project's approval channels (a Slack-started task asks a Telegram approver) and the project's
    agent level and policy govern it (naming the repository instead of the project escapes neither)."""
    console, _ = await console_principal(shepherd, "acme", "ops")
    tessa = await telegram_person(shepherd, "5001", "tessa", Role.APPROVER)
    await shepherd.projects.create(console, name="api", repo="acme/api")
    assert (await talk(shepherd).command(tessa, "subscribe api", place=TG_CHAT)).ok
    view = await shepherd.tasks.create(console, prompt="fix the flaky test", runtime="demo", repo="acme/api",
                                       thread=("console", console.name))
    assert view.project is not None and view.project.name == "api"
    conf = await gate(shepherd, view.task, pr_plan())
    assert await sent(shepherd, TG_CHAT, f"confirmation:{conf.id}") == ["pending"]
    other = await shepherd.tasks.create(console, prompt="fix it elsewhere", runtime="demo", repo="acme/web")
    assert other.project is None and other.task.project_id is None  # a repository no project names: none


async def test_unsubscribe_stops_new_prompts_and_the_shown_ones_still_hear_their_decision(shepherd: Shepherd) -> None:
    console, _ = await console_principal(shepherd, "acme", "ops")
    ana = await slack_person(shepherd, "UANA", "ana", Role.APPROVER)
    task = await project_task(shepherd, console)
    assert (await talk(shepherd).command(ana, "subscribe api", place=SLACK_C2)).ok
    shown = await gate(shepherd, task, pr_plan("a" * 40))

    reply = await talk(shepherd).command(ana, "unsubscribe api", place=SLACK_C2)
    assert reply.ok and "no longer" in reply.text
    later = await gate(shepherd, task, pr_plan("b" * 40))
    assert await sent(shepherd, SLACK_C2, f"confirmation:{later.id}") == []  # stopped

    await shepherd.confirmations.vote(console, shown.code, approve=True)
    assert await sent(shepherd, SLACK_C2, f"confirmation:{shown.id}") == ["pending", "approved"]
    listed = await talk(shepherd).command(ana, "subscriptions", place=SLACK_C2)
    assert "no approval channels" in listed.text
    back = await talk(shepherd).command(ana, "subscribe api", place=SLACK_C2)
    assert back.ok and "now an approval channel" in back.text


async def test_a_place_that_is_a_tasks_thread_and_an_approval_channel_gets_the_prompt_once(shepherd: Shepherd) -> None:
    console, _ = await console_principal(shepherd, "acme", "ops")
    ana = await telegram_person(shepherd, "4242", "ana_tg", Role.APPROVER)
    await shepherd.projects.create(console, name="api", repo="acme/api")
    view = await shepherd.tasks.create(console, prompt="fix it", runtime="demo", project="api",
                                       thread=(TG_CHAT.channel, TG_CHAT.address))
    assert (await talk(shepherd).command(ana, "subscribe api", where=TG_CHAT)).ok
    conf = await gate(shepherd, view.task, pr_plan())
    assert await sent(shepherd, TG_CHAT, f"confirmation:{conf.id}") == ["pending"]


async def test_only_approvers_subscribe_and_an_unknown_project_is_named(shepherd: Shepherd) -> None:
    console, _ = await console_principal(shepherd, "acme", "ops")
    await shepherd.projects.create(console, name="api", repo="acme/api")
    viewer = await slack_person(shepherd, "UVI", "vi", Role.VIEWER)
    refused = await talk(shepherd).command(viewer, "subscribe api", place=SLACK_C2)
    assert not refused.ok and "approver" in refused.text
    assert (await talk(shepherd).command(viewer, "subscriptions --all")).ok  # looking is for everyone
    assert "no approval channels" in (await talk(shepherd).command(viewer, "subscriptions --all")).text
    unknown = await talk(shepherd).command(console, "subscribe nope", place=SLACK_C2)
    assert not unknown.ok and "project 'nope' not found" in unknown.text
    nowhere = await build_registry().run(shepherd, console, "subscribe api")  # REST: no place
    assert not nowhere.ok and "say it in the chat" in nowhere.text


# --- link -----------------------------------------------------------------------------------------------------


async def link_code(shepherd: Shepherd, who: Principal, place: Where) -> str:
    reply = await talk(shepherd).command(who, "link", place=place)
    assert reply.ok, reply.text
    return reply.text.split("your link code: ")[1].split(" ")[0]


async def test_link_joins_slack_and_telegram_into_one_person_with_one_vote(shepherd: Shepherd) -> None:
    console, _ = await console_principal(shepherd, "acme", "ops")
    task = await project_task(shepherd, console)
    critical = Plan(action="deploy.production", summary="deploy to production", target=Target(repo="acme/api"))
    conf = await gate(shepherd, task, critical, level=5, origin=Origin.PERSON)
    assert conf.quorum == 2

    ana = await slack_person(shepherd, "UANA", "ana", Role.APPROVER)
    ana_tg = await telegram_person(shepherd, "4242", "ana_tg", Role.APPROVER)
    first = await shepherd.confirmations.vote(ana_tg, conf.code, approve=True)  # before linking: from Telegram
    assert first.counted and "1/2" in first.text

    code = await link_code(shepherd, ana, Where("slack", "D1"))
    joined = await talk(shepherd).command(ana_tg, f"link {code.lower()}", where=TG_CHAT)
    assert joined.ok and "you are ana in telegram and slack now" in joined.text, joined.text

    ana_tg = await telegram_person(shepherd, "4242", "ana_tg", Role.VIEWER)  # the Telegram user, met again
    assert ana_tg.user_id == ana.user_id and ana_tg.name == "ana"
    again = await shepherd.confirmations.vote(ana, conf.code, approve=True)  # the same person, from Slack
    assert not again.counted and "already counted" in again.text
    assert (await shepherd.confirmations.get(console, conf.code)).approvals == 1
    async with shepherd.db.read() as session:
        assert (await session.exec(select(User).where(User.name == "ana_tg"))).first() is None
        channels = sorted(i.channel for i in await session.exec(select(Identity).where(
            Identity.user_id == ana.user_id)))
    assert channels == ["slack", "telegram"]
    # whoever asked for the code is told, where they asked for it, who joined them
    async with shepherd.db.read() as session:
        notes = [r.payload["text"] for r in await session.exec(select(Outbox).where(Outbox.address == "D1"))]
    assert any("telegram user ana_tg is now linked to you (ana)" in n for n in notes), notes


async def test_the_console_gives_a_code_a_chat_identity_joins_and_the_console_cannot_join(shepherd: Shepherd) -> None:
    console, _ = await console_principal(shepherd, "acme", "ops")
    bob = await slack_person(shepherd, "UBOB", "bob", Role.VIEWER)
    code = await link_code(shepherd, console, Where("console", "ops"))
    joined = await talk(shepherd).command(bob, f"link {code}", place=SLACK_C2)
    assert joined.ok and "you are ops" in joined.text and "role admin" in joined.text, joined.text
    bob = await slack_person(shepherd, "UBOB", "bob", Role.VIEWER)
    assert bob.user_id == console.user_id and bob.can(Role.ADMIN.scope)

    other = await slack_person(shepherd, "UCAT", "cat", Role.VIEWER)
    slack_code = await link_code(shepherd, other, SLACK_C2)
    refused = await talk(shepherd).command(console, f"link {slack_code}", where=Where("console", "ops"))
    assert not refused.ok and "say `link` here and `link <code>` in the chat" in refused.text


async def test_a_higher_role_is_kept_only_when_an_admin_links(shepherd: Shepherd) -> None:
    vi = await slack_person(shepherd, "UVI", "vi", Role.VIEWER)
    vi_tg = await telegram_person(shepherd, "77", "vi_tg", Role.APPROVER)
    code = await link_code(shepherd, vi, SLACK_C2)
    joined = await talk(shepherd).command(vi_tg, f"link {code}", where=TG_CHAT)
    assert joined.ok and "role viewer" in joined.text
    assert "an admin can give it with `role vi approver`" in joined.text
    vi_tg = await telegram_person(shepherd, "77", "vi_tg", Role.APPROVER)
    assert not vi_tg.can(Role.APPROVER.scope)  # the code lifted nobody

    op = await slack_person(shepherd, "UOP", "op", Role.OPERATOR)
    boss = await talk(shepherd).person("acme", "telegram", "88", name="op_tg", default_role=Role.VIEWER, admin=True)
    code = await link_code(shepherd, op, SLACK_C2)
    joined = await talk(shepherd).command(boss, f"link {code}", where=TG_CHAT)
    assert joined.ok and "role admin" in joined.text  # an admin said it: their confirmation
    op = await slack_person(shepherd, "UOP", "op", Role.OPERATOR)
    assert op.can(Role.ADMIN.scope)


async def test_wrong_expired_reused_and_same_channel_codes_are_refused(shepherd: Shepherd) -> None:
    ana = await slack_person(shepherd, "UANA", "ana", Role.APPROVER)
    tg = await telegram_person(shepherd, "4242", "ana_tg", Role.VIEWER)
    eve = await telegram_person(shepherd, "666", "eve", Role.VIEWER)
    code = await link_code(shepherd, ana, SLACK_C2)

    wrong = await talk(shepherd).command(eve, "link AAAA-BBBB", where=TG_CHAT)
    assert not wrong.ok and "no such link code" in wrong.text and "4 tries left" in wrong.text
    bad = await talk(shepherd).command(eve, "link K7P2", where=TG_CHAT)
    assert not bad.ok and "8 letters and digits" in bad.text

    assert (await talk(shepherd).command(tg, f"link {code}", where=TG_CHAT)).ok
    reused = await talk(shepherd).command(eve, f"link {code}", where=TG_CHAT)
    assert not reused.ok and "no such link code" in reused.text  # single use: spent is as unknown

    code = await link_code(shepherd, ana, SLACK_C2)
    async with shepherd.db.write() as session:
        await session.exec(update(LinkCode).where(col(LinkCode.used_at).is_(None)).values(
            expires_at=LinkCode.created_at - timedelta(seconds=1)))
    expired = await talk(shepherd).command(eve, f"link {code}", where=TG_CHAT)
    assert not expired.ok and "no such link code" in expired.text

    # a code shown in a Slack channel and typed there by someone else: refused, and spent
    code = await link_code(shepherd, ana, SLACK_C2)
    mallory = await slack_person(shepherd, "UMAL", "mallory", Role.VIEWER)
    same = await talk(shepherd).command(mallory, f"link {code}", place=SLACK_C2)
    assert not same.ok and "another channel" in same.text
    late = await talk(shepherd).command(eve, f"link {code}", where=TG_CHAT)
    assert not late.ok and "no such link code" in late.text
    assert (await telegram_person(shepherd, "666", "eve", Role.VIEWER)).user_id != ana.user_id


async def test_guessing_codes_is_cut_off_after_a_few_tries(shepherd: Shepherd) -> None:
    ana = await slack_person(shepherd, "UANA", "ana", Role.APPROVER)
    eve = await telegram_person(shepherd, "666", "eve", Role.VIEWER)
    code = await link_code(shepherd, ana, SLACK_C2)
    for n in range(5):
        reply = await talk(shepherd).command(eve, f"link ZZZZ-ZZZ{n + 2}", where=TG_CHAT)
        assert not reply.ok and "no such link code" in reply.text
    blocked = await talk(shepherd).command(eve, f"link {code}", where=TG_CHAT)  # even the right one, now
    assert not blocked.ok and "too many wrong link codes" in blocked.text
    assert (await telegram_person(shepherd, "666", "eve", Role.VIEWER)).user_id != ana.user_id
