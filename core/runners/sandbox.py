"""The agent sandbox: what an agent run through bubblewrap sees of the host, and proof that it holds.

The agent runs in a user namespace as an unprivileged uid (AGENT_UID) with every capability dropped and
nested user namespaces refused, whoever started Shepherd (root included): it can mount, unmount and
remount nothing, and the kernel's ownership checks are all that is left between it and a file. So it is
shown only what it needs, read-only:

- the system directories a toolchain needs (/usr, /bin, /sbin, /lib*, /etc without the files only their
  owner may read: shadow, gshadow, ssh host keys, private TLS keys, …);
- the agent program's own installation (found from the preset's command, never from a prompt), and the
  interpreter of its script;
- what the operator lists in SHEPHERD_SANDBOX_RO_PATHS;

and writable: its workspace, a home of its own (per task, kept for its follow-up turns) and a private /tmp.
Shepherd's data directory, its working directory and its user's home are never shown, even under a path
the operator listed. There is no network; `shepherd ask` reaches Shepherd through one Unix socket bound
in at SANDBOX_SOCKET, which serves only the task-token routes.

core.runners.probe runs the same sandbox with a shell script and reports what it really gives; the runner
refuses to run an agent in a sandbox that is weaker than this (fail closed), and `shepherd doctor` says why.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

AGENT_UID = 65534  # "nobody": an unprivileged uid every Linux passwd file names
SANDBOX_HOME = "/home/agent"
SANDBOX_TOOLS = "/run/shepherd/bin"
SANDBOX_SOCKET = "/run/shepherd/ask.sock"
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
SECRETS_TTL_S = 300.0  # /etc is read again for files only their owner may read at most this often


@dataclass(frozen=True)
class SandboxView:
    """What a sandboxed run may see besides the system and its workspace."""

    hidden: tuple[Path, ...] = ()  # never shown: the data dir, Shepherd's working directory, its user's home
    ro_paths: tuple[Path, ...] = ()  # the operator's additions (SHEPHERD_SANDBOX_RO_PATHS)
    programs: tuple[Path, ...] = ()  # programs every run needs (the interpreter of the `shepherd ask` launcher)
    tools: Path | None = None  # the launcher folder, shown at SANDBOX_TOOLS
    socket: Path | None = None  # Shepherd's task-callback socket, shown at SANDBOX_SOCKET
    home: Path | None = None  # this task's home, shown (writable) at SANDBOX_HOME
    # the host folder shown (writable) at the run's cwd, a coding container's workspacePath (issue 19); None: the
    # cwd is the workspace's own host path, shown where it is
    workspace: Path | None = None

    def for_task(self, home: Path, workspace: Path | None = None) -> SandboxView:
        return replace(self, home=home, workspace=workspace)


def home_for(workspace: Path) -> Path:
    """Where a sandboxed task's home lives on the host: beside the workspaces, never inside one (what the
    agent keeps there is not part of its change)."""
    return workspace.parent / ".homes" / workspace.name


# --- what the host shows --------------------------------------------------------------------------


def within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def is_system(path: str) -> bool:
    return any(within(path, d) for d in SYSTEM_DIRS)


_secrets: tuple[float, tuple[tuple[str, bool], ...]] | None = None


def secrets_stale(now: float | None = None) -> bool:
    """Whether the next etc_secrets() walks /etc (a fraction of a second: a caller on an event loop calls it in a
    worker thread first)."""
    now = time.monotonic() if now is None else now
    return _secrets is None or now - _secrets[0] >= SECRETS_TTL_S


def etc_secrets(now: float | None = None) -> tuple[tuple[str, bool], ...]:
    """Entries under /etc that other users may not read, as (path, is_dir): the host's secrets by its own
    account. Cached for SECRETS_TTL_S; walking /etc takes a fraction of a second."""
    global _secrets
    now = time.monotonic() if now is None else now
    if _secrets is not None and not secrets_stale(now):
        return _secrets[1]
    found: list[tuple[str, bool]] = []
    for root, dirs, files in os.walk("/etc"):
        keep = []
        for name in dirs + files:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                continue  # a link shows what it points to, checked where that is
            is_dir = stat.S_ISDIR(st.st_mode)
            if not st.st_mode & stat.S_IROTH or (is_dir and not st.st_mode & stat.S_IXOTH):
                found.append((path, is_dir))
            elif is_dir:
                keep.append(name)
        dirs[:] = [d for d in dirs if d in keep]
    _secrets = (now, tuple(found))
    return _secrets[1]


# Folders under which each subfolder is one self-contained installation: pyenv's and nvm's versions, pipx's
# venvs, rustup's toolchains, asdf's installs.
_INSTALL_SETS = ("versions", "venvs", "toolchains", "installs")


def _self_contained(root: str) -> bool:
    """Is `root` one whole installation (a virtualenv, a versioned toolchain), not a shared prefix such as
    ~/.local, whose share/ and state/ hold more than programs?"""
    parents = {os.path.basename(os.path.dirname(root)), os.path.basename(os.path.dirname(os.path.dirname(root)))}
    return os.path.isfile(os.path.join(root, "pyvenv.cfg")) or bool(parents & set(_INSTALL_SETS))


def _install_root(real: str, hidden: Sequence[str]) -> str | None:
    """The folder a program is installed in (`/opt/node` for `/opt/node/bin/node`), or None on the system.
    Inside a hidden folder (a home) only a self-contained installation (`~/.pyenv/versions/3.11.7`, a
    virtualenv) or the program's own folder is shown: a program in ~/.local/bin does not show ~/.local, nor one
    in ~/bin the whole home."""
    if is_system(real):
        return None
    folder = os.path.dirname(real)
    inside = any(within(folder, h) for h in hidden)
    candidates = [folder]
    if os.path.basename(folder) == "bin":
        prefix = os.path.dirname(folder)
        if not inside or _self_contained(prefix):
            candidates.insert(0, prefix)
    for root in candidates:
        if root != "/" and not any(within(h, root) for h in hidden):
            return root
    return real


def _interpreter(path: str, search: str) -> str | None:
    """A script's interpreter from its `#!` line (`/usr/bin/env node` looks `node` up on `search`)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].decode(errors="replace").split()
    if not words:
        return None
    if os.path.basename(words[0]) == "env":
        names = [w for w in words[1:] if not w.startswith("-")]
        return shutil.which(names[0], path=search) if names else None
    return words[0]


