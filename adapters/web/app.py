"""Mounts the dashboard on Shepherd's aiohttp app: sign-in and sign-out, each page module's routes behind the
session check, the static files, and an HTML 404 for any other /ui/ address."""

from __future__ import annotations

from aiohttp import web

from adapters.web import agents, approvals, auth, overview, sessions, tasks
from adapters.web.render import ENV, STATIC, environment
from adapters.web.ui import UiRequest, UiRoute


def routes() -> list[UiRoute]:
    return [*overview.ROUTES, *tasks.ROUTES, *approvals.ROUTES, *agents.ROUTES, *sessions.ROUTES,
            UiRoute("POST", "/ui/sign-out", auth.sign_out, name="uiSignOut")]


async def _not_found(ui: UiRequest) -> web.StreamResponse:
    return ui.render("error.html", status=404, title="Not found", message="There is no page at this address.",
                     code=404)


async def _slash(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect("/ui/")


def mount_ui(app: web.Application, *, secure_cookies: bool = False) -> None:
    app[ENV] = environment()
    app[auth.SECURE] = secure_cookies
    app.router.add_get("/ui", _slash)
    app.router.add_get("/ui/sign-in", auth.sign_in_form, name="uiSignInForm")
    app.router.add_post("/ui/sign-in", auth.sign_in, name="uiSignIn")
    app.router.add_get("/ui/sign-in/link", auth.link_form, name="uiSignInLinkForm")
    app.router.add_post("/ui/sign-in/link", auth.sign_in_by_link, name="uiSignInLink")
    app.router.add_static("/ui/static", STATIC, name="uiStatic")
    for route in routes():
        path = route.path
        for name, pattern in route.patterns.items():
            path = path.replace(f"{{{name}}}", f"{{{name}:{pattern}}}")
        if route.method == "GET" and not route.stream:  # HEAD as GET (a monitor's check), not the catch-all's 404
            app.router.add_get(path, auth.signed_in(route), name=route.name or None)
        else:
            app.router.add_route(route.method, path, auth.signed_in(route), name=route.name or None)
    # the rest of /ui/: a page (for the signed in) saying there is none, not the API's JSON
    app.router.add_get("/ui/{rest:.*}", auth.signed_in(UiRoute("GET", "/ui/{rest}", _not_found)))
