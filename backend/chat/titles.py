"""Short thread titles, written by the model from a thread's first exchange.

A background step after the run has ended: the reply never waits for it, a failure only leaves
the thread untitled, and its LLM call is metered and billed like any other call of the run.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import select, update

from agent_core.llm.base import LLM, LLMRequest, complete
from agent_core.llm.types import LLMError, SystemMessage, UserMessage
from backend.billing import service as billing
from backend.chat.service import record_call
from backend.events import service as events
from config.database import Database, after_commit
from config.settings import Settings
from threads.models import Message, Role, Run, Thread

log = logging.getLogger("turbokit.titles")

INSTRUCTIONS = (
    "Write a title for the conversation below: at most six words, in the user's language, no "
    "quotes, no final punctuation. Answer with the title only."
)
MAX_EXCERPT_CHARS = 2000
"""Of each side of the exchange; a title needs the gist, not the whole text."""
MAX_TITLE_CHARS = 80


async def write_title(
    db: Database, llm: LLM, settings: Settings, run: Run, answer: str, on_usage: object = None
) -> str | None:
    """Title the run's thread from its first user message and `answer`; None when it already
    has a title, there is nothing to title from, or the model failed."""
    question = await _first_user_text(db, run.thread_id)
    if not question or not answer.strip():
        return None
    request = LLMRequest(
        model=run.model,
        messages=[
            SystemMessage(content=INSTRUCTIONS),
            UserMessage(
                content=f"User: {question[:MAX_EXCERPT_CHARS]}\n\n"
                f"Assistant: {answer[:MAX_EXCERPT_CHARS]}"
            ),
        ],
        max_tokens=24,
        temperature=0.2,
        metadata={"purpose": "title", "run_id": run.id, "user_id": run.user_id},
    )
    started = time.perf_counter()
    try:
        response = await complete(llm, request)
    except LLMError as exc:
        log.warning("thread %s: no title, the model failed: %s", run.thread_id, exc.message)
        return None
    title = clean_title(response.text or "")
    async with db.write() as session:
        if title:
            titled = await session.execute(
                update(Thread)
                .where(Thread.id == run.thread_id, Thread.title.is_(None))
                .values(title=title)
                .returning(Thread.id)
            )
            if titled.first() is not None:
                events.thread_titled(session, run.user_id, run.thread_id, title)
        latency_ms = (time.perf_counter() - started) * 1000
        call = await record_call(session, run, response.usage, latency_ms)
        await billing.settle_call(session, run, call, settings)
        if callable(on_usage):
            after_commit(session, on_usage)
    return title or None


def clean_title(text: str) -> str:
    """The model's answer as a title: one line, no wrapping quotes or final period."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    line = line.removeprefix("Title:").strip().strip("\"'“”‘’*#").strip()
    line = line.rstrip(".!")
    if len(line) > MAX_TITLE_CHARS:
        line = line[:MAX_TITLE_CHARS].rsplit(" ", 1)[0].rstrip(",;:-") + "…"
    return line


async def _first_user_text(db: Database, thread_id: str) -> str:
    async with db.read() as session:
        parts = await session.scalar(
            select(Message.parts)
            .where(Message.thread_id == thread_id, Message.role == Role.user)
            .order_by(Message.seq)
            .limit(1)
        )
    return "".join(str(p.get("text", "")) for p in parts or [] if p.get("type") == "text")
