"""Agents yield the CPU to Shepherd: the local runner starts them nicer (SHEPHERD_AGENT_NICE), their session's
scheduling group too, and Shepherd's own priority is left as it was; the process watches children by pidfd; each
agent leads a session of its own, made after its start (setsid(1)), and a stop before it has made it still holds."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import warnings
from pathlib import Path

import pytest

from bot import runtime
from core.runners import RunSpec
from core.runners.local import LocalRunner, RunnerError

AUTOGROUP = Path("/proc/self/autogroup")


def _spec(tmp_path: Path, argv: list[str]) -> RunSpec:
    return RunSpec(argv=argv, cwd=tmp_path, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, idle_timeout=20,
                   hard_timeout=30, task_id="t1", org_id="org1", turn=1, runtime="custom")


async def _lines(runner: LocalRunner, spec: RunSpec) -> list[str]:
    handle = await runner.start(spec)
    lines = [line async for line in handle.lines()]
    assert (await handle.wait()).exit_code == 0, lines
    return lines


async def test_an_agent_runs_nicer_than_shepherd_and_so_does_what_it_starts(tmp_path: Path) -> None:
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    our_group = AUTOGROUP.read_text() if AUTOGROUP.exists() else None
    code = ("import os, subprocess, sys; print('agent', os.getpriority(os.PRIO_PROCESS, 0)); sys.stdout.flush(); "
            "subprocess.run(['sh', '-c', 'echo child $(nice)'])")
    if AUTOGROUP.exists():
        code += "; print('group', open('/proc/self/autogroup').read().split()[-1])"
    lines = await _lines(LocalRunner(nice=15), _spec(tmp_path, [sys.executable, "-c", code]))
    assert f"agent {min(19, ours + 15)}" in lines and f"child {min(19, ours + 15)}" in lines, lines
    if AUTOGROUP.exists():  # its own session's group, not Shepherd's
        assert "group 15" in lines, lines
        assert AUTOGROUP.read_text() == our_group
    assert os.getpriority(os.PRIO_PROCESS, 0) == ours

    plain = await _lines(LocalRunner(), _spec(tmp_path, [sys.executable, "-c", code]))
    assert f"agent {ours}" in plain, plain


async def test_a_nicer_start_still_says_which_program_is_missing_or_not_executable(tmp_path: Path) -> None:
    runner = LocalRunner(nice=10)
    with pytest.raises(RunnerError, match="'no-such-agent-cli': no such program") as missing:
        await runner.start(_spec(tmp_path, ["no-such-agent-cli", "run"]))
    assert missing.value.code == "AGENT_UNAVAILABLE"
    script = tmp_path / "agent.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(RunnerError, match="not executable"):
        await runner.start(_spec(tmp_path, [str(script)]))
    script.chmod(0o755)
    assert await _lines(runner, _spec(tmp_path, ["./agent.sh"])) == ["hi"]  # found from the working directory


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="Python 3.12 watches children by pidfd by itself")
def test_children_are_watched_without_a_thread_each() -> None:
    policy = asyncio.get_event_loop_policy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        previous = policy.get_child_watcher()
    if not runtime.watch_children_with_pidfds():
        pytest.skip("this kernel gives no pidfds")

    def watcher_threads() -> list[str]:  # asyncio's ThreadedChildWatcher names each of its threads waitpid-N;
        # counting every thread would also count other tests' threads ending meanwhile
        return [t.name for t in threading.enumerate() if t.name.startswith("waitpid-")]

    async def many() -> tuple[list[str], list[int]]:
        procs = [await asyncio.create_subprocess_exec("sleep", "0.3") for _ in range(5)]
        during = watcher_threads()
        return during, [await p.wait() for p in procs]

    try:
        during, codes = asyncio.run(many())
        assert codes == [0] * 5 and during == []  # the threaded watcher started one thread per child
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            policy.set_child_watcher(previous)


async def test_the_first_executable_on_path_starts_as_exec_would_find_it(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "myagent").write_text("#!/bin/sh\necho wrong\n")  # there, not executable: exec passes it by
    (second / "myagent").write_text("#!/bin/sh\necho right\n")
    (second / "myagent").chmod(0o755)
    spec = RunSpec(argv=["myagent"], cwd=tmp_path, env={"PATH": f"{first}:{second}:/usr/bin:/bin"}, idle_timeout=20,
                   hard_timeout=30, task_id="t1", org_id="org1", turn=1, runtime="custom")
    assert await _lines(LocalRunner(nice=10), spec) == ["right"]
    assert await _lines(LocalRunner(), spec) == ["right"]


async def test_without_nice_installed_only_the_session_group_is_made_nicer(tmp_path: Path) -> None:
    runner = LocalRunner(nice=6)
    runner._nice_program = None  # as on a host without coreutils' nice
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    code = "import os; print('agent', os.getpriority(os.PRIO_PROCESS, 0))"
    if AUTOGROUP.exists():
        code += "; print('group', open('/proc/self/autogroup').read().split()[-1])"
    lines = await _lines(runner, _spec(tmp_path, [sys.executable, "-c", code]))
    assert f"agent {ours}" in lines, lines
    if AUTOGROUP.exists():
        assert "group 6" in lines, lines


SESSION_CODE = "import os; print('ids', os.getpid(), os.getsid(0), os.getpgrp())"


@pytest.mark.parametrize("setsid", [True, False], ids=["setsid(1)", "without setsid(1)"])
async def test_an_agent_leads_a_session_and_group_of_its_own_under_its_own_pid(tmp_path: Path, setsid: bool) -> None:
    for runner in (LocalRunner(nice=5), LocalRunner()):
        if not setsid:
            runner._setsid = None  # as on a host without util-linux: the child makes its session before its exec
        handle = await runner.start(_spec(tmp_path, [sys.executable, "-c", SESSION_CODE]))
        lines = [line async for line in handle.lines()]
        assert (await handle.wait()).exit_code == 0
        assert lines == [f"ids {handle.pid} {handle.pid} {handle.pid}"], lines  # what is killed and paused as one
        assert os.getsid(0) != handle.pid


async def test_an_agent_stopped_before_it_made_its_session_never_runs(tmp_path: Path) -> None:
    slow = tmp_path / "slow-setsid"  # a setsid(1) that takes its time, so the stop comes first
    slow.write_text(f'#!/bin/sh\nsleep 1\nexec {LocalRunner()._setsid or "setsid"} "$@"\n')
    slow.chmod(0o755)
    ran = tmp_path / "ran"
    runner = LocalRunner(nice=5)
    runner._setsid = str(slow)
    handle = await runner.start(_spec(tmp_path, [sys.executable, "-c", f"open({str(ran)!r}, 'w')"]))
    await handle.stop()
    ended = await handle.wait()
    assert ended.exit_code != 0 and ended.reason.value == "stopped", ended
    await asyncio.sleep(1.5)  # past the slow setsid's sleep: had the child lived on, the agent would have run
    assert not ran.exists()
