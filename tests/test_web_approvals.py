"""The approvals page in a real Chromium: a demo task on a GitHub-shaped repository waits for `pr.open`, is approved
from the page and goes on to open its pull request on the loopback GitHub; a decision made elsewhere and a new prompt
show up without a reload; the page at phone width; CSRF, a viewer and another org refused."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import expect

from adapters.deploy.hook import HttpDeployHook
from adapters.github.auth import GitHubAuth
from adapters.github.forge import GitHubForge
from adapters.web.approvals import fingerprint
from bot.presets import agent_catalog
from core.autonomy.actions import ActionsConfig, Executor
from core.autonomy.confirmations import Confirmation
from core.autonomy.plans import Plan, Status, Target
from core.people.access import Principal, Role
from core.shepherd import Shepherd
from core.store.db import Database
from tests.browser import UiRig, served_ui
from tests.conftest import person
from tests.fakes.github_api import FakeGitHub
from tests.gitrepos import github_host

GH_TOKEN = "ghs_test_token_for_the_fake"
OLGA = person(Role.OPERATOR, name="olga")  # asks for actions, may not decide them
BO = person(Role.APPROVER, name="bo")


class GitHubUi:
    def __init__(self, rig: UiRig, github: FakeGitHub) -> None:
        self.rig, self.github = rig, github

    def pull_posts(self) -> list[dict[str, Any]]:
        return [r.body for r in self.github.requests if r.method == "POST" and r.path.endswith("/pulls")]


pytestmark = pytest.mark.asyncio(loop_scope="session")  # the browser is the session's (tests/browser.py)


@pytest_asyncio.fixture(loop_scope="session")
async def gh(sqlite_url: str, tmp_path: Path, chromium: Any) -> AsyncIterator[GitHubUi]:
    """The dashboard over a runner whose approved actions push to a local bare `acme/api` and open pull requests
    on the fake GitHub API, as tests/test_autonomy.py's world does."""
    hosts = github_host(tmp_path)
    github = FakeGitHub(token=GH_TOKEN, git_root=hosts)
    base_url = await github.start()
    http = aiohttp.ClientSession()
    executor = Executor(ActionsConfig(git_base_url=str(hosts)),
                        GitHubForge(GitHubAuth(http, token=GH_TOKEN, base_url=base_url)), HttpDeployHook(http))
    try:
        async with served_ui(sqlite_url, tmp_path, chromium, executor=executor,
                             runner_kw={"git_base_url": str(hosts), "idle_timeout_s": 5}) as rig:
            yield GitHubUi(rig, github)
    finally:
        await http.close()
        await github.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def quiet(sqlite_url: str, tmp_path: Path, chromium: Any) -> AsyncIterator[UiRig]:
    """The dashboard without a runner: confirmations asked by hand need none."""
    async with served_ui(sqlite_url, tmp_path, chromium, runner=False) as rig:
        yield rig


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 30, what: str = "") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def ask(ui: UiRig | Shepherd, org: str = "acme", branch: str = "feature", action: str = "pr.open",
              pending: bool = True) -> Confirmation:
    """A `pr.open` (or `action`) asked by hand (no task) by an operator, as a command would: pending at level 1."""
    shepherd = ui.shepherd if isinstance(ui, UiRig) else ui
    who = person(Role.OPERATOR, org=org, name=OLGA.name)
    plan = Plan(action=action, summary=f"{action} from {branch}",
                target=Target(repo="acme/api", branch=branch, base="main", head="a" * 40))
    gate = await shepherd.confirmations.request(who, plan, task=None, agent=None, project_id=None)
    assert (gate.confirmation.status == Status.PENDING) is pending
    return gate.confirmation


