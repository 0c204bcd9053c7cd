"""The real AI SDK client reads the chat stream: `tests/node/chat_client.mjs` runs the `ai`
package's `DefaultChatTransport` and `readUIMessageStream({terminateOnError: true})` on Node against
the app served over real HTTP, and the tests assert on the UIMessage the SDK assembled.

Needs `node` and `npm`: the tests skip with the reason when either is missing, and fail instead
under TURBOKIT_REQUIRE_SERVICES=1. `npm ci` runs in `tests/node` once per session when its
`node_modules` is absent or does not hold the locked `ai` version.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from tests.conftest import Users
from tests.support.databases import services_required
from tests.support.scripted_provider import (
    ErrorReply,
    ScriptedProvider,
    TextReply,
    ToolCall,
    ToolCallReply,
    Usage,
)
from tests.support.ui_stream import chat_body, wait_idle

pytestmark = pytest.mark.node

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
CLIENT = NODE_DIR / "chat_client.mjs"
MIN_NODE_MAJOR = 20
"""`ai@6` declares Node >= 18, its dependency `@vercel/oidc` Node >= 20."""
NPM_CI_TIMEOUT = 300.0
CLIENT_TIMEOUT = 60.0
"""Seconds before a client run counts as hung; a healthy one takes about a second."""

DOCUMENTED_FIELDS: dict[str, set[str]] = {
    "start": {"messageId", "messageMetadata"},
    "start-step": set(),
    "text-start": {"id"},
    "text-delta": {"id", "delta"},
    "text-end": {"id"},
    "tool-input-start": {"toolCallId", "toolName"},
    "tool-input-delta": {"toolCallId", "inputTextDelta"},
    "tool-input-available": {"toolCallId", "toolName", "input"},
    "tool-output-available": {"toolCallId", "output"},
    "tool-output-error": {"toolCallId", "errorText"},
    "finish-step": set(),
    "message-metadata": {"messageMetadata"},
    "finish": {"finishReason", "messageMetadata"},
    "error": {"errorText"},
    "tool-approval-request": {"approvalId", "toolCallId"},
    "tool-output-denied": {"toolCallId"},
}
"""Chunk fields by type, besides `type`, as API.md "Chat (streaming)" documents them. `ai@6.0.0`
parses chunks with `z.strictObject` and fails the whole stream on any other field; the pinned
release accepts extra fields, so this check stands in for the strict ones."""


# --------------------------------------------------------------------------- the Node client


def _unavailable(reason: str) -> NoReturn:
    if services_required():
        pytest.fail(f"{reason} (TURBOKIT_REQUIRE_SERVICES is set)")
    pytest.skip(reason)


def _locked_ai_version() -> str:
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    version: str = lock["packages"]["node_modules/ai"]["version"]
    return version


def _installed_ai_version() -> str | None:
    manifest = NODE_DIR / "node_modules" / "ai" / "package.json"
    if not manifest.is_file():
        return None
    version: str = json.loads(manifest.read_text())["version"]
    return version


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=NODE_DIR, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def node() -> str:
    """The `node` executable, with `tests/node` installed from its lockfile."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable(f"the AI SDK client tests need Node.js and npm (node={node}, npm={npm})")
    version = _run([node, "--version"], 30).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < MIN_NODE_MAJOR:
        _unavailable(f"the `ai` package needs Node >= {MIN_NODE_MAJOR}, found {version}")
    if _installed_ai_version() != _locked_ai_version():
        try:
            done = _run([npm, "ci", "--no-audit", "--no-fund"], NPM_CI_TIMEOUT)
        except subprocess.TimeoutExpired:
            _unavailable(f"`npm ci` in {NODE_DIR} took over {NPM_CI_TIMEOUT:.0f}s")
        if done.returncode != 0:
            _unavailable(f"`npm ci` in {NODE_DIR} failed:\n{done.stderr[-2000:]}")
    return node


@dataclass(frozen=True)
class ClientRun:
    """One run of `chat_client.mjs`: exit status, output, and the chunks the SDK accepted."""

    returncode: int
    stdout: str
    stderr: str
    chunks: list[dict[str, Any]]

    @property
    def message(self) -> Any:
        """The final UIMessage (None when `resume` found no active run)."""
        assert self.returncode == 0, f"the AI SDK client failed:\n{self.stderr}"
        return json.loads(self.stdout)


