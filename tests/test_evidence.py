"""Evidence, action records and targets are types in core and JSON in the store: rows written before the
types existed read back the same, and what is written keeps the keys those rows have."""

from __future__ import annotations

import pytest

from core.autonomy.plans import Plan, Target, describe, plan_hash
from core.tasks.evidence import ActionRecord, ActionResult, Evidence, TaskAction

TURN_ROW = {"exitCode": 0, "durationSeconds": 3.217,
            "diff": {"files": 2, "insertions": 10, "deletions": 1, "paths": ["a.py", "b.py"]},
            "lastLines": ["editing a.py", "done"], "reason": "the agent finished its turn", "droppedLines": 7}
GATED_ROW = {**TURN_ROW, "reason": "pull request #7 opened: https://github.test/acme/api/pull/7",
             "actions": [{"action": "pr.open", "code": "K7P2", "ok": True, "attempts": 2, "branch": "shepherd/x",
                          "head": "a" * 40, "pushed": True, "number": 7, "url": "https://github.test/acme/api/pull/7",
                          "created": True}]}


@pytest.mark.parametrize("row", [TURN_ROW, GATED_ROW, {"reason": "the runner stopped", "exitCode": None}],
                         ids=["a turn", "a turn and its pull request", "an interruption"])
def test_stored_evidence_reads_back_to_the_same_json(row: dict[str, object]) -> None:
    again = Evidence.from_json(row).to_json()
    assert {k: v for k, v in again.items() if k in row} == row
    assert set(again) - set(row) <= {"diff", "lastLines"}  # an interruption gains an empty diff, nothing else


def test_the_summary_reads_as_before() -> None:
    assert Evidence.from_json(TURN_ROW).summary("succeeded") == (
        "succeeded in 3.2 s · 2 files changed, +10 -1 · exit 0 · the agent finished its turn")
    assert Evidence.from_json({"reason": "the runner stopped", "exitCode": None}).summary("interrupted") == (
        "interrupted · no files changed · the runner stopped")


def test_the_tasks_own_actions_say_its_pull_request_and_pushed_head() -> None:
    evidence = Evidence.from_json(GATED_ROW)
    assert (evidence.pull_request(), evidence.pushed_head()) == (7, "a" * 40)
    assert evidence.actions[0].describe() == "https://github.test/acme/api/pull/7"
    failed = TaskAction("branch.push", "AB12", ok=False, record=ActionRecord(attempts=3, error="host refused"))
    assert failed.describe() == "host refused"
    assert (Evidence().pull_request(), Evidence().pushed_head()) == (None, None)


RECORDS = [
    ("pr.open", {"attempts": 1, "branch": "b", "head": "a" * 40, "pushed": True, "number": 7, "url": "https://x/7",
                 "created": True}, "pull request #7 opened: https://x/7"),
    ("pr.open", {"attempts": 1, "number": 7, "url": "https://x/7", "created": False},
     "pull request #7 already open: https://x/7"),
    ("branch.push", {"attempts": 1, "branch": "shepherd/x", "head": "0123456789abcdef", "pushed": True},
     "pushed shepherd/x at 0123456789"),
    ("pr.merge", {"attempts": 1, "number": 7, "mergeCommit": "fedcba9876543210"}, "merged #7 as fedcba9876"),
    ("pr.comment", {"attempts": 1, "url": "https://x/7#c1"}, "commented: https://x/7#c1"),
    ("deploy.staging", {"attempts": 1, "status": 202, "response": "queued"}, "deploy.staging: done (202)"),
    ("deploy.staging", {"attempts": 1, "exitCode": 0, "lastLines": ["ok"]}, "deploy.staging: done"),
    ("pr.open", {"attempts": 3, "error": "GitHub answered 502"}, "pr.open failed: GitHub answered 502"),
    ("pr.open", {"attempts": 1, "lastError": "GitHub answered 502", "retryAt": 1700000000.5}, "pr.open: done"),
]


@pytest.mark.parametrize(("action", "row", "line"), RECORDS)
def test_action_records_read_back_and_say_what_came_of_them(action: str, row: dict[str, object], line: str) -> None:
    record = ActionRecord.from_json(row)
    assert record.to_json() == row
    assert record.line(action) == line


def test_what_an_action_returns_is_stored_with_the_keys_people_and_apis_read() -> None:
    merged = ActionRecord(attempts=1, result=ActionResult(number=7, merge_commit="f" * 40))
    assert merged.to_json() == {"attempts": 1, "number": 7, "mergeCommit": "f" * 40}


def test_a_target_hashes_as_the_json_it_is_stored_as() -> None:
    target = Target(repo="acme/api", branch="shepherd/x", base="main", head="a" * 40)
    row = {"repo": "acme/api", "branch": "shepherd/x", "base": "main", "head": "a" * 40}
    assert target.to_json() == row and Target.from_json(row) == target
    plan = Plan(action="pr.open", summary="open", target=target, params={"title": "x"})
    assert plan.hash == plan_hash("pr.open", row, {"title": "x"})
    assert Target(repo="acme/api", number=7).to_json() == {"repo": "acme/api", "number": 7}
    assert describe("pr.open", target, {}) == f"open a pull request on acme/api: shepherd/x -> main at {'a' * 10}"
