"""GitHub as a new user meets it (issue 14's acceptance): `shepherd serve` started with the GitHub variables, a
signed `/shepherd fix …` comment from a trusted author, and what appears on GitHub (the loopback fake, with a git
host behind it): the eyes reaction, one progress comment edited in place, the pull request waiting for
`/shepherd approve CODE` at level 1, then opened and linked; a redelivery does nothing; an outsider's comment runs
nothing and gets the ok-to-run hint."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from tests.fakes.github_api import FakeGitHub
from tests.gitrepos import github_host
from tests.procs import Home, stop

SECRET = "webhook-secret-cli"
TOKEN = "ghp_cli_token"
MARKER = re.compile(r"<!-- shepherd:task:(\S+) -->")


def _comment(body: str, *, login: str, association: str, comment_id: int) -> dict[str, Any]:
    corpus = Path(__file__).resolve().parent / "corpus" / "github-webhooks" / "issue_comment"
    data: dict[str, Any] = json.loads((corpus / "created.payload.json").read_text())
    data["repository"].update(full_name="acme/api", name="api", default_branch="main",
                              owner={**data["repository"]["owner"], "login": "acme"})
    data["issue"].update(number=12, title="Greeting missing", body="The README should greet people.")
    data["issue"].pop("pull_request", None)
    data["comment"].update(id=comment_id, body=body, author_association=association,
                           user={"login": login, "type": "User", "id": comment_id})
    return data


def _deliver(home: Home, event: str, data: dict[str, Any], delivery: str) -> tuple[int, str]:
    raw = json.dumps(data).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{home.port}/github/webhook", data=raw, method="POST",
        headers={"Content-Type": "application/json", "X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
                 "User-Agent": "GitHub-Hookshot/cli", "X-Hub-Signature-256":
                 "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(resp.status), resp.read().decode()


async def _until(check: Any, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("not seen in time")
        await asyncio.sleep(0.1)


def _sticky(fake: FakeGitHub) -> list[dict[str, Any]]:
    return [c for c in fake.comments if MARKER.search(str(c.get("body", "")))]


async def test_a_comment_command_runs_a_task_reported_in_one_comment_and_its_pull_request_waits_for_approval(
    tmp_path: Path,
) -> None:
    hosts = github_host(tmp_path)
    async with FakeGitHub(TOKEN, git_root=hosts) as fake:
        fake.permissions[("acme/api", "drive-by")] = "read"
        (tmp_path / "home").mkdir()
        home = Home(tmp_path / "home", GITHUB_WEBHOOK_SECRET=SECRET, SHEPHERD_GITHUB_TOKEN=TOKEN,
                    SHEPHERD_GITHUB_API_URL=fake.base_url, SHEPHERD_GIT_BASE_URL=str(hosts),
                    SHEPHERD_ORG="acme", SHEPHERD_DEFAULT_AGENT="demo", SHEPHERD_ADMINS="github:octocat",
                    SHEPHERD_TASK_IDLE_TIMEOUT="5")
        server = await asyncio.to_thread(home.start, "serve")
        try:
            delivery = str(uuid.uuid4())
            fix = _comment("/shepherd fix the greeting in the README", login="octocat", association="OWNER",
                           comment_id=501)
            status, _ = await asyncio.to_thread(_deliver, home, "issue_comment", fix, delivery)
            assert status == 202
            await _until(lambda: any(r["content"] == "eyes" for r in fake.reactions), timeout=20)

            # one comment, edited as the agent works, until it shows the pull request waiting for approval
            def waiting() -> str | None:
                for c in _sticky(fake):
                    found = re.search(r"/shepherd approve (\w{4})", str(c["body"]))
                    if found:
                        return found.group(1)
                return None

            await _until(lambda: waiting() is not None, timeout=60)
            code = waiting()
            assert len(_sticky(fake)) == 1 and not fake.pulls, "one progress comment, and no pull request yet"

            # the same delivery again does nothing: no second task, reaction or comment
            reactions, comments = len(fake.reactions), len(fake.comments)
            status, _ = await asyncio.to_thread(_deliver, home, "issue_comment", fix, delivery)
            assert status in (200, 202)

            # an outsider's command runs nothing and gets the hint
            outsider = _comment("/shepherd delete everything", login="drive-by", association="NONE",
                                comment_id=502)
            await asyncio.to_thread(_deliver, home, "issue_comment", outsider, str(uuid.uuid4()))
            await _until(lambda: any("ok-to-run" in str(c.get("body", "")) for c in fake.comments),
                                timeout=20)

            # the approver decides from GitHub: the pull request opens and the progress comment links it
            approve = _comment(f"/shepherd approve {code}", login="octocat", association="OWNER", comment_id=503)
            await asyncio.to_thread(_deliver, home, "issue_comment", approve, str(uuid.uuid4()))
            await _until(lambda: ("acme/api", 1) in fake.pulls, timeout=60)
            await _until(lambda: any("/pull/1" in str(c["body"]) for c in _sticky(fake)), timeout=30)
            assert len(_sticky(fake)) == 1, "the progress comment is edited in place, not posted again"
            assert [r for r in fake.requests if r.method == "PATCH" and "/issues/comments/" in r.path]
            assert len(fake.reactions) == reactions + 1  # the approval's eyes; the redelivery added none
            assert len([p for p in fake.pulls if p[0] == "acme/api"]) == 1
            assert len(fake.comments) >= comments
            tasks = await asyncio.to_thread(home.run, "console", "-c", "tasks")
            listed = [line for line in tasks.stdout.splitlines() if line.startswith("task-")]
            assert len(listed) == 1 and "succeeded" in listed[0], tasks.stdout  # one task, though delivered twice
        finally:
            log = await asyncio.to_thread(stop, server)
        assert "Traceback" not in log, log
        assert TOKEN not in log
