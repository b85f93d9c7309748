"""Claim planning: which waiting tasks a runner takes and what the others are told, decided with no I/O from
the waiting tasks (oldest first), the suspensions that concern them and the caps."""

from __future__ import annotations

import pytest

from core.agents import Suspensions
from core.store.models import Task
from core.tasks.claims import Caps, ClaimPlan, Waiting, plan_claims


def waiting(name: str, *, project: str | None = None, agent: str | None = None, status: str = "pending",
            note: str = "waiting for a runner") -> Task:
    return Task(id=name, org_id="acme", name=name, display_name=name, owner_id="u", owner_name="ana", runtime="demo",
                prompt="x", status=status, state="idle", state_message=note, project_id=project,
                agent_id=agent or f"agent-{name}")


def taken(plan: ClaimPlan) -> list[str]:
    return [t.id for t in plan.take]


def told(plan: ClaimPlan) -> dict[str, str]:
    return {t.id: note for t, note in plan.notes}


CAPS = Caps(max_tasks=2, max_per_project=1)
RUNNER_FULL = "queued: 2 tasks running on this runner, the cap is 2 (SHEPHERD_MAX_TASKS)"
PROJECT_FULL = "queued: its project has 1 tasks running, the cap is 1 (SHEPHERD_MAX_TASKS_PER_PROJECT)"

CASES = [
    # what waits, how many run here, what runs per project, suspensions -> taken, told
    ("room for all", [waiting("a"), waiting("b")], 0, {}, Suspensions(), ["a", "b"], {}),
    ("the runner's cap counts what this plan takes", [waiting("a"), waiting("b"), waiting("c")], 0, {},
     Suspensions(), ["a", "b"], {"c": RUNNER_FULL}),
    ("what already runs here counts", [waiting("a"), waiting("b")], 1, {}, Suspensions(), ["a"],
     {"b": "queued: 2 tasks running on this runner, the cap is 2 (SHEPHERD_MAX_TASKS)"}),
    ("a full project holds its own tasks, not others'", [waiting("a", project="p"), waiting("b")], 0, {"p": 1},
     Suspensions(), ["b"], {"a": PROJECT_FULL}),
    ("a task taken fills its project for the next", [waiting("a", project="p"), waiting("b", project="p")], 0, {},
     Suspensions(), ["a"], {"b": PROJECT_FULL}),
    ("a suspended task agent holds its task", [waiting("a", agent="agent-x"), waiting("b")], 0, {},
     Suspensions(agents=frozenset({"agent-x"})), ["b"],
     {"a": "waiting: agent agent-x is suspended; `agent resume agent-x` lets it start"}),
    ("a suspended project agent holds its project", [waiting("a", project="p"), waiting("b", project="q")], 0, {},
     Suspensions(agents=frozenset({"agent-p"}), projects={"p": "agent-p"}), ["b"],
     {"a": "waiting: agent agent-p is suspended; `agent resume agent-p` lets it start"}),
    ("a suspension is told before a full runner", [waiting("a", agent="agent-x")], 2, {},
     Suspensions(agents=frozenset({"agent-x"})), [],
     {"a": "waiting: agent agent-x is suspended; `agent resume agent-x` lets it start"}),
    ("a queued task already told the same is not told again", [waiting("a", status="queued", note=RUNNER_FULL)], 2,
     {}, Suspensions(), [], {}),
    ("a queued task whose reason changed is told anew",
     [waiting("a", status="queued", agent="agent-x",
              note="waiting: agent agent-x is suspended; `agent resume agent-x` lets it start")], 2, {},
     Suspensions(), [], {"a": RUNNER_FULL}),
    ("nothing waits", [], 0, {}, Suspensions(), [], {}),
]


@pytest.mark.parametrize(("case", "tasks", "running", "busy", "held", "take", "notes"), CASES,
                         ids=[c[0] for c in CASES])
def test_plan_claims(case: str, tasks: list[Task], running: int, busy: dict[str, int], held: Suspensions,
                     take: list[str], notes: dict[str, str]) -> None:
    plan = plan_claims(Waiting(tasks, held, busy), running=running, caps=CAPS)
    assert (taken(plan), told(plan)) == (take, notes)


def test_a_suspension_names_the_agent_that_holds_the_work() -> None:
    held = Suspensions(agents=frozenset({"agent-task-1", "agent-proj-p"}), projects={"p": "agent-proj-p"})
    assert held.blocker("agent-task-1", "p") == "agent-task-1"  # its own agent first
    assert held.blocker("agent-task-2", "p") == "agent-proj-p"
    assert held.blocker("agent-task-2", "q") is None
    assert held.blocker(None, None) is None
