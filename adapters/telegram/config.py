"""The Telegram channel's settings (bot.settings.Settings.telegram builds them from the environment)."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.people.access import Role


@dataclass(frozen=True)
class TelegramConfig:
    bot_token: str = field(repr=False)
    org_id: str
    webhook_secret: str | None = field(default=None, repr=False)  # webhook mode; None: Shepherd polls getUpdates
    api_url: str = "https://api.telegram.org/bot"  # PTB's base_url: the token and the method follow it
    public_url: str | None = None  # with a webhook secret, Shepherd registers <public_url>/telegram/webhook
    default_role: Role = Role.VIEWER
    admins: frozenset[str] = field(default_factory=frozenset)  # Telegram user ids (as text) that are admins
    poll_timeout_s: int = 25  # getUpdates' long-poll

    @property
    def webhook(self) -> bool:
        return bool(self.webhook_secret)

    @property
    def webhook_url(self) -> str | None:
        return f"{self.public_url.rstrip('/')}/telegram/webhook" if self.public_url and self.webhook else None
