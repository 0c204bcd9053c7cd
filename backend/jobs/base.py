"""The interface both runners share, and the retry policy they both apply."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from config.database import after_commit
from config.settings import Settings

log = logging.getLogger("turbokit.jobs")

JobArg = str | int | float | bool | None
"""Jobs take ids and plain values (what survives pickling and a restart), never rows or clients."""

JobFunction = Callable[..., Awaitable[object]]

BACKOFF_FACTOR = 4
"""Each retry waits this many times longer than the one before."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failed job runs again, and after how long."""

    retries: int
    """Runs after the first one; 0 means a failure is final."""
    first_delay: float
    """Seconds before the first retry; later ones wait `BACKOFF_FACTOR` times longer each."""

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.job_retries, settings.job_backoff_seconds)

    def delay(self, retry: int) -> float:
        """Seconds before retry number `retry` (1 for the first)."""
        return float(self.first_delay * BACKOFF_FACTOR ** (retry - 1))

    @property
    def delays(self) -> list[int]:
        """Whole seconds before each retry, rounded up (rq's `Retry` takes whole seconds)."""
        return [math.ceil(self.delay(n)) for n in range(1, self.retries + 1)]


@cache
def resolve(path: str) -> JobFunction:
    """The function at `package.module.function`; a wrong path fails at enqueue, not later."""
    module_name, _, name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name) if module_name else None
    except ImportError as exc:
        raise ValueError(f"{path!r}: no module {module_name!r}") from exc
    function = getattr(module, name, None)
    if not inspect.iscoroutinefunction(function):
        raise ValueError(f"{path!r} does not name an async job function")
    return function


class Jobs(ABC):
    """Where jobs are enqueued. Delivery is at least once: job functions must be idempotent."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self._submissions: set[asyncio.Task[None]] = set()

    @abstractmethod
    async def enqueue(self, function: str, *args: JobArg) -> None:
        """Queue `function(*args)` now; raises if the queue cannot take it."""

    async def start(self) -> None:  # noqa: B027 (a remote queue has nothing to start)
        """Begin running jobs (the in-process runner); nothing for a remote queue."""

    async def stop(self) -> None:
        """Finish submitting what was committed, then stop running jobs."""
        await self.settle()

    def enqueue_after_commit(self, session: AsyncSession, function: str, *args: JobArg) -> None:
        """Queue the job once `session` commits (never if it rolls back), so the job finds the
        rows it was given. A failure to queue is logged, not raised: the commit stands."""
        resolve(function)
        after_commit(session, lambda: self._submit(self.enqueue(function, *args), function))

    async def settle(self) -> None:
        """Wait until every job handed to `enqueue_after_commit` has been queued (or failed to)."""
        while self._submissions:
            await asyncio.gather(*self._submissions)

    def _submit(self, enqueue: Coroutine[Any, Any, None], function: str) -> None:
        task = asyncio.get_running_loop().create_task(self._logged(enqueue, function))
        self._submissions.add(task)
        task.add_done_callback(self._submissions.discard)

    @staticmethod
    async def _logged(enqueue: Coroutine[Any, Any, None], function: str) -> None:
        try:
            await enqueue
        except Exception:
            log.exception("could not enqueue job %s", function)
