"""Agents, threads and the chat doors: `/v1/chat` for the AI SDK, `/v1/threads/{id}/messages`
for scripts. Every door checks ownership first: another user's thread is a 404 everywhere."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Receive, Scope, Send

from agent_core.agent import Agent
from backend.chat import service
from backend.chat.runs import RunManager, resume_point
from backend.chat.schemas import (
    AgentList,
    AgentPublic,
    ApprovalDecision,
    ApprovalReply,
    ChatRequest,
    MessageCreate,
    MessageReply,
    ToolPublic,
)
from backend.chat.service import Turn
from backend.chat.stream import stream_response
from backend.deps import CurrentUser, DatabaseDep, SessionDep, SettingsDep
from backend.errors import AppError, error_responses, validation_error
from backend.events import service as events
from backend.pagination import Page as ApiPage
from backend.ratelimit import ChatRateLimit
from backend.routing import TurboKitRoute
from backend.users.models import User
from config.database import Database, after_commit
from config.ids import id_pattern
from threads import store
from threads.models import RunStatus, Thread
from threads.schemas import THREAD_ID_PATTERN, ThreadCreate, ThreadPublic, ThreadUpdate, UIMessage
from threads.store import (
    MESSAGE_CURSOR_PATTERN,
    THREAD_CURSOR_PATTERN,
    InvalidCursor,
    Page,
)

router = APIRouter(route_class=TurboKitRoute, tags=["chat"], responses=error_responses(401, 422))
OWNED = error_responses(404)
STARTS_RUN = error_responses(402, 404, 409, 429, 503)
ThreadId = Annotated[str, Path(pattern=THREAD_ID_PATTERN)]
ApprovalId = Annotated[str, Path(pattern=id_pattern("apr"))]
SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "UI message stream v1"}
}


async def get_runs(request: Request) -> RunManager:
    runs: RunManager = request.app.state.runs
    return runs


async def get_agents(request: Request) -> dict[str, Agent]:
    agents: dict[str, Agent] = request.app.state.agents
    return agents


T = TypeVar("T")
RunsDep = Annotated[RunManager, Depends(get_runs)]
AgentsDep = Annotated[dict[str, Agent], Depends(get_agents)]


# --- Agents -----------------------------------------------------------------------------------


@router.get("/v1/agents")
async def list_agents(agents: AgentsDep, settings: SettingsDep, _user: CurrentUser) -> AgentList:
    return AgentList(
        items=[
            AgentPublic(
                name=agent.name,
                description=agent.description,
                model=agent.model or settings.openrouter_model,
                tools=[
                    ToolPublic(name=t.name, description=t.description, parameters=t.parameters)
                    for t in agent.tools
                ],
            )
            for agent in agents.values()
        ]
    )


# --- Threads ----------------------------------------------------------------------------------


@router.post("/v1/threads", status_code=201)
async def create_thread(
    data: ThreadCreate, user: CurrentUser, session: SessionDep, agents: AgentsDep
) -> ThreadPublic:
    if data.agent not in agents:
        raise validation_error(["body", "agent"], f"unknown agent; one of: {', '.join(agents)}")
    thread = ThreadPublic.model_validate(await store.create_thread(session, user.id, data))
    events.thread_changed(session, "created", thread)
    return thread


@router.get("/v1/threads")
async def list_threads(
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(pattern=THREAD_CURSOR_PATTERN)] = None,
) -> ApiPage[ThreadPublic]:
    """The caller's threads, most recently active first."""
    page = await _page(store.list_threads(session, user.id, limit=limit, cursor=cursor))
    items = [ThreadPublic.model_validate(t) for t in page.items]
    return ApiPage(items=items, next_cursor=page.next_cursor)


@router.get("/v1/threads/{thread_id}", responses=OWNED)
async def get_thread(thread_id: ThreadId, user: CurrentUser, session: SessionDep) -> ThreadPublic:
    return ThreadPublic.model_validate(await service.owned_thread(session, user.id, thread_id))


