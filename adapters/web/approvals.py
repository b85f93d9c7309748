"""The approvals page: what waits for a decision (oldest first) with who has voted, Approve and Reject for those who
may decide, and the last decisions; kept live by a stream that polls core, so a decision made in any channel or any
process shows up without a reload.

Core decides everything about a vote (the approve scope, the org, self-approval, a decided confirmation); this page
only passes it on and shows core's refusals as pages with their status (403, 404, 409).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from adapters.rest.sse import FOLLOW_POLL, Sse, stream
from adapters.web.auth import still_signed_in
from adapters.web.ui import UiRequest, UiRoute, see_other
from core.autonomy.boards import Board
from core.autonomy.confirmations import Confirmation
from core.autonomy.prompts import render
from core.errors import NotFound

VIA = "web"
DECIDED = 20  # the last decisions shown under the pending ones
POLL_S = 1.0  # how often the live page asks core what changed (every process writes the same database)
TARGET = "approvals-board"  # the element a live update replaces
# a risk as a state box: the word says it, the box's style repeats it for those who do not see colours
RISK_STATE = {"read": "ok", "low": "ok", "medium": "warn", "high": "bad", "critical": "bad"}
OUTCOME_STATE = {"approved": "ok", "rejected": "bad", "expired": "warn", "void": "warn"}


def fingerprint(board: Board) -> str:
    """What the page shows that can change, as a short digest: a live page is sent a new board only when it
    differs (ages count on by themselves and are not news)."""
    parts = [f"p:{c.id}:{c.approvals}:{len(board.votes.get(c.id, []))}" for c in board.pending]
    parts += [f"d:{c.id}:{c.status}:{c.execution}" for c in board.decided]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _board_context(board: Board) -> dict[str, Any]:
    def prompt(conf: Confirmation) -> str:
        return render(conf, board.task_names.get(conf.task_id or "")).text

    return {"board": board, "prompt": prompt, "risk_state": RISK_STATE, "outcome_state": OUTCOME_STATE,
            "seen": fingerprint(board), "target": TARGET}


async def approvals_page(ui: UiRequest) -> web.StreamResponse:
    board = await ui.shepherd.approval_boards.of(ui.principal, decided=DECIDED)
    voted: Confirmation | None = None
    ref = ui.query("voted")
    if ref:  # back from a vote: what became of it, as every channel shows it now
        try:
            voted = await ui.shepherd.confirmations.get(ui.principal, ref)
        except NotFound:
            voted = None
    return ui.render("approvals.html", voted=voted,
                     voted_text=render(voted, board.task_names.get(voted.task_id or "")).text if voted else "",
                     **_board_context(board))


async def live(ui: UiRequest) -> web.StreamResponse:
    """The board again each time what it shows changed. The event id is the board's fingerprint: a page that
    reconnects (Last-Event-ID) or has just been rendered (?seen=) is sent nothing until something changes."""
    await ui.shepherd.approval_boards.of(ui.principal, decided=0, limit=1)  # refused now, not in the stream
    seen = ui.http.headers.get("Last-Event-ID") or ui.query("seen")
    poll = min(POLL_S, ui.http.app.get(FOLLOW_POLL, POLL_S))

    async def boards() -> AsyncIterator[Sse]:
        last = seen
        while True:
            if not await still_signed_in(ui):  # signed out (or the token revoked) while the page is open
                yield Sse(event="end", data={})
                return
            board = await ui.shepherd.approval_boards.of(ui.principal, decided=DECIDED)
            now = fingerprint(board)
            if now != last:
                last = now
                html = ui.fragment("approvals_board.html", **_board_context(board))
                yield Sse(event="replace", data={"target": TARGET, "html": html}, id=now)
            await asyncio.sleep(poll)

    return await stream(ui.http, boards())


def _decide(approve: bool) -> Any:
    async def handler(ui: UiRequest) -> web.StreamResponse:
        field = "comment" if approve else "reason"
        result = await ui.shepherd.confirmations.vote(ui.principal, ui.path("ref"), approve=approve,
                                                      comment=ui.field(field), via=VIA)
        return see_other(f"/ui/approvals?voted={result.confirmation.code}")

    return handler


_REF = {"ref": r"[A-Za-z0-9_-]{1,64}"}
ROUTES = [
    UiRoute("GET", "/ui/approvals", approvals_page, name="uiApprovals"),
    UiRoute("GET", "/ui/approvals/live", live, name="uiApprovalsLive", stream=True),
    UiRoute("POST", "/ui/approvals/{ref}/approve", _decide(True), name="uiApprove", patterns=_REF),
    UiRoute("POST", "/ui/approvals/{ref}/reject", _decide(False), name="uiReject", patterns=_REF),
]
