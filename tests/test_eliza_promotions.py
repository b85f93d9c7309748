"""Eliza's Cloud Coding Containers, promotions (shared/seeds/000): the seed's request as written, the Workbench
shortcut, paths and sizes refused, 503 without a runner — over real HTTP, real SQLite/PostgreSQL and real git."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import select

from bot.app import create_app
from bot.presets import agent_catalog
from core.clock import utcnow
from core.containers import bundles
from core.shepherd import Shepherd
from core.store.db import Database
from core.store.models import Promotion, RunnerNode
from tests.test_rest_coder import Rig

PROMOTE = "/api/cloud/coding-containers/promotions"
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SEED_PROMOTION = {  # the seed's example, as written
    "source": {
        "sourceKind": "project",
        "projectId": "demo-app",
        "snapshotId": "snapshot-id",
        "files": [
            {
                "path": "src/plugin.ts",
                "contents": "export default { name: 'demo' };",
                "encoding": "utf-8",
            }
        ],
    },
    "preferredAgent": "codex",
}


async def runner_alive(shepherd: Shepherd) -> None:
    """A runner in another process (a fresh heartbeat): containers may be taken."""
    async with shepherd.db.write() as session:
        now = utcnow()
        session.add(RunnerNode(id="elsewhere:1", host="elsewhere", pid=os.getpid(), started_at=now, heartbeat_at=now))


@contextlib.asynccontextmanager
async def served(db_url: str, root: Path, *, alive: bool = True) -> AsyncIterator[Rig]:
    db = Database(db_url)
    shepherd = Shepherd(db, catalog=agent_catalog(), default_agent="demo", workspace_root=root / "ws")
    await shepherd.orgs.ensure("acme")
    await shepherd.orgs.ensure("globex")
    client = TestClient(TestServer(create_app(db_url, shepherd=shepherd)))
    await client.start_server()
    rig = Rig(client, shepherd, "", root)
    rig.token = await rig.token_for("acme")
    if alive:
        await runner_alive(shepherd)
    try:
        yield rig
    finally:
        await client.close()
        await db.dispose()


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with served(db_url, tmp_path) as r:
        yield r


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def promotions_on_disk(rig: Rig) -> list[Path]:
    root = rig.root / "promotions"
    return sorted(root.glob("*/*")) if root.exists() else []


async def test_the_seeds_promotion_answers_its_shape_and_keeps_the_snapshot_as_a_first_commit(rig: Rig) -> None:
    status, body = await rig.call("POST", PROMOTE, SEED_PROMOTION)
    assert status == 200, body
    assert set(body) == {"success", "data"} and body["success"] is True
    data = body["data"]
    assert set(data) == {"promotionId", "status", "source", "workspacePath", "createdAt"}
    assert data["status"] == "accepted" and data["promotionId"].startswith("promotion-")
    assert data["source"] == {"sourceKind": "project", "projectId": "demo-app"}
    assert data["workspacePath"] == "/workspace/demo-app"
    assert ISO_MS.match(data["createdAt"]), data["createdAt"]

    # The bundle is a git repository whose first (and only) commit is the snapshot.
    row = await rig.shepherd.promotions.get(await _admin(rig), data["promotionId"])
    repo = rig.shepherd.promotions.repo_path(row)
    assert repo == rig.root / "promotions" / "acme" / data["promotionId"]
    assert git(repo, "log", "--format=%H|%an|%s").splitlines() == [f"{row.base_sha}|Shepherd|snapshot snapshot-id"]
    assert git(repo, "ls-tree", "-r", "--name-only", row.base_sha).split() == ["src/plugin.ts"]
    assert git(repo, "show", f"{row.base_sha}:src/plugin.ts") == "export default { name: 'demo' };"
    assert (row.file_count, row.total_bytes, row.preferred_agent, row.snapshot_id) == (1, 32, "codex", "snapshot-id")

    # Another org does not see it.
    globex = await rig.token_for("globex")
    other = await rig.shepherd.tokens.authenticate(globex)
    with pytest.raises(Exception, match="no promotion"):
        await rig.shepherd.promotions.get(other, data["promotionId"])


async def _admin(rig: Rig) -> Any:
    return await rig.shepherd.tokens.authenticate(rig.token)


async def test_the_workbench_shortcut_promotes_the_project_of_its_path(rig: Rig) -> None:
    files = [{"path": "README.md", "contents": "# demo\n"},
             {"path": "bin/logo.png", "contents": base64.b64encode(b"\x89PNG\x00\xff").decode(), "encoding": "base64"}]
    status, body = await rig.call("POST", "/api/workbench/vfs/projects/demo-app/promote-to-cloud",
                                  {"snapshotId": "s2", "files": files})
    assert status == 200, body
    data = body["data"]
    assert data["source"] == {"sourceKind": "project", "projectId": "demo-app"}
    assert data["workspacePath"] == "/workspace/demo-app" and data["status"] == "accepted"
    repo = rig.shepherd.promotions.repo_path(await rig.shepherd.promotions.get(await _admin(rig), data["promotionId"]))
    assert subprocess.run(["git", "--git-dir", str(repo), "show", "main:bin/logo.png"], capture_output=True,
                          check=True).stdout == b"\x89PNG\x00\xff", "base64 decoded, byte for byte"

    status, body = await rig.call("POST", "/api/workbench/vfs/projects/..%2Fescape/promote-to-cloud",
                                  {"files": files})
    assert status in (400, 404) and body["status"] == status, body
    status, body = await rig.call("POST", "/api/workbench/vfs/projects/a..b/promote-to-cloud", {"files": files})
    assert status == 200, "dots inside a segment are a name, not a way out"
    status, body = await rig.call("POST", "/api/workbench/vfs/projects/demo-app/promote-to-cloud", {})
    assert (status, body["code"]) == (400, "VALIDATION_ERROR") and "files" in body["error"]


@pytest.mark.parametrize("path", ["../escape.ts", "src/../../escape.ts", "/etc/passwd", ".git/config",
                                  ".git/hooks/pre-commit", "src\\win.ts",
                                  "vendor/.git/config", ".GIT/config", "git~1/HEAD", "src/" + "n" * 256])
async def test_paths_out_of_the_workspace_are_400_and_nothing_is_kept(rig: Rig, path: str) -> None:
    body = {"source": {**SEED_PROMOTION["source"], "files": [{"path": path, "contents": "x"}]}}  # type: ignore[dict-item]
    status, answer = await rig.call("POST", PROMOTE, body)
    assert (status, answer["code"]) == (400, "INVALID_PATH"), answer
    assert "source.files[0].path" in answer["error"]
    assert promotions_on_disk(rig) == []
    async with rig.shepherd.db.read() as session:
        assert (await session.exec(select(Promotion))).all() == []


async def test_bad_fields_are_specific_400s(rig: Rig) -> None:
    seed: dict[str, Any] = SEED_PROMOTION
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({**seed, "preferredAgent": "aider"}, "INVALID_AGENT", "claude, codex, opencode"),
        ({"source": {**seed["source"], "projectId": "../up"}}, "INVALID_PROJECT_ID", "projectId"),
        ({"source": {**seed["source"], "projectId": "a/b"}}, "INVALID_PROJECT_ID", "projectId"),
        ({"source": {**seed["source"], "files": [{"path": "a", "contents": "!!", "encoding": "base64"}]}},
         "INVALID_CONTENTS", "base64"),
        ({"source": {**seed["source"], "files": [{"path": "a", "contents": "x", "encoding": "latin-1"}]}},
         "VALIDATION_ERROR", "encoding"),
        ({"source": {**seed["source"], "files": [{"path": "a", "contents": "1"}, {"path": "a/b", "contents": "2"}]}},
         "INVALID_PATH", "is a file and the directory"),
        ({"source": {**seed["source"], "files": [{"path": "a", "contents": "1"}, {"path": "./a", "contents": "2"}]}},
         "DUPLICATE_PATH", "also"),
    ]
    for request, code, words in cases:
        status, body = await rig.call("POST", PROMOTE, request)
        assert (status, body["code"]) == (400, code), (request, body)
        assert words in body["error"], body
    assert promotions_on_disk(rig) == []


async def test_an_oversized_file_or_bundle_is_413_with_the_limit(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    big = "x" * (bundles.MAX_FILE_BYTES + 1)
    status, body = await rig.call("POST", PROMOTE, {"source": {**SEED_PROMOTION["source"],  # type: ignore[dict-item]
                                                               "files": [{"path": "big.txt", "contents": big}]}})
    assert (status, body["code"]) == (413, "PAYLOAD_TOO_LARGE"), body
    assert str(bundles.MAX_FILE_BYTES) in body["error"] and "big.txt" in body["error"]

    # The bundle's limit (50 MiB by default, past any request body Shepherd accepts unless raised): made small here.
    monkeypatch.setattr(bundles, "MAX_BUNDLE_BYTES", 1024 * 1024)
    files = [{"path": f"part{i}.txt", "contents": "y" * (400 * 1024)} for i in range(3)]
    status, body = await rig.call("POST", PROMOTE, {"source": {**SEED_PROMOTION["source"],  # type: ignore[dict-item]
                                                               "files": files}})
    assert (status, body["code"]) == (413, "PAYLOAD_TOO_LARGE"), body
    assert "1048576 bytes" in body["error"]

    assert promotions_on_disk(rig) == []
    # bundles are bigger than other requests: the promotion route takes them past SHEPHERD_MAX_BODY_BYTES (256 KiB by
    # default), which every other route still holds to
    monkeypatch.setattr(bundles, "MAX_BUNDLE_BYTES", 50 * 1024 * 1024)
    status, body = await rig.call("POST", PROMOTE, {"source": {**SEED_PROMOTION["source"],  # type: ignore[dict-item]
                                                               "files": files}})
    assert status == 200, body
    status, body = await rig.call("POST", "/api/agents", {"name": "x" * (300 * 1024), "type": "coordinator"})
    assert (status, body["code"]) == (413, "PAYLOAD_TOO_LARGE") and "262144" in body["error"], body


async def test_without_a_runner_promotions_fail_closed_with_503(db_url: str, tmp_path: Path) -> None:
    async with served(db_url, tmp_path, alive=False) as rig:
        status, body = await rig.call("POST", PROMOTE, SEED_PROMOTION)
        assert (status, body["code"], body["status"]) == (503, "CONTAINERS_UNAVAILABLE", 503), body
        assert "no runner" in body["error"]
        status, body = await rig.call("POST", "/api/workbench/vfs/projects/demo-app/promote-to-cloud",
                                      {"files": []})
        assert (status, body["code"]) == (503, "CONTAINERS_UNAVAILABLE")
        assert promotions_on_disk(rig) == [], "never a fake success"


async def test_a_read_only_token_may_not_promote(rig: Rig) -> None:
    reader = await rig.token_for("acme", scopes="read")
    status, body = await rig.call("POST", PROMOTE, SEED_PROMOTION, token=reader)
    assert (status, body["code"]) == (403, "INSUFFICIENT_SCOPE")
    assert promotions_on_disk(rig) == []
