"""The overview: counts by state, what waits for people, running tasks with their latest line, today's outcomes."""

from __future__ import annotations

from aiohttp import web

from adapters.web.ui import UiRequest, UiRoute


async def overview(ui: UiRequest) -> web.StreamResponse:
    return ui.render("overview.html")


ROUTES = [UiRoute("GET", "/ui/", overview, name="uiOverview")]
