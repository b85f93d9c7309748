"""Secrets kept out of the log: every record's text, and its traceback, with each configured secret replaced by
its setting's name. Libraries log what they send: httpx logs each request's URL at INFO, and a Telegram Bot API
URL carries the bot's token (`.../bot<TOKEN>/sendMessage`), so without this TELEGRAM_BOT_TOKEN reached the log."""

from __future__ import annotations

import logging

from pydantic import SecretStr

from bot.settings import Settings

MIN_SECRET = 8  # shorter values (a test's "x") would blank ordinary words, and guard nothing worth guarding


class Redact(logging.Filter):
    def __init__(self, secrets: dict[str, str]) -> None:
        super().__init__()
        self.secrets = sorted(((v, k) for k, v in secrets.items() if len(v) >= MIN_SECRET),
                              key=lambda s: -len(s[0]))  # the longest first: a secret holding another one

    def _clean(self, text: str) -> str:
        for value, name in self.secrets:
            text = text.replace(value, f"<{name}>")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self._clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        return True


def secrets_of(settings: Settings) -> dict[str, str]:
    """The setting's environment name -> its secret value, for each secret that is set."""
    found: dict[str, str] = {}
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        if isinstance(value, SecretStr) and value.get_secret_value():
            alias = field.validation_alias
            choices = getattr(alias, "choices", None)
            label = str(choices[0]) if choices else (alias if isinstance(alias, str) else name.upper())
            found[label] = value.get_secret_value()
    return found


def redact_logs(settings: Settings) -> None:
    """Every handler of the root logger drops the settings' secrets (child loggers' records reach them there)."""
    redact = Redact(secrets_of(settings))
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)
