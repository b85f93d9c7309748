"""Block Kit rendering stays inside Slack's limits whatever core hands it, and says where to read the rest."""

from __future__ import annotations

import json

from adapters.slack.blocks import render
from core.channels.outbox import Button, Message


def _sections(blocks: list[dict]) -> list[str]:
    out = [b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b]
    out += [f["text"] for b in blocks if b["type"] == "section" for f in b.get("fields", [])]
    return out


def test_a_pending_prompt_has_buttons_with_the_opaque_id_and_critical_ones_ask_first() -> None:
    msg = Message(key="confirmation:conf-1", text="approval K7P2 (critical): deploy to production", kind="confirmation",
                  state="pending", fields={"action": "deploy.production", "votes": "0/2"}, code="K7P2",
                  buttons=(Button("Approve", "approve", "conf-1", "primary", "deploy is critical: approve it?"),
                           Button("Reject", "reject", "conf-1", "danger")))
    text, blocks = render(msg)
    [actions] = [b for b in blocks if b["type"] == "actions"]
    approve, reject = actions["elements"]
    assert (approve["action_id"], approve["value"], approve["style"]) == ("shepherd_approve", "conf-1", "primary")
    assert "confirm" in approve and "confirm" not in reject
    assert "approve K7P2" in json.dumps(blocks)  # the typed way too
    assert text.startswith("approval K7P2")


def test_a_decided_prompt_has_no_buttons_and_says_who_where_when() -> None:
    msg = Message(key="confirmation:conf-1", text="K7P2 approved by bob from telegram at 12:03 UTC: open a PR",
                  kind="confirmation", state="approved", fields={"action": "pr.open"}, code="K7P2")
    _, blocks = render(msg)
    assert not [b for b in blocks if b["type"] == "actions"]
    assert "approved by bob from telegram at 12:03 UTC" in blocks[0]["text"]["text"]


def test_everything_is_cut_to_the_limits_with_where_to_read_the_rest() -> None:
    huge = "\n".join(f"line {i} " + "x" * 200 for i in range(500))
    fields = {f"field {i}": "v" * 5000 for i in range(30)}
    for kind in ("progress", "outcome", "reply", "confirmation", "notice"):
        msg = Message(key="k", text="t" * 10_000, kind=kind, state="pending", fields=fields, detail=huge,
                      more="logs spill-1a2b", buttons=(Button("A" * 200, "approve", "v" * 5000),))
        text, blocks = render(msg)
        assert len(blocks) <= 50 and len(text) <= 3000
        for section in _sections(blocks):
            assert len(section) <= 3000
        for block in blocks:
            assert len(block.get("fields", [])) <= 10
            for element in block.get("elements", []):
                if element.get("type") == "button":
                    assert len(element["text"]["text"]) <= 75 and len(element["value"]) <= 2000
        assert "logs spill-1a2b" in json.dumps(blocks), kind


def test_output_keeps_its_newest_lines_and_text_cannot_ping_or_fake_links() -> None:
    lines = "\n".join(f"tick {i}" for i in range(2000))
    _, blocks = render(Message(key="k", text="<!channel> <https://evil|click> & co", kind="progress",
                               detail=lines, more="logs t"))
    dumped = json.dumps(blocks)
    assert "tick 1999" in dumped and "tick 0\\n" not in dumped and "earlier lines" in dumped
    assert "<!channel>" not in dumped and "&lt;!channel&gt;" in dumped and "&amp; co" in dumped
