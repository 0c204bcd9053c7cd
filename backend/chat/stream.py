"""The AI SDK UI message stream (protocol v1): agent events become chunks, and the same events
build the assistant UIMessage that is saved when the run ends.

Only documented chunk fields are sent: several `ai` releases reject a chunk with an unknown field.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.sse import EventSourceResponse, format_sse_event

from agent_core.events import (
    AgentEvent,
    RunFailed,
    RunFinished,
    RunPaused,
    StepFinished,
    StepStarted,
    TextDelta,
    TextEnded,
    TextStarted,
    ToolApprovalRequested,
    ToolDenied,
    ToolInputAvailable,
    ToolInputDelta,
    ToolInputStarted,
    ToolOutput,
)

Chunk = dict[str, Any]
STREAM_HEADERS = {
    "x-vercel-ai-ui-message-stream": "v1",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
DONE = "[DONE]"


def ui_chunks(event: AgentEvent, metadata: dict[str, Any]) -> list[Chunk]:
    """The UI stream chunks for one agent event (usage events produce none)."""
    match event:
        case StepStarted():
            return [{"type": "start-step"}]
        case TextStarted(id=text_id):
            return [{"type": "text-start", "id": text_id}]
        case TextDelta(id=text_id, delta=delta):
            return [{"type": "text-delta", "id": text_id, "delta": delta}]
        case TextEnded(id=text_id):
            return [{"type": "text-end", "id": text_id}]
        case ToolInputStarted(call_id=call_id, tool_name=name):
            return [{"type": "tool-input-start", "toolCallId": call_id, "toolName": name}]
        case ToolInputDelta(call_id=call_id, delta=delta):
            return [{"type": "tool-input-delta", "toolCallId": call_id, "inputTextDelta": delta}]
        case ToolInputAvailable(call_id=call_id, tool_name=name, input=tool_input):
            return [
                {
                    "type": "tool-input-available",
                    "toolCallId": call_id,
                    "toolName": name,
                    "input": tool_input,
                }
            ]
        case ToolOutput(call_id=call_id, ok=True, output=output):
            return [{"type": "tool-output-available", "toolCallId": call_id, "output": output}]
        case ToolOutput(call_id=call_id, error=error):
            return [{"type": "tool-output-error", "toolCallId": call_id, "errorText": error or ""}]
        case ToolApprovalRequested(call_id=call_id, approval_id=approval_id):
            return [
                {"type": "tool-approval-request", "approvalId": approval_id, "toolCallId": call_id}
            ]
        case ToolDenied(call_id=call_id):
            return [{"type": "tool-output-denied", "toolCallId": call_id}]
        case StepFinished():
            return [{"type": "finish-step"}]
        case RunPaused():
            # The AI SDK ends a message that waits for approvals the same way.
            return [
                {"type": "message-metadata", "messageMetadata": metadata},
                {"type": "finish", "finishReason": "tool-calls", "messageMetadata": metadata},
            ]
        case RunFinished(finish_reason=reason):
            return [
                {"type": "message-metadata", "messageMetadata": metadata},
                {"type": "finish", "finishReason": reason, "messageMetadata": metadata},
            ]
        case RunFailed(message=message):
            return [{"type": "error", "errorText": message}]
    return []


class MessageBuilder:
    """Accumulates the assistant UIMessage parts of one run from its events; a run going on
    after approvals starts from the parts saved when it paused."""

    def __init__(self, parts: list[dict[str, Any]] | None = None) -> None:
        self.parts: list[dict[str, Any]] = [dict(part) for part in parts or []]
        self._texts: dict[str, dict[str, Any]] = {}
        self._tools: dict[str, dict[str, Any]] = {
            part["toolCallId"]: part for part in self.parts if "toolCallId" in part
        }

    @property
    def steps(self) -> int:
        return sum(1 for part in self.parts if part.get("type") == "step-start")

    def add(self, event: AgentEvent) -> None:
        match event:
            case StepStarted():
                self.parts.append({"type": "step-start"})
            case TextStarted(id=text_id):
                self._texts[text_id] = {"type": "text", "text": ""}
                self.parts.append(self._texts[text_id])
            case TextDelta(id=text_id, delta=delta):
                self._texts[text_id]["text"] += delta
            case ToolInputAvailable(call_id=call_id, tool_name=name, input=tool_input):
                part = {
                    "type": f"tool-{name}",
                    "toolCallId": call_id,
                    "state": "input-available",
                    "input": tool_input,
                }
                self._tools[call_id] = part
                self.parts.append(part)
            case ToolOutput(call_id=call_id, ok=ok, output=output, error=error):
                part = self._tools[call_id]
                if ok:
                    part.update(state="output-available", output=output)
                else:
                    part.update(state="output-error", errorText=error or "")
            case ToolApprovalRequested(call_id=call_id, approval_id=approval_id):
                self._tools[call_id].update(
                    state="approval-requested", approval={"id": approval_id}
                )
            case ToolDenied(call_id=call_id, approval_id=approval_id, reason=reason):
                approval = {"id": approval_id, "approved": False}
                if reason:
                    approval["reason"] = reason
                self._tools[call_id].update(state="output-denied", approval=approval)


async def sse_events(chunks: AsyncIterator[tuple[int, Chunk]]) -> AsyncIterator[bytes]:
    """SSE framing: `id:` is the chunk's sequence number, so `Last-Event-ID` can resume."""
    async for seq, chunk in chunks:
        yield format_sse_event(data_str=json.dumps(chunk, separators=(",", ":")), id=str(seq))
    yield format_sse_event(data_str=DONE)


def stream_response(chunks: AsyncIterator[tuple[int, Chunk]]) -> EventSourceResponse:
    return EventSourceResponse(sse_events(chunks), headers=STREAM_HEADERS)
