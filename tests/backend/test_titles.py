"""Threads get a short title from their first exchange: a background model call after the reply,
metered and billed like any other call."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from backend.app import create_app
from backend.chat.titles import INSTRUCTIONS, clean_title
from tests.conftest import Users
from tests.support.scripted_provider import ErrorReply, ScriptedProvider, TextReply
from tests.support.servers import serve
from tests.support.ui_stream import chat_body, read_chunks, text_of


@pytest.fixture
async def titled(chat_app: FastAPI, provider: ScriptedProvider) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app with thread titles on, over the chat app's database and provider."""
    provider.reset()
    settings = chat_app.state.settings.model_copy(update={"thread_titles": True})
    application = create_app(settings)
    async with (
        application.router.lifespan_context(application),
        serve(application) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        yield http


async def send(http: httpx.AsyncClient, me: dict[str, str], thread_id: str, text: str) -> str:
    async with http.stream("POST", "/v1/chat", json=chat_body(thread_id, text), headers=me) as r:
        assert r.status_code == 200, await r.aread()
        return text_of(await read_chunks(r))


async def thread_of(http: httpx.AsyncClient, me: dict[str, str], thread_id: str) -> Any:
    for _ in range(200):
        thread = (await http.get(f"/v1/threads/{thread_id}", headers=me)).json()
        if thread["title"] is not None:
            return thread
        await asyncio.sleep(0.02)
    return thread


async def test_the_first_exchange_titles_the_thread_and_the_call_is_billed(
    titled: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    thread_id = f"title-{uuid.uuid4().hex[:12]}"
    provider.push(TextReply("Apollo lands in July."), TextReply('"Apollo landing schedule."'))

    answer = await send(titled, me, thread_id, "When does the Apollo landing happen?")

    assert answer == "Apollo lands in July."
    thread = await thread_of(titled, me, thread_id)
    assert thread["title"] == "Apollo landing schedule"
    title_request = provider.requests[-1]
    assert title_request.messages[0] == {"role": "system", "content": INSTRUCTIONS}
    assert "When does the Apollo landing happen?" in title_request.messages[1]["content"]
    assert "tools" not in title_request.body
    usage = (await titled.get("/v1/usage?group_by=thread", headers=me)).json()
    assert usage["totals"]["requests"] == 2  # the answer and the title, both metered
    assert usage["totals"]["credits"] > 0

    provider.push(TextReply("Nothing else is planned."))
    await send(titled, me, thread_id, "Anything else?")
    await asyncio.sleep(0.1)
    assert len(provider.requests) == 3  # a titled thread is not titled again
    assert (await titled.get(f"/v1/threads/{thread_id}", headers=me)).json()["title"] == (
        "Apollo landing schedule"
    )


async def test_a_title_the_user_gave_is_kept(
    titled: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    created = await titled.post("/v1/threads", headers=me, json={"title": "Mine"})
    thread_id = created.json()["id"]
    provider.push(TextReply("Hello."))

    await send(titled, me, thread_id, "Hi")
    await asyncio.sleep(0.1)

    assert len(provider.requests) == 1
    assert (await titled.get(f"/v1/threads/{thread_id}", headers=me)).json()["title"] == "Mine"


async def test_a_failed_title_call_leaves_the_thread_untitled_and_the_reply_intact(
    titled: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    thread_id = f"title-{uuid.uuid4().hex[:12]}"
    provider.push(TextReply("Fine."), ErrorReply(400, "bad request"))

    assert await send(titled, me, thread_id, "How are you?") == "Fine."

    for _ in range(100):
        if len(provider.requests) == 2 and provider.requests[-1].outcome != "pending":
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    thread = (await titled.get(f"/v1/threads/{thread_id}", headers=me)).json()
    assert thread["title"] is None
    messages = (await titled.get(f"/v1/threads/{thread_id}/messages", headers=me)).json()
    assert len(messages["items"]) == 2


@pytest.mark.parametrize(
    ("answer", "title"),
    [
        ('"Moon plans."', "Moon plans"),
        ("Title: Budget review\n\nextra", "Budget review"),
        ("**Launch checklist**", "Launch checklist"),
        ("word " * 40, ("word " * 40)[:80].rsplit(" ", 1)[0] + "…"),
    ],
)
def test_answers_are_cleaned_into_titles(answer: str, title: str) -> None:
    assert clean_title(answer) == title
