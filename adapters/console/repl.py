"""The console channel: the command grammar in a terminal, acting as a local admin."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import sys
from typing import TextIO

from core.access import Principal, Role
from core.commands import build_registry
from core.grammar import CommandRegistry
from core.service import Shepherd

PROMPT = "shepherd> "
BANNER = "Shepherd console: type `help` for commands, `exit` to leave."


def console_principal(org_id: str) -> Principal:
    return Principal.for_role(org_id, getpass.getuser(), Role.ADMIN, "console")


class Console:
    def __init__(
        self, shepherd: Shepherd, principal: Principal, *, registry: CommandRegistry | None = None,
        out: TextIO = sys.stdout,
    ) -> None:
        self.shepherd = shepherd
        self.principal = principal
        self.registry = registry or build_registry()
        self.out = out

    async def run_one(self, line: str) -> bool:
        """Run one command, print its reply; True when it succeeded."""
        reply = await self.registry.run(self.shepherd, self.principal, line)
        print(reply.text, file=self.out if reply.ok else sys.stderr, flush=True)
        return reply.ok

    async def repl(self) -> int:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history where the platform has it)
        interactive = sys.stdin.isatty()
        if interactive:
            print(BANNER, file=self.out)
        failures = 0
        while True:
            try:
                line = await asyncio.to_thread(input, PROMPT if interactive else "")
            except EOFError:
                break
            except KeyboardInterrupt:
                print(file=self.out)
                continue
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line in ("exit", "quit"):
                break
            if not await self.run_one(line):
                failures += 1
        return 0 if interactive or failures == 0 else 1