@pytest.mark.asyncio(loop_scope="function")  # a core test, in a loop of its own
async def test_the_board_holds_what_waits_oldest_first_and_peoples_last_decisions_with_their_votes(
        db_url: str, tmp_path: Path) -> None:
    db = Database(db_url)
    shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo", workspace_root=tmp_path / "ws")
    try:
        for org in ("acme", "globex"):
            await shepherd.orgs.ensure(org)
        first = await ask(shepherd, branch="one")
        critical = await ask(shepherd, branch="two", action="deploy.production")  # two approvals needed
        rejected = await ask(shepherd, branch="three")
        await ask(shepherd, action="status", pending=False)  # the policy's own decision: nobody waited for it
        await ask(shepherd, org="globex")
        await shepherd.confirmations.vote(BO, critical.code, approve=True, comment="one of two")
        await shepherd.confirmations.vote(BO, rejected.code, approve=False, comment="no")

        board = await shepherd.approval_boards.of(person(Role.VIEWER))
        assert [c.code for c in board.pending] == [first.code, critical.code]
        assert board.pending[1].approvals == 1 and board.pending[1].quorum == 2
        assert [(v.voter_name, v.approve, v.comment) for v in board.votes[critical.id]] == [("bo", True, "one of two")]
        assert [c.code for c in board.decided] == [rejected.code]
        assert [(v.voter_name, v.approve) for v in board.votes[rejected.id]] == [("bo", False)]
        assert (await shepherd.approval_boards.of(person(Role.VIEWER), decided=0)).decided == []
        assert fingerprint(board) != fingerprint(await shepherd.approval_boards.of(person(Role.VIEWER), decided=0))
    finally:
        await db.dispose()


async def next_event(live: aiohttp.ClientResponse) -> str:
    """The next event of a live stream, past its heartbeats (`: keep-alive`, sent while a slow poll runs)."""
    while True:
        chunk = (await live.content.readuntil(b"\n\n")).decode()
        if not chunk.startswith(":"):
            return chunk


async def cookie_of(page: Any) -> dict[str, str]:
    return {c["name"]: c["value"] for c in await page.context.cookies() if c["name"] == "shepherd_session"}


async def csrf_of(page: Any) -> str:
    return str(await page.locator("input[name=_csrf]").first.get_attribute("value"))


async def test_approving_a_pull_request_from_the_page_lets_the_task_open_it(gh: GitHubUi) -> None:
    ui = gh.rig
    ana = await ui.shepherd.tokens.authenticate(ui.token)
    await ui.sign_in()
    page = ui.page
    await page.goto(ui.url("/ui/approvals"))
    await page.locator("[data-live-state=open]").wait_for()
    assert await page.get_by_role("heading", level=1).inner_text() == "Approvals 0 pending"

    view = await ui.shepherd.tasks.create(ana, prompt="add a greeting to the README", runtime="demo",
                                          repo="acme/api", level=1)
    task = view.task
    # the turn ends with changes; Shepherd asks before the pull request, and the open page shows it by itself
    card = page.locator(".approval")
    await card.wait_for()
    [conf] = await ui.shepherd.confirmations.pending(ana, task_id=task.id)
    assert (conf.action, conf.quorum) == ("pr.open", 1)
    text = await card.inner_text()
    assert conf.code in text and "medium risk" in text and "open a pull request on acme/api" in text
    assert "0 of 1 approval, no vote yet" in text and task.name in text
    assert await page.title() == "Approvals (1 pending) · Shepherd"
    assert gh.pull_posts() == []
    await ui.screenshot("approvals")

    await page.get_by_label(f"Comment for {conf.code} (optional)").fill("looks right")
    await page.get_by_role("button", name=f"Approve {conf.code}").click()
    await page.wait_for_url(re.compile(r".*/ui/approvals\?voted=" + conf.code))
    assert f"approved by {ana.name} from web" in await page.get_by_role("status").inner_text()
    assert await page.locator(".approval").count() == 0

    # the task goes on: Shepherd pushes its branch and opens the pull request on (the fake) GitHub
    done = await eventually(lambda: _finished(ui, ana, task.id), what="the task to finish")
    assert (done.status, done.outcome) == ("completed", "succeeded"), done.evidence
    [pr] = gh.pull_posts()
    assert pr["head"] == f"shepherd/{task.name}" and pr["title"] == "add a greeting to the README"
    row = page.locator(f"#decided-{conf.code}")
    await expect(row).to_contain_text("pull request #1 opened", timeout=15_000)  # shown live as the action ends
    decided = await row.inner_text()
    assert "approved" in decided and ana.name in decided and "web" in decided
    vote = (await ui.shepherd.approval_boards.of(ana)).votes[conf.id][0]
    assert (vote.voter_name, vote.via, vote.comment) == (ana.name, "web", "looks right")

    # every link on the page answers, none with a 5xx (the task's page included)
    await _links_answer(ui, page)
    # and the task's own page shows the pull request its approval opened
    await page.goto(ui.url(f"/ui/tasks/{task.id}"))
    await expect(page.locator("main")).to_contain_text("pull request #1")


