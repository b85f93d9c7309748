"""Shepherd's commands, as specs for core.commands.grammar. Every channel runs these and nothing else."""

from __future__ import annotations

from typing import Any

from core.agents import LEVEL_NAMES, AgentFilter, AgentStatus, parse_level
from core.commands import approvals as approval_commands
from core.commands import digests as digest_commands
from core.commands import places as place_commands
from core.commands import schedules as schedule_commands
from core.commands import sessions as session_commands
from core.commands import tasks as task_commands
from core.commands.grammar import (
    Arg,
    ArgKind,
    CommandContext,
    CommandRegistry,
    CommandSpec,
    Reply,
    UsageError,
    filter_limit,
    filter_words,
)
from core.people.access import Role
from core.text import ago, duration, table


def _filters(words: list[str]) -> tuple[AgentFilter, int]:
    """`type:project status:suspended project:proj-1 limit:20`."""
    values = filter_words(words, ("type", "status", "project", "limit"),
                          "type:<type>, status:<status>, project:<id>, limit:<n>")
    status = None
    if "status" in values:
        try:
            status = AgentStatus(values["status"].upper())
        except ValueError:
            names = ", ".join(s.value.lower() for s in AgentStatus)
            raise UsageError(f"unknown status {values['status']!r}: one of {names}") from None
    flt = AgentFilter(type=values.get("type"), status=status, project_id=values.get("project"))
    return flt, filter_limit(values, 50)


def level_label(level: int) -> str:
    return f"L{level} {LEVEL_NAMES[level]}"


# --- handlers --------------------------------------------------------------------------------------


