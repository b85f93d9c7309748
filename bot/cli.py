"""`shepherd`: serve, web, worker, console, migrate, token create, doctor."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from bot import runtime
from bot.leader import Elector, asyncpg_dsn, elector
from bot.migrate import current_revision, head_revision, upgrade
from bot.settings import Settings, mask_url
from bot.version import VERSION
from core.autonomy.policy import PolicyStore
from core.errors import ShepherdError
from core.people.access import Scope, parse_scopes
from core.shepherd import Shepherd
from core.store.db import Database

log = logging.getLogger("shepherd")

class _NotCreated(Exception):
    pass


class CliError(Exception):
    """A failure to report in one line and exit 1 (no traceback for the user)."""


def _problem(loc: tuple[int | str, ...], msg: str) -> str:
    """One bad setting, named as it is set (an alias such as GITHUB_APP_ID as it is; no name for a rule that
    spans settings)."""
    msg = msg.removeprefix("Value error, ")
    if not loc:
        return msg
    name = "_".join(str(p) for p in loc)
    return f"{name if name.isupper() else 'SHEPHERD_' + name.upper()}: {msg}"


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(_problem(e['loc'], e['msg']) for e in exc.errors())
        raise CliError(f"bad settings: {problems}") from None


def _logging(settings: Settings) -> None:
    from bot.logsafe import RedactingFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", settings.secrets()))
    logging.basicConfig(level=settings.log_level, handlers=[handler])
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per Bot API call (getUpdates every 25 s)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # two lines per job run; a missed run still shows
    if settings.log_level != "DEBUG":
        logging.getLogger("alembic").setLevel(logging.WARNING)


def _me() -> str:
    """How to call this program again, as the user can type it (`.venv/bin/shepherd` after `make run`)."""
    argv0 = Path(sys.argv[0])
    if shutil.which(argv0.name) and Path(shutil.which(argv0.name) or "").resolve() == argv0.resolve():
        return argv0.name
    try:
        return str(argv0.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(argv0)


async def _ensure_schema(settings: Settings) -> None:
    """Migrate the embedded store; refuse to run a shared store whose schema is behind."""
    url = settings.db_url
    try:
        current = await current_revision(url)
    except Exception as exc:
        if not settings.embedded:
            raise CliError(f"cannot reach the database at {mask_url(url)}: {exc}") from None
        current = None  # a new SQLite file: its folder may not exist yet
    if current == head_revision():
        return
    if settings.embedded:
        await asyncio.to_thread(upgrade, url)
        return
    raise CliError(
        f"database schema is at {current or 'nothing'}, this Shepherd needs {head_revision()}: "
        f"run `{_me()} migrate` first"
    )


def _core(settings: Settings, db: Database) -> Shepherd:
    policies = PolicyStore(settings.policies_path, expiry_s=settings.confirmation_ttl)
    shepherd = Shepherd(db, catalog=settings.catalog(), default_agent=settings.default_agent,
                        workspace_root=settings.workspace_root, policies=policies, repos=settings.repo_rules(),
                        timezone=settings.timezone, digest_always=settings.digest_always,
                        remind_after_s=settings.remind_after, idle_timeout_s=settings.task_idle_timeout,
                        stall_warn_s=settings.stall_warn_s(), waiting_note_s=settings.waiting_note_after,
                        retention=settings.retention(), agent_env=settings.runner_config().pass_env,
                        web_session_s=settings.ui_session)
    # Every process knows the jobs and sees who leads (`schedules`, /readyz); one that campaigns (bot.background)
    # puts its own elector in place.
    from bot.runners import capabilities
    from bot.scheduler import jobs

    shepherd.scheduling.jobs = jobs(settings, shepherd)
    # the dashboard's address for `dashboard` links: this server once it listens (bot.cli._serve), else the public
    # URL, else where `make run` serves
    shepherd.public_url = _public_url(settings, settings.port)
    shepherd.tasks.runner_capabilities = capabilities(settings.runner, sandbox=settings.sandbox)
    shepherd.scheduling.leadership = _elector(settings, db)
    return shepherd


def _elector(settings: Settings, db: Database) -> Elector:
    leader_url = settings.leader_database_url.get_secret_value() if settings.leader_database_url else None
    return elector(db, url=settings.db_url, data_dir=settings.data_dir, timeout=settings.leader_timeout,
                   leader_url=leader_url or None)


def _public_url(settings: Settings, port: int) -> str:
    if settings.public_url:
        return settings.public_url
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{port}"


async def _serve(settings: Settings, *, web_on: bool, worker_on: bool) -> None:
    await _ensure_schema(settings)
    db = Database(settings.db_url)
    shepherd = _core(settings, db)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    from aiohttp import web  # the web stack loads only for the commands that serve

    from bot.app import create_app
    from bot.background import Background

    runner: web.AppRunner | None = None
    background: Background | None = None
    callback_url: str | None = None
    try:
        if web_on:
            app = create_app(settings.db_url, max_body_bytes=settings.max_body_bytes, shepherd=shepherd,
                             slack=settings.slack(), github=settings.github(), telegram=settings.telegram(),
                             public_url=settings.public_url)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, settings.host, settings.port)
            try:
                await site.start()
            except OSError as exc:
                raise CliError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from None
            port = runner.addresses[0][1] if runner.addresses else settings.port
            callback_url = shepherd.public_url = _public_url(settings, port)
            log.info("Shepherd %s serving on http://%s:%d (store: %s); the dashboard: %s/ui/", VERSION, settings.host,
                     port, db.dialect, callback_url)
            if await shepherd.tokens.count_active() == 0:
                log.warning(
                    "no API token yet: create one with `%s token create --user me --scopes read,write,approve,admin`"
                    " and send it as `Authorization: Bearer <token>`", _me(),
                )
        if worker_on:
            background = Background(settings, shepherd, callback_url=callback_url)
            await background.start()
        runtime.settle_heap()
        await stop.wait()
        log.info("shutting down")
    finally:
        if background is not None:
            await background.stop()
        if runner is not None:
            await runner.cleanup()
        await db.dispose()


async def _console(settings: Settings, command: str | None, user: str | None) -> int:
    from adapters.console.channel import ConsoleChannel
    from adapters.console.repl import Console, console_principal
    from bot.background import Background

    await _ensure_schema(settings)
    db = Database(settings.db_url)
    background: Background | None = None
    try:
        shepherd = _core(settings, db)
        await shepherd.orgs.ensure(settings.org)
        principal, created = await console_principal(shepherd, settings.org, user or settings.console_user)
        if created:
            print(f"shepherd console: acting as {principal.name}, a new admin user of org {principal.org_id} "
                  "(SHEPHERD_CONSOLE_USER or --user names someone else)", file=sys.stderr)
        # The console runs the tasks it starts itself, and prints the prompts addressed to its user:
        # no server needed to try Shepherd. What it says to Slack waits in the outbox for the server's
        # dispatcher, which keeps Slack's pace (one edit a second per channel, Retry-After).
        background = Background(settings, shepherd, channels=[ConsoleChannel(principal.name)], platforms=False)
        await background.start()
        console = Console(shepherd, principal)
        if command is not None:
            return 0 if await console.run_one(command, wait=True) else 1
        return await console.repl()
    finally:
        if background is not None:
            await background.stop()
        await db.dispose()


async def _token_create(settings: Settings, org: str | None, scopes: str, user: str | None, label: str | None) -> int:
    await _ensure_schema(settings)
    db = Database(settings.db_url)
    try:
        issued = await Shepherd(db).tokens.create(org_id=org or settings.org, scopes=scopes, user=user, name=label)
    finally:
        await db.dispose()
    t, person = issued.token, issued.user
    if person is None:
        print(f"created token {t.id} '{t.name}' for org {t.org_id} with scopes {t.scopes}; it acts for no person "
              "(it cannot approve or reject: give it one with --user NAME)")
    else:
        made = f", a new user with role {person.role}" if issued.user_created else f" (role {person.role})"
        print(f"created token {t.id} '{t.name}' for org {t.org_id} acting for {person.name}{made}, "
              f"with scopes {t.scopes}")
        effective = issued.effective_scopes
        if effective != parse_scopes(t.scopes):
            allowed = ", ".join(s.value for s in Scope if s in effective) or "nothing"
            print(f"note: {person.name}'s role {person.role} limits it to {allowed}; an admin raises it with "
                  f"`role {person.name} <role>`")
    print("the secret is shown once; store it now:")
    print(issued.secret)
    return 0


async def _doctor(settings: Settings) -> int:
    ok = True
    print(f"Shepherd {VERSION} · Python {sys.version.split()[0]}")
    url = settings.db_url
    sqlite_file = Path(url.split(":///", 1)[1]) if settings.embedded and ":///" in url else None
    try:
        if sqlite_file is not None and not sqlite_file.exists():
            raise _NotCreated
        current = await current_revision(url)
        head = head_revision()
        state = "up to date" if current == head else f"at {current or 'nothing'}, needs {head}: run migrate"
        ok &= current == head
        print(f"database: {mask_url(url)}: reachable, schema {state}")
        leader, reachable = await _doctor_leader(settings)
        ok &= reachable
        print(f"leader: {leader}")
    except _NotCreated:
        print(f"database: {url}: not created yet (`{_me()} migrate` or `serve` creates it)")
    except Exception as exc:
        ok = False
        print(f"database: {mask_url(url)}: UNREACHABLE ({type(exc).__name__}: {exc})")
    print("settings:")
    for key, value in settings.masked().items():
        print(f"  {key}={value}")
    from adapters.console.repl import console_user

    source = "SHEPHERD_CONSOLE_USER" if settings.console_user else "the OS user; SHEPHERD_CONSOLE_USER names someone"
    print(f"console: acts as {console_user(settings.console_user)} ({source}) with admin rights in org {settings.org}")
    hosts = settings.repo_hosts.replace(",", ", ") or "none (SHEPHERD_REPO_HOSTS allows some)"
    from core.runners.repos import git_pins_http, git_version_text

    pins = "" if git_pins_http() else " (too old to pin hosts allowed by a pattern: git 2.37 or newer)"
    print(f"repositories: owner/name from {settings.git_base_url}; other hosts: {hosts}; {git_version_text()}{pins}")
    catalog = settings.catalog()
    if settings.runner != "local":  # the agents' CLIs are the engine image's, not this host's
        print(f"agents: {', '.join(catalog.names())}, run from the engine's image (SHEPHERD_RUNNER="
              f"{settings.runner}; not checked here); tasks use {settings.default_agent} unless told otherwise")
    else:
        print(f"agents (each checked with --version; tasks use {settings.default_agent} unless told otherwise):")
    for name in catalog.names() if settings.runner == "local" else ():
        found = await catalog.check(name)
        state = f"usable: {found.detail}" if found.usable else f"NOT USABLE: {found.detail}"
        print(f"  {name:<9} {state}")
    if settings.default_agent not in catalog.names():
        ok = False
        print(f"  SHEPHERD_DEFAULT_AGENT={settings.default_agent} is not one of these")
    ok &= await _doctor_sandbox(settings)
    ok &= await _doctor_runner(settings)
    policies = PolicyStore(settings.policies_path).check_all()
    print(f"policies: {len(policies)} project file(s) in {settings.policies_path}"
          + ("" if policies else " (every project has the built-in policy)"))
    for path, problem in policies:
        ok &= problem is None
        print(f"  {Path(path).name}: {'ok' if problem is None else 'INVALID: ' + problem}")
    print(f"github: {settings.github_api_url}, {_github_mode(settings)}")
    secret = "set" if settings.github() else "unset: POST /github/webhook answers 404"
    print(f"github webhook: GITHUB_WEBHOOK_SECRET {secret}; handle /{settings.github_handle}, label "
          f"{settings.github_label!r}, review {settings.github_review}, incidents {settings.github_incidents}, "
          f"trusted logins: {settings.github_trusted or '-'}")
    slack = settings.slack()
    if slack is None:
        print("slack: off (SLACK_BOT_TOKEN turns it on; README: Connect Slack)")
    elif slack.app_token:
        print(f"slack: Socket Mode (SLACK_APP_TOKEN), Web API {slack.api_url}")
    elif slack.signing_secret:
        print(f"slack: HTTP at {settings.public_url or '<public URL>'}/slack/events, Web API {slack.api_url}")
    else:
        ok = False
        print("slack: bot token set but Slack cannot reach Shepherd: set SLACK_SIGNING_SECRET (HTTP) or "
              "SLACK_APP_TOKEN (Socket Mode)")
    telegram = settings.telegram()
    if telegram is None:
        print("telegram: off (TELEGRAM_BOT_TOKEN turns it on; README: Connect Telegram)")
    elif telegram.webhook_url:
        print(f"telegram: TELEGRAM_BOT_TOKEN set; webhook at {telegram.webhook_url} (registered with setWebhook at "
              f"start, secret TELEGRAM_WEBHOOK_SECRET set), Bot API {telegram.api_url}")
    elif telegram.webhook:
        print("telegram: TELEGRAM_BOT_TOKEN set; webhook at <public URL>/telegram/webhook (TELEGRAM_WEBHOOK_SECRET "
              f"set; SHEPHERD_PUBLIC_URL unset, so register it with setWebhook yourself), Bot API {telegram.api_url}")
    else:
        print("telegram: TELEGRAM_BOT_TOKEN set; polling getUpdates in the leading `serve` or `worker` (development "
              f"mode: TELEGRAM_WEBHOOK_SECRET turns the webhook on), Bot API {telegram.api_url}")
    return 0 if ok else 1


async def _doctor_leader(settings: Settings) -> tuple[str, bool]:
    """Who runs the scheduled jobs (and polls Telegram), as host:pid; False when no process could lead (the lock's
    own database, SHEPHERD_LEADER_DATABASE_URL, unreachable: every `serve` and `worker` would follow forever)."""
    db = Database(settings.db_url)
    try:
        leader = await _elector(settings, db).leader()
    finally:
        await db.dispose()
    how = ("a file lock beside the database file (<file>.leader.lock)" if settings.embedded else
           "a PostgreSQL advisory lock" + (" on SHEPHERD_LEADER_DATABASE_URL" if settings.leader_database_url else ""))
    who = f"{leader} runs the scheduled jobs" if leader else "none (no `serve` or `worker` runs)"
    line = f"{who}; elected by {how}, taken over within {settings.leader_timeout:g}s (SHEPHERD_LEADER_TIMEOUT)"
    lock_url = settings.leader_database_url.get_secret_value() if settings.leader_database_url else ""
    if settings.embedded or not lock_url:
        return line, True
    import asyncpg

    try:
        conn = await asyncpg.connect(asyncpg_dsn(lock_url), timeout=10)
        await conn.close()
    except Exception as exc:
        return (f"SHEPHERD_LEADER_DATABASE_URL {mask_url(lock_url)} UNREACHABLE ({type(exc).__name__}: {exc}): no "
                f"process can lead, so no scheduled job runs; {line}"), False
    return line, True


def _github_mode(settings: Settings) -> str:
    """How Shepherd acts on GitHub: as a GitHub App, with a token, or not at all."""
    token = bool(settings.github_token and settings.github_token.get_secret_value())
    if settings.github_app_id is not None:
        ignored = " (SHEPHERD_GITHUB_TOKEN is set but unused: the App acts)" if token else ""
        return (f"GitHub App {settings.github_app_id} (GITHUB_APP_ID): a token of its installation on each "
                f"repository{ignored}")
    if token:
        return "token (SHEPHERD_GITHUB_TOKEN) for every repository"
    return ("no credentials: approved pushes and pull requests will fail (a GitHub App: GITHUB_APP_ID + "
            "GITHUB_APP_PRIVATE_KEY; or SHEPHERD_GITHUB_TOKEN)")


async def _doctor_runner(settings: Settings) -> bool:
    """Where turns run, and whether they can start there now (a remote engine answers)."""
    if settings.runner == "local":
        print("runner: local (child processes of the worker; SHEPHERD_RUNNER=kubernetes or docker runs them in an "
              "engine)")
        return True
    from bot.runners import make_runner
    from core.errors import ShepherdError

    runner = None
    try:
        runner = await make_runner(settings)
        why = await runner.ready()
    except ShepherdError as exc:
        why = exc.message
    finally:
        close = getattr(runner, "close", None)
        if close is not None:
            await close()
    if why is None:
        print(f"runner: {settings.runner}: reachable, turns can start")
        return True
    print(f"runner: {settings.runner}: NOT READY, tasks will fail to start: {why}")
    return False


async def _doctor_sandbox(settings: Settings) -> bool:
    """What the sandbox really gives here, probed from inside; a sandbox that is on but weak fails."""
    from core.runners.probe import probe

    report = await probe(settings.sandbox_view())
    if not settings.sandbox:
        state = "would give " + report.describe() if report.strong else "could not be used here: " + \
            "; ".join(report.problems)
        print(f"sandbox: off (SHEPHERD_SANDBOX=true turns it on; it {state})")
        return True
    if report.strong:
        extra = f"; also readable: {settings.sandbox_ro_paths}" if settings.sandbox_ro_paths else ""
        print(f"sandbox: on: {report.describe()}{extra}")
        return True
    print(f"sandbox: on but WEAK, so agents will not run: {'; '.join(report.problems)}"
          + (f" ({report.describe()})" if report.version else ""))
    return False


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shepherd", description="Chat-ops front end for autonomous coding agents.")
    p.add_argument("--version", action="version", version=f"shepherd {VERSION}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="web server and background services in one process (the embedded default)")
    sub.add_parser("web", help="web server only (REST, webhooks)")
    sub.add_parser("worker", help="background services only (runners, outbox, scheduler)")
    c = sub.add_parser("console", help="the command grammar in a terminal, as an admin user of the org")
    c.add_argument("-c", dest="command", metavar="COMMAND", help="run one command and exit (1 on error)")
    c.add_argument("--user", metavar="NAME", help="the person the console acts as (default: "
                   "SHEPHERD_CONSOLE_USER, else the OS user); an admin user of the org, created if new")
    sub.add_parser("migrate", help="bring the database schema up to date")
    t = sub.add_parser("token", help="API tokens")
    tsub = t.add_subparsers(dest="token_cmd", required=True, metavar="ACTION")
    tc = tsub.add_parser("create", help="create a token; its secret is the last line printed")
    tc.add_argument("--org", help="org id (default: SHEPHERD_ORG, created if new)")
    tc.add_argument("--scopes", nargs="+", default=["read,write"], help="read write approve admin")
    tc.add_argument("--user", "--name", dest="user", metavar="NAME",
                    help="the person it acts for (created if new, with the role its scopes need); without it the "
                         "token is nobody's and cannot approve or reject")
    tc.add_argument("--label", help="a label to tell tokens apart (default: the user's name, or api)")
    sub.add_parser("doctor", help="check the database, show settings (secrets masked) and agent CLIs")
    sub.add_parser("ask", help="(inside a task) ask people before acting; `shepherd ask --help`", add_help=False)
    sub.add_parser("loop", help="(inside a loop task) mark the goal done or blocked; `shepherd loop --help`",
                   add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["ask"], ["loop"]):
        from bot.ask import main as ask

        return ask(argv)
    args = _parser().parse_args(argv)
    try:
        settings = _settings()
        _logging(settings)
        runs: dict[str, Callable[[], Awaitable[int | None]]] = {
            "serve": lambda: _serve(settings, web_on=True, worker_on=True),
            "web": lambda: _serve(settings, web_on=True, worker_on=False),
            "worker": lambda: _serve(settings, web_on=False, worker_on=True),
            "console": lambda: _console(settings, args.command, args.user),
            "doctor": lambda: _doctor(settings),
        }
        if args.cmd == "migrate":
            upgrade(settings.db_url)
            print(f"database schema at {head_revision()} ({mask_url(settings.db_url)})")
            return 0
        if args.cmd == "token":
            return asyncio.run(_token_create(settings, args.org, " ".join(args.scopes), args.user, args.label))
        if args.cmd in ("serve", "worker", "console"):  # they run agents and git: child processes
            runtime.watch_children_with_pidfds()
        return asyncio.run(runs[args.cmd]()) or 0
    except (CliError, ShepherdError) as exc:
        print(f"shepherd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except SQLAlchemyError as exc:
        print(f"shepherd: database error: {exc.__class__.__name__}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
