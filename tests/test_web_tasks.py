"""The tasks pages in a real Chromium: the list with its filters and pages, starting a task from the form, a task's
page following its log and status live, its controls, and what another org or a forged form gets."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from core.autonomy.plans import Plan
from core.people.access import Principal
from core.tasks.evidence import ActionRecord, ActionResult, Evidence, TaskAction
from core.tasks.follow import last_log_id
from tests.browser import UiRig, served_ui, until

CSRF = re.compile(r'name="_csrf" value="([0-9a-f]+)"')

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the browser is the session's (tests/browser.py)


@pytest_asyncio.fixture(loop_scope="session")
async def idle(sqlite_url: str, tmp_path: Path, chromium: Any) -> AsyncIterator[UiRig]:
    """A dashboard with no runner: tasks stay where core puts them (pending, or cancelled when stopped)."""
    async with served_ui(sqlite_url, tmp_path, chromium, runner=False) as rig:
        yield rig


async def _principal(rig: UiRig, org: str, user: str, scopes: str) -> Principal:
    issued = await rig.shepherd.tokens.create(org_id=org, user=user, scopes=scopes)
    return await rig.shepherd.tokens.authenticate(issued.secret)


async def _start_by_api(rig: UiRig, prompt: str) -> dict[str, Any]:
    """A demo task started through Coder's REST API with the admin's token, as a script would."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {rig.token}"}) as http, http.post(
            rig.url("/api/v2/tasks/me"), json={"input": prompt, "agent": "demo"}) as resp:
        assert resp.status == 201, await resp.text()
        return dict(await resp.json())


async def _cookie_session(rig: UiRig) -> aiohttp.ClientSession:
    """Plain HTTP as the signed-in browser (its session cookie), for the cheap checks."""
    cookies = {c["name"]: c["value"] for c in await rig.page.context.cookies()}
    return aiohttp.ClientSession(cookies={"shepherd_session": cookies["shepherd_session"]})


async def _events(resp: aiohttp.ClientResponse) -> list[tuple[str, str | None, Any]]:
    """A finished event stream's events: (event, id, data)."""
    out = []
    for block in (await resp.text()).split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line and not line.startswith(":"):
                key, _, value = line.partition(": ")
                fields[key] = value
        if "data" in fields:
            out.append((fields.get("event", "message"), fields.get("id"), orjson.loads(fields["data"])))
    return out


async def _links_answer(rig: UiRig, http: aiohttp.ClientSession) -> None:
    """Every link of the page in the browser answers without a server error."""
    hrefs = await rig.page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
    checked = {h.split("#")[0] for h in hrefs if h.startswith(rig.base)}
    assert checked
    for href in sorted(checked):
        async with http.get(href, allow_redirects=False) as resp:
            assert resp.status < 500, (href, resp.status)


