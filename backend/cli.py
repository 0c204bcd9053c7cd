"""`turbokit`: serve, migrate, token, tools, chat. Heavy imports stay inside the commands, so
`--help` is instant."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from config.settings import Settings, get_settings

if TYPE_CHECKING:
    from backend.plugins import Catalogue
    from config.database import Database

EPILOG = """\
first steps:
  turbokit serve                      start on http://127.0.0.1:8000 (SQLite under ./data)
  turbokit token alice --email a@example.com
                                      print a development token for user "alice"
  curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8000/v1/me
  turbokit tools                      list the tools agents can call (core and plugins)
  turbokit chat                       talk to the assistant from the terminal

Settings come from the environment or a .env file (DATABASE_URL, REDIS_URL, ...); see README.md.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 0
    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"turbokit: configuration error:\n{_settings_errors(exc)}", file=sys.stderr)
        return 2
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    try:
        return handler(args, settings)
    except BrokenPipeError:  # `turbokit tools | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="turbokit",
        description="TurboKit backend: an AI agent service with threads, tools and metered chat.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument(
        "--reload", action="store_true", help="restart on code changes (development)"
    )
    serve.set_defaults(handler=_serve)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.add_argument("--revision", default="head", help="target revision (default head)")
    migrate.add_argument("--downgrade", metavar="REV", help="downgrade to REV instead")
    migrate.add_argument("--status", action="store_true", help="list pending migrations and exit")
    migrate.set_defaults(handler=_migrate)

    token = commands.add_parser(
        "token",
        help="print a development bearer token",
        description="Sign a token with this installation's development key. Only accepted while "
        "CLERK_JWT_ISSUER_DOMAIN is unset and ENVIRONMENT is not production.",
    )
    token.add_argument("subject", metavar="SUBJECT", help="the user's stable id (the token's sub)")
    token.add_argument("--email", help="email claim, used when the user is first seen")
    token.add_argument("--name", help="name claim, used when the user is first seen")
    token.add_argument("--admin", action="store_true", help="grant the admin role")
    token.add_argument("--ttl-hours", type=float, default=24.0, help="lifetime (default 24)")
    token.set_defaults(handler=_token)
    _add_tools_command(commands)
    _add_chat_command(commands)
    _add_job_commands(commands)
    _add_workflow_commands(commands)
    return parser


def _add_job_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = commands.add_parser(
        "worker",
        help="run background jobs from Redis (needs REDIS_URL)",
        description="Run an rq worker on REDIS_URL, taking jobs from JOB_QUEUE (default "
        "turbokit), with rq's scheduler for delayed retries. Without REDIS_URL, jobs run inside "
        "`turbokit serve` and no worker is needed.",
    )
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    worker.set_defaults(handler=_worker)
    emails = commands.add_parser("emails", help="email outbox operations")
    actions = emails.add_subparsers(title="actions", metavar="ACTION", required=True)
    resume = actions.add_parser(
        "resume",
        help="enqueue delivery of emails still queued (a lost job or a failed enqueue)",
    )
    resume.add_argument("--limit", type=int, default=500, help="at most this many (default 500)")
    resume.set_defaults(handler=_emails_resume)
    _add_cron_commands(commands)


def _add_cron_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    crons = commands.add_parser(
        "crons",
        help="list the crons, or run one now",
        description="Crons run inside `turbokit serve` (CRONS_ENABLED), each due tick once "
        "across every server process; with REDIS_URL they run on `turbokit worker`.",
    )
    actions = crons.add_subparsers(title="actions", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="name, schedule, last run, next due, last status")
    listing.set_defaults(handler=_crons_list)
    run = actions.add_parser("run", help="run one cron now, in the foreground")
    run.add_argument("name", metavar="NAME", help="the cron (see `turbokit crons list`)")
    run.set_defaults(handler=_crons_run)


WORKFLOW_STATUSES = ("queued", "running", "completed", "failed")


