"""Logs without secrets: every line the process writes has the configured secrets' values (bot tokens, signing
secrets, keys, the database URL's password) replaced by `********`, tracebacks included.

Why a formatter and not trust in each library: python-telegram-bot puts the bot token in every Bot API URL
(`…/bot<token>/getUpdates`), and httpx logs each request's URL at INFO; an exception's text may quote a URL too.
Redacting the formatted line catches every such path at once."""

from __future__ import annotations

import logging

MASK = "********"
MIN_SECRET = 8  # a shorter "secret" would mask ordinary words in every line


class RedactingFormatter(logging.Formatter):
    def __init__(self, fmt: str, secrets: list[str]) -> None:
        super().__init__(fmt)
        # longest first: a secret that contains another is masked whole
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in self.secrets:
            line = line.replace(secret, MASK)
        return line
