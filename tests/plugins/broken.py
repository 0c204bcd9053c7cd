"""Plugins that must stop startup, each named in TOOL_PLUGINS as `tests.plugins.broken:<name>`.
The module itself has no `plugin` attribute, which is a mistake of its own."""

from __future__ import annotations

from backend.plugins import AgentSpec, Plugin
from config.settings import Settings
from tools import ToolContext, ToolRegistry

registry_only = ToolRegistry()


@registry_only.tool
async def search_projects(ctx: ToolContext, query: str) -> str:
    """A second tool under a core tool's name."""
    return query


clashing_tool = Plugin(tools=registry_only)

clashing_agent = Plugin(
    agents=[AgentSpec(name="assistant", description="Another assistant.", instructions="Hi.")]
)

unknown_tool = Plugin(
    agents=[
        AgentSpec(
            name="lost",
            description="Names a tool nobody registered.",
            instructions="Hi.",
            tools=["search_projects", "no_such_tool"],
        )
    ]
)

unknown_agent = Plugin(extends=["nobody"])

bad_agent_name = Plugin(
    agents=[AgentSpec(name="my agent!", description="Spaces are not allowed.", instructions="Hi.")]
)


def failing_factory(settings: Settings) -> Plugin:
    raise RuntimeError("EXAMPLE_API_KEY is not set")


def wrong_factory(settings: Settings) -> ToolRegistry:
    return registry_only