async def _help(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    return Reply(ctx.registry.help(args["command"], ctx.principal))


async def _status(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    now = await ctx.shepherd.overview.of(ctx.principal)
    total = sum(now.agents.values())
    by_status = ", ".join(f"{now.agents.get(s.value, 0)} {s.value.lower()}" for s in AgentStatus)
    task_text = ", ".join(f"{n} {status}" for status, n in sorted(now.tasks.items())) or "none yet"
    runner = "a runner is up" if now.runners else "no runner is up"
    text = (
        f"org {ctx.principal.org_id} · store {ctx.shepherd.db.dialect}\n"
        f"agents: {total} ({by_status})\n"
        f"tasks: {task_text} ({runner})\n"
        f"confirmations: {now.pending} pending" + (" (`pending` lists them)" if now.pending else "") + "\n"
        f"projects: {now.projects}"
    )
    return Reply(text, data={"agents": now.agents, "tasks": now.tasks, "projects": now.projects,
                             "pending": now.pending})


async def _agents(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    flt, limit = _filters(args["filters"])
    views, total = await ctx.shepherd.agents.list(ctx.principal, flt, limit=limit)
    if not views:
        return Reply("no agents yet: `agent create <name> --type project --project <id>`", data=[])
    rows = [
        (v.agent.id, v.agent.name, v.agent.type, v.agent.status, level_label(v.agent.autonomy_level),
         v.project.name if v.project else "-", duration(v.uptime()))
        for v in views
    ]
    text = table(("ID", "NAME", "TYPE", "STATUS", "AUTONOMY", "PROJECT", "UPTIME"), rows)
    if total > len(views):
        text += f"\n({len(views)} of {total}; add limit:<n> or filters)"
    return Reply(text, data=[v.agent.id for v in views])


async def _agent(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    view = await ctx.shepherd.agents.get(ctx.principal, args["id"])
    a = view.agent
    events = await ctx.shepherd.events.list(ctx.principal, agent_id=a.id, limit=5)
    lines = [
        f"{a.id}  {a.name}",
        f"  type {a.type} · status {a.status} · autonomy {level_label(a.autonomy_level)}",
        f"  uptime {duration(view.uptime())} · last activity {ago(a.last_activity)}",
    ]
    if view.project:
        p = view.project
        lines.append(f"  project {p.name} ({p.id}) repo {p.repo or '-'} branch {p.default_branch}")
    if a.task:
        lines.append(f"  task: {a.task}")
    lines.append(
        f"  stats: {a.messages_processed} messages, {a.tasks_completed} tasks, {a.reviews_performed} reviews, "
        f"{a.deploys_triggered} deploys, {a.incidents_handled} incidents"
    )
    if events:
        lines.append("  recent events:")
        lines += [f"    {ago(e.occurred_at):>12}  {e.name}  by {e.actor}" for e in events]
    return Reply("\n".join(lines), data={"id": a.id})


async def _agent_create(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    project_id = None
    if args["project"]:
        project_id = (await ctx.shepherd.projects.get(ctx.principal, args["project"])).id
    view = await ctx.shepherd.agents.create(
        ctx.principal, name=args["name"], type=args["type"], project_id=project_id, autonomy_level=args["level"]
    )
    a = view.agent
    return Reply(f"created {a.id} ({a.type}, {level_label(a.autonomy_level)})", data={"id": a.id})


def _action(action: str, verb: str) -> Any:
    async def handler(ctx: CommandContext, args: dict[str, Any]) -> Reply:
        result = await ctx.shepherd.agents.act(ctx.principal, args["id"], action)
        text = f"{result.agent_id} {verb}: {result.previous_status} -> {result.current_status}"
        if result.uptime is not None:
            text += " (uptime reset)"
        return Reply(text, data={"id": result.agent_id, "status": result.current_status})

    return handler


async def _agent_delete(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    await ctx.shepherd.agents.delete(ctx.principal, args["id"])
    return Reply(f"{args['id']} removed", data={"id": args["id"]})


async def _agent_types(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    types = await ctx.shepherd.agents.types(ctx.principal)
    rows = [(t.type, t.lifecycle.value, "built-in" if t.builtin else "registered", t.description) for t in types]
    return Reply(table(("TYPE", "LIFECYCLE", "ORIGIN", "DESCRIPTION"), rows), data=[t.type for t in types])


async def _agent_type_add(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    info = await ctx.shepherd.agents.register_type(
        ctx.principal, type_name=args["type"], lifecycle=args["lifecycle"], description=" ".join(args["description"])
    )
    return Reply(f"registered agent type {info.type} ({info.lifecycle.value})", data={"type": info.type})


async def _autonomy(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    result = await ctx.shepherd.agents.act(ctx.principal, args["id"], "set_autonomy", {"level": args["level"]})
    return Reply(
        f"{result.agent_id} autonomy: {level_label(result.previous_level)} -> {level_label(result.current_level)}",
        data={"id": result.agent_id, "level": result.current_level},
    )


async def _projects(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    projects = await ctx.shepherd.projects.list(ctx.principal)
    if not projects:
        return Reply("no projects yet: `project create <name> --repo owner/name`", data=[])
    rows = [(p.id, p.name, p.repo or "-", p.default_branch) for p in projects]
    return Reply(table(("ID", "NAME", "REPO", "BRANCH"), rows), data=[p.id for p in projects])


async def _project_create(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    p = await ctx.shepherd.projects.create(
        ctx.principal, name=args["name"], repo=args["repo"], default_branch=args["branch"]
    )
    return Reply(
        f"created project {p.name} ({p.id}), repo {p.repo or '-'}, branch {p.default_branch}\n"
        f"give it a project agent: agent create {p.name}-agent --type project --project {p.name}",
        data={"id": p.id},
    )


# --- the registry --------------------------------------------------------------------------------

_ID = Arg("id", "an agent id, like agent-proj-3f9a1c07be12")


async def _users(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    people = await ctx.shepherd.users.list(ctx.principal)
    if not people:
        return Reply("no users yet: people are added when they first talk to Shepherd in a chat")
    rows = [(u.name, u.role, ", ".join(chans) or "-", ago(u.created_at)) for u, chans in people]
    return Reply(table(("USER", "ROLE", "CHANNELS", "SINCE"), rows),
                 data=[{"name": u.name, "role": u.role, "channels": chans} for u, chans in people])


async def _role(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    user = await ctx.shepherd.users.set_role(ctx.principal, args["user"].lstrip("@"), args["role"])
    return Reply(f"{user.name} is now {user.role}", data={"name": user.name, "role": user.role})


def build_registry() -> CommandRegistry:
    reg = CommandRegistry()
    V, OP, AD = Role.VIEWER, Role.OPERATOR, Role.ADMIN
    reg.add(CommandSpec(
        "help", "list commands, or explain one", V, _help,
        args=(Arg("command", "a command name", required=False),), aliases=("?",),
        examples=("help", "help agent create"),
    ))
    reg.add(CommandSpec("status", "what Shepherd is running for this org", V, _status, examples=("status",)))
    reg.add(CommandSpec("users", "people Shepherd knows in this org, their roles and channels", V, _users))
    reg.add(CommandSpec(
        "role", "set a person's role: viewer, operator, approver or admin", AD, _role,
        args=(Arg("user", "their Shepherd name (in Slack, @mention them)"),
              Arg("role", "viewer, operator, approver or admin", convert=Role.parse)),
        examples=("role bob approver",),
    ))
    reg.add(CommandSpec(
        "agents", "list agents, optionally filtered", V, _agents,
        args=(Arg("filters", "type:<type> status:<status> project:<id> limit:<n>", ArgKind.REST, required=False),),
        aliases=("ls",), examples=("agents", "agents type:project status:suspended"),
    ))
    reg.add(CommandSpec(
        "agent", "show one agent: state, autonomy, project, stats, recent events", V, _agent,
        args=(_ID,), examples=("agent agent-proj-3f9a1c07be12",),
    ))
    reg.add(CommandSpec(
        "agent create", "create an agent", OP, _agent_create,
        args=(
            Arg("name", "display name"),
            Arg("type", "agent type (see `agent types`)", ArgKind.OPTION, metavar="T"),
            Arg("project", "project id or name (project agents need one)", ArgKind.OPTION, required=False,
                metavar="P"),
            Arg("level", "autonomy level 0-5", ArgKind.OPTION, required=False, convert=parse_level, metavar="N",
                default=1),
        ),
        examples=("agent create api-agent --type project --project api --level 2",),
    ))
    reg.add(CommandSpec("agent suspend", "stop an agent from starting anything until resumed", OP,
                        _action("suspend", "suspended"), args=(_ID,)))
    reg.add(CommandSpec("agent resume", "let a suspended agent work again; its queued work goes on", OP,
                        _action("resume", "resumed"), args=(_ID,)))
    reg.add(CommandSpec("agent restart", "clear in-flight work and reset uptime", OP,
                        _action("restart", "restarted"), args=(_ID,)))
    reg.add(CommandSpec("agent delete", "remove an agent", OP, _agent_delete, args=(_ID,), aliases=("agent rm",)))
    reg.add(CommandSpec("agent types", "list agent types, built-in and registered", V, _agent_types))
    reg.add(CommandSpec(
        "agent type-add", "register a new agent type", AD, _agent_type_add,
        args=(
            Arg("type", "type name, like security-audit"),
            Arg("lifecycle", "persistent or ephemeral", ArgKind.OPTION, metavar="L"),
            Arg("description", "what agents of this type do", ArgKind.REST),
        ),
        examples=("agent type-add security-audit --lifecycle ephemeral scans dependencies",),
    ))
    reg.add(CommandSpec(
        "autonomy", "set an agent's autonomy level (raising it needs the approver role)", OP, _autonomy,
        args=(_ID, Arg("level", "0 observe … 5 autonomous", convert=parse_level)),
        details="Levels: " + ", ".join(f"{n} {name}" for n, name in LEVEL_NAMES.items()) + ".",
        examples=("autonomy agent-proj-3f9a1c07be12 3",),
    ))
    reg.add(CommandSpec("projects", "list projects", V, _projects))
    reg.add(CommandSpec(
        "project create", "create a project", OP, _project_create,
        args=(
            Arg("name", "project name"),
            Arg("repo", "GitHub repository owner/name", ArgKind.OPTION, required=False, metavar="OWNER/NAME"),
            Arg("branch", "default branch", ArgKind.OPTION, required=False, metavar="B", default="main"),
        ),
        examples=("project create api --repo acme/api --branch main",),
    ))
    task_commands.register(reg)
    session_commands.register(reg)
    approval_commands.register(reg)
    place_commands.register(reg)
    digest_commands.register(reg)
    schedule_commands.register(reg)
    return reg
