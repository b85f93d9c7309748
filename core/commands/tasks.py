"""The task commands of the grammar: run, tasks, task, logs, pause, resume, stop, send, delete."""

from __future__ import annotations

from typing import Any

from core.agents import parse_level
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
from core.store.models import Task
from core.tasks.budget import Limit, amount, burn_down, checked_budget
from core.tasks.evidence import Evidence, evidence_summary
from core.tasks.service import STATUS_GROUPS, TaskFilter, TaskView
from core.tasks.state import FINISHED, TaskStatus
from core.tasks.steering import owner_of
from core.text import ago, table

TASK_ARG = Arg("id", "a task id or name, like task-3f9a1c07be12 (in the task's thread: omit it)", thread_task=True)
_TASK = TASK_ARG


def task_filters(words: list[str], ctx: CommandContext) -> tuple[TaskFilter, int]:
    """`status:active owner:me project:api limit:20`."""
    values = filter_words(words, ("status", "owner", "project", "limit"),
                          "status:<status>, owner:me|<name>, project:<id>, limit:<n>")
    status = None
    if "status" in values:
        status = STATUS_GROUPS.get(values["status"].lower())
        if status is None:
            raise UsageError(f"unknown status {values['status']!r}: one of {', '.join(STATUS_GROUPS)}")
    owner = values.get("owner")
    if owner == "me":
        owner = owner_of(ctx.principal)[0]
    return TaskFilter(status=status, owner_id=owner, project_id=values.get("project")), filter_limit(values, 20)


def state_line(task: Task) -> str:
    if TaskStatus(task.status) in FINISHED:
        return evidence_summary(task)
    return f"{task.status}: {task.state_message}" if task.state_message else task.status


