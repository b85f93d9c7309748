"""The Kubernetes runner: the objects it sends (deadline, TTL, no token, non-root, labels, no secret of
Shepherd's, the clone credential in the init container alone) and what a user sees of a turn on a cluster (lines,
exit codes, stop leaving nothing, a run found again after a restart or a dropped log stream, the agent's work
back in Shepherd's copy, pause refused with why). The real kubernetes_asyncio client drives the loopback fake of
the API (tests/fakes/kubernetes.py), which runs pods as local process groups."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from adapters.runners import kubernetes_objects as objects
from adapters.runners.kubernetes import KubernetesRunner, seed_archive
from adapters.runners.kubernetes_handle import KubeHandle
from adapters.runners.kubernetes_objects import KubeSettings
from bot.settings import Settings
from core.runners import ExitReason, RunSpec, Seed
from core.runners.local import RunnerError
from tests.kubernetes_rig import KubernetesRig, make_kubernetes_rig

SECRET = "xoxb-kubernetes-test-secret"
CREDENTIAL = "AUTHORIZATION: basic c2hvcnQtbGl2ZWQtdG9rZW4="
LIMIT_S = 30.0


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[KubernetesRig]:
    monkeypatch.setenv("SHEPHERD_SLACK_BOT_TOKEN", SECRET)  # Shepherd's own secret, as in production
    made = await make_kubernetes_rig(tmp_path / "workspaces")
    made.workspace_root.mkdir(parents=True, exist_ok=True)
    try:
        yield made
    finally:
        await made.close()


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _repo(path: Path, files: dict[str, str], branch: str = "main") -> str:
    path.mkdir(parents=True)
    _git(path, "init", "-q", "-b", branch)
    for name, text in files.items():
        (path / name).write_text(text)
    _git(path, "add", "-A")
    _git(path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "base")
    return _git(path, "rev-parse", "HEAD")


async def seeded(rig: KubernetesRig, files: dict[str, str] | None = None) -> tuple[str, Path]:
    task_id = "task-" + uuid.uuid4().hex[:12]
    local = rig.workspace_root / task_id
    base = _repo(local, files or {"README.md": "hello\n"}, branch="shepherd/work")
    await rig.runner.seed(Seed(task_id=task_id, org_id="acme", local=local, work_branch="shepherd/work",
                               base_sha=base))
    return task_id, local


def turn(task_id: str, code: str, *, idle: float = 20.0, hard: float = 30.0, n: int = 1,
         runtime: str = "demo") -> RunSpec:
    env = {"PATH": "/host/only/bin", "HOME": "/root", "LANG": "C.UTF-8", "SHEPHERD_TASK_ID": task_id,
           "SHEPHERD_WORKSPACE": objects.WORKSPACE, "PYTHONUNBUFFERED": "1"}
    return RunSpec(argv=[sys.executable, "-c", code], cwd=Path(objects.WORKSPACE), env=env, idle_timeout=idle,
                   hard_timeout=hard, task_id=task_id, org_id="acme", turn=n, runtime=runtime)


async def read_all(handle: KubeHandle) -> list[str]:
    return [line async for line in handle.lines()]


async def within(aw: Any, limit: float = LIMIT_S) -> Any:
    return await asyncio.wait_for(aw, timeout=limit)


async def until(done: Callable[[], bool]) -> None:
    for _ in range(int(LIMIT_S / 0.05)):
        if done():
            return
        await asyncio.sleep(0.05)


def sent_jobs(rig: KubernetesRig, task_id: str, role: str = "turn") -> list[dict[str, Any]]:
    return [j for j in rig.fake.jobs_sent() if j["metadata"]["labels"].get(objects.TASK_LABEL) == task_id
            and j["metadata"]["labels"].get(objects.ROLE_LABEL) == role]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


# the objects, built without an engine


def test_a_turns_job_has_the_deadline_ttl_no_token_non_root_and_the_tasks_labels() -> None:
    settings = KubeSettings(namespace="agents", images={"claude": "ghcr.io/acme/claude:1"}, uid=4242,
                            job_ttl_s=900, deadline_grace_s=30, writable_root=frozenset({"aider"}))
    spec = turn("task-1", "print(1)", hard=100.4, n=3, runtime="claude")
    job = objects.turn_job(settings, spec, name="shepherd-task-1-3-abc")
    pod = job["spec"]["template"]["spec"]
    agent = pod["containers"][0]
    assert job["spec"]["activeDeadlineSeconds"] == 101 + 30
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["ttlSecondsAfterFinished"] == 900
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 4242
    assert agent["securityContext"] == {
        "runAsNonRoot": True, "allowPrivilegeEscalation": False, "privileged": False,
        "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True, "seccompProfile": {"type": "RuntimeDefault"}}
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels[objects.MANAGED_BY] == "shepherd"
        assert (labels[objects.ORG_LABEL], labels[objects.TASK_LABEL], labels[objects.TURN_LABEL]) == \
            ("acme", "task-1", "3")
    assert agent["image"] == "ghcr.io/acme/claude:1"
    assert agent["command"] == [sys.executable] and agent["args"] == ["-c", "print(1)"]
    assert agent["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    # core's allowlist exactly, less the host's PATH and HOME; home and /tmp are the pod's own emptyDirs
    assert env_of(agent) == {"LANG": "C.UTF-8", "SHEPHERD_TASK_ID": "task-1", "SHEPHERD_WORKSPACE": "/workspace",
                             "PYTHONUNBUFFERED": "1", "HOME": objects.HOME, "TMPDIR": objects.TMP}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["workspace"]["persistentVolumeClaim"]["claimName"] == objects.claim_name("task-1")
    assert "emptyDir" in volumes["tmp"] and "emptyDir" in volumes["home"]
    assert "initContainers" not in pod  # a follow-up turn finds its workspace on the claim
    other = objects.turn_job(settings, turn("task-1", "print(1)", runtime="aider"), name="x")
    assert other["spec"]["template"]["spec"]["containers"][0]["image"] == settings.image
    assert other["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is False


def test_the_clone_credential_is_in_the_init_container_alone() -> None:
    seed = Seed(task_id="task-1", org_id="acme", local=Path("/nowhere"), work_branch="shepherd/work",
                base_sha="a" * 40, source="https://github.com/acme/app.git", base_branch="main",
                credential={"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                            "GIT_CONFIG_VALUE_0": CREDENTIAL})
    job = objects.turn_job(KubeSettings(), turn("task-1", "print(1)"), name="x", seed=seed)
    pod = job["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert env_of(init)["GIT_CONFIG_VALUE_0"] == CREDENTIAL
    assert env_of(init)["SEED_SOURCE"] == "https://github.com/acme/app.git"
    assert CREDENTIAL not in json.dumps(pod["containers"]) and CREDENTIAL not in json.dumps(job["metadata"])
    assert init["securityContext"]["runAsNonRoot"] is True and init["securityContext"]["readOnlyRootFilesystem"]


def test_names_and_labels_fit_kubernetes_limits_and_stay_distinct() -> None:
    long_task = "task-" + "x" * 80
    for name in (objects.job_name(long_task, 12), objects.claim_name(long_task), objects.collect_job_name(long_task)):
        assert len(name) <= 63 and name == name.lower() and name[0].isalnum() and name[-1].isalnum()
    assert objects.label_value(long_task) != objects.label_value(long_task + "y")
    assert len(objects.label_value(long_task)) <= 63
    assert objects.label_value("acme") == "acme"
    assert objects.job_name("t", 1) != objects.job_name("t", 1)  # a retried turn never meets its first Job


def test_per_preset_images_are_read_from_the_setting_and_a_bad_entry_names_itself() -> None:
    settings = Settings(k8s_images="claude=ghcr.io/acme/claude:1, codex=ghcr.io/acme/codex:2",
                        k8s_storage_class="fast", k8s_writable_root="aider")
    made = settings.k8s_settings("agents")
    assert made.image_for("claude") == "ghcr.io/acme/claude:1" and made.image_for("demo") == made.image
    assert made.storage_class == "fast" and made.writable_root == {"aider"}
    with pytest.raises(ValueError, match="claude ghcr.io"):
        Settings(k8s_images="claude ghcr.io/acme/claude:1")


# turns on the fake cluster


async def test_a_turn_streams_its_lines_and_reports_its_exit_code(rig: KubernetesRig) -> None:
    task_id, _ = await seeded(rig)
    code = "import sys\nprint(open('README.md').read().strip())\nfor i in range(5): print(f'line {i}')\nsys.exit(4)"
    handle = await rig.runner.start(turn(task_id, code))
    assert handle.pid == 0 and handle.unit.startswith("shepherd-")
    assert await within(read_all(handle)) == ["hello", *[f"line {i}" for i in range(5)]]
    exit_ = await within(handle.wait())
    assert (exit_.reason, exit_.exit_code) == (ExitReason.EXITED, 4)
    assert rig.fake.refused == []
    (claim,) = [o for o in rig.fake.received if o["kind"] == "PersistentVolumeClaim"]
    assert claim["metadata"]["labels"][objects.TASK_LABEL] == task_id
    assert SECRET not in json.dumps(rig.fake.received)


async def test_a_turn_hands_its_lines_over_a_read_at_a_time_all_of_them_in_order(rig: KubernetesRig) -> None:
    """What a turn follows (`batches`): the lines the log stream gave, in lists, none lost, none twice."""
    task_id, _ = await seeded(rig)
    handle = await rig.runner.start(turn(task_id, "for n in range(300):\n    print(f'line {n}')"))
    reads = [read async for read in handle.batches()]
    assert all(reads) and [line for read in reads for line in read] == [f"line {n}" for n in range(300)]
    assert (await within(handle.wait())).exit_code == 0


async def test_stop_deletes_the_job_and_leaves_no_job_pod_or_process(rig: KubernetesRig) -> None:
    task_id, _ = await seeded(rig)
    child = ("import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])"
             "\nprint('ready', flush=True)\ntime.sleep(300)")
    handle = await rig.runner.start(turn(task_id, child))
    lines = handle.lines()
    assert await within(anext(lines)) == "ready"
    await within(handle.stop())
    assert (await within(handle.wait())).reason is ExitReason.STOPPED
    assert [j for j in rig.fake.jobs.values() if j["metadata"]["labels"][objects.TASK_LABEL] == task_id] == []
    assert [p for p in rig.fake.pods.values() if p.labels.get(objects.TASK_LABEL) == task_id] == []
    assert await rig.leftovers(task_id) == []


async def test_stop_also_ends_the_pods_of_a_job_deleted_by_hand_without_propagation(rig: KubernetesRig) -> None:
    """The API orphans a Job's pods by default (`kubectl delete` does not, a client does): the agent would go on."""
    task_id, _ = await seeded(rig)
    handle = await rig.runner.start(turn(task_id, "import time\nprint('up', flush=True)\ntime.sleep(300)"))
    assert await within(anext(handle.lines())) == "up"
    await rig.runner.api.batch.delete_namespaced_job(handle.unit, rig.settings.namespace)
    assert rig.fake.live_pods(task_id), "an orphaned pod goes on"
    await within(handle.stop())
    assert await rig.leftovers(task_id) == [] and not rig.fake.pods


