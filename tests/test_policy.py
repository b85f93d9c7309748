"""The autonomy policy: the level table of ARCHITECTURE section 3, exactly, and policy files that say what
is wrong with them."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.autonomy.policy import (
    DEFAULT_POLICY,
    Policy,
    PolicyError,
    PolicyStore,
    Risk,
    Verdict,
    parse_policy,
)
from core.errors import ValidationFailed
from core.people.access import Role

R, A, X = Verdict.RUN, Verdict.ASK, Verdict.REFUSE

# ARCHITECTURE section 3, row by row: level -> verdict for read, low, medium, high, critical.
TABLE = {
    0: (R, X, X, X, X),  # Observe: read only; other actions are refused
    1: (R, A, A, A, A),  # Suggest: asks for low and above
    2: (R, R, A, A, A),  # Assist: low runs; medium and above ask
    3: (R, R, R, A, A),  # Act: low, medium run; high, critical ask
    4: (R, R, R, R, A),  # Trusted: up to high runs; critical asks
    5: (R, R, R, R, R),  # Autonomous: all but the always-ask list
}
# One action per risk class that is not on the always-ask list.
SAMPLE = {Risk.READ: "status", Risk.LOW: "pr.comment", Risk.MEDIUM: "pr.open", Risk.HIGH: "pr.merge",
          Risk.CRITICAL: "critical.thing"}


@pytest.mark.parametrize("level", range(6))
@pytest.mark.parametrize("risk", list(Risk))
def test_every_level_times_every_risk_gives_the_architecture_table(level: int, risk: Risk) -> None:
    policy = Policy(actions={**DEFAULT_POLICY.actions, "critical.thing": Risk.CRITICAL})
    decision = policy.decide(SAMPLE[risk], level)
    assert decision.risk is risk
    assert decision.verdict is TABLE[level][risk], decision.reason


@pytest.mark.parametrize("action", sorted(DEFAULT_POLICY.always_ask))
def test_the_always_ask_list_asks_even_an_autonomous_agent_and_observe_still_refuses(action: str) -> None:
    assert DEFAULT_POLICY.decide(action, 5).verdict is Verdict.ASK
    assert DEFAULT_POLICY.decide(action, 5).always_ask
    assert DEFAULT_POLICY.decide(action, 0).verdict is Verdict.REFUSE


def test_the_built_in_risks_and_quorum_are_the_documented_ones() -> None:
    expected = {
        "status": Risk.READ, "logs": Risk.READ, "pr.comment": Risk.LOW, "tests.run": Risk.LOW,
        "branch.push": Risk.MEDIUM, "pr.open": Risk.MEDIUM, "task.start": Risk.MEDIUM,
        "pr.merge": Risk.HIGH, "deploy.staging": Risk.HIGH, "agent.restart": Risk.HIGH,
        "deploy.production": Risk.CRITICAL, "rollback": Risk.CRITICAL, "push.force": Risk.CRITICAL,
        "secrets.change": Risk.CRITICAL,
    }
    for action, risk in expected.items():
        assert DEFAULT_POLICY.risk_of(action) is risk, action
    assert DEFAULT_POLICY.decide("deploy.production", 4).quorum == 2
    assert DEFAULT_POLICY.decide("pr.merge", 1).quorum == 1
    assert DEFAULT_POLICY.approver_role is Role.APPROVER
    assert DEFAULT_POLICY.expiry_s == 30 * 60


def test_an_agent_can_declare_an_action_riskier_but_never_safer() -> None:
    assert DEFAULT_POLICY.decide("pr.merge", 4, declared=Risk.LOW).risk is Risk.HIGH
    assert DEFAULT_POLICY.decide("pr.merge", 4, declared=Risk.CRITICAL).verdict is Verdict.ASK
    unknown = DEFAULT_POLICY.decide("drop.tables", 3)
    assert unknown.risk is Risk.HIGH and unknown.verdict is Verdict.ASK
    assert "not in the policy" in unknown.reason


def test_a_decision_says_why_in_words() -> None:
    asked = DEFAULT_POLICY.decide("pr.open", 1)
    assert "pr.open is medium risk" in asked.reason and "L1 Suggest" in asked.reason
    assert "1 approval from role approver" in asked.reason
    refused = DEFAULT_POLICY.decide("pr.open", 0)
    assert "only observes" in refused.reason
    with pytest.raises(ValidationFailed, match="not an action name"):
        DEFAULT_POLICY.decide("rm -rf /", 3)


def test_a_policy_file_overrides_risks_quorum_approvers_expiry_and_configures_deploys() -> None:
    policy = parse_policy(
        """
        always_ask = ["deploy.production"]
        approvers = "admin"
        expiry_minutes = 5
        [risk]
        "pr.merge" = "critical"
        [quorum]
        high = 2
        [deploy.staging]
        command = "make deploy"
        [deploy.production]
        url = "https://deploy.example.com/hook"
        """,
        source="api.toml",
    )
    assert policy.risk_of("pr.merge") is Risk.CRITICAL
    assert policy.decide("pr.merge", 5).verdict is Verdict.RUN  # not on this project's always-ask list
    assert policy.decide("deploy.staging", 3).quorum == 2
    assert policy.approver_role is Role.ADMIN
    assert policy.expiry_s == 300
    assert policy.deploy["staging"].command == "make deploy"
    assert policy.deploy["production"].url == "https://deploy.example.com/hook"
    assert policy.decide("rollback", 5).verdict is Verdict.RUN
    assert policy.source == "api.toml"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("risk = 3", "risk: a table"),
        ('[risk]\n"pr.merge" = "huge"', "risk.pr.merge: unknown risk 'huge'"),
        ('[risk]\n"pr merge" = "low"', "not an action name"),
        ("[quorum]\ncritical = 0", "quorum.critical: a whole number 1-10"),
        ('[quorum]\ncritical = "two"', "quorum.critical: a whole number"),
        ('approvers = "viewer"', 'approvers: "approver"'),
        ("expiry_minutes = 0", "expiry_minutes: a number of minutes"),
        ("always_ask = \"rollback\"", "always_ask: a list of action names"),
        ('unknown_risk = "read"', "unknown_risk: an action the policy does not name cannot be a read"),
        ('[deploy.staging]\ncommand = "a"\nurl = "https://x"', "deploy.staging: give exactly one of"),
        ('[deploy.staging]\nurl = "ftp://x"', "deploy.staging.url: an http:// or https:// URL"),
        ("autonomy = 5", "autonomy: unknown key"),
        ("[risk", "not valid TOML"),
    ],
)
def test_a_bad_policy_file_names_the_key_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source="proj.toml")
    assert caught.value.message.startswith("proj.toml: ")
    assert message in caught.value.message
    assert caught.value.status == 400


def test_the_store_reads_a_projects_file_rereads_it_when_changed_and_never_falls_back_on_a_bad_one(
    tmp_path: Path,
) -> None:
    store = PolicyStore(tmp_path, expiry_s=600)
    assert store.for_project("api").source == "built-in"
    assert store.for_project("api").expiry_s == 600
    (tmp_path / "api.toml").write_text('[risk]\n"pr.open" = "high"\n')
    assert store.for_project("api").risk_of("pr.open") is Risk.HIGH
    assert store.for_project("api").expiry_s == 600  # the configured expiry, as the file names none
    assert store.for_project("web").risk_of("pr.open") is Risk.MEDIUM
    import os

    (tmp_path / "api.toml").write_text('[risk]\n"pr.open" = "nonsense"\n')
    os.utime(tmp_path / "api.toml", (1, 1))
    with pytest.raises(PolicyError, match="unknown risk"):
        store.for_project("api")
    assert store.check_all() == [(str(tmp_path / "api.toml"), store.check_all()[0][1])]
    assert "unknown risk" in (store.check_all()[0][1] or "")
    assert store.for_project("../etc/passwd").source == "built-in"  # no path tricks
