"""A tool's JSON Schema comes from its signature and docstring; bad definitions fail at startup."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from tools import ToolContext, ToolDefinitionError, function_schema


class Filter(BaseModel):
    """Narrows a search."""

    title: str
    status: Literal["active", "archived"] = "active"


async def search_projects(
    ctx: ToolContext, query: str, limit: int = 10, filter: Filter | None = None
) -> list[str]:
    """Search the user's projects by name and description.

    Only projects the user owns are searched.

    Args:
        ctx: The run's context.
        query: Words to look for,
            matched against names and descriptions.
        limit (int, optional): At most this many results.
    """
    return []


def test_description_is_the_first_paragraph() -> None:
    schema = function_schema(search_projects)

    assert schema.description == "Search the user's projects by name and description."


def test_schema_is_a_closed_object_of_the_non_context_parameters() -> None:
    schema = function_schema(search_projects)

    assert schema.json_schema == {
        "type": "object",
        "properties": {
            "query": {
                "type": "string",
                "description": "Words to look for, matched against names and descriptions.",
            },
            "limit": {
                "type": "integer",
                "default": 10,
                "description": "At most this many results.",
            },
            "filter": {"anyOf": [{"$ref": "#/$defs/Filter"}, {"type": "null"}], "default": None},
        },
        "required": ["query"],
        "additionalProperties": False,
        "$defs": {
            "Filter": {
                "type": "object",
                "description": "Narrows a search.",
                "properties": {
                    "title": {"type": "string"},
                    "status": {
                        "type": "string",
                        "enum": ["active", "archived"],
                        "default": "active",
                    },
                },
                "required": ["title"],
            }
        },
    }


def test_required_is_present_even_when_every_parameter_has_a_default() -> None:
    async def recent(ctx: ToolContext, limit: int = 5) -> None: ...

    assert function_schema(recent).json_schema["required"] == []


def test_a_description_given_with_field_wins_over_the_docstring() -> None:
    async def tag(
        ctx: ToolContext, label: Annotated[str, Field(description="From Field.", max_length=20)]
    ) -> None:
        """Tag something.

        Args:
            label: From the docstring.
        """

    assert function_schema(tag).json_schema["properties"]["label"] == {
        "type": "string",
        "description": "From Field.",
        "maxLength": 20,
    }


def test_parameter_names_pydantic_reserves_are_kept_as_the_model_sees_them() -> None:
    async def odd(ctx: ToolContext, json: str, _hidden: int = 0) -> None: ...

    schema = function_schema(odd)

    assert list(schema.json_schema["properties"]) == ["json", "_hidden"]
    assert schema.validate_json('{"json": "x", "_hidden": 2}') == {"json": "x", "_hidden": 2}


def test_validation_returns_the_functions_keyword_arguments() -> None:
    kwargs = function_schema(search_projects).validate_json(
        '{"query": "q", "filter": {"title": "t"}}'
    )

    assert kwargs == {"query": "q", "limit": 10, "filter": Filter(title="t")}


def not_async(ctx: ToolContext, query: str) -> str:
    return query


async def no_context(query: str) -> str:
    return query


async def context_not_first(query: str, ctx: ToolContext) -> str:
    return query


async def unannotated(ctx: ToolContext, query) -> str:  # type: ignore[no-untyped-def]
    return str(query)


async def varargs(ctx: ToolContext, *queries: str) -> None: ...


async def drifted(ctx: ToolContext, query: str) -> None:
    """Search.

    Args:
        qurey: Misspelt, so the docstring no longer matches the code.
    """


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (not_async, "must be an async function"),
        (no_context, "first parameter must be annotated `ToolContext`"),
        (context_not_first, "first parameter must be annotated `ToolContext`"),
        (unannotated, "parameter 'query' has no type annotation"),
        (varargs, "*args and **kwargs are not supported"),
        (drifted, "documents unknown parameter(s): qurey"),
    ],
)
def test_definition_mistakes_raise_a_developer_error(func: Any, message: str) -> None:
    with pytest.raises(ToolDefinitionError, match=re.escape(message)):
        function_schema(func)


def test_unresolvable_annotations_raise_a_developer_error() -> None:
    async def broken(ctx: ToolContext, item: Missing) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(ToolDefinitionError, match="cannot resolve its annotations"):
        function_schema(broken)


def test_only_the_args_section_describes_parameters() -> None:
    async def archive(ctx: ToolContext, project_id: str, reason: str = "") -> bool:
        """Archive a project
        the user owns.

        Args:
            project_id (str): The project to archive.
            reason: Why; shown in the activity log.

        Returns:
            reason: Not a parameter description, though it looks like one.
        """
        return True

    schema = function_schema(archive)

    assert schema.description == "Archive a project the user owns."
    properties = schema.json_schema["properties"]
    assert properties["project_id"]["description"] == "The project to archive."
    assert properties["reason"]["description"] == "Why; shown in the activity log."
