"""The dashboard's overview in a real Chromium: counts by state, what waits for people (oldest first), the running
tasks with their latest line, and today's outcomes as a chart that says its numbers in words too."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from sqlmodel import col, update

from core.clock import utcnow
from core.people.access import Principal, Role
from core.shepherd import Shepherd
from core.store.models import Task, TaskLog
from tests.browser import UiRig
from tests.test_confirmations import ALICE, BOB, gate, pr_plan, started_task

ANA = Principal.for_role("acme", "ana", Role.ADMIN, "test", user_id="user-ana")

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the browser is the session's (tests/browser.py)


async def _set(ui: UiRig, task_id: str, **values: Any) -> None:
    async with ui.shepherd.db.write() as session:
        await session.exec(update(Task).where(col(Task.id) == task_id).values(**values))


async def _finished(ui: UiRig, status: str, outcome: str, state: str, *, days_ago: int = 0) -> None:
    task = await started_task(ui.shepherd, ALICE, status=status)
    await _set(ui, task.id, outcome=outcome, state=state, finished_at=utcnow() - timedelta(days=days_ago))


async def _running(ui: UiRig, prompt: str = "watch the build [long 30] [noedit]") -> Task:
    task = (await ui.shepherd.tasks.create(ANA, prompt=prompt, runtime="demo")).task
    for _ in range(300):
        task = await ui.shepherd.tasks.get(ANA, task.id)
        if task.status == "running" and task.log_count > 0:
            return task
        await asyncio.sleep(0.05)
    raise AssertionError(f"the demo task did not start: {task.status} {task.state_message}")


async def _card(page: Any, where: str, name: str) -> str:
    """A count card's words, as read aloud: `3 failed`."""
    text = await page.locator(f"{where} li", has_text=re.compile(rf"^\s*\d+\s+{name}\s*$")).inner_text()
    return " ".join(text.split())


async def links_answer(ui: UiRig, page: Any) -> list[str]:
    """Every link on the page, fetched with the page's session: none answers 5xx. Returns the hrefs."""
    hrefs: list[str] = await page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
    cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
    async with aiohttp.ClientSession(cookies=cookies) as http:
        for href in set(hrefs):
            url = href if href.startswith("http") else ui.url(href if href.startswith("/") else "/ui/" + href)
            if href.startswith("#"):
                continue
            async with http.get(url, allow_redirects=False) as resp:
                assert resp.status < 500, (href, resp.status)
    return hrefs


async def test_the_overview_shows_counts_what_waits_what_runs_and_todays_outcomes(ui: UiRig) -> None:
    sleepy = (await ui.shepherd.agents.create(ANA, name="sleepy", type="review")).agent
    await ui.shepherd.agents.act(ANA, sleepy.id, "suspend")
    gated = await started_task(ui.shepherd, ALICE)  # awaiting its pull request's confirmation
    conf = await gate(ui.shepherd, gated, pr_plan())
    asking = await started_task(ui.shepherd, ALICE, status="completed")  # its turn ended on a question
    await _set(ui, asking.id, state_message="Which database should the tests use?",
               state_at=utcnow() - timedelta(hours=1))
    await _finished(ui, "completed", "succeeded", "complete")
    await _finished(ui, "failed", "failed", "failed")
    await _finished(ui, "failed", "denied", "failed")
    await _finished(ui, "failed", "failed", "failed", days_ago=2)  # not today's
    running = await _running(ui)

    await ui.sign_in()
    page = ui.page
    assert await _card(page, "#task-counts", "running") == "1 running"
    assert await _card(page, "#task-counts", "awaiting") == "1 awaiting"
    assert await _card(page, "#task-counts", "failed") == "3 failed"
    assert await _card(page, "#agent-counts", "suspended") == "1 suspended"

    # what waits, oldest first: the question asked an hour ago, then the confirmation, with its expiry
    rows = page.locator("#waiting tbody tr")
    assert await rows.count() == 2
    first, second = await rows.nth(0).inner_text(), await rows.nth(1).inner_text()
    assert asking.name in first and "Which database should the tests use?" in first and "1 h ago" in first
    assert f"Confirmation {conf.code}" in second and "open a pull request" in second
    assert re.search(r"in \d+ (min|h|d)", second)  # when it expires
    assert await rows.nth(1).get_by_role("link").get_attribute("href") == "/ui/approvals"

    # the running task with its latest line, linking to its page
    item = page.locator("#running li", has_text=running.name)
    assert re.search(r"tick \d+", await item.locator(".latest").inner_text())
    assert await item.get_by_role("link", name=running.name).get_attribute("href") == f"/ui/tasks/{running.id}"

    # today's outcomes: the chart's title and labels carry the numbers; the hidden table says them too
    title = await page.locator("#outcomes-chart title").text_content()
    assert title is not None and "succeeded 1" in title and "failed 1" in title and "denied 1" in title
    assert "cancelled 0" in title
    labels = await page.locator("#outcomes-chart text").all_text_contents()
    assert labels[:6] == ["succeeded", "1", "failed", "1", "timed out", "0"]
    table = page.locator("#outcomes-table")
    assert await table.locator("tr", has_text="denied").locator("td").text_content() == "1"
    assert "3 finished" in await page.get_by_role("heading", name=re.compile("Today's outcomes")).inner_text()
    await ui.screenshot("overview")

    hrefs = await links_answer(ui, page)
    assert f"/ui/tasks/{running.id}" in hrefs and "/ui/approvals" in hrefs

    # live: a confirmation asked now shows up without a reload (the page's own state survives)
    await page.evaluate("window.notReloaded = true")
    later = await gate(ui.shepherd, await started_task(ui.shepherd, ALICE), pr_plan("b" * 40))
    await page.locator("#waiting tbody tr", has_text=f"Confirmation {later.code}").wait_for()
    assert await page.evaluate("window.notReloaded === true")
    assert await page.locator("#waiting tbody tr").count() == 3


