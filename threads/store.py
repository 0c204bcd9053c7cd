"""Reads and writes of the conversation store.

Every function takes the caller's `AsyncSession` and flushes but never commits: the caller owns the
transaction (a request, a job, a test), so several store calls commit or roll back together.
Functions that take a `user_id` answer `None` for rows the user does not own, exactly as for rows
that do not exist, so the web layer cannot leak existence.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Generic, Literal, TypedDict, TypeVar, cast

from pydantic import JsonValue
from sqlalchemy import ColumnElement, Table, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from config.database import Base, dialect_name, utcnow
from config.ids import new_id
from threads.models import (
    ACTIVE_RUN_STATUSES,
    FINISHED_RUN_STATUSES,
    LLMCall,
    Message,
    Role,
    Run,
    RunEvent,
    RunStatus,
    Thread,
    ThreadStatus,
)
from threads.schemas import (
    THREAD_ID_PATTERN,
    ThreadCreate,
    ThreadUpdate,
    UIMessagePart,
    dump_parts,
)


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


_THREADS = _table(Thread)
_MESSAGES = _table(Message)
_RUNS = _table(Run)
_RUN_EVENTS = _table(RunEvent)
_LLM_CALLS = _table(LLMCall)
"""The hot path of a chat turn writes through these tables with statements built once (Core, no
unit of work): several times cheaper per statement than ORM statements built per call."""

MAX_PAGE_SIZE = 100
"""Largest page a list function returns; the web layer accepts `limit` in 1..100 too."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""Cursors we issue are far shorter; anything longer is refused before decoding."""

RUN_EVENTS_LIMIT = 1000
"""Default batch when replaying a run's event log; callers loop with `after_seq`."""

T = TypeVar("T")
Order = Literal["asc", "desc"]


class InvalidCursor(ValueError):
    """A cursor that this store did not issue (or for another list); the web layer answers 422."""


class ThreadNotFound(LookupError):
    """Writing into a thread that does not exist: a caller bug, since callers check ownership."""


