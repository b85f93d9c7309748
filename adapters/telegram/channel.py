"""Telegram as a core.channels.outbox.Channel: the outbox dispatcher posts and edits through the real
python-telegram-bot `Bot` (its `base_url` is TELEGRAM_API_URL).

Addresses: `<chat_id>` is a chat (negative for groups), `<chat_id>:<message_thread_id>` a forum topic. A chat is a
thread already: there is no opening message (`open` posts in place). A message's ref is `str(message_id)`.

Telegram's limits (PLATFORM_RULES.md), kept here so that Telegram never has to refuse:
- edits at most one a second per chat: `pace_s`, per `pace_key` (the chat), kept by the dispatcher;
- at most 20 messages a minute in one group and about 30 a second for the whole bot: a post beyond either waits
  (a transient DeliveryError with `retry_after`: the dispatcher keeps the row and tries again then);
- flood control (`RetryAfter`, a 429 with `retry_after`) is per bot: once Telegram says wait, every call of this
  channel, to any chat, waits until then, and the row that met it goes back to the dispatcher with that wait.
A chat that is gone to the bot (blocked, kicked, not found) is a permanent refusal: the row is kept as failed.
A group that became a supergroup is followed to its new id. Nothing is dropped.

The counts are this process's: a deployment that runs several dispatchers (serve and worker) shares Telegram's
limits between them, and Telegram's own RetryAfter is what keeps them honest then.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning

from adapters.telegram.render import Rendered, render
from core.channels.outbox import DeliveryError, Message

log = logging.getLogger(__name__)
T = TypeVar("T")

PACE_S = 1.0  # edits of one chat's messages: at most one a second
GROUP_PER_MINUTE = 20  # messages a minute in one group
BOT_PER_SECOND = 30  # messages a second for the whole bot
FLOOD_WAIT_DEFAULT_S = 5.0  # a 429 that does not say how long (Telegram always does)
POOL = 16  # connections: the dispatcher delivers up to 16 threads side by side (bot.outbox.PARALLEL)
# Refusals of an edit that mean the message is as asked already
NOT_MODIFIED = "message is not modified"
_ADDRESS = re.compile(r"^(-?[1-9][0-9]{0,19})(?::([1-9][0-9]{0,19}))?$")


@dataclass(frozen=True)
class Address:
    """A chat, or a forum topic in one: `<chat_id>` or `<chat_id>:<message_thread_id>`."""

    chat_id: int
    topic: int | None = None

    @classmethod
    def parse(cls, address: str) -> Address:
        found = _ADDRESS.match(address)
        if found is None:
            raise DeliveryError(f"telegram: {address!r} is not a chat (<chat_id> or <chat_id>:<topic id>)",
                                permanent=True)
        return cls(int(found.group(1)), int(found.group(2)) if found.group(2) else None)


def make_bot(token: str, api_url: str) -> Bot:
    """A Bot for the outbox: its own connection pool, as wide as the dispatcher's lanes."""
    return Bot(token, base_url=api_url,
               request=HTTPXRequest(connection_pool_size=POOL, read_timeout=15, write_timeout=15, pool_timeout=15))


async def start_bot(bot: Bot) -> None:
    """Open the bot's connections and learn who it is. Telegram being out of reach (or the token refused) does not
    stop Shepherd: the outbox keeps the rows and tries again; the log says why, without the token."""
    try:
        await bot.initialize()
    except InvalidToken:
        log.error("telegram: the Bot API refused TELEGRAM_BOT_TOKEN; messages wait in the outbox until it works")
    except TelegramError as exc:
        log.warning("telegram: the Bot API is out of reach at start-up (%s); messages wait in the outbox",
                    type(exc).__name__)


def _seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 warns while `retry_after` moves from int to timedelta: either is read
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        wait = exc.retry_after
    return max(0.0, wait.total_seconds() if isinstance(wait, timedelta) else float(wait))


class _Window:
    """How many posts went out in the last `span` seconds (a sliding window), and when the next one may."""

    def __init__(self, limit: int, span: float) -> None:
        self.limit = limit
        self.span = span
        self._times: deque[float] = deque()

    def wait(self, now: float) -> float:
        while self._times and self._times[0] <= now - self.span:
            self._times.popleft()
        return 0.0 if len(self._times) < self.limit else self._times[0] + self.span - now

    def take(self, now: float) -> None:
        self._times.append(now)


