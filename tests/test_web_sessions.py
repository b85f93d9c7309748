"""The sessions pages in a real Chromium: the list with its paging, a session's page with its tasks, loop state and
replay, and another org's session not found."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from core.people.access import Role
from tests.browser import UiRig
from tests.conftest import person

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the browser is the session's (tests/browser.py)


async def test_a_session_shows_its_tasks_and_replay_and_the_list_pages(ui: UiRig) -> None:
    ana = await ui.shepherd.tokens.authenticate(ui.token)
    row = await ui.shepherd.sessions.create(ana, task="say hello from the session", label="greeting work",
                                            visibility="organization")
    [task] = await ui.shepherd.sessions.tasks_of(ana, row.id)
    deadline = asyncio.get_running_loop().time() + 30
    while (await ui.shepherd.tasks.get(ana, task.id)).outcome is None:
        assert asyncio.get_running_loop().time() < deadline, "the demo task did not finish"
        await asyncio.sleep(0.05)
    loop = await ui.shepherd.sessions.create(ana, task="", label="until green", workflow_mode="loop",
                                             loop={"goal": "make the tests pass", "maxIterations": 3}, start=False)
    for n in range(26):  # more than a page of sessions
        await ui.shepherd.sessions.create(ana, label=f"filler {n:02d}", start=False)
    theirs = await ui.shepherd.sessions.create(person(Role.ADMIN, org="globex"), label="globex secret", start=False)

    await ui.sign_in()
    page = ui.page
    await page.goto(ui.url("/ui/sessions"))
    assert "Sessions (28)" in await page.get_by_role("heading", level=1).inner_text()
    assert await page.locator("tbody tr").count() == 25
    assert "globex secret" not in await page.content()
    await ui.screenshot("sessions")
    await page.get_by_role("link", name="Older").click()
    await page.wait_for_url(ui.url("/ui/sessions?page=2"))
    listed = await page.locator("tbody").inner_text()
    assert "greeting work" in listed and "Page 2 of 2" in await page.locator(".pager").inner_text()
    await page.get_by_label("Search").fill("greeting")
    await page.get_by_role("button", name="Show").click()
    await page.wait_for_url(ui.url("/ui/sessions?q=greeting"))
    assert await page.locator("tbody tr").count() == 1

    await page.get_by_role("link", name="greeting work").click()
    await page.wait_for_url(ui.url(f"/ui/sessions/{row.id}"))
    assert await page.get_by_role("heading", level=1).inner_text() == "greeting work"
    facts = await page.locator("dl.facts").first.inner_text()
    assert "standard" in facts and "active" in facts and "say hello from the session" in facts
    assert await page.get_by_role("link", name=task.name).first.get_attribute("href") == f"/ui/tasks/{task.id}"
    replay = page.locator("ol.replay li")
    entries = await replay.all_inner_texts()
    replayed = (await ui.shepherd.history.replay(ana, row.id)).entries
    assert len(entries) == len(replayed) > 2, entries
    # in order, readable: the session made, the prompt, the agent's lines, the result last
    assert "session created" in entries[0]
    prompt = next(i for i, e in enumerate(entries) if "user prompt" in e)
    assert "say hello from the session" in entries[prompt] and prompt < len(entries) - 1
    assert "task result" in entries[-1] and "succeeded" in entries[-1]
    await ui.screenshot("session")
    await _links_answer(ui, page)

    await page.goto(ui.url(f"/ui/sessions/{loop.id}"))
    looped = await page.locator("main").inner_text()
    assert "make the tests pass" in looped and "of at most 3" in looped and "idle" in looped

    async with aiohttp.ClientSession(cookies=_cookie(await page.context.cookies())) as http:
        for path in (f"/ui/sessions/{theirs.id}", "/ui/sessions/sess_nosuch"):  # another org's is not found either
            async with http.get(ui.url(path), allow_redirects=False) as resp:
                body = await resp.text()
                assert resp.status == 404 and "not found" in body and "globex secret" not in body, path
        for page_text in ("x", "²"):  # "²" is a digit to str.isdigit() and no number to int(): it was a 500
            async with http.get(ui.url(f"/ui/sessions?page={page_text}"), allow_redirects=False) as resp:
                assert resp.status == 400 and "page is a whole number" in await resp.text()
        async with http.get(ui.url(f"/ui/sessions/{row.id}?after=bogus"), allow_redirects=False) as resp:
            assert resp.status == 400
    await page.goto(ui.url("/ui/sessions"))
    await _links_answer(ui, page)


def _cookie(cookies: list[dict[str, str]]) -> dict[str, str]:
    return {c["name"]: c["value"] for c in cookies if c["name"] == "shepherd_session"}


async def _links_answer(ui: UiRig, page: object) -> None:
    hrefs = set(await page.eval_on_selector_all(  # type: ignore[attr-defined]
        "a[href]", "els => els.map(e => e.getAttribute('href'))"))
    async with aiohttp.ClientSession(cookies=_cookie(await page.context.cookies())) as http:  # type: ignore[attr-defined]
        for href in sorted(h for h in hrefs if h.startswith("/")):
            async with http.get(ui.url(href), allow_redirects=False) as resp:
                assert resp.status < 500, (href, resp.status)