def program_roots(program: Sequence[str], search: str, hidden: Sequence[str]) -> tuple[str | None, list[str]]:
    """(the program's real path, what must be shown for it to run): its installation, its script's
    interpreter's installation, and the absolute files its command names. `program` is the command's own
    words from configuration; a prompt is never among them."""
    roots: list[str] = []
    real: str | None = None
    found = shutil.which(program[0], path=search) if program else None
    if found:
        real = os.path.realpath(found)
        chain = [real]
        interpreter = _interpreter(real, search)
        for _ in range(3):  # an interpreter that is itself a script, a few levels deep at most
            if interpreter is None:
                break
            resolved = os.path.realpath(interpreter)
            chain.append(resolved)
            interpreter = _interpreter(resolved, search) if resolved != chain[-2] else None
        for path in chain:
            root = _install_root(path, hidden)
            if root and root not in roots:
                roots.append(root)
    for word in program[1:]:
        if os.path.isabs(word) and os.path.isfile(word) and not is_system(word):
            real_word = os.path.realpath(word)
            if real_word not in roots:
                roots.append(real_word)  # that file only: a script the command runs, say
    return real, roots


def _under(path: str, source: str, dest: str) -> str | None:
    """Where `path` (a real path) shows inside the sandbox when `source` (real) is bound at `dest`."""
    if not within(path, source):
        return None
    return dest + path[len(source.rstrip("/")):] if path != source else dest


