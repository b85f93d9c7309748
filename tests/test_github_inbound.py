"""GitHub in: signed deliveries of recorded payloads to POST /github/webhook of the real app, processed against
the loopback fake GitHub API (tests/fakes/github_api.py) through the real gidgethub client."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlmodel import func, select

from adapters.github.inbound import GitHubConfig
from bot.app import GITHUB, create_app
from bot.presets import agent_catalog
from core.autonomy.policy import PolicyStore
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Agent, Delivery, HeldRequest, Outbox, Task, Thread
from tests.fakes.github_api import FakeGitHub

CORPUS = Path(__file__).resolve().parent / "corpus" / "github-webhooks"  # tests/corpus/README.md
SECRET = "webhook-secret-for-tests"
TOKEN = "ghs_token_for_the_fake"


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def payload(event: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CORPUS / event / name).read_text())
    return data


@dataclass
class World:
    shepherd: Shepherd
    fake: FakeGitHub
    http: aiohttp.ClientSession
    url: str
    app: web.Application

    async def deliver(self, event: str, body: dict[str, Any] | bytes, *, delivery: str | None = None,
                      secret: str | None = SECRET, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", "X-GitHub-Event": event,
                "X-GitHub-Delivery": delivery or str(uuid.uuid4()), "User-Agent": "GitHub-Hookshot/test"}
        if secret is not None:
            sent["X-Hub-Signature-256"] = sign(raw, secret)
        sent.update(headers or {})
        async with self.http.post(f"{self.url}/github/webhook", data=raw, headers=sent) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text.startswith("{") else text)

    async def idle(self) -> None:
        await self.app[GITHUB].idle()
        await asyncio.sleep(0)

    async def count(self, model: Any, *where: Any) -> int:
        async with self.shepherd.db.read() as session:
            return int((await session.exec(select(func.count()).select_from(model).where(*where))).one())

    async def tasks(self) -> list[Task]:
        async with self.shepherd.db.read() as session:
            return list(await session.exec(select(Task).where(Task.org_id == "acme")))

    async def said(self, address: str) -> list[str]:
        """What Shepherd has queued to say on an issue or pull request (the outbox's GitHub rows)."""
        async with self.shepherd.db.read() as session:
            rows = await session.exec(select(Outbox).where(Outbox.channel == "github", Outbox.address == address))
            return [str(r.payload.get("text", "")) for r in rows]

    async def set_level(self, repo: str, level: int) -> None:
        project = await self.shepherd.projects.of_repo("acme", repo)
        async with self.shepherd.db.write() as session:
            agent = (await session.exec(select(Agent).where(Agent.project_id == project.id,
                                                            Agent.type == "project"))).one()
            agent.autonomy_level = level
            session.add(agent)


async def _world(tmp_path: Path, db_url: str, *, config: GitHubConfig | None) -> AsyncIterator[World]:
    async with FakeGitHub(token=TOKEN) as fake:
        db = Database(db_url)
        shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo",
                            workspace_root=tmp_path / "ws", policies=PolicyStore(tmp_path / "pol"))
        await shepherd.orgs.ensure("acme")
        if config is not None:
            config = GitHubConfig(**{**config.__dict__, "api_url": fake.base_url, "token": TOKEN})
        app = create_app(db_url, shepherd=shepherd, github=config)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        async with aiohttp.ClientSession() as http:
            yield World(shepherd, fake, http, f"http://127.0.0.1:{runner.addresses[0][1]}", app)
        await runner.cleanup()
        await db.dispose()


CONFIG = GitHubConfig(webhook_secret=SECRET, org_id="acme", trusted=frozenset({"release-bot[bot]"}),
                      admins=frozenset({"octo-admin"}))


@pytest.fixture
async def github(tmp_path: Path, db_url: str) -> AsyncIterator[World]:
    async for world in _world(tmp_path, db_url, config=CONFIG):
        yield world


