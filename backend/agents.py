"""The agents this service offers, built from the domains' tool registries and the installed
plugins (`backend.plugins`)."""

from __future__ import annotations

from datetime import UTC, datetime

from agent_core.agent import Agent
from agent_core.llm.base import LLM
from backend.plugins import AgentSpec, Catalogue, assemble, load_plugins
from backend.projects.tools import registry as project_tools
from config.settings import Settings
from tools import ToolContext

ASSISTANT_INSTRUCTIONS = """\
You are the TurboKit assistant. You help the user find, understand and organise their projects.
Use the tools to look things up instead of guessing: search_projects finds projects by words in
their name or description, get_project shows one in full, create_project and update_project change
them, delete_project deletes one (deleting and archiving wait for the user's approval). Only the
user's own projects are visible to you. Answer concisely. Today is {today}."""


def _assistant_instructions(_ctx: ToolContext) -> str:
    return ASSISTANT_INSTRUCTIONS.format(today=datetime.now(UTC).date().isoformat())


def build_llm(settings: Settings) -> LLM | None:
    """litellm over OpenRouter (or OPENROUTER_BASE_URL); None when no provider is configured."""
    if not settings.llm_configured:
        return None
    from agent_core.llm.litellm_model import LiteLLMModel

    return LiteLLMModel.from_settings(settings)


def core_agents() -> list[AgentSpec]:
    return [
        AgentSpec(
            name="assistant",
            description="Answers questions about the user's projects and manages them.",
            instructions=_assistant_instructions,
            tools=project_tools.names(),
        )
    ]


def build_catalogue(settings: Settings) -> Catalogue:
    """Core tools and agents plus every plugin's; raises `PluginError` naming a broken plugin."""
    return assemble(project_tools, core_agents(), load_plugins(settings), settings)


def build_agents(settings: Settings) -> dict[str, Agent]:
    return dict(build_catalogue(settings).agents)
