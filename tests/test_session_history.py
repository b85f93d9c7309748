"""The Agentuity hub's session data (seed 002, "Session Data" and "Users") over real HTTP: a session's replay
rebuilt from its tasks' logs and events (paged, and followed live as Server-Sent Events), its event history, and
the org's people. Tasks run for real by the demo agent."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse
from sqlmodel import select

from adapters.rest.agentuity_history import REPLAY_POLL
from adapters.rest.sse import SSE_HEARTBEAT
from core.people.access import Principal, Role
from core.store.models import Event, Session, Task
from tests.test_rest_coder import Rig, served

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
ENTRY_KEYS = {"id", "type", "timestamp", "taskId", "content", "data", "source"}
EVENT_KEYS = {"id", "event", "category", "agent", "taskId", "payload", "occurredAt", "ingestedAt"}
USER_KEYS = {"userId", "displayName", "email", "provider", "avatarUrl", "lastLoginAt", "lastSeenAt", "createdAt"}


@contextlib.asynccontextmanager
async def hub(db_url: str, root: Path) -> AsyncIterator[Rig]:
    """The served app of test_rest_coder with a runner, its followed replays polling and beating fast."""
    async with served(db_url, root, app_keys={REPLAY_POLL: 0.05, SSE_HEARTBEAT: 0.2}) as rig:
        yield rig


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with hub(db_url, tmp_path) as r:
        yield r


@pytest.fixture
async def lite(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    """SQLite only: what the store does not change."""
    async with hub(sqlite_url, tmp_path) as r:
        yield r


async def me(rig: Rig) -> Principal:
    return await rig.shepherd.tokens.authenticate(rig.token)


async def settled(rig: Rig, task_id: str, turns: int, timeout: float = 30) -> Task:
    """The task once its `turns`-th turn has ended (and no follow-up waits)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with rig.shepherd.db.read() as session:
            task = await session.get(Task, task_id)
        assert task is not None
        if task.turns >= turns and task.status in ("completed", "failed") and not task.pending_inputs:
            return task
        assert asyncio.get_running_loop().time() < deadline, f"{task.status} turn {task.turns}"
        await asyncio.sleep(0.05)


async def two_tasks(rig: Rig) -> tuple[Session, Task, Task]:
    """A session with two demo tasks: one answered a follow-up, the other failed."""
    alice = await me(rig)
    sess = await rig.shepherd.sessions.create(alice, task="tidy the docs", start=False)
    first = (await rig.shepherd.tasks.create(alice, prompt="tidy the docs", runtime="demo",
                                             session_id=sess.id)).task
    await settled(rig, first.id, 1)
    await rig.shepherd.tasks.send(alice, first.id, "and the changelog")
    failing = (await rig.shepherd.tasks.create(alice, prompt="break it [fail]", runtime="demo",
                                               session_id=sess.id)).task
    return sess, await settled(rig, first.id, 2), await settled(rig, failing.id, 1)


def story(entries: list[dict[str, Any]], task_id: str) -> list[str]:
    """A task's entries as a story: its types in order, each run of output lines one `runtime_output`, status
    notes left out (queued, ... : how many depends on the runner's timing)."""
    told: list[str] = []
    for e in entries:
        if e["taskId"] != task_id or e["type"] == "runtime_status":
            continue
        word = e["type"] if e["type"] != "turn" else f"turn {e['data']['phase']}"
        if not (told and told[-1] == word == "runtime_output"):
            told.append(word)
    return told


async def replay(rig: Rig, sid: str, query: str = "", token: str | None = None) -> tuple[int, Any]:
    return await rig.call("GET", f"/hub/session/{sid}/replay{query}", token=token)


