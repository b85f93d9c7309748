"""What runs beside (or instead of) the web server: the task supervisor with its runner and action executor,
the outbox dispatcher, the sweeper (task news), and the leader election with what only the leader runs: the
scheduler (bot.scheduler) and Telegram's getUpdates poller. `serve`, `worker` and the console assemble it here,
each with its own channels: this is where the ports' implementations are built (the local runner, GitHub as
the forge and its credentials, the HTTP deploy hook, Slack, GitHub and Telegram as channels) and handed to core; the
dispatcher and the sweeper get core's outbox wake-up through their constructors. Services start in order and
stop in reverse.

Agents reach Shepherd for `shepherd ask` at SHEPHERD_URL: the web server when this process serves one (or
SHEPHERD_PUBLIC_URL), otherwise a loopback listener that serves only the task callback routes; sandboxed
agents through a Unix socket that serves only those routes (bot.callbacks).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

import aiohttp
from aiohttp import web

from adapters.deploy.hook import HttpDeployHook
from bot.callbacks import PYTHON, CallbackSocket, callback_app, write_launcher
from bot.leader import Elector, elector
from bot.outbox import Dispatcher
from bot.runners import make_runner
from bot.scheduler import Scheduler, grace_for, jobs
from bot.settings import Settings
from bot.sweeper import Sweeper
from core.autonomy.actions import Executor
from core.autonomy.forge import Forge
from core.channels.outbox import Channel
from core.shepherd import Shepherd
from core.tasks.supervisor import TaskSupervisor

if TYPE_CHECKING:
    from telegram import Bot as TelegramBot

    from adapters.github.auth import GitHubAuth
    from adapters.telegram.config import TelegramConfig

log = logging.getLogger(__name__)


class Service(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Background:
    def __init__(
        self, settings: Settings, shepherd: Shepherd, *, channels: list[Channel] | None = None,
        callback_url: str | None = None, platforms: bool = True,
    ) -> None:
        self.settings = settings
        self.shepherd = shepherd
        self.channels = channels or []
        # Whether this process delivers to chat platforms (Slack): only a process that serves (serve, worker).
        # A console leaves its outbox rows to the server's dispatcher, which keeps each platform's pace.
        self.platforms = platforms
        self.callback_url = callback_url or settings.public_url
        self.http: aiohttp.ClientSession | None = None
        self.callback_site: web.AppRunner | None = None
        self.callback_socket: CallbackSocket | None = None
        self.supervisor: TaskSupervisor | None = None
        self.dispatcher: Dispatcher | None = None
        self.sweeper: Sweeper | None = None
        self.elector: Elector | None = None
        self.scheduler: Scheduler | None = None
        self.poller: Service | None = None  # Telegram's getUpdates loop, while this process leads
        self.github: GitHubAuth | None = None  # Shepherd's GitHub credentials, once started (None: not configured)
        self.telegram_bot: TelegramBot | None = None  # the outbox's Telegram Bot, once started (None: not configured)
        self._started: list[Service] = []

    async def start(self) -> None:
        settings = self.settings
        self.http = aiohttp.ClientSession()
        if self.callback_url is None:
            self.callback_url = await self._callback_listener()
        config = replace(settings.runner_config(), callback_url=self.callback_url,
                         tool_dir=write_launcher(settings.data_dir / "bin"))
        if config.sandbox is not None:  # no network inside: agents ask through a socket bound into the sandbox
            self.callback_socket = CallbackSocket(self.shepherd)
            socket = await self.callback_socket.start()
            config = replace(config, sandbox=replace(config.sandbox, socket=socket, tools=config.tool_dir,
                                                     programs=(PYTHON,)))
        self.github = self._github(self.http)
        forge = self._forge(self.github)
        executor = Executor(settings.actions_config(), forge, HttpDeployHook(self.http), credentials=self.github)
        runner = await make_runner(settings)
        if runner.capabilities.remote:
            # an agent in the engine reaches Shepherd at its public address, or not at all (no loopback, no socket,
            # no launcher on this host's disk), and is isolated by the engine rather than by bubblewrap here
            if settings.public_url is None:
                log.warning("SHEPHERD_RUNNER=%s without SHEPHERD_PUBLIC_URL: agents cannot reach Shepherd for "
                            "`shepherd ask`", runner.kind)
            config = replace(config, callback_url=settings.public_url, tool_dir=None, sandbox=None)
            self.shepherd.tasks.workspace_discard = runner.discard
        self.shepherd.tasks.runner_capabilities = runner.capabilities
        self.supervisor = TaskSupervisor(self.shepherd, config, runner=runner, executor=executor,
                                         credentials=self.github)
        slack = settings.slack()
        if self.platforms and slack is not None and not any(c.name == "slack" for c in self.channels):
            from adapters.slack.channel import SlackChannel, make_client

            self.channels.append(SlackChannel(make_client(slack.bot_token, slack.api_url, self.http)))
        if self.platforms and self.github is not None and not any(c.name == "github" for c in self.channels):
            from adapters.github.channel import GitHubChannel

            self.channels.append(GitHubChannel(self.github, handle=self.settings.github_handle))
        if self.platforms and settings.telegram_bot_token and not any(c.name == "telegram" for c in self.channels):
            self.channels.append(await self._telegram(settings.telegram_bot_token.get_secret_value()))
        self.dispatcher = Dispatcher(self.shepherd, self.channels, wakeup=self.shepherd.outbox_due)
        self.sweeper = Sweeper(self.shepherd, news_channels=[c.name for c in self.channels if c.progress],
                               outbox_due=self.shepherd.outbox_due)
        services: list[Service] = [self.supervisor, self.dispatcher, self.sweeper]
        if self.platforms or self.shepherd.db.is_sqlite:
            # A console campaigns only on SQLite, where it may be the one process there is; beside a deployment's
            # workers it would take the lead in a restart's gap, and run the jobs (never Telegram's poller) in a
            # terminal that closes
            services.append(self._election())
        for service in services:
            await service.start()
            self._started.append(service)
        log.info("background services started: %s", ", ".join(s.name for s in self._started))

    def _election(self) -> Elector:
        """This process campaigns to lead; while it leads it runs the scheduler and, when Telegram is polled, the
        poller (two processes polling one bot take each other's updates: Telegram answers 409 Conflict)."""
        settings, shepherd = self.settings, self.shepherd
        leader_url = settings.leader_database_url.get_secret_value() if settings.leader_database_url else None
        self.elector = elector(shepherd.db, url=settings.db_url, data_dir=settings.data_dir,
                               timeout=settings.leader_timeout, leader_url=leader_url or None)
        shepherd.scheduling.leadership = self.elector
        shepherd.scheduling.jobs = jobs(settings, shepherd)
        self.scheduler = Scheduler(shepherd.scheduling, holder=self.elector.me,
                                   grace_s=grace_for(settings.leader_timeout), outbox_due=shepherd.outbox_due)
        self.elector.on_elected = self._lead
        self.elector.on_deposed = self._follow
        return self.elector

    async def _lead(self) -> None:
        assert self.scheduler is not None
        await self.scheduler.start()
        telegram = self.settings.telegram()
        if self.platforms and telegram is not None and not telegram.webhook:  # polling: here, never in `web`
            self.poller = self._telegram_polling(telegram)
            try:
                await self.poller.start()
            except Exception:
                log.exception("Telegram polling did not start")
                self.poller = None

    async def _follow(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        poller, self.poller = self.poller, None
        if poller is not None:
            try:
                await poller.stop()
            except Exception:
                log.exception("stopping Telegram polling failed")

    def _telegram_polling(self, config: TelegramConfig) -> Service:
        """Telegram's getUpdates loop (no TELEGRAM_WEBHOOK_SECRET): the leader polls, no other process."""
        from adapters.telegram.inbound import TelegramInbound

        return TelegramInbound(self.shepherd, config, poll=True)

    async def _telegram(self, token: str) -> Channel:
        """Telegram as a channel: a Bot of its own (its connections opened here, closed by `stop`)."""
        from adapters.telegram.channel import TelegramChannel, make_bot, start_bot

        self.telegram_bot = make_bot(token, self.settings.telegram_api_url)
        await start_bot(self.telegram_bot)
        return TelegramChannel(self.telegram_bot)

    def _github(self, http: aiohttp.ClientSession) -> GitHubAuth | None:
        """Shepherd's credentials on GitHub (a GitHub App, or a token), when it has any."""
        token = self.settings.github_token.get_secret_value() if self.settings.github_token else None
        if not token and self.settings.github_app_id is None:
            return None  # nothing to act with: the GitHub modules (and the JWT and crypto libraries, ~10 MB) stay out
        from adapters.github.auth import GitHubAuth

        auth = GitHubAuth(http, base_url=self.settings.github_api_url, token=token, app=self.settings.github_app())
        return auth if auth.configured else None

    def _forge(self, github: GitHubAuth | None) -> Forge | None:
        """GitHub as the code host, when Shepherd has credentials for it."""
        if github is None:
            return None
        from adapters.github.forge import GitHubForge

        return GitHubForge(github)

    async def _callback_listener(self) -> str:
        self.callback_site = callback_app(self.shepherd)
        await self.callback_site.setup()
        site = web.TCPSite(self.callback_site, "127.0.0.1", 0)
        await site.start()
        port = self.callback_site.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        while self._started:
            service = self._started.pop()
            try:
                await service.stop()
            except Exception:
                log.exception("stopping %s failed", service.name)
        if self.callback_site is not None:
            with contextlib.suppress(Exception):
                await self.callback_site.cleanup()
        if self.callback_socket is not None:
            await self.callback_socket.stop()
        if self.telegram_bot is not None:
            with contextlib.suppress(Exception):
                await self.telegram_bot.shutdown()
        if self.http is not None:
            await self.http.close()
