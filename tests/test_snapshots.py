"""The snapshot a paused task keeps: agentapi's messages, the last ones, never over 64 KB."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from core.store.models import TaskLog
from core.tasks.snapshots import MAX_MESSAGES, MAX_SNAPSHOT_BYTES, TRUNCATED, build_snapshot, snapshot_entries

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def rows(*items: tuple[str, str]) -> list[TaskLog]:
    return [TaskLog(id=i + 1, task_id="task-1", time=AT, type=kind, content=text)
            for i, (kind, text) in enumerate(items)]


def size(snapshot: dict[str, object]) -> int:
    return len(json.dumps(snapshot).encode())


def test_inputs_are_user_messages_and_the_output_after_each_one_agent_message() -> None:
    snap = build_snapshot(rows(("input", "fix it"), ("output", "reading"), ("output", "done"),
                               ("input", "and more"), ("output", "ok")))
    assert snap == {"messages": [
        {"id": 1, "content": "fix it", "role": "user", "time": "2026-01-02T03:04:05Z"},
        {"id": 2, "content": "reading\ndone", "role": "agent", "time": "2026-01-02T03:04:05Z"},
        {"id": 4, "content": "and more", "role": "user", "time": "2026-01-02T03:04:05Z"},
        {"id": 5, "content": "ok", "role": "agent", "time": "2026-01-02T03:04:05Z"},
    ]}
    assert [(e.id, e.type, e.content) for e in snapshot_entries(snap)] == [
        (1, "input", "fix it"), (2, "output", "reading\ndone"), (4, "input", "and more"), (5, "output", "ok")]


def test_only_the_last_messages_are_kept_and_never_more_than_64_kb() -> None:
    many = rows(*[(("input", f"question {i}") if i % 2 == 0 else ("output", "x" * 20_000)) for i in range(40)])
    snap = build_snapshot(many)
    assert len(snap["messages"]) <= MAX_MESSAGES and size(snap) <= MAX_SNAPSHOT_BYTES
    assert snap["messages"][-1]["content"] == "x" * 20_000, "the newest survive, the oldest go"
    assert snap["messages"][0]["id"] > 1


def test_one_huge_message_keeps_its_tail_within_the_limit_even_when_escaping_grows_it() -> None:
    for line in ("y" * 100, "é\x1b" * 50):  # non-ASCII and control characters take 6 bytes each in JSON
        snap = build_snapshot(rows(*[("output", f"{line} {i}") for i in range(3000)]))
        [message] = snap["messages"]
        assert size(snap) <= MAX_SNAPSHOT_BYTES
        assert message["content"].startswith(TRUNCATED) and message["content"].endswith(f"{line} 2999")


def test_rows_that_begin_mid_message_do_not_pass_for_a_whole_message() -> None:
    snap = build_snapshot(rows(("output", "tail of an older reply"), ("input", "next"), ("output", "reply")),
                          partial=True)
    assert [m["content"] for m in snap["messages"]] == ["next", "reply"]
    only = build_snapshot(rows(("output", "middle"), ("output", "end")), partial=True)
    assert only["messages"][0]["content"] == TRUNCATED + "middle\nend"


def test_an_upload_of_another_shape_is_read_as_far_as_it_is_messages() -> None:
    assert snapshot_entries({"messages": [{"id": 1, "content": "a", "role": "agent", "time": "t"},
                                          {"id": "2", "content": "b", "role": "agent", "time": "t"},
                                          {"id": 3, "content": "c", "role": "robot", "time": "t"}, "junk"]}) == \
        snapshot_entries({"messages": [{"id": 1, "content": "a", "role": "agent", "time": "t"}]})
    assert snapshot_entries({"nested": {"a": [1]}}) == [] and snapshot_entries(None) == []
