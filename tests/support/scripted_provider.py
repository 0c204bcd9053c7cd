"""A scripted OpenAI-compatible chat completions server on loopback.

Tests that must go through litellm over real HTTP point `api_base` at this server instead of
patching litellm, so serialisation, SSE parsing, headers and retries are exercised for real.
Benchmarks use its default reply as an instant provider.

    async with ScriptedProvider(TextReply("Hi"), ErrorReply(500)) as provider:
        ...  # call litellm with api_base=provider.base_url
        assert provider.requests[0].body["messages"] == [...]

Each request takes the next reply from the script; when the script is empty the `default` reply
answers. The server is a bare ASGI app (one endpoint, exact SSE bytes, precise disconnect
detection) served by uvicorn on 127.0.0.1 with an OS-assigned port.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import uvicorn

DEFAULT_TEXT = "Hello from the scripted provider."
"""What the default reply says."""

DEFAULT_MODEL = "scripted/model"
"""Reported model when neither the reply nor the request names one."""


# --------------------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class Usage:
    """Usage reported in the last chunk; `cost` is OpenRouter's USD figure."""

    prompt_tokens: int = 12
    completion_tokens: int = 7
    cost: float | None = 0.000123
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }
        if self.cost is not None:
            data["cost"] = self.cost
        return data


@dataclass(frozen=True)
class ToolCall:
    """One function call in a `ToolCallReply`; `id` defaults to `call_<n>`."""

    name: str
    arguments: str | Mapping[str, Any] = "{}"
    id: str | None = None

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments)


@dataclass(frozen=True, kw_only=True)
class _Completion:
    usage: Usage | None = field(default_factory=Usage)
    """None leaves usage out of the response."""
    delay: float = 0.0
    """Seconds to wait before each chunk: slow replies for stop/disconnect tests."""
    model: str | None = None
    """Reported model; defaults to the request's."""
    id: str | None = None
    """Response (generation) id; defaults to `gen-<n>`."""


@dataclass(frozen=True)
class TextReply(_Completion):
    """An assistant text answer, streamed a word at a time."""

    text: str = DEFAULT_TEXT
    finish_reason: str = "stop"


@dataclass(frozen=True)
class ToolCallReply(_Completion):
    """Tool calls (optionally after some text), finish_reason `tool_calls`."""

    calls: Sequence[ToolCall]
    text: str = ""


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error before any streaming; the body is OpenRouter-shaped unless given."""

    status: int
    message: str = "scripted upstream error"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None

    def json_body(self) -> Any:
        if self.body is not None:
            return self.body
        return {"error": {"code": self.status, "message": self.message}}


@dataclass(frozen=True)
class MidStreamError:
    """A 200 stream that sends some text, then an OpenRouter error event, then ends."""

    text: str = "Partial answer "
    code: int | str = 502
    message: str = "Provider disconnected unexpectedly"
    delay: float = 0.0


@dataclass(frozen=True)
class CutStream:
    """A 200 stream that sends some text and then simply ends: no finish_reason, usage or [DONE]."""

    text: str = "Partial answer "
    delay: float = 0.0


Reply = TextReply | ToolCallReply | ErrorReply | MidStreamError | CutStream
_Streamed = TextReply | ToolCallReply | MidStreamError | CutStream
ReplyFactory = Callable[[dict[str, Any]], Reply]
"""Builds a reply from the request's JSON body."""
ScriptItem = Reply | ReplyFactory


# ------------------------------------------------------------------------------------ recording

Outcome = Literal["pending", "completed", "disconnected", "error"]


@dataclass
class RecordedRequest:
    """One request as the server saw it, and how its response ended."""

    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: dict[str, Any]
    outcome: Outcome = "pending"
    _ended: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    def end(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self._ended.set()

    async def wait_ended(self, limit: float = 5.0) -> Outcome:
        """Wait until the response finished or the client went away; works from any loop."""
        if not await asyncio.to_thread(self._ended.wait, limit):
            raise TimeoutError(f"request to {self.path} still {self.outcome} after {limit}s")
        return self.outcome


# ---------------------------------------------------------------------------------- the server


class ScriptedProvider:
    """The server plus its script and request log; an async or a sync context manager."""

    def __init__(self, *script: ScriptItem, default: ScriptItem | None = None) -> None:
        self.script: deque[ScriptItem] = deque(script)
        self.default: ScriptItem = default if default is not None else TextReply()
        self.requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    def push(self, *items: ScriptItem) -> None:
        """Append replies to the script."""
        self.script.extend(items)

    def reset(self, default: ScriptItem | None = None) -> None:
        """Forget the script and the recorded requests: one server can serve many tests."""
        self.script.clear()
        self.requests.clear()
        self.default = default if default is not None else TextReply()
        self._ids = itertools.count(1)

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("ScriptedProvider is not running")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL; `/chat/completions` is appended by clients."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle

    async def __aenter__(self) -> Self:
        server = self._prepare()
        self._task = asyncio.create_task(server.serve(sockets=[self._listening_socket()]))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        assert self._task is not None
        self._server.should_exit = True
        await self._task

    def __enter__(self) -> Self:
        """Serve from a background thread with its own event loop (sync tests, benchmarks)."""
        server = self._prepare()
        sock = self._listening_socket()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])),
            name="scripted-provider",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None
        assert self._thread is not None
        self._server.should_exit = True
        self._thread.join()

    def _prepare(self) -> uvicorn.Server:
        config = uvicorn.Config(
            self._asgi,
            interface="asgi3",
            lifespan="off",
            ws="none",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = _QuietServer(config)
        return self._server

    def _listening_socket(self) -> socket.socket:
        """Bind and listen before serving: clients may connect at once, no start-up wait."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self._socket = sock
        return sock

    # -- ASGI

    async def _asgi(self, scope: dict[str, Any], receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST" or scope["path"] not in _PATHS:
            await _send_json(send, 404, {"error": {"code": 404, "message": "not found"}})
            return
        body = json.loads(await _read_body(receive) or b"{}")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        record = RecordedRequest(path=scope["path"], headers=headers, body=body)
        self.requests.append(record)
        reply = self._next_reply(body)
        try:
            await self._respond(reply, record, receive, send)
        finally:
            if record.outcome == "pending":
                record.end("disconnected")

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        item = self.script.popleft() if self.script else self.default
        if isinstance(item, (TextReply, ToolCallReply, ErrorReply, MidStreamError, CutStream)):
            return item
        return item(body)

    async def _respond(
        self, reply: Reply, record: RecordedRequest, receive: _Receive, send: _Send
    ) -> None:
        if isinstance(reply, ErrorReply):
            await _send_json(send, reply.status, reply.json_body(), reply.headers)
            record.end("error")
            return
        number = next(self._ids)
        if not record.stream:
            await _send_json(send, 200, _completion_json(reply, record.body, number))
            record.end("completed")
            return
        chunks = _sse_chunks(reply, record.body, number)
        delay = reply.delay
        if await _stream(send, receive, chunks, delay):
            record.end("completed")


class _QuietServer(uvicorn.Server):
    """Leaves the process's signal handlers alone: Ctrl-C must still stop pytest."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


_PATHS = ("/chat/completions", "/v1/chat/completions")
_Receive = Callable[[], Awaitable[dict[str, Any]]]
_Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _read_body(receive: _Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def _send_json(
    send: _Send, status: int, payload: Any, headers: Mapping[str, str] | None = None
) -> None:
    raw = json.dumps(payload).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *extra],
        }
    )
    await send({"type": "http.response.body", "body": raw})


