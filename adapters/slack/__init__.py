"""Slack: slack-bolt in, the outbox out (see inbound.py and channel.py)."""