async def test_a_task_page_follows_its_log_live_and_its_controls_steer_it(ui: UiRig) -> None:
    await ui.sign_in()
    task = await _start_by_api(ui, "count [long 3] [noedit]")
    page = ui.page
    await page.goto(ui.url(f"/ui/tasks/{task['id']}"))
    assert await page.locator("h1").inner_text() == task["name"]
    at_load = set(await page.eval_on_selector_all("#task-log > div", "els => els.map(e => e.id)"))
    # a tick the page did not have when it loaded appears in it, pushed by the server
    fresh = page.locator("#task-log > div", has_text="tick").last
    await fresh.wait_for()
    await until(page, "seen => [...document.querySelectorAll('#task-log > div')].some(e => !seen.includes(e.id) && "
                "e.textContent.includes('tick'))", sorted(at_load))
    # the status panel follows: the task ends and its badge says so, still without a reload
    await page.locator("#task-status [data-status=completed]").wait_for(timeout=20_000)
    assert "succeeded" in await page.locator("#task-status").inner_text()
    ids = await page.eval_on_selector_all("#task-log > div", "els => els.map(e => e.id)")
    assert len(ids) == len(set(ids))  # no line twice
    # the browser's first input line is the prompt, marked as sent by a `>` in its text
    assert (await page.locator("#task-log > div.in").first.inner_text()).startswith("> count [long 3]")
    await ui.screenshot("task")
    # and the stream ends (its `end` comes after the status, in a write of its own)
    await until(page, "document.getElementById('task-live').dataset.liveState === 'ended'")

    # a reconnect says which line it saw last (Last-Event-ID wins over the page's `after`): only what follows
    rows = [int(i.removeprefix("log-")) for i in ids]
    async with await _cookie_session(ui) as http:
        async with http.get(ui.url(f"/ui/tasks/{task['id']}/live?after=0"),
                            headers={"Last-Event-ID": str(rows[-3])}) as resp:
            events = await _events(resp)
        appended = [e for e in events if e[0] == "append"]
        assert appended[0][1] == str(rows[-1])
        assert re.findall(r'id="log-(\d+)"', "".join(e[2]["html"] for e in appended)) == [str(r) for r in rows[-2:]]
        assert [e[0] for e in events][-2:] == ["replace", "end"]
        async with http.get(ui.url(f"/ui/tasks/{task['id']}/live?after=x")) as resp:
            assert resp.status == 400
        await _links_answer(ui, http)

    # a task started from the form lands on its page, and its page stops it
    await page.goto(ui.url("/ui/tasks"))
    await page.get_by_text("Start a task").click()  # the form opens from its summary once there are tasks
    await page.get_by_label("What should the agent do?").fill("stop me [long 30] [noedit]")
    assert await page.get_by_label("Agent", exact=True).input_value() == "demo"
    await page.get_by_role("button", name="Start the task").click()
    await page.wait_for_url(re.compile(r".*/ui/tasks/task-[0-9a-f]+$"))
    task_id = page.url.rsplit("/", 1)[1]
    await page.locator("#task-status [data-status=running]").wait_for()
    await page.locator("#task-log > div", has_text="tick").first.wait_for()
    # each control answers with the task's page again (303), whose status then follows the runner live
    steps = (("Pause the task", "paused"), ("Resume the task", "running"), ("Stop the task", "cancelled"))
    for button, status in steps:
        async with page.expect_navigation():
            await page.get_by_role("button", name=button).click()
        assert page.url == ui.url(f"/ui/tasks/{task_id}")
        await page.locator(f"#task-status [data-status={status}]").wait_for()
    assert (await ui.shepherd.tasks.get(await ui.shepherd.tokens.authenticate(ui.token), task_id)).status == \
        "cancelled"
    # a start core refuses is a page that says why, not a task
    async with await _cookie_session(ui) as http:
        async with http.get(ui.url("/ui/tasks")) as resp:
            csrf = CSRF.findall(await resp.text())[0]
        async with http.post(ui.url("/ui/tasks"), data={"_csrf": csrf, "prompt": "hi", "agent": "demo",
                                                        "level": "9"}, allow_redirects=False) as resp:
            assert resp.status == 400 and "Autonomy level must be between 0 and 5" in await resp.text()
        # pausing a stopped task: core's 409, as a page
        async with http.post(ui.url(f"/ui/tasks/{task_id}/pause"), data={"_csrf": csrf},
                             allow_redirects=False) as resp:
            assert resp.status == 409 and "only a running task can be paused" in await resp.text()


