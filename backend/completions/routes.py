"""`GET /v1/models` and `POST /v1/chat/completions`: thin, over the chat door's run engine."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from pydantic import StringConstraints
from pydantic.json_schema import SkipJsonSchema
from starlette.responses import Response

from backend.chat import service as chat
from backend.chat.routes import AgentsDep, AwaitedResponse, RunsDep, start_run
from backend.chat.runs import RunManager
from backend.completions import service
from backend.completions.schemas import ChatCompletion, ChatCompletionRequest, ModelCard, ModelList
from backend.completions.service import THREAD_HEADER
from backend.completions.stream import ChunkAdapter, completion_stream
from backend.deps import CurrentUser, DatabaseDep, SessionDep, SettingsDep
from backend.errors import AppError, error_responses
from backend.ratelimit import ChatRateLimit
from backend.routing import TurboKitRoute
from config.database import Database
from threads import store
from threads.models import Run
from threads.schemas import THREAD_ID_PATTERN

router = APIRouter(route_class=TurboKitRoute, tags=["openai"], responses=error_responses(401, 422))

STARTED = int(time.time())
"""`created` of the models: the agents are defined when the server starts."""
_THREAD_HEADER_DOC = {
    THREAD_HEADER: {
        "description": "The thread holding this exchange; send it back to continue it.",
        "schema": {"type": "string"},
    }
}
COMPLETION_DOC: dict[int | str, dict[str, Any]] = {
    **error_responses(402, 404, 409, 429, 502, 503),
    200: {
        "content": {"text/event-stream": {}},
        "description": "A `chat.completion`; with `stream: true`, `chat.completion.chunk` events",
        "headers": _THREAD_HEADER_DOC,
    },
}


@router.get("/v1/models")
async def list_models(agents: AgentsDep, _user: CurrentUser) -> ModelList:
    """The agents, as OpenAI lists models: pass an agent's name as `model`."""
    return ModelList(data=[ModelCard(id=name, created=STARTED) for name in agents])


@router.post("/v1/chat/completions", responses=COMPLETION_DOC, response_model=ChatCompletion)
async def create_chat_completion(
    data: ChatCompletionRequest,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    runs: RunsDep,
    agents: AgentsDep,
    db: DatabaseDep,
    _limit: ChatRateLimit,
    x_thread_id: Annotated[
        Annotated[str, StringConstraints(pattern=THREAD_ID_PATTERN)] | SkipJsonSchema[None],
        Header(alias=THREAD_HEADER, description="Continue this thread"),
    ] = None,
) -> Response:
    """Run the agent named by `model` on the conversation; its tools run server-side. Without
    `X-Thread-Id` the messages start a new thread; with it, only the last message is new."""
    chat.require_llm(settings)
    opening = await service.open_turn(session, user.id, agents, data, x_thread_id)
    run_id = await start_run(session, runs, user, opening.agent, opening.thread, opening.turn)
    run = await session.get(Run, run_id)
    assert run is not None
    await service.add_instructions(session, run, opening.instructions)
    thread_id = opening.thread.id
    if data.stream:
        adapter = ChunkAdapter(
            service.completion_id(run_id),
            opening.agent.name,
            int(run.created_at.timestamp()),
            data.include_usage,
        )
        return completion_stream(
            runs.follow(run_id),
            adapter,
            lambda: _failure(db, run_id, thread_id),
            {THREAD_HEADER: thread_id},
        )
    return AwaitedResponse(lambda: _reply(runs, db, run_id, thread_id))


async def _reply(runs: RunManager, db: Database, run_id: str, thread_id: str) -> Response:
    await runs.wait(run_id)
    completion = await service.finished_completion(db, run_id, thread_id)
    return JSONResponse(completion.model_dump(mode="json"), headers={THREAD_HEADER: thread_id})


async def _failure(db: Database, run_id: str, thread_id: str) -> AppError:
    async with db.read() as session:
        run = await store.get_run(session, run_id)
    assert run is not None
    return service.run_failure(run, thread_id)
