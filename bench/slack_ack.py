"""How fast Shepherd acknowledges signed Slack slash commands, beside a bare slack-bolt app.

    .venv/bin/python bench/slack_ack.py [--requests 2000] [--concurrency 64] [--runs 3] [--keep]

Two servers, each its own process on 127.0.0.1:
- Shepherd: `shepherd web` on the embedded SQLite with SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET set. Before
  the ack: bolt's signature check, then the delivery ledger row (one SQLite write transaction, fsync'd).
  After the ack, in the same process: the person looked up, `status` run, the reply written to the outbox.
- bare slack-bolt (bench/bare_bolt.py): the same bolt app and aiohttp adapter with a no-op listener.

Each run signs R slash commands (each with its own trigger_id, as Slack sends them) and posts them over C
concurrent connections (after 200 not counted), timing each from sending to the answer's last byte. The
targets alternate, R runs each; the table shows medians over runs and Shepherd's ratio to the bare app.
The load generator is this process, on the same 2 cores as the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import aiohttp
from slack_sdk.signature import SignatureVerifier

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SECRET = "bench-signing-secret"
WARMUP = 200


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer in 60 s")


def start_servers(work: Path) -> tuple[dict[str, str], list[subprocess.Popen[bytes]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHEPHERD_", "SLACK_"))}
    shepherd_port, bare_port = free_port(), free_port()
    env.update({"SHEPHERD_DATA_DIR": str(work / "data"), "SHEPHERD_PORT": str(shepherd_port),
                "SHEPHERD_LOG_LEVEL": "WARNING", "SHEPHERD_DEFAULT_ROLE": "operator",
                "SLACK_BOT_TOKEN": "xoxb-bench", "SLACK_SIGNING_SECRET": SECRET,
                "SLACK_API_URL": "http://127.0.0.1:9/api/"})  # nothing it answers needs Slack
    subprocess.run([str(BIN / "shepherd"), "migrate"], env=env, cwd=work, check=True, capture_output=True)
    procs = []
    for name, cmd, port in (("shepherd", [str(BIN / "shepherd"), "web"], shepherd_port),
                            ("bare", [sys.executable, str(ROOT / "bench" / "bare_bolt.py"), str(bare_port)],
                             bare_port)):
        log = work / f"{name}.log"
        proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        procs.append(proc)
        wait_ready(f"http://127.0.0.1:{port}", proc, log)
    urls = {"Shepherd": f"http://127.0.0.1:{shepherd_port}/slack/events",
            "bare slack-bolt": f"http://127.0.0.1:{bare_port}/slack/events"}
    return urls, procs


def signed(n: int, tag: str) -> Signed:
    verifier = SignatureVerifier(SECRET)
    ts = str(int(time.time()))
    out = []
    for i in range(n):
        body = urllib.parse.urlencode({
            "token": "legacy", "team_id": "T1", "channel_id": "C1", "user_id": f"U{i % 20:04d}",
            "user_name": f"user{i % 20}", "command": "/shepherd", "text": "status",
            "trigger_id": f"{tag}-{i}", "response_url": "https://hooks.slack.com/commands/T1/1/x"})
        out.append((body.encode(), {"Content-Type": "application/x-www-form-urlencoded",
                                    "X-Slack-Request-Timestamp": ts,
                                    "X-Slack-Signature": verifier.generate_signature(timestamp=ts, body=body)}))
    return out


Signed = list[tuple[bytes, dict[str, str]]]
Runs = dict[str, list[tuple[float, float, float]]]


async def load(url: str, requests: Signed, concurrency: int) -> tuple[list[float], int, float]:
    queue: asyncio.Queue[tuple[bytes, dict[str, str]]] = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)
    latencies: list[float] = []
    failures = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        while not queue.empty():
            body, headers = queue.get_nowait()
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    failures += 1
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return latencies, failures, elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def drained(db: Path, limit_s: float = 600) -> float:
    """Seconds until Shepherd has processed every acknowledged item (none left `received` in the ledger)."""
    began = time.perf_counter()
    while time.perf_counter() - began < limit_s:
        with sqlite3.connect(db, timeout=30) as conn:
            left = conn.execute("SELECT COUNT(*) FROM delivery WHERE status = 'received'").fetchone()[0]
        if not left:
            return time.perf_counter() - began
        await asyncio.sleep(0.2)
    raise SystemExit(f"Shepherd still had acknowledged items to process after {limit_s:.0f} s")


async def measure(urls: dict[str, str], args: argparse.Namespace, db: Path) -> tuple[Runs, int, list[float]]:
    """Each target's runs start on a quiet machine: Shepherd's work after the acks is finished first (and
    timed: acknowledged items processed per second, from the first request to the last item done)."""
    results: Runs = {name: [] for name in urls}
    processed: list[float] = []
    failures = 0
    for run in range(args.runs):
        for name, url in urls.items():
            tag = f"{name[:4]}-{run}-{time.monotonic_ns()}"
            await load(url, signed(WARMUP, tag + "w"), args.concurrency)
            if name == "Shepherd":
                await drained(db)
            latencies, failed, elapsed = await load(url, signed(args.requests, tag), args.concurrency)
            failures += failed
            results[name].append((pct(latencies, 0.50) * 1000, pct(latencies, 0.99) * 1000,
                                  len(latencies) / elapsed))
            line = (f"  run {run + 1} {name}: p50 {results[name][-1][0]:.1f} ms, p99 {results[name][-1][1]:.1f} ms, "
                    f"{results[name][-1][2]:.0f} req/s, {failed} not 200")
            if name == "Shepherd":
                processed.append(len(latencies) / (elapsed + await drained(db)))
                line += f"; all processed at {processed[-1]:.0f} items/s"
            print(line, flush=True)
    return results, failures, processed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the databases and server logs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shepherd-slack-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        urls, procs = start_servers(work)
        results, failures, processed = asyncio.run(measure(urls, args, work / "data" / "shepherd.db"))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    med = {name: tuple(statistics.median(r[i] for r in runs) for i in range(3)) for name, runs in results.items()}
    shep, bare = med["Shepherd"], med["bare slack-bolt"]
    print(f"\nSlack slash-command acks: {args.requests} signed requests × {args.runs} runs, {args.concurrency} "
          f"connections; commit {commit}, {os.cpu_count()} CPUs, Python {platform.python_version()} "
          "(the load generator shares the CPUs)\n")
    print("| target | ack p50 | ack p99 | requests/s |")
    print("| --- | ---: | ---: | ---: |")
    for name, (p50, p99, rps) in med.items():
        print(f"| {name} | {p50:.1f} ms | {p99:.1f} ms | {rps:.0f} |")
    print(f"| ratio Shepherd / bare | {shep[0] / bare[0]:.2f}x | {shep[1] / bare[1]:.2f}x | "
          f"{shep[2] / bare[2]:.2f}x |")
    print(f"\nShepherd processed the acknowledged commands (`status`: the person, the command, the reply in the "
          f"outbox) at {statistics.median(processed):.0f} items/s (median over runs), after the acks.")
    if failures:
        print(f"\n{failures} requests were not answered 200", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
