"""Which runner nodes are dead: silent too long, or on this host with their process gone, or this very pid
from a previous life of the process (a container's pid 1 restarted). Pure over the node rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.store.models import RunnerNode
from core.tasks.nodes import dead_nodes

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
STARTED = NOW - timedelta(minutes=5)  # when this process began


def node(node_id: str, *, host: str = "here", pid: int = 100, beat_s_ago: float = 1, started: datetime = STARTED,
         ) -> RunnerNode:
    return RunnerNode(id=node_id, host=host, pid=pid, started_at=started,
                      heartbeat_at=NOW - timedelta(seconds=beat_s_ago))


CASES = [
    ("a fresh node elsewhere lives", node("n", host="there"), False),
    ("a silent node elsewhere is dead", node("n", host="there", beat_s_ago=60), True),
    ("a fresh node here whose process is gone is dead", node("n", pid=200), True),
    ("a fresh node here whose process runs lives", node("n", pid=300), False),
    ("this pid from before this process began is a previous life", node("n", pid=1,
                                                                          started=STARTED - timedelta(hours=1)), True),
    ("this node itself is never dead", node("me", beat_s_ago=3600), False),
]


@pytest.mark.parametrize(("case", "row", "dead"), CASES, ids=[c[0] for c in CASES])
def test_dead_nodes(case: str, row: RunnerNode, dead: bool) -> None:
    found = dead_nodes([row], me="me", host="here", pid=1, started=STARTED, cutoff=NOW - timedelta(seconds=30),
                       alive=lambda pid: pid in (1, 300))
    assert found == ({row.id} if dead else set())
