"""The session base the issue-17 parts share: a task joins a live session and takes its budget."""

from __future__ import annotations

import pytest

from core.errors import Conflict, NotFound, ValidationFailed
from core.people.access import Role
from core.shepherd import Shepherd
from core.store.models import Session
from core.tasks.budget import Budget, checked_budget
from tests.conftest import person


async def test_a_task_joins_its_session_and_takes_its_budget(shepherd: Shepherd) -> None:
    alice = person(Role.OPERATOR, name="alice")
    sess = await shepherd.sessions.create(alice, task="tidy the docs", budget=Budget(max_turns=3, max_cost=2.5))
    view = await shepherd.tasks.create(alice, prompt="tidy the docs", runtime="demo", session_id=sess.id,
                                       budget=Budget(max_turns=2))
    assert (view.task.session_id, view.task.max_turns, view.task.max_cost) == (sess.id, 2, 2.5)
    with pytest.raises(NotFound):  # another org's session is not there
        await shepherd.tasks.create(person(Role.OPERATOR, org="globex"), prompt="x", runtime="demo",
                                    session_id=sess.id)
    async with shepherd.db.write() as session:
        row = await session.get(Session, sess.id)
        assert row is not None
        row.status = "archived"
        session.add(row)
    with pytest.raises(Conflict, match="archived"):
        await shepherd.tasks.create(alice, prompt="more", runtime="demo", session_id=sess.id)


@pytest.mark.parametrize("words", [{"max_turns": 0}, {"max_turns": 1.5}, {"max_minutes": "soon"},
                                   {"max_cost": float("nan")}, {"max_cost": True}])
def test_a_bad_limit_is_refused_with_its_name(words: dict[str, object]) -> None:
    with pytest.raises(ValidationFailed, match="--max-"):
        checked_budget(**words)  # type: ignore[arg-type]