class RunNotFound(LookupError):
    """Changing a run that does not exist."""


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One keyset page; `next_cursor` is `None` on the last page."""

    items: list[T]
    next_cursor: str | None


class RunError(TypedDict):
    """Why a run failed, as stored in `runs.error` and shown to clients."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class RunUsage:
    """Totals stored on a finished run; `extra` goes to `runs.usage` (cached tokens, call count)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal | None = None
    extra: dict[str, JsonValue] = field(default_factory=dict)


# --- Cursors ---------------------------------------------------------------------------------


THREAD_CURSOR_PATTERN = r"^[0-9]{1,17}\.[A-Za-z0-9_-]{1,64}$"
"""`<updated_at in µs since the epoch>.<thread id>`: every string of this shape is a valid cursor,
so an API can document it exactly."""
MESSAGE_CURSOR_PATTERN = r"^[0-9]{1,12}$"
"""The `seq` of the last message of the page."""


def _thread_cursor(thread: Thread) -> str:
    micros = (thread.updated_at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{thread.id}"


def _decode_thread_cursor(cursor: str) -> tuple[datetime, str]:
    if not re.fullmatch(THREAD_CURSOR_PATTERN, cursor):
        raise InvalidCursor("malformed cursor")
    micros, _, thread_id = cursor.partition(".")
    try:
        return _EPOCH + timedelta(microseconds=int(micros)), thread_id
    except OverflowError as exc:
        raise InvalidCursor("malformed cursor") from exc


def _decode_message_cursor(cursor: str) -> int:
    if not re.fullmatch(MESSAGE_CURSOR_PATTERN, cursor):
        raise InvalidCursor("malformed cursor")
    return int(cursor)


def _page(rows: Sequence[T], limit: int, position: Callable[[T], str]) -> Page[T]:
    """Rows were fetched with `limit + 1`: the extra row only says another page exists."""
    items = list(rows[:limit])
    more = len(rows) > limit
    return Page(items=items, next_cursor=position(items[-1]) if more else None)


def _check_limit(limit: int, maximum: int = MAX_PAGE_SIZE) -> None:
    if not 1 <= limit <= maximum:
        raise ValueError(f"limit must be between 1 and {maximum}, got {limit}")


async def _next_seq(
    session: AsyncSession, seq: InstrumentedAttribute[int], where: ColumnElement[bool]
) -> int:
    """One more than the largest number so far (numbers start at 1), read through the index."""
    last = await session.scalar(select(func.max(seq)).where(where))
    return (last or 0) + 1


# --- Threads ---------------------------------------------------------------------------------


async def create_thread(
    session: AsyncSession,
    user_id: str,
    data: ThreadCreate | None = None,
    *,
    thread_id: str | None = None,
) -> Thread:
    """A new thread; `thread_id` lets a chat client choose the id (1..64 of `[A-Za-z0-9_-]`)."""
    if thread_id is not None and re.fullmatch(THREAD_ID_PATTERN, thread_id) is None:
        raise ValueError(f"thread id must match {THREAD_ID_PATTERN}")
    data = data or ThreadCreate()
    now = utcnow()
    thread = Thread(
        id=thread_id or new_id("thr"),
        user_id=user_id,
        title=data.title,
        agent=data.agent,
        status=ThreadStatus.active,
        meta=dict(data.metadata),
        created_at=now,
        updated_at=now,
    )
    session.add(thread)
    await session.flush()
    return thread


async def get_thread(session: AsyncSession, thread_id: str, user_id: str) -> Thread | None:
    return await session.scalar(
        select(Thread).where(Thread.id == thread_id, Thread.user_id == user_id)
    )


async def get_or_create_thread(
    session: AsyncSession, thread_id: str, user_id: str, data: ThreadCreate | None = None
) -> Thread | None:
    """The user's thread with this id, created when no thread has it; `None` if another user's.

    A concurrent creation of the same id inserts nothing (`ON CONFLICT DO NOTHING`), and this
    then reads the winner's row, so the caller's transaction survives the race.
    `created_in(session, thread_id)` tells afterwards whether this session created it.
    """
    thread = await session.get(Thread, thread_id)
    if thread is None:
        thread = await _insert_thread(session, thread_id, user_id, data or ThreadCreate())
        if thread is None:
            thread = await session.get(Thread, thread_id)
    return thread if thread is not None and thread.user_id == user_id else None


async def _insert_thread(
    session: AsyncSession, thread_id: str, user_id: str, data: ThreadCreate
) -> Thread | None:
    if re.fullmatch(THREAD_ID_PATTERN, thread_id) is None:
        raise ValueError(f"thread id must match {THREAD_ID_PATTERN}")
    now = utcnow()
    values = {
        "id": thread_id,
        "user_id": user_id,
        "title": data.title,
        "agent": data.agent,
        "status": ThreadStatus.active,
        "metadata": dict(data.metadata),
        "created_at": now,
        "updated_at": now,
    }
    if await session.scalar(_insert_thread_statement(dialect_name(session)), values) is None:
        return None
    session.info.setdefault(_CREATED_THREADS, set()).add(thread_id)
    values["meta"] = values.pop("metadata")
    return Thread(**values)


_insert_thread_statements: dict[str, Any] = {}


def _insert_thread_statement(dialect: str) -> Any:
    """`INSERT ... ON CONFLICT (id) DO NOTHING RETURNING id`, built once per dialect."""
    statement = _insert_thread_statements.get(dialect)
    if statement is None:
        insert_ = pg_insert if dialect == "postgresql" else sqlite_insert
        statement = insert_(_THREADS).on_conflict_do_nothing(index_elements=["id"])
        statement = _insert_thread_statements[dialect] = statement.returning(_THREADS.c.id)
    return statement


_CREATED_THREADS = "threads_created"


def created_in(session: AsyncSession, thread_id: str) -> bool:
    """Whether `get_or_create_thread` created this thread in this session's transaction: such a
    thread has no messages and no runs yet, so a caller can skip looking for them."""
    return thread_id in session.info.get(_CREATED_THREADS, ())


async def list_threads(
    session: AsyncSession, user_id: str, *, limit: int = 20, cursor: str | None = None
) -> Page[Thread]:
    """The user's threads, most recently updated first.

    Ordered by (updated_at, id) with both in the cursor: a walk never repeats a thread and never
    skips one that stays unchanged. A thread updated during the walk moves to the front, so the
    walk does not see it again (or, if it was still ahead, sees it on the next walk from the top),
    which is what a "recent conversations" list wants. Ordering by id alone would be fully stable
    but would bury active old threads.
    """
    _check_limit(limit)
    query = select(Thread).where(Thread.user_id == user_id)
    if cursor is not None:
        updated_at, last_id = _decode_thread_cursor(cursor)
        query = query.where(
            Thread.updated_at <= updated_at,
            or_(
                Thread.updated_at < updated_at,
                and_(Thread.updated_at == updated_at, Thread.id < last_id),
            ),
        )
    query = query.order_by(Thread.updated_at.desc(), Thread.id.desc()).limit(limit + 1)
    rows = (await session.scalars(query)).all()
    return _page(rows, limit, _thread_cursor)


async def update_thread(
    session: AsyncSession, thread_id: str, user_id: str, data: ThreadUpdate
) -> Thread | None:
    """Apply the fields that were sent; an empty update changes nothing, not even `updated_at`."""
    thread = await get_thread(session, thread_id, user_id)
    if thread is None or not data.model_fields_set:
        return thread
    if "title" in data.model_fields_set:
        thread.title = data.title
    if data.status is not None:
        thread.status = data.status
    if data.metadata is not None:
        thread.meta = dict(data.metadata)
    thread.updated_at = utcnow()
    await session.flush()
    return thread


async def delete_thread(session: AsyncSession, thread_id: str, user_id: str) -> bool:
    """Delete the thread; its messages, runs, events and LLM calls go by ON DELETE CASCADE."""
    thread = await get_thread(session, thread_id, user_id)
    if thread is None:
        return False
    await session.delete(thread)
    await session.flush()
    return True


async def touch_thread(session: AsyncSession, thread_id: str) -> datetime:
    """Set `updated_at` to now and return it; raise `ThreadNotFound` if there is no such thread.

    On PostgreSQL the UPDATE also holds the thread's row lock until commit, which serialises
    writers of one thread: appenders of messages, or a door checking for an active run before
    creating one. (SQLite already serialises all writers.)
    """
    now, _title = await _touch(session, thread_id)
    return now


async def touch_thread_titled(session: AsyncSession, thread_id: str) -> bool:
    """`touch_thread`, answering in the same statement whether the thread has a title."""
    _now, title = await _touch(session, thread_id)
    return title is not None


async def _touch(session: AsyncSession, thread_id: str) -> tuple[datetime, str | None]:
    now = utcnow()
    params = {"b_thread_id": thread_id, "b_now": now}
    touched = (await session.execute(_TOUCH_THREAD, params)).first()
    if touched is None:
        raise ThreadNotFound(thread_id)
    return now, touched.title


_TOUCH_THREAD = (
    update(_THREADS)
    .where(_THREADS.c.id == bindparam("b_thread_id"))
    .values(updated_at=bindparam("b_now"))
    .returning(_THREADS.c.id, _THREADS.c.title)
)


async def lock_thread(session: AsyncSession, thread_id: str) -> None:
    """Serialise this transaction with the thread's other writers until it ends, without
    changing the row: a door checking for an active run before creating one, or a run ending.

    PostgreSQL takes the row lock (`SELECT ... FOR UPDATE`). SQLite needs no statement: it has one
    writer at a time, and a transaction that read before another writer committed cannot write.
    """
    if dialect_name(session) == "postgresql":
        await session.execute(_LOCK_THREAD, {"thread_id": thread_id})


_LOCK_THREAD = (
    select(_THREADS.c.id).where(_THREADS.c.id == bindparam("thread_id")).with_for_update()
)


# --- Messages --------------------------------------------------------------------------------


async def append_message(
    session: AsyncSession,
    thread_id: str,
    role: Role,
    parts: Sequence[UIMessagePart],
    *,
    run_id: str | None = None,
    metadata: Mapping[str, JsonValue] | None = None,
    message_id: str | None = None,
    touch: bool = True,
) -> Message:
    """Save a message as the thread's next one (`seq` = last + 1) and bump the thread.

    `message_id` lets a run announce its assistant message id in the stream's `start` chunk before
    the message is saved; `metadata` holds the UIMessage metadata beyond `created_at`/`run_id`.
    `touch=False` leaves the thread's `updated_at` alone, for a caller that bumps it once for
    several writes (the number is still the next one: the INSERT computes it).
    """
    now = await touch_thread(session, thread_id) if touch else utcnow()
    values: dict[str, Any] = {
        "id": message_id or new_id("msg"),
        "thread_id": thread_id,
        "run_id": run_id,
        "role": role,
        "parts": dump_parts(parts),
        "metadata": dict(metadata or {}),
        "created_at": now,
    }
    seq = await session.scalar(_INSERT_MESSAGE, {**values, "b_thread_id": thread_id})
    assert seq is not None
    values["meta"] = values.pop("metadata")
    return Message(seq=seq, **values)


_INSERT_MESSAGE = (
    insert(_MESSAGES)
    .values(
        seq=select(func.coalesce(func.max(_MESSAGES.c.seq), 0) + 1)
        .where(_MESSAGES.c.thread_id == bindparam("b_thread_id"))
        .scalar_subquery()
    )
    .returning(_MESSAGES.c.seq)
)
"""One statement numbers and inserts a message, through the (thread_id, seq) index."""


async def get_message(session: AsyncSession, thread_id: str, message_id: str) -> Message | None:
    return await session.scalar(
        select(Message).where(Message.id == message_id, Message.thread_id == thread_id)
    )


async def list_messages(
    session: AsyncSession,
    thread_id: str,
    *,
    limit: int = 20,
    cursor: str | None = None,
    order: Order = "desc",
) -> Page[Message]:
    """A page of the thread's messages by `seq`; ownership is the caller's check (`get_thread`)."""
    _check_limit(limit)
    query = select(Message).where(Message.thread_id == thread_id)
    if cursor is not None:
        after = _decode_message_cursor(cursor)
        query = query.where(Message.seq > after if order == "asc" else Message.seq < after)
    by_seq = Message.seq.asc() if order == "asc" else Message.seq.desc()
    rows = (await session.scalars(query.order_by(by_seq).limit(limit + 1))).all()
    return _page(rows, limit, lambda message: str(message.seq))


async def get_last_messages(session: AsyncSession, thread_id: str, count: int) -> list[Message]:
    """The last `count` messages, oldest first: the window a model's context is built from."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    query = (
        select(Message)
        .where(Message.thread_id == thread_id)
        .order_by(Message.seq.desc())
        .limit(count)
    )
    newest_first = (await session.scalars(query)).all()
    return list(reversed(newest_first))


