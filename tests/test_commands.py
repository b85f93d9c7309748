"""The command grammar: parsing, help, did-you-mean, permissions, and every command run for real."""

from __future__ import annotations

import pytest

from core.commands.grammar import UsageError, filter_limit
from core.commands.registry import build_registry
from core.people.access import Principal, Role
from core.shepherd import Shepherd
from tests.conftest import person

REG = build_registry()


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [("agnets", "agents"), ("projets", "projects"), ("agent suspnd agent-x", "agent suspend"),
     ("agent craete x --type task", "agent create"), ("statsu", "status")],
)
def test_did_you_mean(text: str, suggestion: str) -> None:
    with pytest.raises(UsageError) as err:
        REG.parse(text)
    assert f"Did you mean `{suggestion}`?" in str(err.value)


def test_parse_binds_positionals_options_and_aliases() -> None:
    inv = REG.parse('agent create "my agent" --type=project --project api --level 3')
    assert inv.spec.name == "agent create"
    assert inv.args == {"name": "my agent", "type": "project", "project": "api", "level": 3}
    assert REG.parse("agent rm agent-task-1").spec.name == "agent delete"
    assert REG.parse("ls type:task").args == {"filters": ["type:task"]}
    assert REG.parse("project create web").args == {"name": "web", "repo": None, "branch": "main"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("agent create x", "needs --type T"),
        ("agent create x --type", "--type needs a value"),
        ("agent create x --typo task", "has no option --typo. Did you mean `--type`?"),
        ("autonomy agent-x 7", "Autonomy level must be between 0 and 5"),
        ("autonomy agent-x ²", "Autonomy level must be between 0 and 5"),  # a digit to isdigit(), not to int()
        ("autonomy agent-x", "needs <level>"),
        ('agent "unclosed', "close your quotes"),
        ("", "empty command"),
    ],
)
def test_usage_errors_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as err:
        REG.parse(text)
    assert fragment in str(err.value)


def test_in_a_task_thread_the_task_may_go_unsaid() -> None:
    def bound(text: str) -> dict[str, object]:
        return REG.parse(text, thread_task="task-abc").args

    assert bound("stop")["id"] == "task-abc"
    assert bound("logs --tail 5") == {"id": "task-abc", "tail": 5}
    assert bound("deploy staging") == {"environment": "staging", "id": "task-abc"}
    assert bound("stop other-task")["id"] == "other-task"  # said: that one
    assert bound("merge --method squash")["id"] == "task-abc"
    with pytest.raises(UsageError):
        REG.parse("stop")  # outside a task's thread it must be said
    with pytest.raises(UsageError):
        REG.parse("agent suspend", thread_task="task-abc")  # an agent id is never taken from the thread


def test_help_is_derived_from_the_specs() -> None:
    text = REG.help()
    for spec in REG:
        assert spec.usage in text
    detail = REG.help("agent create")
    assert "--type T" in detail and "e.g. agent create" in detail and "needs role: operator" in detail
    with pytest.raises(UsageError):
        REG.help("nothing")


def test_every_command_has_help_and_a_valid_role() -> None:
    names = [s.name for s in REG]
    for required in ("help", "status", "agents", "agent", "agent create", "agent suspend", "agent resume",
                     "agent restart", "agent delete", "autonomy", "projects", "project create"):
        assert required in names
    for spec in REG:
        assert spec.summary and spec.role in Role


async def run(shepherd: Shepherd, who: Principal, text: str) -> tuple[bool, str]:
    reply = await REG.run(shepherd, who, text)
    return reply.ok, reply.text


