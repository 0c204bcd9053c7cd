"""The chunk adapter: one run's UI message stream as OpenAI `chat.completion.chunk` events.

Only the answer's text goes out (server-side tool calls are the agent's business, not the
client's). The role is sent once, on the first delta: the openai SDK's `.stream()` helper
concatenates every string it receives for a field. A failure mid-stream is a JSON event with a
top-level `error` object, which is how the SDK recognises one, before `[DONE]`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.sse import EventSourceResponse, format_sse_event

from backend.chat.stream import DONE
from backend.completions.schemas import TEXT_SEPARATOR
from backend.completions.service import finish_reason
from backend.errors import AppError

Chunk = dict[str, Any]
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ChunkAdapter:
    """Turns UI message chunks into completion chunks, remembering what was already sent."""

    def __init__(self, completion_id: str, model: str, created: int, include_usage: bool) -> None:
        self._base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        self._include_usage = include_usage
        self._wrote_text = False
        self._separate = False

    def adapt(self, chunk: Chunk) -> list[Chunk]:
        kind = chunk.get("type")
        if kind == "start":
            return [self._choice({"role": "assistant", "content": ""})]
        if kind == "text-start":
            self._separate = self._wrote_text
        elif kind == "text-delta" and chunk.get("delta"):
            return [self._choice({"content": self._text(str(chunk["delta"]))})]
        elif kind == "finish":
            return self._finish(chunk)
        return []

    def error(self, failure: AppError) -> Chunk:
        return {"error": {"message": failure.message, "type": "server_error", "code": failure.code}}

    def _text(self, delta: str) -> str:
        separator = TEXT_SEPARATOR if self._separate else ""
        self._separate = False
        self._wrote_text = True
        return separator + delta

    def _finish(self, chunk: Chunk) -> list[Chunk]:
        reason = finish_reason(chunk.get("finishReason"))
        chunks = [self._choice({}, reason)]
        usage = (chunk.get("messageMetadata") or {}).get("usage")
        if self._include_usage and usage:
            prompt, completion = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
            totals = {"prompt_tokens": prompt, "completion_tokens": completion}
            chunks.append(
                {
                    **self._base,
                    "choices": [],
                    "usage": {**totals, "total_tokens": prompt + completion},
                }
            )
        return chunks

    def _choice(self, delta: Chunk, reason: str | None = None) -> Chunk:
        return {**self._base, "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}


Failure = Callable[[], Awaitable[AppError]]
"""Looks up why the run failed, once it has ended (the UI stream's `error` chunk has no code)."""


async def completion_events(
    chunks: AsyncIterator[tuple[int, Chunk]], adapter: ChunkAdapter, failure: Failure
) -> AsyncIterator[bytes]:
    failed = False
    async for _seq, chunk in chunks:
        failed = failed or chunk.get("type") == "error"
        for payload in adapter.adapt(chunk):
            yield _event(payload)
    if failed:
        yield _event(adapter.error(await failure()))
    yield format_sse_event(data_str=DONE)


def completion_stream(
    chunks: AsyncIterator[tuple[int, Chunk]],
    adapter: ChunkAdapter,
    failure: Failure,
    headers: dict[str, str],
) -> EventSourceResponse:
    return EventSourceResponse(
        completion_events(chunks, adapter, failure), headers={**STREAM_HEADERS, **headers}
    )


def _event(payload: Chunk) -> bytes:
    return format_sse_event(data_str=json.dumps(payload, separators=(",", ":")))
