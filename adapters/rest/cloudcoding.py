"""CloudCoding's invoke (shared/seeds/003): `POST /invoke/stdout`, one task (`messages`) or parallel tasks
(`parallel_tasks`) of one session, answered as a Server-Sent Events stream.

The stream: first an `updates` event with the session's id as `thread_id` (and the tasks as `run_id`s); then,
interleaved across the tasks, `custom` events (`task_name`, `stdout`: a line the agent printed) and, as each task's
turn ends, an `updates` event (`run_id`, `messages` [{type: ai, content}] of what it said last, `stream_events`,
and its status, outcome and evidence); last an `updates` event saying how every task ended, and the stream closes.
Heartbeat comments keep proxies from cutting it while the agents are quiet. A client that leaves does not stop
the tasks: they run on, in their session. Bad input is a JSON 4xx before any stream starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

from aiohttp import web
from pydantic import Field, SecretStr

from adapters.rest.framework import ApiRequest, FieldError, Route, SnakeApiModel
from adapters.rest.sse import FOLLOW_POLL, Sse, stream
from core.sessions.invoke import MAX_PARALLEL, Invocation, InvokeRequest, Message, ParallelTask
from core.tasks.follow import TaskState, Tick
from core.tasks.state import TaskStatus
from core.tasks.steering import MAX_PROMPT

# the follows of invocations under way (they outlive their clients): cancelled when the app stops
INVOKE_RUNS: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("invoke_runs")
MAX_MESSAGES = 100


# --- wire models ---------------------------------------------------------------------------------


class InvokeMessage(SnakeApiModel):
    type: Literal["human", "ai", "system"]
    content: str = Field(max_length=MAX_PROMPT)


class InvokeTask(SnakeApiModel):
    prompt: str = Field(max_length=MAX_PROMPT)
    task_name: str = Field(max_length=200, description="names the task's events on the stream")


class InvokeBody(SnakeApiModel):
    repo_url: str | None = Field(None, max_length=500, description="the https URL of the repository to work on "
                                 "(without it: an empty workspace)")
    github_token: SecretStr | None = Field(
        None, max_length=1000, description="used for this run's clone and push only: never stored, never logged, "
                                           "never given to the agent")
    messages: list[InvokeMessage] | None = Field(None, max_length=MAX_MESSAGES,
                                                 description="one task: its prompt is the human turns")
    parallel_tasks: list[InvokeTask] | None = Field(None, max_length=50,
                                                    description=f"1-{MAX_PARALLEL} tasks run at once")
    branch: str = Field("main", min_length=1, max_length=200)
    haiku: bool = Field(False, description="the agent's cheaper model, where its preset has one")
    thread_id: str | None = Field(None, max_length=64, description="continue this session (a thread_id it sent)")
    agent: str | None = Field(None, max_length=32, description="Shepherd: the agent CLI (the server's default)")


# --- the stream ----------------------------------------------------------------------------------


def _ended(state: TaskState, name: str) -> dict[str, Any]:
    evidence = state.evidence
    # waiting on people, the task's note says for what (an approval code); else its evidence says how it ended
    waiting = state.status is TaskStatus.AWAITING
    return {"run_id": state.id, "task_name": name, "status": state.status.value, "outcome": state.outcome,
            "summary": state.state_message if waiting else evidence.get("reason") or state.state_message,
            "evidence": {"exit_code": evidence.get("exitCode"), "reason": evidence.get("reason"),
                         "diff": evidence.get("diff"), "duration_seconds": evidence.get("durationSeconds")}}


def _said(state: TaskState) -> str:
    lines = [str(line) for line in state.evidence.get("lastLines") or ()]
    return "\n".join(lines) or state.state_message


async def _events(invocation: Invocation, queue: asyncio.Queue[Tick | None]) -> AsyncIterator[Sse]:
    names = {t.task_id: t.task_name for t in invocation.tasks}
    runs = [{"run_id": t.task_id, "task_name": t.task_name} for t in invocation.tasks]
    notes = [{"type": "system", "content": note} for note in invocation.notes]
    yield Sse({"thread_id": invocation.session_id, "run_id": None, "messages": notes, "stream_events": [],
               "runs": runs}, event="updates")
    ended: dict[str, TaskState] = {}
    while (tick := await queue.get()) is not None:
        for line in tick.lines:
            if line.type == "output":
                yield Sse({"task_name": names[line.task_id], "stdout": line.content, "run_id": line.task_id},
                          event="custom")
        if not tick.caught_up:
            continue
        for task_id, state in tick.states.items():
            if state.turn_over and task_id not in ended:
                ended[task_id] = state
                yield Sse({"thread_id": invocation.session_id, **_ended(state, names[task_id]),
                           "messages": [{"type": "ai", "content": _said(state)}], "stream_events": []},
                          event="updates")
    tasks = [_ended(ended[t.task_id], t.task_name) if t.task_id in ended else
             {"run_id": t.task_id, "task_name": t.task_name, "status": "deleted", "outcome": None,
              "summary": "the task was deleted", "evidence": None} for t in invocation.tasks]
    summary = "; ".join(f"{t['task_name']}: {t['status']} ({t['outcome'] or 'no outcome'})" for t in tasks)
    yield Sse({"thread_id": invocation.session_id, "run_id": None, "done": True, "tasks": tasks,
               "messages": [{"type": "ai", "content": summary}], "stream_events": []}, event="updates")


async def invoke(req: ApiRequest) -> web.StreamResponse:
    body: InvokeBody = req.body
    shepherd = req.shepherd
    invocation = await shepherd.invocations.invoke(req.principal, InvokeRequest(
        repo_url=body.repo_url, branch=body.branch, cheap=body.haiku, thread_id=body.thread_id, agent=body.agent,
        messages=[Message(m.type, m.content) for m in body.messages] if body.messages is not None else None,
        parallel_tasks=[ParallelTask(t.prompt, t.task_name) for t in body.parallel_tasks]
        if body.parallel_tasks is not None else None,
        github_token=body.github_token.get_secret_value() if body.github_token is not None else None,
    ))
    queue: asyncio.Queue[Tick | None] = asyncio.Queue()
    listening = True

    def sink(tick: Tick | None) -> None:
        if listening:  # nobody reads once the client has left: the follow goes on for the tasks' tokens only
            queue.put_nowait(tick)

    # the follow is the invocation's, not the connection's: it outlives a client that leaves
    runs = req.http.app[INVOKE_RUNS]
    job = asyncio.get_running_loop().create_task(
        shepherd.invocations.run(invocation, sink, poll_s=req.http.app.get(FOLLOW_POLL, 1.0)))
    runs.add(job)
    job.add_done_callback(runs.discard)

    async def events() -> AsyncIterator[Sse]:
        nonlocal listening
        try:
            async for item in _events(invocation, queue):
                yield item
        finally:
            listening = False

    return await stream(req.http, events())


async def invoke_runs(app: web.Application) -> AsyncIterator[None]:
    """The app's invocations under way (a cleanup context): those still running when it stops are cancelled, and
    their tokens forgotten."""
    app[INVOKE_RUNS] = set()
    yield
    for job in list(app[INVOKE_RUNS]):
        job.cancel()
    if app[INVOKE_RUNS]:
        await asyncio.gather(*app[INVOKE_RUNS], return_exceptions=True)


_TAG = "invoke (CloudCoding)"

ROUTES = [
    Route("POST", "/invoke/stdout", invoke,
          "Run one task (messages: its prompt is the human turns) or parallel tasks (parallel_tasks) of one session "
          "on repo_url, answered as Server-Sent Events: `updates` (the first carries the session as thread_id; "
          "one per task as its turn ends: run_id, messages, stream_events, status, outcome; the last says how each "
          "task ended) and `custom` (task_name, stdout: a line the agent printed), interleaved. thread_id continues "
          "a session: messages become a follow-up turn of its latest task, parallel_tasks new tasks in it. haiku "
          "asks for the agent's cheaper model. Leaving the stream does not stop the tasks. Shepherd extension: "
          "agent (the agent CLI)",
          body=InvokeBody, errors=(400, 401, 403, 404, 409, 413, 503), tag=_TAG, operation_id="cloudcodingInvoke",
          produces="text/event-stream",
          field_errors={"messages": FieldError("INVALID_INVOKE", "messages is a list of {type: human|ai|system, "
                                                                 f"content}} (at most {MAX_MESSAGES})"),
                        "parallel_tasks": FieldError("INVALID_INVOKE", "parallel_tasks is a list of {prompt, "
                                                                       f"task_name}} (1-{MAX_PARALLEL})"),
                        "github_token": FieldError("INVALID_TOKEN", "github_token is a string (a GitHub token)"),
                        "repo_url": FieldError("INVALID_REPO", "repo_url is the https URL of a repository")}),
]
