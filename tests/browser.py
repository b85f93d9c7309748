"""The dashboard's rig: Shepherd's real app on a loopback port, the real runner with the demo agent, and Debian's
Chromium (/usr/bin/chromium) driven by Playwright.

`ui` (a fixture of every test module) yields a `UiRig`: `rig.page` is a fresh browser page, `await rig.sign_in()`
signs it in with an admin's token through the sign-in form, `rig.url(path)` is an address on the server. Where
Chromium is missing the browser tests skip, except in CI (CI=true), where they fail.

One Chromium serves every test of a test process (starting Playwright's driver and the browser costs 3-4 s; a
fresh browser context per test, about 50 ms, keeps the tests' cookies apart). Playwright's objects belong to the
event loop that made them, so the browser tests run in the session's loop: a module of them says
`pytestmark = pytest.mark.asyncio(loop_scope="session")`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from adapters.rest.sse import FOLLOW_POLL, SSE_HEARTBEAT
from bot.app import create_app
from bot.presets import agent_catalog
from core.autonomy.actions import Executor
from core.shepherd import Shepherd
from core.store.db import Database
from core.tasks.supervisor import RunnerConfig, TaskSupervisor
from tests.test_tasks import supervisor

CHROMIUM = os.environ.get("SHEPHERD_TEST_CHROMIUM", "/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Where the README's screenshots are written when SHEPHERD_SCREENSHOTS names a folder (`make screenshots`)
SCREENSHOTS = os.environ.get("SHEPHERD_SCREENSHOTS", "")
# the probe's flags: no sandbox as root, and none of Chromium's own calls home, which this machine's network refuses
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def chromium_or_skip() -> str:
    if Path(CHROMIUM).exists() or shutil.which(CHROMIUM):
        return CHROMIUM
    if IN_CI:
        pytest.fail(f"the dashboard's browser tests need Chromium at {CHROMIUM} in CI (.ci/run installs it)")
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")


@dataclass
class UiRig:
    shepherd: Shepherd
    base: str
    page: Any  # playwright.async_api.Page
    browser: Any
    token: str  # an admin's API token (user "ana", org acme)
    root: Path
    supervisor: TaskSupervisor | None = None
    contexts: list[Any] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base + path

    async def sign_in(self, token: str | None = None, page: Any = None) -> None:
        page = page or self.page
        await page.goto(self.url("/ui/sign-in"))
        await page.get_by_label("API token").fill(token or self.token)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(self.url("/ui/"))

    async def new_page(self, **context: Any) -> Any:
        """A page in a browser context of its own (another person's cookies; a phone's viewport)."""
        ctx = await self.browser.new_context(**context)
        ctx.set_default_timeout(15_000)
        self.contexts.append(ctx)
        return await ctx.new_page()

    async def screenshot(self, name: str, page: Any = None) -> None:
        """For the README (only when SHEPHERD_SCREENSHOTS names a folder)."""
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            await (page or self.page).screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


async def until(page: Any, expression: str, arg: Any = None, timeout: float = 15.0) -> None:
    """Wait until `expression` (a JavaScript expression, or a function of `arg`) is truthy in the page.

    Playwright's own `wait_for_function`, given an expression, evaluates it with `eval` inside the page on every
    poll, which the dashboard's Content-Security-Policy (script-src 'self') refuses once the predicate is not true
    at its first look. Each look here is a `page.evaluate`, which the browser runs for its debugger, outside the
    page's CSP; a look that fails while the page navigates counts as not yet.
    """
    from playwright.async_api import Error

    deadline = time.monotonic() + timeout
    while True:
        try:
            if await asyncio.wait_for(page.evaluate(expression, arg), max(0.1, deadline - time.monotonic())):
                return
            why = "false"
        except Error as e:  # a navigation under way (a form posted, a redirect), an element not there yet
            why = str(e).splitlines()[0]
        except TimeoutError:
            why = "the look itself did not return"
        if time.monotonic() > deadline:
            raise AssertionError(f"the page at {page.url} never satisfied: {expression} (last look: {why})")
        await asyncio.sleep(0.05)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chromium() -> AsyncIterator[Any]:
    """Debian's Chromium, once per test process."""
    from playwright.async_api import async_playwright

    executable = chromium_or_skip()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@contextlib.asynccontextmanager
async def served_ui(db_url: str, root: Path, browser: Any, *, runner: bool = True, executor: Executor | None = None,
                    runner_kw: dict[str, Any] | None = None, **shepherd_kw: Any) -> AsyncIterator[UiRig]:
    """`executor` carries out approved actions (default: a local one); `runner_kw` changes the runner's config
    (git_base_url for a GitHub-shaped repository on a local host)."""
    db = Database(db_url)
    shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo", workspace_root=root / "ws", **shepherd_kw)
    await shepherd.orgs.ensure("acme")
    await shepherd.orgs.ensure("globex")
    app = create_app(db_url, shepherd=shepherd)
    app[SSE_HEARTBEAT] = 0.5
    app[FOLLOW_POLL] = 0.1
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    token = (await shepherd.tokens.create(org_id="acme", user="ana", scopes="read,write,approve,admin")).secret
    ctx = await browser.new_context()
    ctx.set_default_timeout(15_000)
    rig = UiRig(shepherd, str(server.make_url("")).rstrip("/"), await ctx.new_page(), browser, token, root,
                contexts=[ctx])
    try:
        if runner:
            config = RunnerConfig(workspace_root=root / "ws", poll_s=0.05, flush_s=0.05, idle_timeout_s=30,
                                  hard_timeout_s=60, max_tasks=8, max_tasks_per_project=8, max_action_attempts=1)
            rig.supervisor = supervisor(shepherd, replace(config, **(runner_kw or {})), executor)
            await rig.supervisor.start()
        yield rig
    finally:
        for context in rig.contexts:
            with contextlib.suppress(Exception):
                await context.close()
        if rig.supervisor is not None:
            await rig.supervisor.stop()
        await server.close()
        await db.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def ui(sqlite_url: str, tmp_path: Path, chromium: Any) -> AsyncIterator[UiRig]:
    async with served_ui(sqlite_url, tmp_path, chromium) as rig:
        yield rig
