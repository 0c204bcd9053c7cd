"""`turbokit chat`: a terminal client of the chat API, for developers trying out their tools.

It is an ordinary HTTP client of a running service: it creates (or continues) a thread, posts each
line read from stdin to `/v1/threads/{id}/messages` with `Accept: text/event-stream`, and prints the
AI SDK UI message stream as it arrives, with one compact line per tool call and per tool result.
A tool call that waits for approval is put to the user (`approve ...? [y/N]`) and the answer is
posted to `/v1/chat/{id}/approvals/{approval_id}`, whose reply streams the rest of the turn.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

PREVIEW_CHARS = 160
"""Tool inputs and outputs are cut to this length: one line each."""
FATAL_STATUSES = frozenset({401, 402, 403, 404, 503})
"""Errors that the next message would meet again: the session ends on them."""
_TIMEOUT = httpx.Timeout(30.0, read=None)
"""A turn may spend minutes in tools and model calls between two chunks."""


class ChatError(Exception):
    """A request failed; the message is what the user should read."""

    def __init__(self, message: str, *, fatal: bool = True) -> None:
        super().__init__(message)
        self.fatal = fatal


@dataclass
class Session:
    """One conversation with a running service."""

    http: httpx.Client
    out: TextIO
    err: TextIO
    thread_id: str = ""
    minted_token: bool = False
    """The token was signed here: a 401 then usually means another DATA_DIR than the server's."""
    ask: Callable[[str], str | None] = lambda _prompt: None
    """Reads the user's answer to a question (None: no answer, e.g. end of input)."""

    def open(self, agent: str | None, thread_id: str | None) -> str:
        """Continue `thread_id`, or start a thread with `agent`; returns the agent's name."""
        if thread_id:
            thread = self._json(self.http.get(f"/v1/threads/{thread_id}"))
        else:
            body = {"agent": agent} if agent else {}
            thread = self._json(self.http.post("/v1/threads", json=body))
        self.thread_id = str(thread["id"])
        return str(thread["agent"])

    def send(self, text: str) -> None:
        """Post one message and print the reply as it streams, settling approvals on the way."""
        printer = _Printer(self.out)
        path = f"/v1/threads/{self.thread_id}/messages"
        if not self._stream(printer, path, {"text": text}):
            return
        while printer.approvals:
            requests, printer.approvals = printer.approvals, []
            for approval_id, call in requests:
                answer = self.ask(f"approve {call}? [y/N] ") or ""
                approved = answer.strip().lower() in ("y", "yes")
                path = f"/v1/chat/{self.thread_id}/approvals/{approval_id}"
                if not self._stream(printer, path, {"approved": approved}):
                    return

    def _stream(self, printer: _Printer, path: str, body: dict[str, Any]) -> bool:
        """POST `body` and play the stream it answers with; False when the user stopped it."""
        headers = {"Accept": "text/event-stream"}
        try:
            with self.http.stream("POST", path, json=body, headers=headers) as response:
                if not response.is_success:
                    response.read()
                    raise self._error(response)
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    response.read()  # a decision that leaves other approvals open
                    return True
                complete = printer.play(_data(response.iter_lines()))
        except KeyboardInterrupt:
            printer.line("(stopped)")
            self._stop()
            return False
        except httpx.TransportError as exc:
            printer.finish()
            raise ChatError(f"connection lost: {exc}") from exc
        if not complete:
            printer.line("error: the stream ended before the answer was complete")
        return True

    def _stop(self) -> None:
        """Stop the run (it goes on without us otherwise) and wait until it has ended, so the
        next message does not meet a 409."""
        self.http.post(f"/v1/chat/{self.thread_id}/stop")
        with self.http.stream("GET", f"/v1/chat/{self.thread_id}/stream") as rest:
            for _ in rest.iter_raw():
                pass

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        if response.is_success:
            body: dict[str, Any] = response.json()
            return body
        raise self._error(response)

    def _error(self, response: httpx.Response) -> ChatError:
        message = describe_error(response)
        if response.status_code == 401 and self.minted_token:
            message += (
                " (the token was signed with this directory's DATA_DIR key: run turbokit chat "
                "where the server runs, or pass --token)"
            )
        return ChatError(message, fatal=response.status_code in FATAL_STATUSES)


def connect(url: str, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=_TIMEOUT
    )


def describe_error(response: httpx.Response) -> str:
    """The contract's error (`{"error": {"code", "message", "data"}}`) as one line."""
    try:
        error = response.json()["error"]
        text = f"{response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:PREVIEW_CHARS]}"
    data = error.get("data") or {}
    if isinstance(data, dict) and isinstance(data.get("errors"), list):
        return text + "; " + "; ".join(str(e.get("msg", e)) for e in data["errors"])
    return f"{text} {_preview(data)}" if data else text


