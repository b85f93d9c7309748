"""The overview: counts by state, what waits for people, running tasks with their latest line, today's outcomes.

Everything comes from one core read (core.overview.Overviews.board); the chart is inline SVG drawn here, with a
table beside it that says the same in words (for screen readers and for those who do not see the colours).
The page stays live: /ui/overview/live reads the board again every few seconds and, when what it shows changed,
sends it whole (a `replace` event); it ends when the session does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from adapters.rest.sse import Sse, stream
from adapters.web.auth import still_signed_in
from adapters.web.ui import UiRequest, UiRoute
from core.agents import AgentStatus
from core.clock import utcnow
from core.tasks.state import TaskStatus

LIVE_EVERY_S = web.AppKey("ui_overview_live_s", float)  # how often the live overview reads the board again
LIVE_DEFAULT_S = 2.0

# the bars' colours; every bar also carries its name and its number as text
_FILL = {"succeeded": "#1e7a3c", "failed": "#b3261e", "denied": "#8a5a00", "timed_out": "#8a5a00",
         "cancelled": "#5b6570", "interrupted": "#5b6570", "budget_exceeded": "#8a5a00"}
CHART_W, LABEL_W, NUMBER_W, BAR_H, GAP = 420, 130, 40, 18, 8


@dataclass(frozen=True)
class Bar:
    label: str
    n: int
    y: int
    width: int
    fill: str


def bars(outcomes: dict[str, int]) -> tuple[list[Bar], int]:
    """The chart's bars (one per outcome, in core's order) and the SVG's height."""
    most = max(outcomes.values(), default=0) or 1
    room = CHART_W - LABEL_W - NUMBER_W
    out = [Bar(name.replace("_", " "), n, GAP + i * (BAR_H + GAP), round(room * n / most), _FILL.get(name, "#1f5fae"))
           for i, (name, n) in enumerate(outcomes.items())]
    return out, GAP + len(out) * (BAR_H + GAP)


async def _board(ui: UiRequest) -> dict[str, Any]:
    """The overview's context (the page's and the live fragment's)."""
    board = await ui.shepherd.overview.board(ui.principal)
    chart, height = bars(board.outcomes)
    task_cards = [(s.value, board.counts.tasks.get(s.value, 0)) for s in TaskStatus]
    agent_cards = [(s.value, board.counts.agents.get(s.value, 0)) for s in AgentStatus]
    return {"board": board, "task_cards": task_cards, "agent_cards": agent_cards, "chart": chart, "chart_w": CHART_W,
            "chart_h": height, "label_w": LABEL_W, "bar_h": BAR_H, "now": utcnow(),
            "finished_today": sum(board.outcomes.values())}


async def overview(ui: UiRequest) -> web.StreamResponse:
    return ui.render("overview.html", **await _board(ui))


async def overview_live(ui: UiRequest) -> web.StreamResponse:
    every = ui.http.app.get(LIVE_EVERY_S, LIVE_DEFAULT_S)

    async def items() -> AsyncIterator[Sse]:
        shown = ""
        n = 0
        while True:
            await asyncio.sleep(every)
            if not await still_signed_in(ui):  # a signed-out or revoked session sees nothing more
                yield Sse(event="end", data={})
                return
            html = ui.fragment("overview_board.html", **await _board(ui))
            if html != shown:  # a replace is the whole board: a reconnect needs no Last-Event-ID to catch up
                shown, n = html, n + 1
                yield Sse(event="replace", data={"target": "overview-board", "html": html}, id=str(n))

    return await stream(ui.http, items())


ROUTES = [UiRoute("GET", "/ui/", overview, name="uiOverview"),
          UiRoute("GET", "/ui/overview/live", overview_live, name="uiOverviewLive", stream=True)]
