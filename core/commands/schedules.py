"""`schedules`: the deployment's scheduled jobs (core.schedule), each with its schedule, next run, last run and
result, and who leads (runs them). Any process answers: next runs come from the schedules, not from the live
scheduler, which only the leader has."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.clock import iso, utcnow
from core.commands.grammar import CommandContext, CommandRegistry, CommandSpec, Reply
from core.people.access import Role
from core.schedule.schedules import describe
from core.text import ago, duration, table


def _in(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "never"
    return f"in {duration(max(0, int((when - now).total_seconds())))} ({iso(when)})"


async def _schedules(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    now = utcnow()
    scheduling = ctx.shepherd.scheduling
    states = await scheduling.states(now)
    leader = await scheduling.leadership.leader()
    rows = []
    data_jobs = []
    for s in states:
        last = s.last
        rows.append((s.job.name, describe(s.job.schedule), _in(s.next_run, now),
                     f"{ago(last.started_at)} ({last.state})" if last else "never",
                     (last.result or "") if last else ""))
        data_jobs.append({
            "job": s.job.name, "schedule": s.job.schedule, "setting": s.job.setting,
            "next_run": iso(s.next_run) if s.next_run else None,
            "last_run": None if last is None else {
                "fire_time": iso(last.fire_time), "started_at": iso(last.started_at),
                "finished_at": iso(last.finished_at) if last.finished_at else None, "state": last.state,
                "result": last.result, "holder": last.holder},
        })
    text = table(("JOB", "SCHEDULE", "NEXT RUN", "LAST RUN", "RESULT"), rows) if rows else "no scheduled jobs"
    # Each place's digest is a schedule of its own (core.digests): due times kept in its row, posted by `digests`
    views = await ctx.shepherd.digests.list(ctx.principal)
    digests: list[dict[str, Any]] = [{
        "channel": v.channel, "address": v.address, "cron": v.cron, "timezone": v.timezone, "project": v.project,
        "next_run": iso(v.next_fire_at), "last_posted": iso(v.last_posted_at) if v.last_posted_at else None,
    } for v in views]
    if views:
        text += "\n\ndigests:\n" + table(
            ("PLACE", "CRON", "NEXT RUN", "LAST POSTED"),
            [(f"{v.channel} {v.address}" + (f" ({v.project})" if v.project else ""), f"{v.cron} ({v.timezone})",
              _in(v.next_fire_at, now), ago(v.last_posted_at) if v.last_posted_at else "never") for v in views])
    text += "\nleader: " + (f"{leader} runs these jobs" if leader else
                            "none: no `serve` or `worker` runs, so no job runs")
    return Reply(text, data={"jobs": data_jobs, "digests": digests, "leader": leader})


def register(reg: CommandRegistry) -> None:
    reg.add(CommandSpec(
        "schedules", "the scheduled jobs: when each runs next, its last run and result, and who runs them",
        Role.OPERATOR, _schedules, examples=("schedules",),
        details="Jobs run on one process of the deployment, the leader (host:pid); when it ends, another `serve` "
                "or `worker` takes over within SHEPHERD_LEADER_TIMEOUT. Each job's schedule is a setting "
                "(README: Scheduler).",
    ))
