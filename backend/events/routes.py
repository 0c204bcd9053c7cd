"""`GET /v1/events`: live changes as Server-Sent Events, ready for a browser's `EventSource`.

The subscription is live before the response starts, so every event published after the first
bytes arrive is delivered. Each event is `id: evt_...` and `data: {"topic", "type", "data"}`; a
quiet stream gets a comment line every `EVENTS_KEEPALIVE_SECONDS`, and the stream ends after
`EVENTS_STREAM_MAX_SECONDS` (the `retry:` tells `EventSource` when to reconnect). Events are not
replayed on reconnection: a client reloads what it shows, then follows the stream again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials
from pydantic.json_schema import SkipJsonSchema
from redis.exceptions import RedisError
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from backend.deps import BearerCredentials, DatabaseDep, SettingsDep, get_caller
from backend.errors import AppError, error_responses, not_found
from backend.events import service
from backend.events.broker import Broker, Subscription, SubscriptionClosed
from backend.events.schemas import TOPICS_PATTERN
from backend.routing import TurboKitRoute
from backend.users.service import Caller
from config.settings import Settings

router = APIRouter(route_class=TurboKitRoute, tags=["events"])

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEPALIVE = b": keep-alive\n\n"
EVENTS_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {}},
        "description": 'SSE: `id: evt_...` and `data: {"topic", "type", "data"}` per event',
    },
    **error_responses(401, 404, 422),
    503: {"description": "The event broker (Redis) is unreachable"},
}


async def get_stream_caller(
    request: Request,
    credentials: BearerCredentials,
    access_token: Annotated[
        str | SkipJsonSchema[None],
        Query(
            max_length=8192,
            description="The bearer token, for clients that cannot set headers (`EventSource`);"
            " accepted on this route only",
        ),
    ] = None,
) -> Caller:
    if credentials is None and access_token:
        credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=access_token)
    return await get_caller(request, credentials)


StreamCaller = Annotated[Caller, Depends(get_stream_caller)]


@router.get("/v1/events", responses=EVENTS_DOC, response_model=None)
async def stream_events(
    request: Request,
    caller: StreamCaller,
    db: DatabaseDep,
    settings: SettingsDep,
    topics: Annotated[
        str,
        Query(
            pattern=TOPICS_PATTERN,
            max_length=4096,
            description="Comma-separated: `threads`, `thread:{id}`, `projects`, "
            "`presence:{room}` (at most 20)",
            examples=["threads,projects,presence:lobby"],
        ),
    ],
) -> StreamingResponse:
    """Live changes to the caller's threads and projects and to presence rooms. A
    `thread:{id}` that is not the caller's answers 404 before the stream starts."""
    wanted = service.parse_topics(topics)
    threads = [t.removeprefix(service.THREAD_PREFIX) for t in wanted if t.startswith("thread:")]
    if threads and len(await db.run_read(service.owned_threads, caller.id, threads)) < len(
        set(threads)
    ):
        raise not_found("Thread")
    broker: Broker = request.app.state.events
    cleanup = AsyncExitStack()
    channels = [service.channel(caller.id, topic) for topic in wanted]
    subscription = await _subscribe(cleanup, broker, channels)
    return EventStream(_frames(subscription, settings), cleanup)


async def _subscribe(cleanup: AsyncExitStack, broker: Broker, channels: list[str]) -> Subscription:
    try:
        return await cleanup.enter_async_context(broker.subscribe(channels))
    except (SubscriptionClosed, RedisError, OSError) as exc:
        await cleanup.aclose()
        raise AppError("UNAVAILABLE", "Live events are unavailable; retry shortly", 503) from exc


async def _frames(subscription: Subscription, settings: Settings) -> AsyncIterator[bytes]:
    yield f"retry: {settings.events_retry_ms}\n: connected\n\n".encode()
    loop = asyncio.get_running_loop()
    ends = loop.time() + settings.events_stream_max_seconds
    while (remaining := ends - loop.time()) > 0:
        try:
            message = await subscription.next(min(settings.events_keepalive_seconds, remaining))
        except SubscriptionClosed:
            return
        yield KEEPALIVE if message is None else message


class EventStream(StreamingResponse):
    """Streams until the frames end or the client goes away (noticed at once, not at the next
    write), then ends the subscription."""

    def __init__(self, frames: AsyncIterator[bytes], cleanup: AsyncExitStack) -> None:
        super().__init__(frames, media_type="text/event-stream", headers=STREAM_HEADERS)
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:  # the client went away mid-write
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            await self._cleanup.aclose()
