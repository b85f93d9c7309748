"""The local runner: an agent CLI as a child process in a process group of its own.

Stop ends the whole group (TERM, a grace period, KILL) and returns only when no member is left, so an
agent's helpers and test servers go with it. Pause is SIGSTOP of the group, resume SIGCONT. The idle
timeout (no output) and the hard timeout count running time only, not time spent paused.

With `sandbox`, the run goes through bubblewrap (core.runners.sandbox): an unprivileged uid in a user
namespace with no capabilities, the system read-only, the workspace writable, no network, its own /tmp and
PID namespace, and nothing of Shepherd's own (data directory, working directory, home) in sight. A host where
that sandbox does not hold gets no run at all: the task fails and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

from core.errors import ShepherdError
from core.runners import Capabilities, ExitReason, RunExit, RunSpec, Seed
from core.runners.clock import WATCH_INTERVAL_S, TurnClock
from core.runners.probe import SandboxReport, probe
from core.runners.sandbox import SandboxView, bwrap_argv, etc_secrets, secrets_stale
from core.textcheck import without_controls

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
MAX_LINE_CHARS = 4000  # a longer line is cut: logs are for people, and one line must not fill the store
STOP_GRACE_S = 3.0
GONE_WAIT_S = 5.0
RECHECK_WEAK_S = 30.0  # a sandbox found weak is probed again after this long (bubblewrap installed meanwhile)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


class RunnerError(ShepherdError):
    code = "RUNNER_ERROR"
    status = 500


def clean_line(raw: bytes) -> str:
    """Bytes of one output line as text a person can read: no colours, no carriage-return redraws, and no
    other control character but the tab (a NUL cannot even be stored: PostgreSQL refuses the whole batch)."""
    text = raw.decode("utf-8", errors="replace")
    if "\r" in text:
        text = text.rstrip("\r").rsplit("\r", 1)[-1]  # a progress bar redrawn in place: keep its last state
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    text = without_controls(text)  # a NUL would make PostgreSQL refuse the whole batch of output
    if len(text) > MAX_LINE_CHARS:
        text = text[:MAX_LINE_CHARS] + f"… ({len(text) - MAX_LINE_CHARS} more characters)"
    return text


class LineSplitter:
    """Output read in chunks, as the lines people read (a line with no end in sight is cut into pieces)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\n")
        read = [clean_line(raw) for raw in complete]
        if len(self._buffer) > MAX_LINE_CHARS * 4:
            read.append(clean_line(self._buffer))
            self._buffer = b""
        return read

    def rest(self) -> list[str]:
        """What is left once the output ended (its last line had no newline)."""
        left, self._buffer = self._buffer, b""
        return [clean_line(left)] if left else []


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, read from /proc."""
    return _scan()[1].get(pgid, [])


def _scan() -> tuple[float, dict[int, list[int]]]:
    """One read of /proc: when it began, and every live (not zombie) process by process group. Plain os calls on
    bytes: a few microseconds per process (pathlib's text files cost ten times that, with 300 processes 30 ms)."""
    began = time.monotonic()
    groups: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdecimal():
            continue
        try:
            fd = os.open(f"/proc/{name}/stat", os.O_RDONLY)
            try:
                stat = os.read(fd, 4096)
            finally:
                os.close(fd)
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split(None, 3)
        if len(fields) > 2 and fields[0] != b"Z":
            groups.setdefault(int(fields[2]), []).append(int(name))
    global _last_scan
    _last_scan = (began, groups)
    return _last_scan


_last_scan: tuple[float, dict[int, list[int]]] = (float("-inf"), {})


def _members_since(pgid: int, since: float) -> list[int]:
    """The group's live processes as of a scan begun at `since` or later: the handles ending together (a hundred
    turns finishing at once) share one scan. Sound for a group that was sent SIGKILL before `since`: it can only
    lose members after that, so a scan begun since then cannot miss one."""
    began, groups = _last_scan
    if began < since:
        began, groups = _scan()
    return groups.get(pgid, [])


class LocalHandle:
    def __init__(self, proc: asyncio.subprocess.Process, spec: RunSpec) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.unit = str(proc.pid)
        self.pgid = proc.pid  # the child leads a session and group of its own, or will in a moment (_SESSION)
        self.spec = spec
        # what one read of the pipe gave, a list of lines at a time: a queue hand-off per line cost more than the line
        self._lines: asyncio.Queue[list[str] | None] = asyncio.Queue()
        self.clock = TurnClock(idle_s=spec.idle_timeout, hard_s=spec.hard_timeout)
        self._reason: ExitReason | None = None
        self._reader = asyncio.create_task(self._read())
        self._watchdog = asyncio.create_task(self._watch())
        self._done = asyncio.create_task(self._finish())

    @property
    def paused(self) -> bool:
        return self.clock.paused

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        splitter = LineSplitter()
        try:
            while chunk := await self.proc.stdout.read(CHUNK_BYTES):
                self.clock.output()
                if read := splitter.feed(chunk):
                    self._lines.put_nowait(read)
            if read := splitter.rest():
                self._lines.put_nowait(read)
        finally:
            self._lines.put_nowait(None)

    async def _watch(self) -> None:
        reason = await self.clock.watch(WATCH_INTERVAL_S)
        self._reason = self._reason or reason
        await self._kill()

    async def _finish(self) -> RunExit:
        code = await self.proc.wait()
        self._watchdog.cancel()
        end = time.monotonic()
        # The turn is over: whatever the agent left behind in its group (servers, watchers) goes too.
        self._signal(signal.SIGKILL)
        await self._gone()
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout=2.0)
        except TimeoutError:
            self._reader.cancel()
        reason = self._reason or ExitReason.EXITED
        return RunExit(reason=reason, exit_code=code, duration_s=self.clock.running(end))

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                if self._alone():
                    os.kill(self.pid, sig)

    def _group_there(self) -> bool:
        """Whether the group has any process, living or a zombie (signal 0: no read of /proc); or the child, alone
        before it made its group."""
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return self._alone()
        except PermissionError:
            pass
        return True

    def _alone(self) -> bool:
        """Whether the child is there without its group: started, not yet in a session of its own (_SESSION), and
        not reaped (the standard library's own test before it signals a pid: one reaped may be another's now)."""
        return self.proc.returncode is None

    def _group_left(self, killed: float) -> bool:
        """Whether any process of the group (sent SIGKILL at `killed`) is still alive, not a zombie. Signal 0
        answers at once when nobody is left; only when somebody is is /proc read, in a scan shared with the other
        turns ending at the same moment."""
        return self._group_there() and bool(_members_since(self.pgid, killed))

    async def _gone(self) -> None:
        deadline = time.monotonic() + GONE_WAIT_S
        killed = time.monotonic()  # the callers have just sent SIGKILL to the group
        looks = 0
        # The first looks ask the kernel only (signal 0): what is left is usually a zombie whose reaper takes a
        # moment. Only a group still there after them costs a read of /proc, to tell the living from the dead.
        while time.monotonic() < deadline and (self._group_there() if looks < 2 else self._group_left(killed)):
            looks += 1
            self._signal(signal.SIGKILL)
            killed = time.monotonic()
            await asyncio.sleep(0.02)

    async def _kill(self) -> None:
        self._signal(signal.SIGTERM)
        if self.paused:
            self._signal(signal.SIGCONT)  # a stopped process cannot act on TERM
            self.clock.resume()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), timeout=STOP_GRACE_S)
        self._signal(signal.SIGKILL)
        await self._gone()

    async def lines(self) -> AsyncIterator[str]:
        async for read in self.batches():
            for line in read:
                yield line

    async def batches(self) -> AsyncIterator[list[str]]:
        while (read := await self._lines.get()) is not None:
            yield read

    async def wait(self) -> RunExit:
        return await asyncio.shield(self._done)

    async def stop(self) -> None:
        if self._done.done():
            return
        self._reason = self._reason or ExitReason.STOPPED
        await self._kill()
        await asyncio.shield(self._done)

    async def pause(self) -> None:
        if not self.paused and not self._done.done():
            self._signal(signal.SIGSTOP)
            self.clock.pause()

    def keep_alive(self) -> None:
        self.clock.output()

    async def resume(self) -> None:
        if self.paused:
            self._signal(signal.SIGCONT)
            self.clock.resume()


    async def detach(self) -> None:
        """A local turn cannot outlive Shepherd (its pipes close with it): detaching ends it."""
        await self.stop()


