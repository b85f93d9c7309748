"""The aiohttp application: REST dialects and operations endpoints over one core, wired through AppKeys."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

import adapters.rest.agentuity
import adapters.rest.agentuity_history
import adapters.rest.agentuity_loop
import adapters.rest.cloudcoding
import adapters.rest.coder
import adapters.rest.codespar
import adapters.rest.confirmations
import adapters.rest.eliza
import adapters.rest.eliza_containers
import adapters.rest.eliza_promotions
import adapters.rest.ops
import adapters.rest.projects
from adapters.rest.framework import (
    HTTP_METRICS,
    MAX_BODY,
    METRICS,
    SHEPHERD,
    HttpMetrics,
    Route,
    envelope_middleware,
    mount,
)
from adapters.rest.openapi import build_openapi
from adapters.rest.ops import OPENAPI
from adapters.web.app import mount_ui
from bot.presets import agent_catalog
from bot.version import VERSION
from core.shepherd import Shepherd
from core.store.db import Database

if TYPE_CHECKING:
    from adapters.github.inbound import GitHubConfig, GitHubInbound
    from adapters.slack.inbound import SlackConfig, SlackInbound
    from adapters.telegram.config import TelegramConfig
    from adapters.telegram.inbound import TelegramInbound

SLACK: web.AppKey[SlackInbound] = web.AppKey("slack")
GITHUB: web.AppKey[GitHubInbound] = web.AppKey("github")
TELEGRAM: web.AppKey[TelegramInbound] = web.AppKey("telegram")


def all_routes() -> list[Route]:
    return [
        *adapters.rest.ops.ROUTES, *adapters.rest.codespar.ROUTES, *adapters.rest.projects.ROUTES,
        *adapters.rest.coder.ROUTES, *adapters.rest.eliza.ROUTES, *adapters.rest.eliza_containers.ROUTES,
        *adapters.rest.confirmations.ROUTES,
        *adapters.rest.agentuity.ROUTES, *adapters.rest.agentuity_loop.routes, *adapters.rest.agentuity_history.ROUTES,
        *adapters.rest.cloudcoding.ROUTES, *adapters.rest.eliza_promotions.ROUTES,
    ]


def create_app(
    db_url: str, *, max_body_bytes: int = 256 * 1024, shepherd: Shepherd | None = None,
    slack: SlackConfig | None = None, github: GitHubConfig | None = None, telegram: TelegramConfig | None = None,
    public_url: str | None = None,
) -> web.Application:
    """The web app. Given a `shepherd`, it shares that core (and its connection pool) with the caller,
    who closes it; otherwise it opens its own database on startup and closes it on cleanup. Given `slack`,
    it receives Slack at /slack/events (or over Socket Mode when that has an app token)."""
    # the app reads up to the largest body a route takes (a bundle of files); each route holds to its own limit
    biggest = max([max_body_bytes, *(r.max_body or 0 for r in all_routes())])
    app = web.Application(client_max_size=biggest, middlewares=[envelope_middleware])
    registry = CollectorRegistry()
    app[METRICS] = registry
    app[HTTP_METRICS] = HttpMetrics(registry)
    app[MAX_BODY] = max_body_bytes
    if public_url:  # what the Agentuity hub's discovery (GET /coder) names as this server's base URL
        app[adapters.rest.agentuity.PUBLIC_URL] = public_url
    routes = all_routes()
    app[OPENAPI] = json.dumps(build_openapi(routes, title="Shepherd", version=VERSION)).encode()

    async def database(app: web.Application) -> AsyncIterator[None]:
        if shepherd is not None:
            app[SHEPHERD] = shepherd
            yield
            return
        db = Database(db_url)
        app[SHEPHERD] = Shepherd(db, catalog=agent_catalog())
        yield
        await db.dispose()

    app.cleanup_ctx.append(database)
    app.cleanup_ctx.append(adapters.rest.cloudcoding.invoke_runs)
    # Each channel's door (its inbound object) lives as long as the app; its route answers 404 saying what to set
    # while the channel is off. Telegram's door is the webhook's: polling runs with the background services.
    if slack is not None:
        app.cleanup_ctx.append(_door(SLACK, lambda s, http: _slack_door(s, slack, http)))
    if github is not None:
        app.cleanup_ctx.append(_door(GITHUB, lambda s, http: _github_door(s, github, http)))
    if telegram is not None and telegram.webhook:
        app.cleanup_ctx.append(_door(TELEGRAM, lambda s, http: _telegram_door(s, telegram)))
    app.router.add_post("/slack/events", partial(_through, SLACK, _off(
        "slack_not_configured", "Slack is off: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET (README: Connect Slack)")),
        name="slackEvents")
    app.router.add_post("/github/webhook", partial(_through, GITHUB, _off(
        "github_not_configured", "GitHub is off: set GITHUB_WEBHOOK_SECRET (README: Connect GitHub)")),
        name="githubWebhook")
    telegram_off = _off(
        "telegram_webhook_off", "Telegram is polled (getUpdates): set TELEGRAM_WEBHOOK_SECRET to receive updates "
        "here (README: Connect Telegram)") if telegram is not None else _off(
        "telegram_not_configured", "Telegram is off: set TELEGRAM_BOT_TOKEN (README: Connect Telegram)")
    app.router.add_post("/telegram/webhook", partial(_through, TELEGRAM, telegram_off), name="telegramWebhook")
    mount(app, routes)
    mount_ui(app, secure_cookies=bool(public_url and public_url.startswith("https://")))
    return app


class Door(Protocol):
    """A channel's inbound side as the web app holds it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def handle_http(self, request: web.Request) -> web.StreamResponse: ...


def _door(key: web.AppKey[Any], make: Callable[[Shepherd, aiohttp.ClientSession], Door],
          ) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as http:
            door = make(app[SHEPHERD], http)
            app[key] = door
            await door.start()
            yield
            await door.stop()

    return context


def _off(error: str, message: str) -> Callable[[], web.Response]:
    return lambda: web.json_response({"error": error, "message": message}, status=404)


async def _through(key: web.AppKey[Any], off: Callable[[], web.Response], request: web.Request) -> web.StreamResponse:
    door: Door | None = request.app.get(key)
    return await door.handle_http(request) if door is not None else off()


def _slack_door(shepherd: Shepherd, config: SlackConfig, http: aiohttp.ClientSession) -> Door:
    from adapters.slack.inbound import SlackInbound

    return SlackInbound(shepherd, config, http=http)


def _github_door(shepherd: Shepherd, config: GitHubConfig, http: aiohttp.ClientSession) -> Door:
    from adapters.github.auth import GitHubAuth
    from adapters.github.inbound import GitHubInbound

    return GitHubInbound(shepherd, config, GitHubAuth(http, base_url=config.api_url, token=config.token,
                                                      app=config.app))


def _telegram_door(shepherd: Shepherd, config: TelegramConfig) -> Door:
    from adapters.telegram.inbound import TelegramInbound

    return TelegramInbound(shepherd, config)


def create_callback_app(shepherd: Shepherd) -> web.Application:
    """Only the task callback routes (`shepherd ask`), for a process that serves no web app: the console,
    a worker without SHEPHERD_PUBLIC_URL. Listens on loopback only."""
    app = web.Application(client_max_size=64 * 1024, middlewares=[envelope_middleware])
    app[SHEPHERD] = shepherd
    mount(app, [r for r in adapters.rest.confirmations.ROUTES if r.path.startswith("/api/tasks/")])
    return app
