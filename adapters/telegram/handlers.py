"""What each Telegram update does, in core's conversation API (core.channels.conversations), as python-telegram-bot
handler callbacks: a command (`/command args`, `/command@ThisBot`, plain text in a private chat) runs; a reply to
one of a task's messages is that task's next turn; a tap on Approve or Reject is a vote, and every callback query
is answered (answerCallbackQuery) with what happened or why not. Everything else is settled without acting.

Each update is settled in the delivery ledger in the commit of its answer; the answers go out through the outbox
(the Telegram channel). The one Bot API call made here is answerCallbackQuery: it is the tap's answer, not a
message, and Telegram shows a spinner until it comes.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Callable
from datetime import timedelta

from telegram import Message, Update, User
from telegram.error import RetryAfter, TelegramError
from telegram.ext import ContextTypes
from telegram.warnings import PTBDeprecationWarning

from adapters.telegram.config import TelegramConfig
from adapters.telegram.items import SOURCE, address_of, command_text, is_command, key_of, vote_of
from core.channels.conversations import Conversations, Received, Where
from core.people.access import Principal

log = logging.getLogger(__name__)

ANSWER_MAX = 200  # Telegram's limit on a callback query's answer text
ANSWER_WAIT_MAX_S = 10.0  # flood control waited out before answering a tap; longer and the query is too old


def _seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 warns while `retry_after` moves from int to timedelta: either is read
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
Context = ContextTypes.DEFAULT_TYPE


def _name(user: User) -> str:
    return user.username or user.full_name or str(user.id)


class Handlers:
    def __init__(self, conversations: Conversations, config: TelegramConfig, settle: Callable[[str], None]) -> None:
        self.conversations = conversations
        self.config = config
        self.settle = settle  # an update there is nothing to do for: settled with others (the receiver's)

    async def principal(self, user: User) -> Principal:
        return await self.conversations.person(self.config.org_id, SOURCE, str(user.id), name=_name(user),
                                               default_role=self.config.default_role,
                                               admin=str(user.id) in self.config.admins)

    # --- messages --------------------------------------------------------------------------------------

    async def message(self, update: Update, context: Context) -> None:
        message, user = update.message, update.effective_user
        if message is None or user is None or user.is_bot or not message.text:
            self.settle(key_of(update))
            return
        received = Received(SOURCE, key_of(update))
        here = Where(SOURCE, address_of(message))
        task = await self._replied_task(message, here, context)
        text = message.text
        if task is not None and not is_command(text):  # a reply to a task's message: its next turn, as typed
            principal = await self.principal(user)
            await self.conversations.command(principal, ["send", task, "--", text], answer=here, item=received)
            return
        said = command_text(text, bot_username=context.bot.username, private=message.chat.type == "private")
        if said is None:  # group chatter, another bot's command
            self.settle(received.key)
            return
        principal = await self.principal(user)
        # a task it starts is bound to this chat (or topic); replying to a task's message, the task may go unsaid
        where = Where(SOURCE, here.address, task, shared=message.chat.type != "private")
        await self.conversations.command(principal, said or "help", where=where, answer=where, item=received)

    async def _replied_task(self, message: Message, here: Where, context: Context) -> str | None:
        """The task whose message this one replies to (one of Shepherd's own messages), or None."""
        replied = message.reply_to_message
        if replied is None or replied.from_user is None or replied.from_user.id != context.bot.id:
            return None
        if message.is_topic_message and replied.message_id == message.message_thread_id:
            return None  # in a forum topic every message "replies" to the topic's first message
        return await self.conversations.task_of_message(self.config.org_id, here, str(replied.message_id))

    # --- buttons ---------------------------------------------------------------------------------------

    async def callback(self, update: Update, context: Context) -> None:
        """A tap on an inline button: a vote when it is Approve or Reject of Shepherd's; always answered."""
        query = update.callback_query
        assert query is not None  # CallbackQueryHandler's
        key = key_of(update)
        answer, alert = "Shepherd could not take your tap now; try again in a moment", True
        try:
            vote = vote_of(query.data)
            if vote is None:
                answer = "this button is not one of Shepherd's, or no longer does anything"
                self.settle(key)
                return
            approve, confirmation = vote
            principal = await self.principal(query.from_user)
            reply = await self.conversations.vote(principal, confirmation, approve=approve, via=SOURCE,
                                                  item=Received(SOURCE, key))
            answer, alert = (reply.text.removeprefix("error: ") if not reply.ok else reply.text), not reply.ok
        finally:
            await self._answer(query.id, answer, alert, context)

    async def _answer(self, query_id: str, text: str, alert: bool, context: Context) -> None:
        text = text if len(text) <= ANSWER_MAX else text[:ANSWER_MAX - 1] + "…"
        for attempt in range(2):
            try:
                await context.bot.answer_callback_query(query_id, text=text, show_alert=alert)
                return
            except RetryAfter as exc:  # the bot's flood control: the tapper's spinner waits, then hears
                wait = _seconds(exc)
                if attempt or wait > ANSWER_WAIT_MAX_S:  # a query answered that late is refused as too old
                    log.info("Telegram: callback query %s not answered: flood control for %.0f s", query_id, wait)
                    return
                await asyncio.sleep(wait)
            except TelegramError as exc:  # too old (a replay long after the tap): the vote itself stands
                log.info("Telegram: answering callback query %s failed (%s)", query_id, exc)
                return

    # --- the rest --------------------------------------------------------------------------------------

    async def nothing(self, update: Update, context: Context) -> None:
        """Any other update (an edit, a photo, a member joining): settled without acting."""
        self.settle(key_of(update))
