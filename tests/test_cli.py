"""The `shepherd` program as a user runs it: real processes, a real port, a real SQLite file."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.pgcluster import Cluster
from tests.procs import SHEPHERD, Home, stop, wait_for_line

pytestmark = pytest.mark.slow


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    yield Home(tmp_path)


def test_serve_with_no_settings_tells_how_to_make_a_token(home: Home) -> None:
    server = home.start()
    try:
        assert home.http("GET", "/healthz") == (200, {"status": "ok"})
        assert (home.root / ".shepherd" / "shepherd.db").exists(), "embedded SQLite lives in ./.shepherd"
    finally:
        out = stop(server)
    assert server.returncode == 0, out
    assert "no API token yet" in out and "token create" in out


def test_state_survives_a_crash_and_restart(home: Home) -> None:
    server = home.start()
    token = home.token()
    try:
        status, agent = home.http("POST", "/api/agents", {"name": "c", "type": "coordinator"}, token)
        assert status == 201
        url = f"/api/agents/{agent['id']}"
        assert home.http("POST", url + "/action", {"action": "suspend"}, token)[0] == 200
        assert home.http("POST", url + "/action", {"action": "set_autonomy", "params": {"level": 3}}, token)[0] == 200
    finally:
        stop(server, signal.SIGKILL)  # no graceful shutdown: what was acknowledged must be on disk
    server = home.start()
    try:
        status, got = home.http("GET", url, token=token)
        assert (status, got["status"], got["autonomyLevel"]) == (200, "SUSPENDED", 3)
    finally:
        stop(server)
    shown = home.run("console", "-c", f"agent {agent['id']}").stdout
    assert "agent.suspend" in shown and "agent.set_autonomy" in shown and "by token:" in shown


def test_console_and_rest_act_on_the_same_agents(home: Home) -> None:
    server = home.start()
    token = home.token()
    try:
        agent = home.http("POST", "/api/agents", {"name": "c", "type": "coordinator"}, token)[1]["id"]
        home.run("console", "-c", f"agent suspend {agent}")
        assert home.http("GET", f"/api/agents/{agent}", token=token)[1]["status"] == "SUSPENDED"
        home.run("console", "-c", f"autonomy {agent} 5")
        assert home.http("GET", f"/api/agents/{agent}", token=token)[1]["autonomyLevel"] == 5
        home.http("POST", f"/api/agents/{agent}/action", {"action": "resume"}, token)
        assert "ACTIVE" in home.run("console", "-c", "agents").stdout
        home.run("console", "-c", "project create api --repo acme/api")
        assert home.http("GET", "/api/projects", token=token)[1][0]["repo"] == "acme/api"
    finally:
        stop(server)


def test_console_exit_codes_and_repl(home: Home) -> None:
    ok = home.run("console", "-c", "help")
    assert ok.returncode == 0 and "agent create" in ok.stdout
    bad = home.run("console", "-c", "agnets", check=False)
    assert bad.returncode == 1 and "Did you mean `agents`?" in bad.stderr and "Traceback" not in bad.stderr
    repl = subprocess.run([SHEPHERD, "console"], cwd=home.root, env=home.env, capture_output=True, text=True,
                          input="project create web\nprojects\nexit\n", timeout=60)
    assert repl.returncode == 0 and "created project web" in repl.stdout and "web" in repl.stdout.split("\n", 2)[-1]


def test_token_create_prints_the_secret_last_and_stores_only_its_hash(home: Home) -> None:
    out = home.run("token", "create", "--org", "acme", "--scopes", "read", "--name", "ci").stdout
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("shp_") and "org acme" in out and "scopes read" in out
    assert secret.encode() not in (home.root / ".shepherd" / "shepherd.db").read_bytes()
    bad = home.run("token", "create", "--scopes", "root", check=False)
    assert bad.returncode == 1 and "unknown scope 'root'" in bad.stderr


def test_doctor_masks_secrets(home: Home) -> None:
    home.env["SHEPHERD_DATABASE_URL"] = "postgresql://shep:hunter2pw@127.0.0.1:1/shepherd"
    out = home.run("doctor", check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 1 and "UNREACHABLE" in text and "hunter2pw" not in text
    assert "postgresql://shep:********@127.0.0.1:1/shepherd" in text
    for cli in ("claude", "codex", "opencode", "aider"):
        assert cli in text
    home.env.pop("SHEPHERD_DATABASE_URL")
    assert "not created yet" in home.run("doctor").stdout
    home.run("migrate")
    assert "schema up to date" in home.run("doctor").stdout


def test_doctor_says_how_slack_is_set_up_and_never_shows_its_secrets(home: Home) -> None:
    home.run("migrate")
    assert "slack: off" in home.run("doctor").stdout
    home.env["SLACK_BOT_TOKEN"] = "xoxb-very-secret-token"
    out = home.run("doctor", check=False)
    assert out.returncode == 1 and "set SLACK_SIGNING_SECRET (HTTP) or SLACK_APP_TOKEN" in out.stdout
    home.env["SLACK_SIGNING_SECRET"] = "sign-secret-value"
    out = home.run("doctor")
    assert "slack: HTTP at <public URL>/slack/events" in out.stdout
    home.env["SLACK_APP_TOKEN"] = "xapp-secret-app-token"
    out = home.run("doctor")
    assert "slack: Socket Mode" in out.stdout and "SLACK_BOT_TOKEN=********" in out.stdout
    for secret in ("xoxb-very-secret-token", "sign-secret-value", "xapp-secret-app-token"):
        assert secret not in out.stdout + out.stderr


def test_doctor_says_how_shepherd_acts_on_github_and_a_bad_app_key_stops_it_at_start(home: Home) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    home.run("migrate")
    assert "github: https://api.github.com, no credentials" in home.run("doctor").stdout
    home.env["SHEPHERD_GITHUB_TOKEN"] = "ghp_doctor_secret"
    assert "token (SHEPHERD_GITHUB_TOKEN) for every repository" in home.run("doctor").stdout
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = home.root / "app.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    home.env.update(GITHUB_APP_ID="123456", GITHUB_APP_PRIVATE_KEY=str(pem))
    out = home.run("doctor")
    assert "GitHub App 123456 (GITHUB_APP_ID)" in out.stdout and "SHEPHERD_GITHUB_TOKEN is set but unused" in out.stdout
    assert "PRIVATE KEY" not in out.stdout + out.stderr and "ghp_doctor_secret" not in out.stdout
    home.env["GITHUB_APP_PRIVATE_KEY"] = str(home.root / "missing.pem")
    bad = home.run("serve", check=False)
    assert bad.returncode == 1 and "GITHUB_APP_PRIVATE_KEY" in bad.stderr and "cannot be read as a file" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_bad_settings_are_named(home: Home) -> None:
    home.env["SHEPHERD_PORT"] = "eighty"
    out = home.run("serve", check=False)
    assert out.returncode == 1 and "SHEPHERD_PORT" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("settings,named", [
    ({"SHEPHERD_RUNNER": "kubernetes", "SHEPHERD_K8S_KUBECONFIG": "missing-kubeconfig"}, "missing-kubeconfig"),
    ({"SHEPHERD_RUNNER": "kubernetes"}, "SHEPHERD_K8S_KUBECONFIG"),  # no kubeconfig and outside a cluster
    ({"SHEPHERD_RUNNER": "docker", "DOCKER_HOST": "ssh2://engine"}, "DOCKER_HOST"),
])
def test_a_runner_that_cannot_be_configured_is_named_by_doctor_and_stops_the_worker(
        home: Home, settings: dict[str, str], named: str) -> None:
    home.env.pop("KUBECONFIG", None)
    home.env.pop("DOCKER_HOST", None)
    home.env.update(settings, HOME=str(home.root))
    home.run("migrate")
    doctor = home.run("doctor", check=False)
    assert doctor.returncode == 1 and "NOT READY" in doctor.stdout and named in doctor.stdout
    worker = home.run("worker", check=False)
    assert worker.returncode == 1 and named in worker.stderr
    assert "Traceback" not in doctor.stdout + doctor.stderr + worker.stderr


def test_worker_and_web_run_and_stop_cleanly(home: Home) -> None:
    web = home.start("web")
    worker = home.start("worker")
    try:
        assert home.http("GET", "/healthz")[0] == 200
        wait_for_line(worker, "background services started")
        assert worker.poll() is None, "the worker keeps running until told to stop"
    finally:
        stop(worker)
        sout = stop(web)
    assert worker.returncode == 0
    assert web.returncode == 0, sout


@pytest.mark.postgres
def test_postgres_needs_migrate_then_serves(home: Home, pg_cluster: Cluster) -> None:
    async def create() -> None:
        conn = await asyncpg.connect(pg_cluster.admin_url)
        await conn.execute("CREATE DATABASE cli_fresh")
        await conn.close()

    asyncio.run(create())
    home.env["SHEPHERD_DATABASE_URL"] = pg_cluster.url("cli_fresh")
    refused = home.run("serve", check=False)
    assert refused.returncode == 1 and "migrate" in refused.stderr
    home.run("migrate")
    server = home.start("web")
    try:
        token = home.token()
        assert home.http("POST", "/api/agents", {"name": "c", "type": "coordinator"}, token)[0] == 201
        assert home.http("GET", "/readyz")[1]["database"] == "postgresql"
    finally:
        stop(server)
