"""`digest <cron>|off`: a status digest posted in this place on a cron schedule (core.digests)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.clock import iso
from core.commands.grammar import Arg, ArgKind, CommandContext, CommandRegistry, CommandSpec, Reply, UsageError
from core.digests.service import DigestView
from core.people.access import Role
from core.schedule.cron import zone


def _when(moment: datetime, timezone: str) -> str:
    local = moment.astimezone(zone(timezone))
    label = "UTC" if timezone == "UTC" else local.tzname() or timezone
    return f"{local:%a %d %b %H:%M:%S} {label}"


def _data(view: DigestView) -> dict[str, Any]:
    return {"cron": view.cron, "timezone": view.timezone, "project": view.project,
            "next_fire_at": iso(view.next_fire_at),
            "last_fired_at": iso(view.last_fired_at) if view.last_fired_at else None}


async def _digest(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    place = ctx.place or ctx.where
    if place is None:
        raise UsageError("`digest` works in a place a digest can be posted to: say it in the chat, channel or issue")
    words: list[str] = args["cron"] or []
    digests = ctx.shepherd.digests
    if not words:
        view = await digests.show(ctx.principal, place)
        if view is None:
            return Reply("this place has no digest: `digest */30 9-18 * * 1-5` posts one every half hour of the "
                         "working week", data=None)
        last = f"; last at {_when(view.last_fired_at, view.timezone)}" if view.last_fired_at else ""
        scope = f", of project {view.project}" if view.project else ""
        return Reply(f"digest here{scope} on `{view.cron}` ({view.timezone} times): next at "
                     f"{_when(view.next_fire_at, view.timezone)}{last}; `digest off` stops it", data=_data(view))
    if [w.lower() for w in words] == ["off"]:
        if args["project"]:
            raise UsageError("`digest off` takes no --project: it stops this place's digest")
        gone = await digests.off(ctx.principal, place)
        text = f"digest off: `{gone.cron}` no longer posts here" if gone else \
            "this place has no digest: nothing to stop"
        return Reply(text, data={"off": gone is not None})
    view = await digests.set(ctx.principal, place, " ".join(words), project=args["project"])
    scope = f" of project {view.project}'s tasks" if view.project else ""
    return Reply(f"digest{scope} here on `{view.cron}`, in {view.timezone} times (SHEPHERD_TIMEZONE sets the zone): "
                 f"next at {_when(view.next_fire_at, view.timezone)}. After that first one, a digest is posted only "
                 "when something changed since the last; `digest off` stops it", data=_data(view))


def register(reg: CommandRegistry) -> None:
    reg.add(CommandSpec(
        "digest", "post a status digest in this place on a schedule: `digest <cron>`, `digest off`, or `digest` "
                  "to show it", Role.OPERATOR, _digest,
        args=(Arg("cron", "5 crontab fields (minute hour day-of-month month day-of-week), or 6 with seconds first; "
                          "or off", ArgKind.REST, required=False),
              Arg("project", "only this project's tasks (in a GitHub issue: its repository's)", ArgKind.OPTION,
                  required=False, metavar="P")),
        examples=("digest 0 9 * * 1-5", "digest */30 * * * * --project api", "digest off", "digest"),
        details="The digest lists the tasks running (with their latest line), waiting on people (for how long), "
                "finished since the last digest (with outcomes), the confirmations pending (by age) and the agents "
                "suspended. It is posted as a new message, and not at all when nothing changed since the last one "
                "(SHEPHERD_DIGEST_ALWAYS posts it anyway). Times are UTC unless SHEPHERD_TIMEZONE names a zone. "
                "Shepherd also takes a 6th field, seconds, first: `*/10 * * * * *`.",
    ))
