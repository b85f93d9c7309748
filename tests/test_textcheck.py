"""Text at the door: control characters are refused in names and free text, over REST and in the console alike,
and the console prints text stored before that (or an agent's own output) without obeying it."""

from __future__ import annotations

import io
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, update
from sqlmodel import col

from adapters.console.channel import ConsoleChannel
from adapters.console.repl import Console
from adapters.console.terminal import safe
from core.channels.outbox import Message
from core.errors import ValidationFailed
from core.people.access import Principal, Role
from core.shepherd import Shepherd
from core.store.models import Task, TaskLog
from core.textcheck import clean_name, free_text, name_text
from tests.test_rest_coder import ME, Rig, served

ADMIN = Principal.for_role("acme", "alice", Role.ADMIN, "console", user_id="user-alice")
ESC = "\x1b[2J\x1b]0;pwned\x07"  # clear the screen, retitle the terminal


@pytest.mark.parametrize("text", ["a\x00b", "a\x1b[31mb", "bell\x07", "csi\x9b2J", "del\x7f", "back\bspace",
                                  "form\x0cfeed", "vt\x0b"])
def test_control_characters_are_refused_in_free_text_and_names(text: str) -> None:
    bad = next(c for c in text if unicodedata.category(c) == "Cc")
    for check in (free_text, name_text):
        with pytest.raises(ValidationFailed) as refused:
            check(text, "the prompt")
        said = refused.value.message
        assert refused.value.code == "VALIDATION_ERROR" and said.startswith("the prompt contains")
        assert f"U+{ord(bad):04X}" in said and f"position {text.index(bad) + 1}" in said


def test_free_text_keeps_line_breaks_and_tabs_and_normalises_carriage_returns() -> None:
    assert free_text("one\ttwo\r\nthree\rfour\n", "x") == "one\ttwo\nthree\nfour\n"
    assert free_text("ünïcödé ✓ 日本語", "x") == "ünïcödé ✓ 日本語"
    for text in ("two\nlines", "a\ttab", "cr\r"):
        with pytest.raises(ValidationFailed, match="a name is one line"):
            name_text(text, "the agent name")
    assert clean_name("Ana\x1b[31m Lopez\x00") == "Ana[31m Lopez"


# --- REST --------------------------------------------------------------------------------------------


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with served(db_url, tmp_path, runner=False) as r:
        yield r


async def _refused(rig: Rig, method: str, path: str, body: dict[str, Any], fragment: str) -> None:
    status, got = await rig.call(method, path, body)
    assert (status, got["code"]) == (400, "VALIDATION_ERROR"), (path, body, got)
    assert fragment in got["error"], got


async def test_rest_refuses_control_characters_in_names_and_prompts(rig: Rig) -> None:
    await _refused(rig, "POST", ME, {"input": "hello\x00world", "agent": "demo"}, "NUL")  # at the door
    await _refused(rig, "POST", ME, {"input": f"fix it {ESC}", "agent": "demo"}, "the prompt contains")
    await _refused(rig, "POST", ME, {"input": "x", "agent": "demo", "display_name": "two\nlines"},
                   "the display name contains a control character, U+000A (a line break)")
    await _refused(rig, "POST", "/api/agents", {"name": "evil\x00agent", "type": "coordinator"}, "NUL")
    await _refused(rig, "POST", "/api/agents", {"name": f"agent{ESC}", "type": "coordinator"}, "the agent name")
    await _refused(rig, "POST", "/api/agents", {"name": "tab\tbed", "type": "coordinator"}, "U+0009 (a tab)")
    await _refused(rig, "POST", "/api/agent-types", {"type": "audit", "lifecycle": "ephemeral",
                                                      "description": f"scans {ESC}"}, "the description")
    assert (await rig.call("GET", "/api/agents"))[1] == [], "nothing refused was stored"

    task = await rig.create("a prompt\r\nwith lines\tand a tab")
    assert task["initial_prompt"] == "a prompt\nwith lines\tand a tab", "CR LF is a line break, kept as LF"
    assert task["display_name"] == "a prompt"
    await _refused(rig, "PATCH", f"{ME}/{task['id']}/input", {"input": f"better {ESC}"}, "the input")


