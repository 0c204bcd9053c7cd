"""Tools and the registries that hold them.

A registry is an explicit object (there is no global one): an application builds the registries it
needs and hands an agent the tools it may use, often a `subset` of a larger registry.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeAlias, TypeVar, overload

from tools.context import ToolContext
from tools.function_schema import FunctionSchema, ToolDefinitionError, function_schema

P = ParamSpec("P")
R = TypeVar("R")

ApprovalPolicy: TypeAlias = bool | Callable[[dict[str, Any]], bool]
"""Whether a call must be approved by a person first; a callable decides from the arguments."""

DEFAULT_TIMEOUT_SECONDS = 30.0
"""How long a tool may run unless it says otherwise; a hung tool must not hang the run."""

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""The tool names every major provider accepts (OpenAI's rule is the strictest)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Tool:
    """A registered tool: what the model sees (name, description, parameters) and how to run it."""

    name: str
    description: str
    function: Callable[..., Awaitable[Any]]
    schema: FunctionSchema = field(repr=False)
    timeout_seconds: float | None = DEFAULT_TIMEOUT_SECONDS
    """`None` disables the time limit; meant for tools that enforce their own."""
    needs_approval: ApprovalPolicy = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ToolDefinitionError(
                f"Tool name {self.name!r} must be 1-64 letters, digits, '_' or '-'"
            )
        if self.timeout_seconds is not None and not self.timeout_seconds > 0:
            raise ToolDefinitionError(
                f"Tool {self.name!r}: timeout must be positive or None, got {self.timeout_seconds}"
            )

    @classmethod
    def from_function(
        cls,
        func: Callable[Concatenate[ToolContext, P], Awaitable[Any]],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
        needs_approval: ApprovalPolicy = False,
    ) -> Tool:
        """Build a tool from `async def f(ctx: ToolContext, ...)`; name and description default
        to the function's name and the first paragraph of its docstring."""
        tool_name = func.__name__ if name is None else name
        schema = function_schema(func, name=tool_name)
        return cls(
            name=tool_name,
            description=schema.description if description is None else description,
            function=func,
            schema=schema,
            timeout_seconds=timeout,
            needs_approval=needs_approval,
        )

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON Schema of the arguments, as sent to the model (shared: do not mutate)."""
        return self.schema.json_schema

    def approval_required(self, arguments: dict[str, Any]) -> bool:
        """Apply `needs_approval` to one call's arguments."""
        if callable(self.needs_approval):
            return self.needs_approval(arguments)
        return self.needs_approval


class ToolRegistry:
    """Tools by name, in registration order."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> Tool:
        """Add a tool; two tools with one name would make the model's choice ambiguous."""
        if tool.name in self._tools:
            raise ToolDefinitionError(f"A tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        return tool

    @overload
    def tool(
        self, func: Callable[Concatenate[ToolContext, P], Awaitable[R]], /
    ) -> Callable[Concatenate[ToolContext, P], Awaitable[R]]: ...

    @overload
    def tool(
        self,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
        needs_approval: ApprovalPolicy = False,
    ) -> Callable[
        [Callable[Concatenate[ToolContext, P], Awaitable[R]]],
        Callable[Concatenate[ToolContext, P], Awaitable[R]],
    ]: ...

    def tool(
        self,
        func: Callable[..., Awaitable[Any]] | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
        needs_approval: ApprovalPolicy = False,
    ) -> Any:
        """Register a function as a tool: `@registry.tool` or `@registry.tool(name=...)`.

        The function is returned unchanged, so it stays directly callable in tests.
        """

        def register(func: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            self.register(
                Tool.from_function(
                    func,
                    name=name,
                    description=description,
                    timeout=timeout,
                    needs_approval=needs_approval,
                )
            )
            return func

        return register if func is None else register(func)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)

    def subset(self, names: Iterable[str]) -> ToolRegistry:
        """A new registry with only the named tools, e.g. the tools one agent may use."""
        wanted = list(dict.fromkeys(names))
        unknown = [name for name in wanted if name not in self._tools]
        if unknown:
            raise KeyError(
                f"Unknown tool(s): {', '.join(unknown)}; registered: {_listing(self._tools)}"
            )
        return ToolRegistry(self._tools[name] for name in wanted)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools


def _listing(names: Iterable[str]) -> str:
    return ", ".join(names) or "(none)"
