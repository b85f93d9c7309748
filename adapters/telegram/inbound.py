"""Telegram in: python-telegram-bot's `Application`, built with `updater(None)` and fed by Shepherd itself, from
its aiohttp route POST /telegram/webhook (webhook mode: TELEGRAM_WEBHOOK_SECRET) or from its own getUpdates loop
(polling, the development mode: one process of a deployment, the one running the background services).

Each update is, in this order: verified (webhook: X-Telegram-Bot-Api-Secret-Token compared in constant time; a
wrong or missing one is refused and nothing of it recorded), read (a body that is no update: 400), recorded in the
delivery ledger under its update_id (items.key_of), acknowledged (the webhook's 200; polling's next offset), and
only then processed: PTB's `process_update` routes it to adapters.telegram.handlers. A redelivered update that is
done or in hand does nothing; one that failed (PTB's error handler marks it) or whose process died is read again
from its stored payload by the ledger's sweep and processed the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging

from aiohttp import web
from telegram import BotCommand, Update
from telegram.error import Conflict, RetryAfter
from telegram.ext import Application, CallbackQueryHandler, MessageHandler, TypeHandler, filters

from adapters.telegram.commands import bot_commands
from adapters.telegram.config import TelegramConfig
from adapters.telegram.handlers import Context, Handlers
from adapters.telegram.items import ALLOWED_UPDATES, SOURCE, BadUpdate, key_of, read_update, to_update
from core.channels.conversations import Conversations
from core.channels.ledger import Ledger
from core.commands.grammar import CommandRegistry
from core.commands.registry import build_registry
from core.shepherd import Shepherd

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY = 1024 * 1024  # an update is a few kilobytes (a message is at most 4096 characters)
SWEEP_S = 10.0
RETRY_S = 5.0  # after a failed start-up call or poll (Telegram unreachable)


def _problem(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


def application(config: TelegramConfig) -> Application:  # type: ignore[type-arg]
    """PTB's Application on the configured Bot API, without its own Updater: Shepherd feeds it."""
    return Application.builder().token(config.bot_token).base_url(config.api_url).updater(None).build()


