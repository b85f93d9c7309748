"""The sticky comment's Markdown, without I/O: what people read, what GitHub accepts, what is read back."""

from __future__ import annotations

import base64
import json

from adapters.github.comments import BODY_MAX, OUTCOMES_KEPT, Sticky, marker
from core.channels.outbox import Message


def _status(detail: str = "") -> Message:
    return Message(key="task:t1:status", text="🏃 fix: running", kind="progress", detail=detail, task="t1")


def test_the_most_a_task_can_say_still_fits_in_one_comment_and_is_read_back() -> None:
    sticky = Sticky("t1", 5)
    flood = "\n".join("x" * 5000 for _ in range(40))
    sticky.put(_status(flood))
    for n in range(30):
        sticky.put(Message(key=f"confirmation:c{n}", text=f"approval C{n:03d} (medium): " + "y" * 5000,
                           kind="confirmation", state="pending", code=f"C{n:03d}", task="t1"))
        sticky.put(Message(key=f"task:t1:turn:{n}:outcome", text="z" * 5000, kind="outcome", detail=flood, task="t1"))
    body = sticky.body()
    assert len(body) <= BODY_MAX and body.startswith(marker("t1")) and "/shepherd approve C029" in body
    again = Sticky.read("t1", 5, body)
    assert again is not None and "task:t1:status" in (again.parts or {})
    assert again.body() == body


def test_only_the_latest_outcomes_are_kept() -> None:
    sticky = Sticky("t1")
    for turn in range(1, 6):
        sticky.put(Message(key=f"task:t1:turn:{turn}:outcome", text=f"turn {turn} done", kind="outcome", task="t1"))
    body = sticky.body()
    assert [f"turn {n} done" in body for n in range(1, 6)] == [False] * (5 - OUTCOMES_KEPT) + [True] * OUTCOMES_KEPT


def test_a_comment_that_only_quotes_a_marker_or_carries_an_edited_state_is_read_safely() -> None:
    assert Sticky.read("t1", 1, f"as Shepherd wrote: {marker('t1')}") is None
    evil = base64.urlsafe_b64encode(json.dumps({"k": {"key": "k", "text": "x", "evil": 1}}).encode()).decode()
    read = Sticky.read("t1", 1, f"{marker('t1')}\n\n<!-- shepherd:state {evil} -->")
    assert read is not None and read.parts == {}  # written again as news comes, never a crash
    assert Sticky.read("t1", 1, f"{marker('t1')}\n\n<!-- shepherd:state !!! -->") is not None


def test_the_approval_hint_names_the_configured_handle() -> None:
    """With SHEPHERD_GITHUB_HANDLE=bot, `/bot approve CODE` is what Shepherd answers: the hint says that."""
    sticky = Sticky("t1", handle="bot")
    sticky.put(Message(key="confirmation:c1", text="approval K7P2 (medium): open a pull request", kind="confirmation",
                       state="pending", code="K7P2", task="t1"))
    body = sticky.body()
    assert "`/bot approve K7P2`" in body and "`/bot reject K7P2`" in body and "/shepherd" not in body
    again = Sticky.read("t1", 5, body, "bot")
    assert again is not None and "`/bot approve K7P2`" in again.body()
