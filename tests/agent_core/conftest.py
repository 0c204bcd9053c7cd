"""Fixtures for the LLM layer: a scripted provider on loopback and a LiteLLMModel aimed at it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agent_core.llm.litellm_model import LiteLLMModel
from tests.support.scripted_provider import ScriptedProvider

APP_URL = "https://turbokit.test"
APP_NAME = "TurboKit Tests"
BACKOFF_BASE = 0.02


class RecordingSleep:
    """The backoff clock: sleeps for real and remembers how long it was asked to."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(seconds)


@pytest.fixture(scope="session")
async def _shared_provider() -> AsyncIterator[ScriptedProvider]:
    """One server for the session: starting and stopping uvicorn costs ~0.2 s each time."""
    async with ScriptedProvider() as scripted:
        yield scripted


@pytest.fixture
def provider(_shared_provider: ScriptedProvider) -> ScriptedProvider:
    _shared_provider.reset()
    return _shared_provider


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def model(provider: ScriptedProvider, sleep: RecordingSleep) -> LiteLLMModel:
    return LiteLLMModel(
        api_key="test-key",
        base_url=provider.base_url,
        app_url=APP_URL,
        app_name=APP_NAME,
        timeout=5.0,
        max_retries=2,
        backoff_base=BACKOFF_BASE,
        backoff_max=0.1,
        max_retry_after=1.0,
        sleep=sleep,
    )
