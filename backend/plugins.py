"""Tools and agents from outside the core: installed packages that declare an entry point in the
`turbokit.tools` group, and modules named in the TOOL_PLUGINS setting.

A plugin is a `Plugin` (or a function of the `Settings` that returns one):

    registry = ToolRegistry()

    @registry.tool
    async def word_count(ctx: ToolContext, text: str) -> int:
        "Count the words in a text."
        return len(text.split())

    plugin = Plugin(
        tools=registry,
        extends=["assistant"],
        agents=[AgentSpec(name="editor", description="...", instructions="...",
                          tools=["word_count", "search_projects"])],
    )

Every plugin's tools join one catalogue with the core tools, and agents name the tools they may
use from that catalogue. A broken plugin stops startup with a `PluginError` naming it: a service
that quietly starts without some of its tools fails later, in front of a user, instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

from pydantic import TypeAdapter, ValidationError

from agent_core.agent import Agent, Instructions
from config.settings import Settings
from threads.schemas import AgentName
from tools import ToolRegistry

ENTRY_POINT_GROUP = "turbokit.tools"
"""The entry point group a package declares its plugin in (`pyproject.toml`)."""

MODULE_ATTRIBUTE = "plugin"
"""What is taken from a module when an entry point or TOOL_PLUGINS names a module only."""

CORE = "core"
"""The origin of the tools and agents that ship with the service."""

_AGENT_NAME: TypeAdapter[str] = TypeAdapter(AgentName)


class PluginError(Exception):
    """A plugin cannot be used; the message names the plugin and says why."""

    def __init__(self, plugin: str, reason: str) -> None:
        super().__init__(f"{plugin}: {reason}")
        self.plugin = plugin
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class AgentSpec:
    """An agent whose tools are named, to be resolved against the whole catalogue."""

    name: str
    description: str
    instructions: Instructions
    tools: Sequence[str] = ()
    """Tool names from the catalogue: the plugin's own, core ones, other plugins'."""
    model: str | None = None
    """None: the service's OPENROUTER_MODEL, with its OPENROUTER_FALLBACK_MODELS."""
    fallback_models: Sequence[str] = ()
    max_steps: int = 8
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass(frozen=True, kw_only=True)
class Plugin:
    """What one plugin adds: tools, agents, and the existing agents its tools extend."""

    tools: ToolRegistry = field(default_factory=ToolRegistry)
    agents: Sequence[AgentSpec] = ()
    extends: Sequence[str] = ()
    """Agents (e.g. the built-in `assistant`) that also get every tool of this plugin."""

    def __post_init__(self) -> None:
        if not isinstance(self.tools, ToolRegistry):
            raise TypeError(f"Plugin.tools must be a ToolRegistry, not {_kind(self.tools)}")
        for spec in self.agents:
            if not isinstance(spec, AgentSpec):
                raise TypeError(f"Plugin.agents must hold AgentSpec objects, not {_kind(spec)}")
        if isinstance(self.extends, str):
            raise TypeError("Plugin.extends must be a list of agent names, not one string")


@dataclass(frozen=True)
class LoadedPlugin:
    origin: str
    """How errors and `turbokit tools` name the plugin: its entry point or module."""
    plugin: Plugin


@dataclass(frozen=True)
class Catalogue:
    """Every tool the service has, where each came from, and the agents built from them."""

    tools: ToolRegistry
    origins: Mapping[str, str]
    """Tool name -> `core` or the plugin's origin."""
    agents: Mapping[str, Agent]


# --- loading ----------------------------------------------------------------------------------


def load_plugins(settings: Settings) -> list[LoadedPlugin]:
    """Import every installed plugin (by entry point name), then those in TOOL_PLUGINS in order."""
    return [_load(origin, entry, settings) for origin, entry in _entries(settings)]


def _entries(settings: Settings) -> Iterator[tuple[str, EntryPoint]]:
    seen: set[tuple[str, str]] = set()
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if (entry.name, entry.value) not in seen:  # one distribution found twice on sys.path
            seen.add((entry.name, entry.value))
            yield f"plugin {entry.name!r} (entry point {entry.value})", entry
    if settings.tool_plugins:
        _importable_working_directory()
    for reference in settings.tool_plugins:
        entry = EntryPoint(name=reference, value=reference, group=ENTRY_POINT_GROUP)
        yield f"plugin {reference!r} (TOOL_PLUGINS)", entry


