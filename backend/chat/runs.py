"""Runs execute detached from the request that started them.

A run's chunks go to an in-memory log that any number of readers follow (the request that started
it, a resumed stream, the JSON door), and to the database at each step's end. A client that
disconnects only stops reading; the run finishes and is saved.

A one-step turn costs one write transaction after the door's: the door creates the run running and
hands it its history, and `_finish` saves the LLM call with its credits, the events, the assistant
message, the release and the final status together. A step that calls tools has its call billed
before the tools run and its events saved at its end, so another process can resume the stream and
a crash leaves every step either wholly saved or not at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from agent_core.agent import Agent
from agent_core.context import fit_to_budget, to_chat_messages
from agent_core.events import (
    AgentEvent,
    ModelCalled,
    RunFailed,
    RunFinished,
    RunPaused,
    StepFinished,
    ToolInputAvailable,
)
from agent_core.llm.base import LLM
from agent_core.loop import Decision, run_agent, run_decided_calls
from backend import metrics
from backend.billing import service as billing
from backend.chat import titles
from backend.chat.service import HISTORY_MESSAGES, SUPERSEDED, end_paused_run, record_call
from backend.chat.stream import Chunk, MessageBuilder, ui_chunks
from backend.events import service as events
from config.database import Database, after_commit, utcnow
from config.settings import Settings
from threads import store
from threads.models import Message, Role, Run, RunEvent, RunStatus
from threads.schemas import TextPart, validate_parts
from threads.store import RunError, RunUsage
from tools import ToolCall, ToolContext

log = logging.getLogger("turbokit.runs")

POLL_SECONDS = 0.25
"""How often a reader polls the database for a run executing in another process."""


class RunLog:
    """The numbered chunks of one run; readers replay from any point and then follow live."""

    def __init__(self, run_id: str, base: int = 0) -> None:
        self.run_id = run_id
        self.base = base
        """Chunks numbered up to `base` belong to the run's part before it paused for approvals."""
        self.chunks: list[Chunk] = []
        self.persisted = 0
        self.finished = False
        self._wake = asyncio.Event()

    def append(self, chunk: Chunk) -> int:
        self.chunks.append(chunk)
        self._notify()
        return self.base + len(self.chunks)

    def close(self) -> None:
        self.finished = True
        self._notify()

    @property
    def next_seq(self) -> int:
        """The number of the first chunk not yet persisted (its run event's `seq`)."""
        return self.base + self.persisted + 1

    async def follow(self, after: int = 0) -> AsyncIterator[tuple[int, Chunk]]:
        position = max(after, self.base)
        while True:
            while position < self.base + len(self.chunks):
                position += 1
                yield position, self.chunks[position - self.base - 1]
            if self.finished:
                return
            wake = self._wake
            await wake.wait()

    def _notify(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()


@dataclass
class _Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    credits: int = 0
    calls: int = 0
    priced_calls: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def add(self, event: ModelCalled, credits_per_usd: int) -> None:
        self.calls += 1
        self.prompt_tokens += event.usage.prompt_tokens
        self.completion_tokens += event.usage.completion_tokens
        self.cached_tokens += event.usage.cached_tokens
        self.reasoning_tokens += event.usage.reasoning_tokens
        if event.usage.cost_usd is not None:
            cost = Decimal(str(event.usage.cost_usd))
            self.priced_calls += 1
            self.cost_usd += cost
            self.credits += math.ceil(cost * credits_per_usd)

    def add_public(self, usage: object) -> None:
        """Start from the usage a paused run's message already counts."""
        if isinstance(usage, dict):
            self.prompt_tokens += int(usage.get("prompt_tokens", 0))
            self.completion_tokens += int(usage.get("completion_tokens", 0))
            self.cost_usd += Decimal(str(usage.get("cost_usd", 0)))
            self.credits += int(usage.get("credits", 0))

    def public(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": float(self.cost_usd),
            "credits": self.credits,
        }

    def totals(self) -> RunUsage:
        """The run row's totals, as `store.sum_llm_calls` would sum this executor's calls."""
        return RunUsage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost_usd=self.cost_usd if self.priced_calls else None,
            extra={
                "llm_calls": self.calls,
                "cached_tokens": self.cached_tokens,
                "reasoning_tokens": self.reasoning_tokens,
            },
        )


