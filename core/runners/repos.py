"""Where task repositories may come from, and the environment git reaches them with.

People name a task's repository and Shepherd's server fetches it. Unchecked, that makes Shepherd a confused
deputy: anyone who may start a task could have the server fetch `http://127.0.0.1:<port>/…` or ssh to a
host with the server user's keys. The rules:

- `owner/name` is cloned from the configured code host (SHEPHERD_GIT_BASE_URL), and so is a URL under it
  (same scheme, host and port, below its path): the admin chose that host;
- any other URL only when its host is allowed by SHEPHERD_REPO_HOSTS. A host named there exactly (a name or
  an address) is trusted as named: an internal Git server may well be private. A host allowed only by a
  pattern (`*.example.com`, or `*` for any host) must resolve to public addresses, every one of them, IPv4
  and IPv6 (embedded IPv4 included); this is checked when the task is created and again right before git
  connects (DNS can change in between), and git is pinned to the addresses checked (http.curloptResolve,
  ssh's HostName), with no redirects followed;
- local paths are for admins only (core.tasks.service);
- git runs with nothing of the server user's: no HOME (no ~/.gitconfig, ~/.netrc, ~/.git-credentials), no
  system or global config (no credential helpers), no SSH agent, ssh in batch mode without the user's
  config or keys (`git_env`).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import shlex
import socket
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from core import environ
from core.errors import ShepherdError, ValidationFailed

HOSTS_SETTING = "SHEPHERD_REPO_HOSTS"
RESOLVE_TIMEOUT_S = 10.0
DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22, "git": 9418}

# ssh as git's transport: nothing of the server user's (no ~/.ssh/config, keys, agent, known hosts, control
# sockets, proxies), never a prompt. Host keys must be known system-wide (/etc/ssh/ssh_known_hosts).
SSH_COMMAND = (
    "ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityFile=/dev/null",
    "-o", "CertificateFile=/dev/null", "-o", "IdentityAgent=none", "-o", "UserKnownHostsFile=none",
    "-o", "StrictHostKeyChecking=yes", "-o", "ForwardAgent=no", "-o", "ControlMaster=no", "-o", "ControlPath=none",
    "-o", "ProxyCommand=none", "-o", "ProxyJump=none", "-o", "PermitLocalCommand=no", "-o", "UpdateHostKeys=no",
    "-o", "ClearAllForwardings=yes",
)
# Only these transports: never `ext::` (it runs commands), whatever anyone's git config says.
GIT_PROTOCOLS = "https:http:ssh:git:file"


class RepoRefused(ShepherdError):
    """A repository Shepherd will not fetch from (or push to): its host is not allowed."""

    code = "REPO_HOST_NOT_ALLOWED"
    status = 400


def git_env(extra: Mapping[str, str] | None = None, *, config: Mapping[str, str] | None = None,
            ssh_options: Sequence[str] = ()) -> dict[str, str]:
    """The whole environment of a git process Shepherd runs: no prompt, no credentials and no config of the
    server's user. `config` adds git settings for this one process (as `-c` would, but off the command
    line, where other users of the machine could read them); `ssh_options` are added to ssh's."""
    env = environ.passed(environ.GIT)
    env.update({
        "HOME": "/dev/null",  # git and curl read ~/.gitconfig, ~/.netrc, ~/.git-credentials from here
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_ATTR_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "SSH_ASKPASS": "true", "SSH_ASKPASS_REQUIRE": "never",
        "GIT_ALLOW_PROTOCOL": GIT_PROTOCOLS,
        "GIT_SSH_VARIANT": "ssh", "GIT_SSH_COMMAND": shlex.join([*SSH_COMMAND, *ssh_options]),
    })
    entries = {"credential.helper": "", **(config or {})}  # an empty helper clears the list: no helper runs
    env["GIT_CONFIG_COUNT"] = str(len(entries))
    for i, (key, value) in enumerate(entries.items()):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
    env.update(extra or {})
    return env


# --- reading a repository reference ------------------------------------------------------------------

_REPO_SHORT = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_URL = re.compile(r"^(https?|ssh|git)://|^[\w.-]+@[\w.-]+:")


def repo_kind(repo: str) -> str:
    """`url`, `github` (owner/name on the code host) or `path` (a local repository)."""
    if repo.startswith(("/", "./", "../", "~", "file:")):
        return "path"
    if _URL.match(repo):
        return "url"
    if _REPO_SHORT.match(repo):
        return "github"
    raise ValidationFailed(
        f"cannot read repo {repo!r}: use owner/name, a git URL, or a local path (/path, ./path)",
        code="INVALID_REPO",
    )


_SCP = re.compile(r"^([\w.-]+)@([^:/]+):(.*)$")
_AUTHORITY = re.compile(r"^(?:[A-Za-z0-9._~!$&'()*+,;=:%-]*@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(\d{1,5}))?$")
_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


