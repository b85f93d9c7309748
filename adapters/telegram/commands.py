"""Telegram's command menu (setMyCommands), derived from the command registry: one entry per top-level command,
its description the command's summary (and, for a group such as `agent`, its subcommands). Shepherd sets it at
start-up; manifests/telegram-commands.json is this, written out (a test keeps the two equal), for BotFather's
/setcommands when an operator prefers to set it by hand.

    python -m adapters.telegram.commands > manifests/telegram-commands.json
"""

from __future__ import annotations

import json
import re
import sys

from core.commands.grammar import CommandRegistry
from core.commands.registry import build_registry

NAME = re.compile(r"[a-z0-9_]{1,32}")  # Telegram's rule for a command
DESCRIPTION_MAX = 256


def bot_commands(registry: CommandRegistry | None = None) -> list[dict[str, str]]:
    """[{"command": "run", "description": "…"}, …] in the registry's order, each within Telegram's limits."""
    registry = registry or build_registry()
    summaries: dict[str, str] = {}
    subcommands: dict[str, list[str]] = {}
    for spec in registry:
        head, _, sub = spec.name.partition(" ")
        subcommands.setdefault(head, [])
        if sub:
            subcommands[head].append(sub)
        else:
            summaries[head] = spec.summary
    commands = []
    for head, subs in subcommands.items():
        if not NAME.fullmatch(head):  # cannot be a Telegram command: typed as plain text (`help` lists it)
            continue
        description = summaries.get(head, "")
        if subs:
            description = (f"{description}; " if description else "") + f"{head} " + " | ".join(subs)
        description = description or head
        if len(description) > DESCRIPTION_MAX:
            description = description[:DESCRIPTION_MAX - 1] + "…"
        commands.append({"command": head, "description": description})
    return commands


def main() -> int:
    sys.stdout.write(json.dumps(bot_commands(), indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
