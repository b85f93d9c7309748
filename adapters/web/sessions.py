"""The sessions pages: a page of the sessions one may read (search, archived too, paging), and a session's page
with its loop state and budget, its tasks, and its replay (core.sessions.history) a page of entries at a time.

Another org's session, or a private one of someone else's, is not found (core decides: 404)."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from adapters.web.ui import UiRequest, UiRoute, whole_number
from core.sessions.fields import LoopSettings

PAGE = 25  # sessions per page
REPLAY_PAGE = 200  # replay entries per page
MAX_OFFSET = 1_000_000


def _page_number(ui: UiRequest) -> int:
    return whole_number(ui.query("page", "1"), MAX_OFFSET // PAGE, code="INVALID_PAGE",
                        message="page is a whole number from 1")


async def sessions_page(ui: UiRequest) -> web.StreamResponse:
    number = _page_number(ui)
    search = ui.query("q")
    archived = ui.query("archived") == "1"
    page = await ui.shepherd.sessions.list(ui.principal, search=search or None, include_archived=archived,
                                           limit=PAGE, offset=(number - 1) * PAGE)
    views = await ui.shepherd.sessions.views(ui.principal, page.rows)
    pages = max(1, -(-page.total // PAGE))

    def link(n: int) -> str:
        params = {"page": str(n), **({"q": search} if search else {}), **({"archived": "1"} if archived else {})}
        return "/ui/sessions?" + urlencode(params)

    return ui.render("sessions.html", views=views, total=page.total, number=number, pages=pages, search=search,
                     archived=archived, link=link)


async def session_page(ui: UiRequest) -> web.StreamResponse:
    session_id = ui.path("session_id")
    view = await ui.shepherd.sessions.view(ui.principal, session_id)  # NotFound: another org's, or hidden
    tasks = await ui.shepherd.sessions.tasks_of(ui.principal, session_id)
    after = ui.query("after") or None
    replay = await ui.shepherd.history.replay(ui.principal, session_id, after=after, limit=REPLAY_PAGE)
    row = view.row
    loop = LoopSettings.of(row) if row.workflow_mode == "loop" else None
    budget = [(label, value) for label, value in (("turns", row.max_turns), ("minutes", row.max_minutes),
                                                   ("cost", row.max_cost)) if value is not None]
    return ui.render("session.html", view=view, row=row, tasks=tasks, names={t.id: t.name for t in tasks},
                     replay=replay, after=after, loop=loop, budget=budget)


ROUTES = [
    UiRoute("GET", "/ui/sessions", sessions_page, name="uiSessions"),
    UiRoute("GET", "/ui/sessions/{session_id}", session_page, name="uiSession",
            patterns={"session_id": r"[A-Za-z0-9_-]{1,64}"}),
]
