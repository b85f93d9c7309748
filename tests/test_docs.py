"""Docs as product: what a user configures and runs is in the README."""

from __future__ import annotations

from pathlib import Path

from bot.settings import Settings
from core.commands.registry import build_registry

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    for name in Settings.model_fields:
        env = Settings.env_name(name)
        assert env in README, f"{env} is not in README.md"


def test_every_command_is_documented() -> None:
    for spec in build_registry():
        head = spec.name.split()[0]
        assert f"`{spec.name}" in README or f"`{head} " in README, f"command {spec.name!r} is not in README.md"


def test_the_two_commands_and_ci() -> None:
    assert "make run" in README and "make test" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    procfile = (ROOT / "Procfile").read_text()
    assert "release: shepherd migrate" in procfile and "shepherd web" in procfile
    assert "worker: shepherd worker" in procfile