def comment(body: str, *, login: str = "octocat", association: str = "OWNER", number: int = 7,
            comment_id: int = 1001, pull: bool = False, user_type: str = "User") -> dict[str, Any]:
    data = copy.deepcopy(payload("issue_comment", "created.payload.json"))
    data["repository"]["full_name"] = "acme/api"
    data["issue"].update(number=number, title="Auth test is flaky", body="It fails one run in ten.")
    if pull:
        data["issue"]["pull_request"] = {"url": "https://api.github.com/repos/acme/api/pulls/7"}
    else:
        data["issue"].pop("pull_request", None)
    data["comment"].update(id=comment_id, body=body, author_association=association,
                           user={"login": login, "type": user_type, "id": 5})
    return data


# --- ingest --------------------------------------------------------------------------------------------


async def test_every_corpus_payload_is_acknowledged_and_recorded_once(tmp_path: Path, sqlite_url: str) -> None:
    files = sorted(p for p in CORPUS.rglob("*.json"))
    assert len(files) >= 273
    async for world in _world(tmp_path, sqlite_url, config=CONFIG):
        statuses: dict[str, int] = {}
        for i, path in enumerate(files):
            event = path.parent.name
            status, _ = await world.deliver(event, path.read_bytes(), delivery=f"corpus-{i}")
            statuses[str(path.relative_to(CORPUS))] = status
        assert {k: s for k, s in statuses.items() if not 200 <= s < 300} == {}
        # a wrong signature, and a delivery signed with another secret: 401, nothing recorded
        status, body = await world.deliver("ping", files[0].read_bytes(), delivery="forged",
                                           secret="not-the-secret")
        assert status == 401 and "GITHUB_WEBHOOK_SECRET" in body["message"]
        await world.idle()
        assert await world.count(Delivery, Delivery.source == "github") == len(files)
        assert await world.count(Delivery, Delivery.key == "forged") == 0
        # redelivered: acknowledged, recorded once still
        status, body = await world.deliver("issues", (CORPUS / "issues" / "opened.payload.json").read_bytes(),
                                           delivery="corpus-0")
        assert status == 200 and body["processed"] is False
        assert await world.count(Delivery, Delivery.source == "github") == len(files)
        assert await world.count(Delivery, Delivery.source == "github", Delivery.status != "done") == 0


async def test_forged_unsigned_and_sha1_only_requests_are_refused_and_not_recorded(github: World) -> None:
    body = json.dumps(payload("ping", "payload.json")).encode()
    assert (await github.deliver("ping", body, secret=None))[0] == 401
    assert (await github.deliver("ping", body, secret="wrong"))[0] == 401
    sha1 = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    assert (await github.deliver("ping", body, secret=None, headers={"X-Hub-Signature": sha1}))[0] == 401
    assert (await github.deliver("ping", body, headers={"X-Hub-Signature-256": "sha256=00"}))[0] == 401
    assert await github.count(Delivery) == 0
    status, answer = await github.deliver("ping", body)
    assert status == 200 and answer["pong"] is True


async def test_bad_bodies_are_4xx_never_5xx(github: World) -> None:
    assert (await github.deliver("issues", b"not json"))[0] == 415
    assert (await github.deliver("issues", b"[1, 2]"))[0] == 400
    assert (await github.deliver("issues", b"{}", headers={"X-GitHub-Delivery": "bad delivery id!"}))[0] == 400
    assert (await github.deliver("issues", b"{}", headers={"Content-Type": "text/plain"}))[0] == 415
    assert await github.count(Delivery) == 0


async def test_a_large_payload_is_accepted(github: World) -> None:
    data = comment("a long comment without any command")
    data["issue"]["body"] = "x" * (3 * 1024 * 1024)  # past aiohttp's 1 MiB default
    status, _ = await github.deliver("issue_comment", data)
    assert status == 202