async def _stream(send: _Send, receive: _Receive, events: Iterator[str], delay: float) -> bool:
    """Send SSE events; False when the client disconnected first."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    disconnect = asyncio.create_task(_wait_disconnect(receive))
    try:
        for event in events:
            if delay:
                await asyncio.wait({disconnect}, timeout=delay)
            if disconnect.done():
                return False
            await send({"type": "http.response.body", "body": event.encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return not disconnect.done()
    finally:
        disconnect.cancel()


async def _wait_disconnect(receive: _Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


# ------------------------------------------------------------------------------- wire payloads


def _model(reply: _Streamed, body: dict[str, Any]) -> str:
    explicit = reply.model if isinstance(reply, TextReply | ToolCallReply) else None
    return explicit or str(body.get("model") or DEFAULT_MODEL)


def _gen_id(reply: _Streamed, number: int) -> str:
    explicit = reply.id if isinstance(reply, TextReply | ToolCallReply) else None
    return explicit or f"gen-{number}"


def _words(text: str) -> list[str]:
    """Split text into word-sized deltas that join back to the original."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


def _fragments(arguments: str, parts: int = 3) -> list[str]:
    size = max(1, -(-len(arguments) // parts))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]


def _call_id(call: ToolCall, index: int, number: int) -> str:
    return call.id or f"call_{number}_{index}"


def _sse_chunks(reply: _Streamed, body: dict[str, Any], number: int) -> Iterator[str]:
    """The whole SSE body, one `data:` event per item, in OpenAI's order."""
    base = {
        "id": _gen_id(reply, number),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": _model(reply, body),
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return _sse({**base, "choices": [choice]})

    yield chunk({"role": "assistant", "content": ""})
    for word in _words(reply.text):
        yield chunk({"content": word})
    if isinstance(reply, MidStreamError):
        error = {"code": reply.code, "message": reply.message}
        yield _sse({**base, "error": error, "choices": [_error_choice()]})
        return
    if isinstance(reply, CutStream):
        return
    if isinstance(reply, ToolCallReply):
        yield from (chunk(d) for d in _tool_call_deltas(reply.calls, number))
        yield chunk({}, "tool_calls")
    else:
        yield chunk({}, reply.finish_reason)
    if reply.usage is not None:
        yield _sse({**base, "choices": [], "usage": reply.usage.to_json()})
    yield "data: [DONE]\n\n"


def _error_choice() -> dict[str, Any]:
    return {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}


def _tool_call_deltas(calls: Sequence[ToolCall], number: int) -> Iterator[dict[str, Any]]:
    """id and name on a call's first delta only, then its argument fragments."""
    for index, call in enumerate(calls):
        head = {
            "index": index,
            "id": _call_id(call, index, number),
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        yield {"tool_calls": [head]}
        for fragment in _fragments(call.arguments_json()):
            yield {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _completion_json(reply: _Streamed, body: dict[str, Any], number: int) -> dict[str, Any]:
    """A non-streaming `chat.completion` (or a 200 with an error object, as OpenRouter does)."""
    base = {
        "id": _gen_id(reply, number),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": _model(reply, body),
    }
    if isinstance(reply, MidStreamError):
        return {**base, "error": {"code": reply.code, "message": reply.message}, "choices": []}
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if isinstance(reply, CutStream):
        return {**base, "choices": [{"index": 0, "message": message, "finish_reason": None}]}
    finish_reason = "tool_calls"
    if isinstance(reply, ToolCallReply):
        message["tool_calls"] = [
            {
                "id": _call_id(call, index, number),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json()},
            }
            for index, call in enumerate(reply.calls)
        ]
    else:
        finish_reason = reply.finish_reason
    choice = {"index": 0, "message": message, "finish_reason": finish_reason}
    payload = {**base, "choices": [choice]}
    if reply.usage is not None:
        payload["usage"] = reply.usage.to_json()
    return payload
