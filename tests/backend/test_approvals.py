"""Tool approval end to end over real HTTP: a tool that needs a person's decision pauses the run;
the decision is posted, and the run goes on (approved: the tool runs; denied: the model is told)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from backend.app import create_app
from tests.conftest import Users
from tests.support.scripted_provider import ScriptedProvider, TextReply, ToolCall, ToolCallReply
from tests.support.servers import serve
from tests.support.ui_stream import chat_body, read_chunks, text_of, types, wait_idle

SSE = {"Accept": "text/event-stream"}


def new_thread_id() -> str:
    return f"approve-{uuid.uuid4().hex[:16]}"


async def create_project(http: httpx.AsyncClient, me: dict[str, str], name: str) -> str:
    response = await http.post("/v1/projects", headers=me, json={"name": name})
    assert response.status_code == 201, response.text
    project_id: str = response.json()["id"]
    return project_id


async def send(
    http: httpx.AsyncClient, me: dict[str, str], thread_id: str, text: str
) -> list[dict[str, Any]]:
    async with http.stream("POST", "/v1/chat", json=chat_body(thread_id, text), headers=me) as r:
        assert r.status_code == 200, await r.aread()
        return await read_chunks(r)


async def decide(
    http: httpx.AsyncClient,
    me: dict[str, str],
    thread_id: str,
    approval_id: str,
    body: dict[str, Any],
) -> list[dict[str, Any]]:
    """Post a decision that resumes the run, reading the rest of its stream."""
    url = f"/v1/chat/{thread_id}/approvals/{approval_id}"
    async with http.stream("POST", url, json=body, headers={**me, **SSE}) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
        return await read_chunks(response)


async def last_message(http: httpx.AsyncClient, me: dict[str, str], thread_id: str) -> Any:
    response = await http.get(f"/v1/threads/{thread_id}/messages?limit=1", headers=me)
    assert response.status_code == 200, response.text
    return response.json()["items"][0]


def approval_request(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    (request,) = [c for c in chunks if c["type"] == "tool-approval-request"]
    return request


async def pause_on_delete(
    http: httpx.AsyncClient, me: dict[str, str], provider: ScriptedProvider
) -> tuple[str, str, dict[str, Any]]:
    """A turn in which the model asks to delete a project: returns the thread, the project and
    the approval request the stream carried."""
    project_id = await create_project(http, me, "Obsolete plans")
    provider.push(ToolCallReply(calls=[ToolCall("delete_project", {"project_id": project_id})]))
    thread_id = new_thread_id()
    chunks = await send(http, me, thread_id, "Delete my obsolete plans")
    request = approval_request(chunks)
    call = next(c for c in chunks if c["type"] == "tool-input-available")
    assert request["toolCallId"] == call["toolCallId"]
    assert request["approvalId"].startswith("apr_")
    assert types(chunks)[-3:] == ["finish-step", "message-metadata", "finish"]
    assert chunks[-1]["finishReason"] == "tool-calls"
    assert "tool-output-available" not in types(chunks)
    return thread_id, project_id, request


async def test_an_approved_call_runs_and_the_answer_streams(
    chat: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    thread_id, project_id, request = await pause_on_delete(chat, me, provider)

    # Paused: the project is still there, nothing streams, the saved message shows the request.
    assert (await chat.get(f"/v1/projects/{project_id}", headers=me)).status_code == 200
    assert (await chat.get(f"/v1/chat/{thread_id}/stream", headers=me)).status_code == 204
    paused = await last_message(chat, me, thread_id)
    (part,) = [p for p in paused["parts"] if p["type"] == "tool-delete_project"]
    assert part["state"] == "approval-requested"
    assert part["approval"] == {"id": request["approvalId"]}

    provider.push(TextReply("Done: the project is deleted."))
    chunks = await decide(chat, me, thread_id, request["approvalId"], {"approved": True})

    assert chunks[0] == {"type": "start", "messageId": paused["id"], "_id": chunks[0]["_id"]}
    output = next(c for c in chunks if c["type"] == "tool-output-available")
    assert output["toolCallId"] == request["toolCallId"]
    assert text_of(chunks) == "Done: the project is deleted."
    assert chunks[-1]["type"] == "finish"
    assert (await chat.get(f"/v1/projects/{project_id}", headers=me)).status_code == 404

    # The model's next request carried the tool's result.
    tool_messages = [m for m in provider.requests[-1].messages if m["role"] == "tool"]
    assert tool_messages[-1]["content"] == f"Deleted project {project_id}"
    # One assistant message holds the whole turn, decision included.
    saved = await last_message(chat, me, thread_id)
    assert saved["id"] == paused["id"]
    assert [p["type"] for p in saved["parts"]] == [
        "step-start",
        "tool-delete_project",
        "step-start",
        "text",
    ]
    assert saved["parts"][1]["state"] == "output-available"
    assert saved["parts"][1]["approval"] == {"id": request["approvalId"], "approved": True}
    assert (await chat.get(f"/v1/chat/{thread_id}/stream", headers=me)).status_code == 204


async def test_a_denied_call_is_told_to_the_model_which_answers_without_it(
    chat: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    thread_id, project_id, request = await pause_on_delete(chat, me, provider)
    provider.push(TextReply("Understood, I kept it."))

    body = {"approved": False, "reason": "I still need it"}
    chunks = await decide(chat, me, thread_id, request["approvalId"], body)

    denied = next(c for c in chunks if c["type"] == "tool-output-denied")
    assert (denied["type"], denied["toolCallId"]) == ("tool-output-denied", request["toolCallId"])
    assert text_of(chunks) == "Understood, I kept it."
    assert (await chat.get(f"/v1/projects/{project_id}", headers=me)).status_code == 200
    tool_message = [m for m in provider.requests[-1].messages if m["role"] == "tool"][-1]
    assert tool_message["content"] == "The user denied this tool call. Reason: I still need it"
    saved = await last_message(chat, me, thread_id)
    part = saved["parts"][1]
    assert part["state"] == "output-denied"
    assert part["approval"] == {
        "id": request["approvalId"],
        "approved": False,
        "reason": "I still need it",
    }


async def test_a_new_message_denies_the_open_approval(
    chat: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    thread_id, project_id, request = await pause_on_delete(chat, me, provider)
    provider.push(TextReply("Sure, what else?"))

    chunks = await send(chat, me, thread_id, "Never mind, something else")

    assert text_of(chunks) == "Sure, what else?"
    sent = provider.requests[-1].messages
    assert sent[-1] == {"role": "user", "content": "Never mind, something else"}
    assert sent[-2]["role"] == "tool"
    assert sent[-2]["content"].startswith("The user denied this tool call.")
    assert (await chat.get(f"/v1/projects/{project_id}", headers=me)).status_code == 200
    late = await chat.post(
        f"/v1/chat/{thread_id}/approvals/{request['approvalId']}",
        json={"approved": True},
        headers=me,
    )
    assert late.status_code == 404
    assert late.json()["error"]["code"] == "NOT_FOUND"


async def test_a_predicate_asks_only_for_the_risky_input(
    chat: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    project_id = await create_project(chat, me, "Dusty")
    provider.push(
        ToolCallReply(
            calls=[
                ToolCall("update_project", {"project_id": project_id, "description": "old"}),
                ToolCall("update_project", {"project_id": project_id, "status": "archived"}),
            ]
        )
    )
    thread_id = new_thread_id()

    chunks = await send(chat, me, thread_id, "Describe it as old, then archive it")

    inputs = [c for c in chunks if c["type"] == "tool-input-available"]
    outputs = [c for c in chunks if c["type"] == "tool-output-available"]
    assert [o["toolCallId"] for o in outputs] == [inputs[0]["toolCallId"]]
    assert approval_request(chunks)["toolCallId"] == inputs[1]["toolCallId"]
    project = (await chat.get(f"/v1/projects/{project_id}", headers=me)).json()
    assert (project["description"], project["status"]) == ("old", "active")


async def test_several_requests_resume_once_all_are_decided(
    chat: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    first = await create_project(chat, me, "First")
    second = await create_project(chat, me, "Second")
    provider.push(
        ToolCallReply(
            calls=[
                ToolCall("delete_project", {"project_id": first}),
                ToolCall("delete_project", {"project_id": second}),
            ]
        )
    )
    thread_id = new_thread_id()
    chunks = await send(chat, me, thread_id, "Delete both")
    requests = [c for c in chunks if c["type"] == "tool-approval-request"]
    assert len(requests) == 2
    url = f"/v1/chat/{thread_id}/approvals/"

    reply = await chat.post(url + requests[0]["approvalId"], json={"approved": True}, headers=me)

    assert reply.status_code == 202
    assert reply.json()["resumed"] is False
    again = await chat.post(url + requests[0]["approvalId"], json={"approved": False}, headers=me)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "CONFLICT"
    provider.push(TextReply("Deleted the first one only."))
    reply = await chat.post(url + requests[1]["approvalId"], json={"approved": False}, headers=me)
    assert reply.status_code == 202
    assert reply.json()["resumed"] is True
    async with chat.stream("GET", f"/v1/chat/{thread_id}/stream", headers=me) as resumed:
        if resumed.status_code == 200:  # still running: replayed from the resumed part's start
            replay = types(await read_chunks(resumed))
            assert replay[:3] == ["start", "tool-output-available", "tool-output-denied"]
            assert "tool-approval-request" not in replay
    await wait_idle(chat, me, thread_id)
    assert (await chat.get(f"/v1/projects/{first}", headers=me)).status_code == 404
    assert (await chat.get(f"/v1/projects/{second}", headers=me)).status_code == 200


async def test_stopping_a_paused_run_denies_and_releases_it(
    chat: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    me = users.headers()
    before = (await chat.get("/v1/billing", headers=me)).json()["credits"]
    thread_id, project_id, request = await pause_on_delete(chat, me, provider)

    stopped = await chat.post(f"/v1/chat/{thread_id}/stop", headers=me)

    assert stopped.status_code == 202
    part = (await last_message(chat, me, thread_id))["parts"][1]
    assert part["state"] == "output-denied"
    assert (await chat.get(f"/v1/projects/{project_id}", headers=me)).status_code == 200
    after = (await chat.get("/v1/billing", headers=me)).json()["credits"]
    used = (await chat.get("/v1/usage", headers=me)).json()["totals"]["credits"]
    assert used > 0
    assert before - after == used  # the call was billed and the reservation came back
    late = await chat.post(
        f"/v1/chat/{thread_id}/approvals/{request['approvalId']}",
        json={"approved": True},
        headers=me,
    )
    assert late.status_code == 404


async def test_decisions_belong_to_the_threads_owner(
    chat: httpx.AsyncClient, users: Users, provider: ScriptedProvider
) -> None:
    me, other = users.headers(), users.headers()
    thread_id, _project_id, request = await pause_on_delete(chat, me, provider)
    url = f"/v1/chat/{thread_id}/approvals/{request['approvalId']}"

    stranger = await chat.post(url, json={"approved": True}, headers=other)
    malformed = await chat.post(
        f"/v1/chat/{thread_id}/approvals/not-an-id", json={"approved": True}, headers=me
    )
    extra = await chat.post(url, json={"approved": True, "force": True}, headers=me)

    assert stranger.status_code == 404
    assert malformed.status_code == 422
    assert extra.status_code == 422
    part = (await last_message(chat, me, thread_id))["parts"][1]
    assert part["state"] == "approval-requested"


@asynccontextmanager
async def fresh_app(settings: Any) -> AsyncIterator[str]:
    """A new app process's worth of state (engine, run manager) over the same database."""
    application: FastAPI = create_app(settings)
    async with application.router.lifespan_context(application), serve(application) as url:
        yield url


async def test_a_paused_run_survives_a_restart(
    chat_app: FastAPI, users: Users, provider: ScriptedProvider
) -> None:
    provider.reset()
    me = users.headers()
    settings = chat_app.state.settings
    async with fresh_app(settings) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        thread_id, project_id, request = await pause_on_delete(http, me, provider)

    provider.push(TextReply("Deleted after the restart."))
    async with fresh_app(settings) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        chunks = await decide(http, me, thread_id, request["approvalId"], {"approved": True})
        assert text_of(chunks) == "Deleted after the restart."
        assert (await http.get(f"/v1/projects/{project_id}", headers=me)).status_code == 404
        saved = await last_message(http, me, thread_id)
        assert saved["metadata"]["finish_reason"] == "stop"