async def test_a_session_replays_its_tasks_in_order_with_their_types(rig: Rig) -> None:
    sess, first, failing = await two_tasks(rig)
    status, body = await replay(rig, sess.id)
    assert status == 200, body
    assert set(body) == {"sessionId", "entriesSource", "sourceCounts", "entries", "nextAfterId"}
    entries = body["entries"]
    assert body["sessionId"] == sess.id and body["nextAfterId"] is None
    assert body["entriesSource"] == "sessionEntries+eventHistory"
    counts = body["sourceCounts"]
    assert counts["durableStream"] == 0
    assert counts["sessionEntries"] == sum(e["source"] == "sessionEntries" for e in entries) > 0
    assert counts["eventHistory"] == sum(e["source"] == "eventHistory" for e in entries) > 0
    assert all(set(e) == ENTRY_KEYS and ISO.match(e["timestamp"]) for e in entries)
    assert [e["id"] for e in entries] == sorted(e["id"] for e in entries), "ids order the replay"
    assert [e["timestamp"] for e in entries] == sorted(e["timestamp"] for e in entries), "in time order"

    one_turn = ["user_prompt", "turn started", "runtime_output", "turn ended", "task_result"]
    assert story(entries, first.id) == one_turn * 2, "the prompt, then the follow-up's turn"
    assert story(entries, failing.id) == one_turn
    prompts = [e["content"] for e in entries if e["type"] == "user_prompt" and e["taskId"] == first.id]
    assert prompts == ["tidy the docs", "and the changelog"], "a task's own prompt is its first user_prompt"
    results = {e["taskId"]: e for e in entries if e["type"] == "task_result"}
    assert results[failing.id]["data"]["outcome"] == "failed"
    assert results[failing.id]["data"]["evidence"]["exitCode"] == 3
    assert results[first.id]["data"]["outcome"] == "succeeded" and results[first.id]["data"]["turn"] == 2
    turns = [e["data"] for e in entries if e["type"] == "turn" and e["taskId"] == first.id]
    assert [(t["phase"], t["turn"]) for t in turns] == [("started", 1), ("ended", 1), ("started", 2), ("ended", 2)]
    # the session's own event (its creation) is in it too, before anything of its tasks
    assert entries[0]["type"] == "runtime_status" and entries[0]["taskId"] is None
    assert entries[0]["data"]["event"] == "session.created"

    # paged with afterId, one entry at a time too (an event that ends a task gives two entries): the same
    # entries, none twice, none missing
    for limit in (1, 7):
        seen: list[str] = []
        after = ""
        while True:
            status, page = await replay(rig, sess.id, f"?limit={limit}" + (f"&afterId={after}" if after else ""))
            assert status == 200, page
            assert len(page["entries"]) <= limit
            seen += [e["id"] for e in page["entries"]]
            if page["nextAfterId"] is None:
                break
            after = page["nextAfterId"]
        assert seen == [e["id"] for e in entries], limit


async def test_lines_stored_together_replay_one_entry_each_page_by_page(rig: Rig) -> None:
    """An agent's lines read together are stored as one row (core.tasks.loglines); the replay still gives each line
    its own entry and id, and pages cut inside such a row lose no line and repeat none."""
    from sqlalchemy import func

    from core.store.models import TaskLog

    alice = await me(rig)
    sess = await rig.shepherd.sessions.create(alice, task="count", start=False)
    task = (await rig.shepherd.tasks.create(alice, prompt="count [lines 300]", runtime="demo",
                                            session_id=sess.id)).task
    await settled(rig, task.id, 1)
    _, logged = await rig.shepherd.tasks.logs(alice, task.id, limit=1000)
    printed = [row.content for row in logged if row.type == "output"]
    assert len(printed) >= 300
    async with rig.shepherd.db.read() as session:
        rows = (await session.exec(select(func.count()).select_from(TaskLog).where(
            TaskLog.task_id == task.id, TaskLog.type == "output"))).one()
    assert rows < len(printed), "lines read together are stored together"
    seen: list[dict[str, Any]] = []
    after = ""
    while True:
        status, page = await replay(rig, sess.id, "?limit=7" + (f"&afterId={after}" if after else ""))
        assert status == 200, page
        assert len(page["entries"]) <= 7
        seen += page["entries"]
        if page["nextAfterId"] is None:
            break
        after = page["nextAfterId"]
    assert [e["content"] for e in seen if e["type"] == "runtime_output"] == printed
    assert len({e["id"] for e in seen}) == len(seen)


