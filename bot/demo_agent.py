#!/usr/bin/env python3
"""A coding-agent CLI for tests and demos: it behaves like `claude -p`, with no model and no network.

    demo_agent.py [--here] [--session-id ID] PROMPT    first turn
    demo_agent.py [--here] --resume ID PROMPT          a follow-up turn of session ID
    demo_agent.py --version | --help

It reads its prompt, prints progress, edits files in its working directory and exits. It edits only a
directory Shepherd made for it (its working directory is $SHEPHERD_WORKSPACE, as in every task Shepherd
runs), or the working directory when told to with --here; anywhere else it refuses (exit 2) and touches
nothing. Options come before the prompt (`--model M` too: it says which model it was asked for). Bracketed
words in the prompt make it misbehave the way real agents do:

    [fail]        exit 3 after an error message
    [deny]        print a permission denial and exit 0 (an honest runner must not call that success)
    [budget]      print a credit/limit message and exit 0
    [hang]        print one line, then go silent forever (idle timeout)
    [ask]         ask a question and end the turn; the next turn (--resume) reads the answer
    [long N]      print a tick every 0.1 s for N seconds (pause/resume/stop), default 30
    [lines N]     print N lines as fast as it can (log throughput)
    [sleep S]     wait S seconds before starting
    [spawn]       start a child process that keeps printing (a process-group kill must take it too)
    [env]         write its environment to env.json (secrets must not be in it)
    [stdin]       read standard input until end of file, then go on
    [noedit]      change no file
    [net PORT]    try to reach 127.0.0.1:PORT and say whether it could (sandbox tests)
    [see PATH]    say whether PATH exists
    [touch PATH]  try to create PATH and say whether it could
    [confirm ACTION [RISK]]  run `shepherd ask ACTION` (as an agent hook would) and say what people decided
    [cost USD]    end with a JSON result line reporting what the turn cost, as `claude -p --output-format json`
    [loop-done N]     in a loop (its prompt says "iteration I of M"): at iteration I >= N, `shepherd loop done`
    [loop-blocked N]  likewise `shepherd loop blocked`

Standard library only: it must run wherever the runner runs, sandboxed or not.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

VERSION = "demo-agent 1.0.0"
# Like real agents (~/.claude), it keeps its sessions outside the work: inside .git, which no diff counts.
STATE_DIR = Path(".git/demo-agent") if Path(".git").is_dir() else Path(".demo-agent")


def say(text: str) -> None:
    print(text, flush=True)


def directive(prompt: str, name: str) -> str | None:
    """`[long 5]` -> "5"; `[hang]` -> ""; absent -> None."""
    match = re.search(r"\[" + name + r"(?:\s+([^\]]*))?\]", prompt)
    if match is None:
        return None
    return (match.group(1) or "").strip()


def every(prompt: str, name: str) -> list[str]:
    """The arguments of each `[name ARG]` in the prompt."""
    return [m.strip() for m in re.findall(r"\[" + name + r"\s+([^\]]+)\]", prompt)]


def number(prompt: str, name: str, default: float) -> float:
    value = directive(prompt, name)
    try:
        return float(value) if value else default
    except ValueError:
        return default


def load_session(session: str) -> dict[str, object]:
    path = STATE_DIR / f"{session}.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    return {"turns": 0, "question": None}


def save_session(session: str, state: dict[str, object]) -> None:
    STATE_DIR.mkdir(exist_ok=True)
    (STATE_DIR / f"{session}.json").write_text(json.dumps(state))


def edit_files(prompt: str, turn: int) -> None:
    notes = Path("NOTES.md")
    with notes.open("a") as fh:
        fh.write(f"- turn {turn}: {prompt}\n")
    say("edited NOTES.md")
    readme = Path("README.md")
    if readme.exists():
        readme.write_text(readme.read_text() + f"\nTouched by the demo agent (turn {turn}).\n")
        say("edited README.md")


USAGE = __doc__.split("\n\n", 2)[1] if __doc__ else ""


def refusal(here: bool) -> str | None:
    """Why it may not edit its working directory, or None when it may: a workspace Shepherd made for it
    (SHEPHERD_WORKSPACE names it), or anywhere with --here."""
    if here:
        return None
    workspace = os.environ.get("SHEPHERD_WORKSPACE")
    try:
        if workspace and os.path.samefile(workspace, "."):
            return None
    except OSError:
        pass
    told = f"SHEPHERD_WORKSPACE is {workspace}" if workspace else "SHEPHERD_WORKSPACE is not set"
    return (f"demo-agent: {Path.cwd()} is not a workspace Shepherd made for it ({told}): it edits files only "
            "there, or in the working directory when run with --here")


def loop_mark(prompt: str) -> None:
    """`[loop-done N]` / `[loop-blocked N]`: at a loop's iteration N or later, mark it through `shepherd loop`."""
    found = re.search(r"iteration (\d+) of (\d+)", prompt)
    if found is None:
        return
    iteration = int(found.group(1))
    for mark in ("done", "blocked"):
        at = directive(prompt, f"loop-{mark}")
        if at is not None and iteration >= int(at or 1):
            argv = ["shepherd", "loop", mark, "--summary", f"the demo agent is {mark} at iteration {iteration}"]
            if mark == "blocked":
                argv += ["--next", "a person must grant access"]
            code = subprocess.run(argv, check=False).returncode
            say(f"loop {mark} at iteration {iteration}: {'marked' if code == 0 else f'not marked (exit {code})'}")
            return