@router.patch("/v1/threads/{thread_id}", responses=OWNED)
async def update_thread(
    thread_id: ThreadId, data: ThreadUpdate, user: CurrentUser, session: SessionDep
) -> ThreadPublic:
    thread = await store.update_thread(session, thread_id, user.id, data)
    if thread is None:
        raise AppError("NOT_FOUND", "Thread not found", 404)
    public = ThreadPublic.model_validate(thread)
    if data.model_fields_set:
        events.thread_changed(session, "updated", public)
    return public


@router.delete("/v1/threads/{thread_id}", status_code=204, responses=OWNED)
async def delete_thread(
    thread_id: ThreadId, user: CurrentUser, session: SessionDep, runs: RunsDep
) -> Response:
    thread = await service.owned_thread(session, user.id, thread_id)
    active = await store.get_active_run(session, thread.id)
    if active is not None and active.status is RunStatus.awaiting_approval:
        await service.end_paused_run(session, active, service.STOPPED, RunStatus.stopped)
    elif active is not None:
        runs.stop(active.id)
    await store.delete_thread(session, thread.id, user.id)
    events.thread_deleted(session, user.id, thread.id)
    return Response(status_code=204)


@router.get("/v1/threads/{thread_id}/messages", responses=OWNED)
async def list_messages(
    thread_id: ThreadId,
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(pattern=MESSAGE_CURSOR_PATTERN)] = None,
    order: Literal["asc", "desc"] = "desc",
) -> ApiPage[UIMessage]:
    """The thread's messages as AI SDK UIMessages, ready for `useChat`'s initial messages."""
    await service.owned_thread(session, user.id, thread_id)
    page = await _page(
        store.list_messages(session, thread_id, limit=limit, cursor=cursor, order=order)
    )
    items = [UIMessage.from_row(m) for m in page.items]
    return ApiPage(items=items, next_cursor=page.next_cursor)


@router.post(
    "/v1/threads/{thread_id}/messages",
    responses={**STARTS_RUN, **error_responses(502), **SSE_DOC},
    response_model=MessageReply,
)
async def post_message(
    thread_id: ThreadId,
    data: MessageCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    runs: RunsDep,
    agents: AgentsDep,
    db: DatabaseDep,
    _limit: ChatRateLimit,
    accept: Annotated[str | SkipJsonSchema[None], Header()] = None,
) -> Response:
    """Send a message and get the assistant's reply when the run completes (or, with
    `Accept: text/event-stream`, the UI message stream as it happens)."""
    service.require_llm(settings)
    thread = await service.owned_thread(session, user.id, thread_id)
    turn = Turn(data.text, data.model)
    run_id = await start_run(session, runs, user, agents[thread.agent], thread, turn)
    if accept and "text/event-stream" in accept:
        return stream_response(runs.follow(run_id))
    return AwaitedResponse(lambda: _reply(runs, db, run_id))


# --- Chat (AI SDK) ----------------------------------------------------------------------------


@router.post("/v1/chat", responses={**STARTS_RUN, **SSE_DOC})
async def chat(
    data: ChatRequest,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    runs: RunsDep,
    agents: AgentsDep,
    _limit: ChatRateLimit,
) -> Response:
    """The `useChat` transport: saves the last user message and streams the agent's answer."""
    service.require_llm(settings)
    thread = await service.chat_thread(session, user.id, data.id)
    turn = service.turn_from_chat(data)
    run_id = await start_run(session, runs, user, agents[thread.agent], thread, turn)
    return stream_response(runs.follow(run_id))


@router.get(
    "/v1/chat/{thread_id}/stream",
    responses={**OWNED, **SSE_DOC, 204: {"description": "No run is active"}},
)
async def resume(
    thread_id: ThreadId,
    user: CurrentUser,
    session: SessionDep,
    runs: RunsDep,
    last_event_id: Annotated[str | SkipJsonSchema[None], Header(max_length=20)] = None,
) -> Response:
    """Rejoin the active run's stream: replayed from `start`, or after `Last-Event-ID` (an id
    that is not one of ours replays everything, as a browser reconnecting would need)."""
    thread = await service.owned_thread(session, user.id, thread_id)
    active = await store.get_active_run(session, thread.id)
    if (
        active is None
        or active.status is RunStatus.awaiting_approval
        or await runs.abandoned(session, active)
    ):
        return Response(status_code=204)
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    return stream_response(runs.follow(active.id, after=max(after, resume_point(active))))


