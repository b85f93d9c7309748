"""The console channel: the command grammar in a terminal, acting as one person of the org, with admin rights.
Commands go through core's conversation API like every channel's; the console prints their replies itself."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import sys
from typing import TextIO

from adapters.console.terminal import emit
from core.channels.conversations import Conversations, Where, followed
from core.commands.grammar import CommandRegistry
from core.commands.registry import build_registry
from core.commands.tasks import state_line
from core.errors import NotFound
from core.people.access import Principal, Role
from core.shepherd import Shepherd
from core.tasks.state import FINISHED, LogType, Outcome, TaskStatus

PROMPT = "shepherd> "
BANNER = (
    "Shepherd console: type `help` for commands, `exit` to leave.\n"
    "Acting as {name} in org {org}, with admin rights (SHEPHERD_CONSOLE_USER or --user names someone else).\n"
    'Try a task with the demo agent: run "add a greeting to the README" --agent demo'
)
FOLLOW_POLL_S = 0.2


def console_user(configured: str | None) -> str:
    """Whom the console acts as: the person named (--user, SHEPHERD_CONSOLE_USER), else the OS user."""
    return configured or getpass.getuser()


async def console_principal(shepherd: Shepherd, org_id: str, name: str | None = None) -> tuple[Principal, bool]:
    """The console's person: a real user of the org (an admin user, created if new), so that what they do here
    and through their tokens or chat identities is one owner and one voter. The console acts with admin
    rights whatever that user's role: whoever runs it holds the database. Returns it and whether it is new."""
    user, created = await shepherd.users.ensure(org_id, console_user(name), role=Role.ADMIN)
    return Principal.for_role(org_id, user.name, Role.ADMIN, "console", user_id=user.id), created


class Console:
    def __init__(
        self, shepherd: Shepherd, principal: Principal, *, registry: CommandRegistry | None = None,
        out: TextIO = sys.stdout,
    ) -> None:
        self.shepherd = shepherd
        self.principal = principal
        self.conversations = Conversations(shepherd, registry or build_registry())
        self.out = out
        self._following: dict[str, asyncio.Task[bool]] = {}

    async def run_one(self, line: str, *, wait: bool = False) -> bool:
        """Run one command and print its reply; a task it starts is followed live. With `wait`, return
        only when that task has finished, and report success only if it succeeded."""
        reply = await self.conversations.command(self.principal, line, where=Where("console", self.principal.name))
        emit(reply.text, self.out if reply.ok else sys.stderr)
        task_id = followed(reply)
        if task_id is None:
            return reply.ok
        if task_id not in self._following:
            self._following[task_id] = asyncio.get_running_loop().create_task(self._follow(task_id))
        if wait:
            return await self._following[task_id]
        return True

    async def _follow(self, task_id: str) -> bool:
        """Print a task's new log lines and state changes until it has finished (polling the store, so it
        works whichever process runs the task); returns whether it succeeded."""
        after, said = 0, ""
        try:
            while True:
                try:
                    task, rows = await self.shepherd.tasks.logs(self.principal, task_id, after_id=after)
                except NotFound:
                    emit(f"[{task_id}] deleted", self.out)
                    return False
                for row in rows:
                    mark = ">" if row.type == LogType.INPUT else "|"
                    emit(f"[{task.name}] {mark} {row.content}", self.out)
                if rows:
                    after = rows[-1].id or after
                    continue  # more may be waiting: read again before sleeping
                status = TaskStatus(task.status)
                shown = (TaskStatus.QUEUED, TaskStatus.PAUSED, TaskStatus.AWAITING, *FINISHED)
                news = state_line(task) if status in shown else ""
                if news and news != said:
                    emit(f"[{task.name}] {news}", self.out)
                    said = news
                if status in FINISHED and not task.pending_inputs:
                    return task.outcome == Outcome.SUCCEEDED
                await asyncio.sleep(FOLLOW_POLL_S)
        finally:
            self._following.pop(task_id, None)

    async def repl(self) -> int:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history where the platform has it)
        interactive = sys.stdin.isatty()
        if interactive:
            print(BANNER.format(name=self.principal.name, org=self.principal.org_id), file=self.out)
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
        if self._following and not interactive:
            # input ended (a script): let the tasks it started finish, as `-c` does
            await asyncio.gather(*self._following.values(), return_exceptions=True)
        return 0 if interactive or failures == 0 else 1
