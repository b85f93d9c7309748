"""The GitHub channel against the fake GitHub API, with the real gidgethub client: a task's news is one sticky
comment, posted once, edited as news comes, found again after a restart and never posted twice; answers are
ordinary comments; GitHub's rate limits reach the outbox as a wait (Retry-After), and the outbox keeps the row."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import update
from sqlmodel import col, select

from adapters.github.auth import GitHubApp, GitHubAuth
from adapters.github.channel import GitHubChannel
from adapters.github.comments import marker
from bot.outbox import Dispatcher
from core.channels.conversations import bind_thread
from core.channels.outbox import DeliveryError, Message, RowStatus, enqueue
from core.clock import utcnow
from core.shepherd import Shepherd
from core.store.models import Outbox
from tests.fakes.github_api import FakeGitHub

TOKEN = "ghp_channel_secret"
ISSUE = "acme/api#12"


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(TOKEN) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def status(text: str, lines: str = "", *, task: str = "task-1", state: str = "running") -> Message:
    return Message(key=f"task:{task}:status", text=text, kind="progress", state=state, detail=lines,
                   fields={"task": "fix-auth-1a2b", "status": state}, more="logs fix-auth-1a2b", task=task)


def approval(state: str = "pending", text: str = "approval K7P2 (medium): open a pull request fix-auth -> main"
             ) -> Message:
    return Message(key="confirmation:conf-1", text=text, kind="confirmation", state=state, code="K7P2",
                   fields={"action": "pr.open", "risk": "medium", "task": "fix-auth-1a2b"}, task="task-1")


def outcome() -> Message:
    return Message(key="task:task-1:turn:1:outcome", text="✅ fix-auth-1a2b succeeded in 3.0 s · 1 file changed",
                   kind="outcome", state="succeeded", fields={"outcome": "succeeded", "changes": "1 file, +2 -0"},
                   task="task-1")


def calls(github: FakeGitHub) -> list[str]:
    """What the channel asked of the issue's comments (not who Shepherd is, GET /user)."""
    return [r.method for r in github.requests if "/comments" in r.path]


def on(github: FakeGitHub, issue: str = ISSUE) -> list[dict[str, object]]:
    return [c for c in github.comments if c.get("issue") == issue]


async def test_a_tasks_news_is_one_comment_edited_in_place_and_found_again_after_a_restart(
    github: FakeGitHub, http: aiohttp.ClientSession
) -> None:
    channel = GitHubChannel(GitHubAuth(http, base_url=github.base_url, token=TOKEN))
    ref = await channel.post(ISSUE, status("🏃 fix-auth-1a2b: running", "cloning"))
    await channel.update(ISSUE, ref, status("🏃 fix-auth-1a2b: asks @acme/owners", "editing src/auth.py\n```"))
    assert await channel.post(ISSUE, approval()) == ref  # the task's approval joins its comment
    [sticky] = on(github)
    body = str(sticky["body"])
    assert body.startswith(marker("task-1")) and ref == f"sticky:{sticky['id']}"
    assert "editing src/auth.py" in body and "cloning" not in body  # the latest output lines
    assert "@acme/owners" not in body  # what agents write never pings anyone
    assert "````text\nediting src/auth.py\n```\n````" in body  # nor closes its code block
    assert "`/shepherd approve K7P2`" in body
    assert calls(github) == ["GET", "POST", "PATCH", "PATCH"]

    restarted = GitHubChannel(GitHubAuth(http, base_url=github.base_url, token=TOKEN))
    await restarted.update(ISSUE, ref, approval("approved", "K7P2 approved by ana from slack · pull request #3 "
                                                            "opened: https://github.com/acme/api/pull/3"))
    await restarted.post(ISSUE, outcome())
    await restarted.update(ISSUE, ref, status("✅ fix-auth-1a2b: succeeded", state="completed"))
    [sticky] = on(github)
    body = str(sticky["body"])
    # what the first process wrote is still there: the parts live in the comment itself
    assert "approve K7P2" not in body and "approved by ana from slack" in body
    assert "https://github.com/acme/api/pull/3" in body and "succeeded in 3.0 s" in body
    assert "fix-auth-1a2b: succeeded" in body and "fix-auth-1a2b: running" not in body
    assert calls(github).count("GET") == 2  # listed once per process

    reply = await restarted.post(ISSUE, Message(key="reply:delivery-9", text="3 tasks running", kind="reply"))
    assert len(on(github)) == 2 and reply == str(github.comments[-1]["id"])
    assert not str(github.comments[-1]["body"]).startswith("<!--")


async def test_a_retry_after_a_crash_edits_the_comment_it_posted_and_never_posts_a_second(
    github: FakeGitHub, http: aiohttp.ClientSession
) -> None:
    first = GitHubChannel(GitHubAuth(http, base_url=github.base_url, token=TOKEN))
    await first.post(ISSUE, status("🏃 fix-auth-1a2b: running"))
    # the process died before the outbox recorded the comment: the row is delivered again, as a post
    again = GitHubChannel(GitHubAuth(http, base_url=github.base_url, token=TOKEN))
    await again.post(ISSUE, status("🏃 fix-auth-1a2b: running"))
    await again.post(ISSUE, status("⏳ other-task: queued", task="task-2"))
    assert len(on(github)) == 2  # one per task, none twice
    assert [str(c["body"]).split("\n", 1)[0] for c in on(github)] == [marker("task-1"), marker("task-2")]
    assert calls(github).count("PATCH") == 0  # the same news: nothing to edit