def bwrap_argv(
    bwrap: str, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], view: SandboxView,
    program: Sequence[str] = (), etc: Sequence[tuple[str, bool]] | None = None,
) -> list[str]:
    """The whole command line: bubblewrap's options, then the agent's argv (its program made absolute).
    `program` is the command's own words from configuration (argv[0] when not given); `etc` the host's secrets
    under /etc as etc_secrets() lists them (read here when not given: a walk of /etc when the list is stale)."""
    hidden = [os.path.realpath(h) for h in view.hidden if os.path.realpath(h) != "/"]
    if view.workspace is not None:  # the workspace shown at cwd, a path of Shepherd's choosing
        ws_source, ws = os.path.realpath(view.workspace), os.path.normpath(str(cwd))
        if not os.path.isabs(ws) or ws == "/" or is_system(ws) or within(ws, SANDBOX_HOME) \
                or within(ws, "/run/shepherd") or within(ws, "/tmp") or within(ws, "/proc") or within(ws, "/dev"):
            raise ValueError(f"{ws!r} cannot show the workspace: it is the system's or the sandbox's own")
    else:
        ws_source = ws = os.path.realpath(cwd)
    out = [bwrap, "--unshare-user", "--uid", str(AGENT_UID), "--gid", str(AGENT_UID), "--disable-userns",
           "--cap-drop", "ALL", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
           "--unshare-cgroup-try", "--hostname", "shepherd-task", "--die-with-parent",
           "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    shown: list[tuple[str, str]] = []  # (real source, where it shows)
    for system in SYSTEM_DIRS:
        if os.path.islink(system):
            out += ["--symlink", os.readlink(system), system]
        elif os.path.isdir(system):
            out += ["--ro-bind", system, system]
            shown.append((system, system))
    for extra in view.ro_paths:
        # bound by what the path really is: a link must not carry a hidden folder in under another name
        source = os.path.realpath(extra)
        if os.path.exists(source):
            out += ["--ro-bind", source, str(extra)]
            shown.append((source, str(extra)))
    # What stays hidden under anything shown, wherever it shows: the host's secrets in /etc (under /etc, or
    # a listed /etc/ssl), and Shepherd's own folders (a data dir below /usr, a listed /srv or a link to it).
    # Folders become an empty tmpfs, made read-only last, once what must show inside them (the workspace,
    # say) is mounted; files an unreadable device.
    secrets = [*(etc_secrets() if etc is None else etc), *((h, True) for h in hidden)]
    masked: list[str] = []
    files: list[str] = []
    for path, is_dir in sorted(secrets, key=lambda s: len(s[0])):
        for source, dest in shown:
            at = _under(path, source, dest)
            if at is None or any(within(at, m) for m in masked):
                continue  # not shown there, or covered by an outer mask already
            (masked if is_dir else files).append(at)
    for at in masked:
        out += ["--tmpfs", at]
    for at in files:
        out += ["--ro-bind", "/dev/null", at]
    search = env.get("PATH") or os.defpath
    real, roots = program_roots(program or argv[:1], search, hidden)
    for needed in view.programs:
        roots += [r for r in program_roots([str(needed)], search, hidden)[1] if r not in roots]
    for root in roots:
        out += ["--ro-bind", root, root]
    out += ["--bind", ws_source, ws]
    if view.home is not None:
        out += ["--bind", str(view.home), SANDBOX_HOME]
    if view.tools is not None:
        out += ["--ro-bind", str(view.tools), SANDBOX_TOOLS]
    if view.socket is not None:
        out += ["--bind", str(view.socket), SANDBOX_SOCKET]
    for at in masked:
        out += ["--remount-ro", at]
    out += ["--remount-ro", "/", "--chdir", ws, "--"]
    command = list(argv)
    if real and command:
        command[0] = real
    return out + command


def parse_paths(value: str | Iterable[str]) -> tuple[Path, ...]:
    """SHEPHERD_SANDBOX_RO_PATHS: absolute paths, colon-separated."""
    words = value.split(":") if isinstance(value, str) else list(value)
    paths = []
    for word in (w.strip() for w in words):
        if not word:
            continue
        if not os.path.isabs(word):
            raise ValueError(f"{word!r} is not an absolute path")
        paths.append(Path(os.path.normpath(word)))
    return tuple(paths)