async def test_a_replay_page_of_long_reads_reads_only_the_rows_that_hold_it(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay page of ten entries of a task whose output came in reads of a thousand lines reads the rows that
    hold those ten, not eleven rows of a thousand lines each; paging on still gives every line once."""
    from core.sessions import history
    from core.tasks.output import TaskOutput

    alice = await me(rig)
    sess = await rig.shepherd.sessions.create(alice, task="long reads", start=False)
    task = (await rig.shepherd.tasks.create(alice, prompt="hello", runtime="demo", session_id=sess.id)).task
    await settled(rig, task.id, 1)
    output = TaskOutput(rig.shepherd.db)
    for read in range(12):
        output.add_many(task.id, [f"read {read} line {i}" for i in range(1000)])
        await output.flush()
    given: list[int] = []
    real = history._log_entries

    def counting(rows: Any, *args: Any, **kwargs: Any) -> Any:
        given.append(len(rows))
        return real(rows, *args, **kwargs)

    monkeypatch.setattr(history, "_log_entries", counting)
    seen: list[str] = []
    after: str | None = None
    for _ in range(3):
        page = await rig.shepherd.history.replay(alice, sess.id, after=after, limit=10)
        seen += [e.content for e in page.entries]
        after = page.next_after
        assert after is not None
    # the first page: the demo agent's rows of a line or a few and the first long read; then the row at the mark
    # and the next: not eleven rows (limit + 1) of up to a thousand lines each
    assert given[0] < 11 and max(given[1:]) <= 3, given
    while after is not None:
        page = await rig.shepherd.history.replay(alice, sess.id, after=after, limit=2000)
        seen += [e.content for e in page.entries]
        after = page.next_after
    lines = [f"read {read} line {i}" for read in range(12) for i in range(1000)]
    assert [c for c in seen if c.startswith("read ")] == lines


async def test_event_history_pages_newest_first_to_the_end(lite: Rig) -> None:
    rig = lite
    sess, first, failing = await two_tasks(rig)
    status, body = await rig.call("GET", f"/hub/session/{sess.id}/events/history?limit=500")
    assert status == 200, body
    assert set(body) == {"sessionId", "events", "limit", "nextBeforeId"} and body["nextBeforeId"] is None
    events = body["events"]
    async with rig.shepherd.db.read() as session:
        stored = [e for e in await session.exec(select(Event))
                  if e.session_id == sess.id or e.task_id in (first.id, failing.id)]
    assert sorted(e["id"] for e in events) == sorted(e.id for e in stored), "the session's and its tasks' events"
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True), "newest first"
    assert all(set(e) == EVENT_KEYS and ISO.match(e["occurredAt"]) and e["ingestedAt"] == e["occurredAt"]
               for e in events)
    finished = [e for e in events if e["event"] == "task.finished" and e["taskId"] == failing.id]
    assert finished and finished[0]["category"] == "task" and finished[0]["payload"]["outcome"] == "failed"
    assert finished[0]["agent"] == failing.agent_id
    assert events[-1]["event"] == "session.created" and events[-1]["taskId"] is None

    got: list[int] = []
    before = None
    while True:
        status, page = await rig.call("GET", f"/hub/session/{sess.id}/events/history?limit=3"
                                      + (f"&beforeId={before}" if before else ""))
        assert status == 200 and len(page["events"]) <= 3 and page["limit"] == 3, page
        got += [e["id"] for e in page["events"]]
        before = page["nextBeforeId"]
        if before is None:
            break
    assert got == [e["id"] for e in events], "no duplicates, no gaps"
    status, body = await rig.call("GET", f"/hub/session/{sess.id}/events/history")
    assert status == 200 and body["limit"] == 50


async def test_a_followed_replay_shows_a_new_line_live_and_ends_with_the_session(lite: Rig) -> None:
    rig = lite
    alice = await me(rig)
    sess = await rig.shepherd.sessions.create(alice, task="count", start=False)
    task = (await rig.shepherd.tasks.create(alice, prompt="count", runtime="demo", session_id=sess.id)).task
    await settled(rig, task.id, 1)
    async with rig.client.get(f"/hub/session/{sess.id}/replay?follow=true",
                              headers={"Authorization": f"Bearer {rig.token}"}) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        events = sse(resp)
        first = await anext(events)
        assert first["event"] == "entry" and first["data"]["data"]["event"] == "session.created"
        assert first["id"] == first["data"]["id"]
        so_far = [first]
        while not any(e["data"].get("type") == "task_result" for e in so_far):
            so_far.append(await asyncio.wait_for(anext(events), 20))
        # a follow-up while the client watches: its prompt and what the agent prints come as they happen
        await rig.shepherd.tasks.send(alice, task.id, "once more [lines 3]")
        live: list[dict[str, Any]] = []
        while not any(e["data"].get("type") == "task_result" for e in live):
            live.append(await asyncio.wait_for(anext(events), 20))
        kinds = [e["data"]["type"] for e in live]
        assert kinds.index("user_prompt") < kinds.index("runtime_output") < kinds.index("task_result")
        assert next(e for e in live if e["data"]["type"] == "user_prompt")["data"]["content"] == "once more [lines 3]"
        ids = [e["id"] for e in so_far + live]
        assert len(ids) == len(set(ids)), "no entry twice"
        # archiving the session ends the stream
        async with rig.shepherd.db.write() as session:
            row = await session.get(Session, sess.id)
            assert row is not None
            row.status = "archived"
            session.add(row)
        rest = [e async for e in events]
        assert rest[-1] == {"event": "end", "id": None, "data": {"sessionId": sess.id, "reason": "archived"}}
        ids += [e["id"] for e in rest[:-1]]
    # a client that resumes from an entry it saw (Last-Event-ID) gets what came after it, nothing twice
    async with rig.client.get(f"/hub/session/{sess.id}/replay?follow=true", headers={
            "Authorization": f"Bearer {rig.token}", "Last-Event-ID": ids[-3]}) as resp:
        again = [e async for e in sse(resp)]
    assert [e["id"] for e in again[:-1]] == ids[-2:] and again[-1]["event"] == "end"


async def sse(resp: ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The events of a Server-Sent Events answer, as {event, id, data}; heartbeat comments skipped."""
    event: dict[str, Any] = {"event": None, "id": None}
    while True:
        line = (await resp.content.readline()).decode()
        if not line:
            return
        line = line.rstrip("\n")
        if line.startswith(":"):
            continue
        if not line:
            if "data" in event:
                yield event
            event = {"event": None, "id": None}
            continue
        field, _, value = line.partition(": ")
        event[field] = orjson.loads(value) if field == "data" else value


async def test_users_search_and_paging(lite: Rig) -> None:
    rig = lite
    alice = await me(rig)  # the token's person: she runs a task, so Shepherd has seen her
    await rig.shepherd.tasks.create(alice, prompt="hello", runtime="demo")
    users = rig.shepherd.users
    await users.principal_for("acme", "slack", "U0ANA", display_name="Ana Lima", default_role=Role.OPERATOR)
    await users.principal_for("acme", "telegram", "4242", display_name="Bruno", default_role=Role.VIEWER)
    await users.principal_for("acme", "github", "carla-gh", display_name="Carla", default_role=Role.APPROVER)
    await users.principal_for("globex", "slack", "U0ANA", display_name="Ana of Globex", default_role=Role.ADMIN)

    status, body = await rig.call("GET", "/hub/users")
    assert status == 200, body
    assert set(body) == {"users", "total", "limit", "offset"} and (body["limit"], body["offset"]) == (50, 0)
    listed = {u["displayName"]: u for u in body["users"]}
    assert set(listed) == {alice.name, "Ana Lima", "Bruno", "Carla"} and body["total"] == 4, "acme's people only"
    assert all(set(u) == USER_KEYS and ISO.match(u["createdAt"]) for u in body["users"])
    ana = listed["Ana Lima"]
    assert (ana["provider"], ana["email"], ana["avatarUrl"], ana["lastSeenAt"]) == ("slack", None, None, None)
    assert listed["Carla"]["provider"] == "github" and listed[alice.name]["provider"] == "shepherd"
    assert ISO.match(listed[alice.name]["lastSeenAt"]) and listed[alice.name]["lastLoginAt"] == \
        listed[alice.name]["lastSeenAt"], "her task is her last activity"

    async def names(query: str) -> tuple[list[str], int]:
        status, body = await rig.call("GET", f"/hub/users?{query}")
        assert status == 200, body
        return [u["displayName"] for u in body["users"]], body["total"]

    assert await names("search=ANA") == (["Ana Lima"], 1), "a name, any case"
    assert await names("search=carla-g") == (["Carla"], 1), "an identity: a GitHub login"
    assert await names("search=4242") == (["Bruno"], 1)
    assert await names("search=%25") == ([], 0), "% is a character, not a wildcard"
    everyone = sorted([alice.name, "Ana Lima", "Bruno", "Carla"])
    pages = [await names(f"limit=3&offset={o}") for o in (0, 3, 6)]
    assert [p[0] for p in pages] == [everyone[:3], everyone[3:], []] and {p[1] for p in pages} == {4}
    status, body = await rig.call("GET", "/hub/users?limit=0")
    assert status == 400 and body["code"] == "VALIDATION_ERROR"


async def test_other_orgs_and_private_sessions_are_not_found(lite: Rig) -> None:
    rig = lite
    alice = await me(rig)
    sess = await rig.shepherd.sessions.create(alice, task="secret plans", start=False)
    globex = await rig.token_for("globex")
    viewer = await rig.token_for("acme", "read")  # another person of acme, not an admin
    for path in (f"/hub/session/{sess.id}/replay", f"/hub/session/{sess.id}/events/history",
                 f"/hub/session/{sess.id}/replay?follow=true"):
        for token in (globex, viewer):
            status, body = await rig.call("GET", path, token=token)
            assert (status, body["code"]) == (404, "SESSION_NOT_FOUND"), (path, body)
        status, body = await rig.call("GET", path + ("&" if "?" in path else "?") + "orgId=globex")
        assert (status, body["code"]) == (403, "ORG_MISMATCH")
        if "follow" not in path:  # (followed, it would stream until the session ends)
            assert (await rig.call("GET", path + "?orgId=acme"))[0] == 200
    status, body = await rig.call("GET", "/hub/users?orgId=globex")
    assert (status, body["code"]) == (403, "ORG_MISMATCH")
    status, body = await rig.call("GET", "/hub/users", token=globex)
    assert status == 200 and alice.name not in [u["displayName"] for u in body["users"]]
    # shown to the org, any of its people reads it
    async with rig.shepherd.db.write() as session:
        row = await session.get(Session, sess.id)
        assert row is not None
        row.visibility = "organization"
        session.add(row)
    status, body = await replay(rig, sess.id, token=viewer)
    assert status == 200 and body["entries"][0]["data"]["event"] == "session.created"
    assert (await replay(rig, sess.id, token=globex))[0] == 404
    status, body = await replay(rig, sess.id, "?afterId=nonsense")
    assert (status, body["code"]) == (400, "INVALID_AFTER_ID")
    status, body = await replay(rig, sess.id, "?limit=0")
    assert (status, body["code"]) == (400, "VALIDATION_ERROR")


async def test_bad_cursors_are_a_json_400_before_any_stream(lite: Rig) -> None:
    rig = lite
    sess = await rig.shepherd.sessions.create(await me(rig), task="cursors", start=False)
    # followed, a cursor it cannot read is refused as JSON, not a stream that ends empty with a logged traceback
    status, body = await replay(rig, sess.id, "?follow=true&afterId=nonsense")
    assert (status, body["code"]) == (400, "INVALID_AFTER_ID"), body
    status, body = await rig.call("GET", f"/hub/session/{sess.id}/replay?follow=true", headers={
        "Authorization": f"Bearer {rig.token}", "Last-Event-ID": "9999999999999999999-l9999999999999999999"})
    assert (status, body["code"]) == (400, "INVALID_AFTER_ID"), body
    # an event id past what the store holds is a 400 (it was a 500: too large for an SQL integer)
    status, body = await rig.call("GET", f"/hub/session/{sess.id}/events/history?beforeId={10**23}")
    assert (status, body["code"]) == (400, "VALIDATION_ERROR"), body
    assert "beforeId" in body["error"]


def test_the_followed_routes_document_their_event_stream_beside_their_json() -> None:
    """A client (or schemathesis: "undocumented Content-Type") reads from /openapi.json that `follow=true` answers
    text/event-stream, while the page stays JSON with its schema."""
    from adapters.rest.openapi import build_openapi
    from bot.app import all_routes

    paths = build_openapi(all_routes(), title="Shepherd", version="test")["paths"]
    for path in ("/hub/session/{sessionId}/replay", "/api/v2/tasks/{user}/{task}/logs"):
        content = paths[path]["get"]["responses"]["200"]["content"]
        assert set(content) == {"application/json", "text/event-stream"}, (path, content)
        assert "$ref" in content["application/json"]["schema"] or "properties" in content["application/json"]["schema"]


def test_replay_ids_of_log_ids_past_ten_to_the_twelfth_read_back_as_cursors() -> None:
    """PostgreSQL's log ids step by 1024 a row (core.tasks.loglines): a replay id's row grows past its 12 digits, and
    such an id is still a cursor (ids below 10^12 are written as before)."""
    from core.errors import ValidationFailed
    from core.sessions.replay import Mark

    small, big = Mark(1765533600123456, "l", 420, 0), Mark(1765533600123456, "l", 5 * 10**12 + 7, 1)
    assert small.id == "1765533600123456-l0000000004200"
    assert Mark.parse(small.id) == small and Mark.parse(big.id) == big and small < big
    with pytest.raises(ValidationFailed):
        Mark.parse("1765533600123456-l00000000042")  # too short to be a row and its entry