@dataclass(frozen=True)
class Remote:
    """Where a repository URL makes git connect."""

    scheme: str  # https, http, ssh (scp-like `user@host:path` too), git
    host: str  # lower-case; an IPv6 address without brackets
    port: int
    path: str

    @property
    def literal(self) -> bool:
        return _address(self.host) is not None


def _bad(url: str, why: str) -> ValidationFailed:
    return ValidationFailed(f"cannot use repo {url!r}: {why}", code="INVALID_REPO")


def check_host(host: str, url: str) -> str:
    """A host name git and curl read the same way we do: a canonical address, or DNS labels whose last
    one is not all digits (so `2130706433` or `0x7f.1`, which resolvers read as 127.0.0.1, are refused)."""
    host = host.lower().removesuffix(".")
    if _address(host) is not None:
        return str(_address(host))
    labels = host.split(".")
    if not host or len(host) > 253 or not all(_LABEL.match(label) for label in labels) \
            or re.fullmatch(r"[0-9x]+", labels[-1]):
        raise _bad(url, f"{host!r} is not a host name")
    return host


def parse_remote(url: str) -> Remote:
    """The scheme, host and port of a git URL (`https://`, `http://`, `ssh://`, `git://` or `user@host:path`)."""
    if any(c.isspace() or ord(c) < 0x20 or c in "\\\x7f" for c in url):
        raise _bad(url, "it holds spaces, control characters or backslashes")
    scp = _SCP.match(url)
    if scp and "://" not in url:
        return Remote("ssh", check_host(scp.group(2), url), DEFAULT_PORTS["ssh"], scp.group(3))
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed [ in the host
        raise _bad(url, str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise _bad(url, "use https://, http://, ssh://, git:// or user@host:path")
    authority = _AUTHORITY.match(parts.netloc)
    if authority is None or parts.netloc.count("@") > 1:
        raise _bad(url, "its host part is not user@host:port")
    if "@" in parts.netloc and scheme in ("http", "https"):  # a token in the URL would be shown in chat and logs
        raise ValidationFailed("a repository URL may not carry credentials (user:password@ or token@): they would be "
                               "shown in chat and logs and given to the agent", code="INVALID_REPO")
    raw_host = authority.group(1).strip("[]")
    port = int(authority.group(2)) if authority.group(2) else DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise _bad(url, f"port {port} is out of range")
    return Remote(scheme, check_host(raw_host, url), port, parts.path)


# --- addresses -----------------------------------------------------------------------------------------

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def _embedded_v4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address reaches too: mapped, 6to4, Teredo, NAT64, IPv4-compatible."""
    found = [a for a in (addr.ipv4_mapped, addr.sixtofour) if a is not None]
    if addr.teredo is not None:
        found += list(addr.teredo)
    low32 = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr in ipaddress.IPv6Network("64:ff9b::/96") or addr in ipaddress.IPv6Network("::/96"):
        found.append(low32)
    return found


def not_public(addr: IPAddress) -> str | None:
    """Why `addr` is not a public unicast address (loopback, private, link-local, …), or None if it is."""
    candidates: list[IPAddress] = [addr]
    if isinstance(addr, ipaddress.IPv6Address):
        candidates += _embedded_v4(addr)
    for a in candidates:
        site_local = isinstance(a, ipaddress.IPv6Address) and a.is_site_local  # fec0::/10, deprecated yet routed
        for why, hit in (("unspecified", a.is_unspecified), ("loopback", a.is_loopback),
                         ("link-local", a.is_link_local), ("site-local", site_local), ("multicast", a.is_multicast),
                         ("private", a.is_private), ("reserved", a.is_reserved)):
            if hit:
                return f"a {why} address" + (f" (it embeds {a})" if a is not addr else "")
        if not a.is_global:  # e.g. 100.64.0.0/10, carrier-grade NAT
            return "not a public address" + (f" (it embeds {a})" if a is not addr else "")
    return None


@functools.cache
def git_version_text() -> str:
    """What `git --version` says of the git on PATH ("git version 2.39.5"), or why it could not say."""
    try:
        return subprocess.run(["git", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"no git ({type(exc).__name__})"


def git_pins_http() -> bool:
    """Does this git have http.curloptResolve (2.37 and newer), which pins a host to the checked address?"""
    found = re.search(r"(\d+)\.(\d+)", git_version_text())
    return found is not None and (int(found.group(1)), int(found.group(2))) >= (2, 37)


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for `host` (both families)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# --- the rules -----------------------------------------------------------------------------------------

def parse_hosts(value: str | Sequence[str]) -> tuple[str, ...]:
    """SHEPHERD_REPO_HOSTS: comma-separated host names or addresses, `*.domain` patterns, or `*`."""
    words = value.replace(" ", ",").split(",") if isinstance(value, str) else list(value)
    hosts: list[str] = []
    for word in (w.strip() for w in words):
        if not word:
            continue
        if word == "*":
            hosts.append(word)
            continue
        pattern = word.startswith("*.")
        name = word[2:] if pattern else word.strip("[]")
        try:
            checked = check_host(name, word)
        except ValidationFailed:
            raise ValidationFailed(
                f"{word!r} is not a host name, an address, *.domain or *", code="INVALID_SETTING"
            ) from None
        hosts.append(f"*.{checked}" if pattern else checked)
    return tuple(dict.fromkeys(hosts))


@dataclass(frozen=True)
class Reach:
    """How git reaches one repository: the URL, and what pins it to the addresses that were checked."""

    url: str
    config: Mapping[str, str] = field(default_factory=dict)  # git settings for the git process
    ssh_options: tuple[str, ...] = ()

    def env(self, extra_config: Mapping[str, str] | None = None) -> dict[str, str]:
        return git_env(config={**self.config, **(extra_config or {})}, ssh_options=self.ssh_options)


@dataclass(frozen=True)
class RepoRules:
    """Which repositories Shepherd fetches and pushes (see the module's docstring)."""

    code_host: str = "https://github.com"  # SHEPHERD_GIT_BASE_URL: a URL, or a folder of bare repositories
    hosts: tuple[str, ...] = ()  # SHEPHERD_REPO_HOSTS, as parse_hosts returns it
    resolve: Resolver = system_resolve  # DNS: the network boundary

    def on_code_host(self, url: str) -> bool:
        base = urlsplit(self.code_host)
        if base.scheme.lower() not in DEFAULT_PORTS or not base.hostname:
            return False
        try:
            remote = parse_remote(url)
            port = base.port or DEFAULT_PORTS[base.scheme.lower()]
        except (ValidationFailed, ValueError):
            return False
        prefix = base.path.rstrip("/") + "/"
        return (remote.scheme, remote.host, remote.port) == (base.scheme.lower(), base.hostname.lower(), port) \
            and remote.path.startswith(prefix)

    def allowed_by(self, host: str) -> str | None:
        """The SHEPHERD_REPO_HOSTS entry that allows `host`: itself (named exactly), a pattern, or None."""
        if host in self.hosts:
            return host
        for entry in self.hosts:
            if entry == "*" or (entry.startswith("*.") and host.endswith(entry[1:])):
                return entry
        return None

    async def reach(self, repo: str) -> Reach:
        """How git may reach the task repository `repo` (owner/name, a URL, or an admin's local path), or
        RepoRefused. Called when the task is created and again right before each clone or push."""
        kind = repo_kind(repo)
        if kind == "github":
            return Reach(f"{self.code_host.rstrip('/')}/{repo}.git")
        if kind == "path" or self.on_code_host(repo):
            return Reach(repo)
        remote = parse_remote(repo)
        entry = self.allowed_by(remote.host)
        if entry is None:
            raise RepoRefused(
                f"Shepherd does not fetch repositories from {remote.host}: owner/name repositories come from "
                f"{self.code_host}; an admin can allow other hosts with {HOSTS_SETTING} (comma-separated host names)"
            )
        no_redirects = {"http.followRedirects": "false"}  # a redirect would lead git past this check
        if entry == remote.host:
            return Reach(repo, no_redirects)  # named exactly by an admin: trusted as named, private or not
        if remote.scheme not in ("http", "https", "ssh") and not remote.literal:
            # git:// has no way to pin the address checked here: git would resolve the name again itself
            raise RepoRefused(f"{remote.scheme}:// repositories come only from hosts named exactly in {HOSTS_SETTING} "
                              f"({remote.host} is allowed there by {entry!r})")
        addresses = await self._public_addresses(remote)
        if remote.literal:
            return Reach(repo, no_redirects)  # nothing to resolve, nothing to pin
        if remote.scheme in ("http", "https"):
            if not await asyncio.to_thread(git_pins_http):
                raise RepoRefused(f"this git ({git_version_text()}) cannot pin a host to the address Shepherd "
                                  f"checked (http.curloptResolve needs git 2.37): name {remote.host} exactly in "
                                  f"{HOSTS_SETTING}, or upgrade git")
            pinned = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
            return Reach(repo, {**no_redirects, "http.curloptResolve": f"{remote.host}:{remote.port}:{pinned}"})
        return Reach(repo, no_redirects, ("-o", f"HostName={addresses[0]}", "-o", f"HostKeyAlias={remote.host}"))

    async def _public_addresses(self, remote: Remote) -> list[str]:
        try:
            found = [remote.host] if remote.literal else \
                await asyncio.wait_for(self.resolve(remote.host, remote.port), RESOLVE_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:  # ValueError: a name the IDNA codec refuses
            raise ValidationFailed(f"cannot resolve the repository host {remote.host}: {exc}",
                                   code="INVALID_REPO") from None
        addresses = [a for a in (_address(text) for text in found) if a is not None]
        if not addresses:
            raise ValidationFailed(f"the repository host {remote.host} has no address", code="INVALID_REPO")
        for addr in addresses:
            why = not_public(addr)
            if why is not None:
                raise RepoRefused(
                    f"{remote.host} resolves to {addr}, {why}: Shepherd reaches private addresses only for hosts "
                    f"named exactly in {HOSTS_SETTING}"
                )
        return [str(a) for a in addresses]