async def test_agent_commands_end_to_end(shepherd: Shepherd, admin: Principal) -> None:
    ok, text = await run(shepherd, admin, "project create api --repo acme/api")
    assert ok and "created project api" in text
    ok, text = await run(shepherd, admin, "agent create api-agent --type project --project api --level 2")
    assert ok, text
    agent_id = text.split()[1]
    ok, text = await run(shepherd, admin, "agents")
    assert agent_id in text and "L2 Assist" in text and "api" in text
    for cmd, expect in (("agent suspend", "ACTIVE -> SUSPENDED"), ("agent resume", "SUSPENDED -> ACTIVE"),
                        ("agent restart", "uptime reset")):
        ok, text = await run(shepherd, admin, f"{cmd} {agent_id}")
        assert ok and expect in text
    ok, text = await run(shepherd, admin, f"autonomy {agent_id} 4")
    assert ok and "L2 Assist -> L4 Trusted" in text
    ok, text = await run(shepherd, admin, f"agent {agent_id}")
    assert "autonomy L4 Trusted" in text and "repo acme/api" in text and "agent.set_autonomy" in text
    ok, text = await run(shepherd, admin, "agents status:suspended")
    assert ok and "no agents" in text
    project_id = (await shepherd.projects.get(admin, "api")).id
    for ref in ("api", project_id):  # a project by name or by id, in filters as everywhere
        ok, text = await run(shepherd, admin, f"agents project:{ref}")
        assert ok and agent_id in text, (ref, text)
    ok, text = await run(shepherd, admin, "agents project:nope")
    assert ok and "no agents" in text
    ok, text = await run(shepherd, admin, "status")
    assert "agents: 1 (1 active" in text and "projects: 1" in text
    ok, text = await run(shepherd, admin, f"agent delete {agent_id}")
    assert ok
    ok, text = await run(shepherd, admin, f"agent {agent_id}")
    assert not ok and text == "error: Agent not found"
    ok, text = await run(shepherd, admin, 'run "fix it" --agent demo --project api')
    assert ok, text
    for ref in ("api", project_id):
        ok, text = await run(shepherd, admin, f"tasks project:{ref}")
        assert ok and "fix-it-" in text, (ref, text)


async def test_permissions_are_checked(shepherd: Shepherd, admin: Principal) -> None:
    await run(shepherd, admin, "agent create c --type coordinator")
    viewer = person(Role.VIEWER)
    ok, text = await run(shepherd, viewer, "agents")
    assert ok
    ok, text = await run(shepherd, viewer, "project create x")
    assert not ok and "needs the write scope" in text
    ok, text = await run(shepherd, person(Role.OPERATOR), "agent type-add audit --lifecycle ephemeral d")
    assert not ok and "admin" in text


async def test_errors_never_leak_a_traceback(shepherd: Shepherd, admin: Principal) -> None:
    ok, text = await run(shepherd, admin, "agent create x --type task --project nope")
    assert not ok and text == "error: project 'nope' not found"
    ok, text = await run(shepherd, admin, "agents status:sleeping")
    assert not ok and "unknown status" in text
    ok, text = await run(shepherd, admin, "agents extra words")
    assert not ok and "cannot read filter 'extra'" in text
    assert "Traceback" not in text


def test_words_a_channel_split_already_are_taken_as_they_are() -> None:
    # a Slack thread reply becomes `send <task> -- <the reply>`: its text one word, never quoted and read again
    said = 'don\'t stop; "quote" me --tail 5 \\ ok'
    assert REG.parse(["send", "task-abc", "--", said]).args == {"id": "task-abc", "text": [said]}
    assert REG.parse(["logs", "task-abc", "--tail", "5"]).args == {"id": "task-abc", "tail": 5}
    assert REG.parse(["run", "fix the test", "--agent", "demo"]).args["prompt"] == ["fix the test"]


def test_after_a_double_dash_nothing_is_an_option() -> None:
    assert REG.parse('run "x" -- --agent demo').args["prompt"] == ["x", "--agent", "demo"]
    assert REG.parse('run "x" -- --agent demo').args["agent"] is None
    assert REG.parse("send task-abc -- --help").args["text"] == ["--help"]


def test_a_list_limit_is_a_whole_number_in_range() -> None:
    assert filter_limit({"limit": "20"}, 50) == 20 and filter_limit({}, 50) == 50
    for bad in ("0", "501", "x", "²"):  # "²" is a digit to str.isdigit() and no number to int(): a crash, not a usage
        with pytest.raises(UsageError, match="limit is a number"):
            filter_limit({"limit": bad}, 50)
