"""Signing in to the dashboard, the session cookie, and CSRF.

- Sign-in exchanges an API token (pasted in a form, never in a URL) for a session: an HttpOnly, SameSite=Strict
  cookie (Secure when the page came over https) holding a random secret; Shepherd keeps its hash
  (core.people.web_sessions). The session acts as the token: the same org, role and scopes.
- Every form carries a CSRF token derived from the session's secret (which no other site can read); a POST
  without it, or with another, is refused with 403 and does nothing. The sign-in form itself is protected the
  same way by a short-lived cookie of its own (double submit), so no site can sign a browser in as someone else.
- A page without a session sends the browser to sign in, then back where it was going (only to a /ui/ page).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import posixpath
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from aiohttp import web
from aiohttp.web_request import FileField
from multidict import MultiDictProxy

from adapters.rest.framework import SHEPHERD
from adapters.rest.sse import Sse
from adapters.web.render import html, render_text
from adapters.web.ui import UiRequest, UiRoute, see_other
from core.errors import ShepherdError, Unauthorized
from core.people.web_sessions import SignedIn

log = logging.getLogger(__name__)

SESSION_COOKIE = "shepherd_session"
SIGNIN_COOKIE = "shepherd_signin"  # the sign-in form's own CSRF secret (double submit)
COOKIE_PATH = "/ui"
MAX_FORM_BYTES = 64 * 1024
SECURE = web.AppKey("ui_secure_cookies", bool)  # SHEPHERD_PUBLIC_URL is https: every cookie is Secure


def csrf_for(session_secret: str) -> str:
    return hashlib.sha256(b"shepherd-csrf:" + session_secret.encode()).hexdigest()[:40]


def _secure(request: web.Request) -> bool:
    return bool(request.app.get(SECURE)) or request.secure or \
        request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def _set_cookie(response: web.StreamResponse, request: web.Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, httponly=True, samesite="Strict",
                        secure=_secure(request))


def _forget(response: web.StreamResponse, name: str) -> None:
    response.del_cookie(name, path=COOKIE_PATH)


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path under /ui/ of this server, never elsewhere."""
    if not value:
        return "/ui/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or "\\" in value or value.startswith("//"):
        return "/ui/"
    path = posixpath.normpath(unquote(parts.path))  # `/ui/../api` is not under /ui/
    if not (path + "/").startswith("/ui/"):
        return "/ui/"
    return quote(path + ("/" if parts.path.endswith("/") and path != "/" else ""), safe="/-_.~") + \
        (f"?{parts.query}" if parts.query else "")


Form = MultiDictProxy[str | bytes | bytearray | FileField]


async def read_form(request: web.Request) -> Form | web.Response:
    """A POST's fields, or the error page to answer: 413 past MAX_FORM_BYTES (also when the body comes without a
    Content-Length: the app itself reads up to its largest route's limit, tens of MB), 400 when it is no form aiohttp
    can read (a multipart body without its boundary, an unknown charset)."""
    if (request.content_length or 0) > MAX_FORM_BYTES:
        return error_page(request, 413, "Too large", f"A form may send at most {MAX_FORM_BYTES} bytes.")
    try:
        return await request.clone(client_max_size=MAX_FORM_BYTES).post()
    except web.HTTPRequestEntityTooLarge:
        return error_page(request, 413, "Too large", f"A form may send at most {MAX_FORM_BYTES} bytes.")
    except (ValueError, LookupError) as exc:  # UnicodeDecodeError is a ValueError
        log.info("dashboard POST %s: an unreadable form (%s)", request.path, type(exc).__name__)
        return error_page(request, 400, "Cannot do that", "That form could not be read (not form fields in UTF-8).")


def _matches(sent: object, expected: str) -> bool:
    """A form's CSRF token is the one expected (compared in constant time, and as bytes: a sent token with other
    than ASCII characters is simply wrong, not an error)."""
    return isinstance(sent, str) and bool(expected) and \
        hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), expected.encode())