async def _finished(ui: UiRig, who: Principal, task_id: str) -> Any:
    task = await ui.shepherd.tasks.get(who, task_id)
    return task if task.outcome is not None else None


async def _links_answer(ui: UiRig, page: Any) -> None:
    hrefs = set(await page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))"))
    assert hrefs
    async with aiohttp.ClientSession(cookies=await cookie_of(page)) as http:
        for href in sorted(hrefs):
            if href.startswith("#"):
                continue
            async with http.get(ui.url(href) if href.startswith("/") else href, allow_redirects=False) as resp:
                assert resp.status < 500, (href, resp.status)


async def test_decisions_and_prompts_from_elsewhere_show_without_a_reload_also_on_a_phone(quiet: UiRig) -> None:
    ui = quiet
    first, second = await ask(ui, branch="one"), await ask(ui, branch="two")
    await ui.sign_in()
    page = ui.page
    await page.goto(ui.url("/ui/approvals"))
    await page.locator("[data-live-state=open]").wait_for()
    cards = page.locator(".approval")
    assert [c.split()[0] for c in await cards.all_inner_texts()] == [first.code, second.code]  # oldest first
    # someone starts typing a reason on the page while a decision comes from elsewhere
    await page.get_by_label(f"Reason to reject {second.code}").fill("half typed")

    await ui.shepherd.confirmations.vote(BO, first.code, approve=False, comment="not before the release")
    await page.locator(f"#approval-{first.code}").wait_for(state="detached")
    decided = await page.locator(f"#decided-{first.code}").inner_text()
    assert "rejected" in decided and "bo" in decided and "test" in decided and "not before the release" in decided
    assert await page.get_by_role("heading", level=1).inner_text() == "Approvals 1 pending"
    assert await page.title() == "Approvals (1 pending) · Shepherd"
    # the same page, not a new one: what was typed is still there
    assert await page.get_by_label(f"Reason to reject {second.code}").input_value() == "half typed"

    third = await ask(ui, branch="three")  # a new prompt appears by itself
    await page.locator(f"#approval-{third.code}").wait_for()
    await page.locator(f"#approval-{second.code}").wait_for()

    # the approver on the go: a phone's width, cards whose buttons fill the width and are easy to tap
    phone = await ui.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    await ui.sign_in(page=phone)
    await phone.goto(ui.url("/ui/approvals"))
    button = phone.get_by_role("button", name=f"Approve {second.code}")
    box = await button.bounding_box()
    assert box is not None and box["height"] >= 44 and box["width"] >= 300
    width = await phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing sticks out sideways
    await ui.screenshot("approvals-phone", page=phone)
    await phone.get_by_label(f"Reason to reject {second.code}").fill("wrong branch")
    await phone.get_by_role("button", name=f"Reject {second.code}").tap()
    await phone.wait_for_url(re.compile(r".*voted=" + second.code))
    assert "rejected by ana from web" in await phone.get_by_role("status").inner_text()
    # and the desktop page learns it too
    await page.locator(f"#approval-{second.code}").wait_for(state="detached")


