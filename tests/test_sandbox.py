"""The agent sandbox, tried as an agent would try it: from inside, as root and as a normal user.

A shell runs in the very sandbox a task gets (core.runners.sandbox.bwrap_argv, with the view `Settings`
builds) and lists what it can read, write, mount and reach; the tests compare that with what the sandbox
promises. The end-to-end tests run the demo agent through the supervisor: `shepherd ask` answers from inside,
and a host whose bubblewrap does not isolate gets no run at all.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.callbacks import PYTHON, CallbackSocket, write_launcher
from bot.presets import agent_catalog
from bot.settings import Settings
from core.people.access import Role
from core.runners import RunSpec, sandbox
from core.runners.local import LocalRunner
from core.runners.probe import probe
from core.runners.sandbox import AGENT_UID, SANDBOX_HOME, SandboxView, bwrap_argv
from core.shepherd import Shepherd
from core.store.db import Database
from tests.conftest import IN_CI, person
from tests.procs import Home
from tests.test_tasks import Rig, fast_config, supervisor

# A shell that reports, one line each: what it can read, what it can write, what it sees at the top, who it
# is, and whether mounting, unmounting or a namespace of its own worked.
PROBE = r'''
for p in "$@"; do
  if [ -d "$p" ]; then ls "$p" >/dev/null 2>&1 && echo "read $p"
    if (: > "$p/.probe") 2>/dev/null; then echo "write $p"; rm -f "$p/.probe"; fi
  elif [ -e "$p" ]; then cat "$p" >/dev/null 2>&1 && echo "read $p"
    if (: >> "$p") 2>/dev/null; then echo "write $p"; fi
  fi
done
echo "top $(ls -A / | tr '\n' ' ')"
echo "uid $(id -u)"
grep '^CapEff:' /proc/self/status
echo "net $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')"
mount -o remount,rw / 2>/dev/null && echo "remounted /"
mount -o remount,rw /usr 2>/dev/null && echo "remounted /usr"
umount /etc 2>/dev/null && echo "unmounted /etc"
umount -l /tmp 2>/dev/null && echo "unmounted /tmp"
unshare -Urm true 2>/dev/null && echo "nested namespace"
(: > /usr/.shepherd-probe) 2>/dev/null && echo "wrote /usr"
echo done
'''


def _usable() -> None:
    if shutil.which("bwrap") is None or shutil.which("setpriv") is None:
        if IN_CI:
            pytest.fail("bubblewrap and setpriv are required in CI (.ci/run installs bubblewrap)")
        pytest.skip("bubblewrap is not installed here")


class Host:
    """A small host: Shepherd's working directory with its data dir and .env, its user's home with the
    dotfiles agents must not read, another service's secrets, and a folder an operator may share."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cleanup: list[Path] = []  # more folders the test made, removed with the host
        self.work = root / "srv" / "shepherd"  # Shepherd's working directory
        self.data = self.work / ".shepherd"
        self.home = root / "home" / "ops"
        self.other = root / "srv" / "billing"  # another service on the same machine
        self.shared = root / "opt" / "toolchain"
        self.workspace = self.data / "workspaces" / "task-1"
        self.agent_home = self.data / "workspaces" / ".homes" / "task-1"
        for folder in (self.workspace, self.agent_home, self.home / ".config", self.other, self.shared):
            folder.mkdir(parents=True)
        files = {
            self.work / ".env": "SLACK_BOT_TOKEN=xoxb-secret",
            self.data / "shepherd.db": "api_token rows",
            self.home / ".gitconfig": "[credential]\n\thelper = store\n",
            self.home / ".npmrc": "//registry.npmjs.org/:_authToken=secret",
            self.home / ".config" / "gh.yml": "oauth_token: secret",
            self.other / ".env": "DATABASE_PASSWORD=secret",
            self.shared / "VERSION": "1.2.3",
        }
        for path, text in files.items():
            path.write_text(text)

    def view(self, monkeypatch: pytest.MonkeyPatch, ro_paths: str = "") -> SandboxView:
        """The view `serve` would use when started from the working directory by this home's user."""
        monkeypatch.chdir(self.work)
        monkeypatch.setenv("HOME", str(self.home))
        monkeypatch.setenv("SHEPHERD_DATA_DIR", str(self.data))
        monkeypatch.setenv("SHEPHERD_SANDBOX_RO_PATHS", ro_paths)
        return Settings().sandbox_view().for_task(self.agent_home)

    def candidates(self) -> list[str]:
        return [str(p) for p in (
            self.workspace, self.agent_home, SANDBOX_HOME, "/tmp", "/", "/usr", "/etc", "/home", self.home,
            "/etc/passwd", "/etc/shadow", "/etc/gshadow", "/usr/bin/env",
            self.work / ".env", self.data, self.data / "shepherd.db", self.home / ".gitconfig",
            self.home / ".npmrc", self.home / ".config" / "gh.yml", self.other / ".env", self.shared / "VERSION",
        )]


