"""The tasks pages: the list (filters, paging, a form to start one), a task's page (status, evidence, its
confirmations, its log, the controls) and its live stream (new log lines and status changes as they happen).

Core decides everything: who may see or steer a task (its org, the caller's scopes), what a control may do in
the task's state (a 409 page when not now). This module reads the form, calls core and renders."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from adapters.rest.sse import FOLLOW_POLL, Sse, stream
from adapters.web.auth import while_signed_in
from adapters.web.ui import UiRequest, UiRoute, see_other, whole_number
from core.clock import as_utc, utcnow
from core.errors import ValidationFailed
from core.store.models import Confirmation, Task
from core.tasks.budget import burn_down
from core.tasks.evidence import Evidence
from core.tasks.follow import Follow, TaskState, last_log_id
from core.tasks.service import STATUS_GROUPS, TaskFilter
from core.tasks.state import ACTIVE, FINISHED, GATED, TaskStatus
from core.tasks.steering import owner_of

PAGE_SIZE = 25
LOG_TAIL = 500  # log lines a task's page shows; the live stream adds what comes after
MAX_CURSOR = 2**62
_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"  # a task id or name; anything else is no task (the 404 page)

# a status as a word in a box whose class (shepherd.css .state) differs by border as well as colour
_STATE_CLASS = {
    TaskStatus.RUNNING: "run", TaskStatus.INITIALIZING: "run", TaskStatus.COMPLETED: "ok",
    TaskStatus.FAILED: "bad", TaskStatus.CANCELLED: "bad",
}


def state_class(status: str) -> str:
    try:
        return _STATE_CLASS.get(TaskStatus(status), "warn")
    except ValueError:
        return "warn"


def outcome_class(outcome: str | None) -> str:
    return "ok" if outcome == "succeeded" else "bad"


# --- the list --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListQuery:
    status: str
    owner: str  # "all" or "me"
    project: str
    page: int

    def link(self, **change: Any) -> str:
        values = {"status": self.status, "owner": self.owner, "project": self.project, "page": self.page, **change}
        shown = {k: v for k, v in values.items() if v and not (k == "owner" and v == "all")
                 and not (k == "page" and v == 1)}
        return "/ui/tasks" + (f"?{urlencode(shown)}" if shown else "")


def _list_query(ui: UiRequest) -> ListQuery:
    status = ui.query("status").lower()
    if status and status not in STATUS_GROUPS:
        raise ValidationFailed(f"unknown status {status!r}: one of {', '.join(STATUS_GROUPS)}",
                               code="INVALID_STATUS")
    owner = ui.query("owner", "all").lower() or "all"
    if owner not in ("all", "me"):
        raise ValidationFailed("owner is me or all", code="INVALID_OWNER")
    page = whole_number(ui.query("page", "1") or "1", 100_000, code="INVALID_PAGE", message="page is a number from 1")
    return ListQuery(status, owner, ui.query("project")[:100], page)


async def tasks_page(ui: UiRequest) -> web.StreamResponse:
    q = _list_query(ui)
    flt = TaskFilter(status=STATUS_GROUPS[q.status] if q.status else None,
                     owner_id=owner_of(ui.principal)[0] if q.owner == "me" else None,
                     project_id=q.project or None)
    rows, total = await ui.shepherd.tasks.list(ui.principal, flt, limit=PAGE_SIZE, offset=(q.page - 1) * PAGE_SIZE)
    projects = await ui.shepherd.projects.list(ui.principal)
    first = (q.page - 1) * PAGE_SIZE
    return ui.render(
        "tasks.html", tasks=rows, total=total, q=q, first=first + 1 if rows else 0, last=first + len(rows),
        newer=q.link(page=q.page - 1) if q.page > 1 else None,
        older=q.link(page=q.page + 1) if first + len(rows) < total else None,
        statuses=list(STATUS_GROUPS), projects=projects, project_names={p.id: p.name for p in projects},
        agents=ui.shepherd.catalog.names(), default_agent=ui.shepherd.tasks.default_runtime,
        state_class=state_class, outcome_class=outcome_class, now=utcnow(),
    )


async def start_task(ui: UiRequest) -> web.StreamResponse:
    """The start form: core checks the prompt, the agent, the repository, the level and the caller's scope."""
    level = ui.field("level")
    view = await ui.shepherd.tasks.create(
        ui.principal, prompt=ui.field("prompt"), runtime=ui.field("agent") or None, repo=ui.field("repo") or None,
        level=level or None,
    )
    return see_other(f"/ui/tasks/{view.task.id}")


# --- one task --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionLine:
    """One of the task's own actions (its pull request, its push): what it is and where it led."""

    action: str
    code: str
    ok: bool
    text: str
    url: str | None  # only an https address becomes a link


def _actions(evidence: Evidence) -> list[ActionLine]:
    lines = []
    for a in evidence.actions:
        text = a.describe()
        result = a.record.result
        url = result.url if result is not None and result.url and result.url.startswith("https://") else None
        lines.append(ActionLine(a.action, a.code, a.ok, text, url))
    return lines


