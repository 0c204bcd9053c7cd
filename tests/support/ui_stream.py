"""Reading the AI SDK UI message stream the way a client does: SSE events, `data:` JSON chunks."""

from __future__ import annotations

import json
from typing import Any

import httpx


async def read_chunks(response: httpx.Response) -> list[dict[str, Any]]:
    """Every chunk up to `[DONE]` (asserted present), with its SSE id under `_id`."""
    chunks: list[dict[str, Any]] = []
    event: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line:
            field, _, value = line.partition(":")
            event[field] = value.strip()
            continue
        data = event.pop("data", None)
        if data == "[DONE]":
            return chunks
        if data is not None:
            chunk = json.loads(data)
            chunks.append({**chunk, "_id": event["id"]} if "id" in event else chunk)
        event = {}
    raise AssertionError(f"stream ended without [DONE] after {len(chunks)} chunks")


def without_ids(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in chunk.items() if k != "_id"} for chunk in chunks]


def types(chunks: list[dict[str, Any]]) -> list[str]:
    return [chunk["type"] for chunk in chunks]


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(chunk["delta"] for chunk in chunks if chunk["type"] == "text-delta")


def chat_body(thread_id: str, text: str, **extra: Any) -> dict[str, Any]:
    """What `DefaultChatTransport` posts for `sendMessage({text})`."""
    return {
        "id": thread_id,
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": text}]}],
        "trigger": "submit-message",
        **extra,
    }


async def wait_idle(http: httpx.AsyncClient, headers: dict[str, str], thread_id: str) -> None:
    """Until the thread has no active run: resume answers 204 (each 200 replays to the end)."""
    for _ in range(500):
        response = await http.get(f"/v1/chat/{thread_id}/stream", headers=headers)
        if response.status_code == 204:
            return
        await response.aread()
    raise AssertionError("the run did not finish")
