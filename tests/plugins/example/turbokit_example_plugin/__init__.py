"""A TurboKit plugin: one tool for the built-in assistant, and an agent of its own."""

from __future__ import annotations

from pydantic import BaseModel

from backend.plugins import AgentSpec, Plugin
from tools import ToolContext, ToolRegistry

registry = ToolRegistry()


class WordCount(BaseModel):
    words: int
    characters: int


@registry.tool
async def word_count(ctx: ToolContext, text: str) -> WordCount:
    """Count the words and characters of a text, e.g. to check a description's length.

    Args:
        text: The text to measure.
    """
    return WordCount(words=len(text.split()), characters=len(text))


plugin = Plugin(
    tools=registry,
    extends=["assistant"],
    agents=[
        AgentSpec(
            name="editor",
            description="Measures and tightens the descriptions of the user's projects.",
            instructions="You help the user keep project descriptions short. Find projects with "
            "search_projects and measure texts with word_count.",
            tools=["word_count", "search_projects"],
        )
    ],
)