class TelegramChannel:
    name = "telegram"
    progress = True
    pace_s = PACE_S

    def __init__(self, bot: Bot, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.bot = bot
        self.clock = clock
        self._paused_until = 0.0  # Telegram's flood control: no call of this bot before then
        self._bot_window = _Window(BOT_PER_SECOND, 1.0)
        self._groups: dict[int, _Window] = {}
        self._migrated: dict[int, int] = {}  # a group that became a supergroup -> its new id

    def accepts(self, address: str) -> bool:
        return True  # one bot token reaches every chat the bot is in

    def pace_key(self, address: str) -> str:
        return address.partition(":")[0]  # the chat: its topics share its pace

    # --- the calls ---------------------------------------------------------------------------------------

    async def post(self, address: str, message: Message) -> str:
        where = Address.parse(address)
        shown = render(message)
        chat = self._migrated.get(where.chat_id, where.chat_id)
        self._may_post(chat)
        sent = await self._call(chat, lambda chat_id: self.bot.send_message(
            chat_id=chat_id, text=shown.text, parse_mode=ParseMode.HTML, message_thread_id=where.topic,
            reply_markup=_markup(shown), disable_web_page_preview=True))
        return str(sent.message_id)

    async def update(self, address: str, ref: str, message: Message) -> None:
        where = Address.parse(address)
        shown = render(message)
        chat = self._migrated.get(where.chat_id, where.chat_id)
        self._may_edit()
        try:
            await self._call(chat, lambda chat_id: self.bot.edit_message_text(
                chat_id=chat_id, message_id=int(ref), text=shown.text, parse_mode=ParseMode.HTML,
                reply_markup=_markup(shown), disable_web_page_preview=True))
        except _NotModified:
            return  # already as asked: an edit delivered before, tried again

    async def open(self, address: str, message: Message) -> tuple[str, str]:
        """A chat is a thread already: the opening message is posted in it, and the thread stays there."""
        return await self.post(address, message), address

    # --- limits --------------------------------------------------------------------------------------------

    def _may_call(self) -> None:
        """Wait (as a transient DeliveryError) while Telegram's flood control for this bot lasts."""
        left = self._paused_until - self.clock()
        if left > 0:
            raise DeliveryError(f"telegram: flood control, {left:.1f} s left", retry_after=left)

    def _may_edit(self) -> None:
        """An edit waits for flood control and the bot's calls a second (its chat's pace is the dispatcher's)."""
        self._may_call()
        now = self.clock()
        wait = self._bot_window.wait(now)
        if wait > 0:
            raise DeliveryError(f"telegram: {BOT_PER_SECOND} messages a second: waits {wait:.2f} s", retry_after=wait)
        self._bot_window.take(now)

    def _may_post(self, chat: int) -> None:
        """A post waits for flood control, the bot's messages a second and, in a group, its messages a minute; when
        it may go, it is counted."""
        self._may_call()
        now = self.clock()
        group = self._groups.setdefault(chat, _Window(GROUP_PER_MINUTE, 60.0)) if chat < 0 else None
        wait = max(self._bot_window.wait(now), group.wait(now) if group is not None else 0.0)
        if wait > 0:
            raise DeliveryError(f"telegram: {GROUP_PER_MINUTE} messages a minute in chat {chat} "
                                f"(or {BOT_PER_SECOND} a second in all): waits {wait:.1f} s", retry_after=wait)
        self._bot_window.take(now)
        if group is not None:
            group.take(now)

    async def _call(self, chat: int, request: Callable[[int], Awaitable[T]]) -> T:
        """One Bot API call in `chat`; Telegram's refusals as the outbox reads them."""
        try:
            try:
                return await request(chat)
            except ChatMigrated as moved:
                # the group became a supergroup: it lives on under its new id (its old messages with it)
                self._migrated[chat] = moved.new_chat_id
                return await request(moved.new_chat_id)
        except RetryAfter as exc:
            wait = _seconds(exc)
            self._paused_until = max(self._paused_until, self.clock() + wait)  # every chat: flood control is per bot
            raise DeliveryError(f"telegram: flood control, retry after {wait:g} s", retry_after=wait) from None
        except BadRequest as exc:
            if NOT_MODIFIED in exc.message.lower():
                raise _NotModified from None
            # chat not found, message to edit not found, a message Telegram cannot take: trying again cannot help
            raise DeliveryError(f"telegram: {exc.message}", permanent=True) from None
        except Forbidden as exc:  # blocked by the user, kicked from the group
            raise DeliveryError(f"telegram: {exc.message}", permanent=True) from None
        except InvalidToken:
            raise DeliveryError("telegram: the Bot API refused TELEGRAM_BOT_TOKEN") from None  # its text has the token
        except TimedOut as exc:
            raise DeliveryError(f"telegram: timed out ({exc.message})") from None
        except NetworkError as exc:
            if "too many requests" in exc.message.lower():  # a 429 without retry_after: wait all the same
                self._paused_until = max(self._paused_until, self.clock() + FLOOD_WAIT_DEFAULT_S)
                raise DeliveryError(f"telegram: {exc.message}", retry_after=FLOOD_WAIT_DEFAULT_S) from None
            raise DeliveryError(f"telegram: {exc.message}") from None
        except TelegramError as exc:
            raise DeliveryError(f"telegram: {exc.message}") from None


class _NotModified(Exception):
    """An edit Telegram found already made."""


def _markup(shown: Rendered) -> InlineKeyboardMarkup | None:
    if not shown.buttons:
        return None  # an edit without a keyboard removes the one the message had (a decided prompt)
    return InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=data) for label, data in shown.buttons]])