def _findings(out: str) -> tuple[set[str], set[str], dict[str, str]]:
    read, written, facts = set(), set(), {}
    for line in out.splitlines():
        key, _, value = line.replace("\t", " ").partition(" ")
        if key == "read":
            read.add(value)
        elif key == "write":
            written.add(value)
        else:
            facts[key] = value
    return read, written, facts


def _run_probe(host: Host, view: SandboxView, *, as_user: int | None = None) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": SANDBOX_HOME}
    argv = bwrap_argv(shutil.which("bwrap") or "bwrap", ["/bin/sh", "-c", PROBE, "probe", *host.candidates()],
                      cwd=host.workspace, env=env, view=view)
    if as_user is not None:
        argv = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups", "--", *argv]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("done"), proc.stdout + proc.stderr
    return proc.stdout


def _assert_contained(host: Host, out: str) -> None:
    read, written, facts = _findings(out)
    private = {str(host.workspace), SANDBOX_HOME, "/tmp"}  # its home is shown at SANDBOX_HOME only
    # it writes its workspace, its home and a /tmp of its own: nothing else
    assert written == private, out
    secrets = {str(p) for p in (host.work / ".env", host.data / "shepherd.db", host.home, host.home / ".gitconfig",
                                host.home / ".npmrc", host.home / ".config" / "gh.yml", host.other / ".env",
                                host.shared / "VERSION", "/etc/shadow", "/etc/gshadow")}
    assert not read & secrets, f"the agent read {sorted(read & secrets)}"
    assert {"/etc/passwd", "/usr/bin/env", "/usr", "/etc"} <= read, "the toolchain's system is there"
    top = set(facts["top"].split())
    first = host.root.parts[1]  # where the test's host lives
    assert top <= {"bin", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "proc", "run", "sbin", "tmp",
                   "usr", first}, top
    assert facts["uid"] == str(AGENT_UID) and facts["CapEff:"].strip() == "0000000000000000", facts
    assert facts["net"].split() == ["lo"], facts
    for escape in ("remounted", "unmounted", "nested", "wrote"):
        assert escape not in facts, out
    planted = Path("/usr/.shepherd-probe")
    if planted.exists():
        planted.unlink()
        raise AssertionError("the agent wrote to the host's /usr")


@pytest.fixture
def host() -> Iterator[Host]:
    # world-traversable, so that the same host serves the normal-user run (pytest's tmp dirs are private);
    # not under /tmp, which the sandbox replaces with its own
    root = Path(tempfile.mkdtemp(prefix="shepherd-host-", dir="/var/tmp"))
    root.chmod(0o755)
    made = Host(root)
    try:
        yield made
    finally:
        for folder in (root, *made.cleanup):
            shutil.rmtree(folder, ignore_errors=True)