async def run_client(
    node: str, tmp_path: Path, command: str, base_url: str, token: str, thread_id: str, *args: str
) -> ClientRun:
    """Run the client in a subprocess without blocking the loop that serves the app."""
    chunks_file = tmp_path / f"chunks-{uuid.uuid4().hex}.jsonl"
    process = await asyncio.create_subprocess_exec(
        node,
        str(CLIENT),
        command,
        "--base-url",
        base_url,
        "--thread",
        thread_id,
        "--chunks",
        str(chunks_file),
        *args,
        cwd=NODE_DIR,
        env={**os.environ, "TURBOKIT_TOKEN": token},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(CLIENT_TIMEOUT):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.communicate()
        raise AssertionError(f"the AI SDK client hung for {CLIENT_TIMEOUT:.0f}s") from None
    assert process.returncode is not None
    lines = chunks_file.read_text().splitlines() if chunks_file.exists() else []
    return ClientRun(
        returncode=process.returncode,
        stdout=stdout.decode(),
        stderr=stderr.decode(),
        chunks=[json.loads(line) for line in lines],
    )


def undocumented_fields(chunks: list[dict[str, Any]]) -> list[tuple[str, set[str]]]:
    """(chunk type, fields API.md does not list for it) for every offending chunk."""
    found = []
    for chunk in chunks:
        allowed = DOCUMENTED_FIELDS.get(chunk["type"])
        extra = set(chunk) - {"type"} - (allowed or set())
        if allowed is None or extra:
            found.append((chunk["type"], extra))
    return found


def new_thread_id() -> str:
    return f"sdk-{uuid.uuid4().hex[:16]}"


# ---------------------------------------------------------------------------------------- tests


async def test_the_sdk_assembles_a_tool_using_turn(
    chat: httpx.AsyncClient,
    chat_url: str,
    users: Users,
    provider: ScriptedProvider,
    node: str,
    tmp_path: Path,
) -> None:
    token = users.token()
    me = {"Authorization": f"Bearer {token}"}
    created = await chat.post(
        "/v1/projects", headers=me, json={"name": "Zephyr launch", "description": "rockets"}
    )
    project = created.json()
    provider.push(
        ToolCallReply(calls=[ToolCall("search_projects", {"query": "zephyr"})]),
        TextReply("You have one: Zephyr launch."),
    )
    thread_id = new_thread_id()

    run = await run_client(
        node, tmp_path, "send", chat_url, token, thread_id, "--prompt", "Find Zephyr"
    )

    message = run.message
    assert message["role"] == "assistant"
    assert [part["type"] for part in message["parts"]] == [
        "step-start",
        "tool-search_projects",
        "step-start",
        "text",
    ]
    tool = message["parts"][1]
    assert tool["state"] == "output-available"
    assert tool["input"] == {"query": "zephyr"}
    assert [hit["id"] for hit in tool["output"]] == [project["id"]]
    assert message["parts"][3]["text"] == "You have one: Zephyr launch."
    assert message["parts"][3]["state"] == "done"
    metadata = message["metadata"]
    assert metadata["run_id"].startswith("run_")
    assert metadata["usage"]["prompt_tokens"] == 2 * Usage().prompt_tokens
    assert metadata["usage"]["completion_tokens"] == 2 * Usage().completion_tokens
    assert [chunk["type"] for chunk in run.chunks][-1] == "finish"
    assert undocumented_fields(run.chunks) == []

    saved = await chat.get(f"/v1/threads/{thread_id}/messages?order=asc", headers=me)
    assistant = saved.json()["items"][-1]
    assert assistant["id"] == message["id"]
    assert assistant["metadata"] == {**assistant["metadata"], **metadata}
    # The SDK marks a finished text part `state: "done"`; the saved message has the same parts.
    assert assistant["parts"] == [
        {k: v for k, v in part.items() if (part["type"], k) != ("text", "state")}
        for part in message["parts"]
    ]


async def test_the_sdk_terminates_when_the_provider_stays_down(
    chat: httpx.AsyncClient,
    chat_url: str,
    users: Users,
    provider: ScriptedProvider,
    node: str,
    tmp_path: Path,
) -> None:
    provider.reset(default=ErrorReply(503, "overloaded"))

    run = await run_client(
        node, tmp_path, "send", chat_url, users.token(), new_thread_id(), "--prompt", "Hello?"
    )

    assert run.returncode != 0
    assert run.stdout == ""
    assert "503" in run.stderr
    assert run.chunks[-1]["type"] == "error"
    assert run.chunks[-1]["errorText"] in run.stderr
    assert undocumented_fields(run.chunks) == []


async def test_the_sdk_resumes_an_active_run_and_gets_null_after_it(
    chat: httpx.AsyncClient,
    chat_url: str,
    users: Users,
    provider: ScriptedProvider,
    node: str,
    tmp_path: Path,
) -> None:
    token = users.token()
    me = {"Authorization": f"Bearer {token}"}
    words = " ".join(f"word{n}" for n in range(60))
    provider.push(TextReply(words, delay=0.05))  # about 3 s: time enough for Node to start
    thread_id = new_thread_id()
    async with chat.stream(
        "POST", "/v1/chat", json=chat_body(thread_id, "Talk"), headers=me
    ) as response:
        async for line in response.aiter_lines():
            if '"text-delta"' in line:
                break  # the browser goes away mid-answer; the run goes on

    resumed = await run_client(node, tmp_path, "resume", chat_url, token, thread_id)

    message = resumed.message
    assert resumed.chunks[0]["type"] == "start"
    assert message["id"] == resumed.chunks[0]["messageId"]
    assert message["parts"][-1]["text"] == words
    assert message["metadata"]["run_id"].startswith("run_")
    assert undocumented_fields(resumed.chunks) == []

    await wait_idle(chat, me, thread_id)
    after = await run_client(node, tmp_path, "resume", chat_url, token, thread_id)
    assert after.message is None
    assert after.chunks == []


@pytest.mark.parametrize("approved", [True, False])
async def test_the_sdk_continues_a_message_after_an_approval_decision(
    chat: httpx.AsyncClient,
    chat_url: str,
    users: Users,
    provider: ScriptedProvider,
    node: str,
    tmp_path: Path,
    approved: bool,
) -> None:
    token = users.token()
    me = {"Authorization": f"Bearer {token}"}
    created = await chat.post("/v1/projects", headers=me, json={"name": "Old drafts"})
    project_id = created.json()["id"]
    provider.push(ToolCallReply(calls=[ToolCall("delete_project", {"project_id": project_id})]))
    thread_id = new_thread_id()

    paused = await run_client(
        node, tmp_path, "send", chat_url, token, thread_id, "--prompt", "Delete old drafts"
    )

    tool = paused.message["parts"][1]
    assert tool["state"] == "approval-requested"
    assert tool["approval"]["id"].startswith("apr_")
    assert paused.chunks[-1] == {
        "type": "finish",
        "finishReason": "tool-calls",
        "messageMetadata": paused.chunks[-1]["messageMetadata"],
    }
    message_file = tmp_path / "paused.json"
    message_file.write_text(json.dumps(paused.message))
    provider.push(TextReply("Deleted." if approved else "Kept it."))

    decided = await run_client(
        node,
        tmp_path,
        "approve",
        chat_url,
        token,
        thread_id,
        "--approval",
        tool["approval"]["id"],
        "--approved",
        "true" if approved else "false",
        "--message",
        str(message_file),
    )

    message = decided.message
    assert message["id"] == paused.message["id"]
    assert [part["type"] for part in message["parts"]] == [
        "step-start",
        "tool-delete_project",
        "step-start",
        "text",
    ]
    tool = message["parts"][1]
    assert tool["state"] == ("output-available" if approved else "output-denied")
    assert message["parts"][3]["text"] == ("Deleted." if approved else "Kept it.")
    assert undocumented_fields(paused.chunks + decided.chunks) == []
    gone = (await chat.get(f"/v1/projects/{project_id}", headers=me)).status_code == 404
    assert gone is approved