@dataclass
class _Outcome:
    status: RunStatus = RunStatus.completed
    finish_reason: str | None = None
    error: RunError | None = None
    usage: _Usage = field(default_factory=_Usage)
    resumed: bool = False
    """The run went on after approvals: its message was saved when it paused."""
    unrecorded: list[ModelCalled] = field(default_factory=list)
    """Calls not yet billed: `_record_call` bills them before tools run, else `_finish` does."""
    titled: bool = True
    """Whether the thread had a title when the run ended (`_finish` reads it)."""


@dataclass(frozen=True, slots=True)
class _StoredMessage:
    role: str
    parts: list[dict[str, Any]]


def resume_point(run: Run) -> int:
    """The last chunk number before the run paused for approvals (0: it never paused)."""
    value = run.request.get("resume_after", 0)
    return value if isinstance(value, int) else 0


def decisions(parts: list[dict[str, Any]]) -> list[Decision]:
    """The decided approvals of a paused message, in the order the model asked."""
    found = []
    for part in parts:
        approval = part.get("approval") or {}
        if part.get("state") == "approval-responded" and isinstance(approval, dict):
            call = ToolCall(
                id=part["toolCallId"],
                name=str(part["type"]).removeprefix("tool-"),
                arguments=json.dumps(part.get("input", {})),
            )
            approved = approval.get("approved") is True
            found.append(Decision(call, str(approval["id"]), approved, approval.get("reason")))
    return found


async def silent_too_long(session: AsyncSession, run: Run, stale_seconds: float) -> bool:
    """Whether an active run has been silent (no start, no saved event) for longer than
    `stale_seconds`, so its process must have died; a run awaiting approval never is."""
    if run.status is RunStatus.awaiting_approval:
        return False  # waiting for a person may take any time, across restarts
    last_event = await session.scalar(
        select(func.max(RunEvent.created_at)).where(RunEvent.run_id == run.id)
    )
    times = [run.created_at, run.started_at, last_event]
    last = max(t.replace(tzinfo=UTC) if t.tzinfo is None else t for t in times if t)
    return (utcnow() - last).total_seconds() > stale_seconds


async def end_abandoned(session: AsyncSession, run: Run) -> bool:
    """End a run its process abandoned as failed (INTERRUPTED) and release its reservation;
    False if it had already ended."""
    log.warning("run %s was abandoned (its process stopped); ending it", run.id)
    error = RunError(code="INTERRUPTED", message="The server stopped during the run")
    ended = await store.mark_run_finished(session, run.id, RunStatus.failed, error=error)
    if ended:
        events.run_finished(session, run.user_id, run.thread_id, run.id, "failed", None)
        after_commit(session, lambda: metrics.observe_run_end(RunStatus.failed))
    await billing.release(session, run.id)
    return ended is not None


