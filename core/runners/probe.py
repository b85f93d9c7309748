"""What the agent sandbox really gives on this host: a shell run inside the very sandbox a task gets reports its
capabilities, uid map, network interfaces, whether it can make a namespace of its own and what it can list of
Shepherd's hidden folders. The local runner refuses to start agents where it is weak; `shepherd doctor` prints it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from core.runners.sandbox import SANDBOX_HOME, SandboxView, bwrap_argv, program_roots, within

PROBE_TIMEOUT_S = 20.0
PROBE_PATH = "/usr/bin:/bin"

_PROBE = (
    'grep -E "^Cap(Eff|Prm|Bnd):" /proc/self/status; echo "uid $(id -u)"; '
    'echo "map $(head -n 1 /proc/self/uid_map)"; '
    'echo "net $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " " | tr "\\n" " ")"; '
    'if unshare -U true 2>/dev/null; then echo "nested yes"; else echo "nested no"; fi; '
    'for p in "$@"; do if [ -e "$p" ]; then echo "sees $p $(ls -A "$p" 2>/dev/null | tr "\\n" "/")"; fi; done; '
    'if [ -w /usr ]; then echo "writes /usr"; fi'  # asked, not tried: where the sandbox fails, this is the host
)


@dataclass(frozen=True)
class SandboxReport:
    """What a probe run inside the sandbox found: `strong` when it holds, else `problems` say why."""

    version: str
    uid: str = ""
    user_namespace: bool = False
    capabilities: str = ""
    network: tuple[str, ...] = ()
    nested_namespaces: bool = True
    sees_hidden: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def strong(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        if not self.version:
            return "; ".join(self.problems)
        parts = [
            f"bubblewrap {self.version}",
            f"user namespace: {'yes' if self.user_namespace else 'NO'} (agent uid {self.uid or '?'})",
            f"capabilities: {'none' if self.capabilities == '0' else self.capabilities or '?'}",
            f"network: {'loopback only' if set(self.network) <= {'lo'} else ', '.join(self.network)}",
            f"nested namespaces: {'refused' if not self.nested_namespaces else 'ALLOWED'}",
        ]
        return ", ".join(parts)


def _version(bwrap: str) -> str:
    try:
        out = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip().removeprefix("bubblewrap ").strip() or "?"
    except (OSError, ValueError):
        return "?"


def _probe_argv(bwrap: str, view: SandboxView, scratch: Path) -> tuple[list[str], dict[str, set[str]]]:
    """The probe's command line in the sandbox `view` describes, and what each hidden folder may list: the
    bare path to a program installed below it (a Python under ~/.pyenv) and nothing else."""
    hidden = [os.path.realpath(h) for h in view.hidden]
    roots = [r for p in view.programs for r in program_roots([str(p)], PROBE_PATH, hidden)[1]]
    allowed = {h: {Path(r).relative_to(h).parts[0] for r in roots if within(r, h) and r != h} for h in hidden}
    ws, home = scratch / "ws", scratch / "home"
    ws.mkdir()
    home.mkdir()
    argv = bwrap_argv(bwrap, ["/bin/sh", "-c", _PROBE, "probe", *hidden], cwd=ws, env={"PATH": PROBE_PATH},
                      view=replace(view, home=home, socket=None, tools=None), program=["/bin/sh"])
    return argv, allowed


async def probe(view: SandboxView) -> SandboxReport:
    """Run a shell inside the sandbox `view` describes and report what it can do there."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return SandboxReport("", problems=("bubblewrap is not installed (apt-get install bubblewrap)",))
    version = await asyncio.to_thread(_version, bwrap)
    with tempfile.TemporaryDirectory(prefix="shepherd-probe-") as scratch:
        argv, allowed = await asyncio.to_thread(_probe_argv, bwrap, view, Path(scratch))
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, env={"PATH": PROBE_PATH, "HOME": SANDBOX_HOME}, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
            )
            out, err = await asyncio.wait_for(proc.communicate(), PROBE_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            return SandboxReport(version, problems=(f"bubblewrap could not run: {exc}",))
    if proc.returncode != 0:
        said = (err or out).decode(errors="replace").strip().splitlines()
        why = said[-1] if said else f"exit {proc.returncode}"
        return SandboxReport(version, problems=(f"bubblewrap {version} cannot build the sandbox here: {why}",))
    return _report(version, out.decode(errors="replace"), allowed)


def _report(version: str, text: str, allowed: Mapping[str, set[str]]) -> SandboxReport:
    caps: dict[str, str] = {}
    uid, mapped, nested, writes = "", "", True, False
    network: tuple[str, ...] = ()
    sees: list[str] = []
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if line.startswith("Cap"):
            name, _, bits = line.partition(":")
            caps[name] = bits.strip()
        elif key == "uid":
            uid = value.strip()
        elif key == "map":
            mapped = value.strip()
        elif key == "net":
            network = tuple(value.split())
        elif key == "nested":
            nested = value.strip() == "yes"
        elif key == "sees":
            path, _, listing = value.partition(" ")
            extra = {e for e in listing.split("/") if e} - allowed.get(path, set())
            if extra:
                sees.append(f"{path} ({', '.join(sorted(extra)[:5])})")
        elif key == "writes":
            writes = True
    effective = {int(v or "0", 16) for v in caps.values()}
    capabilities = "0" if caps and effective == {0} else ",".join(f"{k}={v}" for k, v in caps.items())
    userns = bool(mapped) and mapped.split()[:3] != ["0", "0", "4294967295"]
    problems = []
    if not userns:
        problems.append("the agent is not in a user namespace")
    if uid == "0":
        problems.append("the agent runs as uid 0")
    if capabilities != "0":
        problems.append(f"the agent keeps capabilities ({capabilities or 'unreadable'})")
    if set(network) - {"lo"}:
        problems.append(f"the agent has network interfaces: {', '.join(network)}")
    if nested:
        problems.append("the agent can create user namespaces of its own (bubblewrap 0.8+ has --disable-userns)")
    if sees:
        problems.append(f"the agent sees {', '.join(sees)}")
    if writes:
        problems.append("the agent can write to /usr")
    return SandboxReport(version, uid=uid, user_namespace=userns, capabilities=capabilities, network=network,
                         nested_namespaces=nested, sees_hidden=tuple(sees), problems=tuple(problems))