class TelegramInbound:
    name = "telegram in"  # a background service (polling) or the web app's (webhook)

    def __init__(self, shepherd: Shepherd, config: TelegramConfig, *, poll: bool = False,
                 registry: CommandRegistry | None = None) -> None:
        self.config = config
        self.poll = poll and not config.webhook  # polling and webhooks exclude each other
        self.ledger: Ledger = shepherd.ledger
        self.registry = registry or build_registry()
        self.app = application(config)
        self.handlers = Handlers(Conversations(shepherd, self.registry), config, self._settle)
        self.app.add_handler(CallbackQueryHandler(self.handlers.callback))
        self.app.add_handler(MessageHandler(filters.UpdateType.MESSAGE & filters.TEXT, self.handlers.message))
        self.app.add_handler(TypeHandler(Update, self.handlers.nothing))  # the first that matches handles it
        self.app.add_error_handler(self._failed)
        self._queue: asyncio.Queue[Update] = asyncio.Queue()
        # the keys queued or being processed here: the sweep does not queue one again when its lease runs out
        # while it waits (a backlog, or a bot that cannot start), or it would act twice
        self._in_hand: set[str] = set()
        self._ready = asyncio.Event()  # the bot is known (getMe): updates recorded before wait for it
        self._tasks: list[asyncio.Task[None]] = []
        self._to_settle: list[str] = []
        self._settler: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._connect()), loop.create_task(self._work()),
                       loop.create_task(self._sweep())]

    async def stop(self) -> None:
        if self._tasks:  # no new updates first: a deposed leader's getUpdates would overlap its successor's (409)
            self._tasks[0].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tasks[0]
        with contextlib.suppress(TimeoutError):  # work under way finishes (or is left to the ledger's sweep)
            async with asyncio.timeout(10):
                await self.idle()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.app._initialized:  # noqa: SLF001 (PTB has no public flag; shutdown before initialize raises)
            with contextlib.suppress(Exception):
                await self.app.shutdown()

    async def idle(self) -> None:
        """Returns when the updates acknowledged so far have been processed (or given up on for now)."""
        await self._queue.join()
        while self._settler is not None and not self._settler.done():
            await asyncio.wait({self._settler})

    async def _connect(self) -> None:
        """getMe (the bot's name, which /command@Name must carry), the command menu, then the webhook or polling;
        tried again until Telegram answers (updates arriving meanwhile are recorded and wait)."""
        while True:
            try:
                await self.app.initialize()
                await self._set_up()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("Telegram: cannot start (%s: %s); trying again in %.0f s", type(exc).__name__, exc, RETRY_S)
                await asyncio.sleep(RETRY_S)
        self._ready.set()
        log.info("Telegram: @%s, %s", self.app.bot.username,
                 "webhook at POST /telegram/webhook" if self.config.webhook else "polling getUpdates")
        if self.poll:
            await self._poll()

    async def _set_up(self) -> None:
        bot = self.app.bot
        await bot.set_my_commands([BotCommand(c["command"], c["description"]) for c in bot_commands(self.registry)])
        if self.config.webhook_url:
            await bot.set_webhook(self.config.webhook_url, secret_token=self.config.webhook_secret,
                                  allowed_updates=list(ALLOWED_UPDATES))
        elif self.poll:
            await bot.delete_webhook()  # getUpdates is refused while a webhook is set

    # --- the webhook -------------------------------------------------------------------------------

    async def handle_http(self, request: web.Request) -> web.StreamResponse:
        """POST /telegram/webhook."""
        secret = self.config.webhook_secret
        if not secret:
            return _problem(404, "telegram_webhook_off", "Telegram is polled (getUpdates): set TELEGRAM_WEBHOOK_SECRET "
                                                         "to receive updates at /telegram/webhook")
        given = request.headers.get(SECRET_HEADER)
        if given is None:
            return _problem(401, "missing_secret_token", f"the request carries no {SECRET_HEADER} header")
        if not hmac.compare_digest(given.encode("utf-8", "replace"), secret.encode()):
            return _problem(403, "invalid_secret_token", f"{SECRET_HEADER} is not this bot's webhook secret "
                                                         "(TELEGRAM_WEBHOOK_SECRET)")
        if (request.content_length or 0) > MAX_BODY:
            return _problem(413, "payload_too_large", f"an update is at most {MAX_BODY} bytes")
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            return _problem(413, "payload_too_large", f"an update is at most {MAX_BODY} bytes")
        try:
            payload = read_update(raw)
            update = to_update(payload, self.app.bot)
        except BadUpdate as exc:
            return _problem(400, "malformed_update", exc.message)
        await self.receive(payload, update)
        return web.json_response({"ok": True})

    async def receive(self, payload: dict[str, object], update: Update) -> bool:
        """Record an update in the ledger; a new one (or a failed one) is processed after the ack. Returns whether
        it will be processed (False: a redelivery, done or in hand)."""
        key = key_of(update)
        if not await self.ledger.receive(SOURCE, key, self.config.org_id, dict(payload)):
            log.info("Telegram: %s came before; acknowledged, not processed again", key)
            return False
        self._hand(key, update)
        return True

    def _hand(self, key: str, update: Update) -> None:
        self._in_hand.add(key)
        self._queue.put_nowait(update)

    # --- polling -------------------------------------------------------------------------------------

    async def _poll(self) -> None:
        """getUpdates, long-polled: each update recorded before the next call's offset acknowledges it."""
        offset: int | None = None
        while True:
            try:
                updates = await self.app.bot.get_updates(offset=offset, timeout=self.config.poll_timeout_s,
                                                         allowed_updates=list(ALLOWED_UPDATES))
                for update in updates:
                    await self.receive(update.to_dict(), update)
                    offset = update.update_id + 1
            except asyncio.CancelledError:
                raise
            except RetryAfter as exc:
                await asyncio.sleep(_seconds(exc.retry_after))
            except Conflict as exc:  # another process polls, or a webhook was set after we started
                log.error("Telegram: getUpdates refused (%s): only one process may poll, and not with a webhook; "
                          "trying again in %.0f s", exc.message, RETRY_S)
                await asyncio.sleep(RETRY_S)
            except Exception as exc:  # Telegram or the store unreachable: nothing past `offset` was acknowledged
                log.warning("Telegram: polling failed (%s: %s); trying again in %.0f s", type(exc).__name__, exc,
                            RETRY_S)
                await asyncio.sleep(RETRY_S)

    # --- processing -----------------------------------------------------------------------------

    async def _work(self) -> None:
        """Updates in the order they were acknowledged (a command, then the reply to its answer)."""
        await self._ready.wait()
        while True:
            update = await self._queue.get()
            try:
                await self.app.process_update(update)
            except Exception:  # process_update hands handler errors to _failed; this is PTB itself failing
                log.exception("Telegram: processing %s failed; it will be tried again", key_of(update))
                with contextlib.suppress(Exception):
                    await self.ledger.failed(SOURCE, key_of(update), "processing failed")
            finally:
                self._in_hand.discard(key_of(update))
                self._queue.task_done()

    async def _failed(self, update: object, context: Context) -> None:
        """PTB's error handler: a handler raised, so the update is tried again after the ledger's backoff."""
        if not isinstance(update, Update):
            log.error("Telegram: %s", context.error)
            return
        error = context.error
        log.error("Telegram: processing %s failed; it will be tried again", key_of(update), exc_info=error)
        with contextlib.suppress(Exception):
            await self.ledger.failed(SOURCE, key_of(update), f"{type(error).__name__}: {error}")

    def _settle(self, key: str) -> None:
        """An update there is nothing to do for: settled with others (one commit for a burst of group chatter)."""
        self._to_settle.append(key)
        if self._settler is None or self._settler.done():
            self._settler = asyncio.get_running_loop().create_task(self._settle_all())

    async def _settle_all(self) -> None:
        while self._to_settle:
            keys, self._to_settle = self._to_settle, []
            try:
                await self.ledger.done_many(SOURCE, keys)
            except Exception:  # left `received`: the sweep takes them up after their lease, and settles them
                log.exception("Telegram: settling %d updates failed", len(keys))

    async def _sweep(self) -> None:
        await self._ready.wait()
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                await self.sweep()
            except Exception:
                log.exception("Telegram: ledger sweep failed; trying again")

    async def sweep(self) -> int:
        """Updates acknowledged by a process that died, or that failed: read again from their stored payload and
        processed as they would have been live. Returns how many."""
        rows = await self.ledger.due(SOURCE)
        for row in rows:
            if row.key in self._in_hand:  # waiting here already: it is processed once, by that turn
                continue
            try:
                update = to_update(row.payload, self.app.bot)
            except BadUpdate as exc:  # the same payload will not read better next time
                log.warning("Telegram: %s cannot be read (%s); settled without acting", row.key, exc)
                await self.ledger.done(SOURCE, row.key)
                continue
            self._hand(row.key, update)
        await self._queue.join()
        return len(rows)


def _seconds(value: object) -> float:
    from datetime import timedelta

    return value.total_seconds() if isinstance(value, timedelta) else float(value)  # type: ignore[arg-type]
