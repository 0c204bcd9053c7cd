"""Tools from a plain module (not a package), named in TOOL_PLUGINS; built from the settings."""

from __future__ import annotations

from backend.plugins import Plugin
from config.settings import Settings
from tools import ToolContext, ToolRegistry


def plugin(settings: Settings) -> Plugin:
    registry = ToolRegistry()

    @registry.tool
    async def app_name(ctx: ToolContext) -> str:
        """The name of this service."""
        return settings.app_name

    return Plugin(tools=registry, extends=["assistant"])
