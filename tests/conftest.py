"""Shared fixtures: the app on SQLite and on PostgreSQL, an HTTP client, and users with tokens.

Every database-backed test runs once per backend (`[sqlite]`, `[postgres]`); each backend gets one
migrated database for the session, and tests keep apart by using fresh users.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from backend.app import create_app
from backend.auth import issue_dev_token
from config.settings import Settings
from tests.support.databases import REDIS_URL, postgres_database, unavailable
from tests.support.scripted_provider import ScriptedProvider
from tests.support.servers import serve

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def make_settings(data_dir: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "data_dir": data_dir,
        "database_url": database_url,
        "log_level": "WARNING",
        "crons_enabled": False,  # tests tick their own schedulers
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def redis_url() -> str:
    """The test Redis (TEST_REDIS_URL); a test asking for it skips, or fails where services are
    required, when it cannot be reached."""
    client = aioredis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError) as exc:
        unavailable("Redis", exc)
    finally:
        await client.aclose()
    return REDIS_URL


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session", params=BACKENDS)
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'turbokit.db'}"
        return
    async with postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def settings(data_dir: Path, database_url: str) -> Settings:
    return make_settings(data_dir, database_url)


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings, migrate=True)
    async with application.router.lifespan_context(application):
        yield application


def asgi_client(application: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as http:
        yield http


class Users:
    """Makes fresh users: `headers()` is the Authorization header of a new, unique subject."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def token(self, subject: str | None = None, **claims: Any) -> str:
        return issue_dev_token(self.settings, subject or f"user_{uuid.uuid4().hex}", **claims)

    def headers(self, subject: str | None = None, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(subject, **claims)}"}


@pytest.fixture
def users(settings: Settings) -> Users:
    return Users(settings)


# --- chat: the app with an LLM provider, scripted over real HTTP ---------------------------------


@pytest.fixture(scope="session")
async def provider() -> AsyncIterator[ScriptedProvider]:
    async with ScriptedProvider() as scripted:
        yield scripted


@pytest.fixture(scope="session")
async def chat_app(
    data_dir: Path, database_url: str, provider: ScriptedProvider
) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        data_dir,
        database_url,
        openrouter_api_key="test-key",
        openrouter_base_url=provider.base_url,
        openrouter_fallback_models="anthropic/claude-3.5-haiku",
        llm_max_retries=2,
        llm_backoff_seconds=0.01,
        thread_titles=False,  # tests/backend/test_titles.py turns them on in an app of its own
    )
    application = create_app(settings, migrate=True)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def chat_url(chat_app: FastAPI) -> AsyncIterator[str]:
    async with serve(chat_app) as url:
        yield url


@pytest.fixture
async def chat(chat_url: str, provider: ScriptedProvider) -> AsyncIterator[httpx.AsyncClient]:
    """A real HTTP client of the chat app; the provider's script starts empty."""
    provider.reset()
    async with httpx.AsyncClient(base_url=chat_url, timeout=30) as http:
        yield http
