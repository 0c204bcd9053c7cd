"""Context assembly: stored UIMessages become the chat messages a model reads, repaired where a run
died mid-step, and trimmed to the token budget from the oldest end without splitting tool calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from agent_core.context import (
    INTERRUPTED_RESULT,
    count_message_tokens,
    fit_to_budget,
    to_chat_messages,
)
from agent_core.llm import (
    AssistantMessage,
    ChatMessage,
    SystemMessage,
    ToolCallRequest,
    ToolMessage,
    UserMessage,
)

SYSTEM = "You are a calculator."


@dataclass
class Stored:
    """A stored message as the store hands it over: a role and JSON parts."""

    role: str
    parts: list[dict[str, Any]]


def user(text: str) -> Stored:
    return Stored("user", [{"type": "text", "text": text}])


def add_part(state: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "tool-add",
        "toolCallId": "call_1",
        "state": state,
        "input": {"a": 2, "b": 3},
        **fields,
    }


ADD_CALL = ToolCallRequest(id="call_1", name="add", arguments='{"a": 2, "b": 3}')


def cost(*messages: ChatMessage) -> int:
    return sum(count_message_tokens(message) for message in messages)


# --- stored messages to chat messages ----------------------------------------------------------


def test_an_assistant_turn_becomes_one_message_per_step_plus_tool_results() -> None:
    stored = [
        user("What is 2 + 3?"),
        Stored(
            "assistant",
            [
                {"type": "step-start"},
                add_part("output-available", output={"sum": 5}),
                {"type": "step-start"},
                {"type": "text", "text": "It is 5."},
            ],
        ),
    ]

    assert to_chat_messages(stored) == [
        UserMessage(content="What is 2 + 3?"),
        AssistantMessage(tool_calls=[ADD_CALL]),
        ToolMessage(tool_call_id="call_1", content='{"sum": 5}'),
        AssistantMessage(content="It is 5."),
    ]


def test_text_and_tool_calls_of_one_step_share_a_message() -> None:
    stored = [
        Stored(
            "assistant",
            [
                {"type": "step-start"},
                {"type": "text", "text": "Let me add that."},
                add_part("output-available", output="5"),
            ],
        )
    ]

    assert to_chat_messages(stored) == [
        AssistantMessage(content="Let me add that.", tool_calls=[ADD_CALL]),
        ToolMessage(tool_call_id="call_1", content="5"),
    ]


@pytest.mark.parametrize(
    ("part", "result"),
    [
        pytest.param(add_part("input-available"), INTERRUPTED_RESULT, id="run-died"),
        pytest.param(
            add_part("output-error", errorText="ValueError: overflow"),
            "Error: ValueError: overflow",
            id="output-error",
        ),
        pytest.param(
            add_part("output-denied", approval={"id": "appr_1", "approved": False}),
            "The user denied this tool call.",
            id="denied",
        ),
        pytest.param(
            add_part(
                "output-denied",
                approval={"id": "appr_1", "approved": False, "reason": "too expensive"},
            ),
            "The user denied this tool call. Reason: too expensive",
            id="denied-with-reason",
        ),
    ],
)
def test_every_tool_call_is_followed_by_a_result_the_model_can_read(
    part: dict[str, Any], result: str
) -> None:
    stored = [
        user("What is 2 + 3?"),
        Stored("assistant", [{"type": "step-start"}, part]),
        user("Well?"),
    ]

    assert to_chat_messages(stored) == [
        UserMessage(content="What is 2 + 3?"),
        AssistantMessage(tool_calls=[ADD_CALL]),
        ToolMessage(tool_call_id="call_1", content=result),
        UserMessage(content="Well?"),
    ]


def test_empty_steps_produce_no_messages() -> None:
    stored = [Stored("assistant", [{"type": "step-start"}, {"type": "step-start"}])]

    assert to_chat_messages(stored) == []


# --- fitting the budget ------------------------------------------------------------------------

HISTORY: list[ChatMessage] = [
    UserMessage(content="What is 2 + 3?"),
    AssistantMessage(content="It is 5."),
    UserMessage(content="And 5 + 8?"),
    AssistantMessage(content="It is 13."),
]


def test_everything_is_kept_when_it_fits() -> None:
    budget = cost(SystemMessage(content=SYSTEM), *HISTORY)

    assert fit_to_budget(SYSTEM, HISTORY, budget) == [SystemMessage(content=SYSTEM), *HISTORY]


def test_the_oldest_messages_are_dropped_first() -> None:
    budget = cost(SystemMessage(content=SYSTEM), *HISTORY[2:])

    assert fit_to_budget(SYSTEM, HISTORY, budget) == [SystemMessage(content=SYSTEM), *HISTORY[2:]]
    assert fit_to_budget(SYSTEM, HISTORY, budget - 1) == [
        SystemMessage(content=SYSTEM),
        HISTORY[3],
    ]


def test_a_tool_call_and_its_results_are_kept_or_dropped_together() -> None:
    call = AssistantMessage(
        tool_calls=[ADD_CALL, ToolCallRequest(id="call_2", name="add", arguments="{}")]
    )
    results = [
        ToolMessage(tool_call_id="call_1", content='{"sum": 5}'),
        ToolMessage(tool_call_id="call_2", content="Error: missing a and b"),
    ]
    answer = AssistantMessage(content="It is 5.")
    history: list[ChatMessage] = [UserMessage(content="What is 2 + 3?"), call, *results, answer]
    system_cost = cost(SystemMessage(content=SYSTEM))

    room_for_results_only = system_cost + cost(*results, answer)
    room_for_the_group = system_cost + cost(call, *results, answer)

    assert fit_to_budget(SYSTEM, history, room_for_results_only) == [
        SystemMessage(content=SYSTEM),
        answer,
    ]
    assert fit_to_budget(SYSTEM, history, room_for_the_group) == [
        SystemMessage(content=SYSTEM),
        call,
        *results,
        answer,
    ]


def test_the_newest_group_is_kept_even_over_budget() -> None:
    call = AssistantMessage(tool_calls=[ADD_CALL])
    huge_result = ToolMessage(tool_call_id="call_1", content="5 " * 5_000)
    history: list[ChatMessage] = [UserMessage(content="What is 2 + 3?"), call, huge_result]

    assert fit_to_budget(SYSTEM, history, budget_tokens=10) == [
        SystemMessage(content=SYSTEM),
        call,
        huge_result,
    ]
