"""What every door does before a run starts: find the caller's thread, apply the concurrency
policy, save the user message and create the run, all in one transaction.

That transaction also does what the run would otherwise need transactions of its own for: it
creates the run already `running` when it may start at once, and reads the history the model
will see, so the run goes straight to the model once the door commits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from agent_core.agent import Agent
from agent_core.llm.types import LLMUsage
from backend import metrics
from backend.billing import service as billing
from backend.billing.plans import Plan, plan_for
from backend.chat.schemas import ChatRequest, ClientMessage
from backend.errors import AppError, not_found, validation_error
from backend.events import service as events
from backend.users.models import User
from config.database import after_commit
from config.ids import new_id
from config.settings import Settings
from threads import store
from threads.models import LLMCall, Message, Role, Run, RunStatus, Thread
from threads.schemas import TextPart, ThreadCreate, ThreadPublic, validate_parts


@dataclass(frozen=True, slots=True)
class Turn:
    """A request to run the agent on a thread."""

    text: str | None
    """The user's new message; None to regenerate the last answer."""
    model: str | None = None


async def record_call(
    session: AsyncSession, run: Run, usage: LLMUsage, latency_ms: float
) -> LLMCall:
    """One of the run's LLM calls as the provider reported it, ready to be billed; it counts in
    the metrics once the session commits."""
    call = await store.record_llm_call(
        session,
        run,
        model=usage.model or run.model,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cost_usd=usage.cost_usd,
        latency_ms=round(latency_ms),
        generation_id=usage.generation_id,
    )
    after_commit(
        session,
        lambda: metrics.observe_llm_call(
            call.model, call.prompt_tokens, call.completion_tokens, call.cost_usd
        ),
    )
    return call


def require_llm(settings: Settings) -> None:
    if not settings.llm_configured:
        raise AppError(
            "LLM_NOT_CONFIGURED",
            "No LLM provider is configured: set OPENROUTER_API_KEY "
            "(or OPENROUTER_BASE_URL for another OpenAI-compatible server)",
            503,
        )


async def owned_thread(session: AsyncSession, user_id: str, thread_id: str) -> Thread:
    thread = await store.get_thread(session, thread_id, user_id)
    if thread is None:
        raise not_found("Thread")
    return thread


async def chat_thread(session: AsyncSession, user_id: str, thread_id: str) -> Thread:
    """The caller's thread with this id, created when no thread has it (the AI SDK names them)."""
    thread = await store.get_or_create_thread(session, thread_id, user_id, ThreadCreate())
    if thread is None:
        raise not_found("Thread")
    if store.created_in(session, thread.id):
        events.thread_changed(session, "created", ThreadPublic.model_validate(thread))
    return thread


def turn_from_chat(request: ChatRequest) -> Turn:
    if request.trigger == "regenerate-message":
        return Turn(text=None, model=request.model)
    last = request.messages[-1]
    if last.role != "user":
        raise validation_error(
            ["body", "messages", -1, "role"], "the last message must be a user's"
        )
    return Turn(text=_text_of(last), model=request.model)


ActiveRun = Callable[[AsyncSession, str], Awaitable[Run | None]]

HISTORY_MESSAGES = 200
"""Messages loaded before fitting the token budget; older ones are summarised away by omission."""


@dataclass(frozen=True, slots=True)
class Started:
    """The run a door created, whether it may start now (else it queues), and when it may, the
    messages it answers (oldest first), read in the door's transaction."""

    run: Run
    start_now: bool
    history: Sequence[Message] | None


async def start_turn(
    session: AsyncSession,
    user: User,
    thread: Thread,
    agent: Agent,
    turn: Turn,
    active_run: ActiveRun,
) -> Started:
    """Create the run for this turn, `running` when it may start now, else `queued`."""
    new_thread = store.created_in(session, thread.id)
    active = None
    if not new_thread:
        await store.lock_thread(session, thread.id)  # one door at a time per thread
        active = await active_run(session, thread.id)
    if active is not None and active.status is RunStatus.awaiting_approval:
        await end_paused_run(session, active, SUPERSEDED, RunStatus.completed)
        active = None
    queue = thread.meta.get("concurrency") == "queue"
    if active is not None and not queue:
        raise AppError(
            "CONFLICT", "A run is already active on this thread", 409, {"run_id": active.id}
        )
    request: dict[str, str | int] = {}
    message = None
    if turn.text is None:
        await _drop_last_answer(session, thread.id)
    elif active is not None:
        request["queued_text"] = turn.text  # saved when the run starts, after the active one
    else:
        # The thread's `updated_at` moves when the run ends (its one touch per turn).
        parts = [TextPart(text=turn.text)]
        message = await store.append_message(session, thread.id, Role.user, parts, touch=False)
    plan = plan_for(user.plan)
    model = _model(agent, turn.model, plan)
    request["max_steps"] = min(agent.max_steps, plan.max_steps)
    run = await store.create_run(
        session,
        thread_id=thread.id,
        user_id=thread.user_id,
        agent=agent.name,
        model=model,
        request=request,
        assistant_message_id=new_id("msg"),
        running=active is None,
    )
    await billing.reserve(session, user, run.id)
    if active is not None:
        return Started(run, start_now=False, history=None)
    if new_thread and message is not None:
        return Started(run, start_now=True, history=[message])
    history = await store.get_last_messages(session, thread.id, HISTORY_MESSAGES)
    return Started(run, start_now=True, history=history)


