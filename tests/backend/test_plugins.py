"""Plugins: tools and agents from installed packages (entry point group `turbokit.tools`) and from
modules named in TOOL_PLUGINS. The example plugin (tests/plugins/example) is pip-installed for the
session; the app under test finds it through its entry point and chats over real HTTP with a
scripted provider."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.agents import build_agents, build_catalogue
from backend.app import create_app
from backend.plugins import Plugin, PluginError
from backend.projects.tools import registry as project_tools
from tests.conftest import Users, make_settings
from tests.support.plugins import install_example_plugin, on_sys_path
from tests.support.scripted_provider import (
    RecordedRequest,
    ScriptedProvider,
    TextReply,
    ToolCall,
    ToolCallReply,
)
from tests.support.servers import serve
from tools import ToolContext

EXAMPLE_ORIGIN = "plugin 'example' (entry point turbokit_example_plugin:plugin)"
EDITOR_INSTRUCTIONS = (
    "You help the user keep project descriptions short. Find projects with search_projects and "
    "measure texts with word_count."
)


@pytest.fixture(scope="session")
def example_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_example_plugin(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
async def plugin_url(
    data_dir: Path, database_url: str, provider: ScriptedProvider, example_plugin: Path
) -> AsyncIterator[str]:
    """The service, started while the example plugin is installed."""
    settings = make_settings(
        data_dir,
        database_url,
        openrouter_api_key="test-key",
        openrouter_base_url=provider.base_url,
        llm_max_retries=0,
        thread_titles=False,
    )
    application = create_app(settings, migrate=True)
    async with contextlib.AsyncExitStack() as stack:
        with on_sys_path(example_plugin):
            await stack.enter_async_context(application.router.lifespan_context(application))
        yield await stack.enter_async_context(serve(application))


@pytest.fixture
async def http(plugin_url: str, provider: ScriptedProvider) -> AsyncIterator[httpx.AsyncClient]:
    provider.reset()
    async with httpx.AsyncClient(base_url=plugin_url, timeout=30) as client:
        yield client


async def post_message(
    http: httpx.AsyncClient, me: dict[str, str], text: str, agent: str | None = None
) -> dict[str, Any]:
    thread = await http.post("/v1/threads", headers=me, json={"agent": agent} if agent else {})
    assert thread.status_code == 201, thread.text
    reply = await http.post(
        f"/v1/threads/{thread.json()['id']}/messages", headers=me, json={"text": text}
    )
    assert reply.status_code == 200, reply.text
    message: dict[str, Any] = reply.json()["message"]
    return message


def offered_tools(request: RecordedRequest) -> list[str]:
    return [tool["function"]["name"] for tool in request.body["tools"]]


def tool_part(message: dict[str, Any], name: str) -> dict[str, Any]:
    return next(part for part in message["parts"] if part["type"] == f"tool-{name}")


# --- an installed plugin, over HTTP -------------------------------------------------------------


async def test_the_assistant_calls_the_tool_an_installed_plugin_gave_it(
    http: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    provider.push(
        ToolCallReply(calls=[ToolCall("word_count", {"text": "to be or not"})]),
        TextReply("Four words."),
    )

    message = await post_message(http, users.headers(), "How many words in 'to be or not'?")

    assert offered_tools(provider.requests[0]) == [*project_tools.names(), "word_count"]
    part = tool_part(message, "word_count")
    assert part["state"] == "output-available"
    assert part["input"] == {"text": "to be or not"}
    assert part["output"] == {"words": 4, "characters": 12}
    tool_result = provider.requests[1].messages[-1]
    assert tool_result["role"] == "tool"
    assert json.loads(tool_result["content"]) == {"words": 4, "characters": 12}
    assert message["parts"][-1] == {"type": "text", "text": "Four words."}


async def test_a_plugin_agent_uses_its_own_tool_and_a_core_tool(
    http: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    project = await http.post(
        "/v1/projects", headers=me, json={"name": "Apollo", "description": "Moon landing plans"}
    )
    provider.push(
        ToolCallReply(
            calls=[
                ToolCall("search_projects", {"query": "apollo"}),
                ToolCall("word_count", {"text": "Moon landing plans"}),
            ]
        ),
        TextReply("Apollo's description has three words."),
    )

    message = await post_message(http, me, "How long is Apollo's description?", agent="editor")

    first = provider.requests[0]
    assert offered_tools(first) == ["word_count", "search_projects"]
    assert first.messages[0] == {"role": "system", "content": EDITOR_INSTRUCTIONS}
    hits = tool_part(message, "search_projects")["output"]
    assert [hit["id"] for hit in hits] == [project.json()["id"]]
    assert tool_part(message, "word_count")["output"] == {"words": 3, "characters": 18}
    assert message["parts"][-1]["text"] == "Apollo's description has three words."


async def test_agents_route_lists_the_plugin_agent_and_the_extended_assistant(
    http: httpx.AsyncClient, users: Users
) -> None:
    response = await http.get("/v1/agents", headers=users.headers())

    agents = {agent["name"]: agent for agent in response.json()["items"]}
    assert list(agents) == ["assistant", "editor"]
    assert [t["name"] for t in agents["editor"]["tools"]] == ["word_count", "search_projects"]
    word_count = agents["assistant"]["tools"][-1]
    assert word_count["name"] == "word_count"
    assert word_count["parameters"]["properties"]["text"]["type"] == "string"


# --- broken plugins stop startup, naming the plugin and the reason -----------------------------

BROKEN = [
    (
        "tests.plugins.unimportable",
        "cannot be imported: ModuleNotFoundError: No module named 'turbokit_missing_dependency'",
    ),
    ("tests.plugins.broken", "module tests.plugins.broken has no `plugin` attribute"),
    (
        "tests.plugins.broken:registry_only",
        "is a ToolRegistry, expected a backend.plugins.Plugin or a function(settings) "
        "returning one (wrap it: Plugin(tools=registry))",
    ),
    (
        "tests.plugins.broken:wrong_factory",
        "returned a ToolRegistry, expected a backend.plugins.Plugin",
    ),
    (
        "tests.plugins.broken:failing_factory",
        "failed to build: RuntimeError: EXAMPLE_API_KEY is not set",
    ),
    (
        "tests.plugins.broken:clashing_tool",
        "tool 'search_projects' clashes with a core tool of the same name",
    ),
    ("tests.plugins.broken:clashing_agent", "agent 'assistant' clashes with the built-in agent"),
    (
        "tests.plugins.broken:unknown_tool",
        "agent 'lost' names unknown tool(s) 'no_such_tool'; "
        f"known tools: {', '.join(project_tools.names())}",
    ),
    ("tests.plugins.broken:unknown_agent", "extends unknown agent 'nobody'; agents: assistant"),
    (
        "tests.plugins.broken:bad_agent_name",
        "agent name 'my agent!' must be 1-64 letters, digits, '_', '.' or '-'",
    ),
]


@pytest.mark.parametrize(("reference", "reason"), BROKEN, ids=[ref for ref, _ in BROKEN])
def test_a_broken_plugin_is_refused_with_its_name_and_the_reason(
    tmp_path: Path, reference: str, reason: str
) -> None:
    with pytest.raises(PluginError) as caught:
        build_agents(make_settings(tmp_path, tool_plugins=reference))
    assert str(caught.value) == f"plugin {reference!r} (TOOL_PLUGINS): {reason}"


async def test_the_service_does_not_start_with_a_broken_plugin(tmp_path: Path) -> None:
    application = create_app(
        make_settings(tmp_path, tool_plugins="tests.plugins.broken:clashing_tool"), migrate=True
    )
    with pytest.raises(PluginError, match=r"tests\.plugins\.broken:clashing_tool"):
        async with application.router.lifespan_context(application):
            pass


def test_two_plugins_offering_one_tool_name_clash(tmp_path: Path, example_plugin: Path) -> None:
    settings = make_settings(tmp_path, tool_plugins="turbokit_example_plugin")
    with on_sys_path(example_plugin), pytest.raises(PluginError) as caught:
        build_agents(settings)
    assert str(caught.value) == (
        "plugin 'turbokit_example_plugin' (TOOL_PLUGINS): tool 'word_count' clashes with "
        f"{EXAMPLE_ORIGIN} of the same name"
    )


def test_a_plugin_must_hand_over_a_tool_registry() -> None:
    with pytest.raises(TypeError, match=r"Plugin\.tools must be a ToolRegistry, not a list"):
        Plugin(tools=[])  # type: ignore[arg-type]


# --- TOOL_PLUGINS: code that is not an installed package ---------------------------------------


async def test_tool_plugins_adds_the_tools_a_module_builds_from_the_settings(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, tool_plugins="tests.plugins.local_tools", app_name="Acme")

    catalogue = build_catalogue(settings)

    assert catalogue.origins["app_name"] == "plugin 'tests.plugins.local_tools' (TOOL_PLUGINS)"
    assert catalogue.agents["assistant"].tools.names() == [*project_tools.names(), "app_name"]
    tool = catalogue.tools.get("app_name")
    assert tool is not None
    assert await tool.function(ToolContext(user_id="u", settings=settings, db=None)) == "Acme"


def test_without_plugins_the_catalogue_is_the_core(tmp_path: Path) -> None:
    catalogue = build_catalogue(make_settings(tmp_path))
    assert list(catalogue.agents) == ["assistant"]
    assert set(catalogue.origins.values()) == {"core"}
    assert catalogue.agents["assistant"].tools.names() == project_tools.names()
