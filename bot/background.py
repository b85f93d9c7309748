"""What runs beside (or instead of) the web server: the task supervisor with its action executor, the outbox
dispatcher and the sweeper (expiry, task news). `serve`, `worker` and the console assemble it here, each with
its own channels; the dispatcher and the sweeper get core's outbox wake-up through their constructors.

Agents reach Shepherd for `shepherd ask` at SHEPHERD_URL: the web server when this process serves one (or
SHEPHERD_PUBLIC_URL), otherwise a loopback listener that serves only the task callback routes; sandboxed
agents through a Unix socket that serves only those routes (bot.callbacks).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace

import aiohttp
from aiohttp import web

from bot.callbacks import PYTHON, CallbackSocket, callback_app, write_launcher
from bot.outbox import Dispatcher
from bot.settings import Settings
from bot.sweeper import Sweeper
from bot.worker import Worker
from core.actions import ActionsConfig, Executor
from core.channels import Channel
from core.service import Shepherd
from core.supervisor import TaskSupervisor

log = logging.getLogger(__name__)


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
        self.worker: Worker | None = None
        self.supervisor: TaskSupervisor | None = None
        self.dispatcher: Dispatcher | None = None
        self.sweeper: Sweeper | None = None

    async def start(self) -> None:
        settings = self.settings
        self.http = aiohttp.ClientSession()
        token = settings.github_token.get_secret_value() if settings.github_token else None
        forge = None
        if token:
            from adapters.github.forge import GitHubForge

            forge = GitHubForge(self.http, token=token, base_url=settings.github_api_url)
        if self.callback_url is None:
            self.callback_url = await self._callback_listener()
        config = replace(settings.runner_config(), callback_url=self.callback_url,
                         tool_dir=write_launcher(settings.data_dir / "bin"))
        if config.sandbox is not None:  # no network inside: agents ask through a socket bound into the sandbox
            self.callback_socket = CallbackSocket(self.shepherd)
            socket = await self.callback_socket.start()
            config = replace(config, sandbox=replace(config.sandbox, socket=socket, tools=config.tool_dir,
                                                     programs=(PYTHON,)))
        executor = Executor(ActionsConfig(git_base_url=settings.git_base_url, git_token=token), forge)
        self.supervisor = TaskSupervisor(self.shepherd, self.shepherd.catalog, config, executor=executor)
        slack = settings.slack()
        if self.platforms and slack is not None and not any(c.name == "slack" for c in self.channels):
            from adapters.slack.channel import SlackChannel, make_client

            self.channels.append(SlackChannel(make_client(slack.bot_token, slack.api_url, self.http)))
        self.dispatcher = Dispatcher(self.shepherd, self.channels, wakeup=self.shepherd.outbox_due)
        self.sweeper = Sweeper(self.shepherd, news_channels=[c.name for c in self.channels if c.progress],
                               outbox_due=self.shepherd.outbox_due)
        self.worker = Worker(self.shepherd, [self.supervisor, self.dispatcher, self.sweeper])
        await self.worker.start()

    async def _callback_listener(self) -> str:
        self.callback_site = callback_app(self.shepherd)
        await self.callback_site.setup()
        site = web.TCPSite(self.callback_site, "127.0.0.1", 0)
        await site.start()
        port = self.callback_site.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
        if self.callback_site is not None:
            with contextlib.suppress(Exception):
                await self.callback_site.cleanup()
        if self.callback_socket is not None:
            await self.callback_socket.stop()
        if self.http is not None:
            await self.http.close()
