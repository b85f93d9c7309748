"""The commands about where prompts go and who a person is across channels: subscribe, unsubscribe,
subscriptions (core.channels.subscriptions), link (core.people.links) and dashboard (a sign-in link,
core.people.web_sessions). Every channel has them: they need only
the place a command was said in (CommandContext.place)."""

from __future__ import annotations

from typing import Any

from core.clock import as_utc
from core.commands.grammar import Arg, ArgKind, CommandContext, CommandRegistry, CommandSpec, Reply, UsageError, Where
from core.errors import Forbidden
from core.people.access import Role
from core.text import ago, table

_PROJECT = Arg("project", "a project id or name (see `projects`)")


def _place(ctx: CommandContext, doing: str) -> Where:
    place = ctx.place or ctx.where
    if place is None:
        raise UsageError(f"{doing} works in a place prompts can go to: say it in the chat, channel or issue")
    return place


async def _subscribe(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    place = _place(ctx, "`subscribe`")
    project, new = await ctx.shepherd.subscriptions.subscribe(ctx.principal, place, args["project"])
    text = (f"this {place.channel} place is now an approval channel of {project.name}: its prompts come here too, "
            f"with Approve and Reject; `unsubscribe {project.name}` stops it") if new else \
        f"this {place.channel} place is an approval channel of {project.name} already"
    return Reply(text, data={"project": project.name, "subscribed": True, "new": new})


async def _unsubscribe(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    place = _place(ctx, "`unsubscribe`")
    project, was = await ctx.shepherd.subscriptions.unsubscribe(ctx.principal, place, args["project"])
    text = f"{project.name}'s prompts no longer come here" if was else \
        f"this place is no approval channel of {project.name}: nothing to stop"
    return Reply(text, data={"project": project.name, "subscribed": False, "was": was})


async def _subscriptions(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    everywhere = bool(args["all"])
    place = None if everywhere else _place(ctx, "`subscriptions` without --all")
    rows = await ctx.shepherd.subscriptions.list(ctx.principal, place)
    data = [{"project": s.project, "channel": s.channel, "address": s.address} for s in rows]
    if not rows:
        where = "this org has" if everywhere else "this place has"
        return Reply(f"{where} no approval channels: `subscribe <project>` in a chat makes one", data=data)
    if not everywhere:
        return Reply("approval channel of: " + ", ".join(s.project for s in rows), data=data)
    text = table(("PROJECT", "CHANNEL", "PLACE", "SINCE"), [(s.project, s.channel, s.address, ago(s.since))
                                                           for s in rows])
    return Reply(text, data=data)


async def _link(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    if not args["code"]:
        place = ctx.place or ctx.where
        if place is not None and (place.shared or (ctx.where is not None and ctx.where.shared)):
            # whoever reads the code can type it in their own other channel and become this user, role and all
            raise Forbidden("a link code is a secret, and everyone here would read it: say `link` where only you "
                            "see the answer (a private chat with the bot, a Slack command, the console)",
                            code="LINK_IN_SHARED_PLACE")
        issued = await ctx.shepherd.links.issue(ctx.principal, place)
        text = (f"your link code: {issued.code} (good once, for 10 minutes). In your other channel (Slack, "
                f"Telegram, GitHub), say `link {issued.code}` there: that identity becomes you, {ctx.principal.name}, "
                "with your role. Whoever types it becomes you: keep it to yourself.")
        return Reply(text, data={"expires_at": as_utc(issued.expires_at).isoformat()})
    linked = await ctx.shepherd.links.redeem(ctx.principal, " ".join(args["code"]))
    if linked.already:
        return Reply(f"you are {linked.user} in {linked.into} already: nothing to join",
                     data={"user": linked.user, "role": linked.role})
    text = (f"linked: you are {linked.user} in {linked.joined} and {linked.into} now, one person with one vote "
            f"(role {linked.role})")
    if linked.held is not None:
        text += (f". Your {linked.joined} identity had the {linked.held.label} role: it is not carried over without "
                 f"an admin; an admin can give it with `role {linked.user} {linked.held.label}`")
    return Reply(text, data={"user": linked.user, "role": linked.role,
                             "held": linked.held.label if linked.held else None})


async def _dashboard(ctx: CommandContext, args: dict[str, Any]) -> Reply:
    base = ctx.shepherd.public_url
    if not base:
        raise UsageError("the dashboard's address is not known to this process: an admin sets SHEPHERD_PUBLIC_URL")
    place = ctx.place or ctx.where
    if place is not None and (place.shared or (ctx.where is not None and ctx.where.shared)):
        raise Forbidden("a sign-in link is a secret, and everyone here would read it: say `dashboard` where only you "
                        "see the answer (a private chat with the bot, a Slack command, the console)",
                        code="LINK_IN_SHARED_PLACE")
    issued = await ctx.shepherd.web_sessions.issue_link(ctx.principal)
    url = f"{base.rstrip('/')}/ui/sign-in/link?code={issued.code}"
    text = (f"your dashboard sign-in link, good once, for 10 minutes: {url}\n"
            f"It signs the browser that opens it in as you, {ctx.principal.name}: keep it to yourself. "
            f"Without it: {base.rstrip('/')}/ui/ with an API token.")
    return Reply(text, data={"url": url, "expires_at": as_utc(issued.expires_at).isoformat()})


def register(reg: CommandRegistry) -> None:
    V, AP = Role.VIEWER, Role.APPROVER
    reg.add(CommandSpec(
        "subscribe", "post a project's approval prompts in this chat, channel or issue too (approvers)", AP,
        _subscribe, args=(_PROJECT,), examples=("subscribe api",),
        details="The prompts of every task of the project come here as well as to the task's own thread, with "
                "Approve and Reject; a decision made anywhere edits them here too.",
    ))
    reg.add(CommandSpec("unsubscribe", "stop posting a project's approval prompts here", AP, _unsubscribe,
                        args=(_PROJECT,), examples=("unsubscribe api",)))
    reg.add(CommandSpec(
        "subscriptions", "the projects whose prompts come to this place (--all: every place of the org)", V,
        _subscriptions,
        args=(Arg("all", "every approval channel of the org", ArgKind.FLAG, required=False, default=False),),
        examples=("subscriptions", "subscriptions --all"),
    ))
    reg.add(CommandSpec(
        "link", "join your identities across channels: `link` gives a code, `link <code>` in the other channel "
                "uses it", V, _link,
        args=(Arg("code", "the code `link` gave you in your other channel", ArgKind.REST, required=False),),
        examples=("link", "link K7P2-Q9XM"),
        details="The code is good once, for 10 minutes, and only in another channel than the one it was given "
                "in. The identity that says `link <code>` becomes the user who asked for the code, with that "
                "user's role (a higher role it had is kept only when an admin says `link <code>`; otherwise an "
                "admin can give it with `role`). One person, one vote, whichever channel they approve from.",
    ))
    reg.add(CommandSpec(
        "dashboard", "a one-time link that signs you in to the web dashboard (only where only you see it)", V,
        _dashboard, examples=("dashboard",),
        details="The link is good once, for 10 minutes, and signs in as you with your role; opening it shows a "
                "button, and only pressing it uses the link. Said in a shared channel it is refused.",
    ))
