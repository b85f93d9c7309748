"""`dashboard` in chat: a one-time link that signs the person who asked in to the dashboard, in a real Chromium."""

from __future__ import annotations

import pytest

from core.channels.conversations import Conversations, Where
from core.commands.registry import build_registry
from core.people.access import Role
from tests.browser import UiRig

DM = Where("slack", "D9")

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the browser is the session's (tests/browser.py)


async def test_a_link_from_chat_signs_in_its_person_once_and_a_preview_spends_nothing(ui: UiRig) -> None:
    talk = Conversations(ui.shepherd, build_registry())
    cy = await talk.person("acme", "slack", "U9", name="cy", default_role=Role.APPROVER)
    ui.shepherd.public_url = ui.base
    reply = await talk.command(cy, "dashboard", where=DM)
    assert reply.ok, reply.text
    url = reply.data["url"]
    assert url.startswith(ui.url("/ui/sign-in/link?code=shl_")) and "good once, for 10 minutes" in reply.text

    preview = await ui.new_page()  # a chat's link preview opens the link first: it only sees a button
    await preview.goto(url)
    assert await preview.get_by_role("button", name="Sign in as cy").is_visible()
    assert "shepherd_session" not in {c["name"] for c in await preview.context.cookies()}

    page = ui.page
    await page.goto(url)
    await page.get_by_role("button", name="Sign in as cy").click()
    await page.wait_for_url(ui.url("/ui/"))
    header = await page.locator("header").inner_text()
    assert "cy" in header and "approver" in header

    again = await ui.new_page()  # spent: nobody else signs in with it
    resp = await again.goto(url)
    assert resp is not None and resp.status == 401
    assert "used already or has expired" in await again.get_by_role("alert").inner_text()
    await again.goto(url.replace("link?code=", "link?code=x"))
    assert "not a Shepherd sign-in link" in await again.get_by_role("alert").inner_text()


async def test_a_link_is_never_shown_where_others_read_it(ui: UiRig) -> None:
    talk = Conversations(ui.shepherd, build_registry())
    cy = await talk.person("acme", "slack", "U9", name="cy", default_role=Role.VIEWER)
    ui.shepherd.public_url = ui.base
    reply = await talk.command(cy, "dashboard", where=Where("slack", "C1", shared=True))
    assert not reply.ok and "everyone here would read it" in reply.text
    ui.shepherd.public_url = None
    reply = await talk.command(cy, "dashboard", where=DM)
    assert not reply.ok and "SHEPHERD_PUBLIC_URL" in reply.text
