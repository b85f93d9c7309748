"""The dashboard's agents pages in a real Chromium: the list with its filters and pages, an agent's page with its
level, state and events, and its actions for those allowed (core decides: a forged form changes nothing)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from core.people.access import Principal, Role
from tests.browser import UiRig, served_ui, until
from tests.test_web_overview import ANA, links_answer

GLOBEX = Principal.for_role("globex", "gil", Role.ADMIN, "test")
CSRF = re.compile(r'name="_csrf" value="([0-9a-f]+)"')

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the browser is the session's (tests/browser.py)


@pytest_asyncio.fixture(loop_scope="session")
async def ui(sqlite_url: str, tmp_path: Path, chromium: Any) -> AsyncIterator[UiRig]:
    """The rig without a runner: these pages start no task."""
    async with served_ui(sqlite_url, tmp_path, chromium, runner=False) as rig:
        yield rig


async def _session(ui: UiRig, page: Any = None) -> dict[str, str]:
    return {c["name"]: c["value"] for c in await (page or ui.page).context.cookies()}


async def _csrf(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as resp:
        found = CSRF.search(await resp.text())
        assert found is not None
        return found.group(1)


async def test_the_list_filters_by_type_status_and_project_and_pages(ui: UiRig) -> None:
    api = await ui.shepherd.projects.create(ANA, name="api", repo=None, default_branch="main")
    reviewers = [(await ui.shepherd.agents.create(ANA, name=f"reviewer-{i}", type="review")).agent for i in range(5)]
    await ui.shepherd.agents.create(ANA, name="keeper", type="project", project_id=api.id, autonomy_level=3)
    await ui.shepherd.agents.create(ANA, name="conductor", type="coordinator")
    await ui.shepherd.agents.act(ANA, reviewers[4].id, "suspend")

    await ui.sign_in()
    page = ui.page
    await page.goto(ui.url("/ui/agents?limit=3"))
    assert (await page.locator("#agents-total").inner_text()).startswith("7 agents")
    await page.get_by_label("Type").select_option("review")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url(re.compile(r"type=review"))
    assert "5 agents match" in await page.locator("#agents-total").inner_text()
    first = await page.locator("#agents tbody tr td:first-child").all_inner_texts()
    assert first == ["reviewer-0", "reviewer-1", "reviewer-2"]  # oldest first, 3 a page (the limit kept)
    await page.get_by_role("link", name="Next page").click()
    await page.wait_for_url(re.compile(r"cursor="))
    second = await page.locator("#agents tbody tr td:first-child").all_inner_texts()
    assert second == ["reviewer-3", "reviewer-4"]
    assert await page.get_by_role("link", name="Next page").count() == 0
    assert "suspended" in await page.locator("#agents tbody tr", has_text="reviewer-4").inner_text()
    await page.get_by_role("link", name="First page").click()
    assert await page.locator("#agents tbody tr").count() == 3

    await page.goto(ui.url("/ui/agents"))
    await page.get_by_label("Status").select_option("SUSPENDED")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url(re.compile(r"status=SUSPENDED"))
    assert await page.locator("#agents tbody tr td:first-child").all_inner_texts() == ["reviewer-4"]

    await page.goto(ui.url("/ui/agents"))
    await page.get_by_label("Project").select_option(label="api")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url(re.compile(r"project="))
    row = page.locator("#agents tbody tr")
    assert await row.count() == 1
    cells = " ".join((await row.inner_text()).split())
    assert "keeper" in cells and "project" in cells and "L3 Act" in cells and "api" in cells and "active" in cells
    await page.goto(ui.url("/ui/agents"))
    await ui.screenshot("agents")
    hrefs = await links_answer(ui, page)
    assert f"/ui/agents/{reviewers[0].id}" in hrefs

    cookies = await _session(ui)
    async with aiohttp.ClientSession(cookies=cookies) as http:
        for query, words in (("status=sleeping", "status must be one of"), ("limit=0", "limit must be"),
                             ("limit=²", "limit must be"), ("cursor=garbage", "")):
            async with http.get(ui.url(f"/ui/agents?{query}")) as resp:
                assert resp.status == 400, query
                assert words in await resp.text()


async def test_an_agents_page_sets_its_level_and_suspends_and_resumes_it_by_clicking(ui: UiRig) -> None:
    agent = (await ui.shepherd.agents.create(ANA, name="builder", type="task")).agent
    await ui.sign_in()
    page = ui.page
    await page.goto(ui.url("/ui/agents"))
    await page.get_by_role("link", name="builder").click()
    await page.wait_for_url(ui.url(f"/ui/agents/{agent.id}"))
    assert "L1 Suggest" in await page.locator("#agent-level").inner_text()
    assert await page.locator("#agent-status").inner_text() == "active"

    await page.get_by_label("Autonomy level").select_option(label="L3 Act")
    await page.get_by_role("button", name="Set level").click()
    await page.wait_for_load_state()
    assert "L3 Act" in await page.locator("#agent-level").inner_text()
    assert "asks before high and critical" in await page.locator("#agent-level").inner_text()
    assert (await ui.shepherd.agents.get(ANA, agent.id)).agent.autonomy_level == 3

    await page.get_by_role("button", name="Suspend").click()
    await page.wait_for_load_state()
    assert await page.locator("#agent-status").inner_text() == "suspended"
    assert (await ui.shepherd.agents.get(ANA, agent.id)).agent.status == "SUSPENDED"

    # Resume from the keyboard alone: Tab until the button has the focus, then Enter
    resume = page.get_by_role("button", name="Resume")
    for _ in range(40):
        await page.keyboard.press("Tab")
        if await resume.evaluate("b => b === document.activeElement"):
            break
    else:
        raise AssertionError("Tab never reached the Resume button")
    await page.keyboard.press("Enter")
    await until(page, "document.getElementById('agent-status').textContent === 'active'")
    assert (await ui.shepherd.agents.get(ANA, agent.id)).agent.status == "ACTIVE"

    events = await page.locator("#events tbody tr").all_inner_texts()
    assert "agent.resume" in events[0] and "agent.suspend" in events[1] and "agent.set_autonomy" in events[2]
    assert any("agent.created" in e for e in events)
    await ui.screenshot("agent")
    await links_answer(ui, page)


async def test_a_viewer_sees_no_actions_a_forged_form_changes_nothing_and_another_org_is_not_found(ui: UiRig) -> None:
    agent = (await ui.shepherd.agents.create(ANA, name="builder", type="task", autonomy_level=2)).agent
    viewer = await ui.shepherd.tokens.create(org_id="acme", user="vic", scopes="read")
    page = await ui.new_page()
    await ui.sign_in(viewer.secret, page=page)
    await page.goto(ui.url(f"/ui/agents/{agent.id}"))
    assert "L2 Assist" in await page.locator("#agent-level").inner_text()
    for name in ("Suspend", "Resume", "Restart", "Set level"):
        assert await page.get_by_role("button", name=name).count() == 0
    async with aiohttp.ClientSession(cookies=await _session(ui, page)) as http:
        csrf = await _csrf(http, ui.url(f"/ui/agents/{agent.id}"))  # the viewer's own, valid token
        async with http.post(ui.url(f"/ui/agents/{agent.id}/action"), data={"_csrf": csrf, "action": "suspend"},
                             allow_redirects=False) as resp:
            assert resp.status == 403
            assert "Not allowed" in await resp.text() and "write" in await resp.text()
    # someone who may write but not approve may lower the level, not raise it
    writer = await ui.shepherd.tokens.create(org_id="acme", user="wes", scopes="read,write")
    page = await ui.new_page()
    await ui.sign_in(writer.secret, page=page)
    await page.goto(ui.url(f"/ui/agents/{agent.id}"))
    options = await page.get_by_label("Autonomy level").locator("option").all_inner_texts()
    assert options == ["L0 Observe", "L1 Suggest", "L2 Assist"]
    async with aiohttp.ClientSession(cookies=await _session(ui, page)) as http:
        csrf = await _csrf(http, ui.url(f"/ui/agents/{agent.id}"))
        async with http.post(ui.url(f"/ui/agents/{agent.id}/action"),
                             data={"_csrf": csrf, "action": "set_autonomy", "level": "5"},
                             allow_redirects=False) as resp:
            assert resp.status == 403 and "approve" in await resp.text()
    after = (await ui.shepherd.agents.get(ANA, agent.id)).agent
    assert after.status == "ACTIVE" and after.autonomy_level == 2

    # an admin's form without its CSRF token, bad input, another org's agent
    ours = agent
    theirs = (await ui.shepherd.agents.create(GLOBEX, name="secret", type="task")).agent
    await ui.sign_in()
    async with aiohttp.ClientSession(cookies=await _session(ui)) as http:
        action = ui.url(f"/ui/agents/{ours.id}/action")
        async with http.post(action, data={"action": "suspend"}, allow_redirects=False) as resp:
            assert resp.status == 403 and "CSRF" in await resp.text()
        csrf = await _csrf(http, ui.url(f"/ui/agents/{ours.id}"))
        async with http.post(action, data={"_csrf": csrf, "action": "explode"}, allow_redirects=False) as resp:
            assert resp.status == 400 and "Invalid action" in await resp.text()
        async with http.post(action, data={"_csrf": csrf, "action": "set_autonomy", "level": "9"},
                             allow_redirects=False) as resp:
            assert resp.status == 400 and "between 0 and 5" in await resp.text()
        async with http.get(ui.url(f"/ui/agents/{theirs.id}")) as resp:
            assert resp.status == 404 and "secret" not in await resp.text()
        async with http.post(ui.url(f"/ui/agents/{theirs.id}/action"), data={"_csrf": csrf, "action": "suspend"},
                             allow_redirects=False) as resp:
            assert resp.status == 404
        async with http.get(ui.url("/ui/agents/agent-task-nope")) as resp:
            assert resp.status == 404 and "Agent not found" in await resp.text()
        async with http.post(action, data={"_csrf": csrf, "action": "restart"}, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == f"/ui/agents/{ours.id}"
    assert (await ui.shepherd.agents.get(ANA, ours.id)).agent.status == "ACTIVE"
    assert (await ui.shepherd.agents.get(GLOBEX, theirs.id)).agent.status == "ACTIVE"