def _add_workflow_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    workflows = commands.add_parser("workflows", help="durable workflow runs and their steps")
    actions = workflows.add_subparsers(title="actions", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the newest runs")
    listing.add_argument("--status", choices=WORKFLOW_STATUSES, help="only runs in this status")
    listing.add_argument(
        "--limit", type=_positive, default=50, help="at most this many (default 50)"
    )
    listing.add_argument("--json", action="store_true", help="print JSON for machines")
    listing.set_defaults(handler=_workflows_list)
    show = actions.add_parser("show", help="one run and its steps")
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--json", action="store_true", help="print JSON for machines")
    show.set_defaults(handler=_workflows_show)
    retry = actions.add_parser(
        "retry",
        help="run a failed run again (or one whose process died); completed steps stay done",
    )
    retry.add_argument("run_id", metavar="RUN_ID")
    retry.set_defaults(handler=_workflows_retry)


def _positive(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 1000:
        raise argparse.ArgumentTypeError("must be between 1 and 1000")
    return number


TOOLS_HELP = """\
Every tool comes from the core (backend/projects/tools.py) or from a plugin: an installed package
with an entry point in the `turbokit.tools` group, or a module named in TOOL_PLUGINS
(comma-separated `package.module` or `package.module:attribute`). Each tool is listed with its
description, the agents that may call it, and the JSON Schema of its parameters (what the model
sees). A broken plugin is reported here as it would stop `turbokit serve`.

examples:
  turbokit tools
  TOOL_PLUGINS=my_tools turbokit tools --json
"""

CHAT_HELP = """\
Talk to an agent of a running service (`turbokit serve`) from the terminal: each line you type is
a message; the reply streams in, with one line per tool call and per tool result. The thread id is
printed so that `--thread` can continue the conversation later. Without --token, a development
token for the user "dev" is signed with this directory's key (as `turbokit token dev` does), which
only works where the server runs in development (CLERK_JWT_ISSUER_DOMAIN unset).

examples:
  turbokit chat
  turbokit chat --agent editor
  echo "How many projects do I have?" | turbokit chat --thread thr_01J...
"""


def _add_tools_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tools = commands.add_parser(
        "tools",
        help="list the tools (core and plugins), their agents and JSON Schema",
        description=TOOLS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tools.add_argument("--json", action="store_true", help="print JSON for machines")
    tools.set_defaults(handler=_tools)


def _add_chat_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chat = commands.add_parser(
        "chat",
        help="chat with an agent of a running server from the terminal",
        description=CHAT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = chat.add_mutually_exclusive_group()
    which.add_argument(
        "--agent", metavar="NAME", help="agent of the new thread (default assistant)"
    )
    which.add_argument("--thread", metavar="ID", help="continue this thread instead")
    chat.add_argument(
        "--url", default="http://127.0.0.1:8000", help="the server (default %(default)s)"
    )
    chat.add_argument("--token", help='bearer token (default: a development token for "dev")')
    chat.set_defaults(handler=_chat)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    if _catalogue_or_report(settings) is None:
        return 2
    database = (settings.database_url and "DATABASE_URL") or f"SQLite in {settings.data_dir}/"
    print(
        f"TurboKit {settings.environment} on http://{args.host}:{args.port} ({database}); "
        "stop with Ctrl+C",
        file=sys.stderr,
    )
    uvicorn.run(
        "backend.app:configure",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers if not args.reload else None,
        reload=args.reload,
        log_config=None,
        access_log=False,
    )
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from backend import migrations
    from config.database import Database

    async def run() -> int:
        db = Database(settings)
        try:
            todo = await migrations.pending(db)
            if args.status:
                print("\n".join(todo) if todo else "database is up to date")
                return 0
            if args.downgrade:
                await migrations.downgrade(db, args.downgrade)
                print(f"downgraded to {args.downgrade}")
            else:
                await migrations.upgrade(db, args.revision)
                print(f"applied {len(todo)} migration(s)" if todo else "database is up to date")
            return 0
        finally:
            await db.dispose()

    return asyncio.run(run())


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.redis_url:
        print(
            "turbokit worker: REDIS_URL is not set. Set it to run jobs on Redis; without it, "
            "jobs run inside `turbokit serve` and no worker is needed.",
            file=sys.stderr,
        )
        return 2
    from redis import Redis
    from rq import Queue, Worker

    from config.logging import configure_logging

    configure_logging(settings.log_level)
    connection = Redis.from_url(settings.redis_url)
    queue = Queue(settings.job_queue, connection=connection)
    print(f"turbokit worker on queue {settings.job_queue!r}; stop with Ctrl+C", file=sys.stderr)
    Worker([queue], connection=connection).work(with_scheduler=True, burst=args.burst)
    return 0


def _emails_resume(args: argparse.Namespace, settings: Settings) -> int:
    from backend.email import service
    from backend.jobs import make_jobs
    from config.database import Database

    async def run() -> int:
        db = Database(settings)
        jobs = make_jobs(settings, db)
        try:
            if not settings.redis_url:
                print(
                    "turbokit emails resume: REDIS_URL is not set; `turbokit serve` resumes "
                    "the outbox itself when it starts",
                    file=sys.stderr,
                )
                return 2
            count = await service.requeue(db, jobs, args.limit)
            print(f"enqueued delivery of {count} queued email(s)")
            return 0
        finally:
            await jobs.stop()
            await db.dispose()

    return asyncio.run(run())


def _with_database(settings: Settings, work: Callable[[Any], Any]) -> int:
    """Run `work(db)` (a coroutine function) against the configured database."""
    from config.database import Database

    async def run() -> int:
        db = Database(settings)
        try:
            result: int = await work(db)
            return result
        finally:
            await db.dispose()

    return asyncio.run(run())


async def _cron_database(settings: Settings) -> Database:
    """The database, migrated first when it is the embedded SQLite (as `serve` would), with
    every cron's row."""
    from backend import migrations
    from backend.crons import CRONS, service
    from config.database import Database, utcnow

    db = Database(settings)
    if db.is_sqlite:
        await migrations.upgrade(db)
    await service.register(db, CRONS, utcnow())
    return db


def _crons_list(args: argparse.Namespace, settings: Settings) -> int:
    from backend.crons import CRONS, service

    async def run() -> int:
        db = await _cron_database(settings)
        try:
            rows = {row.name: row for row in await service.states(db)}
        finally:
            await db.dispose()
        print(f"{'NAME':<22} {'SCHEDULE':<12} {'LAST RUN':<30} {'NEXT DUE':<20} LAST STATUS")
        for cron in CRONS:
            row = rows.get(cron.name)
            last = next_at = status = "-"
            if row is not None:
                next_at = _when(row.next_due_at)
                status = row.last_status or "-"
                if row.last_started_at is not None:
                    last = f"{_when(row.last_started_at)} ({row.last_duration_ms or 0:.0f} ms)"
                if row.last_result:
                    status = f"{status}: {row.last_result}"
            print(f"{cron.name:<22} {cron.schedule_text:<12} {last:<30} {next_at:<20} {status}")
        return 0

    return asyncio.run(run())


def _workflows_list(args: argparse.Namespace, settings: Settings) -> int:
    from backend.workflows import service

    async def work(db: Any) -> int:
        rows = await service.list_runs(db, args.status, args.limit)
        if args.json:
            print(json.dumps([_run_json(row) for row in rows], indent=2))
            return 0
        if not rows:
            print("no workflow runs")
            return 0
        table = [["ID", "NAME", "STATUS", "ATTEMPTS", "CREATED", "ERROR"]]
        for row in rows:
            created = service.iso(row["created_at"]) or ""
            error = (row["error"] or "")[:60]
            table.append(
                [row["id"], row["name"], row["status"], str(row["attempts"]), created, error]
            )
        print(_table(table))
        return 0

    return _with_database(settings, work)


def _workflows_show(args: argparse.Namespace, settings: Settings) -> int:
    from backend.workflows import service

    async def work(db: Any) -> int:
        view = await service.get_run(db, args.run_id)
        if view is None:
            print(f"turbokit workflows show: no run {args.run_id!r}", file=sys.stderr)
            return 1
        data = {**_run_json(view.run), "steps": [_step_json(step) for step in view.steps]}
        if args.json:
            print(json.dumps(data, indent=2))
            return 0
        for key in ("id", "name", "status", "attempts", "args", "idempotency_key", "error"):
            value = data[key]
            print(f"{key + ':':<17}{json.dumps(value) if key == 'args' else value}")
        for key in ("created_at", "started_at", "finished_at"):
            print(f"{key + ':':<17}{data[key] or '-'}")
        if data["result"] is not None:
            print(f"{'result:':<17}{json.dumps(data['result'])}")
        table = [["#", "STEP", "STATUS", "ATTEMPTS", "FINISHED", "RESULT / ERROR"]]
        for step in data["steps"]:
            outcome = step["error"] if step["error"] else json.dumps(step["result"])
            table.append(
                [
                    str(step["ordinal"]),
                    step["name"],
                    step["status"],
                    str(step["attempts"]),
                    step["finished_at"] or "-",
                    outcome[:60],
                ]
            )
        print()
        print(_table(table) if data["steps"] else "no steps run yet")
        return 0

    return _with_database(settings, work)


def _workflows_retry(args: argparse.Namespace, settings: Settings) -> int:
    from backend.jobs import LocalJobs, make_jobs
    from backend.workflows import service

    async def work(db: Any) -> int:
        jobs = make_jobs(settings, db)
        await jobs.start()
        try:
            async with db.write() as session:
                retried = await service.retry(session, jobs, args.run_id)
            if not retried:
                print(
                    f"turbokit workflows retry: {args.run_id!r} is not a failed or stalled run",
                    file=sys.stderr,
                )
                return 1
            if not isinstance(jobs, LocalJobs):
                await jobs.settle()
                print(f"run {args.run_id} queued again for `turbokit worker`")
                return 0
            # No shared queue (REDIS_URL unset): run it here, with the usual retries.
            await jobs.wait_idle()
            view = await service.get_run(db, args.run_id)
            status = view.run["status"] if view else "gone"
            print(f"run {args.run_id}: {status}")
            return 0 if status == "completed" else 1
        finally:
            await jobs.stop()

    return _with_database(settings, work)


def _run_json(row: dict[str, Any]) -> dict[str, Any]:
    from backend.workflows.service import iso

    hidden = ("lease_owner", "lease_until")
    return {
        key: iso(value) if key.endswith("_at") else value
        for key, value in row.items()
        if key not in hidden
    }


def _step_json(row: dict[str, Any]) -> dict[str, Any]:
    from backend.workflows.service import iso

    return {
        key: iso(value) if key.endswith("_at") else value
        for key, value in row.items()
        if key != "run_id"
    }


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _crons_run(args: argparse.Namespace, settings: Settings) -> int:
    from backend.crons import CRONS, find, service
    from backend.jobs import JobContext
    from backend.jobs import context as job_contexts

    cron = find(args.name)
    if cron is None:
        names = ", ".join(c.name for c in CRONS)
        print(f"turbokit crons run: no cron named {args.name!r} (crons: {names})", file=sys.stderr)
        return 2

    async def run() -> int:
        db = await _cron_database(settings)
        job_contexts.enter(JobContext(settings, db))
        try:
            ok, account = await service.run(db, cron.name, cron.job)
        finally:
            await db.dispose()
        print(f"{cron.name}: {account}" if ok else f"{cron.name} failed: {account}")
        return 0 if ok else 1

    return asyncio.run(run())


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from backend.auth import issue_dev_token

    if settings.clerk_jwt_issuer_domain or settings.is_production:
        print(
            "turbokit: development tokens are refused here: CLERK_JWT_ISSUER_DOMAIN is set "
            "or ENVIRONMENT=production; sign in through Clerk instead",
            file=sys.stderr,
        )
        return 2
    print(
        issue_dev_token(
            settings,
            args.subject,
            email=args.email,
            name=args.name,
            admin=args.admin,
            ttl=timedelta(hours=args.ttl_hours),
        )
    )
    return 0


def _catalogue_or_report(settings: Settings) -> Catalogue | None:
    """The tools and agents, or None after printing which plugin is broken and why."""
    from backend.agents import build_catalogue
    from backend.plugins import PluginError

    try:
        return build_catalogue(settings)
    except PluginError as exc:
        print(f"turbokit: {exc}", file=sys.stderr)
        return None


def _tools(args: argparse.Namespace, settings: Settings) -> int:
    catalogue = _catalogue_or_report(settings)
    if catalogue is None:
        return 2
    listing = _tool_listing(catalogue)
    if args.json:
        agents = [
            {
                "name": a.name,
                "description": a.description,
                "model": a.model,
                "tools": a.tools.names(),
            }
            for a in catalogue.agents.values()
        ]
        print(json.dumps({"tools": listing, "agents": agents}, indent=2))
        return 0
    for tool in listing:
        print(_tool_text(tool))
    print(f"{len(listing)} tools; agents: {', '.join(catalogue.agents)}")
    return 0


def _tool_listing(catalogue: Catalogue) -> list[dict[str, Any]]:
    return [
        {
            "name": tool.name,
            "description": tool.description,
            "origin": catalogue.origins[tool.name],
            "agents": [a.name for a in catalogue.agents.values() if tool.name in a.tools],
            "needs_approval": "depends" if callable(tool.needs_approval) else tool.needs_approval,
            "parameters": tool.parameters,
        }
        for tool in catalogue.tools
    ]


def _tool_text(tool: dict[str, Any]) -> str:
    return (
        f"{tool['name']}: {tool['description']}\n"
        f"  from: {tool['origin']}\n"
        f"  used by: {', '.join(tool['agents']) or '(no agent)'}\n"
        f"  needs approval: {_APPROVAL[tool['needs_approval']]}\n"
        f"  parameters: {_readable_json(tool['parameters'], '  ')}\n"
    )


_APPROVAL = {True: "yes", False: "no", "depends": "depending on the arguments"}


def _readable_json(value: Any, indent: str, width: int = 88) -> str:
    """JSON indented only where a line would get long, so a schema stays a screenful."""
    flat = json.dumps(value)
    if len(flat) + len(indent) <= width or not isinstance(value, dict | list) or not value:
        return flat
    inner = indent + "  "
    if isinstance(value, dict):
        items = [f"{json.dumps(k)}: {_readable_json(v, inner, width)}" for k, v in value.items()]
        opening, closing = "{", "}"
    else:
        items = [_readable_json(v, inner, width) for v in value]
        opening, closing = "[", "]"
    body = ",\n".join(inner + item for item in items)
    return f"{opening}\n{body}\n{indent}{closing}"


def _chat(args: argparse.Namespace, settings: Settings) -> int:
    from backend import terminal_chat

    token = args.token or _dev_token_for_chat(settings)
    if token is None:
        return 2
    with terminal_chat.connect(args.url, token) as http:
        lines = terminal_chat.Lines(sys.stdin, interactive=sys.stdin.isatty())
        session = terminal_chat.Session(
            http, sys.stdout, sys.stderr, minted_token=args.token is None, ask=lines.read
        )
        return terminal_chat.run(session, lines, args.agent, args.thread)


def _dev_token_for_chat(settings: Settings) -> str | None:
    from backend.auth import issue_dev_token

    if settings.clerk_jwt_issuer_domain or settings.is_production:
        print(
            "turbokit chat: cannot sign a development token here (CLERK_JWT_ISSUER_DOMAIN is set "
            "or ENVIRONMENT=production); pass --token with a token from your sign-in",
            file=sys.stderr,
        )
        return None
    return issue_dev_token(settings, "dev", name="Developer")


def _settings_errors(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]).upper()
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"  {where}: {message}" if where else f"  {message}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
