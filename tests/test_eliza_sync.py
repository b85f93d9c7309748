"""Syncing a coding container's workspace (shared/seeds/000): the seed's roundtrip as written, patches applied for
real with git (against the snapshot, three-way where the workspace moved, a conflict 409 changing nothing), pulls
in base64, paths refused — over real HTTP, real stores and real git. The container is made here from core rows
(its Task and CodingContainer) and its workspace cloned from the promotion as the runner does."""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from core.ids import new_id
from core.store.models import CodingContainer, ContainerSync, Task
from tests.test_eliza_promotions import ISO_MS, PROMOTE, served
from tests.test_rest_coder import Rig

LINES = "".join(f"line {i}\n" for i in range(1, 21))
SEED_SYNC = {  # the seed's example, as written
    "direction": "roundtrip",
    "target": {
        "sourceKind": "project",
        "projectId": "demo-app",
        "baseRevision": "snapshot-id",
    },
    "changedFiles": [
        {"path": "src/index.ts", "contents": "export {};\n", "encoding": "utf-8"}
    ],
    "deletedFiles": [],
    "patches": [],
}


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with served(db_url, tmp_path) as r:
        yield r


class Box:
    def __init__(self, id: str, task_id: str, workspace: Path) -> None:
        self.id, self.task_id, self.workspace = id, task_id, workspace

    def files(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.workspace)): p.read_bytes() for p in sorted(self.workspace.rglob("*"))
                if p.is_file() and ".git" not in p.relative_to(self.workspace).parts}

    def commit(self, message: str) -> str:
        for args in (["add", "-A"], ["-c", "user.name=agent", "-c", "user.email=a@x", "commit", "-qm", message]):
            subprocess.run(["git", *args], cwd=self.workspace, check=True, capture_output=True)
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=self.workspace, check=True, capture_output=True,
                              text=True).stdout.strip()


async def container(rig: Rig, files: list[dict[str, Any]] | None = None, org: str = "acme") -> Box:
    """A promotion of `files` (the seed's by default), a container's task and row, its workspace cloned."""
    token = rig.token if org == "acme" else await rig.token_for(org)
    source = {"sourceKind": "project", "projectId": "demo-app", "snapshotId": "snapshot-id",
              "files": files if files is not None else [{"path": "src/plugin.ts", "contents": "export default 1;\n"},
                                                        {"path": "notes.txt", "contents": LINES}]}
    status, body = await rig.call("POST", PROMOTE, {"source": source}, token=token)
    assert status == 200, body
    principal = await rig.shepherd.tokens.authenticate(token)
    promotion = await rig.shepherd.promotions.get(principal, body["data"]["promotionId"])
    view = await rig.shepherd.tasks.create(principal, prompt="Implement the app", runtime="demo")
    box_id = new_id("container")
    async with rig.shepherd.db.write() as session:
        session.add(CodingContainer(id=box_id, org_id=org, task_id=view.task.id, promotion_id=promotion.id,
                                    agent="codex", workspace_path=promotion.workspace_path, created_by="test"))
    workspace = rig.root / "ws" / view.task.id
    subprocess.run(["git", "clone", "-q", str(rig.shepherd.promotions.repo_path(promotion)), str(workspace)],
                   check=True, capture_output=True)
    return Box(box_id, view.task.id, workspace)


BINARY = ("diff --git a/bin.dat b/bin.dat\nnew file mode 100644\nindex 0000000000000000000000000000000000000000.."
          "fa76fd43f92c4d4950cd95da090a30aee4d70c5f\nGIT binary patch\nliteral 9\nQcmZQzOv=nlEUNqu01PGrh5!Hn\n\n"
          "literal 0\nHcmV?d00001\n\n")  # `git diff --binary` of a new 9-byte file


def sync_path(box: Box) -> str:
    return f"/api/cloud/coding-containers/{box.id}/sync"