@router.post("/v1/chat/{thread_id}/stop", status_code=202, responses=OWNED)
async def stop(
    thread_id: ThreadId, user: CurrentUser, session: SessionDep, runs: RunsDep
) -> dict[str, str | None]:
    """Stop the active run at its next safe point; its partial answer is saved."""
    thread = await service.owned_thread(session, user.id, thread_id)
    active = await store.get_active_run(session, thread.id)
    if active is not None and active.status is RunStatus.awaiting_approval:
        await service.end_paused_run(session, active, service.STOPPED, RunStatus.stopped)
    elif active is not None:
        runs.stop(active.id)
    return {"run_id": active.id if active else None}


@router.post(
    "/v1/chat/{thread_id}/approvals/{approval_id}",
    status_code=202,
    responses={**OWNED, **error_responses(409), **SSE_DOC},
    response_model=ApprovalReply,
)
async def decide_approval(
    thread_id: ThreadId,
    approval_id: ApprovalId,
    data: ApprovalDecision,
    user: CurrentUser,
    session: SessionDep,
    runs: RunsDep,
    accept: Annotated[str | SkipJsonSchema[None], Header()] = None,
) -> Response:
    """Approve or deny a tool call the run paused for (a `tool-approval-request` chunk). Once
    every request of the run is decided it goes on: approved calls run, denied ones reach the
    model as denials. With `Accept: text/event-stream` the reply is the rest of the run's stream."""
    thread = await service.owned_thread(session, user.id, thread_id)
    decided = await service.decide(session, thread, approval_id, data.approved, data.reason)
    run = decided.run
    reply = ApprovalReply(
        run_id=run.id, approval_id=approval_id, approved=data.approved, resumed=decided.resumed
    )
    if not decided.resumed:
        return JSONResponse(reply.model_dump(mode="json"), status_code=202)
    runs.open(run)
    after_commit(session, lambda: runs.launch(run))
    if accept and "text/event-stream" in accept:
        return stream_response(runs.follow(run.id, after=resume_point(run)))
    return JSONResponse(reply.model_dump(mode="json"), status_code=202)


# --- helpers ----------------------------------------------------------------------------------


async def start_run(
    session: AsyncSession,
    runs: RunManager,
    user: User,
    agent: Agent,
    thread: Thread,
    turn: Turn,
) -> str:
    """Every door's start: the turn's run in the request's transaction, launched once it
    commits; returns the run id to follow."""
    started = await service.start_turn(session, user, thread, agent, turn, runs.active_run)
    runs.open(started.run)
    if started.start_now:
        after_commit(session, lambda: runs.launch(started.run, started.history))
    return started.run.id


async def _reply(runs: RunManager, db: Database, run_id: str) -> Response:
    await runs.wait(run_id)
    async with db.read() as session:
        run = await store.get_run(session, run_id)
        assert run is not None
        message = None
        if run.assistant_message_id:
            row = await store.get_message(session, run.thread_id, run.assistant_message_id)
            message = UIMessage.from_row(row) if row else None
    if run.status is RunStatus.failed:
        error = run.error or {}
        status = 502 if error.get("code") == "UPSTREAM_ERROR" else 500
        raise AppError(str(error.get("code", "INTERNAL")), str(error.get("message", "")), status)
    reply = MessageReply.model_validate(
        {
            "message": message,
            "run_id": run.id,
            "usage": (message.metadata.usage if message and message.metadata else None)
            or {"prompt_tokens": run.prompt_tokens, "completion_tokens": run.completion_tokens},
        }
    )
    return JSONResponse(reply.model_dump(mode="json"))


async def _page(pending: Awaitable[Page[T]]) -> Page[T]:
    try:
        return await pending
    except InvalidCursor as exc:
        raise validation_error(["query", "cursor"], "Invalid cursor") from exc


class AwaitedResponse(Response):
    """A response decided later (after the request's transaction committed): errors raised
    while producing it still go through the error handlers, since nothing was sent yet."""

    def __init__(self, produce: Callable[[], Awaitable[Response]]) -> None:
        super().__init__()
        self._produce = produce

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._produce()
        await response(scope, receive, send)