async def test_without_a_secret_the_route_names_the_setting(tmp_path: Path, sqlite_url: str) -> None:
    async for world in _world(tmp_path, sqlite_url, config=None):
        status, body = await world.deliver("ping", b"{}")
        assert status == 404 and "GITHUB_WEBHOOK_SECRET" in body["message"]


# --- comment commands ------------------------------------------------------------------------------------


async def test_a_trusted_comment_command_runs_once_with_the_issue_as_context(github: World) -> None:
    data = comment("Looks like a race.\n/shepherd fix the flaky test in auth\nthanks")
    status, _ = await github.deliver("issue_comment", data, delivery="d-fix")
    assert status == 202
    await github.idle()
    [task] = await github.tasks()
    assert task.prompt.startswith("fix the flaky test in auth")
    assert "acme/api#7: Auth test is flaky" in task.prompt and "one run in ten" in task.prompt
    assert task.repo == "acme/api"
    assert await github.count(Thread, Thread.channel == "github", Thread.address == "acme/api#7",
                              Thread.task_id == task.id) == 1
    assert [r["content"] for r in github.fake.reactions] == ["eyes"]
    assert github.fake.reactions[0]["path"] == "/repos/acme/api/issues/comments/1001/reactions"
    assert any("started task" in text for text in await github.said("acme/api#7"))
    # the repository became a project, with its project agent at level 1
    project = await github.shepherd.projects.of_repo("acme", "acme/api")
    assert task.project_id == project.id and project.name == "api"
    assert await github.shepherd.projects.agent_level("acme", project.id) == 1
    # redelivered: nothing more
    status, body = await github.deliver("issue_comment", data, delivery="d-fix")
    assert status == 200 and body["processed"] is False
    await github.idle()
    assert len(await github.tasks()) == 1


async def test_a_grammar_word_is_a_command_not_a_run(github: World) -> None:
    await github.deliver("issue_comment", comment("@shepherd status"))
    await github.idle()
    assert await github.tasks() == []
    said = await github.said("acme/api#7")
    assert len(said) == 1 and "tasks" in said[0].lower()


async def test_comments_that_are_not_commands_do_nothing(github: World) -> None:
    for body in ("I asked /shepherd fix this yesterday", "/shepherdess fix it", "@shepherd-bot fix it",
                 "no command at all"):
        await github.deliver("issue_comment", comment(body))
    # Shepherd's own comment, quoting a command
    await github.deliver("issue_comment", comment("/shepherd fix it", login="shepherd-bot"))
    # an edit of a command is not run again
    edited = comment("/shepherd fix it")
    edited["action"] = "edited"
    await github.deliver("issue_comment", edited)
    await github.idle()
    assert await github.tasks() == []
    assert github.fake.reactions == []
    assert await github.said("acme/api#7") == []


async def test_an_untrusted_author_is_held_until_a_maintainer_says_ok_to_run(github: World) -> None:
    await github.deliver("issue_comment", comment("/shepherd fix the docs", login="drive-by",
                                                  association="CONTRIBUTOR", comment_id=2001))
    await github.idle()
    assert await github.tasks() == []
    said = await github.said("acme/api#7")
    assert len(said) == 1 and "/shepherd ok-to-run" in said[0]
    assert await github.count(HeldRequest) == 1
    # a bot is not answered at all, an allowlisted bot is trusted
    await github.deliver("issue_comment", comment("/shepherd fix it", login="spam[bot]", association="NONE",
                                                  user_type="Bot"))
    await github.idle()
    assert len(await github.said("acme/api#7")) == 1
    # the maintainer's ok-to-run starts what was held, once
    await github.deliver("issue_comment", comment("/shepherd ok-to-run", login="octocat", comment_id=2002))
    await github.idle()
    [task] = await github.tasks()
    assert task.prompt.startswith("fix the docs")
    await github.deliver("issue_comment", comment("/shepherd ok-to-run", login="octocat", comment_id=2003))
    await github.idle()
    assert len(await github.tasks()) == 1