# --- Runs ------------------------------------------------------------------------------------


async def create_run(
    session: AsyncSession,
    *,
    thread_id: str,
    user_id: str,
    agent: str,
    model: str,
    request: Mapping[str, JsonValue] | None = None,
    assistant_message_id: str | None = None,
    running: bool = False,
) -> Run:
    """A queued run; `request` records what started it (e.g. the user message id).

    `running=True` creates it already started, for a caller that executes it as soon as this
    transaction commits (so starting it costs no transaction of its own)."""
    now = utcnow()
    run = Run(
        id=new_id("run"),
        thread_id=thread_id,
        user_id=user_id,
        agent=agent,
        model=model,
        status=RunStatus.running if running else RunStatus.queued,
        request=dict(request or {}),
        assistant_message_id=assistant_message_id,
        prompt_tokens=0,
        completion_tokens=0,
        usage={},
        created_at=now,
        started_at=now if running else None,
    )
    session.add(run)
    await session.flush()
    return run


async def get_run(session: AsyncSession, run_id: str) -> Run | None:
    return await session.get(Run, run_id)


async def get_active_run(session: AsyncSession, thread_id: str) -> Run | None:
    """The thread's oldest run that has not ended: the one running, or next in the queue."""
    return await session.scalar(_ACTIVE_RUN, {"b_thread_id": thread_id})


