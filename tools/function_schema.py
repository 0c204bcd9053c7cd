"""Turn a typed async function into the JSON Schema the model sees and a validator for its calls.

Everything comes from the signature and the docstring through pydantic, so the schema cannot drift
from the code. Mistakes in a tool's definition raise `ToolDefinitionError` when the tool is
registered (at startup), not when the model first calls it.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from tools._docstring import parse_docstring
from tools.context import ToolContext

_MODEL_CONFIG = ConfigDict(extra="forbid", protected_namespaces=())
"""Unknown arguments are an error the model can fix; `additionalProperties: false` tells it so."""

_SCHEMA_MAPS = frozenset({"properties", "$defs", "definitions", "patternProperties"})
_SCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_SCHEMA_VALUES = frozenset(
    {"items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else"}
)
"""JSON Schema keywords whose values are schemas; only there is `title` a keyword, not data."""

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class ToolDefinitionError(Exception):
    """A tool function cannot become a tool; a developer must fix its definition."""


@dataclass(frozen=True, slots=True)
class FunctionSchema:
    """A tool function's description, argument model and JSON Schema."""

    description: str
    """The docstring's first paragraph."""
    model: type[BaseModel]
    """Validates the model's arguments (every parameter after the context)."""
    json_schema: dict[str, Any]
    """`{"type": "object", "properties", "required", "additionalProperties": false}`."""
    _field_to_param: dict[str, str]

    def validate_json(self, arguments: str) -> dict[str, Any]:
        """Validate raw JSON arguments; return keyword arguments for the function.

        Validation is in pydantic's JSON mode because the model can only ever send JSON.
        Raises `pydantic.ValidationError`.
        """
        validated = self.model.model_validate_json(arguments)
        return {param: getattr(validated, name) for name, param in self._field_to_param.items()}


def function_schema(func: Callable[..., Any], *, name: str | None = None) -> FunctionSchema:
    """Build the schema of `async def f(ctx: ToolContext, ...)`; raise `ToolDefinitionError`."""
    label: str = name or getattr(func, "__name__", None) or repr(func)
    if not inspect.iscoroutinefunction(func):
        raise ToolDefinitionError(f"Tool {label!r} must be an async function (async def)")
    params = _parameters(func, label)
    hints = _type_hints(func, label)
    _check_context(params, hints, label)
    doc = parse_docstring(inspect.getdoc(func))
    _check_documented(doc.params, params, label)
    fields, field_to_param = _fields(params[1:], hints, doc.params, label)
    model = create_model(f"{_camel(label)}Arguments", __config__=_MODEL_CONFIG, **fields)
    return FunctionSchema(doc.summary, model, _json_schema(model), field_to_param)


def _parameters(func: Callable[..., Any], label: str) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as exc:
        raise ToolDefinitionError(f"Tool {label!r}: cannot read its signature ({exc})") from exc


def _type_hints(func: Callable[..., Any], label: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func, include_extras=True)
    except Exception as exc:  # NameError for an undefined forward reference, among others
        raise ToolDefinitionError(
            f"Tool {label!r}: cannot resolve its annotations ({type(exc).__name__}: {exc}); "
            "annotation types must be importable from the function's module"
        ) from exc


def _check_context(params: list[inspect.Parameter], hints: dict[str, Any], label: str) -> None:
    first = hints.get(params[0].name) if params else None
    if not (isinstance(first, type) and issubclass(first, ToolContext)):
        raise ToolDefinitionError(
            f"Tool {label!r}: the first parameter must be annotated `ToolContext` "
            "(identity comes from the context, never from the model's arguments)"
        )
    if params[0].kind not in _POSITIONAL:
        raise ToolDefinitionError(f"Tool {label!r}: the context parameter must be positional")


def _check_documented(
    documented: dict[str, str], params: list[inspect.Parameter], label: str
) -> None:
    """A documented parameter that does not exist is a docstring that drifted from the code."""
    unknown = sorted(set(documented) - {param.name for param in params})
    if unknown:
        raise ToolDefinitionError(
            f"Tool {label!r}: the docstring documents unknown parameter(s): {', '.join(unknown)}"
        )


def _fields(
    params: list[inspect.Parameter], hints: dict[str, Any], docs: dict[str, str], label: str
) -> tuple[dict[str, Any], dict[str, str]]:
    fields: dict[str, Any] = {}
    field_to_param: dict[str, str] = {}
    for index, param in enumerate(params):
        _check_parameter(param, hints, label)
        field_name = _field_name(index, param.name)
        fields[field_name] = _field(param, hints[param.name], docs.get(param.name))
        field_to_param[field_name] = param.name
    return fields, field_to_param


def _check_parameter(param: inspect.Parameter, hints: dict[str, Any], label: str) -> None:
    if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
        raise ToolDefinitionError(
            f"Tool {label!r}: *args and **kwargs are not supported ({param.name!r}); "
            "declare each argument so the model sees it in the schema"
        )
    if param.kind is param.POSITIONAL_ONLY:
        raise ToolDefinitionError(
            f"Tool {label!r}: parameter {param.name!r} is positional-only; tools are called "
            "with keyword arguments"
        )
    if param.name not in hints:
        raise ToolDefinitionError(
            f"Tool {label!r}: parameter {param.name!r} has no type annotation; "
            "the annotation is what the model's schema is built from"
        )


def _field_name(index: int, param_name: str) -> str:
    """The model field for a parameter; aliased when pydantic would reject or shadow the name."""
    if param_name.startswith("_") or hasattr(BaseModel, param_name):
        return f"arg_{index}"
    return param_name


def _field(param: inspect.Parameter, annotation: Any, doc: str | None) -> tuple[Any, Any]:
    default = ... if param.default is param.empty else param.default
    extra: dict[str, Any] = {"alias": param.name}
    if doc and not _has_description(annotation, default):
        extra["description"] = doc
    return Annotated[annotation, Field(**extra)], default


def _has_description(annotation: Any, default: Any) -> bool:
    """A description given with `Field(...)` in the signature wins over the docstring."""
    candidates = [default, *getattr(annotation, "__metadata__", ())]
    return any(isinstance(item, FieldInfo) and item.description for item in candidates)


def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = _without_titles(model.model_json_schema())
    extra = {key: value for key, value in schema.items() if key.startswith("$")}
    return {
        "type": "object",
        "properties": schema.get("properties", {}),
        "required": schema.get("required", []),
        "additionalProperties": False,
        **extra,
    }


def _without_titles(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop the titles pydantic derives from Python names: noise for the model, tokens for us."""
    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title":
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            value = {name: _without_titles(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            value = [_without_titles(sub) for sub in value]
        elif key in _SCHEMA_VALUES and isinstance(value, dict):
            value = _without_titles(value)
        result[key] = value
    return result


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.replace("-", "_").split("_"))