class RunManager:
    """Starts runs as tasks of this process, and lets readers follow or stop them."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        agents: dict[str, Agent],
        llm: LLM | None,
        on_usage: Callable[[], object] | None = None,
    ) -> None:
        self.on_usage = on_usage
        """Called after a usage event commits (e.g. to wake the Autumn sync)."""
        self.db = db
        self.settings = settings
        self.agents = agents
        self.llm = llm
        self._logs: dict[str, RunLog] = {}
        self._stops: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def open(self, run: Run) -> RunLog:
        """The run's log, opened with its `start` chunk; readers may follow a queued run. A run
        going on after approvals opens a new part of its log, replayed from its own `start`."""
        run_log = self._logs.get(run.id)
        if run_log is None or (run_log.finished and run_log.base < resume_point(run)):
            run_log = self._logs[run.id] = RunLog(run.id, resume_point(run))
            run_log.append({"type": "start", "messageId": run.assistant_message_id})
            self._stops[run.id] = asyncio.Event()
        return run_log

    def launch(self, run: Run, history: Sequence[Message] | None = None) -> RunLog:
        """Start executing a committed run in the background: a queued one, or one its door
        created running, with the `history` it answers (read from the database when None)."""
        run_log = self.open(run)
        task = asyncio.create_task(self._execute(run, run_log, history), name=f"run {run.id}")
        self._tasks[run.id] = task
        metrics.ACTIVE_RUNS.inc()
        task.add_done_callback(lambda _: metrics.ACTIVE_RUNS.dec())
        task.add_done_callback(lambda done: self._forget(run.id, done))
        return run_log

    async def active_run(self, session: AsyncSession, thread_id: str) -> Run | None:
        """The thread's active run, after ending it as interrupted if it was abandoned: not
        executing here and silent for longer than RUN_STALE_SECONDS (its process died)."""
        run = await store.get_active_run(session, thread_id)
        if run is None or not await self.abandoned(session, run):
            return run
        await end_abandoned(session, run)
        return None

    async def abandoned(self, session: AsyncSession, run: Run) -> bool:
        run_log = self._logs.get(run.id)
        if run_log is not None and not run_log.finished:
            return False
        return await silent_too_long(session, run, self.settings.run_stale_seconds)

    def stop(self, run_id: str) -> bool:
        stop = self._stops.get(run_id)
        if stop is None:
            return False
        stop.set()
        return True

    async def follow(self, run_id: str, after: int = 0) -> AsyncIterator[tuple[int, Chunk]]:
        """The run's chunks after `after`: from memory when it runs here, else from the database."""
        run_log = self._logs.get(run_id)
        if run_log is not None:
            async for item in run_log.follow(after):
                yield item
            return
        async for item in self._follow_database(run_id, after):
            yield item

    async def wait(self, run_id: str) -> None:
        async for _ in self.follow(run_id):
            pass

    async def shutdown(self) -> None:
        """Cancel running runs (they are saved as failed: interrupted) and wait for them."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _forget(self, run_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(run_id) is not task:
            return  # the run paused and already goes on in a newer task: leave that one be
        del self._tasks[run_id]
        self._stops.pop(run_id, None)
        run_log = self._logs.get(run_id)
        if run_log is not None and run_log.finished:
            # Keep finished logs briefly for late readers; the database has them anyway.
            asyncio.get_running_loop().call_later(30, self._drop_log, run_log)

    def _drop_log(self, run_log: RunLog) -> None:
        if self._logs.get(run_log.run_id) is run_log:  # not a newer part of a resumed run
            del self._logs[run_log.run_id]

    async def _execute(
        self, launched: Run, run_log: RunLog, history: Sequence[Message] | None
    ) -> None:
        outcome = _Outcome()
        builder = MessageBuilder()
        run: Run | None = None
        following: Run | None = None
        try:
            began = await self._begin(launched)
            if began is None:
                return
            run, paused = began
            if paused is not None:  # going on after approvals: complete the saved message
                builder = MessageBuilder(paused.parts)
                outcome.resumed = True
                outcome.usage.add_public(paused.meta.get("usage"))
            async for event in self._events(run, builder, history):
                self._apply(event, run, outcome, builder, run_log)
                if isinstance(event, ModelCalled):
                    outcome.unrecorded.append(event)
                elif isinstance(event, ToolInputAvailable) and outcome.unrecorded:
                    await self._record_call(run, outcome)  # billed before any tool runs
                elif isinstance(event, StepFinished) and not outcome.unrecorded:
                    await self._persist_events(run_log)  # a tool step; a last step waits
        except asyncio.CancelledError:
            outcome.status = RunStatus.failed
            outcome.error = RunError(
                code="INTERRUPTED", message="The server stopped during the run"
            )
            raise
        except Exception:
            log.exception("run %s failed", launched.id)
            outcome.status = RunStatus.failed
            outcome.error = RunError(code="INTERNAL", message="The run failed unexpectedly")
            run_log.append({"type": "error", "errorText": outcome.error["message"]})
        finally:
            try:
                if run is not None:
                    following = await asyncio.shield(self._finish(run, outcome, builder, run_log))
            finally:
                run_log.close()
            await self._launch_next(following)
        if run is not None and outcome.status is RunStatus.completed and not outcome.titled:
            await self._title(run, builder)

    async def _title(self, run: Run, builder: MessageBuilder) -> None:
        """Title an untitled thread after its first completed exchange, in the run's task but
        after its stream has ended, so no reader waits for it."""
        if self.llm is None or not self.settings.thread_titles:
            return
        answer = "".join(str(p.get("text", "")) for p in builder.parts if p.get("type") == "text")
        try:
            await titles.write_title(self.db, self.llm, self.settings, run, answer, self.on_usage)
        except Exception:
            log.exception("thread %s: writing its title failed", run.thread_id)

    async def _begin(self, launched: Run) -> tuple[Run, Message | None] | None:
        """The run, running (as its door created it, or marked so now if it was queued; `None`
        when it no longer may start), with the message it saved when it paused, if it did."""
        if launched.status is RunStatus.running:
            return launched, None
        async with self.db.write() as session:
            run = await store.mark_run_running(session, launched.id)
            if run is None:
                return None
            text = run.request.get("queued_text")
            if isinstance(text, str):
                await store.append_message(session, run.thread_id, Role.user, [TextPart(text=text)])
            paused = None
            if resume_point(run) and run.assistant_message_id:
                paused = await store.get_message(session, run.thread_id, run.assistant_message_id)
        return run, paused

    async def _events(
        self, run: Run, builder: MessageBuilder, rows: Sequence[Message] | None
    ) -> AsyncIterator[AgentEvent]:
        agent = self.agents[run.agent]
        if self.llm is None:
            yield RunFailed("LLM_NOT_CONFIGURED", "No LLM is configured")
            return
        ctx = ToolContext(
            user_id=run.user_id,
            thread_id=run.thread_id,
            run_id=run.id,
            settings=self.settings,
            db=self.db,
        )
        if rows is None:
            async with self.db.read() as session:
                rows = await store.get_last_messages(session, run.thread_id, HISTORY_MESSAGES)
        async for event in run_decided_calls(agent, decisions(builder.parts), ctx):
            yield event  # the decisions reach `builder` before the history is read from it
        history = to_chat_messages(
            _StoredMessage(m.role, builder.parts) if m.id == run.assistant_message_id else m
            for m in rows
        )
        system = agent.system_prompt(ctx)
        extra = run.request.get("instructions")  # e.g. system messages of /v1/chat/completions
        if isinstance(extra, str) and extra:
            system = f"{system}\n\n{extra}"
        messages = fit_to_budget(system, history, agent.context_tokens)
        max_steps = run.request.get("max_steps")
        if isinstance(max_steps, int):
            agent = replace(agent, max_steps=max(1, min(agent.max_steps, max_steps)))
        async for event in run_agent(
            agent,
            self.llm,
            messages,
            ctx,
            model=run.model,
            stop=self._stops[run.id],
            first_step=builder.steps + 1,
        ):
            yield event

    def _apply(
        self,
        event: AgentEvent,
        run: Run,
        outcome: _Outcome,
        builder: MessageBuilder,
        run_log: RunLog,
    ) -> None:
        builder.add(event)
        if isinstance(event, ModelCalled):
            outcome.usage.add(event, self.settings.credits_per_usd)
        elif isinstance(event, RunPaused):
            outcome.status = RunStatus.awaiting_approval
            outcome.finish_reason = "tool-calls"
        elif isinstance(event, RunFinished):
            outcome.finish_reason = event.finish_reason
            if self._stops[run.id].is_set() and event.finish_reason == "other":
                outcome.status = RunStatus.stopped
        elif isinstance(event, RunFailed):
            outcome.status = RunStatus.failed
            outcome.error = RunError(code=event.code, message=event.message)
        for chunk in ui_chunks(event, self._metadata(run, outcome)):
            run_log.append(chunk)

    def _metadata(self, run: Run, outcome: _Outcome) -> dict[str, Any]:
        return {"run_id": run.id, "model": run.model, "usage": outcome.usage.public()}

    async def _record_call(self, run: Run, outcome: _Outcome) -> None:
        """The calls not yet billed, their usage events and their credits, in one transaction."""
        async with self.db.write() as session:
            await self._write_calls(session, run, outcome)

    async def _write_calls(
        self, session: AsyncSession, run: Run, outcome: _Outcome, *, release: bool = False
    ) -> None:
        """Record and bill `outcome.unrecorded` in `session` (and with `release`, return the
        rest of the reservation); they count as recorded once the session commits."""
        calls = [
            await record_call(session, run, event.usage, event.latency_ms)
            for event in outcome.unrecorded
        ]
        await billing.settle_calls(session, run, calls, self.settings, release=release)
        if calls:
            after_commit(session, outcome.unrecorded.clear)
            if self.on_usage is not None:
                after_commit(session, self.on_usage)

    async def _persist_events(self, run_log: RunLog) -> None:
        pending = run_log.chunks[run_log.persisted :]
        if not pending:
            return
        async with self.db.write() as session:
            await store.append_run_events(
                session, run_log.run_id, pending, first_seq=run_log.next_seq
            )
        run_log.persisted += len(pending)

    async def _finish(
        self, run: Run, outcome: _Outcome, builder: MessageBuilder, run_log: RunLog
    ) -> Run | None:
        """Save the run's end in one transaction: the calls not yet billed and their credits,
        the rest of its events, the whole assistant message, the release of its reservation
        (kept while it waits for approvals) and its status. Returns the thread's active run
        after it: the next queued one, or this one if it paused."""
        pending = run_log.chunks[run_log.persisted :]
        paused = outcome.status is RunStatus.awaiting_approval
        async with self.db.write() as session:
            # The thread's lock (and its one touch this turn) orders this against a door
            # queueing the next run.
            outcome.titled = await store.touch_thread_titled(session, run.thread_id)
            await self._write_calls(session, run, outcome, release=not paused)
            if outcome.status is not RunStatus.failed and builder.parts:
                await self._save_message(session, run, outcome, builder)
            if pending:
                await store.append_run_events(session, run.id, pending, first_seq=run_log.next_seq)
            if paused:
                await store.mark_run_awaiting_approval(session, run.id)  # keeps its reservation
            elif await store.finish_run(
                session,
                run.id,
                outcome.status,
                finish_reason=outcome.finish_reason,
                error=outcome.error,
                # A run that went on after approvals made calls before this executor.
                usage=None if outcome.resumed else outcome.usage.totals(),
            ):
                events.run_finished(
                    session,
                    run.user_id,
                    run.thread_id,
                    run.id,
                    outcome.status.value,
                    outcome.finish_reason,
                )
                after_commit(session, lambda: metrics.observe_run_end(outcome.status))
            following = await store.get_active_run(session, run.thread_id)
        run_log.persisted += len(pending)
        return following

    async def _save_message(
        self, session: AsyncSession, run: Run, outcome: _Outcome, builder: MessageBuilder
    ) -> None:
        metadata = {**self._metadata(run, outcome), "finish_reason": outcome.finish_reason}
        parts = validate_parts(builder.parts)
        if outcome.resumed and run.assistant_message_id:
            await store.replace_message(session, run.assistant_message_id, parts, metadata)
            return
        await store.append_message(
            session,
            run.thread_id,
            Role.assistant,
            parts,
            run_id=run.id,
            metadata=metadata,
            message_id=run.assistant_message_id,
            touch=False,
        )

    async def _launch_next(self, queued: Run | None) -> None:
        if queued is not None and queued.status is RunStatus.awaiting_approval:
            queued = await self._supersede(queued)
        if (
            queued is not None
            and queued.status is RunStatus.queued
            and queued.id not in self._tasks
        ):
            self.launch(queued)

    async def _supersede(self, paused: Run) -> Run | None:
        """A message queued while the run went on arrives as the run pauses: as at the door,
        the open approvals are denied and the queued message goes next."""
        async with self.db.write() as session:
            await store.touch_thread(session, paused.thread_id)
            queued = await store.get_queued_run(session, paused.thread_id)
            if queued is None:
                return None
            fresh = await store.get_run(session, paused.id)
            if fresh is not None and fresh.status is RunStatus.awaiting_approval:
                await end_paused_run(session, fresh, SUPERSEDED, RunStatus.completed)
        return queued

    async def _follow_database(self, run_id: str, after: int) -> AsyncIterator[tuple[int, Chunk]]:
        position = after
        while True:
            async with self.db.read() as session:
                events = await store.list_run_events(session, run_id, after_seq=position)
                run = await store.get_run(session, run_id)
            for event in events:
                position = event.seq
                yield event.seq, event.chunk
            if run is None or run.status not in (RunStatus.queued, RunStatus.running):
                if not events:
                    return
                continue
            await asyncio.sleep(POLL_SECONDS)