async def test_write_permission_trusts_an_outside_collaborator(github: World) -> None:
    github.fake.permissions[("acme/api", "outsider")] = "write"
    await github.deliver("issue_comment", comment("/shepherd add a test", login="outsider",
                                                  association="CONTRIBUTOR"))
    github.fake.permissions[("acme/api", "reader")] = "read"
    await github.deliver("issue_comment", comment("/shepherd add a test", login="reader", association="NONE"))
    await github.idle()
    assert [t.owner_name for t in await github.tasks()] == ["outsider"]


async def test_a_failed_reaction_does_not_fail_the_command(github: World) -> None:
    github.fake.fail_next(502, method="POST")
    await github.deliver("issue_comment", comment("/shepherd fix it"))
    await github.idle()
    assert len(await github.tasks()) == 1


async def test_a_review_comment_brings_its_file_and_line_and_a_same_repo_pr_its_branch(github: World) -> None:
    data = copy.deepcopy(payload("pull_request_review_comment", "created.payload.json"))
    data["repository"]["full_name"] = "acme/api"
    data["pull_request"]["head"]["repo"]["full_name"] = "acme/api"
    data["comment"]["body"] = "/shepherd use a constant here"
    await github.deliver("pull_request_review_comment", data)
    await github.idle()
    [task] = await github.tasks()
    assert "README.md, line 265" in task.prompt
    assert task.base_branch == data["pull_request"]["head"]["ref"]
    assert github.fake.reactions[0]["path"].startswith("/repos/acme/api/pulls/comments/")


# --- triggers ------------------------------------------------------------------------------------------


def failed_check(sha: str, *, conclusion: str = "failure", branch: str = "changes") -> dict[str, Any]:
    data = copy.deepcopy(payload("check_run", "completed.payload.json"))
    data["repository"]["full_name"] = "acme/api"
    data["check_run"].update(conclusion=conclusion, head_sha=sha,
                             output={"title": "2 tests failed", "summary": "test_auth timed out"})
    data["check_run"]["check_suite"]["head_branch"] = branch
    return data


async def test_a_failed_check_starts_one_incident_per_head_sha_at_a_level_that_allows_it(github: World) -> None:
    await github.set_level("acme/api", 3)
    await github.deliver("check_run", failed_check("a" * 40))
    await github.deliver("check_run", failed_check("a" * 40))  # another check of the same commit
    await github.deliver("check_run", failed_check("b" * 40, conclusion="success"))
    await github.deliver("check_run", failed_check("c" * 40, branch="shepherd/fix-auth-1a2b"))  # no loops
    await github.idle()
    [task] = await github.tasks()
    assert "Octocoders-linter" in task.prompt and "test_auth timed out" in task.prompt


async def test_a_trigger_at_level_one_asks_instead_of_starting(github: World) -> None:
    await github.deliver("check_run", failed_check("d" * 40))
    await github.idle()
    [task] = await github.tasks()
    assert task.status == "awaiting" and task.turns == 0  # waits for `approve CODE` (tests/test_github_gates.py)
    said = await github.said("acme/api#2")
    assert any("level 1" in text and "/shepherd approve" in text for text in said)


async def test_the_label_starts_a_task_on_the_issue(github: World) -> None:
    await github.set_level("acme/api", 3)
    data = copy.deepcopy(payload("issues", "labeled.payload.json"))
    data["repository"]["full_name"] = "acme/api"
    data["issue"].update(number=12, title="Crash on empty input", body="Steps: send nothing")
    data["label"]["name"] = "other"
    await github.deliver("issues", data)
    data["label"]["name"] = "shepherd"
    await github.deliver("issues", data)
    await github.idle()
    [task] = await github.tasks()
    assert "acme/api#12: Crash on empty input" in task.prompt and "Steps: send nothing" in task.prompt