# The agent's session (start_new_session) made nicer from inside it before anything runs: where the kernel
# groups processes by session for scheduling (autogroup, on in many distributions), each session shares the CPU
# equally with Shepherd's whatever the niceness of its processes, so a hundred agents left the server a hundredth
# of a core (each system call of a starting turn took 8 ms). The session's group gets the niceness (best effort:
# the kernel may refuse), then nice(1) gives it to the agent's processes for hosts without autogroup. Set in the
# child, not by Shepherd after the start: a starved server set it seconds late. exec keeps the agent's pid.
_NICELY = '{ echo "$1" > /proc/self/autogroup; } 2>/dev/null; shift; exec "$@"'

# _SESSION: the agent leads a session and process group of its own (what is killed, paused and reaped as one), made
# by setsid(1) as the first program it runs rather than by the forked child before its exec (start_new_session).
# Python forks with vfork: Shepherd's main thread, holding the GIL, waits until the child has exec'd. A child that
# made its session first is a scheduling group of its own (autogroup) that waits for the CPU among the groups of the
# agents already busy, so that wait was 3-5 ms at the median and 30-85 ms at the tail (60 spawns beside 60 busy
# agents) where a child still in Shepherd's session exec's setsid(1) within about a millisecond. setsid(1) makes
# the session in place (it forks only for a group leader, which the child is not), so the pid is the agent's. Until
# it has, the child is alone and in Shepherd's group: the handle signals its pid itself.


