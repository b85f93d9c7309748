"""The agents this application ships besides core's built-in CLI presets: the demo agent, for trying Shepherd
with no model and no account, and for its tests. Core knows the presets it is given, not where they live."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from core.runners.presets import PYTHON, AgentCatalog, Preset

DEMO_AGENT = Path(__file__).resolve().with_name("demo_agent.py")

DEMO = Preset(
    "demo", "Shepherd demo agent (no model, for trying Shepherd and its tests)",
    start=(PYTHON, str(DEMO_AGENT), "--session-id", "{session}", "{prompt}"),
    resume=(PYTHON, str(DEMO_AGENT), "--resume", "{session}", "{prompt}"),
    version=(PYTHON, str(DEMO_AGENT), "--version"),
    cheap=("--model", "haiku"),
    install=f"the demo agent ships with Shepherd ({DEMO_AGENT})",
)


def agent_catalog(custom: Sequence[Preset] = ()) -> AgentCatalog:
    """Core's built-in agents, the demo agent, and the operator's own (SHEPHERD_AGENTS)."""
    return AgentCatalog([DEMO, *custom])
