"""The Agentuity coder hub's session data and users (shared/seeds/002, "Session Data" and "Users"):
GET /hub/session/{sessionId}/replay (`?follow=true`: Server-Sent Events), GET /hub/session/{sessionId}/events/history
and GET /hub/users. camelCase, every documented key present (null where Shepherd has no value)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from pydantic import Field

from adapters.rest.framework import ApiModel, ApiRequest, Result, Route, Shaped
from adapters.rest.sse import Sse, stream
from core.clock import iso
from core.errors import Forbidden
from core.people.access import Principal
from core.people.directory import MAX_PAGE as MAX_USERS
from core.sessions.history import EVENTS_PAGE, FOLLOW_POLL_S, MAX_EVENTS_PAGE, MAX_REPLAY_PAGE, REPLAY_PAGE, Ended
from core.sessions.replay import Mark, Source
from core.store.models import Event

REPLAY_POLL = web.AppKey("replay_poll_s", float)  # how often a followed replay looks for new entries (tests: less)


def _same_org(principal: Principal, org_id: str | None) -> None:
    if org_id is not None and org_id != principal.org_id:
        raise Forbidden("orgId does not match this token's org", code="ORG_MISMATCH")


# --- wire models (the OpenAPI document's; answers are built as JSON-ready dicts that keep their nulls) --------


class OrgQuery(ApiModel):
    org_id: str | None = Field(default=None, max_length=64, description="Must equal the token's org when sent")


class ReplayQuery(OrgQuery):
    follow: bool = Field(default=False, description="true: answer as Server-Sent Events (`entry` events, each "
                         "with the entry's id as its id; then new entries as they come; `end` when the session "
                         "is archived or deleted). A Last-Event-ID header resumes after that entry")
    after_id: str | None = Field(default=None, max_length=40, description="Only entries after this entry id")
    limit: int = Field(default=REPLAY_PAGE, ge=1, le=MAX_REPLAY_PAGE, description="Entries per page")


class SourceCounts(ApiModel):
    durable_stream: int
    session_entries: int
    event_history: int


class ReplayEntry(ApiModel):
    id: str = Field(description="Orders entries in time (compare as strings); stable: page with afterId")
    type: str = Field(description="user_prompt | runtime_output | turn | task_result | runtime_status | "
                                  "confirmation_request | confirmation_decision")
    timestamp: str
    task_id: str | None
    content: str = Field(description="The text: a prompt, a line of output, or what happened in words")
    data: dict[str, Any] = Field(description="The entry's details by type (turn: phase, turn, outcome; ...)")
    source: str = Field(description="sessionEntries (a task's log) or eventHistory (the event log)")


class Replay(ApiModel):
    session_id: str
    entries_source: str = Field(description="The sources of this page's entries joined by +, or none")
    source_counts: SourceCounts
    entries: list[ReplayEntry]
    next_after_id: str | None = Field(description="Shepherd's: the afterId of the next page; null at the end")


class EventsQuery(OrgQuery):
    limit: int = Field(default=EVENTS_PAGE, ge=1, le=MAX_EVENTS_PAGE)
    before_id: int | None = Field(default=None, ge=1, le=2**62,  # beyond, no SQL integer holds it (a 500)
                                  description="Only events older than this event id")


class HistoryEvent(ApiModel):
    id: int
    event: str
    category: str
    agent: str | None
    task_id: str | None
    payload: Any
    occurred_at: str
    ingested_at: str


class EventHistory(ApiModel):
    session_id: str
    events: list[HistoryEvent]
    limit: int
    next_before_id: int | None = Field(description="Shepherd's: the beforeId of the next page; null at the end")


class UsersQuery(OrgQuery):
    search: str = Field(default="", max_length=200, description="Part of a name or of a channel's id for them")
    limit: int = Field(default=50, ge=1, le=MAX_USERS)
    offset: int = Field(default=0, ge=0, le=1_000_000)


class HubUser(ApiModel):
    user_id: str
    display_name: str
    email: str | None
    provider: str = Field(description="The channel that first knew them (slack, telegram, github, ...) or shepherd")
    avatar_url: str | None
    last_login_at: str | None = Field(description="Their last activity Shepherd knows (a task, a vote), or null")
    last_seen_at: str | None
    created_at: str


class Users(ApiModel):
    users: list[HubUser]
    total: int
    limit: int
    offset: int


# --- handlers --------------------------------------------------------------------------------------------------


async def replay(req: ApiRequest) -> Any:
    q: ReplayQuery = req.query
    _same_org(req.principal, q.org_id)
    sid = req.path("sessionId")
    history = req.shepherd.history
    if q.follow:
        await history.session(req.principal, sid)  # a 404 answers as JSON, before the stream begins
        after = q.after_id or req.http.headers.get("Last-Event-ID") or None
        if after:  # a cursor it cannot read is a JSON 400 here: once the stream began, it could only end empty
            Mark.parse(after)
        poll = req.http.app.get(REPLAY_POLL, FOLLOW_POLL_S)

        async def items() -> AsyncIterator[Sse]:
            async for item in history.follow(req.principal, sid, after=after, poll_s=poll):
                if isinstance(item, Ended):
                    yield Sse({"sessionId": sid, "reason": item.reason}, event="end")
                else:
                    yield Sse(item.to_json(), event="entry", id=item.mark.id)

        return await stream(req.http, items())
    page = await history.replay(req.principal, sid, after=q.after_id, limit=q.limit)
    return Result(Shaped({
        "sessionId": sid, "entriesSource": page.source,
        "sourceCounts": {s.value: page.counts.get(s, 0) for s in Source},
        "entries": [e.to_json() for e in page.entries], "nextAfterId": page.next_after,
    }))


def _event(e: Event) -> dict[str, Any]:
    at = iso(e.occurred_at)
    return {"id": e.id, "event": e.name, "category": e.category, "agent": e.agent_id, "taskId": e.task_id,
            "payload": e.payload, "occurredAt": at, "ingestedAt": at}  # written in the transaction it tells of


async def event_history(req: ApiRequest) -> Result:
    q: EventsQuery = req.query
    _same_org(req.principal, q.org_id)
    sid = req.path("sessionId")
    events, more = await req.shepherd.history.events(req.principal, sid, limit=q.limit, before_id=q.before_id)
    return Result(Shaped({"sessionId": sid, "events": [_event(e) for e in events], "limit": q.limit,
                          "nextBeforeId": events[-1].id if more and events else None}))


async def users(req: ApiRequest) -> Result:
    q: UsersQuery = req.query
    _same_org(req.principal, q.org_id)
    people, total = await req.shepherd.directory.search(req.principal, search=q.search, limit=q.limit,
                                                        offset=q.offset)
    listed = []
    for p in people:
        seen = iso(p.last_active_at) if p.last_active_at else None
        listed.append({"userId": p.user_id, "displayName": p.name, "email": None, "provider": p.provider,
                       "avatarUrl": None, "lastLoginAt": seen, "lastSeenAt": seen, "createdAt": iso(p.created_at)})
    return Result(Shaped({"users": listed, "total": total, "limit": q.limit, "offset": q.offset}))


_TAG = "hub (Agentuity)"
_SESSION = "/hub/session/{sessionId}"

ROUTES = [
    Route("GET", f"{_SESSION}/replay", replay,
          "A session's replay: typed entries rebuilt from its tasks' logs and its events, in time order, a page "
          "at a time (limit, afterId; nextAfterId names the next page). follow=true answers Server-Sent Events",
          response=Replay, query=ReplayQuery, errors=(400, 401, 403, 404), tag=_TAG,
          operation_id="hubSessionReplay", produces="text/event-stream"),
    Route("GET", f"{_SESSION}/events/history", event_history,
          "A session's events (its own and its tasks'), newest first: limit (at most 500) before beforeId",
          response=EventHistory, query=EventsQuery, errors=(400, 401, 403, 404), tag=_TAG,
          operation_id="hubSessionEventHistory"),
    Route("GET", "/hub/users", users,
          "The org's people: search (a name, or a Slack/Telegram/GitHub id of theirs), limit, offset",
          response=Users, query=UsersQuery, errors=(400, 401, 403), tag=_TAG, operation_id="hubListUsers"),
]
