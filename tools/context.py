"""What a tool knows about the run it serves: who is asking, where, and how to reach the database.

Identity lives here and nowhere else: a tool reads `ctx.user_id`, never a user id the model put in
its arguments, so a prompt cannot make a tool act for somebody else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from config.settings import Settings


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolContext:
    """The first parameter of every tool; supplied by the caller, invisible to the model."""

    user_id: str
    """The user the run acts for; the only source of identity and ownership checks."""
    thread_id: str | None = None
    """The conversation the run belongs to, when there is one."""
    run_id: str | None = None
    """The run that issued the tool call, when there is one."""
    settings: Settings
    db: Any
    """Database access supplied by the backend, typically an `async_sessionmaker`.

    Prefer a session factory over one open session: calls of one step run concurrently, and an
    `AsyncSession` must not be used by two tasks at once. Typed `Any` so that `tools` does not
    depend on SQLAlchemy or on how the backend wires its database.
    """
    extra: Mapping[str, Any] = field(default_factory=_empty)
    """Anything else an application wants to hand its tools (read-only by convention)."""
