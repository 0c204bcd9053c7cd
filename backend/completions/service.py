"""What the OpenAI-compatible door adds to the chat engine: mapping an OpenAI conversation onto a
thread (history, instructions, the new user turn) and the finished run onto a `chat.completion`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from agent_core.agent import Agent
from backend.chat import service as chat
from backend.chat.service import Turn
from backend.completions.schemas import (
    INSTRUCTION_ROLES,
    TEXT_SEPARATOR,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    CompletionUsage,
    FinishReason,
)
from backend.errors import AppError, validation_error
from backend.events import service as events
from config.database import Database
from threads import store
from threads.models import Role, Run, RunStatus, Thread
from threads.schemas import TextPart, ThreadCreate, ThreadPublic

THREAD_HEADER = "X-Thread-Id"

_FINISH_REASONS: dict[str | None, FinishReason] = {
    "length": "length",
    "content-filter": "content_filter",
    "tool-calls": "length",  # cut short: the step limit, or a tool call waiting for approval
}
"""The run's AI SDK finish reason as OpenAI's; everything else (`stop`, `other` after a stop
request) is `stop`."""


@dataclass(frozen=True, slots=True)
class Opening:
    """A request mapped onto a thread: where the turn runs, and what it adds to the prompt."""

    thread: Thread
    agent: Agent
    turn: Turn
    instructions: str | None


def agent_for(agents: dict[str, Agent], model: str) -> Agent:
    agent = agents.get(model)
    if agent is None:
        raise AppError("NOT_FOUND", "Model not found", 404)
    return agent


async def open_turn(
    session: AsyncSession,
    user_id: str,
    agents: dict[str, Agent],
    request: ChatCompletionRequest,
    thread_id: str | None,
) -> Opening:
    """Without a thread id, a new thread gets the request's earlier user/assistant messages as its
    history; with one, the caller's thread already holds the history and only the last message is
    new. System and developer messages become the run's extra instructions either way."""
    agent = agent_for(agents, request.model)
    text = _last_user_text(request.messages)
    if thread_id is None:
        thread = await _new_thread(session, user_id, agent, request)
    else:
        thread = await chat.owned_thread(session, user_id, thread_id)
        if thread.agent != agent.name:
            raise validation_error(["body", "model"], f"this thread talks to {thread.agent!r}")
    return Opening(thread, agent, Turn(text), _instructions(request.messages))


async def add_instructions(session: AsyncSession, run: Run, instructions: str | None) -> None:
    """Recorded on the run (before it starts) for the engine to append to the system prompt."""
    if instructions:
        run.request = {**run.request, "instructions": instructions}
        await session.flush()


async def finished_completion(db: Database, run_id: str, thread_id: str) -> ChatCompletion:
    """The ended run as a `chat.completion`; a failed run raises its contract error."""
    async with db.read() as session:
        run = await store.get_run(session, run_id)
        assert run is not None
        message = None
        if run.assistant_message_id:
            message = await store.get_message(session, run.thread_id, run.assistant_message_id)
    if run.status is RunStatus.failed:
        raise run_failure(run, thread_id)
    return ChatCompletion(
        id=completion_id(run.id),
        created=int(run.created_at.timestamp()),
        model=run.agent,
        choices=[
            Choice(
                message=AssistantMessage(content=answer_text(message.parts if message else [])),
                finish_reason=finish_reason(_ai_sdk_reason(run)),
            )
        ],
        usage=CompletionUsage(
            prompt_tokens=run.prompt_tokens,
            completion_tokens=run.completion_tokens,
            total_tokens=run.prompt_tokens + run.completion_tokens,
        ),
    )


def run_failure(run: Run, thread_id: str) -> AppError:
    error = run.error or {}
    code = str(error.get("code", "INTERNAL"))
    status = 502 if code == "UPSTREAM_ERROR" else 500
    message = str(error.get("message") or "The run failed")
    return AppError(code, message, status, headers={THREAD_HEADER: thread_id})


def completion_id(run_id: str) -> str:
    return f"chatcmpl-{run_id}"


def finish_reason(reason: str | None) -> FinishReason:
    return _FINISH_REASONS.get(reason, "stop")


def _ai_sdk_reason(run: Run) -> str | None:
    """A run paused for tool approvals ended its stream with `tool-calls`: the same here."""
    return "tool-calls" if run.status is RunStatus.awaiting_approval else run.finish_reason


def answer_text(parts: Sequence[dict[str, Any]]) -> str:
    return TEXT_SEPARATOR.join(str(p.get("text", "")) for p in parts if p.get("type") == "text")


def _last_user_text(messages: Sequence[ChatMessage]) -> str:
    last = messages[-1]
    where: list[str | int] = ["body", "messages", len(messages) - 1]
    if last.role != "user":
        raise validation_error([*where, "role"], "the last message must be a user's")
    if not last.text.strip():
        raise validation_error([*where, "content"], "the message has no text")
    return last.text


def _instructions(messages: Sequence[ChatMessage]) -> str | None:
    texts = [m.text for m in messages if m.role in INSTRUCTION_ROLES and m.text.strip()]
    return TEXT_SEPARATOR.join(texts) or None


async def _new_thread(
    session: AsyncSession, user_id: str, agent: Agent, request: ChatCompletionRequest
) -> Thread:
    data = ThreadCreate(agent=agent.name, metadata=dict(request.metadata or {}))
    thread = await store.create_thread(session, user_id, data)
    events.thread_changed(session, "created", ThreadPublic.model_validate(thread))
    for message in request.messages[:-1]:
        if message.role in (Role.user, Role.assistant) and message.text.strip():
            parts = [TextPart(text=message.text)]
            await store.append_message(session, thread.id, Role(message.role), parts)
    return thread