async def test_csrf_a_viewer_and_another_org_are_refused_and_nothing_is_decided(quiet: UiRig) -> None:
    ui = quiet
    conf = await ask(ui)
    theirs = await ask(ui, org="globex")
    await ui.sign_in()
    await ui.page.goto(ui.url("/ui/approvals"))
    csrf = await csrf_of(ui.page)
    async with aiohttp.ClientSession(cookies=await cookie_of(ui.page)) as http:
        # no CSRF token (another site's form): refused, still pending
        async with http.post(ui.url(f"/ui/approvals/{conf.code}/approve"), data={"comment": "x"},
                             allow_redirects=False) as resp:
            assert resp.status == 403 and "CSRF" in await resp.text()
        # another org's confirmation, by code or id, and one that does not exist: not found
        for ref in (theirs.code, theirs.id, "ZZZZ"):
            async with http.post(ui.url(f"/ui/approvals/{ref}/approve"), data={"_csrf": csrf},
                                 allow_redirects=False) as resp:
                assert resp.status == 404 and "no confirmation" in await resp.text(), ref
        async with http.post(ui.url(f"/ui/approvals/{conf.code}/reject"), data={"_csrf": csrf, "reason": "no"},
                             allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == f"/ui/approvals?voted={conf.code}"
        # approving what was just rejected: core says why, as a page (409), not an error
        async with http.post(ui.url(f"/ui/approvals/{conf.code}/approve"), data={"_csrf": csrf},
                             allow_redirects=False) as resp:
            assert resp.status == 409 and f"cannot approve {conf.code}" in await resp.text()
    assert (await ui.shepherd.confirmations.get(OLGA, conf.id)).status == "rejected"
    globex = person(Role.ADMIN, org="globex")
    assert (await ui.shepherd.confirmations.get(globex, theirs.id)).status == "pending"

    # a page that reconnects says what it saw last (Last-Event-ID): it is sent the board only once it changed
    seen = fingerprint(await ui.shepherd.approval_boards.of(await ui.shepherd.tokens.authenticate(ui.token)))
    async with aiohttp.ClientSession(cookies=await cookie_of(ui.page)) as http, http.get(
            ui.url("/ui/approvals/live"), headers={"Last-Event-ID": seen}) as live:
        late = await ask(ui, branch="late")
        event = await next_event(live)
        assert "event: replace" in event and late.code in event and f"id: {seen}" not in event

    # the live stream of a session that signs out ends: it shows nothing more
    async with aiohttp.ClientSession(cookies=await cookie_of(ui.page)) as http, http.get(
            ui.url("/ui/approvals/live")) as live:
        assert live.status == 200 and live.headers["Content-Type"].startswith("text/event-stream")
        first_event = await next_event(live)
        assert "event: replace" in first_event  # no ?seen=: the board at once
        await ui.page.get_by_role("button", name="Sign out").click()
        rest = await asyncio.wait_for(live.content.read(), timeout=15)  # the stream ends by itself
        assert b"event: end" in rest and b"event: replace" not in rest

    # a viewer sees what waits but no buttons; a forged vote of theirs is refused by core
    other = await ask(ui, branch="other")
    viewer = await ui.shepherd.tokens.create(org_id="acme", user="vic", scopes="read")
    page = await ui.new_page()
    await ui.sign_in(viewer.secret, page=page)
    await page.goto(ui.url("/ui/approvals"))
    assert other.code in await page.locator(f"#approval-{other.code}").inner_text()
    assert await page.get_by_role("button", name=re.compile("Approve|Reject")).count() == 0
    async with aiohttp.ClientSession(cookies=await cookie_of(page)) as http, http.post(
            ui.url(f"/ui/approvals/{other.code}/approve"), data={"_csrf": await csrf_of(page)},
            allow_redirects=False) as resp:
        assert resp.status == 403 and "approve" in await resp.text()
    assert (await ui.shepherd.confirmations.get(OLGA, other.id)).status == "pending"
    await _links_answer(ui, page)


async def test_a_live_board_follows_a_role_lowered_while_the_page_is_open(quiet: UiRig) -> None:
    ui = quiet
    first = await ask(ui)
    cy = await ui.shepherd.tokens.create(org_id="acme", user="cy", scopes="read,write,approve")
    await ui.sign_in(cy.secret)
    seen = fingerprint(await ui.shepherd.approval_boards.of(await ui.shepherd.tokens.authenticate(cy.secret)))
    async with aiohttp.ClientSession(cookies=await cookie_of(ui.page)) as http, http.get(
            ui.url(f"/ui/approvals/live?seen={seen}")) as live:
        await ui.shepherd.users.set_role(person(Role.ADMIN), "cy", Role.VIEWER)
        later = await ask(ui, branch="later")
        event = await next_event(live)
    # the new board shows both, and no buttons the viewer cy now is could not use
    assert "event: replace" in event and first.code in event and later.code in event
    assert "/approve" not in event and "/reject" not in event
