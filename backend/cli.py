"""`turbokit`: serve, migrate, token. Heavy imports stay inside the commands, so `--help`
is instant."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta

from pydantic import ValidationError

from config.settings import Settings, get_settings

EPILOG = """\
first steps:
  turbokit serve                      start on http://127.0.0.1:8000 (SQLite under ./data)
  turbokit token alice --email a@example.com
                                      print a development token for user "alice"
  curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8000/v1/me

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
    return handler(args, settings)


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
    return parser


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

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


def _settings_errors(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]).upper()
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"  {where}: {message}" if where else f"  {message}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
