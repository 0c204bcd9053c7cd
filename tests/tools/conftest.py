from __future__ import annotations

import pytest

from config.settings import Settings
from tools import ToolContext


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings(_env_file=None)


@pytest.fixture
def ctx(settings: Settings) -> ToolContext:
    return ToolContext(
        user_id="user_1", thread_id="thread_1", run_id="run_1", settings=settings, db=None
    )
