"""The app factory and its lifespan: settings, database, token verifier, routes, error contract."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from agent_core.agent import Agent
from agent_core.llm.base import LLM
from backend import migrations
from backend.agents import build_agents, build_llm
from backend.auth import make_verifier
from backend.billing.autumn import AutumnSync
from backend.billing.routes import router as billing_router
from backend.chat.routes import router as chat_router
from backend.chat.runs import RunManager
from backend.completions.routes import router as completions_router
from backend.crons import Scheduler
from backend.email import service as email
from backend.errors import error_responses, install_error_handlers
from backend.events import service as events
from backend.events.broker import make_broker
from backend.events.routes import router as events_router
from backend.jobs import Jobs, LocalJobs, make_jobs
from backend.metrics import METRICS_DOC, metrics
from backend.middleware import RequestIdMiddleware
from backend.presence.routes import router as presence_router
from backend.projects.routes import router as projects_router
from backend.ratelimit import make_limiter
from backend.storage import make_storage
from backend.uploads.routes import router as uploads_router
from backend.users.routes import router as users_router
from backend.webhooks.routes import router as webhooks_router
from backend.workflows import service as workflows
from config.database import Database
from config.logging import configure_logging
from config.settings import Settings, get_settings

log = logging.getLogger("turbokit.app")


def create_app(
    settings: Settings | None = None, *, migrate: bool | None = None, llm: LLM | None = None
) -> FastAPI:
    """Build the service. `migrate` defaults to True on the embedded SQLite database, so a fresh
    checkout serves with zero setup; PostgreSQL deployments run `turbokit migrate` explicitly.
    `llm` replaces the configured provider (a scripted model in tests)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        agents = build_agents(settings)  # first: a broken plugin stops startup before any I/O
        db = Database(settings)
        should_migrate = db.is_sqlite if migrate is None else migrate
        if should_migrate:
            await migrations.upgrade(db)
        app.state.settings = settings
        app.state.db = db
        app.state.events = make_broker(settings.redis_url)
        events.install(db, app.state.events)
        app.state.verifier = make_verifier(settings)
        app.state.limiter = make_limiter(settings)
        app.state.storage = make_storage(settings)
        app.state.agents = agents
        autumn = AutumnSync(db, settings) if settings.autumn_secret_key else None
        app.state.autumn = autumn
        app.state.runs = RunManager(
            db,
            settings,
            app.state.agents,
            llm or build_llm(settings),
            on_usage=autumn.nudge if autumn else None,
        )
        if autumn is not None:
            autumn.start()
        app.state.jobs = make_jobs(settings, db)
        await app.state.jobs.start()
        await _resume_outbox(app.state.jobs, db)
        app.state.crons = Scheduler(db, app.state.jobs, settings.crons_tick_seconds)
        if settings.crons_enabled:
            app.state.crons.start()
        _freeze_startup_heap()
        log.info("TurboKit ready (%s, database %s)", settings.environment, _safe_url(db.url))
        try:
            yield
        finally:
            await app.state.crons.stop()
            await app.state.runs.shutdown()
            await app.state.jobs.stop()
            await app.state.events.close()
            if app.state.autumn is not None:
                await app.state.autumn.stop()
            aclose = getattr(app.state.verifier, "aclose", None)
            if aclose is not None:
                await aclose()
            await db.dispose()

    app = FastAPI(
        title="TurboKit",
        version="0.1.0",
        description="AI agent service: threads, tools, streamed chat, metered LLM calls.",
        lifespan=lifespan,
    )
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["operations"])
    app.add_api_route("/readyz", readyz, methods=["GET"], tags=["operations"], responses=_READY_DOC)
    app.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        tags=["operations"],
        response_class=Response,
        responses={**METRICS_DOC, **error_responses(401)},
    )
    app.include_router(users_router)
    app.include_router(projects_router)
    app.include_router(chat_router)
    app.include_router(completions_router)
    app.include_router(billing_router)
    app.include_router(webhooks_router)
    app.include_router(presence_router)
    app.include_router(events_router)
    app.include_router(uploads_router)
    _document_agents(app)
    return app


async def _resume_outbox(jobs: Jobs, db: Database) -> None:
    """In-process jobs die with their process: deliver what the outbox still holds, and go on
    with unfinished workflow runs. (On Redis the queue outlives processes; `turbokit emails
    resume` and `turbokit workflows retry` cover an enqueue that failed there.)"""
    if isinstance(jobs, LocalJobs):
        resumed = await email.requeue(db, jobs)
        if resumed:
            log.info("resumed delivery of %d queued email(s)", resumed)
        runs = await workflows.requeue(db, jobs)
        if runs:
            log.info("resumed %d unfinished workflow run(s)", runs)


_heap_frozen = False


def _freeze_startup_heap() -> None:
    """Move what startup built (litellm alone is hundreds of thousands of objects) out of the
    collector's sight. Otherwise every full collection walks it again, a pause of about 200 ms
    here that stalls every stream of the worker. Once per process: later apps (tests) add little.
    """
    global _heap_frozen
    if not _heap_frozen:
        gc.collect()
        gc.freeze()
        _heap_frozen = True


def _document_agents(app: FastAPI) -> None:
    """Name the agents that exist in the schema (`ThreadCreate.agent` enum): they are known only
    once the lifespan has built them, and a client should not have to guess."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        agents: dict[str, Agent] | None = getattr(app.state, "agents", None)
        if agents:
            schemas = schema["components"]["schemas"]
            schemas["ThreadCreate"]["properties"]["agent"]["enum"] = sorted(agents)
            schemas["ChatCompletionRequest"]["properties"]["model"]["enum"] = sorted(agents)
            models = sorted(
                {m for agent in agents.values() for m in (agent.model, *agent.fallback_models) if m}
            )
            for name in ("ChatRequest", "MessageCreate"):
                schemas[name]["properties"]["model"]["enum"] = models
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


_READY_DOC: dict[int | str, dict[str, Any]] = {503: {"description": "A dependency is down"}}


async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def readyz(request: Request) -> JSONResponse:
    """200 when the database (and Redis, when configured) answer; 503 naming what is down."""
    checks = {"database": await _database_ok(request.app.state.db)}
    settings: Settings = request.app.state.settings
    if settings.redis_url:
        checks["redis"] = await _redis_ok(settings.redis_url)
    ready = all(checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


async def _database_ok(db: Database) -> bool:
    try:
        async with db.read() as session:
            await session.execute(text("SELECT 1"))
    except Exception:
        log.exception("readiness: database check failed")
        return False
    return True


async def _redis_ok(url: str) -> bool:
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(await client.ping())
    except Exception:
        log.exception("readiness: redis check failed")
        return False
    finally:
        await client.aclose()


def _safe_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}"


def configure(settings: Settings | None = None) -> FastAPI:
    """Entry point for uvicorn's `--factory`: logging first, then the app."""
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    return create_app(settings)
