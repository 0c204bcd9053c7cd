"""The `turbokit` command as operators meet it: help, tokens, migrations, clear config errors."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from config.ids import new_id
from tests.conftest import Users
from tests.support import cli
from tests.support.plugins import install_example_plugin, pythonpath
from tests.support.scripted_provider import ScriptedProvider, TextReply, ToolCall, ToolCallReply
from tests.support.servers import serve


def turbokit(*args: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The command on the embedded SQLite database of `data_dir`."""
    return cli.turbokit(*args, unset=["DATABASE_URL"], timeout=60, DATA_DIR=str(data_dir), **env)


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = turbokit("--help", data_dir=tmp_path)
    assert result.returncode == 0
    for command in ("serve", "migrate", "token"):
        assert command in result.stdout


def test_migrate_then_status(tmp_path: Path) -> None:
    first = turbokit("migrate", data_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "applied" in first.stdout
    status = turbokit("migrate", "--status", data_dir=tmp_path)
    assert status.stdout.strip() == "database is up to date"


def test_production_config_error_names_the_variable(tmp_path: Path) -> None:
    result = turbokit("migrate", data_dir=tmp_path, ENVIRONMENT="production")
    assert result.returncode == 2
    assert "CLERK_JWT_ISSUER_DOMAIN" in result.stderr
    assert "Traceback" not in result.stderr


async def test_printed_token_is_accepted_by_the_server(
    client: httpx.AsyncClient, users: Users
) -> None:
    result = turbokit(
        "token", "cli-user", "--email", "cli@example.com", data_dir=users.settings.data_dir
    )
    assert result.returncode == 0, result.stderr
    response = await client.get(
        "/v1/me", headers={"Authorization": f"Bearer {result.stdout.strip()}"}
    )
    assert response.status_code == 200
    assert response.json()["email"] == "cli@example.com"


# --- turbokit tools -------------------------------------------------------------------------------

EXAMPLE_ORIGIN = "plugin 'example' (entry point turbokit_example_plugin:plugin)"


@pytest.fixture(scope="session")
def example_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_example_plugin(tmp_path_factory.getbasetemp())


def test_tools_lists_core_and_plugin_tools_with_agents_and_schema(
    tmp_path: Path, example_plugin: Path
) -> None:
    result = turbokit("tools", data_dir=tmp_path, PYTHONPATH=pythonpath(example_plugin))

    assert result.returncode == 0, result.stderr
    blocks = {block.split(":", 1)[0]: block for block in result.stdout.split("\n\n")}
    assert blocks["word_count"].splitlines() == [
        "word_count: Count the words and characters of a text, e.g. to check a description's "
        "length.",
        f"  from: {EXAMPLE_ORIGIN}",
        "  used by: assistant, editor",
        "  needs approval: no",
        "  parameters: {",
        '    "type": "object",',
        '    "properties": {"text": {"description": "The text to measure.", "type": "string"}},',
        '    "required": ["text"],',
        '    "additionalProperties": false',
        "  }",
    ]
    assert "  from: core\n  used by: assistant, editor\n" in blocks["search_projects"]
    assert result.stdout.endswith("tools; agents: assistant, editor\n")


def test_tools_json_is_for_machines(tmp_path: Path, example_plugin: Path) -> None:
    result = turbokit("tools", "--json", data_dir=tmp_path, PYTHONPATH=pythonpath(example_plugin))

    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    tools = {tool["name"]: tool for tool in listing["tools"]}
    assert tools["word_count"] == {
        "name": "word_count",
        "description": "Count the words and characters of a text, e.g. to check a description's "
        "length.",
        "origin": EXAMPLE_ORIGIN,
        "agents": ["assistant", "editor"],
        "needs_approval": False,
        "parameters": {
            "type": "object",
            "properties": {"text": {"description": "The text to measure.", "type": "string"}},
            "required": ["text"],
            "additionalProperties": False,
        },
    }
    assert tools["search_projects"]["origin"] == "core"
    agents = {agent["name"]: agent for agent in listing["agents"]}
    assert agents["editor"]["tools"] == ["word_count", "search_projects"]
    assert agents["assistant"]["tools"][-1] == "word_count"


def test_tools_without_plugins_lists_the_core_only(tmp_path: Path) -> None:
    result = turbokit("tools", "--json", data_dir=tmp_path)
    listing = json.loads(result.stdout)
    assert {tool["origin"] for tool in listing["tools"]} == {"core"}
    assert [agent["name"] for agent in listing["agents"]] == ["assistant"]


def test_tools_stays_fast_by_not_importing_litellm(tmp_path: Path) -> None:
    check = (
        "import sys; from backend.cli import main; main(['tools', '--json']); "
        "print('litellm' in sys.modules, file=sys.stderr)"
    )
    environment = {**os.environ, "DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", check],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    assert result.stderr.strip() == "False"


def test_tools_help_tells_a_newcomer_where_tools_come_from(tmp_path: Path) -> None:
    result = turbokit("tools", "--help", data_dir=tmp_path)
    assert result.returncode == 0
    for words in ("turbokit.tools", "TOOL_PLUGINS", "JSON Schema", "--json"):
        assert words in result.stdout


@pytest.mark.parametrize("command", ["tools", "serve"])
def test_a_broken_plugin_is_one_line_naming_it_not_a_traceback(
    tmp_path: Path, command: str
) -> None:
    result = turbokit(command, data_dir=tmp_path, TOOL_PLUGINS="tests.plugins.broken:unknown_tool")

    assert result.returncode == 2
    assert result.stderr.startswith(
        "turbokit: plugin 'tests.plugins.broken:unknown_tool' (TOOL_PLUGINS): "
        "agent 'lost' names unknown tool(s) 'no_such_tool'; known tools: search_projects"
    )
    assert len(result.stderr.splitlines()) == 1


# --- turbokit chat --------------------------------------------------------------------------------


async def start_chat(*args: str, data_dir: Path) -> asyncio.subprocess.Process:
    """`turbokit chat` as a subprocess (the server it talks to runs in this test's loop)."""
    environment = {**os.environ, "DATA_DIR": str(data_dir), "ENVIRONMENT": "development"}
    environment.pop("DATABASE_URL", None)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "backend.cli", "chat", *args),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )


async def turbokit_chat(*args: str, stdin: str, data_dir: Path) -> tuple[int | None, str, str]:
    """Run `turbokit chat` on `stdin` to the end: exit status, stdout, stderr."""
    process = await start_chat(*args, data_dir=data_dir)
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=60)
    return process.returncode, out.decode(), err.decode()


def thread_of(stderr: str) -> str:
    match = re.search(r"^thread (thr_\w+) \(agent (\w+)\)$", stderr, re.MULTILINE)
    assert match, stderr
    assert f"continue with: turbokit chat --thread {match[1]}\n" in stderr
    return match[1]


async def test_chat_shows_tool_calls_and_streams_the_answer_then_continues_the_thread(
    chat: httpx.AsyncClient, chat_url: str, users: Users, provider: ScriptedProvider
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

    status, out, err = await turbokit_chat(
        "--url", chat_url, "--token", token, stdin="Find Zephyr\n", data_dir=users.settings.data_dir
    )

    assert status == 0, err
    hit = {"id": project["id"], "name": "Zephyr launch", "description": "rockets"}
    assert out.splitlines() == [
        '[tool] search_projects({"query": "zephyr"})',
        f"[tool] search_projects -> {json.dumps([{**hit, 'status': 'active'}])}",
        "assistant> You have one: Zephyr launch.",
    ]
    thread_id = thread_of(err)

    provider.push(TextReply("It is active."))
    status, out, err = await turbokit_chat(
        *("--url", chat_url, "--token", token, "--thread", thread_id),
        stdin="\nAnd its status?\n",
        data_dir=users.settings.data_dir,
    )

    assert status == 0, err
    assert out == "assistant> It is active.\n"
    assert thread_of(err) == thread_id
    history = [(m["role"], m.get("content")) for m in provider.requests[-1].messages[1:]]
    assert history[0] == ("user", "Find Zephyr")
    assert history[-2:] == [
        ("assistant", "You have one: Zephyr launch."),
        ("user", "And its status?"),
    ]


@pytest.mark.parametrize(("answer", "outcome"), [("y", "approved"), ("n", "denied")])
async def test_chat_puts_a_call_needing_approval_to_the_user(
    chat: httpx.AsyncClient,
    chat_url: str,
    users: Users,
    provider: ScriptedProvider,
    answer: str,
    outcome: str,
) -> None:
    token = users.token()
    me = {"Authorization": f"Bearer {token}"}
    project_id = (await chat.post("/v1/projects", headers=me, json={"name": "Old"})).json()["id"]
    provider.push(
        ToolCallReply(calls=[ToolCall("delete_project", {"project_id": project_id})]),
        TextReply(f"You {outcome} it."),
    )

    status, out, err = await turbokit_chat(
        "--url",
        chat_url,
        "--token",
        token,
        stdin=f"Delete Old\n{answer}\n",
        data_dir=users.settings.data_dir,
    )

    assert status == 0, err
    lines = out.splitlines()
    call = f'delete_project({{"project_id": "{project_id}"}})'
    assert lines[0] == f"[tool] {call}"
    assert lines[1].startswith("[tool] delete_project awaits approval (apr_")
    assert lines[2] == f"approve {call}? [y/N] {answer}"
    if outcome == "approved":
        assert lines[3] == f'[tool] delete_project -> "Deleted project {project_id}"'
    else:
        assert lines[3] == "[tool] delete_project denied"
    assert lines[4:] == [f"assistant> You {outcome} it."]
    gone = (await chat.get(f"/v1/projects/{project_id}", headers=me)).status_code == 404
    assert gone is (outcome == "approved")


async def test_ctrl_c_stops_the_reply_and_the_conversation_goes_on(
    chat: httpx.AsyncClient, chat_url: str, users: Users, provider: ScriptedProvider
) -> None:
    token = users.token()
    provider.push(TextReply(" ".join(f"w{n}" for n in range(300)), delay=0.02), TextReply("Back."))
    process = await start_chat(
        "--url", chat_url, "--token", token, data_dir=users.settings.data_dir
    )
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write(b"Talk for a while\n")
    begun = await asyncio.wait_for(process.stdout.readuntil(b"w3 "), timeout=30)

    process.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(process.communicate(b"Still there?\n"), timeout=60)

    assert process.returncode == 0, err
    transcript = (begun + out).decode()
    assert transcript.startswith("assistant> w0 w1 w2 w3 ")
    assert transcript.endswith("\n(stopped)\nassistant> Back.\n")
    assert "w299" not in transcript
    thread_id = thread_of(err.decode())
    saved = await chat.get(
        f"/v1/threads/{thread_id}/messages?order=asc",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert [m["role"] for m in saved.json()["items"]] == ["user", "assistant"] * 2


async def test_chat_signs_a_development_token_by_default(
    chat: httpx.AsyncClient, chat_url: str, users: Users, provider: ScriptedProvider
) -> None:
    provider.push(TextReply("Hello, developer."))

    status, out, err = await turbokit_chat(
        "--url", chat_url, "--agent", "assistant", stdin="hi\n", data_dir=users.settings.data_dir
    )

    assert status == 0, err
    assert out == "assistant> Hello, developer.\n"
    thread = await chat.get(f"/v1/threads/{thread_of(err)}", headers=users.headers("dev"))
    assert thread.status_code == 200


async def test_chat_prints_the_contracts_error_messages(
    chat: httpx.AsyncClient, chat_url: str, users: Users, app: FastAPI
) -> None:
    data_dir = users.settings.data_dir
    token = users.token()

    status, _, err = await turbokit_chat(
        "--url", chat_url, "--token", "not-a-jwt", stdin="hi\n", data_dir=data_dir
    )
    assert (status, err.split(":")[:2]) == (1, ["turbokit chat", " 401 UNAUTHENTICATED"])

    status, _, err = await turbokit_chat(
        *("--url", chat_url, "--token", token, "--thread", new_id("thr")),
        stdin="hi\n",
        data_dir=data_dir,
    )
    assert (status, err) == (1, "turbokit chat: 404 NOT_FOUND: Thread not found\n")

    status, _, err = await turbokit_chat(
        "--url", chat_url, "--token", token, "--agent", "nobody", stdin="hi\n", data_dir=data_dir
    )
    assert status == 1
    assert err.startswith("turbokit chat: 422 VALIDATION_ERROR: ")
    assert "unknown agent; one of: assistant" in err

    async with serve(app) as no_llm_url:  # the same service without an LLM provider
        status, _, err = await turbokit_chat(
            "--url", no_llm_url, "--token", token, stdin="hi\nagain\n", data_dir=data_dir
        )
    assert status == 1
    assert "error: 503 LLM_NOT_CONFIGURED: No LLM provider is configured: set " in err
    assert err.count("error:") == 1  # the session ended: the next line would fail the same way


async def test_chat_says_when_the_server_cannot_be_reached(tmp_path: Path) -> None:
    status, _, err = await turbokit_chat(
        "--url", "http://127.0.0.1:9", "--token", "t", stdin="hi\n", data_dir=tmp_path
    )
    assert status == 1
    assert err.startswith("turbokit chat: cannot reach http://127.0.0.1:9")
    assert "turbokit serve" in err


def test_chat_refuses_to_sign_a_token_when_an_issuer_is_configured(tmp_path: Path) -> None:
    result = turbokit(
        "chat", data_dir=tmp_path, CLERK_JWT_ISSUER_DOMAIN="https://example.clerk.accounts.dev"
    )
    assert result.returncode == 2
    assert "cannot sign a development token" in result.stderr
    assert "--token" in result.stderr
