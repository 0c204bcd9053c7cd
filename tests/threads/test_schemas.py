"""UIMessage parts and thread schemas, without a database."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from threads.models import ThreadStatus
from threads.schemas import (
    METADATA_MAX_BYTES,
    PARTS_ADAPTER,
    MessageMetadata,
    ReasoningPart,
    StepStartPart,
    TextPart,
    ThreadCreate,
    ThreadPublic,
    ThreadUpdate,
    ToolPart,
    UIMessage,
    Usage,
    dump_parts,
    validate_parts,
)

ASSISTANT_TURN: list[dict[str, Any]] = [
    {"type": "step-start"},
    {"type": "reasoning", "text": "The user wants their projects.", "state": "done"},
    {
        "type": "tool-search_projects",
        "toolCallId": "call_1",
        "state": "output-available",
        "input": {"query": "garden"},
        "output": [{"id": "prj_1", "name": "Garden"}],
    },
    {
        "type": "tool-get_project",
        "toolCallId": "call_2",
        "state": "output-error",
        "input": {"id": "prj_missing"},
        "errorText": "Project not found",
    },
    {"type": "step-start"},
    {"type": "text", "text": "You have one garden project."},
]


def test_parts_round_trip_through_the_adapter() -> None:
    parts = validate_parts(ASSISTANT_TURN)

    assert [type(part) for part in parts] == [
        StepStartPart,
        ReasoningPart,
        ToolPart,
        ToolPart,
        StepStartPart,
        TextPart,
    ]
    assert dump_parts(parts) == ASSISTANT_TURN
    assert PARTS_ADAPTER.validate_json(PARTS_ADAPTER.dump_json(parts)) == parts


def test_tool_part_keeps_its_name_in_the_type() -> None:
    (part,) = validate_parts([ASSISTANT_TURN[2]])

    assert isinstance(part, ToolPart)
    assert part.tool_name == "search_projects"


def test_a_null_tool_output_is_kept_and_absent_fields_are_left_out() -> None:
    done = ToolPart(
        type="tool-notify", toolCallId="c", state="output-available", input={}, output=None
    )
    pending = ToolPart(type="tool-notify", toolCallId="c", state="input-available", input={})

    assert dump_parts([done, pending]) == [
        {
            "type": "tool-notify",
            "toolCallId": "c",
            "state": "output-available",
            "input": {},
            "output": None,
        },
        {"type": "tool-notify", "toolCallId": "c", "state": "input-available", "input": {}},
    ]


def test_approval_states_carry_the_approval() -> None:
    raw = [
        {
            "type": "tool-delete_project",
            "toolCallId": "c",
            "state": "approval-requested",
            "input": {"id": "prj_1"},
            "approval": {"id": "apr_1"},
        },
        {
            "type": "tool-delete_project",
            "toolCallId": "c",
            "state": "output-denied",
            "input": {"id": "prj_1"},
            "approval": {"id": "apr_1", "approved": False, "reason": "keep it"},
        },
    ]

    assert dump_parts(validate_parts(raw)) == raw


def _tool(state: str, **fields: object) -> dict[str, object]:
    return {"type": "tool-x", "toolCallId": "c", "state": state, "input": {}, **fields}


@pytest.mark.parametrize(
    ("part", "message"),
    [
        ({"type": "image", "url": "x"}, "unknown part type"),
        ({"text": "no type"}, "unknown part type"),
        ("text", "unknown part type"),
        ({"type": "text"}, "Field required"),
        ({"type": "text", "text": "hi", "extra": 1}, "Extra inputs are not permitted"),
        (_tool("input-available", type="tool-"), "pattern"),
        (_tool("input-available", type="tool-x y"), "pattern"),
        (_tool("output-available"), "output"),
        (_tool("input-available", output=1), "output"),
        (_tool("output-error"), "errorText"),
        (_tool("approval-requested"), "approval"),
        (_tool("running"), "state"),
    ],
)
def test_invalid_parts_are_rejected(part: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        validate_parts([part])


def test_ui_message_serialises_metadata_with_z_timestamps() -> None:
    message = UIMessage(
        id="msg_1",
        role="assistant",
        parts=[TextPart(text="hi")],
        metadata=MessageMetadata(
            created_at=datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
            run_id="run_1",
            usage=Usage(prompt_tokens=3, completion_tokens=2, cost_usd=0.0001, credits=1),
        ),
    )

    assert message.model_dump(mode="json") == {
        "id": "msg_1",
        "role": "assistant",
        "parts": [{"type": "text", "text": "hi"}],
        "metadata": {
            "created_at": "2024-05-01T12:00:00.123Z",
            "run_id": "run_1",
            "usage": {
                "prompt_tokens": 3,
                "completion_tokens": 2,
                "cost_usd": 0.0001,
                "credits": 1,
            },
        },
    }


def test_ui_message_schema_documents_the_fields_it_serialises() -> None:
    schema = UIMessage.model_json_schema(mode="serialization")

    assert set(schema["properties"]) == {"id", "role", "parts", "metadata"}
    assert set(schema["$defs"]["ToolPart"]["properties"]) >= {"type", "toolCallId", "state"}


def test_thread_create_defaults_and_limits() -> None:
    assert ThreadCreate().model_dump() == {"title": None, "agent": "assistant", "metadata": {}}
    assert ThreadCreate(title="  Trip  ").title == "Trip"
    assert ThreadCreate(title="   ").title is None
    with pytest.raises(ValidationError, match="at most 200"):
        ThreadCreate(title="x" * 201)
    with pytest.raises(ValidationError, match="Extra inputs"):
        ThreadCreate.model_validate({"user_id": "usr_x"})


def test_metadata_over_the_size_limit_is_refused_with_its_size() -> None:
    ThreadCreate(metadata={"note": "x" * (METADATA_MAX_BYTES - 20)})
    with pytest.raises(ValidationError, match=rf"limit is {METADATA_MAX_BYTES} bytes"):
        ThreadCreate(metadata={"note": "x" * METADATA_MAX_BYTES})
    with pytest.raises(ValidationError, match="valid dictionary"):
        ThreadCreate.model_validate({"metadata": ["not", "an", "object"]})


def test_thread_update_tells_omitted_from_null() -> None:
    assert ThreadUpdate().model_fields_set == set()
    assert ThreadUpdate.model_validate({"title": None}).model_fields_set == {"title"}
    for field in ("status", "metadata"):
        with pytest.raises(ValidationError, match="may be omitted but not null"):
            ThreadUpdate.model_validate({field: None})
    with pytest.raises(ValidationError):
        ThreadUpdate.model_validate({"status": "deleted"})


def test_thread_public_reads_the_model_attribute_meta() -> None:
    row = SimpleNamespace(
        id="thr_1",
        user_id="usr_1",
        title=None,
        agent="assistant",
        status=ThreadStatus.archived,
        meta={"concurrency": "queue"},
        metadata=object(),  # what SQLAlchemy puts on every ORM class
        created_at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        updated_at=datetime(2024, 1, 2, 3, 4, 6, tzinfo=UTC),
    )

    assert ThreadPublic.model_validate(row).model_dump(mode="json") == {
        "id": "thr_1",
        "user_id": "usr_1",
        "title": None,
        "agent": "assistant",
        "status": "archived",
        "metadata": {"concurrency": "queue"},
        "created_at": "2024-01-02T03:04:05.000Z",
        "updated_at": "2024-01-02T03:04:06.000Z",
    }
