"""How fast Shepherd takes Telegram webhook updates, beside a bare aiohttp floor, in the same run.

    .venv/bin/python bench/telegram_ingest.py [--requests 2000] [--concurrency 64] [--runs 3]

Processes on 127.0.0.1 besides this one, on SQLite (WAL, synchronous=FULL, as Shepherd runs it):
- Shepherd: `shepherd serve` with TELEGRAM_BOT_TOKEN and TELEGRAM_WEBHOOK_SECRET, its Bot API the loopback fake
  (tests/fakes/telegram_api.py, a process of its own). Before the answer: the secret header compared in constant
  time, the body read into python-telegram-bot's Update, its ledger row committed (fsync'd). After it: PTB routes
  the update (group chatter, no command) and it is settled.
- the floor (this file with --floor): a bare aiohttp handler that checks the same secret header with
  hmac.compare_digest and writes one row (the update_id and its payload) in its own committed, fsync'd transaction.

Each run posts R updates (each its own update_id: a group message that is no command) over C connections (after a
warm-up not counted), timing each from sending to the answer's last byte. The targets take turns; the table shows
medians over runs and Shepherd's ratio to the floor (target: req/s >= 0.8x).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import itertools
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from webhooks import free_port, load, p99, wait_ready  # noqa: E402 (bench/ is on the path)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SECRET = "bench-telegram-secret"
TOKEN = "4242:fake-token"
WARMUP = 200
_ids = itertools.count(1)


def updates(n: int) -> list[tuple[bytes, dict[str, str]]]:
    """Group chatter: acknowledged, routed, settled (Shepherd acts on none of it)."""
    out = []
    for _ in range(n):
        uid = next(_ids)
        body = {"update_id": uid, "message": {"message_id": uid, "date": int(time.time()), "text": "lunch?",
                                              "from": {"id": 7, "is_bot": False, "first_name": "Ada"},
                                              "chat": {"id": -100123, "type": "supergroup", "title": "dev"}}}
        out.append((json.dumps(body).encode(), {"Content-Type": "application/json",
                                                "X-Telegram-Bot-Api-Secret-Token": SECRET}))
    return out


def fake_api() -> None:
    """The loopback Bot API Shepherd starts against (getMe, setMyCommands, setWebhook): prints its base URL."""
    sys.path.insert(0, str(ROOT))
    from tests.fakes.telegram_api import FakeTelegram

    async def run() -> None:
        async with FakeTelegram(TOKEN) as fake:
            print(fake.api_url, flush=True)
            await asyncio.Event().wait()

    asyncio.run(run())


# --- the floor -----------------------------------------------------------------------------------------


def floor(port: int, db: Path) -> None:
    from aiohttp import web

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
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not hmac.compare_digest(given.encode(), SECRET.encode()):
            return web.Response(status=403)
        data = json.loads(await request.read())
        await asyncio.to_thread(write, str(data["update_id"]), json.dumps(data))  # the commit's fsync off the loop
        return web.json_response({"ok": True})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/telegram/webhook", handle)
    app.router.add_get("/healthz", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --- the load ----------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--floor", nargs=2, metavar=("PORT", "DB"), help=argparse.SUPPRESS)
    parser.add_argument("--fake-api", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake_api:
        fake_api()
        return 0
    if args.floor:
        floor(int(args.floor[0]), Path(args.floor[1]))
        return 0
    work = Path(tempfile.mkdtemp(prefix="shepherd-tg-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHEPHERD_", "SLACK_", "GITHUB_",
                                                                                  "TELEGRAM_"))}
    shepherd_port, floor_port = free_port(), free_port()
    env.update({"SHEPHERD_DATA_DIR": str(work / "data"), "SHEPHERD_PORT": str(shepherd_port),
                "SHEPHERD_LOG_LEVEL": "WARNING"})
    procs: list[subprocess.Popen[bytes]] = []
    try:
        api = subprocess.Popen([sys.executable, __file__, "--fake-api"], stdout=subprocess.PIPE, cwd=ROOT)
        procs.append(api)
        assert api.stdout is not None
        env.update({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": SECRET,
                    "TELEGRAM_API_URL": api.stdout.readline().decode().strip()})
        subprocess.run([str(BIN / "shepherd"), "migrate"], env=env, cwd=work, check=True, capture_output=True)
        targets = {"Shepherd": (shepherd_port, [str(BIN / "shepherd"), "serve"]),
                   "bare aiohttp + hmac": (floor_port, [sys.executable, __file__, "--floor", str(floor_port),
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
                url = f"http://127.0.0.1:{port}/telegram/webhook"
                asyncio.run(load(url, updates(WARMUP), args.concurrency))
                latencies, errors, seconds = asyncio.run(load(url, updates(args.requests), args.concurrency))
                failed[name] += errors
                results[name].append((len(latencies) / seconds, p99(latencies) * 1000))
        print(f"Telegram ingest: {args.requests} webhook updates (group chatter, no command), {args.concurrency} "
              f"connections, median of {args.runs} runs, SQLite")
        print(f"{'target':<28} {'req/s':>8} {'p99 ms':>8}")
        medians = {}
        for name, runs in results.items():
            rate, tail = statistics.median(r for r, _ in runs), statistics.median(t for _, t in runs)
            medians[name] = rate
            print(f"{name:<28} {rate:>8.0f} {tail:>8.1f}")
        ratio = medians["Shepherd"] / medians["bare aiohttp + hmac"]
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
