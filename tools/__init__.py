"""The tool framework: typed async functions become tools with a JSON Schema, a registry, and
validated, time-limited, concurrent execution whose failures become text for the model."""

from tools.context import ToolContext
from tools.execution import (
    ToolCall,
    ToolError,
    ToolResult,
    approval_required,
    execute,
    execute_all,
)
from tools.function_schema import FunctionSchema, ToolDefinitionError, function_schema
from tools.registry import Tool, ToolRegistry

__all__ = [
    "FunctionSchema",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolDefinitionError",
    "ToolError",
    "ToolRegistry",
    "ToolResult",
    "approval_required",
    "execute",
    "execute_all",
    "function_schema",
]