def _model(agent: Agent, requested: str | None, plan: Plan) -> str:
    model = agent.model or ""
    if requested is not None and requested != model:
        if requested not in agent.fallback_models:
            allowed = ", ".join([model, *agent.fallback_models])
            raise validation_error(["body", "model"], f"model must be one of: {allowed}")
        model = requested
    if plan.allowed_models is not None and model not in plan.allowed_models:
        raise AppError("FORBIDDEN", f"The {plan.name} plan does not include {model}", 403)
    return model


def _text_of(message: ClientMessage) -> str:
    text = "".join(
        str(part.get("text", "")) for part in message.parts if part.get("type") == "text"
    )
    if not text.strip():
        raise validation_error(["body", "messages", -1, "parts"], "the message has no text")
    return text


async def _drop_last_answer(session: AsyncSession, thread_id: str) -> None:
    """Regenerate: remove the answer after the last user message so the run replaces it."""
    last_user = await session.scalar(
        select(Message.seq)
        .where(Message.thread_id == thread_id, Message.role == "user")
        .order_by(Message.seq.desc())
        .limit(1)
    )
    if last_user is None:
        raise validation_error(["body", "trigger"], "there is no user message to answer again")
    await session.execute(
        delete(Message).where(Message.thread_id == thread_id, Message.seq > last_user)
    )


# --- Tool approvals -----------------------------------------------------------------------------

SUPERSEDED = "A new message was sent instead of a decision."
STOPPED = "The run was stopped before a decision."


@dataclass(frozen=True, slots=True)
class Decided:
    run: Run
    resumed: bool
    """Every approval of the run is decided: it was queued to go on."""


async def decide(
    session: AsyncSession, thread: Thread, approval_id: str, approved: bool, reason: str | None
) -> Decided:
    """Record a decision on one of the paused run's approval requests; once none is left open,
    queue the run to go on (the caller launches it after commit)."""
    await store.touch_thread(session, thread.id)  # ordered against doors and other decisions
    run = await store.get_active_run(session, thread.id)
    message = await _paused_message(session, run)
    if run is None or message is None:
        raise not_found("Approval")
    parts = [dict(part) for part in message.parts]
    part = next((p for p in parts if (p.get("approval") or {}).get("id") == approval_id), None)
    if part is None:
        raise not_found("Approval")
    if part.get("state") != "approval-requested":
        raise AppError("CONFLICT", "This approval was already decided", 409)
    part["state"] = "approval-responded"
    part["approval"] = {"id": approval_id, "approved": approved}
    if reason:
        part["approval"]["reason"] = reason
    await store.replace_message(session, message.id, validate_parts(parts))
    resumed = not any(p.get("state") == "approval-requested" for p in parts)
    if resumed:
        resume_after = await store.last_run_event_seq(session, run.id)
        await store.queue_paused_run(session, run.id, resume_after)
    return Decided(run, resumed)


async def end_paused_run(session: AsyncSession, run: Run, reason: str, status: RunStatus) -> None:
    """End a run that waits for approvals without going on: every call not yet run is denied
    (the model reads the denial next turn) and its reservation is released."""
    message = await _paused_message(session, run)
    if message is not None:
        parts = [_denied(part, reason) for part in message.parts]
        await store.replace_message(session, message.id, validate_parts(parts))
    await billing.release(session, run.id)
    if await store.mark_run_finished(session, run.id, status, finish_reason="tool-calls"):
        events.run_finished(session, run.user_id, run.thread_id, run.id, status.value, "tool-calls")
        after_commit(session, lambda: metrics.observe_run_end(status))


def _denied(part: dict[str, Any], reason: str) -> dict[str, Any]:
    if part.get("state") not in ("approval-requested", "approval-responded"):
        return part
    approval = {"id": part["approval"]["id"], "approved": False, "reason": reason}
    return {**part, "state": "output-denied", "approval": approval}


async def _paused_message(session: AsyncSession, run: Run | None) -> Message | None:
    if run is None or run.status is not RunStatus.awaiting_approval:
        return None
    if run.assistant_message_id is None:
        return None
    return await store.get_message(session, run.thread_id, run.assistant_message_id)
