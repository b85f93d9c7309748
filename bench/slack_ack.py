"""How fast Shepherd acknowledges signed Slack slash commands, beside a bare slack-bolt app, and how fast it
then answers them.

    .venv/bin/python bench/slack_ack.py [--store all|sqlite|postgres] [--requests 1000] [--concurrency 64]
                                        [--runs 3] [--keep]

Per store, three processes on 127.0.0.1 besides this one:
- Shepherd: `shepherd serve` (web and worker in one process; SQLite, or a durable PostgreSQL cluster from
  bench/pgserver.py) with SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET set and SLACK_API_URL on the fake Slack.
  Before the ack: bolt's signature check, then the delivery ledger row (one write transaction, fsync'd).
  After the ack, in the same process: the person looked up, `status` run, the reply written to the outbox
  and posted to Slack by the worker's dispatcher.
- bare slack-bolt (bench/bare_bolt.py): the same bolt app and aiohttp adapter with a no-op listener.
- the fake Slack Web API (bench/fake_slack.py, the test suite's fake), which counts the answers.

Each run signs R slash commands (each with its own trigger_id, as Slack sends them) and posts them over C
concurrent connections (after 200 not counted), timing each from sending to the answer's last byte. The
targets take turns, R runs each; the table shows medians over runs and Shepherd's ratio to the bare app.
After each Shepherd run the bench waits for every answer at the fake Slack: `status` commands answered
per second is R over the time from the first ack to the last answer posted. The load generator is this
process, on the same 2 cores as the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
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
from webhooks import free_port, wait_ready  # noqa: E402 (bench/ is on the path)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SECRET = "bench-signing-secret"
WARMUP = 200


def start_servers(work: Path, db_url: str | None, fake_api: str
                  ) -> tuple[dict[str, str], list[subprocess.Popen[bytes]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHEPHERD_", "SLACK_"))}
    shepherd_port, bare_port = free_port(), free_port()
    env.update({"SHEPHERD_DATA_DIR": str(work / "data"), "SHEPHERD_PORT": str(shepherd_port),
                "SHEPHERD_LOG_LEVEL": "WARNING", "SHEPHERD_DEFAULT_ROLE": "operator",
                "SLACK_BOT_TOKEN": "xoxb-bench", "SLACK_SIGNING_SECRET": SECRET,
                "SLACK_API_URL": fake_api})  # the answers go to the fake Slack, which counts them
    if db_url:
        env["SHEPHERD_DATABASE_URL"] = db_url
    subprocess.run([str(BIN / "shepherd"), "migrate"], env=env, cwd=work, check=True, capture_output=True)
    procs = []
    for name, cmd, port in (("shepherd", [str(BIN / "shepherd"), "serve"], shepherd_port),
                            ("bare", [sys.executable, str(ROOT / "bench" / "bare_bolt.py"), str(bare_port)],
                             bare_port)):
        log = work / f"{name}.log"
        proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        procs.append(proc)
        wait_ready(f"http://127.0.0.1:{port}", proc, log)
    urls = {"Shepherd": f"http://127.0.0.1:{shepherd_port}/slack/events",
            "bare slack-bolt": f"http://127.0.0.1:{bare_port}/slack/events"}
    return urls, procs


def start_fake_slack(work: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """bench/fake_slack.py in its own process: (process, its Web API URL, the URL that counts answers)."""
    ports = work / "fake-slack.ports"
    log = work / "fake-slack.log"
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_slack.py"), str(ports)],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not ports.exists() or not ports.read_text().endswith("\n"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the fake Slack did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    api_port, bench_port = ports.read_text().split()
    return proc, f"http://127.0.0.1:{api_port}/api/", f"http://127.0.0.1:{bench_port}/answers"


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


async def load(url: str, requests: Signed, concurrency: int) -> tuple[list[float], int, float, float]:
    """(latencies, requests not answered 200, seconds, the monotonic time of the first answer)."""
    queue: asyncio.Queue[tuple[bytes, dict[str, str]]] = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)
    latencies: list[float] = []
    failures = 0
    first = 0.0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures, first
        while not queue.empty():
            body, headers = queue.get_nowait()
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    failures += 1
            latencies.append(time.perf_counter() - started)
            first = first or time.monotonic()

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return latencies, failures, elapsed, first


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def answered(answers_url: str, expected: int, limit_s: float = 300) -> tuple[int, float]:
    """Wait until the fake Slack has received `expected` answers in all; (answers, time of the last one)."""
    began = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(answers_url) as resp:
                got = await resp.json()
            if got["count"] >= expected:
                return int(got["count"]), float(got["last"])
            if time.monotonic() - began > limit_s:
                raise SystemExit(f"Shepherd had answered {got['count']} of {expected} commands after {limit_s:.0f} s")
            await asyncio.sleep(0.1)


async def measure(urls: dict[str, str], args: argparse.Namespace, answers_url: str
                  ) -> tuple[Runs, int, list[float]]:
    """The targets take turns (Shepherd, bare, Shepherd, bare, ...). Each run starts on a quiet machine:
    Shepherd's work after the acks is finished first, and timed: `status` commands answered per second
    (the answer posted to the fake Slack), from the first ack to the last answer."""
    results: Runs = {name: [] for name in urls}
    processed: list[float] = []
    failures = 0
    expected = 0  # answers Shepherd owes so far: one per command it acknowledged
    for run in range(args.runs):
        for name, url in urls.items():
            tag = f"{name[:4]}-{run}-{time.monotonic_ns()}"
            _, warm_failed, _, _ = await load(url, signed(WARMUP, tag + "w"), args.concurrency)
            failures += warm_failed
            if name == "Shepherd":
                expected += WARMUP
                expected, _ = await answered(answers_url, expected)
            latencies, failed, elapsed, first_ack = await load(url, signed(args.requests, tag), args.concurrency)
            failures += failed
            results[name].append((pct(latencies, 0.50) * 1000, pct(latencies, 0.99) * 1000,
                                  len(latencies) / elapsed))
            line = (f"  run {run + 1} {name}: p50 {results[name][-1][0]:.1f} ms, p99 {results[name][-1][1]:.1f} ms, "
                    f"{results[name][-1][2]:.0f} req/s, {failed} not 200")
            if name == "Shepherd":
                expected += args.requests
                expected, last_answer = await answered(answers_url, expected)
                processed.append(args.requests / max(1e-6, last_answer - first_ack))
                line += f"; answered at {processed[-1]:.0f} items/s (first ack to last answer)"
            print(line, flush=True)
    await asyncio.sleep(2)  # anything answered twice would show up by now
    total, _ = await answered(answers_url, expected)
    if total != expected:
        print(f"  Shepherd posted {total} answers to {expected} acknowledged commands", flush=True)
        failures += abs(total - expected)
    return results, failures, processed


def bench_store(store: str, args: argparse.Namespace, work: Path) -> tuple[Runs, int, list[float]]:
    """Start the fake Slack, the store (a durable PostgreSQL cluster, or none for SQLite) and both servers."""
    import pgserver

    procs: list[subprocess.Popen[bytes]] = []
    pg = None
    try:
        fake, fake_api, answers_url = start_fake_slack(work)
        procs.append(fake)
        db_url = None
        if store == "postgres":
            pg = pgserver.PgServer.start(work / "pg")
            pg.psql("CREATE DATABASE shepherd")
            db_url = pg.url("shepherd")
        urls, servers = start_servers(work, db_url, fake_api)
        procs += servers
        return asyncio.run(measure(urls, args, answers_url))
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if pg is not None:
            pg.stop()


def main() -> int:
    import pgserver

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", choices=("all", "sqlite", "postgres"), default="all",
                        help="all: SQLite, then PostgreSQL if its server programs are installed (default)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the databases and server logs")
    args = parser.parse_args()
    stores = ["sqlite", "postgres"] if args.store == "all" else [args.store]
    if "postgres" in stores and pgserver.bindir() is None:
        print("PostgreSQL server programs not found: measuring SQLite only (apt-get install postgresql)")
        stores.remove("postgres")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    rows: list[str] = []
    failures = 0
    for store in stores:
        print(f"[{store}]", flush=True)
        work = Path(tempfile.mkdtemp(prefix="shepherd-slack-bench-"))
        work.chmod(0o755)  # PostgreSQL runs as its own user under it
        try:
            results, failed, processed = bench_store(store, args, work)
        finally:
            if args.keep:
                print(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
        failures += failed
        med = {name: tuple(statistics.median(r[i] for r in runs) for i in range(3)) for name, runs in results.items()}
        (p50, p99, rps), (b50, b99, brps) = med["Shepherd"], med["bare slack-bolt"]
        rate = statistics.median(processed)
        rows.append(f"| {store} | {p50:.1f} / {p99:.1f} ms | {b50:.1f} / {b99:.1f} ms | {p50 / b50:.2f}x "
                    f"{'met' if p50 / b50 <= 1.5 else '**not met**'} | {p99 / b99:.2f}x "
                    f"{'met' if p99 / b99 <= 2 else '**not met**'} | {rps:.0f} / {brps:.0f} | {rate:.0f} "
                    f"{'met' if rate >= 400 else '**not met**'} |")
    print(f"\nSlack slash-command acks: {args.requests} signed `/shepherd status` × {args.runs} runs per target, "
          f"taking turns, {args.concurrency} connections; medians over runs; commit {commit}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()} (the load generator shares the CPUs)\n")
    print("| store | Shepherd ack p50 / p99 | bare slack-bolt p50 / p99 | p50 ratio (<= 1.5x) | p99 ratio (<= 2x) "
          "| acks/s Shepherd / bare | `status` answered/s after the acks (>= 400) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    if failures:
        print(f"\n{failures} requests were not answered 200", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
