"""Channels: the conversation API every adapter uses, the outbox and its Channel port, the delivery ledger and
task news."""
