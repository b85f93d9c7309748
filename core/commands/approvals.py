"""The autonomy commands of the grammar: pending, approve, reject, explain, and the gated actions people
ask for by hand (merge, comment, deploy)."""

from __future__ import annotations

from typing import Any

from core.agents import LEVEL_NAMES, parse_level
from core.autonomy.confirmations import Gate
from core.autonomy.plans import Plan, Status, Target, describe
from core.autonomy.policy import Verdict
from core.autonomy.prompts import render
from core.commands.grammar import Arg, ArgKind, CommandContext, CommandRegistry, CommandSpec, Reply
from core.commands.tasks import TASK_ARG as _TASK
from core.errors import Conflict, ValidationFailed
from core.people.access import Role
from core.runners.repos import repo_kind
from core.store.models import Task
from core.tasks.evidence import Evidence
from core.text import ago, table

_CODE = Arg("code", "the confirmation's code, like K7P2 (see `pending`)")


async def _pending(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    rows = await ctx.shepherd.confirmations.pending(ctx.principal)
    if not rows:
        return Reply("nothing waits for a decision", data=[])
    names: dict[str, str] = {}
    for conf in rows:
        if conf.task_id and conf.task_id not in names:
            names[conf.task_id] = await ctx.shepherd.confirmations.task_name(conf) or conf.task_id
    text = table(
        ("CODE", "RISK", "ACTION", "TASK", "REQUESTED BY", "VOTES", "ASKED", "SUMMARY"),
        [(c.code, c.risk, c.action, names.get(c.task_id or "", "-"), c.requester_name, f"{c.approvals}/{c.quorum}",
          ago(c.created_at), c.summary[:60]) for c in rows],
    )
    return Reply(text + "\n`approve <code> [comment]` or `reject <code> [reason]`", data=[c.code for c in rows])


def _decide(approve: bool) -> Any:
    async def handler(ctx: CommandContext, args: dict[str, Any]) -> Reply:
        result = await ctx.shepherd.confirmations.vote(
            ctx.principal, args["code"], approve=approve, comment=" ".join(args["comment"] or []),
        )
        conf = result.confirmation
        return Reply(result.text, data={"code": conf.code, "status": conf.status, "counted": result.counted})

    return handler


async def _explain(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    decision, agent = await ctx.shepherd.confirmations.explain(
        ctx.principal, args["action"], agent=args["agent"], level=args["level"], project=args["project"],
    )
    who = f"agent {agent.id} (L{agent.autonomy_level} {LEVEL_NAMES[agent.autonomy_level]})" if agent else \
        f"an agent at L{decision.level} {LEVEL_NAMES[decision.level]}"
    word = {Verdict.RUN: "runs by itself", Verdict.ASK: "asks people first", Verdict.REFUSE: "is refused"}
    text = f"{decision.action} for {who} {word[decision.verdict]}: {decision.reason}\n(policy: {decision.source})"
    return Reply(text, data={"action": decision.action, "risk": decision.risk.label, "verdict": decision.verdict.value,
                             "level": decision.level, "quorum": decision.quorum})


# --- actions people ask for -------------------------------------------------------------------------


async def _task_pr(ctx: CommandContext, ref: str) -> tuple[Task, int]:
    task = await ctx.shepherd.tasks.get(ctx.principal, ref)
    number = Evidence.of(task).pull_request()
    if number is None or not task.repo or repo_kind(task.repo) != "github":
        raise Conflict(f"task {task.name} has no pull request (yet): one is opened when its turn ends with "
                       "changes on a GitHub repository", code="NO_PULL_REQUEST")
    return task, number


async def _ask(ctx: CommandContext, task: Task, action: str, target: Target, params: dict[str, Any]) -> Reply:
    agent = await ctx.shepherd.agents.get(ctx.principal, task.agent_id) if task.agent_id else None
    plan = Plan(action=action, summary=describe(action, target, params), target=target, params=params)
    gate: Gate = await ctx.shepherd.confirmations.request(
        ctx.principal, plan, task=task, agent=agent.agent if agent else None, project_id=task.project_id,
    )
    conf = gate.confirmation
    if conf.status == Status.PENDING:
        text = (f"{render(conf, task.name).text}\nwaiting for {conf.quorum - conf.approvals} more approval(s): "
                f"`approve {conf.code}`")
    elif conf.status == Status.APPROVED:
        text = f"{render(conf, task.name).text}\nrunning it now; `task {task.name}` shows the result"
    else:
        text = f"{conf.action} refused: {gate.decision.reason}"
    return Reply(text, ok=conf.status != Status.REJECTED, data={"code": conf.code, "status": conf.status})


def _head(task: Task) -> str:
    head = Evidence.of(task).pushed_head()
    if head:
        return head
    raise Conflict(f"task {task.name} has no pushed commit to act on", code="NO_PUSHED_COMMIT")


async def _merge(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    task, number = await _task_pr(ctx, args["id"])
    target = Target(repo=task.repo, branch=task.work_branch, base=task.base_branch, head=_head(task))
    return await _ask(ctx, task, "pr.merge", target, {"number": number, "method": args["method"]})


async def _comment(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    task, number = await _task_pr(ctx, args["id"])
    body = " ".join(args["text"]).strip()
    if not body or len(body) > 60_000:
        raise ValidationFailed("a comment is 1-60000 characters", code="INVALID_COMMENT")
    target = Target(repo=task.repo, number=number)
    return await _ask(ctx, task, "pr.comment", target, {"number": number, "body": body})


async def _deploy(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    env = args["environment"].strip().lower()
    task = await ctx.shepherd.tasks.get(ctx.principal, args["id"])
    target = Target(repo=task.repo or "", branch=task.work_branch, base=task.base_branch, head=_head(task))
    return await _ask(ctx, task, f"deploy.{env}", target, {})


def _method(raw: str) -> str:
    if raw not in ("merge", "squash", "rebase"):
        raise ValidationFailed("--method is merge, squash or rebase", code="INVALID_MERGE_METHOD")
    return raw


def register(reg: CommandRegistry) -> None:
    V, OP, AP = Role.VIEWER, Role.OPERATOR, Role.APPROVER
    reg.add(CommandSpec("pending", "list what waits for a decision (approve or reject by code)", V, _pending,
                        examples=("pending",)))
    reg.add(CommandSpec(
        "approve", "approve a confirmation (approvers; with a quorum above 1, not the requester)", AP,
        _decide(True), args=(_CODE, Arg("comment", "why, for the record", ArgKind.REST, required=False)),
        examples=("approve K7P2", "approve K7P2 tests are green"),
    ))
    reg.add(CommandSpec(
        "reject", "reject a confirmation: one reject decides", AP, _decide(False),
        args=(_CODE, Arg("comment", "the reason, shown to everyone", ArgKind.REST, required=False)),
        examples=("reject K7P2 not before the release",),
    ))
    reg.add(CommandSpec(
        "explain", "would an action run, ask people first, or be refused, and why", V, _explain,
        args=(
            Arg("action", "an action: pr.open, pr.merge, deploy.production, …"),
            Arg("agent", "the agent whose autonomy decides", ArgKind.OPTION, required=False, metavar="ID"),
            Arg("level", "or a level 0-5", ArgKind.OPTION, required=False, convert=parse_level, metavar="N"),
            Arg("project", "whose policy file applies (default: the agent's project)", ArgKind.OPTION,
                required=False, metavar="P"),
        ),
        examples=("explain pr.open --level 1", "explain deploy.production --agent agent-proj-3f9a1c07be12"),
        details="Risk classes: read, low, medium, high, critical. Levels: "
                + ", ".join(f"{n} {name}" for n, name in LEVEL_NAMES.items()) + ".",
    ))
    reg.add(CommandSpec(
        "merge", "merge a task's pull request (high risk: gated by its agent's autonomy)", OP, _merge,
        args=(_TASK, Arg("method", "merge, squash or rebase", ArgKind.OPTION, required=False, convert=_method,
                         metavar="M", default="squash")),
        examples=("merge fix-the-flaky-test-1a2b",),
    ))
    reg.add(CommandSpec(
        "comment", "comment on a task's pull request (low risk)", OP, _comment,
        args=(_TASK, Arg("text", "the comment", ArgKind.REST)),
        examples=("comment fix-the-flaky-test-1a2b please review the retry logic",),
    ))
    reg.add(CommandSpec(
        "deploy", "deploy a task's pushed commit to an environment its project's policy configures", OP, _deploy,
        args=(Arg("environment", "staging, production, …"), _TASK),
        examples=("deploy staging fix-the-flaky-test-1a2b",),
    ))