def status_context(ui: UiRequest, task: Task) -> dict[str, Any]:
    """What the status panel (task_status.html) shows: the page renders it, the live stream renders it again."""
    status = TaskStatus(task.status)
    running_s = 0.0
    if status in ACTIVE and task.started_at is not None:
        running_s = max(0.0, (utcnow() - as_utc(task.started_at)).total_seconds())
    caps = ui.shepherd.tasks.runner_capabilities
    stopping = task.control in ("stop", "delete")
    return {
        "task": task, "status_class": state_class(task.status), "outcome_class": outcome_class(task.outcome),
        "evidence": Evidence.of(task), "budget": burn_down(task, running_s),
        "can_stop": status not in FINISHED and not stopping,
        "can_pause": caps.pause and status is TaskStatus.RUNNING and task.control is None,
        "can_resume": status is TaskStatus.PAUSED and task.control is None,
        "stopping": stopping, "finished": status in FINISHED, "gated": status in GATED,
    }


async def _confirmations(ui: UiRequest, task: Task) -> tuple[list[Confirmation], list[Confirmation]]:
    confs = ui.shepherd.confirmations
    pending = await confs.pending(ui.principal, task_id=task.id)
    decided = await confs.history(ui.principal, task_id=task.id, limit=200)
    decided.sort(key=lambda c: as_utc(c.decided_at or c.created_at), reverse=True)
    return pending, decided


async def task_page(ui: UiRequest) -> web.StreamResponse:
    task, rows = await ui.shepherd.tasks.logs(ui.principal, ui.path("task_id"), limit=LOG_TAIL, tail=True)
    pending, decided = await _confirmations(ui, task)
    after = rows[-1].id if rows else await last_log_id(ui.shepherd.db, [task.id])
    return ui.render(
        "task.html", rows=rows, hidden_lines=max(0, task.log_count - len(rows)), pending=pending, decided=decided,
        actions=_actions(Evidence.of(task)), live=f"/ui/tasks/{task.id}/live?after={after}",
        **status_context(ui, task),
    )


def _back(task: Task) -> web.Response:
    return see_other(f"/ui/tasks/{task.id}")


async def stop_task(ui: UiRequest) -> web.StreamResponse:
    return _back(await ui.shepherd.tasks.stop(ui.principal, ui.path("task_id")))


async def pause_task(ui: UiRequest) -> web.StreamResponse:
    return _back(await ui.shepherd.tasks.pause(ui.principal, ui.path("task_id")))


async def resume_task(ui: UiRequest) -> web.StreamResponse:
    return _back(await ui.shepherd.tasks.resume(ui.principal, ui.path("task_id")))


async def send_input(ui: UiRequest) -> web.StreamResponse:
    return _back(await ui.shepherd.tasks.send(ui.principal, ui.path("task_id"), ui.field("text")))


# --- live ------------------------------------------------------------------------------------------


def _cursor(text: str, what: str) -> int:
    text = text.strip()
    if not text:
        return 0
    if not text.isdecimal() or int(text) > MAX_CURSOR:
        raise ValidationFailed(f"{what} is a log line's id (a whole number)", code="INVALID_CURSOR")
    return int(text)


async def task_live(ui: UiRequest) -> web.StreamResponse:
    """The task's new log lines (`append`, each event's id the last line's id) and its status panel whenever its
    state changes (`replace`), until its turn is over (`end`). A browser reconnecting sends the last id it saw
    (Last-Event-ID), which wins over the `after` the page was rendered with: nothing is lost or shown twice."""
    task = await ui.shepherd.tasks.get(ui.principal, ui.path("task_id"))
    after = _cursor(ui.query("after"), "after")
    seen = ui.http.headers.get("Last-Event-ID", "").strip()
    if seen:  # a reconnect: the browser has every line up to this one
        after = _cursor(seen, "Last-Event-ID")
    return await stream(ui.http, while_signed_in(ui, _live_events(ui, task, after)))


async def _live_events(ui: UiRequest, task: Task, after: int) -> AsyncIterator[Sse]:
    follow = Follow(ui.shepherd.db, [task.id], after_id=after, pulse=ui.shepherd.output_written,
                    poll_s=ui.http.app.get(FOLLOW_POLL, 1.0))
    shown: TaskState | None = None
    first = True
    async for tick in follow.ticks():
        if tick.lines:
            yield Sse({"target": "task-log", "html": ui.fragment("task_lines.html", rows=tick.lines)},
                      event="append", id=str(tick.lines[-1].id))
        state = tick.states.get(task.id)
        if state is not None and (first or state != shown):
            # the panel as it is now (the page may have been rendered a moment before the stream opened)
            fresh = await ui.shepherd.tasks.get(ui.principal, task.id)
            yield Sse({"target": "task-status", "html": ui.fragment("task_status.html", **status_context(ui, fresh))},
                      event="replace")
            shown, first = state, False
    yield Sse({}, event="end")


_TASK = "/ui/tasks/{task_id}"
_PATTERNS = {"task_id": _ID}

ROUTES = [
    UiRoute("GET", "/ui/tasks", tasks_page, name="uiTasks"),
    UiRoute("POST", "/ui/tasks", start_task, name="uiStartTask"),
    UiRoute("GET", _TASK, task_page, name="uiTask", patterns=_PATTERNS),
    UiRoute("GET", f"{_TASK}/live", task_live, name="uiTaskLive", stream=True, patterns=_PATTERNS),
    UiRoute("POST", f"{_TASK}/stop", stop_task, name="uiTaskStop", patterns=_PATTERNS),
    UiRoute("POST", f"{_TASK}/pause", pause_task, name="uiTaskPause", patterns=_PATTERNS),
    UiRoute("POST", f"{_TASK}/resume", resume_task, name="uiTaskResume", patterns=_PATTERNS),
    UiRoute("POST", f"{_TASK}/send", send_input, name="uiTaskSend", patterns=_PATTERNS),
]