def _same_origin(request: web.Request) -> bool:
    """A browser names the page a form came from: it must be this server (the CSRF token is checked too). Behind a
    reverse proxy that passes on a Host of its own (nginx's default is the upstream's address) this server is also
    what SHEPHERD_PUBLIC_URL names."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    sent = urlsplit(origin).netloc
    public = request.app[SHEPHERD].public_url
    return sent == request.host or (bool(public) and sent == urlsplit(public or "").netloc)


def error_page(request: web.Request, status: int, title: str, message: str) -> web.Response:
    return html(render_text(request.app, "error.html", title=title, message=message, code=status,
                            principal=None, nav=(), here=request.path), status=status)


# --- sign-in and sign-out ------------------------------------------------------------------------


async def sign_in_form(request: web.Request) -> web.StreamResponse:
    return _sign_in_page(request)


def _sign_in_page(request: web.Request, *, error: str = "", status: int = 200) -> web.Response:
    return _form_page(request, "signin.html", status=status, error=error,
                      next=safe_next(request.rel_url.query.get("next")))


def _form_page(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    """A page with a form posted before there is a session (sign-in, a link's button): its CSRF secret goes in the
    form and in a short-lived cookie of its own, and the POST must bring both (double submit)."""
    nonce = secrets.token_urlsafe(24)
    body = render_text(request.app, template, nonce=nonce, principal=None, nav=(), here=request.path, **context)
    response = html(body, status=status)
    _set_cookie(response, request, SIGNIN_COOKIE, nonce, 15 * 60)
    return response


def _form_came_from_its_page(request: web.Request, form: Form) -> bool:
    return _matches(form.get("_csrf"), request.cookies.get(SIGNIN_COOKIE, "")) and _same_origin(request)


def _signed_in(request: web.Request, signed: SignedIn, location: str, how: str) -> web.Response:
    """Where a browser goes once signed in, with its session cookie (and without the form's)."""
    response = see_other(location)
    _set_cookie(response, request, SESSION_COOKIE, signed.secret, int(request.app[SHEPHERD].web_sessions.ttl_s))
    _forget(response, SIGNIN_COOKIE)
    log.info("dashboard sign-in %s: %s of org %s", how, signed.principal.actor, signed.principal.org_id)
    return response


async def sign_in(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    if isinstance(form, web.Response):
        return form
    if not _form_came_from_its_page(request, form):
        log.info("dashboard sign-in refused: CSRF check failed from %s", request.remote)
        return _sign_in_page(request, status=403,
                             error="This sign-in form has expired or did not come from this page: try again.")
    token = form.get("token")
    shepherd = request.app[SHEPHERD]
    try:
        signed = await shepherd.web_sessions.open(token if isinstance(token, str) else "")
    except ShepherdError as exc:
        log.info("dashboard sign-in refused (%s) from %s", exc.code, request.remote)
        message = exc.message if exc.status == 400 else "That token is not a live Shepherd API token."
        return _sign_in_page(request, status=exc.status, error=message)
    nxt = form.get("next")
    return _signed_in(request, signed, safe_next(nxt if isinstance(nxt, str) else None), "with a token")


async def link_form(request: web.Request) -> web.StreamResponse:
    """A sign-in link from chat: a button to press. Opening it spends nothing (chat link previews open every link)."""
    code = request.rel_url.query.get("code", "")
    try:
        holder = await request.app[SHEPHERD].web_sessions.link_holder(code)
    except ShepherdError as exc:
        return error_page(request, exc.status, "Sign-in link", exc.message)
    return _link_page(request, code, holder)


def _link_page(request: web.Request, code: str, holder: str) -> web.Response:
    # (the pages' Referrer-Policy is same-origin: the code in this address never leaves for another site; no-referrer
    # would make the browser send `Origin: null` with the form, which the origin check refuses)
    return _form_page(request, "signin_link.html", code=code, holder=holder, error="")


async def sign_in_by_link(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    if isinstance(form, web.Response):
        return form
    code = form.get("code")
    if not isinstance(code, str) or not _form_came_from_its_page(request, form):
        log.info("dashboard link sign-in refused: CSRF check failed from %s", request.remote)
        return error_page(request, 403, "Refused", "This sign-in did not come from its own page: open the link "
                                                   "again and press the button there.")
    try:
        signed = await request.app[SHEPHERD].web_sessions.redeem_link(code)
    except ShepherdError as exc:
        return error_page(request, exc.status, "Sign-in link", exc.message)
    return _signed_in(request, signed, "/ui/", "by a link")


async def sign_out(ui: UiRequest) -> web.StreamResponse:
    await ui.shepherd.web_sessions.close(ui.http.cookies.get(SESSION_COOKIE, ""))
    response = see_other("/ui/sign-in")
    _forget(response, SESSION_COOKIE)
    return response


# --- every other page ----------------------------------------------------------------------------


def signed_in(route: UiRoute) -> web.Handler:
    """The aiohttp handler of a page: the session checked, a POST's form read and CSRF-checked, and every failure
    a user can act on shown as a page (a stream answers its status with a line of text)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        shepherd = request.app[SHEPHERD]
        secret = request.cookies.get(SESSION_COOKIE, "")
        try:
            principal = await shepherd.web_sessions.principal(secret)
        except Unauthorized as exc:
            if route.stream or request.method not in ("GET", "HEAD"):
                response = error_page(request, 401, "Signed out", f"{exc.message}.")
            else:
                where = request.rel_url.path_qs
                response = see_other("/ui/sign-in" + (f"?next={quote(where, safe='')}" if where != "/ui/" else ""))
            if secret:
                _forget(response, SESSION_COOKIE)
            return response
        ui = UiRequest(http=request, principal=principal, shepherd=shepherd, csrf=csrf_for(secret))
        if request.method == "POST":
            form = await read_form(request)
            if isinstance(form, web.Response):
                return form
            ui.form = form
            if not _matches(form.get("_csrf"), ui.csrf) or not _same_origin(request):
                log.info("dashboard POST %s refused: CSRF check failed (%s)", request.path, principal.actor)
                return error_page(request, 403, "Refused",
                                  "This form did not come from a page of this session (its CSRF token is missing "
                                  "or wrong), so nothing was done. Reload the page and try again.")
        try:
            return await route.handler(ui)
        except ShepherdError as exc:
            if route.stream:
                return web.Response(status=exc.status, text=exc.message)
            return error_page(request, exc.status, _TITLES.get(exc.status, "Cannot do that"), exc.message)

    return handler


async def still_signed_in(ui: UiRequest) -> bool:
    """Reads the session of a live page again, and acts as who it is now (a lowered role shows no controls it no
    longer has); False once it has ended: signed out, expired, or its token revoked."""
    try:
        ui.principal = await ui.shepherd.web_sessions.principal(ui.http.cookies.get(SESSION_COOKIE, ""))
    except Unauthorized:
        return False
    return True


async def while_signed_in(ui: UiRequest, items: AsyncIterator[Sse]) -> AsyncIterator[Sse]:
    """A live page's `items` for as long as its session lasts: the session is read again before each event goes out
    (one read by primary key; a follow sends a tick's lines as one event), so signing out, its expiry or a revoked
    token stop the stream there with `end`, not when what it follows ends (a task's log went on streaming to a
    signed-out browser)."""
    try:
        async for item in items:
            if item.event == "end":  # shows nothing
                yield item
                return
            if not await still_signed_in(ui):
                yield Sse(event="end", data={})
                return
            yield item
    finally:
        await items.aclose()  # type: ignore[attr-defined]


_TITLES = {400: "Cannot do that", 403: "Not allowed", 404: "Not found", 409: "Not now", 503: "Try again later"}
