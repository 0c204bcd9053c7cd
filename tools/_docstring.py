"""Read a tool's description and its parameter descriptions from a Google-style docstring.

The docstring is the single place a tool author describes the tool, so the model sees the same
words a developer reads; only the summary paragraph and the `Args:` section are used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_ARGS_HEADERS = frozenset({"args", "arguments", "parameters", "params"})
_SECTION = re.compile(r"^\s*([A-Za-z][A-Za-z ]*):\s*$")
_ENTRY = re.compile(r"^\*{0,2}(?P<name>\w+)\s*(?:\([^)]*\))?\s*:\s*(?P<text>.*)$")


@dataclass(frozen=True, slots=True)
class Docstring:
    summary: str = ""
    """The first paragraph, on one line."""
    params: dict[str, str] = field(default_factory=dict)
    """Parameter name -> description, from the `Args:` section."""


def parse_docstring(doc: str | None) -> Docstring:
    """Parse an already dedented docstring (as `inspect.getdoc` returns it)."""
    if not doc:
        return Docstring()
    lines = doc.splitlines()
    return Docstring(summary=_summary(lines), params=_params(lines))


def _summary(lines: list[str]) -> str:
    paragraph: list[str] = []
    for line in lines:
        if not line.strip() or _SECTION.match(line):
            break
        paragraph.append(line.strip())
    return " ".join(paragraph)


def _params(lines: list[str]) -> dict[str, str]:
    start = _args_section_start(lines)
    if start is None:
        return {}
    header_indent = _indent(lines[start])
    params: dict[str, list[str]] = {}
    entry_indent: int | None = None
    current: list[str] | None = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        indent = _indent(line)
        if indent <= header_indent:
            break
        entry_indent = indent if entry_indent is None else entry_indent
        match = _ENTRY.match(line.strip())
        if indent == entry_indent and match:
            current = params.setdefault(match["name"], [])
            current.append(match["text"].strip())
        elif current is not None:
            current.append(line.strip())
    return {name: " ".join(part for part in text if part) for name, text in params.items()}


def _args_section_start(lines: list[str]) -> int | None:
    for index, line in enumerate(lines):
        match = _SECTION.match(line)
        if match and match[1].strip().lower() in _ARGS_HEADERS:
            return index
    return None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())
