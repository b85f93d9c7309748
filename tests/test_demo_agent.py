"""The demo agent run by hand: `--help` answers, and it edits nothing outside a workspace Shepherd made for it
unless told to with --here. (Runs through Shepherd, in task workspaces, are in test_tasks.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bot.presets import DEMO_AGENT


def demo(cwd: Path, *args: str, workspace: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SHEPHERD_WORKSPACE"}
    if workspace is not None:
        env["SHEPHERD_WORKSPACE"] = str(workspace)
    return subprocess.run([sys.executable, str(DEMO_AGENT), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=30)


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() if p.is_file() else "/" for p in sorted(folder.rglob("*"))}


def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "README.md").write_text("# my project\n")
    return folder


def test_help_answers_and_touches_nothing(tmp_path: Path) -> None:
    folder = project(tmp_path)
    before = snapshot(folder)
    for flag in ("--help", "-h"):
        shown = demo(folder, flag)
        assert shown.returncode == 0 and "demo_agent.py [--here] [--session-id ID] PROMPT" in shown.stdout
        assert "--here" in shown.stdout and "SHEPHERD_WORKSPACE" in shown.stdout
    assert snapshot(folder) == before


def test_outside_a_shepherd_workspace_it_refuses_and_touches_nothing(tmp_path: Path) -> None:
    folder = project(tmp_path)
    before = snapshot(folder)
    for workspace in (None, tmp_path / "elsewhere"):
        refused = demo(folder, "add a greeting", workspace=workspace)
        assert refused.returncode == 2 and "not a workspace Shepherd made for it" in refused.stderr
        assert "--here" in refused.stderr and refused.stdout == ""
    assert snapshot(folder) == before
    assert demo(folder).returncode == 2 and snapshot(folder) == before


def test_in_its_workspace_or_told_with_here_it_edits(tmp_path: Path) -> None:
    folder = project(tmp_path)
    run = demo(folder, "--session-id", "s1", "add a greeting", workspace=folder)
    assert run.returncode == 0 and "edited README.md" in run.stdout
    assert "Touched by the demo agent (turn 1)" in (folder / "README.md").read_text()
    here = demo(folder, "--here", "--resume", "s1", "and another")
    assert here.returncode == 0 and "edited README.md" in here.stdout and "(turn 2)" in here.stdout
    assert demo(folder, "--version").stdout.startswith("demo-agent ")
