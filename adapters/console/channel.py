"""The console as a Channel: prompts and decisions print where the person at the console can act on them."""

from __future__ import annotations

import itertools
import sys
from typing import TextIO

from adapters.console.terminal import emit
from core.channels.outbox import Message


def format_message(message: Message) -> str:
    if message.kind != "confirmation":
        if not message.detail:
            return message.text
        return message.text + "".join(f"\n  │ {line}" for line in message.detail.splitlines())  # e.g. its last line
    if message.state == "pending":
        shown = ("task", "requested by", "votes", "expires")  # the target is in the headline already
        facts = " · ".join(f"{k} {message.fields[k]}" for k in shown if k in message.fields)
        return (f"? {message.text}\n  {facts}\n"
                f"  `approve {message.code} [comment]` or `reject {message.code} [reason]`")
    mark = {"approved": "+", "rejected": "x", "expired": "x", "void": "-"}.get(message.state, "*")
    return f"{mark} {message.text}"


class ConsoleChannel:
    """Delivers to one console user (the address): another person's console does not print it."""

    name = "console"
    progress = False  # the console follows the tasks it starts by itself
    pace_s = 0.0

    def __init__(self, address: str, out: TextIO | None = None) -> None:
        self.address = address
        self.out = out or sys.stdout
        self._refs = itertools.count(1)

    def pace_key(self, address: str) -> str:
        return address

    def accepts(self, address: str) -> bool:
        return address == self.address

    async def post(self, address: str, message: Message) -> str:
        emit(format_message(message), self.out)
        return f"console-{next(self._refs)}"

    async def update(self, address: str, ref: str, message: Message) -> None:
        emit(format_message(message), self.out)

    async def open(self, address: str, message: Message) -> tuple[str, str]:
        return await self.post(address, message), address  # a console is one conversation