@dataclass
class Lines:
    """What the user types: from `input()` with a prompt on a terminal, else read as it comes."""

    stdin: TextIO
    interactive: bool
    out: TextIO = field(default_factory=lambda: sys.stdout)

    def read(self, prompt: str) -> str | None:
        """The answer to a question; off a terminal the question and answer are echoed, so the
        transcript reads as it would have on screen. None at the end of input or on Ctrl-C."""
        if not self.interactive:
            self.out.write(prompt)
        line = self._line(prompt)
        if line is not None and not self.interactive:
            self.out.write(line.rstrip("\n") + "\n")
        return line

    def __iter__(self) -> Iterator[str]:
        """Non-empty messages, until the input ends."""
        while (line := self._line("you> ")) is not None:
            if line.strip():
                yield line.strip()

    def _line(self, prompt: str) -> str | None:
        try:
            line = input(prompt) if self.interactive else self.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            if self.interactive:
                self.out.write("\n")  # end the prompt's line, as input() wrote it
            return None
        return line if self.interactive or line else None


def run(session: Session, lines: Iterable[str], agent: str | None, thread_id: str | None) -> int:
    """The whole conversation; 1 when it ended on an error that another message would repeat."""
    try:
        agent_name = session.open(agent, thread_id)
    except (ChatError, httpx.TransportError) as exc:
        session.err.write(f"turbokit chat: {_reason(exc, session.http)}\n")
        return 1
    session.err.write(f"thread {session.thread_id} (agent {agent_name})\n")
    status = 0
    for text in lines:
        try:
            session.send(text)
        except ChatError as exc:
            session.err.write(f"error: {exc}\n")
            if exc.fatal:
                status = 1
                break
    session.err.write(f"continue with: turbokit chat --thread {session.thread_id}\n")
    return status


def _reason(exc: Exception, http: httpx.Client) -> str:
    if isinstance(exc, httpx.TransportError):
        return f"cannot reach {http.base_url} ({exc}); is `turbokit serve` running?"
    return str(exc)


def _data(lines: Iterable[str]) -> Iterator[str]:
    """The `data` of each server-sent event; the stream's own events carry one line each."""
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            yield "\n".join(data)
            data = []


@dataclass
class _Printer:
    """Writes a streamed reply: text as it comes, one line per tool event."""

    out: TextIO
    speaking: bool = False
    """In the middle of the assistant's text (the cursor is not at a line start)."""
    tool_names: dict[str, str] = field(default_factory=dict)
    tool_inputs: dict[str, Any] = field(default_factory=dict)
    approvals: list[tuple[str, str]] = field(default_factory=list)
    """(approval id, the call in words) of the calls waiting for the user."""

    def play(self, events: Iterable[str]) -> bool:
        """Print every chunk; True when the stream ended properly with `[DONE]`."""
        for data in events:
            if data == "[DONE]":
                self.finish()
                return True
            self._show(json.loads(data))
        self.finish()
        return False

    def _show(self, chunk: dict[str, Any]) -> None:
        kind = chunk["type"]
        if kind == "text-delta":
            self.text(str(chunk["delta"]))
        elif kind == "tool-input-available":
            self.tool_names[chunk["toolCallId"]] = chunk["toolName"]
            self.tool_inputs[chunk["toolCallId"]] = chunk["input"]
            self.line(f"[tool] {chunk['toolName']}({_preview(chunk['input'])})")
        elif kind == "tool-output-available":
            self.line(f"[tool] {self._tool(chunk)} -> {_preview(chunk['output'])}")
        elif kind == "tool-output-error":
            self.line(f"[tool] {self._tool(chunk)} failed: {_cut(str(chunk['errorText']))}")
        elif kind == "tool-approval-request":
            self.line(f"[tool] {self._tool(chunk)} awaits approval ({chunk['approvalId']})")
            call = f"{self._tool(chunk)}({_preview(self.tool_inputs.get(chunk['toolCallId']))})"
            self.approvals.append((str(chunk["approvalId"]), call))
        elif kind == "tool-output-denied":
            self.line(f"[tool] {self._tool(chunk)} denied")
        elif kind == "error":
            self.line(f"error: {chunk['errorText']}")
        elif kind == "finish" and chunk.get("finishReason") not in (None, "stop", "tool-calls"):
            self.line(f"(finished: {chunk['finishReason']})")

    def _tool(self, chunk: dict[str, Any]) -> str:
        return self.tool_names.get(str(chunk["toolCallId"]), "tool")

    def text(self, delta: str) -> None:
        if not self.speaking:
            self.out.write("assistant> ")
            self.speaking = True
        self._write(delta)

    def line(self, text: str) -> None:
        self.finish()
        self._write(text + "\n")

    def finish(self) -> None:
        if self.speaking:
            self._write("\n")
            self.speaking = False

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def _preview(value: Any) -> str:
    return _cut(json.dumps(value, ensure_ascii=False, default=str))


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."