def main(argv: list[str]) -> int:
    session = model = None
    resume = here = False
    args = list(argv)
    while args:  # options first: the prompt begins at the first word that is not one
        word = args[0]
        if word in ("--version", "-v"):
            say(VERSION)
            return 0
        if word in ("--help", "-h"):
            say((__doc__ or "").strip())
            return 0
        if word in ("--session-id", "--resume") and len(args) > 1:
            session, resume = args[1], word == "--resume"
            del args[:2]
        elif word == "--model" and len(args) > 1:
            model = args[1]
            del args[:2]
        elif word in ("--here", "-p", "--"):
            here = here or word == "--here"
            del args[0]
            if word == "--":
                break
        else:
            break
    if not args:
        print(f"demo-agent: a prompt is required\nusage:\n{USAGE}", file=sys.stderr)
        return 2
    refused = refusal(here)
    if refused is not None:
        print(refused, file=sys.stderr)
        return 2
    prompt = " ".join(args)
    session = session or str(uuid.uuid4())
    state = load_session(session)
    turn = int(str(state["turns"])) + 1
    state["turns"] = turn

    if resume:
        say(f"resuming session {session} (turn {turn})")
        if state.get("question"):
            say(f"answer to '{state['question']}': {prompt}")
            state["question"] = None
    else:
        say(f"session {session}")
    if model:
        say(f"model: {model}")
    time.sleep(number(prompt, "sleep", 0))
    say(f"reading the prompt: {prompt[:200]}")

    if directive(prompt, "stdin") is not None:
        data = sys.stdin.read()
        say(f"read {len(data)} bytes of input")
    if directive(prompt, "env") is not None:
        Path("env.json").write_text(json.dumps(dict(os.environ), indent=1))
        say(f"wrote env.json ({len(os.environ)} variables)")
    if directive(prompt, "spawn") is not None:
        child = "import time\nwhile True:\n    print('child tick', flush=True)\n    time.sleep(0.2)\n"
        proc = subprocess.Popen([sys.executable, "-c", child])
        Path("child.pid").write_text(str(proc.pid))
        say(f"started helper process {proc.pid}")
    port = directive(prompt, "net")
    if port:
        try:
            socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()
            say(f"network: reached 127.0.0.1:{port}")
        except OSError as exc:
            say(f"network: unreachable ({exc.__class__.__name__})")
    for wanted in every(prompt, "confirm"):
        action, _, risk = wanted.partition(" ")
        argv = ["shepherd", "ask", action, "--summary", f"the demo agent wants to {action}"]
        if risk.strip():
            argv += ["--risk", risk.strip()]
        say(f"asking people before {action}")
        code = subprocess.run(argv, check=False).returncode
        verdict = {0: "approved", 1: "rejected", 2: "expired"}.get(code, f"could not ask (exit {code})")
        say(f"ask {action}: {verdict}")
    for seen in every(prompt, "see"):
        say(f"see {seen}: {'exists' if Path(seen).exists() else 'missing'}")
    for touched in every(prompt, "touch"):
        try:
            Path(touched).write_text("x")
            say(f"touch {touched}: written")
        except OSError as exc:
            say(f"touch {touched}: refused ({exc.__class__.__name__})")
    loop_mark(prompt)
    if directive(prompt, "fail") is not None:
        print("error: the test suite does not compile (demo failure)", file=sys.stderr, flush=True)
        save_session(session, state)
        return 3
    if directive(prompt, "hang") is not None:
        say("thinking very hard…")
        while True:
            time.sleep(3600)
    if directive(prompt, "lines") is not None:
        for i in range(int(number(prompt, "lines", 1000))):
            print(f"line {i}: the quick brown fox jumps over the lazy dog", flush=False)
        sys.stdout.flush()
    if directive(prompt, "long") is not None:
        deadline = time.monotonic() + number(prompt, "long", 30)
        tick = 0
        while time.monotonic() < deadline:
            tick += 1
            say(f"tick {tick}")
            time.sleep(0.1)

    say("planning the change")
    if directive(prompt, "noedit") is None:
        edit_files(prompt, turn)
    if directive(prompt, "ask") is not None:
        question = "Which database should the tests use?"
        state["question"] = question
        save_session(session, state)
        say(f"QUESTION: {question}")
        return 0
    save_session(session, state)
    if directive(prompt, "deny") is not None:
        say("Claude requested permissions to use Bash, but you haven't granted it yet.")
        say("done (some steps were skipped)")
        return 0
    if directive(prompt, "budget") is not None:
        say("Credit balance is too low")
        return 0
    say(f"done: turn {turn} finished")
    cost = directive(prompt, "cost")
    if cost:
        say(json.dumps({"type": "result", "subtype": "success", "is_error": False, "num_turns": turn,
                        "result": f"turn {turn} finished", "session_id": session, "total_cost_usd": float(cost)}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