async def test_rest_refuses_control_characters_in_what_people_and_agents_say_about_a_decision(rig: Rig) -> None:
    from tests.test_confirmations import gate, pr_plan, started_task
    from tests.test_rest_bad_input import _task_token

    task = await started_task(rig.shepherd, ADMIN)
    conf = await gate(rig.shepherd, task, pr_plan())
    await _refused(rig, "POST", f"/api/confirmations/{conf.code}/decision",
                   {"decision": "reject", "comment": f"no {ESC}"}, "the comment")
    await _refused(rig, "POST", f"/api/coding-agents/confirm/{task.id}",
                   {"approved": False, "override": {"response": "no\x07"}}, "the comment")
    assert (await rig.shepherd.confirmations.get(ADMIN, conf.code)).status == "pending"

    task_id, token = await _task_token(rig)
    auth = {"Authorization": f"Bearer {token}"}
    for body, fragment in (({"action": "db.migrate", "summary": f"migrate {ESC}"}, "the summary"),
                           ({"action": "db.migrate", "summary": "ok", "params": {"table": "users\x1b"}},
                            "parameter table")):
        status, got = await rig.call("POST", f"/api/tasks/{task_id}/confirmations", body, headers=dict(auth))
        assert (status, got["code"]) == (400, "VALIDATION_ERROR") and fragment in got["error"], got


# --- the console ---------------------------------------------------------------------------------------


async def test_the_console_refuses_them_too_with_the_code(shepherd: Shepherd, capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    console = Console(shepherd, ADMIN, out=io.StringIO())
    for line, fragment in ((f'run "fix it {ESC}" --agent demo', "the prompt contains"),
                           ("agent create bell\x07 --type coordinator", "the agent name contains"),
                           ("project create api\x1b", "the project name contains")):
        reply = await console.conversations.command(ADMIN, line)
        assert not reply.ok and reply.data == {"code": "VALIDATION_ERROR"}, (line, reply.text)
        assert fragment in reply.text
        assert not await console.run_one(line)
        err = capsys.readouterr().err
        assert "\x1b" not in err and "\x07" not in err, repr(err)  # the refusal quotes it, escaped
    assert (await shepherd.tasks.list(ADMIN))[1] == 0


async def test_the_console_prints_stored_escape_sequences_harmlessly(shepherd: Shepherd) -> None:
    view = await shepherd.tasks.create(ADMIN, prompt="clean prompt", runtime="demo")
    async with shepherd.db.write() as session:  # as stored before the door was shut, or printed by an agent
        await session.exec(update(Task).where(col(Task.id) == view.task.id).values(
            prompt=f"prompt {ESC}", state_message=f"agent says {ESC}"))
        await session.exec(insert(TaskLog).values(task_id=view.task.id, type="output", content=f"red\x1b[31m {ESC}"))
        await session.exec(insert(TaskLog).values(task_id=view.task.id, type="output", content="over\rwrite"))
    out = io.StringIO()
    console = Console(shepherd, ADMIN, out=out)
    assert await console.run_one(f"task {view.task.name}")
    assert await console.run_one(f"logs {view.task.name}")
    channel = ConsoleChannel("alice", out=out)
    await channel.post("alice", Message(key="k", text=f"approval K7P2 (high): deploy {ESC}", kind="confirmation",
                                        state="pending", code="K7P2", fields={"task": view.task.name}))
    printed = out.getvalue()
    assert not any(ch in printed for ch in "\x1b\x07\r"), repr(printed)
    assert "prompt \\x1b[2J\\x1b]0;pwned\\x07" in printed and "red\\x1b[31m" in printed
    assert "over\\rwrite" in printed and "deploy \\x1b[2J" in printed
    assert safe("lines\nand\ttabs stay") == "lines\nand\ttabs stay"
