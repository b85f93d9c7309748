"""What each Slack item does, in core's conversation API (core.channels.conversations): a slash command, a mention or a
direct message is a command; a plain reply in a task's thread is that task's next turn; a click is a vote.
Each item is settled in the delivery ledger in the commit of its answer.

Slack's markup becomes what was typed here (items.plain), each mentioned person their Shepherd name, met for
the first time if need be (their name asked of Slack once: users.info, the only Web API call made while an item
is processed; everything Shepherd says goes through the outbox).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.channel import Address
from adapters.slack.items import MENTION, Item, Said, SlashCommand, Vote, plain, unescape
from core.channels.conversations import Conversations, Opening, Received, Where
from core.errors import ShepherdError
from core.people.access import Principal

if TYPE_CHECKING:
    from adapters.slack.inbound import SlackConfig

log = logging.getLogger(__name__)

SOURCE = "slack"
_LEADING_MENTIONS = re.compile(r"^\s*(?:<@[UW][A-Z0-9]+(?:\|[^>]*)?>[\s,:]*)+")
_AT_NAME = re.compile(r"(?<![\w.@])@([\w][\w.\-]*)")


class Handlers:
    def __init__(self, conversations: Conversations, config: SlackConfig, client: AsyncWebClient) -> None:
        self.conversations = conversations
        self.config = config
        self.client = client  # users.info, for the name of someone Shepherd meets for the first time
        self._met: dict[str, str] = {}  # Slack user -> their name, asked by `prepare` for the item's transaction

    async def prepare(self, item: Item) -> None:
        """Ask Slack now for the names of the people an item names whom Shepherd has not met (users.info, which
        may wait out a rate limit), so that its work, done in a transaction, asks Slack nothing."""
        users = {user for user, label in MENTION.findall(getattr(item, "text", "")) if not unescape(label)}
        if not getattr(item, "user_name", ""):
            users.add(item.user)
        for user in users - self._met.keys():
            if await self.conversations.name_of(self.config.org_id, SOURCE, user) is None:
                self._met[user] = await self._slack_name(user)

    async def handle(self, item: Item) -> None:
        if isinstance(item, SlashCommand):
            await self._command(item)
        elif isinstance(item, Said):
            await self._said(item)
        else:
            await self._vote(item)

    async def _command(self, item: SlashCommand) -> None:
        principal = await self.principal(item.user, item.user_name)
        said = await self._readable(item.text, principal) or "help"
        here = Address(item.channel, None, item.user)  # only the person who typed it sees the answer
        # a task it runs or follows gets a thread in this channel: the one it has here, or a new one that begins
        # with a message saying who asked for what (in a DM with them, if Shepherd is not in the channel)
        opening = Opening(str(here), f"{item.command} {said}",
                          serves=lambda address: Address.parse(address).channel in (item.channel, item.user))
        await self.conversations.command(principal, said, answer=Where(SOURCE, str(here)), opening=opening,
                                         item=Received(SOURCE, item.key), place=Where(SOURCE, item.channel))

    async def _said(self, item: Said) -> None:
        received = Received(SOURCE, item.key)
        if not item.mention and item.thread_ts and not item.mentions_someone:
            where = Where(SOURCE, f"{item.channel}/{item.thread_ts}")
            task = await self.conversations.task_at(self.config.org_id, where)
            if task is not None:  # a plain reply in a task's thread: the task's next turn, the reply as it is
                principal = await self.principal(item.user)
                said = await self._readable(item.text, principal, names=False)
                await self.conversations.command(principal, ["send", task, "--", said], answer=where,
                                                 item=received)
                return
        if not (item.mention or item.direct):
            await self.conversations.settle(received)  # a reply in a thread that is not a task's
            return
        principal = await self.principal(item.user)
        said = await self._readable(_LEADING_MENTIONS.sub("", item.text), principal) or "help"
        where = Where(SOURCE, f"{item.channel}/{item.thread_ts or item.ts}")
        task = await self.conversations.task_at(self.config.org_id, where) if item.thread_ts else None
        # in a task's thread, `@Shepherd stop` stops that task; a mention's answer is read by the whole channel
        where = Where(SOURCE, where.address, task, shared=not item.direct)
        # the place is the channel, not the thread of the mention: an approval channel's prompts start threads
        await self.conversations.command(principal, said, where=where, answer=where, item=received,
                                         place=Where(SOURCE, item.channel))

    async def _vote(self, item: Vote) -> None:
        principal = await self.principal(item.user, item.user_name)
        # the decision is announced by core to every message that shows the prompt, this one too; a refusal is
        # told to the one who clicked
        refusals = Where(SOURCE, str(Address(item.channel, item.thread, item.user))) if item.channel else None
        await self.conversations.vote(principal, item.confirmation, approve=item.approve, via=SOURCE,
                                      answer=refusals, item=Received(SOURCE, item.key))

    # --- who is who --------------------------------------------------------------------------------

    async def principal(self, user: str, name: str = "") -> Principal:
        org = self.config.org_id
        name = name or self._met.pop(user, "")
        if not name and await self.conversations.name_of(org, SOURCE, user) is None:
            name = await self._slack_name(user)
        return await self.conversations.person(org, SOURCE, user, name=name or user,
                                               default_role=self.config.default_role,
                                               admin=user in self.config.admins)

    async def _slack_name(self, user: str) -> str:
        """Their Slack handle, asked once, when Shepherd first meets them (users:read)."""
        try:
            answer = await self.client.users_info(user=user)
            info = answer.get("user") or {}
            profile = info.get("profile") or {}
            return str(info.get("name") or profile.get("display_name") or user)
        except Exception as exc:  # a missing scope or a hiccup must not lose the command: the id will do
            log.warning("Slack: users.info %s failed (%s); using the id as the name", user, exc)
            return user

    async def _readable(self, text: str, principal: Principal, *, names: bool = True) -> str:
        """Slack's markup back into what was typed (items.plain), with each mentioned person (<@U123|dave>,
        what Slack sends) as their Shepherd name, met for the first time if need be; and, for commands
        (`names`), a plain @dave (from a manifest without should_escape) as the one known person it can mean."""
        people = {user: (await self.principal(user, unescape(label))).name
                  for user, label in set(MENTION.findall(text))}
        said = plain(text, people).strip()
        if names and _AT_NAME.search(said):
            said = await self._known_names(said, principal)
        return said

    async def _known_names(self, text: str, principal: Principal) -> str:
        """@dave -> @<the Shepherd name> when exactly one known person can be meant: the name itself, or else
        the one name equal to it but for case or for the suffix a clash of names gave it."""
        try:
            known = await self.conversations.names(principal)
        except ShepherdError:
            return text

        def resolve(match: re.Match[str]) -> str:
            typed = match.group(1)
            if typed in known:
                return match.group(0)
            folded = typed.casefold()
            same = [n for n in known if n.casefold() == folded or n.casefold().startswith(f"{folded}@{SOURCE}:")]
            return f"@{same[0]}" if len(same) == 1 else match.group(0)

        return _AT_NAME.sub(resolve, text)