@pytest.mark.parametrize("status_code", [403, 429])
async def test_githubs_rate_limits_are_a_wait_for_the_outbox_and_the_row_is_kept(
    github: FakeGitHub, http: aiohttp.ClientSession, shepherd: Shepherd, status_code: int
) -> None:
    channel = GitHubChannel(GitHubAuth(http, base_url=github.base_url, token=TOKEN))
    github.secondary_rate_limit_next(status=status_code, retry_after=42)
    with pytest.raises(DeliveryError) as limited:
        await channel.post(ISSUE, Message(key="reply:1", text="hello", kind="reply"))
    assert limited.value.transient and limited.value.retry_after == 42.0 and TOKEN not in limited.value.message
    github.rate_limit_next()
    with pytest.raises(DeliveryError) as primary:
        await channel.post(ISSUE, Message(key="reply:1", text="hello", kind="reply"))
    assert primary.value.transient and (primary.value.retry_after or 0) > 0
    assert github.comments == []

    # through the outbox: the row waits for Retry-After, then goes out once
    async with shepherd.db.write() as session:
        thread = await bind_thread(session, "acme", "github", ISSUE, task_id="task-1")
        await enqueue(session, [thread], status("🏃 fix-auth-1a2b: running"))
    dispatcher = Dispatcher(shepherd, [channel])
    github.secondary_rate_limit_next(status=status_code, retry_after=42, method="POST")
    before = utcnow()
    await dispatcher.deliver_due()
    async with shepherd.db.read() as session:
        [row] = list(await session.exec(select(Outbox)))
    assert row.status == RowStatus.PENDING.value and row.attempts == 1 and "secondary rate limit" in str(row.last_error)
    assert row.next_at.replace(tzinfo=None) >= (before + timedelta(seconds=40)).replace(tzinfo=None)
    assert await dispatcher.deliver_due() == 0 and github.comments == []  # not before GitHub said
    async with shepherd.db.write() as session:
        await session.exec(update(Outbox).values(next_at=utcnow()))
    await dispatcher.deliver_due()
    async with shepherd.db.read() as session:
        [row] = list(await session.exec(select(Outbox).where(col(Outbox.id) == row.id)))
    assert row.status == RowStatus.SENT.value and len(on(github)) == 1


async def test_as_an_app_only_its_own_comment_is_taken_for_the_sticky_one_and_a_repository_it_cannot_reach_fails(
    github: FakeGitHub, http: aiohttp.ClientSession
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    github.install_app(9, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
                       slug="shepherd-ci", installations={5: ["acme/api"]})
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    # someone quoted the marker before Shepherd posted: theirs is not Shepherd's comment
    github.comments.append({"id": 1, "body": f"{marker('task-1')}\nfake", "issue": ISSUE,
                            "user": {"login": "mallory", "type": "User"}})
    channel = GitHubChannel(GitHubAuth(http, base_url=github.base_url, app=GitHubApp("9", pem)))
    ref = await channel.post(ISSUE, status("🏃 fix-auth-1a2b: running"))
    assert ref == "sticky:2" and github.comments[0]["body"] == f"{marker('task-1')}\nfake"
    assert github.comments[1]["user"] == {"login": "shepherd-ci[bot]", "type": "Bot"}
    with pytest.raises(DeliveryError) as unreachable:
        await channel.post("acme/elsewhere#1", Message(key="reply:2", text="hi", kind="reply"))
    assert not unreachable.value.transient and "not installed on acme/elsewhere" in unreachable.value.message
    with pytest.raises(DeliveryError) as bad:
        await channel.post("not an issue", Message(key="reply:3", text="hi", kind="reply"))
    assert not bad.value.transient


async def test_a_comment_forging_the_marker_is_not_taken_for_shepherds_when_its_login_cannot_be_read(
    github: FakeGitHub, http: aiohttp.ClientSession
) -> None:
    # someone's comment that looks like task-1's sticky comment, with a pending approval of their own in its state
    forged = Message(key="confirmation:evil", text="approve this", kind="confirmation", state="pending", code="ZZZZ",
                     task="task-1")
    state = base64.urlsafe_b64encode(json.dumps({forged.key: forged.to_json()}).encode()).decode()
    github.comments.append({"id": 900, "issue": ISSUE, "user": {"login": "mallory", "type": "User"},
                            "body": f"{marker('task-1')}\n\nhello\n\n<!-- shepherd:state {state} -->"})
    channel = GitHubChannel(GitHubAuth(http, base_url=github.base_url, token=TOKEN))
    github.fail_next(502, method="GET")  # who Shepherd is cannot be read just now
    with pytest.raises(DeliveryError) as failed:
        await channel.post(ISSUE, status("🏃 fix-auth-1a2b: running"))
    assert failed.value.transient  # the outbox tries again
    await channel.post(ISSUE, status("🏃 fix-auth-1a2b: running"))
    mine = [c for c in on(github) if c["user"]["login"] == github.token_login]  # type: ignore[index]
    assert len(mine) == 1 and "ZZZZ" not in str(mine[0]["body"])