async def test_the_overview_fits_a_phone_and_says_when_nothing_waits(ui: UiRig) -> None:
    phone = await ui.new_page(viewport={"width": 390, "height": 844})
    await ui.sign_in(page=phone)
    running = await _running(ui, "rebuild-the-whole-monorepo-with-every-integration-check " * 3 + "[long 30] [noedit]")
    await phone.reload()
    assert running.name in await phone.locator("#running").inner_text()
    assert "Nothing waits for people." in await phone.locator("main").inner_text()
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 390


@pytest.mark.asyncio(loop_scope="function")  # a core test: the `shepherd` fixture lives in its own loop
async def test_the_board_reads_what_waits_runs_and_finished_today_and_hides_others_private_work(
        shepherd: Shepherd) -> None:
    """The core read behind the page, on both stores: oldest first, the latest output line (not an input), today
    only, and a private session's work absent for anyone but its owner and admins."""
    private = await shepherd.sessions.create(ALICE, task="secret work", visibility="private", start=False)
    hidden = await started_task(shepherd, ALICE)
    async with shepherd.db.write() as session:
        await session.exec(update(Task).where(col(Task.id) == hidden.id).values(session_id=private.id))
    secret = await gate(shepherd, hidden, pr_plan())
    shown = await gate(shepherd, await started_task(shepherd, ALICE), pr_plan("c" * 40))
    busy = (await shepherd.tasks.create(ALICE, prompt="work", runtime="demo")).task
    now = utcnow()
    async with shepherd.db.write() as session:
        await session.exec(update(Task).where(col(Task.id) == busy.id).values(status="running", state="working"))
        session.add(TaskLog(task_id=busy.id, type="output", content="first\nsecond\n", time=now))
        session.add(TaskLog(task_id=busy.id, type="input", content="what people said", time=now))
    for outcome, days in (("succeeded", 0), ("failed", 2)):
        done = await started_task(shepherd, ALICE, status="completed" if outcome == "succeeded" else "failed")
        async with shepherd.db.write() as session:
            await session.exec(update(Task).where(col(Task.id) == done.id).values(
                outcome=outcome, state="complete", finished_at=now - timedelta(days=days)))

    bob = await shepherd.overview.board(BOB)
    assert [w.code for w in bob.waiting] == [shown.code]
    assert [(r.id, r.latest) for r in bob.running] == [(busy.id, "second")]
    assert bob.outcomes["succeeded"] == 1 and bob.outcomes["failed"] == 0 and set(bob.outcomes) >= {
        "denied", "timed_out", "cancelled"}
    alice = await shepherd.overview.board(ALICE)
    assert [w.code for w in alice.waiting] == [secret.code, shown.code]  # hers, oldest first
