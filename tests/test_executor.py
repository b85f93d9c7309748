"""Where an approved action stands after one more attempt: done, failed for good, or tried again later with
backoff (the host's Retry-After when it said one). Pure, so table-driven."""

from __future__ import annotations

import pytest

from core.autonomy.actions import ActionError
from core.autonomy.executor import after_attempt
from core.autonomy.plans import Execution
from core.tasks.evidence import ActionRecord, ActionResult

NOW = 1_000_000.0
PUSHED = ActionResult(branch="shepherd/x", head="a" * 40, pushed=True)
OUTAGE = ActionError("GitHub answered 502", transient=True)
LIMITED = ActionError("secondary rate limit", transient=True, retry_after=60.0)
REFUSED = ActionError("no GitHub access is configured")

CASES = [
    ("done at once", ActionRecord(), PUSHED, None, Execution.DONE, ActionRecord(attempts=1, result=PUSHED)),
    ("done on the second try", ActionRecord(attempts=1, last_error="502", retry_at=NOW), PUSHED, None,
     Execution.DONE, ActionRecord(attempts=2, result=PUSHED)),
    ("an outage waits 5 s", ActionRecord(), None, OUTAGE, Execution.WAITING,
     ActionRecord(attempts=1, last_error="GitHub answered 502", retry_at=NOW + 5)),
    ("then 10 s", ActionRecord(attempts=1), None, OUTAGE, Execution.WAITING,
     ActionRecord(attempts=2, last_error="GitHub answered 502", retry_at=NOW + 10)),
    ("the host's Retry-After wins", ActionRecord(), None, LIMITED, Execution.WAITING,
     ActionRecord(attempts=1, last_error="secondary rate limit", retry_at=NOW + 60)),
    ("the last attempt fails for good", ActionRecord(attempts=2), None, OUTAGE, Execution.FAILED,
     ActionRecord(attempts=3, error="GitHub answered 502")),
    ("what retrying cannot fix fails at once", ActionRecord(), None, REFUSED, Execution.FAILED,
     ActionRecord(attempts=1, error="no GitHub access is configured")),
]


@pytest.mark.parametrize(("case", "before", "result", "error", "execution", "after"), CASES,
                         ids=[c[0] for c in CASES])
def test_after_attempt(case: str, before: ActionRecord, result: ActionResult | None, error: ActionError | None,
                       execution: Execution, after: ActionRecord) -> None:
    assert after_attempt(before, result=result, error=error, max_attempts=3, now=NOW) == (execution, after)
