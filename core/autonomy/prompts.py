"""How a confirmation reads in any channel: the prompt with its buttons, or once decided what became of it. One
message per confirmation, edited in place wherever it was shown (core.channels.outbox), and its reminders
(core.autonomy.reminders), each a message of its own that the decision edits as well."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from core.autonomy.plans import Execution, Status, Target
from core.autonomy.policy import Risk
from core.channels.outbox import Button, Message
from core.clock import as_utc
from core.store.models import Confirmation
from core.tasks.evidence import ActionRecord
from core.text import clock, span


def render(conf: Confirmation, task_name: str | None = None) -> Message:
    """The prompt, or once decided what became of it: one message, edited in place everywhere."""
    status = Status(conf.status)
    fields = {"action": conf.action, "risk": conf.risk, "requested by": conf.requester_name,
              "votes": f"{conf.approvals}/{conf.quorum}"}
    if task_name:
        fields["task"] = task_name
    target = Target.from_json(conf.target)
    for key, value in (("repo", target.repo), ("branch", target.branch), ("base", target.base),
                       ("head", (target.head or "")[:12])):
        if value:
            fields[key] = value
    buttons: tuple[Button, ...] = ()
    if status is Status.PENDING:
        fields["expires"] = clock(conf.expires_at)
        critical = conf.risk == Risk.CRITICAL.label
        confirm = f"{conf.action} is critical: approve it?" if critical else None
        buttons = (Button("Approve", "approve", conf.id, "primary", confirm),
                   Button("Reject", "reject", conf.id, "danger"))
        text = f"approval {conf.code} ({conf.risk}): {conf.summary}"
    else:
        who = conf.decided_by or "?"
        where = conf.decided_via or "?"
        at = clock(conf.decided_at) if conf.decided_at else "?"
        verb = {"expired": "expired", "void": "void"}.get(status.value)
        if verb:
            text = f"{conf.code} {verb} at {at}: {conf.summary}" + (f" ({conf.reason})" if conf.reason else "")
        else:
            by = f"by policy (L{conf.level})" if where == "policy" else f"by {who} from {where}"
            text = f"{conf.code} {status.value} {by} at {at}: {conf.summary}"
            if conf.reason and status is Status.REJECTED:
                text += f" ({conf.reason})"
            if conf.execution in (Execution.DONE, Execution.FAILED):
                text += f" · {ActionRecord.from_json(conf.result).line(conf.action)}"
    return Message(key=f"confirmation:{conf.id}", text=text, kind="confirmation", state=status.value,
                   fields=fields, buttons=buttons, code=conf.code, task=conf.task_id or "")


def reminder_key(conf_id: str, n: int) -> str:
    """The key of a confirmation's n-th reminder: a message of its own (posted anew, not an edit of the prompt),
    edited in place like the prompt once the confirmation is decided."""
    return f"confirmation:{conf_id}:reminder:{n}"


def reminder(conf: Confirmation, task_name: str | None, n: int, now: datetime) -> Message:
    """The n-th reminder of a pending confirmation (how long it has waited, how long it has left, the same
    buttons), or once decided what became of it, as the prompt says it. Not gathered into a task's news (no
    `task`): a reminder is a new message where people see it, a GitHub comment of its own."""
    prompt = render(conf, task_name)
    key = reminder_key(conf.id, n)
    if Status(conf.status) is not Status.PENDING:
        return replace(prompt, key=key, task="")
    waited = span((now - as_utc(conf.created_at)).total_seconds())
    left = span((as_utc(conf.expires_at) - now).total_seconds())
    text = (f"reminder: approval {conf.code} ({conf.risk}) has waited {waited} for a decision; it expires in {left} "
            f"({clock(conf.expires_at)}): {conf.summary}")
    return replace(prompt, key=key, text=text, fields={**prompt.fields, "waiting": waited, "time left": left},
                   task="")