def _importable_working_directory() -> None:
    """TOOL_PLUGINS names modules relative to where the service runs, as uvicorn's app path does;
    the console script does not put that directory on `sys.path` by itself."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def _load(origin: str, entry: EntryPoint, settings: Settings) -> LoadedPlugin:
    try:
        target = entry.load()
    except Exception as exc:
        raise PluginError(origin, f"cannot be imported: {_describe(exc)}") from exc
    return LoadedPlugin(origin, _as_plugin(origin, target, settings))


def _as_plugin(origin: str, target: object, settings: Settings) -> Plugin:
    if isinstance(target, ModuleType):
        if not hasattr(target, MODULE_ATTRIBUTE):
            raise PluginError(
                origin, f"module {target.__name__} has no `{MODULE_ATTRIBUTE}` attribute"
            )
        target = getattr(target, MODULE_ATTRIBUTE)
    if isinstance(target, Plugin):
        return target
    if callable(target) and not isinstance(target, type):
        return _call_factory(origin, target, settings)
    hint = " (wrap it: Plugin(tools=registry))" if isinstance(target, ToolRegistry) else ""
    raise PluginError(
        origin,
        f"is {_kind(target)}, expected a backend.plugins.Plugin "
        f"or a function(settings) returning one{hint}",
    )


def _call_factory(origin: str, factory: Callable[[Settings], object], settings: Settings) -> Plugin:
    try:
        built = factory(settings)
    except Exception as exc:
        raise PluginError(origin, f"failed to build: {_describe(exc)}") from exc
    if not isinstance(built, Plugin):
        raise PluginError(origin, f"returned {_kind(built)}, expected a backend.plugins.Plugin")
    return built


# --- assembling the catalogue -----------------------------------------------------------------


def assemble(
    core_tools: ToolRegistry,
    core_agents: Sequence[AgentSpec],
    plugins: Sequence[LoadedPlugin],
    settings: Settings,
) -> Catalogue:
    """One catalogue of tools, then every agent resolved against it; a clash or an unknown name
    fails here, naming the plugin at fault."""
    tools = ToolRegistry(core_tools)
    origins = dict.fromkeys(core_tools.names(), CORE)
    specs: dict[str, tuple[str, AgentSpec]] = {spec.name: (CORE, spec) for spec in core_agents}
    for loaded in plugins:
        _add_tools(loaded, tools, origins)
        _add_agents(loaded, specs)
    extra = _extensions(plugins, specs)
    agents = {
        name: _build_agent(origin, spec, extra.get(name, []), tools, settings)
        for name, (origin, spec) in specs.items()
    }
    return Catalogue(tools=tools, origins=origins, agents=agents)


def _add_tools(loaded: LoadedPlugin, tools: ToolRegistry, origins: dict[str, str]) -> None:
    for tool in loaded.plugin.tools:
        if tool.name in tools:
            owner = "a core tool" if origins[tool.name] == CORE else origins[tool.name]
            raise PluginError(
                loaded.origin, f"tool {tool.name!r} clashes with {owner} of the same name"
            )
        tools.register(tool)
        origins[tool.name] = loaded.origin


def _add_agents(loaded: LoadedPlugin, specs: dict[str, tuple[str, AgentSpec]]) -> None:
    for spec in loaded.plugin.agents:
        try:
            _AGENT_NAME.validate_python(spec.name)
        except ValidationError:
            raise PluginError(
                loaded.origin,
                f"agent name {spec.name!r} must be 1-64 letters, digits, '_', '.' or '-'",
            ) from None
        if spec.name in specs:
            owner = specs[spec.name][0]
            owner = "the built-in agent" if owner == CORE else f"an agent of {owner}"
            raise PluginError(loaded.origin, f"agent {spec.name!r} clashes with {owner}")
        specs[spec.name] = (loaded.origin, spec)


def _extensions(
    plugins: Sequence[LoadedPlugin], specs: Mapping[str, tuple[str, AgentSpec]]
) -> dict[str, list[str]]:
    """Agent name -> the plugin tools it gets on top of its own."""
    extra: dict[str, list[str]] = {}
    for loaded in plugins:
        for name in loaded.plugin.extends:
            if name not in specs:
                raise PluginError(
                    loaded.origin, f"extends unknown agent {name!r}; agents: {', '.join(specs)}"
                )
            extra.setdefault(name, []).extend(loaded.plugin.tools.names())
    return extra


def _build_agent(
    origin: str, spec: AgentSpec, extra: Sequence[str], tools: ToolRegistry, settings: Settings
) -> Agent:
    unknown = [name for name in spec.tools if name not in tools]
    if unknown:
        raise PluginError(
            origin,
            f"agent {spec.name!r} names unknown tool(s) {', '.join(map(repr, unknown))}; "
            f"known tools: {', '.join(tools.names())}",
        )
    try:
        return Agent(
            name=spec.name,
            description=spec.description,
            instructions=spec.instructions,
            tools=tools.subset([*spec.tools, *extra]),
            model=spec.model or settings.openrouter_model,
            fallback_models=tuple(
                spec.fallback_models if spec.model else settings.openrouter_fallback_models
            ),
            max_steps=spec.max_steps,
            temperature=spec.temperature,
            max_tokens=spec.max_tokens,
        )
    except ValueError as exc:
        raise PluginError(origin, str(exc)) from exc


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _kind(value: object) -> str:
    return f"a {type(value).__name__}"