def test_as_root_the_agent_sees_only_the_system_and_writes_only_its_own_folders(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    _usable()
    if os.geteuid() != 0:
        pytest.skip("needs root (CI runs as root)")
    _assert_contained(host, _run_probe(host, host.view(monkeypatch)))


def test_as_a_normal_user_the_agent_is_held_the_same_way(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    _usable()
    user = None
    if os.geteuid() == 0:
        user = 65534
        for path in (host.root, *host.root.rglob("*")):
            os.lchown(path, user, user)  # the normal user's own files: theirs to read, unless the sandbox hides them
    _assert_contained(host, _run_probe(host, host.view(monkeypatch), as_user=user))


def test_an_operator_may_share_folders_but_shepherds_own_stay_hidden_beneath_them(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    _usable()
    # the whole test host listed, once by its name and once through a link (a /home that links to /var/home):
    # the shared toolchain and the other service become readable (the operator said so); Shepherd's working
    # directory, data directory and home stay hidden under both names. /etc listed again keeps its secrets.
    alias = Path(tempfile.mkdtemp(prefix="shepherd-alias-", dir="/var/tmp")) / "host"
    alias.symlink_to(host.root)
    host.cleanup.append(alias.parent)
    out = _run_probe(host, host.view(monkeypatch, ro_paths=f"{host.shared}:{host.root}:{alias}:/etc"))
    read, written, _ = _findings(out)
    assert str(host.shared / "VERSION") in read and str(host.other / ".env") in read
    for secret in (host.work / ".env", host.data / "shepherd.db", host.home / ".gitconfig", host.home / ".npmrc"):
        assert str(secret) not in read, out
    assert str(host.shared) not in written and str(host.root) not in written
    env = subprocess.run(
        bwrap_argv(shutil.which("bwrap") or "bwrap",
                   ["/bin/sh", "-c", 'for p in "$@"; do cat "$p" >/dev/null 2>&1 && echo "read $p"; done; echo done',
                    "probe", f"{alias}/srv/shepherd/.env", f"{alias}/srv/shepherd/.shepherd/shepherd.db",
                    f"{alias}/home/ops/.gitconfig", f"{alias}/srv/billing/.env", "/etc/shadow"],
                   cwd=host.workspace, env={"PATH": "/usr/bin:/bin"},
                   view=host.view(monkeypatch, ro_paths=f"{alias}:/etc")),
        capture_output=True, text=True, timeout=60)
    assert env.stdout.splitlines() == [f"read {alias}/srv/billing/.env", "done"], env.stdout + env.stderr


async def test_doctor_and_runner_agree_on_what_the_sandbox_gives(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    _usable()
    report = await probe(host.view(monkeypatch))
    assert report.strong, report.problems
    assert report.capabilities == "0" and report.user_namespace and report.network == ("lo",)
    assert "nested namespaces: refused" in report.describe()


def _unconfining_bwrap(folder: Path) -> Path:
    """A `bwrap` that runs the command with none of its isolation (an old or broken build, a wrapper); returns
    the folder to put first on PATH."""
    fake = folder / "fakebin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\n[ "$1" = --version ] && { echo "bubblewrap 9.9"; exit 0; }\n'
                    'while [ "$1" != -- ]; do shift; done; shift; exec "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return fake.parent


# --- through the supervisor -----------------------------------------------------------------------------


@pytest.fixture
async def boxed(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    """A supervisor running sandboxed tasks as `serve` does: the launcher and the callback socket bound in."""
    _usable()
    db = Database(sqlite_url)
    data = tmp_path / "data"
    shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo", workspace_root=data / "workspaces")
    await shepherd.orgs.ensure("acme")
    socket = CallbackSocket(shepherd)
    path = await socket.start()
    view = SandboxView(hidden=(data, Path.cwd(), Path.home()), socket=path, tools=write_launcher(data / "bin"),
                       programs=(PYTHON,))
    config = replace(fast_config(data), sandbox=view, callback_url="http://127.0.0.1:9/unused",
                     tool_dir=data / "bin")
    sup = supervisor(shepherd, config)
    await sup.start()
    try:
        yield Rig(shepherd, sup, person(Role.ADMIN))
    finally:
        await sup.stop()
        await socket.stop()
        await db.dispose()


async def test_shepherd_ask_is_answered_inside_the_sandbox_and_nothing_else_is_reachable(
    boxed: Rig, tmp_path: Path
) -> None:
    secret = tmp_path / "data" / "shepherd.db"
    task = await boxed.run(f"deploy it [confirm deploy.staging] [see {secret}] [net 9]")
    deadline = asyncio.get_running_loop().time() + 30
    while not (waiting := await boxed.shepherd.confirmations.pending(boxed.who, task_id=task.id)):
        assert asyncio.get_running_loop().time() < deadline, ((await boxed.get(task.id)).evidence["reason"],
                                                              await boxed.output(task.id))
        await asyncio.sleep(0.05)
    approver = person(Role.APPROVER, name="ana")
    await boxed.shepherd.confirmations.vote(approver, waiting[0].code, approve=True)
    done = await boxed.finished(task.id, timeout=30)
    out = await boxed.output(task.id)
    assert "ask deploy.staging: approved" in out, out
    assert f"see {secret}: missing" in out and any(line.startswith("network: unreachable") for line in out), out
    assert done.outcome == "succeeded", out
    assert "NOTES.md" in done.evidence["diff"]["paths"], "the workspace is writable"


async def test_a_host_whose_bubblewrap_does_not_isolate_runs_no_agent(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the probe finds root's capabilities (or no user namespace) and the host's network: the task fails
    # closed with the reason
    monkeypatch.setenv("PATH", f"{_unconfining_bwrap(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    db = Database(sqlite_url)
    shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo",
                        workspace_root=tmp_path / "data" / "workspaces")
    await shepherd.orgs.ensure("acme")
    sup = supervisor(shepherd,
                         replace(fast_config(tmp_path / "data"), sandbox=SandboxView(hidden=(tmp_path / "data",))))
    await sup.start()
    try:
        rig = Rig(shepherd, sup, person(Role.ADMIN))
        done = await rig.finished((await rig.run("edit the README")).id)
        out = await rig.output(done.id)
    finally:
        await sup.stop()
        await db.dispose()
    assert done.outcome == "failed" and "sandbox does not hold" in done.evidence["reason"], done.evidence
    if os.geteuid() == 0:
        assert "capabilities" in done.evidence["reason"]
    assert not out and not done.evidence["diff"]["files"], "the agent never ran"


def test_a_direct_start_with_a_weak_sandbox_is_refused_before_any_process(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bubblewrap at all
    spec = RunSpec(argv=["/bin/sh", "-c", f"touch {tmp_path}/ran"], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"},
                   idle_timeout=5, hard_timeout=5, sandbox=SandboxView())
    with pytest.raises(Exception, match="bubblewrap is not installed") as refused:
        asyncio.run(LocalRunner().start(spec))
    assert getattr(refused.value, "code", "") == "SANDBOX_WEAK"
    assert not (tmp_path / "ran").exists()


async def test_turns_starting_when_the_list_of_etc_secrets_is_old_list_them_once_off_the_event_loop(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /etc is listed again for files only their owner may read every SECRETS_TTL_S, a fraction of a second:
    # turns starting then neither stall the event loop (every request, every other turn) nor each walk it again
    _usable()
    view = host.view(monkeypatch)
    runner = LocalRunner(view)
    assert (await runner.sandbox_report(view)).strong
    monkeypatch.setattr(sandbox, "_secrets", None)  # as SECRETS_TTL_S after the last listing
    walked: list[int] = []
    real_walk = os.walk

    def walk(top: str, *args: Any, **kwargs: Any) -> Iterator[tuple[str, list[str], list[str]]]:
        if top == "/etc":
            walked.append(threading.get_ident())
        return real_walk(top, *args, **kwargs)

    monkeypatch.setattr(os, "walk", walk)
    spec = RunSpec(argv=["/bin/sh", "-c", "cat /etc/shadow 2>/dev/null || echo hidden"], cwd=host.workspace,
                   env={"PATH": "/usr/bin:/bin"}, idle_timeout=20, hard_timeout=30, sandbox=view)
    handles = await asyncio.gather(*(runner.start(spec) for _ in range(5)))
    outputs = [[line async for line in handle.lines()] for handle in handles]
    assert [(await handle.wait()).exit_code for handle in handles] == [0] * 5, outputs
    assert outputs == [["hidden"]] * 5, "/etc's secrets stay hidden from every turn"
    assert len(walked) == 1 and walked[0] != threading.get_ident(), "listed once, in a worker thread"


# --- as a new user runs it -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_new_user_with_the_sandbox_on_gets_an_answer_to_shepherd_ask_and_doctor_says_what_holds(
    tmp_path: Path,
) -> None:
    _usable()
    home = Home(tmp_path, SHEPHERD_SANDBOX="true")
    doctor = home.run("doctor")
    assert "sandbox: on: bubblewrap" in doctor.stdout and "capabilities: none" in doctor.stdout
    assert "network: loopback only" in doctor.stdout and "user namespace: yes" in doctor.stdout
    # level 2 runs low-risk actions unasked: the agent's `shepherd ask` is answered at once, through the socket
    secret = tmp_path / ".shepherd" / "shepherd.db"
    out = home.run("console", "-c", f'run "check [confirm tests.run low] [see {secret}] [see {tmp_path}/.env]" '
                                    "--agent demo --level 2")
    assert "ask tests.run: approved" in out.stdout, out.stdout + out.stderr
    assert f"see {secret}: missing" in out.stdout and f"see {tmp_path}/.env: missing" in out.stdout


@pytest.mark.slow
def test_doctor_fails_when_the_sandbox_is_on_but_weak(tmp_path: Path) -> None:
    home = Home(tmp_path, SHEPHERD_SANDBOX="true")
    home.env["PATH"] = f"{_unconfining_bwrap(tmp_path)}{os.pathsep}{home.env['PATH']}"
    doctor = home.run("doctor", check=False)
    assert doctor.returncode == 1 and "sandbox: on but WEAK, so agents will not run" in doctor.stdout, doctor.stdout
    assert "nested namespaces" in doctor.stdout or "user namespace" in doctor.stdout


@pytest.mark.parametrize(("program", "shown"), [
    ("/home/ops/.pyenv/versions/3.11.7/bin/python3.11", "/home/ops/.pyenv/versions/3.11.7"),
    ("/home/ops/.nvm/versions/node/v20.1.0/bin/node", "/home/ops/.nvm/versions/node/v20.1.0"),
    ("/home/ops/.local/pipx/venvs/aider-chat/bin/aider", "/home/ops/.local/pipx/venvs/aider-chat"),
    ("/home/ops/.local/bin/aider", "/home/ops/.local/bin"),  # not ~/.local: its share/ holds keyrings
    ("/home/ops/.cargo/bin/agent", "/home/ops/.cargo/bin"),  # not ~/.cargo: it holds credentials.toml
    ("/home/ops/bin/agent", "/home/ops/bin"),
    ("/opt/node/bin/node", "/opt/node"),  # outside any hidden folder: the whole prefix
    ("/usr/local/bin/claude", None),  # the system is shown anyway
])
def test_a_programs_installation_inside_a_home_shows_no_more_than_itself(program: str, shown: str | None) -> None:
    from core.runners.sandbox import _install_root

    assert _install_root(program, ["/home/ops", "/srv/shepherd"]) == shown
