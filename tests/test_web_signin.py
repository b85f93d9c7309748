"""Signing in to the dashboard in a real Chromium: an API token for a session cookie, sign-out, CSRF, and the
addresses a browser is sent to."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.browser import UiRig

CSRF = re.compile(r'name="_csrf" value="([0-9a-f]+)"')

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the browser is the session's (tests/browser.py)


async def test_a_page_without_a_session_sends_the_browser_to_sign_in_and_back(ui: UiRig) -> None:
    page = ui.page
    await page.goto(ui.url("/ui/tasks?status=running"))
    assert page.url.startswith(ui.url("/ui/sign-in?next="))
    await page.get_by_label("API token").fill(ui.token)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(ui.url("/ui/tasks?status=running"))
    cookies = {c["name"]: c for c in await page.context.cookies()}
    session = cookies["shepherd_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/ui"
    assert session["expires"] > 0  # it ends
    assert ui.token not in session["value"] and ui.token not in page.url
    assert "ana" in await page.locator("header").inner_text()


async def test_a_wrong_token_is_refused_with_words_and_no_session(ui: UiRig) -> None:
    page = ui.page
    await page.goto(ui.url("/ui/sign-in"))
    await page.get_by_label("API token").fill("shp_not-a-token")
    await page.get_by_role("button", name="Sign in").click()
    assert "not a live Shepherd API token" in await page.get_by_role("alert").inner_text()
    assert "shepherd_session" not in {c["name"] for c in await page.context.cookies()}
    await page.goto(ui.url("/ui/"))
    assert "/ui/sign-in" in page.url


async def test_sign_out_ends_the_session_for_good(ui: UiRig) -> None:
    await ui.sign_in()
    stolen = {c["name"]: c["value"] for c in await ui.page.context.cookies()}["shepherd_session"]
    await ui.page.get_by_role("button", name="Sign out").click()
    await ui.page.wait_for_url(ui.url("/ui/sign-in"))
    # the old cookie, replayed by anyone, no longer opens a page
    async with aiohttp.ClientSession(cookies={"shepherd_session": stolen}) as http, http.get(
            ui.url("/ui/"), allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"].startswith("/ui/sign-in")


async def test_a_revoked_token_ends_its_sessions(ui: UiRig) -> None:
    issued = await ui.shepherd.tokens.create(org_id="acme", user="bo", scopes="read")
    await ui.sign_in(issued.secret)
    await ui.shepherd.tokens.revoke(issued.token.id)
    await ui.page.goto(ui.url("/ui/"))
    assert "/ui/sign-in" in ui.page.url


async def test_a_post_without_the_csrf_token_is_refused_and_does_nothing(ui: UiRig) -> None:
    await ui.sign_in()
    # the browser's own cookie, a form posted without the page's token (as another site's form would)
    resp = await ui.page.request.post(ui.url("/ui/sign-out"), form={"x": "1"}, max_redirects=0)
    assert resp.status == 403 and "CSRF" in await resp.text()
    resp = await ui.page.request.post(ui.url("/ui/sign-out"), form={"_csrf": "0" * 40}, max_redirects=0)
    assert resp.status == 403
    await ui.page.goto(ui.url("/ui/"))
    assert ui.page.url == ui.url("/ui/")  # still signed in: the refused sign-out did nothing


async def test_sign_in_needs_its_own_form_and_goes_back_only_to_this_dashboard(ui: UiRig) -> None:
    # a sign-in posted from elsewhere (no form cookie) signs nobody in
    async with aiohttp.ClientSession() as http, http.post(
            ui.url("/ui/sign-in"), data={"token": ui.token, "_csrf": "x"}, allow_redirects=False) as resp:
        assert resp.status == 403 and "shepherd_session" not in resp.cookies
    for evil in ("https://evil.example/", "//evil.example/ui/", "/ui/../api/agents", "/\\evil.example"):
        await ui.page.goto(ui.url("/ui/sign-in?next=") + evil.replace("/", "%2F"))
        await ui.page.get_by_label("API token").fill(ui.token)
        await ui.page.get_by_role("button", name="Sign in").click()
        await ui.page.wait_for_load_state()
        assert ui.page.url.startswith(ui.url("/ui/")), (evil, ui.page.url)
        await ui.page.context.clear_cookies()


async def test_pages_carry_a_content_security_policy_and_an_html_404(ui: UiRig) -> None:
    await ui.sign_in()
    # a HEAD (an uptime monitor's, a link checker's) answers as the GET would; it was the catch-all's 404
    for path, status in (("/ui/", 200), ("/ui/tasks", 200), ("/ui/approvals", 200), ("/ui/nope", 404)):
        resp = await ui.page.request.head(ui.url(path), max_redirects=0)
        assert resp.status == status, (path, resp.status)
    resp = await ui.page.goto(ui.url("/ui/no/such/page"))
    assert resp is not None and resp.status == 404
    assert resp.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]


async def test_a_form_that_cannot_be_read_is_a_400_and_a_foreign_csrf_token_a_403(ui: UiRig) -> None:
    await ui.sign_in()
    session = {c["name"]: c["value"] for c in await ui.page.context.cookies()}["shepherd_session"]
    unreadable = (("multipart/form-data", b"_csrf=x"),  # no boundary
                  ("multipart/form-data; boundary=zz", b"no boundary in here"),
                  ("application/x-www-form-urlencoded; charset=bogus", b"_csrf=x"))
    async with aiohttp.ClientSession(cookies={"shepherd_session": session, "shepherd_signin": "n"}) as http:
        for path in ("/ui/sign-out", "/ui/sign-in", "/ui/sign-in/link"):
            for content_type, body in unreadable:
                async with http.post(ui.url(path), data=body, headers={"Content-Type": content_type},
                                     allow_redirects=False) as resp:
                    assert resp.status == 400, (path, content_type, resp.status)
                    assert "could not be read" in await resp.text()
            # a token with other than ASCII characters (or bytes that are no UTF-8) is a wrong token, not a 500
            for body in ("_csrf=%C3%A9&code=shl_x", "_csrf=%ff%fe&code=shl_x"):
                async with http.post(ui.url(path), data=body.encode(), allow_redirects=False,
                                     headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
                    assert resp.status == 403, (path, body, resp.status)
            # a body past the forms' limit is refused before it is read, with a Content-Length or without
            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(100):
                    yield b"a" * 4096
            async with http.post(ui.url(path), data=chunks(), allow_redirects=False,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
                assert resp.status == 413, (path, resp.status)
    await ui.page.goto(ui.url("/ui/"))
    assert ui.page.url == ui.url("/ui/")  # none of it signed the browser out


async def test_behind_a_proxy_that_sends_its_own_host_a_form_from_the_public_address_is_taken(ui: UiRig) -> None:
    await ui.sign_in()
    session = {c["name"]: c["value"] for c in await ui.page.context.cookies()}["shepherd_session"]
    ui.shepherd.public_url = "https://shepherd.example.com"  # SHEPHERD_PUBLIC_URL
    proxied = {"Host": "127.0.0.1:8080", "X-Forwarded-Proto": "https"}  # nginx's default Host: the upstream's
    async with aiohttp.ClientSession(cookies={"shepherd_session": session}) as http:
        async with http.get(ui.url("/ui/")) as resp:
            csrf = CSRF.findall(await resp.text())[0]
        # another site's form is still refused, whatever Host the proxy sends
        async with http.post(ui.url("/ui/sign-out"), data={"_csrf": csrf}, allow_redirects=False,
                             headers={**proxied, "Origin": "https://evil.example"}) as resp:
            assert resp.status == 403
        async with http.post(ui.url("/ui/sign-out"), data={"_csrf": csrf}, allow_redirects=False,
                             headers={**proxied, "Origin": "https://shepherd.example.com"}) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/ui/sign-in"
