"""Context assembly: stored UIMessages become chat messages that fit the model's token budget.

Tool calls left without a result (a run that crashed or was stopped mid-step) are repaired with a
result saying so, because providers reject an assistant tool call that is not followed by its
result.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import tiktoken

from agent_core.llm.types import (
    AssistantMessage,
    ChatMessage,
    SystemMessage,
    ToolCallRequest,
    ToolMessage,
    UserMessage,
)
from threads.schemas import StepStartPart, TextPart, ToolPart, UIMessagePart, validate_parts

INTERRUPTED_RESULT = "The tool call was interrupted before it returned a result."
MESSAGE_OVERHEAD_TOKENS = 4
"""Per-message framing tokens in OpenAI-style chat formats."""


class StoredMessage(Protocol):
    @property
    def role(self) -> str: ...
    @property
    def parts(self) -> list[dict[str, Any]]: ...


def to_chat_messages(messages: Iterable[StoredMessage]) -> list[ChatMessage]:
    """Stored UIMessages (oldest first) as the chat messages a model reads."""
    chat: list[ChatMessage] = []
    for message in messages:
        parts = validate_parts(message.parts)
        if message.role == "user":
            chat.append(UserMessage(content=_text(parts)))
        elif message.role == "assistant":
            chat.extend(_assistant_turn(parts))
        elif message.role == "system":
            chat.append(SystemMessage(content=_text(parts)))
    return chat


def fit_to_budget(
    system: str, history: Sequence[ChatMessage], budget_tokens: int
) -> list[ChatMessage]:
    """The system prompt plus the newest history that fits; never splits a tool call from its
    results, and always keeps the newest group even when it alone is over budget."""
    remaining = budget_tokens - count_message_tokens(SystemMessage(content=system))
    kept: list[ChatMessage] = []
    for group in reversed(_groups(history)):
        cost = sum(count_message_tokens(message) for message in group)
        if kept and cost > remaining:
            break
        kept[:0] = group
        remaining -= cost
    return [SystemMessage(content=system), *kept]


def count_tokens(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))


def count_message_tokens(message: ChatMessage) -> int:
    return MESSAGE_OVERHEAD_TOKENS + count_tokens(json.dumps(message.to_openai(), default=str))


def _assistant_turn(parts: Sequence[UIMessagePart]) -> list[ChatMessage]:
    chat: list[ChatMessage] = []
    for step in _steps(parts):
        text = _text(step)
        tool_parts = [part for part in step if isinstance(part, ToolPart)]
        if not text and not tool_parts:
            continue
        calls = [
            ToolCallRequest(id=p.toolCallId, name=p.tool_name, arguments=_arguments(p.input))
            for p in tool_parts
        ]
        chat.append(AssistantMessage(content=text or None, tool_calls=calls))
        chat.extend(ToolMessage(tool_call_id=p.toolCallId, content=_result(p)) for p in tool_parts)
    return chat


def _steps(parts: Sequence[UIMessagePart]) -> list[list[UIMessagePart]]:
    steps: list[list[UIMessagePart]] = [[]]
    for part in parts:
        if isinstance(part, StepStartPart):
            if steps[-1]:
                steps.append([])
        else:
            steps[-1].append(part)
    return steps


def _text(parts: Sequence[UIMessagePart]) -> str:
    return "".join(part.text for part in parts if isinstance(part, TextPart))


def _arguments(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _result(part: ToolPart) -> str:
    if part.state == "output-available":
        output = part.output
        return output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
    if part.state == "output-error":
        return f"Error: {part.errorText}"
    if part.state == "output-denied":
        reason = part.approval.reason if part.approval and part.approval.reason else None
        return "The user denied this tool call." + (f" Reason: {reason}" if reason else "")
    return INTERRUPTED_RESULT


def _groups(history: Sequence[ChatMessage]) -> list[list[ChatMessage]]:
    """Messages grouped so an assistant tool call and its results stay together."""
    groups: list[list[ChatMessage]] = []
    for message in history:
        if isinstance(message, ToolMessage) and groups:
            groups[-1].append(message)
        else:
            groups.append([message])
    return groups


@lru_cache(maxsize=1)
def _encoding() -> tiktoken.Encoding:
    """cl100k_base from the copy litellm ships, so counting works offline."""
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        spec = importlib.util.find_spec("litellm")
        if spec and spec.submodule_search_locations:
            bundled = Path(spec.submodule_search_locations[0]) / "litellm_core_utils" / "tokenizers"
            os.environ["TIKTOKEN_CACHE_DIR"] = str(bundled)
    return tiktoken.get_encoding("cl100k_base")
