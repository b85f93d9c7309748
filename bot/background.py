"""What runs beside (or instead of) the web server: the task supervisor with its action executor, and the
outbox dispatcher. `serve`, `worker` and the console assemble it here, each with its own channels.

Agents reach Shepherd for `shepherd ask` at SHEPHERD_URL: the web server when this process serves one (or
SHEPHERD_PUBLIC_URL), otherwise a loopback listener that serves only the task callback routes.
"""

from __future__ import annotations

import contextlib
import logging
import stat
import sys
from dataclasses import replace
from pathlib import Path

import aiohttp
from aiohttp import web

from bot.outbox import Dispatcher
from bot.settings import Settings
from bot.worker import Worker
from core.actions import ActionsConfig, Executor
from core.channels import Channel
from core.service import Shepherd
from core.supervisor import TaskSupervisor

log = logging.getLogger(__name__)


def write_launcher(folder: Path) -> Path:
    """A folder holding a `shepherd` that runs only `shepherd ask`, put first on every agent's PATH: an agent
    can ask, whatever PATH the server was started with, and can run nothing else of Shepherd's."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    launcher = folder / "shepherd"
    text = ("#!/bin/sh\n# written by Shepherd: inside a task, agents call `shepherd ask`\n"
            'if [ "$1" != ask ]; then echo "shepherd: inside a task only \\`shepherd ask\\` is available" >&2; '
            "exit 3; fi\nshift\n"
            f'exec "{sys.executable}" -m bot.ask "$@"\n')
    if not launcher.exists() or launcher.read_text() != text:
        tmp = folder / ".shepherd.tmp"
        tmp.write_text(text)
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        tmp.replace(launcher)
    return folder


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
        self.worker: Worker | None = None
        self.supervisor: TaskSupervisor | None = None
        self.dispatcher: Dispatcher | None = None

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
        executor = Executor(ActionsConfig(git_base_url=settings.git_base_url, git_token=token), forge)
        self.supervisor = TaskSupervisor(self.shepherd, self.shepherd.catalog, config, executor=executor)
        slack = settings.slack()
        if self.platforms and slack is not None and not any(c.name == "slack" for c in self.channels):
            from adapters.slack.channel import SlackChannel, make_client

            self.channels.append(SlackChannel(make_client(slack.bot_token, slack.api_url, self.http)))
        self.dispatcher = Dispatcher(self.shepherd, self.channels)
        self.worker = Worker(self.shepherd, [self.supervisor, self.dispatcher])
        await self.worker.start()

    async def _callback_listener(self) -> str:
        from bot.app import create_callback_app

        self.callback_site = web.AppRunner(create_callback_app(self.shepherd), access_log=None)
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
        if self.http is not None:
            await self.http.close()