def _startable(program: str, path: str, cwd: Path) -> None:
    """Raises what starting `program` itself would have (no such program, not executable), as exec finds it: by
    PATH for a bare name, else from the process's working directory."""
    found: str | None
    if os.sep in program:
        found = str(cwd / program)
        if not os.path.exists(found):  # noqa: PTH110 (the same test exec makes)
            found = None
    else:  # the first executable one on PATH, as exec takes it; one that is there but not executable says so
        found = shutil.which(program, path=path) or shutil.which(program, mode=os.F_OK, path=path)
    if found is None:
        raise RunnerError(f"cannot start {program!r}: no such program", code="AGENT_UNAVAILABLE")
    if os.path.isdir(found) or not os.access(found, os.X_OK):
        raise RunnerError(f"cannot start {program!r}: not executable", code="AGENT_UNAVAILABLE")


class LocalRunner:
    """Runs each turn as a child process group on this machine, in Shepherd's own copy of the workspace."""

    kind = "local"
    capabilities = Capabilities(pause=True, reconnect=False, remote=False)

    def workspace_path(self, local: Path) -> Path:
        return local

    def __init__(self, sandbox: SandboxView | None = None, *, nice: int = 0) -> None:
        """`nice`: the niceness agents run at (and everything they start), so that agents busy on every core leave
        Shepherd's own process its share: with a hundred agents starting at once, the server was one runnable
        thread among a hundred, and the last turns started seconds late."""
        self.nice = nice
        self._nice_program = shutil.which("nice") if nice else None
        if nice and self._nice_program is None:
            log.warning("nice(1) is not installed: agents run at Shepherd's own niceness (only their session's "
                        "scheduling group is made nicer, where the kernel has autogroup)")
        # the agent's session made by setsid(1) as it starts, not by the forked child before its exec (_SESSION)
        self._setsid = shutil.which("setsid")
        self._checked: tuple[float, SandboxReport] | None = None
        self._checking = asyncio.Lock()
        self._reading_etc = asyncio.Lock()  # one walk of /etc at a time, however many turns start together
        self.sandbox = sandbox  # the view turns will ask for (SHEPHERD_SANDBOX), for `ready`
        # sandboxed, the workspace is bound where Shepherd says (a coding container's workspacePath)
        self.capabilities = Capabilities(pause=True, reconnect=False, remote=False, mounts=sandbox is not None)

    async def ready(self) -> str | None:
        if self.sandbox is None:
            return None
        report = await self.sandbox_report(self.sandbox)
        return None if report.strong else f"the sandbox does not hold on this host: {report.describe()}"

    async def attach(self, unit: str, spec: RunSpec, *, since_s: float) -> LocalHandle | None:
        return None  # its output went to the process that died: core.tasks.nodes reaps what is left of it

    async def seed(self, seed: Seed) -> None:
        return None

    async def collect(self, task_id: str, local: Path) -> None:
        return None

    async def discard(self, task_id: str) -> None:
        return None

    async def sandbox_report(self, view: SandboxView) -> SandboxReport:
        """What the sandbox gives on this host, probed once (again after a while if it was weak)."""
        async with self._checking:
            now = time.monotonic()
            if self._checked is None or (not self._checked[1].strong and now - self._checked[0] > RECHECK_WEAK_S):
                self._checked = (now, await probe(view))
            return self._checked[1]

    async def start(self, spec: RunSpec) -> LocalHandle:
        argv = list(spec.argv)
        cwd = spec.cwd  # where the process starts on this host: bubblewrap shows the workspace at spec.cwd
        if spec.sandbox is not None:
            report = await self.sandbox_report(spec.sandbox)
            if not report.strong:
                raise RunnerError(
                    f"the sandbox does not hold on this host, so the agent was not started: {report.describe()} "
                    "(`shepherd doctor` shows what it gives; SHEPHERD_SANDBOX=false runs agents without it)",
                    code="SANDBOX_WEAK",
                )
            # the probe found bubblewrap (a strong report says so); building reads the program's files and /etc's
            # secrets as last listed: a millisecond or so, on the event loop (handed to a thread, a hundred turns
            # starting together each waited for the whole queue before them, and every agent started with the last).
            # Listing /etc again (every SECRETS_TTL_S) takes a fraction of a second: that is done in a thread, once.
            # The list is then taken as of `checked`, so that the build cannot cross the TTL and walk /etc here
            checked = time.monotonic()
            if secrets_stale(checked):
                async with self._reading_etc:
                    if secrets_stale(checked):
                        await asyncio.to_thread(etc_secrets)
            bwrap = shutil.which("bwrap") or "bwrap"
            argv = bwrap_argv(bwrap, spec.argv, cwd=spec.cwd, env=spec.env, view=spec.sandbox, program=spec.program,
                              etc=etc_secrets(checked))
            cwd = spec.sandbox.workspace or spec.cwd
        if self.nice or self._setsid:
            # started through programs of ours: a program that is not there is still said so here, not by them
            _startable(argv[0], spec.env.get("PATH", os.defpath), cwd)
        if self.nice:
            # through nice(1): a niceness set by Python in the child would cost vfork (preexec_fn), and one set after
            # the start would miss what the agent starts first
            nicer = [self._nice_program, "-n", str(self.nice)] if self._nice_program else []
            argv = ["/bin/sh", "-c", _NICELY, "shepherd-agent", str(self.nice), *nicer, *argv]
        if self._setsid:
            argv = [self._setsid, "--", *argv]  # (_SESSION; "--": a program named "-x" is not an option)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=cwd, env=dict(spec.env), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=self._setsid is None,
            )
        except FileNotFoundError:
            raise RunnerError(f"cannot start {argv[0]!r}: no such program", code="AGENT_UNAVAILABLE") from None
        except PermissionError:
            raise RunnerError(f"cannot start {argv[0]!r}: not executable", code="AGENT_UNAVAILABLE") from None
        return LocalHandle(proc, spec)