async def test_pause_is_refused_with_409_and_why(rig: KubernetesRig) -> None:
    assert rig.runner.capabilities.pause is False and "freeze" in rig.runner.capabilities.why_no_pause
    task_id, _ = await seeded(rig)
    handle = await rig.runner.start(turn(task_id, "import time\nprint('up', flush=True)\ntime.sleep(300)"))
    with pytest.raises(RunnerError) as refused:
        await handle.pause()
    assert (refused.value.code, refused.value.status) == ("PAUSE_UNSUPPORTED", 409)
    await within(handle.stop())


SLOW = "import sys, time\nfor i in range(25):\n    print(f'step {i}', flush=True)\n    time.sleep(0.1)\nsys.exit(7)"


async def test_a_new_runner_finds_a_running_job_again_and_reports_its_real_exit(rig: KubernetesRig) -> None:
    task_id, _ = await seeded(rig)
    spec = turn(task_id, SLOW)
    handle = await rig.runner.start(spec)
    assert await within(anext(handle.lines())) == "step 0"
    await within(handle.detach())
    assert rig.fake.live_pods(task_id), "detaching ended the Job"
    await rig.fake.restart()  # the API server comes back too, as after a node's restart
    again = await within((await rig.new_runner()).attach(handle.unit, spec, since_s=time.time()))
    assert again is not None
    later = await within(read_all(again))
    assert later and later[-1] == "step 24" and "step 0" not in later
    assert len(later) == len(set(later))
    exit_ = await within(again.wait())
    assert (exit_.reason, exit_.exit_code) == (ExitReason.EXITED, 7)
    # a Job that ended while nobody watched reports its outcome at once; one that is gone is None
    ended = await within((await rig.new_runner()).attach(handle.unit, spec, since_s=time.time()))
    assert ended is not None and (await within(ended.wait())).exit_code == 7
    assert await (await rig.new_runner()).attach("shepherd-nothing-1-abcdef", spec, since_s=time.time()) is None
    other = turn("task-somebody-else", SLOW)
    assert await (await rig.new_runner()).attach(handle.unit, other, since_s=time.time()) is None


