"""Registries are explicit objects; registering is one decorator; mistakes fail at startup."""

from __future__ import annotations

import pytest

from tools import Tool, ToolContext, ToolDefinitionError, ToolRegistry
from tools.registry import DEFAULT_TIMEOUT_SECONDS


async def ping(ctx: ToolContext) -> str:
    """Answer pong."""
    return "pong"


async def echo(ctx: ToolContext, text: str) -> str:
    """Repeat the text."""
    return text


def test_bare_decorator_registers_under_the_function_name_and_returns_the_function() -> None:
    registry = ToolRegistry()

    decorated = registry.tool(ping)

    assert decorated is ping
    tool = registry.get("ping")
    assert tool is not None
    assert tool.name == "ping"
    assert tool.description == "Answer pong."
    assert tool.function is ping
    assert tool.timeout_seconds == DEFAULT_TIMEOUT_SECONDS
    assert tool.needs_approval is False
    assert tool.parameters == {
        "type": "object",
        "properties": {},
        "required": [],
        "additionalProperties": False,
    }


def test_decorator_with_options() -> None:
    registry = ToolRegistry()

    decorated = registry.tool(name="say", description="Say it.", timeout=2.5, needs_approval=True)(
        echo
    )

    assert decorated is echo
    tool = registry.get("say")
    assert tool is not None
    assert (tool.description, tool.timeout_seconds, tool.needs_approval) == ("Say it.", 2.5, True)
    assert registry.get("echo") is None


def test_registry_lists_tools_in_registration_order() -> None:
    registry = ToolRegistry([Tool.from_function(echo), Tool.from_function(ping)])

    assert registry.names() == ["echo", "ping"]
    assert [tool.name for tool in registry] == ["echo", "ping"]
    assert len(registry) == 2
    assert "ping" in registry
    assert "nope" not in registry


def test_duplicate_names_are_refused() -> None:
    registry = ToolRegistry()
    registry.tool(ping)

    with pytest.raises(ToolDefinitionError, match="'ping' is already registered"):
        registry.tool(name="ping")(echo)


@pytest.mark.parametrize("name", ["", "has space", "dotted.name", "x" * 65])
def test_names_providers_reject_are_refused(name: str) -> None:
    with pytest.raises(ToolDefinitionError, match="must be 1-64 letters"):
        ToolRegistry().tool(name=name)(ping)


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_non_positive_timeouts_are_refused(timeout: float) -> None:
    with pytest.raises(ToolDefinitionError, match="timeout must be positive or None"):
        ToolRegistry().tool(timeout=timeout)(ping)


def test_subset_keeps_the_named_tools_in_the_order_asked() -> None:
    registry = ToolRegistry([Tool.from_function(ping), Tool.from_function(echo)])

    subset = registry.subset(["echo", "ping", "echo"])

    assert subset.names() == ["echo", "ping"]
    assert subset.get("echo") is registry.get("echo")


def test_subset_names_unknown_tools_and_the_registered_ones() -> None:
    registry = ToolRegistry([Tool.from_function(ping)])

    with pytest.raises(KeyError, match=r"Unknown tool\(s\): nope, nada; registered: ping"):
        registry.subset(["ping", "nope", "nada"])


def test_approval_policy_may_depend_on_the_arguments() -> None:
    always = Tool.from_function(echo, needs_approval=True)
    loud = Tool.from_function(echo, needs_approval=lambda args: args["text"].isupper())

    assert always.approval_required({"text": "hi"}) is True
    assert loud.approval_required({"text": "HI"}) is True
    assert loud.approval_required({"text": "hi"}) is False