def diff(old: str, new: str, path: str = "notes.txt") -> str:
    """A unified diff as `git diff` writes it, made by git itself."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp, "a"), Path(tmp, "b")
        a.write_text(old)
        b.write_text(new)
        out = subprocess.run(["git", "diff", "--no-index", "--", "a", "b"], cwd=tmp, capture_output=True,
                             text=True).stdout
    return out.replace("a/a", f"a/{path}").replace("b/b", f"b/{path}")


def edit(text: str, line: int, new: str) -> str:
    lines = text.splitlines(keepends=True)
    lines[line - 1] = new + "\n"
    return "".join(lines)


async def test_the_seeds_roundtrip_writes_the_file_and_answers_what_changed_in_base64(rig: Rig) -> None:
    box = await container(rig)
    status, body = await rig.call("POST", sync_path(box), SEED_SYNC)
    assert status == 202, body
    assert set(body) == {"success", "data"} and body["success"] is True
    data = body["data"]
    assert set(data) == {"syncId", "containerId", "status", "direction", "target", "changedFiles", "deletedFiles",
                         "patches", "createdAt"}
    assert data["syncId"].startswith("sync-") and data["containerId"] == box.id
    assert (data["status"], data["direction"]) == ("ready", "roundtrip")
    assert data["target"] == {"sourceKind": "project", "projectId": "demo-app", "baseRevision": "snapshot-id"}
    assert data["changedFiles"] == [{"path": "src/index.ts", "contents": "ZXhwb3J0IHt9Owo=", "encoding": "base64"}]
    assert (data["deletedFiles"], data["patches"]) == ([], [])
    assert ISO_MS.match(data["createdAt"])
    assert (box.workspace / "src" / "index.ts").read_text() == "export {};\n", "written to the workspace"
    async with rig.shepherd.db.read() as session:
        rows = (await session.exec(select(ContainerSync))).all()
    assert [(r.id, r.container_id, r.direction, r.changed, r.base_revision) for r in rows] == [
        (data["syncId"], box.id, "roundtrip", 1, "snapshot-id")]


async def test_pull_exports_what_changed_since_the_snapshot_or_a_later_commit(rig: Rig) -> None:
    box = await container(rig)
    (box.workspace / "src" / "plugin.ts").write_text("export default 2;\n")  # the agent's work
    (box.workspace / "notes.txt").unlink()
    (box.workspace / "new").mkdir()
    (box.workspace / "new" / "bin.dat").write_bytes(b"\x00\x01\xfe")
    status, body = await rig.call("POST", sync_path(box), {"direction": "pull"})
    assert status == 202, body
    got = {f["path"]: base64.b64decode(f["contents"]) for f in body["data"]["changedFiles"]}
    assert got == {"src/plugin.ts": b"export default 2;\n", "new/bin.dat": b"\x00\x01\xfe"}
    assert {f["encoding"] for f in body["data"]["changedFiles"]} == {"base64"}
    assert body["data"]["deletedFiles"] == ["notes.txt"]
    assert body["data"]["target"] == {"sourceKind": "project", "projectId": "demo-app"}

    # From a commit of the workspace, only what came after it.
    sha = box.commit("agent: first part")
    (box.workspace / "later.txt").write_text("later\n")
    status, body = await rig.call("POST", sync_path(box), {"direction": "pull", "target": {"baseRevision": sha}})
    assert status == 202, body
    assert [f["path"] for f in body["data"]["changedFiles"]] == ["later.txt"] and body["data"]["deletedFiles"] == []

    status, body = await rig.call("POST", sync_path(box), {"direction": "pull", "target": {"baseRevision": "nope"}})
    assert (status, body["code"]) == (409, "UNKNOWN_REVISION") and "snapshotId" in body["error"]
    status, body = await rig.call("POST", sync_path(box), {"direction": "pull",
                                                           "target": {"baseRevision": "0" * 40}})
    assert (status, body["code"]) == (409, "UNKNOWN_REVISION")


async def test_a_patch_against_the_snapshot_applies(rig: Rig) -> None:
    box = await container(rig)
    patch = diff(LINES, edit(LINES, 3, "line three"))
    status, body = await rig.call("POST", sync_path(box), {"direction": "push", "patches": [patch]})
    assert status == 202, body
    assert (box.workspace / "notes.txt").read_text() == edit(LINES, 3, "line three")
    assert body["data"]["patches"] == [patch] and body["data"]["changedFiles"] == []

    # A new file by patch, in the object form too.
    new = ("diff --git a/docs/new.md b/docs/new.md\nnew file mode 100644\n--- /dev/null\n+++ b/docs/new.md\n"
           "@@ -0,0 +1 @@\n+hello\n")
    status, body = await rig.call("POST", sync_path(box), {"direction": "push", "patches": [{"patch": new}],
                                                           "deletedFiles": ["src/plugin.ts"]})
    assert status == 202, body
    assert (box.workspace / "docs" / "new.md").read_text() == "hello\n"
    assert not (box.workspace / "src").exists(), "the deleted file is gone, and its emptied folder"
    assert body["data"]["deletedFiles"] == ["src/plugin.ts"]


async def test_a_three_way_merge_that_resolves_cleanly_applies(rig: Rig) -> None:
    box = await container(rig)
    moved = edit(LINES, 1, "line one, by the agent")
    (box.workspace / "notes.txt").write_text(moved)  # the workspace moved since the snapshot
    patch = diff(LINES, edit(LINES, 18, "line eighteen, by the client"))  # against the snapshot
    status, body = await rig.call("POST", sync_path(box), {"direction": "roundtrip", "patches": [patch],
                                                           "target": {"baseRevision": "snapshot-id"}})
    assert status == 202, body
    assert (box.workspace / "notes.txt").read_text() == edit(moved, 18, "line eighteen, by the client")
    exported = {f["path"]: base64.b64decode(f["contents"]).decode() for f in body["data"]["changedFiles"]}
    assert exported == {"notes.txt": edit(moved, 18, "line eighteen, by the client")}


async def test_a_conflicting_patch_is_409_naming_the_path_and_changes_nothing(rig: Rig) -> None:
    box = await container(rig)
    (box.workspace / "notes.txt").write_text(edit(LINES, 5, "line five, by the agent"))
    before = box.files()
    request = {"direction": "push",
               "changedFiles": [{"path": "src/other.ts", "contents": "x"}], "deletedFiles": ["src/plugin.ts"],
               "patches": [diff(LINES, edit(LINES, 5, "line five, by the client"))]}
    status, body = await rig.call("POST", sync_path(box), request)
    assert (status, body["code"], body["status"]) == (409, "PATCH_CONFLICT", 409), body
    assert "notes.txt" in body["error"]
    assert box.files() == before, "nothing half-applied: neither the file nor the deletion"

    # A patch whose context is not in its base at all conflicts too, before anything is written.
    stale = diff("other\ntext\n", "other\nTEXT\n")
    status, body = await rig.call("POST", sync_path(box), {"direction": "push", "patches": [stale],
                                                           "changedFiles": [{"path": "z", "contents": "z"}]})
    assert (status, body["code"]) == (409, "PATCH_CONFLICT") and "notes.txt" in body["error"], body
    assert box.files() == before
    async with rig.shepherd.db.read() as session:
        assert (await session.exec(select(ContainerSync))).all() == [], "a refused sync is not recorded as done"


@pytest.mark.parametrize("request_body, code", [
    ({"direction": "push", "changedFiles": [{"path": "../escape", "contents": "x"}]}, "INVALID_PATH"),
    ({"direction": "push", "changedFiles": [{"path": "/tmp/abs", "contents": "x"}]}, "INVALID_PATH"),
    ({"direction": "push", "changedFiles": [{"path": ".git/hooks/post-checkout", "contents": "x"}]}, "INVALID_PATH"),
    ({"direction": "push", "deletedFiles": ["../../etc/passwd"]}, "INVALID_PATH"),
    ({"direction": "push", "deletedFiles": [{"path": ".git/HEAD"}]}, "INVALID_PATH"),
    ({"direction": "push", "patches": ["--- a/../escape\n+++ b/../escape\n@@ -1 +1 @@\n-a\n+b\n"]}, "INVALID_PATH"),
    ({"direction": "push", "patches": ["--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-a\n+b\n"]}, "INVALID_PATH"),
    ({"direction": "push", "patches": ["diff --git a/.git/config b/.git/config\n--- a/.git/config\n+++ b/.git/config\n"
                                       "@@ -1 +1 @@\n-a\n+b\n"]}, "INVALID_PATH"),
    ({"direction": "push", "patches": ["diff --git a/l b/l\nnew file mode 120000\n--- /dev/null\n+++ b/l\n"
                                       "@@ -0,0 +1 @@\n+/etc\n"]}, "INVALID_PATCH"),
    # git drops a .git component at any depth, in any case or NTFS spelling, without failing: a fake 202 before
    ({"direction": "push", "changedFiles": [{"path": "sub/.git/config", "contents": "x"}]}, "INVALID_PATH"),
    ({"direction": "push", "changedFiles": [{"path": ".GIT/config", "contents": "x"}]}, "INVALID_PATH"),
    ({"direction": "push", "changedFiles": [{"path": "git~1/config", "contents": "x"}]}, "INVALID_PATH"),
    ({"direction": "push", "changedFiles": [{"path": "a/" + "n" * 256, "contents": "x"}]}, "INVALID_PATH"),
    ({"direction": "push", "changedFiles": [{"path": "a/.git. /x", "contents": "x"}]}, "INVALID_PATH"),
    # a binary patch names its paths only in its quoted `diff --git` header (409 with no path named before)
    ({"direction": "push", "patches": [BINARY.replace("diff --git a/bin.dat b/bin.dat",
                                                      'diff --git "a/../../bin.dat" "b/../../bin.dat"')]},
     "INVALID_PATH"),
    ({"direction": "push", "patches": [BINARY.replace("diff --git a/bin.dat b/bin.dat",
                                                      'diff --git "a/.git/hooks/x" "b/.git/hooks/x"')]},
     "INVALID_PATH"),
    # git reads the mode as octal: a leading zero is still a symlink (a fake 202 that wrote nothing before)
    ({"direction": "push", "patches": ["diff --git a/l b/l\nnew file mode 0120000\n--- /dev/null\n+++ b/l\n"
                                       "@@ -0,0 +1 @@\n+/etc/passwd\n\\ No newline at end of file\n"]},
     "INVALID_PATCH"),
    ({"direction": "push", "patches": ["this is not a diff"]}, "INVALID_PATCH"),
    ({"direction": "push", "patches": ["--- a/notes.txt\n+++ b/notes.txt\n@@ -1,3 +1,3 @@\n garbage"]},
     "INVALID_PATCH"),
    ({"direction": "sideways"}, "INVALID_DIRECTION"),
])
async def test_bad_paths_and_patches_are_400_and_change_nothing(rig: Rig, request_body: dict[str, Any],
                                                               code: str) -> None:
    box = await container(rig)
    before = box.files()
    status, body = await rig.call("POST", sync_path(box), request_body)
    assert (status, body["code"]) == (400, code), body
    assert box.files() == before and not (rig.root / "escape").exists()


async def test_a_symlink_the_agent_left_is_not_written_through(rig: Rig, tmp_path: Path) -> None:
    box = await container(rig)
    outside = tmp_path / "outside"
    outside.mkdir()
    (box.workspace / "link").symlink_to(outside)
    status, body = await rig.call("POST", sync_path(box), {"direction": "push",
                                                           "changedFiles": [{"path": "link/x", "contents": "x"}]})
    assert status == 202, body  # the client's `link/` is a folder: the symlink gives way to it
    assert list(outside.iterdir()) == [], "nothing written outside the workspace"
    assert (box.workspace / "link").is_dir() and not (box.workspace / "link").is_symlink()
    assert (box.workspace / "link" / "x").read_text() == "x"


async def test_a_binary_patch_applies(rig: Rig) -> None:
    box = await container(rig)
    status, body = await rig.call("POST", sync_path(box), {"direction": "push", "patches": [BINARY]})
    assert status == 202, body
    assert (box.workspace / "bin.dat").read_bytes() == b"\x00\x01binary\xff"


async def test_a_repository_the_agent_made_inside_the_workspace_is_a_409_not_a_500(rig: Rig) -> None:
    box = await container(rig)
    subprocess.run(["git", "init", "-q", str(box.workspace / "app")], check=True)  # as `create-app` tools do
    (box.workspace / "app" / "index.ts").write_text("x\n")
    status, body = await rig.call("POST", sync_path(box), {"direction": "pull"})
    assert (status, body["code"]) == (409, "WORKSPACE_CONFLICT"), body
    assert "app/" in body["error"] and "commit" in body["error"]


async def test_sync_is_refused_while_a_turn_runs_and_across_orgs(rig: Rig) -> None:
    box = await container(rig)
    async with rig.shepherd.db.write() as session:
        task = await session.get(Task, box.task_id)
        assert task is not None
        task.status = "running"
        session.add(task)
    status, body = await rig.call("POST", sync_path(box), SEED_SYNC)
    assert (status, body["code"]) == (409, "CONTAINER_BUSY") and "turn" in body["error"]
    assert not (box.workspace / "src" / "index.ts").exists()

    theirs = await container(rig, org="globex")
    status, body = await rig.call("POST", sync_path(theirs), {"direction": "pull"})
    assert (status, body["code"]) == (404, "CONTAINER_NOT_FOUND"), "another org's container is not found"
    status, body = await rig.call("POST", "/api/cloud/coding-containers/container-nope/sync", {"direction": "pull"})
    assert (status, body["code"]) == (404, "CONTAINER_NOT_FOUND")


async def test_without_a_runner_sync_fails_closed(db_url: str, tmp_path: Path) -> None:
    async with served(db_url, tmp_path, alive=False) as rig:
        status, body = await rig.call("POST", "/api/cloud/coding-containers/container-x/sync", SEED_SYNC)
        assert (status, body["code"]) == (503, "CONTAINERS_UNAVAILABLE")


def test_schemathesis_finds_nothing_on_the_container_routes(tmp_path: Path) -> None:
    """The promotion, shortcut and sync routes fuzzed against /openapi.json: no 5xx, no answer off its schema."""
    from tests.procs import Home, stop
    from tests.test_openapi_fuzz import FUZZ_CONFIG, SCHEMATHESIS

    home = Home(tmp_path, SHEPHERD_LOG_LEVEL="WARNING")
    proc = home.start()
    try:
        token = home.token()
        run = subprocess.run(
            [SCHEMATHESIS, "--config-file", str(FUZZ_CONFIG), "run", f"http://127.0.0.1:{home.port}/openapi.json",
             "-H", f"Authorization: Bearer {token}", "-H", "x-org-id: default",
             "--include-path-regex", "coding-containers|promote-to-cloud",
             "--checks", "all", "--exclude-checks", "positive_data_acceptance",
             "--max-time", "30", "--workers", "1", "--seed", "1", "--request-timeout", "10"],
            cwd=tmp_path, capture_output=True, text=True, timeout=180,
        )
    finally:
        stop(proc)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    tested = re.search(r"Tested: (\d+)", run.stdout)
    assert tested and int(tested.group(1)) >= 3, run.stdout[-3000:]