async def test_a_dropped_log_stream_is_opened_again_without_losing_or_repeating_lines(rig: KubernetesRig) -> None:
    task_id, _ = await seeded(rig)
    handle = await rig.runner.start(turn(task_id, SLOW))
    seen: list[str] = []

    async def follow() -> None:
        async for line in handle.lines():
            seen.append(line)

    reader = asyncio.get_running_loop().create_task(follow())
    await within(until(lambda: len(seen) >= 5))
    await rig.fake.drop_log_streams()
    await within(until(lambda: len(seen) >= 12))
    await rig.fake.drop_log_streams()
    await within(reader)
    assert seen == [f"step {i}" for i in range(25)]
    assert (await within(handle.wait())).exit_code == 7


async def test_a_job_past_its_engine_deadline_is_a_hard_timeout_when_found_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = await make_kubernetes_rig(tmp_path / "ws", settings=KubeSettings(namespace="a", deadline_grace_s=0))
    made.workspace_root.mkdir(parents=True)
    try:
        task_id, _ = await seeded(made)
        spec = turn(task_id, "import time\nprint('up', flush=True)\ntime.sleep(300)", hard=1.0)
        handle = await made.runner.start(spec)
        await within(handle.detach())  # nobody watches: the engine's deadline ends it
        await within(until(lambda: not made.fake.live_pods(task_id)))
        again = await within((await made.new_runner()).attach(handle.unit, spec, since_s=time.time()))
        assert again is not None
        assert (await within(again.wait())).reason is ExitReason.HARD_TIMEOUT
        assert await made.leftovers(task_id) == []
    finally:
        await made.close()


