"""`shepherd ask`: an agent asks people before it acts, and waits for their decision.

    shepherd ask ACTION --summary "what and why" [--risk low|medium|high|critical] [--param key=value]...
    shepherd loop done|blocked --summary "what was done, or why not" [--next "what a person must do"]

`shepherd loop` is for a loop session's agent: the goal is reached (done) or cannot be reached without
people (blocked); the loop ends so when the iteration's turn ends. Exit 0 when Shepherd took it, 3 otherwise.

Run inside a Shepherd task (it reads SHEPHERD_URL, SHEPHERD_TASK_ID and SHEPHERD_TASK_TOKEN, which every
turn's environment carries; in the sandbox SHEPHERD_URL is `unix:<socket path>`). The task's autonomy
level decides first: an action it may take runs at once (exit 0), one it may not is refused at once
(exit 1), the rest wait for approvers. Exit status:

    0  approved          1  rejected (or void)          2  expired          3  could not ask

Standard library only, and loaded without the rest of Shepherd: agent hooks call it often and it must
start fast.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from typing import Any, NoReturn

APPROVED, REJECTED, EXPIRED, ERROR = 0, 1, 2, 3
WAIT_S = 25  # one long poll
UNREACHABLE_GIVE_UP_S = 120.0


class AskError(Exception):
    pass


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket: how a sandboxed agent (no network) reaches Shepherd."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


def _unix_request(method: str, url: str, headers: dict[str, str], data: bytes | None,
                  timeout: float) -> dict[str, Any]:
    """`unix:/run/shepherd/ask.sock/api/…`: the socket path, then the route."""
    path, sep, route = url.removeprefix("unix:").partition("/api/")
    conn = _UnixConnection(path, timeout)
    try:
        conn.request(method, f"/api/{route}" if sep else "/", body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    if resp.status >= 400:
        try:
            detail = json.loads(raw or b"{}").get("error") or resp.reason
        except ValueError:
            detail = resp.reason
        raise AskError(f"Shepherd answered {resp.status}: {detail}")
    return dict(json.loads(raw or b"{}"))


def _request(method: str, url: str, token: str, body: dict[str, Any] | None = None,
             timeout: float = 10.0) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    if url.startswith("unix:"):
        return _unix_request(method, url, {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                                           "Accept": "application/json"}, data, timeout)
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json",
    })
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (the URL is Shepherd's own)
            return dict(json.loads(resp.read() or b"{}"))
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read() or b"{}").get("error") or exc.reason
        except ValueError:
            detail = exc.reason
        raise AskError(f"Shepherd answered {exc.code}: {detail}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2, which here means "expired"
        self.print_usage(sys.stderr)
        print(f"shepherd ask: {message}", file=sys.stderr)
        sys.exit(ERROR)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="shepherd ask", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="exit status: 0 approved, 1 rejected, 2 expired, 3 could not ask")
    p.add_argument("action", help="what the agent wants to do: pr.merge, deploy.staging, rm.data, …")
    p.add_argument("--summary", required=True, help="what exactly, and why (people decide on this)")
    p.add_argument("--risk", choices=("low", "medium", "high", "critical"),
                   help="your own estimate; it can raise the policy's risk, never lower it")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a detail of the plan (part of what is approved)")
    p.add_argument("--quiet", action="store_true", help="print nothing; the exit status says it all")
    return p


def _loop_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="shepherd loop", description="mark a loop session's goal reached (done) or blocked")
    p.add_argument("mark", choices=("done", "blocked"))
    p.add_argument("--summary", required=True, help="what this iteration did, or why the loop cannot go on")
    p.add_argument("--next", help="what a person must do next (for blocked)")
    return p


def loop_main(argv: list[str] | None = None) -> int:
    """`shepherd loop done|blocked --summary TEXT [--next ACTION]`."""
    args = _loop_parser().parse_args(argv)
    base, task, token = (os.environ.get(k, "") for k in ("SHEPHERD_URL", "SHEPHERD_TASK_ID", "SHEPHERD_TASK_TOKEN"))
    if not (base and task and token):
        print("shepherd loop: not inside a Shepherd task: SHEPHERD_URL, SHEPHERD_TASK_ID and SHEPHERD_TASK_TOKEN "
              "must be set", file=sys.stderr)
        return ERROR
    body: dict[str, Any] = {"status": args.mark, "summary": args.summary}
    if args.next:
        body["next"] = args.next
    try:
        out = _request("POST", f"{base.rstrip('/')}/api/tasks/{task}/loop", token, body)
    except (AskError, OSError, http.client.HTTPException) as exc:
        print(f"shepherd loop: could not mark the loop: {exc}", file=sys.stderr)
        return ERROR
    print(f"shepherd loop: iteration {out.get('iteration')} marked {args.mark}; the loop is {out.get('status')} "
          "when this turn ends", file=sys.stderr, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    if argv is not None and argv[:1] == ["loop"]:  # the launcher passes the command's own name first
        return loop_main(argv[1:])
    if argv is not None and argv[:1] == ["ask"]:
        argv = argv[1:]
    args = _parser().parse_args(argv)

    def say(text: str) -> None:
        if not args.quiet:
            print(f"shepherd ask: {text}", file=sys.stderr, flush=True)

    base, task, token = (os.environ.get(k, "") for k in ("SHEPHERD_URL", "SHEPHERD_TASK_ID", "SHEPHERD_TASK_TOKEN"))
    if not (base and task and token):
        say("not inside a Shepherd task: SHEPHERD_URL, SHEPHERD_TASK_ID and SHEPHERD_TASK_TOKEN must be set")
        return ERROR
    params: dict[str, str] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            say(f"--param takes KEY=VALUE, not {item!r}")
            return ERROR
        params[key] = value
    url = f"{base.rstrip('/')}/api/tasks/{task}/confirmations"
    body: dict[str, Any] = {"action": args.action, "summary": args.summary, "params": params}
    if args.risk:
        body["risk"] = args.risk
    try:
        conf = _request("POST", url, token, body)
    except (AskError, OSError, http.client.HTTPException) as exc:
        say(f"could not ask: {exc}")
        return ERROR
    code = conf.get("code", "?")
    if conf.get("status") == "pending":
        say(f"{code}: {args.action} ({conf.get('risk')} risk) waits for people; "
            f"expires {conf.get('expiresAt', '?')}")
    unreachable_since: float | None = None
    while conf.get("status") == "pending" or conf.get("held"):
        try:
            conf = _request("GET", f"{url}/{code}?wait={WAIT_S}", token, timeout=WAIT_S + 15)
            unreachable_since = None
        except AskError as exc:
            say(f"could not read the decision: {exc}")
            return ERROR
        except (OSError, http.client.HTTPException) as exc:  # Shepherd restarting: the confirmation survives
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > UNREACHABLE_GIVE_UP_S:
                say(f"Shepherd unreachable for {UNREACHABLE_GIVE_UP_S:.0f} s: {exc}")
                return ERROR
            time.sleep(2)
    status = conf.get("status")
    who = f" by {conf['decidedBy']}" if conf.get("decidedBy") else ""
    where = f" from {conf['decidedVia']}" if conf.get("decidedVia") not in (None, "", "policy") else ""
    reason = f": {conf['reason']}" if conf.get("reason") else ""
    say(f"{code} {status}{who}{where}{reason}")
    return {"approved": APPROVED, "expired": EXPIRED}.get(str(status), REJECTED)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
