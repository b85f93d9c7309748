"""How fast Shepherd takes signed GitHub webhook deliveries, beside a bare aiohttp floor, in the same run.

    .venv/bin/python bench/github_ingest.py [--requests 2000] [--concurrency 64] [--runs 3]

Two processes on 127.0.0.1 besides this one, on SQLite (WAL, synchronous=FULL, as Shepherd runs it):
- Shepherd: `shepherd serve` with GITHUB_WEBHOOK_SECRET set. Before the answer: the body read, the signature
  verified (gidgethub's `Event.from_http`), the delivery routed, its ledger row committed (fsync'd). After it:
  the comment read for a command (there is none) and the delivery settled.
- the floor (this file with --floor): a bare aiohttp handler that verifies the same signature with gidgethub and
  writes one row (the delivery id and its payload) in its own committed, fsync'd transaction.

Each run posts R `issue_comment` deliveries (each with its own X-GitHub-Delivery, none with a command) over C
connections (after a warm-up not counted), timing each from sending to the answer's last byte. The targets take
turns, R runs each; the table shows medians over runs and Shepherd's ratio to the floor (target: req/s >= 0.8x).
The load generator is this process, on the same cores as the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

from webhooks import free_port, load, p99, wait_ready  # noqa: E402 (bench/ is on the path)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SECRET = "bench-webhook-secret"
WARMUP = 200
CORPUS = ROOT / "tests" / "corpus" / "github-webhooks" / "issue_comment" / "created.payload.json"


def comment_payload() -> bytes:
    if CORPUS.is_file():
        data = json.loads(CORPUS.read_text())
    else:  # the fields Shepherd reads, in GitHub's shape
        data = {"action": "created", "repository": {"full_name": "acme/api", "default_branch": "main"},
                "issue": {"number": 7, "title": "t", "body": "b"}, "sender": {"login": "octocat"},
                "comment": {"id": 1, "user": {"login": "octocat", "type": "User"}, "author_association": "OWNER"}}
    data["comment"]["body"] = "Thanks, this looks good to me."  # no command: acknowledged, read, settled
    return json.dumps(data).encode()


def signed(n: int) -> list[tuple[bytes, dict[str, str]]]:
    body = comment_payload()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return [(body, {"Content-Type": "application/json", "X-GitHub-Event": "issue_comment",
                    "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": signature})
            for _ in range(n)]


# --- the floor -----------------------------------------------------------------------------------------


def floor(port: int, db: Path) -> None:
    from aiohttp import web
    from gidgethub import ValidationFailure, sansio

    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS delivery (key TEXT PRIMARY KEY, payload TEXT)")

    lock = threading.Lock()  # one connection, one transaction at a time

    def write(key: str, payload: str) -> None:
        with lock:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO delivery VALUES (?, ?)", (key, payload))
            conn.execute("COMMIT")

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            event = sansio.Event.from_http(headers, raw, secret=SECRET)
        except ValidationFailure:
            return web.Response(status=401)
        await asyncio.to_thread(write, event.delivery_id, json.dumps(event.data))  # the commit's fsync off the loop
        return web.json_response({"ok": True}, status=202)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=25 * 1024 * 1024)
    app.router.add_post("/github/webhook", handle)
    app.router.add_get("/healthz", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --- the load ----------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--floor", nargs=2, metavar=("PORT", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        floor(int(args.floor[0]), Path(args.floor[1]))
        return 0
    work = Path(tempfile.mkdtemp(prefix="shepherd-gh-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHEPHERD_", "SLACK_", "GITHUB_"))}
    shepherd_port, floor_port = free_port(), free_port()
    env.update({"SHEPHERD_DATA_DIR": str(work / "data"), "SHEPHERD_PORT": str(shepherd_port),
                "SHEPHERD_LOG_LEVEL": "WARNING", "GITHUB_WEBHOOK_SECRET": SECRET})
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run([str(BIN / "shepherd"), "migrate"], env=env, cwd=work, check=True, capture_output=True)
        targets = {"Shepherd": (shepherd_port, [str(BIN / "shepherd"), "serve"]),
                   "bare aiohttp + gidgethub": (floor_port, [sys.executable, __file__, "--floor", str(floor_port),
                                                             str(work / "floor.db")])}
        for name, (port, cmd) in targets.items():
            log = work / f"{name.split()[0]}.log"
            proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=log.open("wb"), stderr=subprocess.STDOUT)
            procs.append(proc)
            wait_ready(f"http://127.0.0.1:{port}", proc, log)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
        failed: dict[str, int] = dict.fromkeys(targets, 0)
        for _ in range(args.runs):
            for name, (port, _cmd) in targets.items():
                url = f"http://127.0.0.1:{port}/github/webhook"
                asyncio.run(load(url, signed(WARMUP), args.concurrency))
                latencies, errors, seconds = asyncio.run(load(url, signed(args.requests), args.concurrency))
                failed[name] += errors
                results[name].append((len(latencies) / seconds, p99(latencies) * 1000))
        print(f"GitHub ingest: {args.requests} signed issue_comment deliveries (no command), {args.concurrency} "
              f"connections, median of {args.runs} runs, SQLite")
        print(f"{'target':<28} {'req/s':>8} {'p99 ms':>8}")
        medians = {}
        for name, runs in results.items():
            rate, tail = statistics.median(r for r, _ in runs), statistics.median(t for _, t in runs)
            medians[name] = rate
            print(f"{name:<28} {rate:>8.0f} {tail:>8.1f}")
        ratio = medians["Shepherd"] / medians["bare aiohttp + gidgethub"]
        print(f"Shepherd / floor: {ratio:.2f}x req/s (target >= 0.8x); answers that were not 2xx: {failed}")
        return 1 if any(failed.values()) else 0
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
