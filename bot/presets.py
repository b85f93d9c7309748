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


# In an engine's image (SHEPHERD_RUNNER=kubernetes or docker) the demo agent is the image's copy of the same file,
# run by the image's python3 (README, "The agent image")
IMAGE_DEMO_AGENT = "/opt/shepherd/demo_agent.py"
DEMO_IN_IMAGE = Preset(
    DEMO.name, DEMO.title,
    start=("python3", IMAGE_DEMO_AGENT, "--session-id", "{session}", "{prompt}"),
    resume=("python3", IMAGE_DEMO_AGENT, "--resume", "{session}", "{prompt}"),
    version=("python3", IMAGE_DEMO_AGENT, "--version"),
    cheap=DEMO.cheap,
    install=f"copy Shepherd's bot/demo_agent.py to {IMAGE_DEMO_AGENT} in the agent image",
)


def agent_catalog(custom: Sequence[Preset] = (), *, in_image: bool = False) -> AgentCatalog:
    """Core's built-in agents, the demo agent (the engine image's copy with `in_image`), and the operator's own
    (SHEPHERD_AGENTS)."""
    return AgentCatalog([DEMO_IN_IMAGE if in_image else DEMO, *custom])