async def _run(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    budget = checked_budget(args["max_turns"], args["max_minutes"], args["max_cost"])
    view = await ctx.shepherd.tasks.create(
        ctx.principal, prompt=" ".join(args["prompt"]), runtime=args["agent"], repo=args["repo"],
        branch=args["branch"], project=args["project"], level=args["level"], name=args["name"],
        thread=(ctx.where.channel, ctx.where.address) if ctx.where else None, request_key=ctx.request_key,
        session_id=args["session"],
        budget=None if budget.empty else budget,
    )
    t = view.task
    return Reply(started(view), data={"id": t.id, "name": t.name, "follow": True})


def started(view: TaskView) -> str:
    """What a new task's start says (a run, or a task a channel started on a webhook's behalf)."""
    t = view.task
    where = f" on {t.repo}" + (f" ({t.base_branch})" if t.base_branch else "") if t.repo else ""
    limits = budget_line(t)
    return (f"started task {t.name} ({t.id}) with {t.runtime}{where}, autonomy L{t.autonomy_level}"
            f"{f', budget {limits}' if limits else ''}; `logs {t.name}` shows its output, `stop {t.name}` ends it")


def budget_line(t: Task) -> str:
    """A task's budget as people set it: `3 turns, 30 min, $1.00`, or empty without one."""
    parts = [amount(limit, value) for limit, value in ((Limit.TURNS, t.max_turns), (Limit.MINUTES, t.max_minutes),
                                                      (Limit.COST, t.max_cost)) if value is not None]
    return ", ".join(parts)


async def _tasks(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    flt, limit = task_filters(args["filters"], ctx)
    rows, total = await ctx.shepherd.tasks.list(ctx.principal, flt, limit=limit)
    if not rows:
        return Reply('no tasks: `run "fix the flaky test" --agent demo` starts one', data=[])
    text = table(
        ("ID", "NAME", "AGENT", "STATUS", "OUTCOME", "OWNER", "CREATED"),
        [(t.id, t.name, t.runtime, t.status, t.outcome or "-", t.owner_name, ago(t.created_at)) for t in rows],
    )
    if total > len(rows):
        text += f"\n({len(rows)} of {total}; add limit:<n> or filters)"
    return Reply(text, data=[t.id for t in rows])


async def _task(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    t = await ctx.shepherd.tasks.get(ctx.principal, args["id"])
    lines = [
        f"{t.id}  {t.name}",
        f"  {state_line(t)}",
        f"  agent {t.runtime} · task agent {t.agent_id or '-'} · autonomy L{t.autonomy_level} · turns {t.turns}",
        f"  owner {t.owner_name} · created {ago(t.created_at)}",
    ]
    if t.repo:
        lines.append(f"  repo {t.repo} · base {t.base_branch or 'default'} · branch {t.work_branch}")
    if t.workspace_pruned_at is not None:
        lines.append(f"  workspace removed by clean-up {ago(t.workspace_pruned_at)}: no follow-ups")
    elif t.workspace:
        lines.append(f"  workspace {t.workspace}")
    if t.pending_inputs:
        lines.append(f"  follow-ups waiting: {len(t.pending_inputs)}")
    lines.append(f"  decisions {t.decision_count} ({t.auto_resolved_count} by policy)")
    used = burn_down(t)
    if used:
        lines.append(f"  budget {' · '.join(used)}")
    for conf in await ctx.shepherd.confirmations.pending(ctx.principal, task_id=t.id):
        lines.append(f"  waiting for approval {conf.code}: {conf.summary} (`approve {conf.code}`)")
    evidence = Evidence.of(t)
    for action in evidence.actions:
        lines.append(f"  {action.action} ({action.code}): {action.describe()}")
    last = evidence.last_lines
    if last:
        lines.append("  last output:")
        lines += [f"    {line}" for line in last[-5:]]
    lines.append(f"  prompt: {t.prompt[:300]}")
    return Reply("\n".join(lines), data={"id": t.id, "status": t.status, "outcome": t.outcome})


async def _logs(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    task, rows = await ctx.shepherd.tasks.logs(ctx.principal, args["id"], limit=args["tail"], tail=True)
    if not rows:
        return Reply(f"{task.name}: no output yet ({task.status})", data=[])
    body = "\n".join(f"{'>' if r.type == 'input' else '|'} {r.content}" for r in rows)
    more = task.log_count - len(rows)
    head = f"{task.name} ({task.status}), last {len(rows)} of {task.log_count} lines" if more > 0 else task.name
    return Reply(f"{head}\n{body}", data=[r.id for r in rows])


def _control(verb: str, done: str) -> Any:
    async def handler(ctx: CommandContext, args: dict[str, Any]) -> Reply:
        t = await getattr(ctx.shepherd.tasks, verb)(ctx.principal, args["id"])
        if verb == "stop" and TaskStatus(t.status) in FINISHED and t.control is None:
            return Reply(f"{t.name}: {evidence_summary(t)}", data={"id": t.id, "status": t.status})
        return Reply(f"{t.name}: {done}", data={"id": t.id, "status": t.status})

    return handler


async def _send(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    t = await ctx.shepherd.tasks.send(ctx.principal, args["id"], " ".join(args["text"]))
    if TaskStatus(t.status) in (TaskStatus.RUNNING, TaskStatus.INITIALIZING):
        text = f"{t.name} is working: your follow-up runs when this turn ends ({len(t.pending_inputs)} waiting)"
    else:
        text = f"{t.name}: follow-up turn starting"
    return Reply(text, data={"id": t.id, "name": t.name, "follow": True})


def register(reg: CommandRegistry) -> None:
    V, OP = Role.VIEWER, Role.OPERATOR
    reg.add(CommandSpec(
        "run", "start a coding task: an agent CLI works on a repository in a workspace of its own", OP, _run,
        args=(
            Arg("prompt", "what the agent should do (quote it, or just type it)", ArgKind.REST),
            Arg("agent", "claude, codex, opencode, aider, demo or a custom agent", ArgKind.OPTION,
                required=False, metavar="A"),
            Arg("repo", "owner/name, a git URL, or a local path (admins)", ArgKind.OPTION, required=False,
                metavar="REPO"),
            Arg("branch", "base branch (default: the repository's)", ArgKind.OPTION, required=False, metavar="B"),
            Arg("project", "project id or name: its repository and its agent's autonomy", ArgKind.OPTION,
                required=False, metavar="P"),
            Arg("level", "autonomy 0-5 (default: the project agent's)", ArgKind.OPTION, required=False,
                convert=parse_level, metavar="N"),
            Arg("name", "a name for the task (default: from the prompt)", ArgKind.OPTION, required=False,
                metavar="NAME"),
            Arg("session", "a session it joins (default: the thread's session, or a new one)", ArgKind.OPTION,
                required=False, metavar="S"),
            Arg("max_turns", "budget: at most N turns, then people are asked to extend it or stop", ArgKind.OPTION,
                required=False, metavar="N"),
            Arg("max_minutes", "budget: at most M minutes of the agent's running time", ArgKind.OPTION,
                required=False, metavar="M"),
            Arg("max_cost", "budget: at most USD dollars, as the agent reports its cost", ArgKind.OPTION,
                required=False, metavar="USD"),
        ),
        examples=('run "fix the flaky auth test" --repo acme/api', 'run "add a README" --agent demo',
                  'run "now the changelog" --session sess_3f9a1c07be12a4c0',
                  'run "migrate the tests" --max-turns 3 --max-cost 2'),
        details="The task gets a branch shepherd/<name>; its outcome comes with the exit code, the duration, "
                "what changed and the last lines it printed. Run in a thread, it joins the thread's session "
                "(the first task run there begins it); --session joins another. At a limit of its budget the work "
                "pauses and people are asked to extend it by the same amount or stop it (`approve CODE`).",
    ))
    reg.add(CommandSpec(
        "tasks", "list tasks, newest first", V, _tasks,
        args=(Arg("filters", "status:active|running|finished|… owner:me project:<id> limit:<n>", ArgKind.REST,
                  required=False),),
        examples=("tasks", "tasks status:active owner:me"),
    ))
    reg.add(CommandSpec("task", "show one task: state, outcome and evidence", V, _task, args=(_TASK,)))
    reg.add(CommandSpec(
        "logs", "show a task's recent output", V, _logs,
        args=(_TASK, Arg("tail", "how many lines", ArgKind.OPTION, required=False, convert=int, metavar="N",
                         default=50)),
    ))
    reg.add(CommandSpec("pause", "freeze a running task (its processes stop using CPU)", OP,
                        _control("pause", "pausing"), args=(_TASK,)))
    reg.add(CommandSpec("resume", "continue a paused task", OP, _control("resume", "resuming"), args=(_TASK,)))
    reg.add(CommandSpec("stop", "cancel a task: its whole process group is ended", OP,
                        _control("stop", "stopping"), args=(_TASK,), aliases=("cancel",)))
    reg.add(CommandSpec(
        "send", "a follow-up turn: runs now if the agent is idle, after its current turn if busy", OP, _send,
        args=(_TASK, Arg("text", "what to tell the agent", ArgKind.REST)),
        examples=("send fix-the-flaky-test-1a2b also update the changelog",),
    ))
    reg.add(CommandSpec("delete", "remove a task, its logs and its workspace (stopping it first)", OP,
                        _control("delete", "deleting"), args=(_TASK,)))
