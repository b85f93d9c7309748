"""Telegram: the bot channel (python-telegram-bot)."""
