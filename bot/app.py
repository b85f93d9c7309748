"""The aiohttp application: REST dialects and operations endpoints over one core, wired through AppKeys."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

import adapters.rest.coder
import adapters.rest.codespar
import adapters.rest.confirmations
import adapters.rest.eliza
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
from bot.presets import agent_catalog
from bot.version import VERSION
from core.shepherd import Shepherd
from core.store.db import Database

if TYPE_CHECKING:
    from adapters.github.inbound import GitHubConfig, GitHubInbound
    from adapters.slack.inbound import SlackConfig, SlackInbound
    from adapters.telegram.config import TelegramConfig
    from adapters.telegram.inbound import TelegramInbound

SLACK = web.AppKey("slack", "SlackInbound")
GITHUB = web.AppKey("github", "GitHubInbound")
TELEGRAM = web.AppKey("telegram", "TelegramInbound")


def all_routes() -> list[Route]:
    return [
        *adapters.rest.ops.ROUTES, *adapters.rest.codespar.ROUTES, *adapters.rest.projects.ROUTES,
        *adapters.rest.coder.ROUTES, *adapters.rest.eliza.ROUTES, *adapters.rest.confirmations.ROUTES,
    ]


def create_app(
    db_url: str, *, max_body_bytes: int = 256 * 1024, shepherd: Shepherd | None = None,
    slack: SlackConfig | None = None, github: GitHubConfig | None = None, telegram: TelegramConfig | None = None,
) -> web.Application:
    """The web app. Given a `shepherd`, it shares that core (and its connection pool) with the caller,
    who closes it; otherwise it opens its own database on startup and closes it on cleanup. Given `slack`,
    it receives Slack at /slack/events (or over Socket Mode when that has an app token)."""
    app = web.Application(client_max_size=max_body_bytes, middlewares=[envelope_middleware])
    registry = CollectorRegistry()
    app[METRICS] = registry
    app[HTTP_METRICS] = HttpMetrics(registry)
    app[MAX_BODY] = max_body_bytes
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
    if slack is not None:
        app.cleanup_ctx.append(_slack_context(slack))
    if github is not None:
        app.cleanup_ctx.append(_github_context(github))
    if telegram is not None and telegram.webhook:  # polling runs with the background services (bot.background)
        app.cleanup_ctx.append(_telegram_context(telegram))
    app.router.add_post("/slack/events", _slack_events, name="slackEvents")
    app.router.add_post("/github/webhook", _github_webhook, name="githubWebhook")
    app.router.add_post("/telegram/webhook", partial(_telegram_webhook, on=telegram is not None),
                        name="telegramWebhook")
    mount(app, routes)
    return app


def _slack_context(config: SlackConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        from adapters.slack.inbound import SlackInbound

        async with aiohttp.ClientSession() as http:
            inbound = SlackInbound(app[SHEPHERD], config, http=http)
            app[SLACK] = inbound
            await inbound.start()
            yield
            await inbound.stop()

    return context


async def _slack_events(request: web.Request) -> web.StreamResponse:
    inbound: SlackInbound | None = request.app.get(SLACK)
    if inbound is None:
        return web.json_response({"error": "slack_not_configured", "message":
                                  "Slack is off: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET (README: Connect Slack)"},
                                 status=404)
    return await inbound.handle_http(request)


def _github_context(config: GitHubConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        from adapters.github.auth import GitHubAuth
        from adapters.github.inbound import GitHubInbound

        async with aiohttp.ClientSession() as http:
            inbound = GitHubInbound(app[SHEPHERD], config, GitHubAuth(http, base_url=config.api_url,
                                                                      token=config.token, app=config.app))
            app[GITHUB] = inbound
            await inbound.start()
            yield
            await inbound.stop()

    return context


async def _github_webhook(request: web.Request) -> web.StreamResponse:
    inbound: GitHubInbound | None = request.app.get(GITHUB)
    if inbound is None:
        return web.json_response({"error": "github_not_configured", "message":
                                  "GitHub is off: set GITHUB_WEBHOOK_SECRET (README: Connect GitHub)"}, status=404)
    return await inbound.handle_http(request)


def _telegram_context(config: TelegramConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        from adapters.telegram.inbound import TelegramInbound

        inbound = TelegramInbound(app[SHEPHERD], config)
        app[TELEGRAM] = inbound
        await inbound.start()
        yield
        await inbound.stop()

    return context


async def _telegram_webhook(request: web.Request, *, on: bool) -> web.StreamResponse:
    inbound: TelegramInbound | None = request.app.get(TELEGRAM)
    if inbound is not None:
        return await inbound.handle_http(request)
    if on:  # Telegram is on without a webhook secret: the background services poll getUpdates
        return web.json_response({"error": "telegram_webhook_off", "message": "Telegram is polled (getUpdates): set "
                                  "TELEGRAM_WEBHOOK_SECRET to receive updates here (README: Connect Telegram)"},
                                 status=404)
    return web.json_response({"error": "telegram_not_configured", "message":
                              "Telegram is off: set TELEGRAM_BOT_TOKEN (README: Connect Telegram)"}, status=404)


def create_callback_app(shepherd: Shepherd) -> web.Application:
    """Only the task callback routes (`shepherd ask`), for a process that serves no web app: the console,
    a worker without SHEPHERD_PUBLIC_URL. Listens on loopback only."""
    app = web.Application(client_max_size=64 * 1024, middlewares=[envelope_middleware])
    app[SHEPHERD] = shepherd
    mount(app, [r for r in adapters.rest.confirmations.ROUTES if r.path.startswith("/api/tasks/")])
    return app