async def test_an_image_that_cannot_be_pulled_ends_the_turn_saying_why(tmp_path: Path) -> None:
    made = await make_kubernetes_rig(tmp_path / "ws", missing_images=("ghcr.io/acme/nope:1",),
                                     settings=KubeSettings(namespace="a", image="ghcr.io/acme/nope:1"))
    made.workspace_root.mkdir(parents=True)
    try:
        task_id, _ = await seeded(made)
        handle = await made.runner.start(turn(task_id, "print('never')"))
        lines = await within(read_all(handle))
        assert any("ErrImagePull" in line for line in lines)
        assert (await within(handle.wait())).reason is ExitReason.LOST
        assert await made.leftovers(task_id) == [] and not made.fake.jobs
    finally:
        await made.close()


EDIT = """
import os, pathlib
pathlib.Path('README.md').write_text('changed by the agent\\n')
os.remove('old.txt')
pathlib.Path('sub').mkdir()
pathlib.Path('sub/new.txt').write_text('new\\n')
print('edited')
"""


async def test_collect_brings_the_agents_work_back_through_a_helper_job_that_leaves_nothing(
        rig: KubernetesRig) -> None:
    task_id, local = await seeded(rig, {"README.md": "hello\n", "old.txt": "old\n"})
    base = _git(local, "rev-parse", "HEAD")
    handle = await rig.runner.start(turn(task_id, EDIT))
    assert await within(read_all(handle)) == ["edited"]
    await within(handle.wait())
    await within(rig.runner.collect(task_id, local))
    assert (local / "README.md").read_text() == "changed by the agent\n"
    assert not (local / "old.txt").exists() and (local / "sub" / "new.txt").read_text() == "new\n"
    assert _git(local, "rev-parse", "HEAD") == base
    (helper,) = sent_jobs(rig, task_id, role="collect")
    mounts = helper["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert next(m for m in mounts if m["name"] == "workspace")["readOnly"] is True
    assert helper["metadata"]["name"] not in rig.fake.jobs  # deleted once read
    await rig.runner.discard(task_id)
    assert objects.claim_name(task_id) not in rig.fake.claims and not rig.fake.jobs


async def test_the_first_turn_clones_the_source_with_a_credential_the_agent_never_sees(
        rig: KubernetesRig, tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    base = _repo(origin, {"app.py": "print('app')\n"})
    _git(origin, "checkout", "-q", "-b", "later")
    (origin / "app.py").write_text("print('later')\n")
    _git(origin, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "later")
    task_id = "task-" + uuid.uuid4().hex[:12]
    local = rig.workspace_root / task_id
    local.mkdir()
    credential = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader", "GIT_CONFIG_VALUE_0": CREDENTIAL}
    await rig.runner.seed(Seed(task_id=task_id, org_id="acme", local=local, work_branch="shepherd/work",
                               base_sha=base, source=origin.as_uri(), base_branch="main", credential=credential))
    show = ("import os, subprocess\nprint(open('app.py').read().strip())\n"
            "print(subprocess.run(['git', 'rev-parse', '--abbrev-ref', 'HEAD'], capture_output=True, text=True)"
            ".stdout.strip())\nprint(any('" + CREDENTIAL[:12] + "' in v for v in os.environ.values()))")
    first = await rig.runner.start(turn(task_id, show))
    assert await within(read_all(first)) == ["print('app')", "shepherd/work", "False"]
    assert (await within(first.wait())).exit_code == 0
    (job,) = sent_jobs(rig, task_id)
    pod = job["spec"]["template"]["spec"]
    assert CREDENTIAL in json.dumps(pod["initContainers"]) and CREDENTIAL not in json.dumps(pod["containers"])
    second = await rig.runner.start(turn(task_id, "print(open('app.py').read().strip())", n=2))
    assert await within(read_all(second)) == ["print('app')"]
    await within(second.wait())
    assert "initContainers" not in sent_jobs(rig, task_id)[1]["spec"]["template"]["spec"]


async def test_shepherds_copy_near_the_size_cap_reaches_the_first_turn(rig: KubernetesRig) -> None:
    """With nothing to clone (a lasting token, or no repository) the workspace travels in the init container's
    environment; one variable holds at most 128 KiB (Linux's MAX_ARG_STRLEN): a single one failed every copy
    over ~96 KiB with E2BIG, though the cap promised 512 KiB."""
    blob = os.urandom(150_000).hex()  # gzip halves hex of random bytes, no more; .git holds it once again
    task_id, local = await seeded(rig, {"blob.txt": blob})
    assert 256 * 1024 < len(await seed_archive(local)) <= objects.MAX_SEED_ARCHIVE_BYTES
    handle = await rig.runner.start(turn(task_id, "print(len(open('blob.txt').read()))"))
    assert await within(read_all(handle)) == [str(len(blob))]
    assert (await within(handle.wait())).exit_code == 0
    (job,) = sent_jobs(rig, task_id)
    (init,) = job["spec"]["template"]["spec"]["initContainers"]
    assert max(len(f"{e['name']}={e['value']}") for e in init["env"]) < 128 * 1024


async def test_the_fake_refuses_a_job_without_deadline_token_opt_out_or_non_root(rig: KubernetesRig) -> None:
    """The fake's checks are live: a runner that dropped one of these would fail every test above."""
    good = objects.turn_job(rig.settings, turn("task-x", "print(1)"), name="shepherd-check")
    spec = good["spec"]["template"]["spec"]
    breaks = [
        ("activeDeadlineSeconds", lambda j: j["spec"].pop("activeDeadlineSeconds")),
        ("automountServiceAccountToken", lambda j: j["spec"]["template"]["spec"].update(
            automountServiceAccountToken=True)),
        ("runAsNonRoot", lambda j: (j["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot"),
                                    j["spec"]["template"]["spec"]["containers"][0]["securityContext"].pop(
                                        "runAsNonRoot"))),
        ("labels", lambda j: j["metadata"]["labels"].pop(objects.TASK_LABEL)),
        ("secret", lambda j: j["spec"]["template"]["spec"]["containers"][0]["env"].append(
            {"name": "X", "value": SECRET})),
    ]
    assert spec["automountServiceAccountToken"] is False
    for what, breaking in breaks:
        body = json.loads(json.dumps(good))
        breaking(body)
        with pytest.raises(ApiException) as refused:
            await rig.runner.api.batch.create_namespaced_job(rig.settings.namespace, body)
        assert refused.value.status == 422, what
    assert rig.fake.jobs == {}


async def test_from_settings_reads_the_kubeconfig(rig: KubernetesRig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(rig.kubeconfig))
    rig.fake.rules_namespace = "team-a"  # where the worker's Role is bound in this cluster
    runner = await KubernetesRunner.from_settings(Settings(k8s_namespace="team-a"))
    try:
        assert runner.settings.namespace == "team-a"
        jobs = await runner.api.batch.list_namespaced_job("team-a")
        assert isinstance(jobs, client.V1JobList)
    finally:
        await runner.close()


def test_only_a_token_that_expires_by_itself_goes_to_the_clusters_clone_step() -> None:
    from adapters.github.auth import GitHubApp, GitHubAuth
    from core.runners.credentials import StaticToken
    from core.tasks.launch import engine_clone

    url, auth = "https://github.com/acme/app.git", {"http.extraHeader": "Authorization: Basic c2VjcmV0"}
    assert engine_clone(url, auth, short_lived=True) == (url, auth)  # an App's installation token: an hour
    assert engine_clone(url, auth, short_lived=False) == (None, {})  # a personal token: Shepherd's copy travels
    assert engine_clone(url, {}, short_lived=False) == (url, {})  # a public repository needs no token
    assert engine_clone(None, {}, short_lived=True) == (None, {})
    assert StaticToken("ghp_lasting").short_lived is False
    assert GitHubAuth(None, token="ghp_lasting").short_lived is False  # type: ignore[arg-type]
    assert GitHubAuth(None, app=GitHubApp(app_id="1", private_key="k")).short_lived is True  # type: ignore[arg-type]


IGNORED = """
import pathlib
pathlib.Path('.gitignore').write_text('node_modules/\\n')
pathlib.Path('node_modules/dep').mkdir(parents=True)
pathlib.Path('node_modules/dep/index.js').write_text('x' * 100000)
pathlib.Path('app.js').write_text('kept\\n')
print('installed')
"""


async def test_collect_leaves_out_what_git_ignores_so_dependencies_do_not_overflow_the_log(
        rig: KubernetesRig) -> None:
    task_id, local = await seeded(rig, {"README.md": "hello\n"})
    handle = await rig.runner.start(turn(task_id, IGNORED))
    assert await within(read_all(handle)) == ["installed"]
    await within(handle.wait())
    await within(rig.runner.collect(task_id, local))
    assert (local / "app.js").read_text() == "kept\n" and (local / ".gitignore").exists()
    assert (local / "README.md").read_text() == "hello\n"
    assert not (local / "node_modules").exists()  # ignored: never on the helper's log
    await rig.runner.discard(task_id)
