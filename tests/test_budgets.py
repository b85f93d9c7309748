"""Budgets that pause and ask (issue 17): a task's limits on turns, minutes and cost, run for real with the demo
agent. At a limit the work waits and a `budget.extend` confirmation asks people to extend it by a stated amount
or stop; approving goes on, rejecting ends the task `budget_exceeded`."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.commands.registry import build_registry
from core.runners.presets import reported_cost
from core.store.models import Confirmation
from core.tasks.budget import Budget
from tests.test_rest_coder import served
from tests.test_tasks import RigFactory
from tests.test_tasks import make_rig as make_rig  # the fixture, shared

REG = build_registry()


async def extension_asked(rig: object, task_id: str) -> Confirmation:
    shepherd = rig.shepherd  # type: ignore[attr-defined]
    who = rig.who  # type: ignore[attr-defined]
    [conf] = [c for c in await shepherd.confirmations.pending(who, task_id=task_id) if c.action == "budget.extend"]
    return conf


async def test_a_two_turn_budget_asks_at_the_limit_and_approving_runs_the_waiting_follow_up(
    db_url: str, make_rig: RigFactory
) -> None:
    rig = await make_rig(db_url)
    task = await rig.run("write the notes", budget=Budget(max_turns=2))
    await rig.finished(task.id)
    await rig.shepherd.tasks.send(rig.who, task.id, "second turn")
    await rig.until(task.id, lambda t: t.turns == 2 and t.outcome is not None)
    waiting = await rig.shepherd.tasks.send(rig.who, task.id, "third turn")
    assert (waiting.status, waiting.outcome) == ("awaiting", None), "the third turn does not start"
    conf = await extension_asked(rig, task.id)
    assert conf.summary.endswith("extend by 2 turns or stop") and "turn 2/2" in conf.summary
    assert conf.code in waiting.state_message
    shown = await REG.run(rig.shepherd, rig.who, f"task {task.name}")
    assert "budget turn 2/2" in shown.text and conf.code in shown.text

    await rig.shepherd.confirmations.vote(rig.who, conf.code, approve=True)
    third = await rig.until(task.id, lambda t: t.turns == 3 and t.outcome is not None)
    assert (third.outcome, third.max_turns) == ("succeeded", 4)
    assert "third turn" in [line for line in await rig.output(task.id) if "reading the prompt" in line][-1]


async def test_rejecting_the_extension_ends_the_task_budget_exceeded(sqlite_url: str, make_rig: RigFactory) -> None:
    rig = await make_rig(sqlite_url)
    task = await rig.run("one turn only", budget=Budget(max_turns=1))
    await rig.finished(task.id)
    await rig.shepherd.tasks.send(rig.who, task.id, "one more")
    conf = await extension_asked(rig, task.id)
    await rig.shepherd.confirmations.vote(rig.who, conf.code, approve=False, comment="enough")
    ended = await rig.get(task.id)
    assert (ended.status, ended.outcome, ended.turns) == ("failed", "budget_exceeded", 1)
    assert conf.code in ended.evidence["reason"] and ended.pending_inputs == []
    assert "one more" not in "\n".join(await rig.output(task.id)), "the waiting input never ran"


async def test_minutes_pause_a_long_run_and_approving_resumes_it_rejecting_ends_it(
    sqlite_url: str, make_rig: RigFactory
) -> None:
    rig = await make_rig(sqlite_url, idle_timeout_s=5.0)
    task = await rig.run("count [long 60]", budget=Budget(max_minutes=0.02))  # 1.2 s of running time
    paused = await rig.until(task.id, lambda t: t.status == "paused")
    stat = Path(f"/proc/{paused.pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert stat[0] == "T", "the agent's processes are frozen while people decide"
    conf = await extension_asked(rig, task.id)
    assert "extend by 1.2 s" in conf.summary or "extend by 0.02 min" in conf.summary
    lines = len(await rig.output(task.id))

    await rig.shepherd.confirmations.vote(rig.who, conf.code, approve=True)
    await rig.until(task.id, lambda t: t.status == "running" and t.max_minutes == pytest.approx(0.04))
    await rig.until(task.id, lambda t: t.log_count > lines + 3)  # it works on
    again = await rig.until(task.id, lambda t: t.status == "paused")  # and its extended minutes run out too
    second = await extension_asked(rig, task.id)
    assert second.code != conf.code and again.pid == paused.pid

    await rig.shepherd.confirmations.vote(rig.who, second.code, approve=False)
    ended = await rig.finished(task.id)
    assert ended.outcome == "budget_exceeded", ended.evidence
    assert 2.0 < ended.run_seconds < 30


async def test_the_agents_reported_cost_is_summed_and_the_next_turn_asks_over_the_limit(
    sqlite_url: str, make_rig: RigFactory
) -> None:
    rig = await make_rig(sqlite_url)
    task = await rig.run("an expensive change [cost 0.40]", budget=Budget(max_cost=0.5))
    first = await rig.finished(task.id)
    assert first.cost_usd == pytest.approx(0.40)
    await rig.shepherd.tasks.send(rig.who, task.id, "again [cost 0.25]")
    second = await rig.until(task.id, lambda t: t.turns == 2 and t.outcome is not None)
    assert second.cost_usd == pytest.approx(0.65), "summed over the turns"
    waiting = await rig.shepherd.tasks.send(rig.who, task.id, "a third")
    assert waiting.status == "awaiting"
    conf = await extension_asked(rig, task.id)
    assert "$0.65 of $0.50" in conf.summary and conf.summary.endswith("extend by $0.50 or stop")


def test_costs_are_read_from_claude_codes_json_result_only() -> None:
    assert reported_cost('{"type":"result","subtype":"success","total_cost_usd":0.0123,"num_turns":3}') == 0.0123
    assert reported_cost("the total_cost_usd field is documented") is None
    assert reported_cost('{"total_cost_usd": -1}') is None
    assert reported_cost("tick 3") is None


async def test_run_takes_a_budget_and_refuses_a_bad_one_naming_the_option(
    sqlite_url: str, make_rig: RigFactory
) -> None:
    rig = await make_rig(sqlite_url)
    started = await REG.run(rig.shepherd, rig.who, 'run "tidy up" --max-turns 3 --max-minutes 30 --max-cost 1.5')
    assert started.ok and "budget 3 turns, 30 min, $1.50" in started.text, started.text
    task = await rig.get(started.data["id"])
    assert (task.max_turns, task.max_minutes, task.max_cost) == (3, 30.0, 1.5)
    bad = await REG.run(rig.shepherd, rig.who, 'run "tidy up" --max-turns 2.5')
    assert not bad.ok and bad.data == {"code": "INVALID_BUDGET"} and "--max-turns" in bad.text


async def test_coder_task_create_takes_the_budget_and_its_answer_shows_it(sqlite_url: str, tmp_path: Path) -> None:
    async with served(sqlite_url, tmp_path, runner=False) as rig:
        made = await rig.create("tidy up", max_turns=2, max_minutes=10, max_cost=0.75)
        assert (made["max_turns"], made["max_minutes"], made["max_cost"]) == (2, 10, 0.75)
        assert (made["turns"], made["cost_usd"], made["run_minutes"]) == (0, None, 0)
        status, listed = await rig.call("GET", "/api/v2/tasks")
        assert status == 200 and listed["tasks"][0]["max_turns"] == 2
        status, bad = await rig.call("POST", "/api/v2/tasks/me", {"input": "x", "agent": "demo", "max_cost": 0})
        assert status == 400 and bad["code"] == "INVALID_BUDGET" and "--max-cost" in bad["error"]
