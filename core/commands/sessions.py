"""The session commands of the grammar: sessions, session <id>, session archive|resume|delete <id>."""

from __future__ import annotations

from typing import Any

from core.commands.grammar import Arg, ArgKind, CommandContext, CommandRegistry, CommandSpec, Reply, UsageError
from core.commands.tasks import state_line
from core.people.access import Role
from core.sessions.service import Session
from core.text import ago, table

_ID = Arg("id", "a session id, like sess_3f9a1c07be12a4c0")
LIST_LIMIT = 20


def budget_line(row: Session) -> str:
    limits = [f"{row.max_turns} turns" if row.max_turns is not None else "",
              f"{row.max_minutes:g} minutes" if row.max_minutes is not None else "",
              f"${row.max_cost:g}" if row.max_cost is not None else ""]
    return ", ".join(x for x in limits if x) or "none"


async def _sessions(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    words = args["which"] or []
    if words not in ([], ["all"]):
        raise UsageError("sessions lists yours; `sessions all` lists every session you may read",
                         usage="sessions [all]")
    everyone = words == ["all"]
    page = await ctx.shepherd.sessions.list(ctx.principal, mine=not everyone, limit=LIST_LIMIT)
    if not page.rows:
        return Reply("no sessions yet: a thread that runs a task is one, or `run \"…\" --session <id>` joins one"
                     if not everyone else "no sessions you may read", data=[])
    text = table(("ID", "LABEL", "MODE", "VISIBILITY", "OWNER", "ACTIVE"),
                 [(s.id, s.label[:40], s.workflow_mode, s.visibility, s.owner_name, ago(s.last_activity_at))
                  for s in page.rows])
    if page.total > len(page.rows):
        text += f"\n({len(page.rows)} of {page.total})"
    return Reply(text, data=[s.id for s in page.rows])


async def _session(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    view = await ctx.shepherd.sessions.view(ctx.principal, args["id"])
    s = view.row
    tasks = await ctx.shepherd.sessions.tasks_of(ctx.principal, s.id)
    lines = [f"{s.id}  {s.label}",
             f"  {s.status} · {view.bucket} · {s.workflow_mode} · {s.visibility} · owner {s.owner_name} · "
             f"active {ago(s.last_activity_at)}",
             f"  budget: {budget_line(s)}"]
    if s.workflow_mode == "loop":
        loop = s.loop or {}
        lines.append(f"  loop {s.loop_status or 'idle'}, iteration {s.loop_iteration}/{loop.get('maxIterations', '?')}"
                     + (f": {s.loop_summary}" if s.loop_summary else ""))
        if loop.get("goal"):
            lines.append(f"  goal: {str(loop['goal'])[:300]}")
    if s.repos:
        lines.append("  repos: " + ", ".join(r.get("fullName") or r.get("name") or r.get("url") or "?"
                                             for r in s.repos))
    if s.tags:
        lines.append("  tags: " + ", ".join(s.tags))
    lines.append(f"  tasks ({len(tasks)}):" if tasks else "  no tasks yet")
    lines += [f"    {t.name} ({t.id}): {state_line(t)}" for t in tasks]
    return Reply("\n".join(lines), data={"id": s.id, "status": s.status, "tasks": [t.id for t in tasks]})


def _lifecycle(verb: str, done: str) -> Any:
    async def handler(ctx: CommandContext, args: dict[str, Any]) -> Reply:
        row = await getattr(ctx.shepherd.sessions, verb)(ctx.principal, args["id"])
        return Reply(f"session {row.id} ({row.label}): {done}",
                     data={"id": row.id, "status": "deleted" if verb == "delete" else row.status})

    return handler


def register(reg: CommandRegistry) -> None:
    V, OP = Role.VIEWER, Role.OPERATOR
    reg.add(CommandSpec(
        "sessions", "list your sessions (workstreams that group tasks), the most recently active first", V,
        _sessions, args=(Arg("which", "all: every session you may read", ArgKind.REST, required=False),),
        examples=("sessions", "sessions all"),
    ))
    reg.add(CommandSpec("session", "show one session: its state, mode, loop, budget and tasks", V, _session,
                        args=(_ID,)))
    reg.add(CommandSpec("session archive", "archive a session: its unfinished tasks stop, nothing runs in it until "
                                           "resumed", OP, _lifecycle("archive", "archived"), args=(_ID,)))
    reg.add(CommandSpec("session resume", "let an archived session take tasks again", OP,
                        _lifecycle("resume", "active again"), args=(_ID,)))
    reg.add(CommandSpec("session delete", "delete a session (its unfinished tasks stop first; they stay as history)",
                        OP, _lifecycle("delete", "deleted"), args=(_ID,)))