_ACTIVE_RUN = (
    select(Run)
    .where(Run.thread_id == bindparam("b_thread_id"), Run.status.in_(ACTIVE_RUN_STATUSES))
    .order_by(Run.created_at, Run.id)
    .limit(1)
)


async def get_queued_run(session: AsyncSession, thread_id: str) -> Run | None:
    """The thread's next queued run."""
    query = (
        select(Run)
        .where(Run.thread_id == thread_id, Run.status == RunStatus.queued)
        .order_by(Run.created_at, Run.id)
        .limit(1)
    )
    return await session.scalar(query)


async def _lock_run(
    session: AsyncSession, run_id: str, allowed: Collection[RunStatus]
) -> Run | None:
    """The run, row-locked on PostgreSQL and freshly read, if its status is one of `allowed`."""
    query = (
        select(Run)
        .where(Run.id == run_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    run = await session.scalar(query)
    if run is None:
        raise RunNotFound(run_id)
    return run if run.status in allowed else None


async def mark_run_running(session: AsyncSession, run_id: str) -> Run | None:
    """Start a queued run, or resume one awaiting approval.

    `None` means the run is no longer startable (another worker took it, or it was stopped):
    jobs are delivered at least once, and the second delivery must do nothing.
    """
    run = await _lock_run(session, run_id, (RunStatus.queued, RunStatus.awaiting_approval))
    if run is None:
        return None
    run.status = RunStatus.running
    run.started_at = run.started_at or utcnow()
    await session.flush()
    return run


async def mark_run_awaiting_approval(session: AsyncSession, run_id: str) -> Run | None:
    """Pause a running run until a tool call is approved or denied; `None` if it is not running."""
    run = await _lock_run(session, run_id, (RunStatus.running,))
    if run is None:
        return None
    run.status = RunStatus.awaiting_approval
    await session.flush()
    return run


async def mark_run_finished(
    session: AsyncSession,
    run_id: str,
    status: RunStatus,
    *,
    finish_reason: str | None = None,
    error: RunError | None = None,
    usage: RunUsage | None = None,
) -> Run | None:
    """End a run once; `None` if it had already ended (a finished run is never changed).

    Without `usage`, the totals are summed from the run's recorded LLM calls.
    """
    if not await finish_run(
        session, run_id, status, finish_reason=finish_reason, error=error, usage=usage
    ):
        return None
    return await session.get(Run, run_id, populate_existing=True)


async def finish_run(
    session: AsyncSession,
    run_id: str,
    status: RunStatus,
    *,
    finish_reason: str | None = None,
    error: RunError | None = None,
    usage: RunUsage | None = None,
) -> bool:
    """`mark_run_finished` in one statement, without loading the run: whether it ended now.

    The UPDATE's condition is the check: an ended run matches nothing (and on PostgreSQL the
    UPDATE waits for the row's lock)."""
    if status not in FINISHED_RUN_STATUSES:
        raise ValueError(f"{status} is not a final run status")
    totals = usage if usage is not None else await sum_llm_calls(session, run_id)
    values = {
        "b_run_id": run_id,
        "b_status": status,
        "b_finish_reason": finish_reason,
        "b_error": dict(error) if error is not None else None,
        "b_prompt_tokens": totals.prompt_tokens,
        "b_completion_tokens": totals.completion_tokens,
        "b_cost_usd": totals.cost_usd,
        "b_usage": dict(totals.extra),
        "b_finished_at": utcnow(),
    }
    if await session.scalar(_FINISH_RUN, values) is not None:
        return True
    if await session.scalar(select(Run.id).where(Run.id == run_id)) is None:
        raise RunNotFound(run_id)
    return False


_FINISH_RUN = (
    update(_RUNS)
    .where(_RUNS.c.id == bindparam("b_run_id"), _RUNS.c.status.in_(ACTIVE_RUN_STATUSES))
    .values(
        {
            name: bindparam(f"b_{name}", type_=_RUNS.c[name].type)
            for name in (
                "status",
                "finish_reason",
                "error",
                "prompt_tokens",
                "completion_tokens",
                "cost_usd",
                "usage",
                "finished_at",
            )
        }
    )
    .returning(_RUNS.c.id)
)


async def append_run_events(
    session: AsyncSession,
    run_id: str,
    chunks: Sequence[Mapping[str, JsonValue]],
    *,
    first_seq: int | None = None,
) -> list[RunEvent]:
    """Append chunks to the run's log, numbered on from the last one (or from `first_seq`, for
    a writer that knows how many it has written: no read).

    A run has one writer (its executor), so reading the last number is enough; the primary key
    (run_id, seq) turns any second writer into an error instead of a silent interleaving.
    """
    first = first_seq or await _next_seq(session, RunEvent.seq, RunEvent.run_id == run_id)
    now = utcnow()
    rows = [
        {"run_id": run_id, "seq": first + offset, "chunk": dict(chunk), "created_at": now}
        for offset, chunk in enumerate(chunks)
    ]
    if rows:
        await session.execute(insert(_RUN_EVENTS), rows)
    return [RunEvent(**row) for row in rows]


async def append_run_event(
    session: AsyncSession, run_id: str, chunk: Mapping[str, JsonValue]
) -> RunEvent:
    (event,) = await append_run_events(session, run_id, [chunk])
    return event


async def list_run_events(
    session: AsyncSession, run_id: str, *, after_seq: int = 0, limit: int = RUN_EVENTS_LIMIT
) -> list[RunEvent]:
    """Events numbered after `after_seq`, in order: a replay from `0`, or a resume after an id."""
    _check_limit(limit, RUN_EVENTS_LIMIT)
    query = (
        select(RunEvent)
        .where(RunEvent.run_id == run_id, RunEvent.seq > after_seq)
        .order_by(RunEvent.seq)
        .limit(limit)
    )
    return list((await session.scalars(query)).all())


# --- LLM calls -------------------------------------------------------------------------------


def _to_decimal(value: Decimal | float | None) -> Decimal | None:
    """Providers report cost as a JSON float; going through `str` keeps `0.1` from becoming
    `0.1000000000000000055511151231257827`."""
    if value is None or isinstance(value, Decimal):
        return value
    return Decimal(str(value))


async def record_llm_call(
    session: AsyncSession,
    run: Run,
    *,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
    cost_usd: Decimal | float | None = None,
    latency_ms: int = 0,
    generation_id: str | None = None,
) -> LLMCall:
    """Meter one provider call of `run`; `model` is the one that answered (maybe a fallback)."""
    values = {
        "id": new_id("llm"),
        "run_id": run.id,
        "user_id": run.user_id,
        "thread_id": run.thread_id,
        "agent": run.agent,
        "model": model,
        "generation_id": generation_id,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cached_tokens": cached_tokens,
        "reasoning_tokens": reasoning_tokens,
        "cost_usd": _to_decimal(cost_usd),
        "latency_ms": latency_ms,
        "created_at": utcnow(),
    }
    await session.execute(insert(_LLM_CALLS), values)
    return LLMCall(**values)


async def list_llm_calls(session: AsyncSession, run_id: str) -> list[LLMCall]:
    """A run's calls in order; bounded by the agent's step limit."""
    query = select(LLMCall).where(LLMCall.run_id == run_id).order_by(LLMCall.created_at, LLMCall.id)
    return list((await session.scalars(query)).all())


async def sum_llm_calls(session: AsyncSession, run_id: str) -> RunUsage:
    """Totals over a run's calls; `cost_usd` is `None` when no call reported a cost."""
    query = select(
        func.count(LLMCall.id),
        func.coalesce(func.sum(LLMCall.prompt_tokens), 0),
        func.coalesce(func.sum(LLMCall.completion_tokens), 0),
        func.coalesce(func.sum(LLMCall.cached_tokens), 0),
        func.coalesce(func.sum(LLMCall.reasoning_tokens), 0),
        func.sum(LLMCall.cost_usd),
    ).where(LLMCall.run_id == run_id)
    calls, prompt, completion, cached, reasoning, cost = (await session.execute(query)).one()
    return RunUsage(
        prompt_tokens=int(prompt),
        completion_tokens=int(completion),
        cost_usd=_to_decimal(cost),
        extra={
            "llm_calls": int(calls),
            "cached_tokens": int(cached),
            "reasoning_tokens": int(reasoning),
        },
    )


# --- Approvals -------------------------------------------------------------------------------


async def replace_message(
    session: AsyncSession,
    message_id: str,
    parts: Sequence[UIMessagePart],
    metadata: Mapping[str, JsonValue] | None = None,
) -> None:
    """Rewrite a saved message's parts (and metadata): a run paused for approvals saves its
    message, and the decisions and the rest of the run complete that same message."""
    values: dict[str, Any] = {"parts": dump_parts(parts)}
    if metadata is not None:
        values["meta"] = dict(metadata)
    await session.execute(update(Message).where(Message.id == message_id).values(**values))


async def last_run_event_seq(session: AsyncSession, run_id: str) -> int:
    """The number of the run's last saved chunk (0 for none)."""
    seq = await session.scalar(select(func.max(RunEvent.seq)).where(RunEvent.run_id == run_id))
    return int(seq or 0)


async def queue_paused_run(session: AsyncSession, run_id: str, resume_after: int) -> Run | None:
    """Every approval is decided: the run is queued to go on, its log continuing after
    `resume_after`; `None` if it no longer waits."""
    run = await _lock_run(session, run_id, (RunStatus.awaiting_approval,))
    if run is None:
        return None
    run.status = RunStatus.queued
    request = {k: v for k, v in run.request.items() if k != "queued_text"}  # saved already
    run.request = {**request, "resume_after": resume_after}
    await session.flush()
    return run
