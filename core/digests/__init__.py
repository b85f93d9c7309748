"""Digests: a place's status summary, posted on a cron schedule of its own (`digest <cron>|off`)."""
