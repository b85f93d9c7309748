"""The agents pages: the list (filters by type, status and project; keyset pages as the REST CodeSpar dialect
reads them) and a page per agent with its autonomy level, state, stats and recent events, and the actions
(suspend, resume, restart, set level) its viewer's scopes allow. Core decides who may do what: a form posted by
someone who may not is refused there (a 403 page), whatever the page showed."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web

from adapters.web.ui import UiRequest, UiRoute, see_other, whole_number
from core.agents import LEVEL_NAMES, MAX_LEVEL, MIN_LEVEL, AgentAction, AgentFilter, AgentStatus, uptime
from core.clock import utcnow
from core.errors import ValidationFailed
from core.people.access import Scope

PAGE_SIZE = 25
RECENT_EVENTS = 10
# what each level lets the agent do by itself (core.autonomy.policy's table, in words)
LEVEL_MEANINGS = {
    0: "reads only; every other action is refused.",
    1: "reads by itself; asks people before any change (low risk and above).",
    2: "does low-risk actions by itself; asks before medium risk and above.",
    3: "does low and medium risk actions by itself; asks before high and critical ones.",
    4: "does everything but critical actions by itself; asks before critical ones.",
    5: "does everything by itself except the always-ask list (production deploy, rollback, "
       "force-push, secrets).",
}
STATUS_TONE = {"ACTIVE": "ok", "IDLE": "", "SUSPENDED": "warn", "ERROR": "bad"}


def level_label(level: int) -> str:
    return f"L{level} {LEVEL_NAMES.get(level, '?')}"


def _status(value: str) -> AgentStatus | None:
    if not value:
        return None
    try:
        return AgentStatus(value.upper())
    except ValueError:
        raise ValidationFailed(f"status must be one of {', '.join(s.value for s in AgentStatus)}",
                               code="INVALID_STATUS") from None


def _limit(value: str) -> int:
    if not value:
        return PAGE_SIZE
    return whole_number(value, 100, code="INVALID_LIMIT", message="limit must be a whole number from 1 to 100")


async def agents_list(ui: UiRequest) -> web.StreamResponse:
    flt = AgentFilter(type=ui.query("type") or None, status=_status(ui.query("status")),
                      project_id=ui.query("project") or None)
    limit = _limit(ui.query("limit"))
    page = await ui.shepherd.agents.page(ui.principal, flt, limit=limit, cursor=ui.query("cursor") or None)
    types = await ui.shepherd.agents.types(ui.principal)
    projects = await ui.shepherd.projects.list(ui.principal)
    names = {p.id: p.name for p in projects}
    now = utcnow()
    rows = [{"id": r.id, "name": r.name, "type": r.type, "status": r.status, "tone": STATUS_TONE.get(r.status, ""),
             "level": level_label(r.autonomy_level), "project_id": r.project_id,
             "project": names.get(r.project_id or "", r.project_id or ""), "uptime": uptime(r.started_at, now)}
            for r in page.rows]
    kept: dict[str, Any] = {k: v for k, v in (("type", flt.type or ""), ("status", ui.query("status").upper()),
                                              ("project", flt.project_id or "")) if v}
    if limit != PAGE_SIZE:
        kept["limit"] = str(limit)
    return ui.render("agents.html", rows=rows, total=page.total, next_cursor=page.next_cursor,
                     paged=bool(ui.query("cursor")), kept=kept, types=[t.type for t in types],
                     statuses=[s.value for s in AgentStatus], projects=projects)


async def agent_page(ui: UiRequest) -> web.StreamResponse:
    view = await ui.shepherd.agents.get(ui.principal, ui.path("agent_id"))
    events = await ui.shepherd.events.list(ui.principal, agent_id=view.agent.id, limit=RECENT_EVENTS)
    a = view.agent
    # without `approve` a level may only be lowered (core refuses a raise): offer only those
    top = MAX_LEVEL if ui.can(Scope.APPROVE) else a.autonomy_level
    levels = [(n, level_label(n)) for n in range(MIN_LEVEL, top + 1)]
    meanings = [(level_label(n), text) for n, text in LEVEL_MEANINGS.items()]
    return ui.render("agent.html", agent=a, project=view.project, uptime=view.uptime(),
                     level=level_label(a.autonomy_level), meaning=LEVEL_MEANINGS.get(a.autonomy_level, ""),
                     meanings=meanings, events=events, levels=levels, tone=STATUS_TONE.get(a.status, ""),
                     suspended=a.status == AgentStatus.SUSPENDED)


async def agent_action(ui: UiRequest) -> web.StreamResponse:
    agent_id = ui.path("agent_id")
    action = ui.field("action")
    params = {"level": ui.field("level")} if action == AgentAction.SET_AUTONOMY.value else None
    await ui.shepherd.agents.act(ui.principal, agent_id, action, params)
    return see_other(f"/ui/agents/{quote(agent_id, safe='')}")


ROUTES = [
    UiRoute("GET", "/ui/agents", agents_list, name="uiAgents"),
    UiRoute("GET", "/ui/agents/{agent_id}", agent_page, name="uiAgent"),
    UiRoute("POST", "/ui/agents/{agent_id}/action", agent_action, name="uiAgentAction"),
]
