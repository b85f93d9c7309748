"""Slack text is escaped everywhere: nothing an agent prints or asks, nothing a person types, no name reaches Slack
as a live ping (<!channel>, <@U…>) or a disguised link (<url|label>), in blocks or in the notification text;
and what is escaped is escaped once (a literal `&amp;` shows as `&amp;`, not as `&`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from adapters.slack.blocks import escape, moved_note, moved_root_text, render, root_text
from adapters.slack.items import unescape
from core.channels.outbox import Button, Message
from core.commands.registry import build_registry
from tests import test_slack
from tests.test_slack import CONSOLE, SlackWorld, _actions

slack = test_slack.slack  # the fixture: the web app, the fake Slack, a task runner

HOSTILE = "<!channel> see <https://evil.example|the docs> & ask <@U0ABC123> (&amp; <#C1>)"
LIVE = re.compile(r"<(?:!|#|@|https?:|mailto:)")  # what Slack would turn into a ping or a link


def _strings(value: Any) -> list[str]:
    """Every string in a rendered message (blocks are nested dicts and lists)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


# --- render: every field of every kind -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["notice", "reply", "confirmation", "progress", "outcome"])
@pytest.mark.parametrize("state", ["pending", "approved"])
def test_every_text_of_every_message_is_escaped_exactly_once(kind: str, state: str) -> None:
    message = Message(key="k", text=HOSTILE, kind=kind, state=state, code="K7P2",
                      fields={HOSTILE: HOSTILE, "requested by": "<!here>"}, detail=f"line 1\n{HOSTILE}",
                      more=f"logs {HOSTILE}",
                      buttons=(Button(f"Approve {HOSTILE}", "approve", "conf-1", "primary", HOSTILE),
                               Button("Reject", "reject", "conf-1", "danger")))
    text, blocks = render(message)
    shown = [text, *_strings(blocks)]
    for piece in shown:
        assert not LIVE.search(piece), piece
        assert "<" not in piece and ">" not in piece, piece  # Shepherd's own markup here has none either
        assert "&amp;lt;" not in piece and "&amp;amp;amp;" not in piece, f"escaped twice: {piece}"
    assert "&lt;!channel&gt;" in text  # the notification text, where the review found it live
    assert HOSTILE in unescape(text)  # once escaped, once unescaped: what was written (`&amp;` stays `&amp;`)
    every = unescape(json.dumps(blocks, ensure_ascii=False))
    assert "<!channel> see <https://evil.example|the docs>" in every


def test_cutting_never_leaves_half_an_entity() -> None:
    for kind in ("notice", "progress", "outcome", "confirmation"):
        text, blocks = render(Message(key="k", text="&" * 10_000, kind=kind, state="pending", detail="<" * 10_000,
                                      fields={"f": ">" * 5000},
                                      buttons=(Button("&" * 100, "approve", "v", "", "<" * 1000),)))
        for piece in [text, *_strings(blocks)]:
            assert not re.search(r"&(?!amp;|lt;|gt;)", piece), piece[-40:]


def test_the_messages_a_task_thread_hangs_from_quote_what_was_typed() -> None:
    said = "/shepherd run `x` <!channel> <https://evil.example|docs>"
    for text in (root_text("U123", said), moved_root_text("C1", said), moved_note("C1")):
        assert not LIVE.search(text.replace("<@U123>", "").replace("<#C1>", "")), text
    assert root_text("U123", said).startswith("<@U123> `")  # who asked: Shepherd's own ping of them
    assert root_text("U123", said).count("`") == 2  # the quote cannot be closed early
    # ids come from Slack, but only well-formed ones become markup
    assert not LIVE.search(root_text("U1><!channel", "x")) and not LIVE.search(moved_note("C1|<!here>"))


def test_escape_is_the_inverse_of_what_people_read() -> None:
    for raw in ("a & b", "<!here>", "&amp;", "&lt;", "x > y < z"):
        assert unescape(escape(raw)) == raw


# --- through Slack: what the agent asks and prints, what people type, their names -------------------------

async def test_nothing_an_agent_asks_or_a_person_types_pings_anyone_or_disguises_a_link(slack: SlackWorld) -> None:
    # typed in Slack: the literal text <!channel> and <https://…|…> (Slack escapes it), and @here (Slack marks it up)
    typed = "tell &lt;!channel&gt; about &lt;https://evil.example|the docs&gt; and <!here>"
    await slack.command(f'run "{typed} [env] [confirm deploy.staging]" --agent demo', user="UEVE",
                        name="eve<!subteam^S1>")
    root = await slack.root_for("tell")
    await slack.in_thread(root, lambda m: bool(_actions(m)), "the agent's own prompt")
    task = await slack.until_task(lambda t: t.workspace is not None and (Path(t.workspace) / "env.json").exists())
    env = json.loads((Path(str(task.workspace)) / "env.json").read_text())
    # the agent asks again, in its own words: they become a prompt, and the task's state in its status message
    async with slack.http.post(f"{env['SHEPHERD_URL']}/api/tasks/{task.id}/confirmations",
                               json={"action": "pr.merge", "summary": HOSTILE},
                               headers={"Authorization": f"Bearer {env['SHEPHERD_TASK_TOKEN']}"}) as resp:
        assert resp.status == 201, await resp.text()
    # core set the task's state to "waiting for approval …: <the summary>": news for its status message

    def shown() -> list[str]:
        return [str(c.args.get("text", "")) + json.dumps(c.args.get("blocks") or [])
                for c in slack.fake.calls if c.method.startswith("chat.")]

    escaped = "&lt;!channel&gt; see &lt;https://evil.example|the docs&gt;"
    await slack.fake.wait_for(lambda: any(escaped in str(c.args.get("text", "")) and "waiting for approval"
                                          in str(c.args.get("text", "")) for c in slack.fake.calls_to("chat.update")),
                              timeout=20)  # the status message's notification text, edited in place
    assert (await build_registry().run(slack.shepherd, CONSOLE, f"stop {task.id}")).ok
    await slack.fake.wait_for(lambda: any(escaped in s and "pr.merge" in s for s in shown()))  # the new prompt
    for piece in shown():
        assert not LIVE.search(piece.replace("<@UEVE>", "")), piece
        assert "&amp;lt;" not in piece, f"escaped twice: {piece}"
    assert "@here" in root.text and "&lt;!channel&gt;" in root.text  # what was typed, shown as typed
    assert any("eve&lt;!subteam^S1&gt;" in s for s in shown())  # the requester's name, in the prompt's fields
