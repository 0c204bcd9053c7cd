"""Messages round-trip OpenAI's wire shape; events form a tagged union."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from agent_core.llm import (
    AssistantMessage,
    Completed,
    ModelResponse,
    StreamEvent,
    TextDelta,
    ToolCallRequest,
)
from agent_core.llm.types import chat_messages_adapter

OPENAI_HISTORY: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "Find it"}]},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "search", "arguments": '{"q": "x"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "[]"},
    {"role": "assistant", "content": "Nothing found."},
]


def test_openai_messages_round_trip() -> None:
    messages = chat_messages_adapter.validate_python(OPENAI_HISTORY)

    assert [message.to_openai() for message in messages] == OPENAI_HISTORY
    assert messages[2] == AssistantMessage(
        tool_calls=[ToolCallRequest(id="call_1", name="search", arguments='{"q": "x"}')]
    )


def test_stream_events_are_a_tagged_union() -> None:
    adapter: TypeAdapter[list[StreamEvent]] = TypeAdapter(list[StreamEvent])
    events: list[StreamEvent] = [TextDelta(text="Hi"), Completed(response=ModelResponse(text="Hi"))]

    assert adapter.validate_json(adapter.dump_json(events)) == events


def test_a_response_becomes_the_assistant_message() -> None:
    call = ToolCallRequest(id="c", name="search")

    assert ModelResponse(tool_calls=[call]).to_message() == AssistantMessage(tool_calls=[call])
    assert ModelResponse(text="Hi").to_message() == AssistantMessage(content="Hi")