async def test_the_list_filters_and_pages_and_another_orgs_task_is_not_found(idle: UiRig) -> None:
    ui = idle
    ana = await ui.shepherd.tokens.authenticate(ui.token)
    bo = await _principal(ui, "acme", "bo", "read,write")
    mine = [(await ui.shepherd.tasks.create(ana, prompt=f"job {n} [noedit]", runtime="demo")).task for n in range(24)]
    for n in range(3):
        await ui.shepherd.tasks.create(bo, prompt=f"their job {n}", runtime="demo")
    for t in mine[:2]:
        await ui.shepherd.tasks.stop(ana, t.id)
    other = (await ui.shepherd.tasks.create(await _principal(ui, "globex", "gil", "read,write"),
                                            prompt="globex secret", runtime="demo")).task
    # what a task of its own left behind: a pull request (a link), and an address that is not https (no link)
    async with ui.shepherd.db.write() as session:
        row = await session.get(type(mine[0]), mine[0].id)
        assert row is not None
        row.evidence = Evidence(reason="done", exit_code=0, actions=(
            TaskAction("pr.open", "AB12", True, ActionRecord(1, ActionResult(url="https://github.com/acme/api/pull/7",
                                                                             number=7))),
            TaskAction("pr.comment", "CD34", True, ActionRecord(1, ActionResult(url="javascript:alert(1)"))),
        )).to_json()
        session.add(row)
    await ui.shepherd.confirmations.request(bo, Plan(action="pr.comment", summary="say thanks"), task=mine[0],
                                            agent=None, project_id=None)
    await ui.shepherd.confirmations.request(ana, Plan(action="pr.comment", summary="say hello"), task=mine[0],
                                            agent=None, project_id=None)

    await ui.sign_in()
    page = ui.page
    await page.goto(ui.url("/ui/tasks"))
    assert await page.locator("table.tasks tbody tr").count() == 25
    assert "1–25 of 27" in await page.locator("#tasks-count").inner_text()
    await ui.screenshot("tasks")
    await page.get_by_role("link", name="Older →").click()
    await page.wait_for_url(ui.url("/ui/tasks?page=2"))
    names = await page.locator("table.tasks tbody td[data-label=Name]").all_inner_texts()
    assert len(names) == 2 and mine[0].name in names and other.name not in names
    # filters are a GET form: they stay in the address, and the pages keep them
    await page.get_by_label("Status", exact=True).select_option("cancelled")
    await page.get_by_role("button", name="Show").click()
    await page.wait_for_url(re.compile(r".*status=cancelled.*"))
    assert sorted(await page.locator("table.tasks tbody td[data-label=Name]").all_inner_texts()) == \
        sorted(t.name for t in mine[:2])
    await page.goto(ui.url("/ui/tasks?owner=me&status=active"))
    owners = set(await page.locator("table.tasks tbody td[data-label=Owner]").all_inner_texts())
    assert owners == {"ana"} and await page.locator("table.tasks tbody tr").count() == 22
    assert await page.get_by_label("Owner", exact=True).input_value() == "me"

    # at phone width the list still fits, row by row with its labels; a viewer sees no form to start or stop one
    phone = await ui.new_page(viewport={"width": 390, "height": 844})
    viewer = await ui.shepherd.tokens.create(org_id="acme", user="vi", scopes="read")
    await ui.sign_in(viewer.secret, page=phone)
    await phone.goto(ui.url("/ui/tasks"))
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 390
    assert await phone.locator("td[data-label=Name]").count() == 25
    assert await phone.get_by_text("Start a task").count() == 0
    await phone.goto(ui.url(f"/ui/tasks/{mine[3].id}"))
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 390
    assert await phone.get_by_role("button", name="Stop the task").count() == 0

    # the task page with its evidence and confirmations
    await page.goto(ui.url(f"/ui/tasks/{mine[0].id}"))
    assert await page.get_by_role("link", name="https://github.com/acme/api/pull/7").count() == 1
    assert await page.locator("a[href^='javascript']").count() == 0
    confirmations = await page.locator("section[aria-labelledby=conf-h]").inner_text()
    assert "say thanks" in confirmations and "pending" in confirmations and "say hello" in confirmations

    async with await _cookie_session(ui) as http:
        await _links_answer(ui, http)
        await page.goto(ui.url("/ui/tasks"))
        await _links_answer(ui, http)
        csrf = CSRF.findall(await (await http.get(ui.url("/ui/tasks"))).text())[0]
        # another org's task: not found, to read, to follow or to stop, and it goes on untouched
        for method, path in (("GET", ""), ("GET", "/live"), ("POST", "/stop")):
            async with http.request(method, ui.url(f"/ui/tasks/{other.id}{path}"), data={"_csrf": csrf},
                                    allow_redirects=False) as resp:
                assert resp.status == 404, (path, resp.status)
        # a stop without the form's CSRF token (another site's form) is refused and stops nothing
        async with http.post(ui.url(f"/ui/tasks/{mine[5].id}/stop"), data={"x": "1"},
                             allow_redirects=False) as resp:
            assert resp.status == 403
        for t in (other, mine[5]):
            async with ui.shepherd.db.read() as session:
                row = await session.get(type(t), t.id)
                assert row is not None and row.status == "pending"
        for bad in ("/ui/tasks/nope", "/ui/tasks/%00", "/ui/tasks/" + "a" * 300, "/ui/tasks/..%2f..%2fapi",
                    "/ui/tasks/nope/live", "/ui/tasks?status=bogus", "/ui/tasks?page=0", "/ui/tasks?owner=x",
                    "/ui/tasks?page=²", f"/ui/tasks/{mine[0].id}/live?after=²"):
            async with http.get(ui.url(bad), allow_redirects=False) as resp:
                assert 400 <= resp.status < 500, (bad, resp.status)


async def test_a_task_log_stops_streaming_to_a_browser_that_signed_out(ui: UiRig) -> None:
    await ui.sign_in()
    task = await _start_by_api(ui, "count [long 30] [noedit]")
    async with await _cookie_session(ui) as http:
        async with http.get(ui.url("/ui/tasks")) as resp:
            csrf = CSRF.findall(await resp.text())[0]
        async with http.get(ui.url(f"/ui/tasks/{task['id']}/live?after=0")) as live:
            async for line in live.content:  # the log is streaming
                if line.startswith(b"event: append"):
                    break
            async with http.post(ui.url("/ui/sign-out"), data={"_csrf": csrf}, allow_redirects=False) as resp:
                assert resp.status == 303
            logged = await last_log_id(ui.shepherd.db, [task["id"]])  # every line written before the sign-out
            rest = (await live.content.read()).decode()  # the stream ends, though the task goes on
        assert rest.rstrip().endswith("data: {}") and "event: end" in rest
        # what it still sent (unread, or on its way) was read before the sign-out: no line written after it
        assert all(int(n) <= logged for n in re.findall(r"^id: (\d+)$", rest, re.M))
    admin = await ui.shepherd.tokens.authenticate(ui.token)
    assert (await ui.shepherd.tasks.get(admin, task["id"])).status == "running"
    await ui.shepherd.tasks.stop(admin, task["id"])
