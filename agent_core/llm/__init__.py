"""The model interface (`LLM`), its litellm adapter and a scripted stand-in for tests.

`LiteLLMModel` lives in `agent_core.llm.litellm_model` and is not re-exported here, so importing
this package stays cheap.
"""

from agent_core.llm.base import LLM, LLMRequest, complete
from agent_core.llm.scripted import ScriptedModel, ScriptedTurn, tool_call
from agent_core.llm.types import (
    AssistantMessage,
    ChatMessage,
    Completed,
    LLMError,
    LLMUsage,
    ModelResponse,
    StreamEvent,
    SystemMessage,
    TextDelta,
    ToolCallDelta,
    ToolCallRequest,
    ToolMessage,
    ToolSpec,
    UserMessage,
)

__all__ = [
    "LLM",
    "AssistantMessage",
    "ChatMessage",
    "Completed",
    "LLMError",
    "LLMRequest",
    "LLMUsage",
    "ModelResponse",
    "ScriptedModel",
    "ScriptedTurn",
    "StreamEvent",
    "SystemMessage",
    "TextDelta",
    "ToolCallDelta",
    "ToolCallRequest",
    "ToolMessage",
    "ToolSpec",
    "UserMessage",
    "complete",
    "tool_call",
]
